//! rumqttc options from [`MqttConfig`]: credentials, last will, packet limits and TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::MqttConfig;
use super::{PublishError, Topics};

/// Debian/Raspberry Pi OS system CA bundle, used for `mqtts://` without `ca_file`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Room for topic and header on top of the largest payload.
const PACKET_OVERHEAD: usize = 64 * 1024;

/// Incoming packets are only Home Assistant's status; a bit of room for other retained noise.
const MAX_INCOMING_PACKET: usize = 1024 * 1024;

/// Publishes handed to rumqttc at once; rumqttc's inflight window and request channel are twice
/// this, so packet ids never collide while acks are outstanding and the channel never fills.
pub(crate) const SEND_WINDOW: usize = 32;

pub(crate) fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Options for one connection to the configured broker. Clean session: unacknowledged messages
/// are replayed from the publisher's own queue (see the module docs).
pub(crate) fn mqtt_options(cfg: &MqttConfig, topics: &Topics) -> Result<MqttOptions, PublishError> {
    cfg.validate()?;
    let endpoint = cfg.endpoint()?;
    let mut options = MqttOptions::new(cfg.client_id(), endpoint.host, endpoint.port);
    options
        .set_keep_alive(Duration::from_secs(cfg.keep_alive_s))
        .set_clean_session(true)
        .set_last_will(LastWill::new(
            topics.status(),
            "offline",
            qos_of(cfg.qos),
            true,
        ))
        .set_max_packet_size(
            MAX_INCOMING_PACKET,
            cfg.snapshot.max_bytes.max(PACKET_OVERHEAD) + PACKET_OVERHEAD,
        )
        .set_inflight((SEND_WINDOW * 2) as u16);
    if let Some(username) = &cfg.username {
        options.set_credentials(username.clone(), cfg.password()?.unwrap_or_default());
    }
    if endpoint.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(cfg)?),
        )));
    }
    Ok(options)
}

fn tls_error(key: &'static str, path: &Path, reason: impl ToString) -> PublishError {
    PublishError::Tls {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Why a PEM file named by `key` could not be used: the file itself (I/O) or its contents.
fn pem_error(key: &'static str, path: &Path, err: pem::Error) -> PublishError {
    match err {
        pem::Error::Io(source) => PublishError::ReadFile {
            key,
            path: path.to_path_buf(),
            source,
        },
        other => tls_error(key, path, other),
    }
}

fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PublishError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(key, path, e))?;
    if certs.is_empty() {
        return Err(tls_error(key, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// A rustls client config with the ring provider, the CA bundle and optional client auth.
fn tls_config(cfg: &MqttConfig) -> Result<ClientConfig, PublishError> {
    let ca_path = cfg
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
    let mut roots = RootCertStore::empty();
    for cert in read_certs("mqtt.ca_file", &ca_path)? {
        roots
            .add(cert)
            .map_err(|e| tls_error("mqtt.ca_file", &ca_path, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("mqtt.ca_file", &ca_path, e))?
        .with_root_certificates(roots);
    match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let certs = read_certs("mqtt.client_cert", cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| match e {
                pem::Error::NoItemsFound => {
                    tls_error("mqtt.client_key", key_path, "no PEM private key found")
                }
                other => pem_error("mqtt.client_key", key_path, other),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error("mqtt.client_key", key_path, e))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

//! rumqttc options from [`MqttConfig`]: credentials, last will, packet limits and TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, ConnectionError, LastWill, MqttOptions, QoS, TlsConfiguration, Transport,
};
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

/// The CA bundle an `mqtts://` broker's certificate is verified with.
pub(crate) fn ca_path(cfg: &MqttConfig) -> PathBuf {
    cfg.ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE))
}

/// What the user must change when connecting failed because of a setting rather than a broker
/// that is not up yet: credentials the broker refused, or a broker certificate the CA bundle
/// (`ca_file`, the one TLS verifies with) does not trust. `None` for everything else.
pub(crate) fn misconfiguration(error: &ConnectionError, ca_file: &Path) -> Option<String> {
    match error {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword),
        ) => Some(format!(
            "the broker refused the credentials ({code:?}): check mqtt.username and \
             mqtt.password (or mqtt.password_file)"
        )),
        ConnectionError::Tls(tls) => {
            let certificate =
                rustls_error(tls).filter(|e| matches!(e, rustls::Error::InvalidCertificate(_)))?;
            Some(format!(
                "the broker's TLS certificate is not trusted by mqtt.ca_file {} ({certificate}): \
                 set mqtt.ca_file to the CA that signed the broker's certificate",
                ca_file.display()
            ))
        }
        _ => None,
    }
}

/// The rustls error behind a TLS failure; the handshake reports it inside an `io::Error`.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        if inner.is_some() {
            return inner;
        }
        next = error.source();
    }
    None
}

/// The size of the MQTT 3.1.1 PUBLISH packet carrying `payload_len` bytes on `topic`: fixed
/// header, remaining length, topic, packet id (QoS 1 and 2) and payload.
pub(crate) fn publish_packet_len(topic: &str, qos: QoS, payload_len: usize) -> usize {
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + packet_id + payload_len;
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining
}

/// A rustls client config with the ring provider, the CA bundle and optional client auth.
fn tls_config(cfg: &MqttConfig) -> Result<ClientConfig, PublishError> {
    let ca_path = ca_path(cfg);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_packet_len_matches_rumqttc_serialization() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for payload in [0, 90, 127, 16_000, 16_380, 300_000, 2_097_140, 2_200_000] {
                let topic = "edgeclass/front_door/snapshot";
                let mut packet = rumqttc::Publish::new(topic, qos, vec![0u8; payload]);
                // rumqttc counts the packet id once one is assigned, as it is when written.
                packet.pkid = 1;
                assert_eq!(
                    publish_packet_len(topic, qos, payload),
                    packet.size(),
                    "{payload} bytes at {qos:?}"
                );
            }
        }
    }

    #[test]
    fn refused_credentials_name_the_keys_and_other_refusals_are_not_blamed_on_them() {
        let ca = Path::new("/etc/edgeclass/ca.pem");
        let refused = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        let problem = misconfiguration(&refused, ca).expect("a credentials problem");
        assert!(
            problem.contains("mqtt.username") && problem.contains("mqtt.password"),
            "{problem}"
        );
        let unavailable = ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable);
        assert_eq!(misconfiguration(&unavailable, ca), None);
        let down = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(misconfiguration(&down, ca), None);
    }
}

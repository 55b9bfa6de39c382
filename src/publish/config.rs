//! The `[mqtt]` section of the daemon's configuration and its validation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::PublishError;

/// MQTT settings: broker, topics, credentials, TLS, queueing, snapshots and discovery.
///
/// Every key has a default, so an empty `[mqtt]` section (or none) runs against the embedded
/// broker on 127.0.0.1:1883.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL, `mqtt://host[:port]` or `mqtts://host[:port]`; absent ⇒ the embedded broker.
    pub url: Option<String>,
    /// First topic level of everything edgeclass publishes.
    pub topic_prefix: String,
    /// QoS for events, state and discovery (0, 1 or 2).
    pub qos: u8,
    /// MQTT client id; default `edgeclass-<node id>`.
    pub client_id: Option<String>,
    /// Username for the broker.
    pub username: Option<String>,
    /// Password inline; prefer `password_file`.
    pub password: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle to verify an `mqtts://` broker; default the system bundle.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// MQTT keep-alive in seconds (0 disables pings).
    pub keep_alive_s: u64,
    /// Most events kept in memory while the broker is unreachable; the oldest are dropped beyond.
    pub queue_limit: usize,
    /// First reconnect delay; doubles per failed attempt.
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay.
    pub reconnect_max_ms: u64,
    /// Where the embedded broker listens when `url` is absent.
    pub embedded_listen: SocketAddr,
    /// The embedded broker has no authentication: listening beyond loopback needs this set,
    /// to say that anyone on the network may read and publish.
    pub embedded_allow_anonymous: bool,
    /// The largest MQTT packet the broker accepts (mosquitto's `max_packet_size` or
    /// `message_size_limit`): MQTT 3.1.1, which rumqttc speaks, does not tell it. A snapshot whose
    /// packet would be larger is skipped with a warning instead of being sent, since a broker
    /// that drops the connection over it would get it again after every reconnect.
    pub max_packet_bytes: usize,
    /// JPEG snapshots of classified frames.
    pub snapshot: SnapshotConfig,
    /// Home Assistant MQTT discovery.
    pub discovery: DiscoveryConfig,
}

/// `[mqtt.snapshot]`: retained JPEG of the last classified frame per camera.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Publish snapshots (and announce an `image` entity to Home Assistant).
    pub enabled: bool,
    /// Larger JPEGs are not published (counted in [`super::PublishStats::oversized_snapshots`]).
    pub max_bytes: usize,
}

/// `[mqtt.discovery]`: Home Assistant MQTT discovery.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Announce a device with one sensor (and image) per camera.
    pub enabled: bool,
    /// Home Assistant's discovery prefix; its `<prefix>/status` birth message triggers re-announce.
    pub prefix: String,
    /// Identifies this edgeclass instance in ids and topics; default the host name.
    pub node_id: Option<String>,
    /// Device name shown in Home Assistant; default `edgeclass <node id>`.
    pub device_name: Option<String>,
}

/// The biggest MQTT packet is 256 MiB; leave room for the topic and header.
const MAX_SNAPSHOT_BYTES: usize = 255 * 1024 * 1024;

/// The largest packet MQTT can carry (remaining length 268435455 plus its 5 header bytes).
pub(crate) const MQTT_MAX_PACKET: usize = 268_435_460;

/// Events, retained state and discovery configs are a few KiB at most; a smaller packet limit
/// would refuse them too.
const MIN_PACKET_BYTES: usize = 16 * 1024;

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            topic_prefix: "edgeclass".into(),
            qos: 1,
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive_s: 30,
            queue_limit: 1000,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            embedded_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            embedded_allow_anonymous: false,
            max_packet_bytes: MQTT_MAX_PACKET,
            snapshot: SnapshotConfig::default(),
            discovery: DiscoveryConfig::default(),
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            enabled: true,
            max_bytes: 256 * 1024,
        }
    }
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            enabled: true,
            prefix: "homeassistant".into(),
            node_id: None,
            device_name: None,
        }
    }
}

/// Where and how to reach the broker, resolved from `url` / `embedded_listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> PublishError {
    PublishError::Config {
        key,
        reason: reason.into(),
    }
}

/// A topic level (or prefix of levels) must be non-empty and free of MQTT wildcards.
fn check_topic_part(key: &'static str, value: &str) -> Result<(), PublishError> {
    if value.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if value.contains(['+', '#', '\0']) || value.starts_with('/') || value.ends_with('/') {
        return Err(invalid(
            key,
            format!("{value:?} must not contain '+', '#' or NUL, nor start or end with '/'"),
        ));
    }
    Ok(())
}

impl MqttConfig {
    /// Checks every key; the error names the first offending key.
    pub fn validate(&self) -> Result<(), PublishError> {
        if let Some(url) = &self.url {
            parse_url(url)?;
        }
        check_topic_part("mqtt.topic_prefix", &self.topic_prefix)?;
        if self.qos > 2 {
            return Err(invalid(
                "mqtt.qos",
                format!("{} is not 0, 1 or 2", self.qos),
            ));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 65535 {
                return Err(invalid("mqtt.client_id", "must be 1..65535 bytes"));
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(invalid(
                "mqtt.password_file",
                "set either password or password_file, not both",
            ));
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            return Err(invalid("mqtt.username", "required when a password is set"));
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => return Err(invalid("mqtt.client_key", "required with client_cert")),
            (None, Some(_)) => return Err(invalid("mqtt.client_cert", "required with client_key")),
            _ => {}
        }
        let tls = self.endpoint()?.tls;
        for (key, set) in [
            ("mqtt.ca_file", self.ca_file.is_some()),
            ("mqtt.client_cert", self.client_cert.is_some()),
        ] {
            if set && !tls {
                return Err(invalid(key, "only used with an mqtts:// url"));
            }
        }
        let exposed = !self.embedded_listen.ip().is_loopback();
        if self.url.is_none() && exposed && !self.embedded_allow_anonymous {
            return Err(invalid(
                "mqtt.embedded_listen",
                format!(
                    "the embedded broker has no authentication, so {} would let anyone on the \
                     network read and publish; keep 127.0.0.1, use your own broker (`url`), or \
                     set mqtt.embedded_allow_anonymous = true",
                    self.embedded_listen
                ),
            ));
        }
        if self.queue_limit == 0 {
            return Err(invalid("mqtt.queue_limit", "must be at least 1"));
        }
        if self.reconnect_min_ms == 0 {
            return Err(invalid("mqtt.reconnect_min_ms", "must be at least 1"));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            return Err(invalid(
                "mqtt.reconnect_max_ms",
                format!(
                    "{} is below reconnect_min_ms ({})",
                    self.reconnect_max_ms, self.reconnect_min_ms
                ),
            ));
        }
        if self.keep_alive_s > u64::from(u16::MAX) {
            return Err(invalid("mqtt.keep_alive_s", "must be at most 65535"));
        }
        if self.snapshot.max_bytes == 0 || self.snapshot.max_bytes > MAX_SNAPSHOT_BYTES {
            return Err(invalid(
                "mqtt.snapshot.max_bytes",
                format!("must be 1..={MAX_SNAPSHOT_BYTES}"),
            ));
        }
        if !(MIN_PACKET_BYTES..=MQTT_MAX_PACKET).contains(&self.max_packet_bytes) {
            return Err(invalid(
                "mqtt.max_packet_bytes",
                format!("must be {MIN_PACKET_BYTES}..={MQTT_MAX_PACKET}"),
            ));
        }
        check_topic_part("mqtt.discovery.prefix", &self.discovery.prefix)?;
        if let Some(node_id) = &self.discovery.node_id {
            if slug(node_id).is_empty() {
                return Err(invalid(
                    "mqtt.discovery.node_id",
                    "needs at least one ASCII letter or digit",
                ));
            }
        }
        Ok(())
    }

    /// The broker to connect to: `url`, or the embedded broker's listen address.
    pub(crate) fn endpoint(&self) -> Result<BrokerEndpoint, PublishError> {
        match &self.url {
            Some(url) => parse_url(url),
            None => {
                // A broker listening on every interface is reached over loopback.
                let ip = match self.embedded_listen.ip() {
                    ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    ip if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                    ip => ip,
                };
                Ok(BrokerEndpoint {
                    host: ip.to_string(),
                    port: self.embedded_listen.port(),
                    tls: false,
                })
            }
        }
    }

    /// The node id used in discovery ids and the default client id.
    pub(crate) fn node_id(&self) -> String {
        let raw = self.discovery.node_id.clone().unwrap_or_else(host_name);
        let node = slug(&raw);
        if node.is_empty() {
            "edgeclass".into()
        } else {
            node
        }
    }

    /// The MQTT client id: configured, or derived from the node id so it is stable across restarts.
    pub(crate) fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("edgeclass-{}", self.node_id()))
    }

    /// Reads the password from `password` or the first line of `password_file`.
    pub(crate) fn password(&self) -> Result<Option<String>, PublishError> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|source| PublishError::ReadFile {
                key: "mqtt.password_file",
                path: path.clone(),
                source,
            })?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        Ok(self.password.clone())
    }
}

/// Parses `mqtt://host[:port]` / `mqtts://host[:port]` (also `tcp://`, `ssl://`).
fn parse_url(url: &str) -> Result<BrokerEndpoint, PublishError> {
    let bad = |reason: &str| invalid("mqtt.url", format!("{url:?}: {reason}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected mqtt://host[:port] or mqtts://host[:port]"))?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        _ => return Err(bad("scheme must be mqtt or mqtts")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '@']) {
        return Err(bad(
            "only host and port are allowed (credentials go in username/password)",
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("garbage after ']'")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("port must be 1..65535"))?,
        None => default_port,
    };
    Ok(BrokerEndpoint {
        host: host.to_string(),
        port,
        tls,
    })
}

/// Lowercase ASCII letters, digits and `_`: safe in topics, unique ids and entity ids.
pub(crate) fn slug(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// The machine's host name from gethostname(2): `/proc/sys/kernel/hostname` does not exist
/// under the shipped unit's `ProcSubset=pid`, and an empty name gave every Pi the same client
/// id. Empty only if the call fails.
fn host_name() -> String {
    let mut name = [0u8; 256];
    // SAFETY: `name` is writable for its whole length, which is what the call is told.
    let status = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    if status != 0 {
        return String::new();
    }
    // POSIX leaves a truncated name unterminated: then the whole buffer is the name.
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert!(!kernel.trim().is_empty());
        assert_eq!(host_name(), kernel.trim());
    }

    fn parse(toml_text: &str) -> MqttConfig {
        toml::from_str(toml_text).expect("test TOML parses")
    }

    fn key_of(err: PublishError) -> &'static str {
        match err {
            PublishError::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn empty_section_means_embedded_broker_with_defaults() {
        let cfg = parse("");
        cfg.validate().unwrap();
        assert_eq!(cfg.topic_prefix, "edgeclass");
        assert_eq!(cfg.qos, 1);
        assert_eq!(
            cfg.endpoint().unwrap(),
            BrokerEndpoint {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
    }

    #[test]
    fn full_section_parses() {
        let cfg = parse(
            r#"
            url = "mqtts://broker.lan"
            topic_prefix = "home/edge"
            qos = 0
            client_id = "cam-pi"
            username = "u"
            password_file = "/etc/edgeclass/mqtt.pass"
            ca_file = "/etc/edgeclass/ca.pem"
            client_cert = "/etc/edgeclass/c.pem"
            client_key = "/etc/edgeclass/k.pem"
            keep_alive_s = 10
            queue_limit = 50
            reconnect_min_ms = 100
            reconnect_max_ms = 1000
            embedded_listen = "0.0.0.0:1884"
            snapshot = { enabled = false, max_bytes = 1000 }
            [discovery]
            enabled = false
            prefix = "ha"
            node_id = "Garage Pi"
            device_name = "Garage"
            "#,
        );
        cfg.validate().unwrap();
        assert_eq!(cfg.endpoint().unwrap().port, 8883);
        assert!(cfg.endpoint().unwrap().tls);
        assert_eq!(cfg.node_id(), "garage_pi");
        assert_eq!(cfg.client_id(), "cam-pi");
    }

    #[test]
    fn an_exposed_embedded_broker_needs_allow_anonymous() {
        let cfg = parse("embedded_listen = \"0.0.0.0:1883\"");
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("mqtt.embedded_listen") && err.contains("embedded_allow_anonymous"),
            "{err}"
        );
        let cfg = parse("embedded_listen = \"0.0.0.0:1883\"\nembedded_allow_anonymous = true");
        cfg.validate().unwrap();
        for loopback in ["127.0.0.1:1883", "[::1]:1883"] {
            parse(&format!("embedded_listen = \"{loopback}\""))
                .validate()
                .unwrap();
        }
        // With a broker of its own, the embedded one does not run.
        parse("url = \"mqtt://broker.lan\"\nembedded_listen = \"0.0.0.0:1883\"")
            .validate()
            .unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<MqttConfig>("qso = 1").unwrap_err();
        assert!(err.to_string().contains("qso"), "{err}");
        let err = toml::from_str::<MqttConfig>("[discovery]\nprefx = \"x\"").unwrap_err();
        assert!(err.to_string().contains("prefx"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let cases: &[(&str, &str)] = &[
            ("qos = 3", "mqtt.qos"),
            ("url = \"http://x\"", "mqtt.url"),
            ("url = \"mqtt://x:0\"", "mqtt.url"),
            ("url = \"mqtt://user:pw@x\"", "mqtt.url"),
            ("topic_prefix = \"a/#\"", "mqtt.topic_prefix"),
            ("topic_prefix = \"\"", "mqtt.topic_prefix"),
            ("password = \"p\"", "mqtt.username"),
            (
                "username = \"u\"\npassword = \"p\"\npassword_file = \"/f\"",
                "mqtt.password_file",
            ),
            ("ca_file = \"/ca.pem\"", "mqtt.ca_file"),
            (
                "url = \"mqtts://x\"\nclient_cert = \"/c.pem\"",
                "mqtt.client_key",
            ),
            ("queue_limit = 0", "mqtt.queue_limit"),
            (
                "reconnect_min_ms = 10\nreconnect_max_ms = 5",
                "mqtt.reconnect_max_ms",
            ),
            ("snapshot = { max_bytes = 0 }", "mqtt.snapshot.max_bytes"),
            ("max_packet_bytes = 1000", "mqtt.max_packet_bytes"),
            ("[discovery]\nprefix = \"+\"", "mqtt.discovery.prefix"),
            ("[discovery]\nnode_id = \"--\"", "mqtt.discovery.node_id"),
        ];
        for (text, key) in cases {
            let err = parse(text).validate().unwrap_err();
            assert_eq!(key_of(err), *key, "for {text:?}");
        }
    }

    #[test]
    fn urls_parse_with_default_ports_and_ipv6() {
        let e = parse_url("mqtt://10.0.0.2").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("10.0.0.2", 1883, false));
        let e = parse_url("mqtts://[::1]:8884/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("::1", 8884, true));
    }

    #[test]
    fn slugs_are_safe_ids() {
        assert_eq!(slug("Front Door/Cam #1"), "front_door_cam_1");
        assert_eq!(slug("__x__"), "x");
    }
}

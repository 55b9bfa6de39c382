//! The in-process MQTT broker (rumqttd) used when no broker URL is configured, so a fresh install
//! works with nothing else installed.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::PublishError;

/// Largest payload the embedded broker accepts (snapshots are the big ones).
const EMBEDDED_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// How long [`EmbeddedBroker::start`] waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running embedded broker (MQTT 3.1.1, anonymous). It lives on its own threads until the
/// process exits: rumqttd has no way to stop a running broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    listen: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts rumqttd on `listen` and returns once it accepts connections.
    pub fn start(listen: SocketAddr) -> Result<Self, PublishError> {
        let fail = |reason: String| PublishError::EmbeddedBroker { listen, reason };
        // rumqttd only logs a failed bind from its server thread; probe first to report it here.
        drop(TcpListener::bind(listen).map_err(|e| fail(e.to_string()))?);

        let mut broker = Broker::new(broker_config(listen));
        thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    log::error!("embedded MQTT broker on {listen} stopped: {e}");
                }
            })
            .map_err(|e| fail(format!("spawning the broker thread: {e}")))?;

        let probe = if listen.ip().is_unspecified() {
            SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), listen.port())
        } else {
            listen
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(fail(format!(
                    "not accepting connections after {READY_TIMEOUT:?}"
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        log::info!("embedded MQTT broker listening on {listen}");
        Ok(EmbeddedBroker { listen })
    }

    /// The address the broker listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}

fn broker_config(listen: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: EMBEDDED_MAX_PAYLOAD,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "edgeclass-v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            // rumqttd keeps an in-memory commit log per filter of up to count × size bytes (a
            // segment may overflow by one packet): small, since an edge device has little RAM
            // and subscribers (Home Assistant) are local and fast.
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Config::default()
    }
}

//! MQTT publishing: events, retained state, snapshots, availability, Home Assistant discovery,
//! and the embedded broker.
//!
//! Topics (prefix `edgeclass` by default):
//! - `<prefix>/<camera>/event`: one JSON [`Event`] per classification (not retained);
//! - `<prefix>/<camera>/state`: the last event again, retained, so a subscriber that starts
//!   later (Home Assistant's sensor attributes) gets the current Top-3 at once;
//! - `<prefix>/<camera>/label`: the top-1 label, retained;
//! - `<prefix>/<camera>/<head>/event`, `<prefix>/<camera>/<head>/state` and
//!   `<prefix>/<camera>/<head>/label`: the same for each custom head the camera runs
//!   ([`Publisher::head_event`]);
//! - `<prefix>/<camera>/snapshot`: JPEG of the classified frame, retained, size-capped;
//! - `<prefix>/<camera>/availability`: `online`/`offline`, retained;
//! - `<prefix>/status`: `online`/`offline`, retained, `offline` is the last will.
//!
//! Delivery: [`Publisher`] keeps its own ordered queue and hands a small window of it to rumqttc;
//! anything not acknowledged when the connection drops is re-sent after reconnecting (clean
//! session, so a broker that lost its state cannot lose events either). Events are at least once:
//! a duplicate after a reconnect has the same `seq`.

mod broker;
mod config;
mod connection;
mod discovery;
mod event;
mod mqtt;
mod outbox;

use std::path::PathBuf;

use crate::capture::CameraId;
use crate::sysexits::Sysexit;

pub use broker::EmbeddedBroker;
pub use config::{DiscoveryConfig, MqttConfig, SnapshotConfig};
pub use discovery::discovery_messages;
pub use event::Event;
pub use mqtt::{PublishStats, Publisher};

/// What went wrong while configuring, starting or stopping MQTT publishing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A config key has an invalid value.
    #[error("invalid MQTT config {key}: {reason}")]
    Config {
        /// Path of the key, e.g. `mqtt.qos`.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A file named by a config key could not be read.
    #[error("reading {key} file {}", path.display())]
    ReadFile {
        /// The key naming the file, e.g. `mqtt.password_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A certificate or key file named by a config key is unusable.
    #[error("TLS setup from {key} ({}): {reason}", path.display())]
    Tls {
        /// The key naming the file, e.g. `mqtt.ca_file` or `mqtt.client_key`.
        key: &'static str,
        /// The certificate or key file.
        path: PathBuf,
        /// Why it is unusable (no PEM certificate or key in it, or rejected by rustls).
        reason: String,
    },
    /// The embedded broker could not start.
    #[error("starting the embedded MQTT broker on {listen}: {reason}")]
    EmbeddedBroker {
        /// The address it was to listen on.
        listen: std::net::SocketAddr,
        /// Why it failed, e.g. the address is already in use.
        reason: String,
    },
    /// Shutdown ran out of time before the broker acknowledged everything.
    #[error("MQTT shutdown timed out with {unsent} message(s) not delivered to {broker}")]
    ShutdownIncomplete {
        /// The broker as `host:port`.
        broker: String,
        /// Messages still queued or unacknowledged.
        unsent: usize,
    },
}

impl PublishError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            PublishError::Config { .. } | PublishError::Tls { .. } => Sysexit::Config,
            PublishError::ReadFile { .. } => Sysexit::NoInput,
            PublishError::EmbeddedBroker { .. } | PublishError::ShutdownIncomplete { .. } => {
                Sysexit::Unavailable
            }
        }
    }
}

/// The topic names under the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            prefix: prefix.to_string(),
        }
    }

    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    /// `<prefix>/<camera>/event`, or `<prefix>/<camera>/<head>/event` for a head's events.
    pub fn event(&self, camera: &CameraId, head: Option<&str>) -> String {
        self.classifier_topic(camera, head, "event")
    }

    /// `<prefix>/<camera>/state` (the last event, retained), or `<prefix>/<camera>/<head>/state`.
    pub fn state(&self, camera: &CameraId, head: Option<&str>) -> String {
        self.classifier_topic(camera, head, "state")
    }

    /// `<prefix>/<camera>/label`, or `<prefix>/<camera>/<head>/label` for a head's label.
    pub fn label(&self, camera: &CameraId, head: Option<&str>) -> String {
        self.classifier_topic(camera, head, "label")
    }

    fn classifier_topic(&self, camera: &CameraId, head: Option<&str>, leaf: &str) -> String {
        match head {
            Some(head) => format!("{}/{camera}/{head}/{leaf}", self.prefix),
            None => format!("{}/{camera}/{leaf}", self.prefix),
        }
    }

    pub fn snapshot(&self, camera: &CameraId) -> String {
        format!("{}/{camera}/snapshot", self.prefix)
    }

    pub fn availability(&self, camera: &CameraId) -> String {
        format!("{}/{camera}/availability", self.prefix)
    }
}

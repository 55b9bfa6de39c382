//! edgeclass: classify camera frames on the edge and publish Top-3 events over MQTT.
//!
//! A frame flows one way through the stages, each a module with a small public surface:
//!
//! ```text
//! capture ──Frame──▶ preprocess ──tensor──▶ model ──logits──▶ postprocess ──Classification──▶ publish
//! ```
//!
//! The [`daemon`] wires the stages together and owns the lifecycle (config, signals, systemd):
//! every thread and task stops on one [`shutdown::Shutdown`], and every worker thread reports a
//! [`heartbeat::Heartbeat`] that the systemd watchdog checks.
//! [`commands`] holds one module per CLI subcommand; `main.rs` only parses arguments and maps
//! errors to exit codes.

pub mod capture;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod heartbeat;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod publish;
pub mod shutdown;
pub mod sysexits;

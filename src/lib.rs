//! edgeclass: classify camera frames on the edge and publish Top-3 events over MQTT.
//!
//! A frame flows one way through the stages, each a module with a small public surface:
//!
//! ```text
//! capture ──Frame──▶ preprocess ──tensor──▶ model ──logits──▶ postprocess ──Classification──▶ publish
//! ```
//!
//! [`evaluate`] measures a model on labelled images (`edgeclass eval`).
//!
//! The [`daemon`] wires the stages together and owns the lifecycle (config, signals, systemd).
//! [`commands`] holds one module per CLI subcommand; `main.rs` only parses arguments and maps
//! errors to exit codes.

pub mod capture;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod evaluate;
pub mod exit;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod publish;

//! One module per CLI subcommand. Each exposes `Args` (clap) and `run(args) -> anyhow::Result<()>`.

pub mod bench;
pub mod check_config;
pub mod classify;
pub mod eval;
pub mod fetch_model;
pub mod list_cameras;
pub mod quantize;
pub mod run;

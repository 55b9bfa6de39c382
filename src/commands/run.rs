//! `edgeclass run --config FILE`: the daemon.

use std::path::PathBuf;

/// Arguments of `edgeclass run`: the configuration file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML); keys can be overridden with EDGECLASS__SECTION__KEY.
    #[arg(long, short, default_value = "/etc/edgeclass/edgeclass.toml")]
    pub config: PathBuf,
}

/// Runs the daemon with the configuration in `--config` until SIGTERM or SIGINT; see
/// [`crate::daemon::run`].
pub fn run(args: Args) -> anyhow::Result<()> {
    crate::daemon::run(&args.config)
}

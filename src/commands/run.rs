//! `edgeclass run --config FILE`: the daemon.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML); keys can be overridden with EDGECLASS__SECTION__KEY.
    #[arg(long, short, default_value = "/etc/edgeclass/edgeclass.toml")]
    pub config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::daemon::run(&args.config)
}

//! `edgeclass check-config FILE`: validate a configuration without running.

use std::path::PathBuf;

/// Arguments of `edgeclass check-config`: the configuration file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file to validate.
    pub file: PathBuf,
}

/// Loads `args.file` exactly as `run` does (every section validated, label files read).
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&args.file)?;
    println!(
        "{}: OK ({} camera(s))",
        args.file.display(),
        config.cameras.len()
    );
    Ok(())
}

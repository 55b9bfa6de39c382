//! `edgeclass check-config FILE`: validate a configuration without running.

use std::path::PathBuf;

/// Arguments of `edgeclass check-config`: the configuration file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file to validate.
    pub file: PathBuf,
}

/// Loads `args.file` exactly as `run` does (the overrides file merged, every section
/// validated, label files read), and the head files with the keys that name their classes. Whether each head fits the model's
/// backbone is checked when the daemon has loaded the model.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&args.file)?;
    config.load_heads(&args.file, None)?;
    for warning in config.warnings() {
        eprintln!("{}: warning: {warning}", args.file.display());
    }
    if let Some(overrides) = &config.overrides_file {
        println!(
            "{}: overrides file {} is in effect (merged over this file)",
            args.file.display(),
            overrides.display()
        );
    }
    println!(
        "{}: OK ({} camera(s), {} head(s))",
        args.file.display(),
        config.cameras.len(),
        config.heads.len()
    );
    Ok(())
}

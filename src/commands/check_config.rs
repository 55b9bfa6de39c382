//! `edgeclass check-config FILE`: validate a configuration without running.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file to validate.
    pub file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = crate::config::Config::load(&args.file)?;
    // Label and threshold files are part of the configuration: load them too.
    crate::postprocess::Postprocessor::new(&config.postprocess)?;
    println!(
        "{}: OK ({} camera(s))",
        args.file.display(),
        config.cameras.len()
    );
    Ok(())
}

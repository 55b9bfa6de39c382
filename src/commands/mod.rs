//! One module per CLI subcommand. Each exposes `Args` (clap) and `run(args) -> anyhow::Result<()>`.

pub mod bench;
pub mod check_config;
mod classifier;
pub mod classify;
pub mod eval;
pub mod fetch_model;
pub mod list_cameras;
pub mod quantize;
pub mod run;
pub mod train;

/// How a command that runs the model computes: `--precision` and `--threads`.
#[derive(Debug, clap::Args)]
pub struct InferenceArgs {
    /// Compute precision (safetensors weights are quantized at load).
    #[arg(long, default_value = "q8_0")]
    pub precision: crate::model::Precision,
    /// Inference threads; 0 uses every core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Tells which calibration images were measured and which were skipped (on stderr, so stdout
/// stays the command's result).
fn report_calibration(images: &crate::model::install::CalibrationImages) {
    for (path, reason) in &images.skipped {
        eprintln!("edgeclass: calibration skips {}: {reason}", path.display());
    }
    eprintln!(
        "edgeclass: calibrated activation ranges on {} images from {}",
        images.used,
        images.dir.display()
    );
}

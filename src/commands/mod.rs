//! One module per CLI subcommand. Each exposes `Args` (clap) and `run(args) -> anyhow::Result<()>`.

pub mod bench;
mod bench_frames;
pub mod check_config;
pub(crate) mod classifier;
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

/// How `classify` and `eval` run their classifier: the backbone of head files, precision and
/// threads, test-time augmentation.
#[derive(Debug, clap::Args)]
pub struct ClassifierArgs {
    /// With head files as `--weights`: the backbone to run them on; it must be the one they
    /// were trained on [default: the backbone file the head records].
    #[arg(long)]
    pub backbone: Option<std::path::PathBuf>,
    /// Compute precision and threads.
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// Test-time augmentation: average the probabilities over the image and its mirror image
    /// (`flip`, 2 passes), and also its four corner crops (`flip+crops`, 6 passes); `eval`
    /// reports the accuracy and cost without and with it.
    #[arg(long, default_value = "none", value_name = "none|flip|flip+crops")]
    pub tta: crate::preprocess::Tta,
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

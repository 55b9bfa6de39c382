//! `edgeclass quantize`: safetensors (or GGUF) weights to an edgeclass GGUF, optionally with
//! activation ranges calibrated on sample images.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::model::{calibrate, write_gguf, ModelError, Network, Precision, StorageDtype};
use crate::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source weights: torchvision ResNet-18 safetensors (or an edgeclass GGUF).
    #[arg(long, required_unless_present = "synthetic")]
    pub input: Option<PathBuf>,
    /// GGUF file to write (replaced atomically).
    #[arg(long)]
    pub output: PathBuf,
    /// Weight storage: q8_0, q4_0 (per-channel scales) or f16.
    #[arg(long, default_value = "q8_0")]
    pub dtype: StorageDtype,
    /// Folder of sample images (what the camera sees; a few dozen is plenty): measure every
    /// activation's range on them and store it, so the int8 path runs with static scales.
    #[arg(long, value_name = "DIR")]
    pub calibrate: Option<PathBuf>,
    /// Threads for calibration (0 = every core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write the seeded synthetic full-size network instead of `--input` (benchmarks, tests).
    #[arg(long, hide = true, conflicts_with = "input")]
    pub synthetic: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let network = match (&args.input, args.synthetic) {
        (_, Some(seed)) => Network::synthetic(seed),
        (Some(input), None) => Network::load(input)?,
        (None, None) => anyhow::bail!("--input is required"),
    };
    let calibrate = args.calibrate.as_deref();
    let size = write_model(network, args.dtype, &args.output, calibrate, args.threads)?;
    println!(
        "wrote {} ({}, {:.2} MiB{})",
        args.output.display(),
        args.dtype,
        size as f64 / (1024.0 * 1024.0),
        match calibrate {
            Some(_) => ", calibrated activations",
            None => "",
        }
    );
    Ok(())
}

/// Writes `network` to `output` as GGUF with `dtype` weights, with activation ranges measured
/// on the images in `calibrate` if given (on `threads` threads). Returns the file size.
pub fn write_model(
    network: Network,
    dtype: StorageDtype,
    output: &Path,
    calibrate: Option<&Path>,
    threads: usize,
) -> anyhow::Result<u64> {
    let network = match calibrate {
        Some(dir) => calibrate_on_folder(network, dtype, dir, threads)?,
        None => network,
    };
    Ok(write_gguf(&network, dtype, output)?)
}

/// Calibrates `network` for weights stored as `dtype` on the images in `dir`.
fn calibrate_on_folder(
    network: Network,
    dtype: StorageDtype,
    dir: &Path,
    threads: usize,
) -> anyhow::Result<Network> {
    let inputs = calibration_inputs(dir, network.input_size())?;
    let precision = match dtype {
        StorageDtype::Q4_0 => Precision::Q4_0,
        StorageDtype::Q8_0 | StorageDtype::F16 => Precision::Q8_0,
    };
    let network = calibrate(
        network,
        precision,
        threads,
        inputs.iter().map(Vec::as_slice),
    )
    .context("calibrating activation ranges")?;
    eprintln!(
        "edgeclass: calibrated activation ranges on {} images from {}",
        inputs.len(),
        dir.display()
    );
    Ok(network)
}

/// The preprocessed images of `dir` (name order). Files that are not images are skipped with
/// a warning; a folder without a single image is an error.
fn calibration_inputs(dir: &Path, size: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let unreadable = |source| ModelError::CalibrationImages {
        dir: dir.to_path_buf(),
        reason: format!("cannot list it: {source}"),
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    paths.retain(|p| p.is_file());
    paths.sort();
    let mut preprocessor = Preprocessor::new(PreprocessConfig::for_input_size(size as u32));
    let mut inputs = Vec::with_capacity(paths.len());
    for path in &paths {
        let tensor =
            read_image_file(path).and_then(|frame| preprocessor.run(&frame).map(<[f32]>::to_vec));
        match tensor {
            Ok(tensor) => inputs.push(tensor),
            Err(err) => eprintln!("edgeclass: calibration skips {}: {err}", path.display()),
        }
    }
    if inputs.is_empty() {
        return Err(ModelError::CalibrationImages {
            dir: dir.to_path_buf(),
            reason: format!("none of its {} files is a readable image", paths.len()),
        }
        .into());
    }
    Ok(inputs)
}

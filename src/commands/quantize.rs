//! `edgeclass quantize`: safetensors (or GGUF) weights to an edgeclass GGUF, optionally with
//! activation ranges calibrated on sample images.

use std::path::PathBuf;

use crate::model::install::write_model;
use crate::model::{Network, StorageDtype};

/// Arguments of `edgeclass quantize`: the source weights, the GGUF to write, its weight
/// storage, and optional calibration images.
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

/// Loads the source weights, writes them as GGUF with `--dtype` weights (calibrated on the
/// `--calibrate` images if given) and prints the file written and its size.
pub fn run(args: Args) -> anyhow::Result<()> {
    let network = match (&args.input, args.synthetic) {
        (_, Some(seed)) => Network::synthetic(seed),
        (Some(input), None) => Network::load(input)?,
        (None, None) => anyhow::bail!("--input is required"),
    };
    let written = write_model(
        network,
        args.dtype,
        &args.output,
        args.calibrate.as_deref(),
        args.threads,
    )?;
    if let Some(images) = &written.calibration {
        super::report_calibration(images);
    }
    println!(
        "wrote {} ({}, {:.2} MiB{})",
        args.output.display(),
        args.dtype,
        written.bytes as f64 / (1024.0 * 1024.0),
        match written.calibration {
            Some(_) => ", calibrated activations",
            None => "",
        }
    );
    Ok(())
}

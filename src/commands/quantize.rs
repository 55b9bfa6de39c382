//! `edgeclass quantize`: safetensors (or GGUF) weights to an edgeclass GGUF.

use std::path::PathBuf;

use crate::model::{quantize_file, write_gguf, Network, StorageDtype};

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
    /// Write the seeded synthetic full-size network instead of `--input` (benchmarks, tests).
    #[arg(long, hide = true, conflicts_with = "input")]
    pub synthetic: Option<u64>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let size = match (&args.input, args.synthetic) {
        (_, Some(seed)) => write_gguf(&Network::synthetic(seed), args.dtype, &args.output)?,
        (Some(input), None) => quantize_file(input, &args.output, args.dtype)?,
        (None, None) => anyhow::bail!("--input is required"),
    };
    println!(
        "wrote {} ({}, {:.2} MiB)",
        args.output.display(),
        args.dtype,
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

//! `edgeclass classify IMAGE...`: the Top-3 ImageNet classes of image files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::model::{Model, Precision, IMAGENET_CLASSES};
use crate::postprocess::labels::imagenet;
use crate::postprocess::topk::{softmax_in_place, top_k};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image files (JPEG, PNG, BMP, GIF, TIFF, WebP, PNM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Model weights: torchvision ResNet-18 safetensors or an edgeclass GGUF.
    #[arg(long)]
    pub weights: PathBuf,
    /// Compute precision (safetensors weights are quantized at load).
    #[arg(long, default_value = "q8_0")]
    pub precision: Precision,
    /// Inference threads; 0 uses every core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One line of `--json` output.
#[derive(Debug, Serialize)]
struct Report<'a> {
    file: &'a Path,
    top3: Vec<Guess<'a>>,
    model: String,
    precision: Precision,
    /// Reading, decoding, preprocessing and inference of this image.
    latency_ms: f64,
}

#[derive(Debug, Serialize)]
struct Guess<'a> {
    index: usize,
    wnid: &'a str,
    label: &'a str,
    score: f32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Model::load(&args.weights, args.precision, args.threads)?;
    model.require_classes(IMAGENET_CLASSES)?;
    let classes = imagenet();
    let mut logits = Vec::with_capacity(IMAGENET_CLASSES);
    let mut first_failure = None;
    let mut failures = 0;
    for path in &args.images {
        let started = Instant::now();
        let result = load_tensor(path, model.input_size()).and_then(|tensor| {
            model
                .forward(&tensor, &mut logits)
                .with_context(|| format!("classifying {}", path.display()))
        });
        if let Err(err) = result {
            eprintln!("edgeclass: {err:#}");
            failures += 1;
            first_failure.get_or_insert(err);
            continue;
        }
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        softmax_in_place(&mut logits);
        let top3 = top_k(&logits, 3)
            .into_iter()
            .map(|(index, score)| Guess {
                index,
                wnid: &classes[index].wnid,
                label: &classes[index].name,
                score,
            })
            .collect();
        let report = Report {
            file: path,
            top3,
            model: model.description(),
            precision: model.precision(),
            latency_ms,
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_table(&report);
        }
    }
    match first_failure {
        None => Ok(()),
        Some(err) => Err(err.context(format!(
            "{failures} of {} images could not be classified",
            args.images.len()
        ))),
    }
}

fn print_table(report: &Report) {
    println!(
        "{}  ({}, {:.1} ms)",
        report.file.display(),
        report.model,
        report.latency_ms
    );
    for (rank, guess) in report.top3.iter().enumerate() {
        println!(
            "  {}. {:>5.1}%  {:<30} {} #{}",
            rank + 1,
            guess.score * 100.0,
            guess.label,
            guess.wnid,
            guess.index
        );
    }
}

/// Decodes an image file into the model's normalized `1x3xSxS` input, like torchvision's
/// `Resize(S * 8 / 7, antialias=True)`, `CenterCrop(S)`, `ToTensor`, `Normalize`.
///
/// Kept in this one function so the shared `preprocess` stage can replace it.
fn load_tensor(path: &Path, size: usize) -> anyhow::Result<Vec<f32>> {
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rgb = image::load_from_memory(&bytes)
        .with_context(|| format!("decoding image {}", path.display()))?
        .to_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        anyhow::bail!("image {} is empty", path.display());
    }
    // The short side becomes 256 for S = 224; the long side keeps the aspect ratio, truncated
    // as torchvision does.
    let short = (size * 256 / 224) as u32;
    let (rw, rh) = if w <= h {
        (short, (short as u64 * h as u64 / w as u64) as u32)
    } else {
        ((short as u64 * w as u64 / h as u64) as u32, short)
    };
    // Triangle filtering scales its support with the ratio: PIL's antialiased bilinear.
    let resized = image::imageops::resize(&rgb, rw, rh, image::imageops::FilterType::Triangle);
    let left = ((rw as f64 - size as f64) / 2.0).round() as u32;
    let top = ((rh as f64 - size as f64) / 2.0).round() as u32;
    let plane = size * size;
    let mut tensor = vec![0f32; 3 * plane];
    for y in 0..size {
        for x in 0..size {
            let pixel = resized.get_pixel(left + x as u32, top + y as u32);
            for c in 0..3 {
                tensor[c * plane + y * size + x] = (pixel[c] as f32 / 255.0 - MEAN[c]) / STD[c];
            }
        }
    }
    Ok(tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The adapter against torchvision's transform of the same JPEG (written by
    /// tests/fixtures/make_reference.py): resampling filters differ a little, never much.
    #[test]
    fn load_tensor_is_close_to_torchvision() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let ours = load_tensor(&dir.join("model_chelsea.jpg"), 224).unwrap();
        let reference: Vec<f32> = std::fs::read(dir.join("model_chelsea_input.f32"))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(ours.len(), reference.len());
        let diffs: Vec<f32> = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let max = diffs.iter().copied().fold(0f32, f32::max);
        println!("adapter vs torchvision: mean |diff| {mean:.4}, max {max:.4}");
        assert!(mean < 0.02 && max < 0.3, "mean |diff| {mean}, max {max}");
    }
}

//! `edgeclass classify IMAGE...`: the Top-3 ImageNet classes of image files, or the Top-3 of a
//! custom head's classes when `--weights` is a head file (of their ensemble when repeated),
//! optionally averaged over test-time views (`--tta`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::model::Precision;
use crate::postprocess::topk::{softmax_in_place, top_k};
use crate::preprocess::{read_image_file, Preprocessor, Tta};

use super::classifier::{Buffers, Classifier};
use super::ClassifierArgs;

/// Arguments of `edgeclass classify`: image files, the weights, precision and thread count,
/// and the output form.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image files (JPEG, PNG, BMP, GIF, TIFF, WebP, PNM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Model weights: torchvision ResNet-18 safetensors or an edgeclass GGUF, or a head file
    /// (`edgeclass train`) to print its classes instead of ImageNet's; repeated with head files
    /// (same classes, same backbone): their ensemble, probabilities averaged
    /// [default: resnet18-q8_0.gguf in the data directory, as `edgeclass fetch-model` writes it].
    #[arg(long)]
    pub weights: Vec<PathBuf>,
    /// The backbone of head files, precision, threads, test-time augmentation.
    #[command(flatten)]
    pub classifier: ClassifierArgs,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One line of `--json` output (also `POST /api/classify`'s answer, in [`crate::web`]).
#[derive(Debug, Serialize)]
pub(crate) struct Report<'a> {
    file: &'a Path,
    top3: Vec<Guess<'a>>,
    model: String,
    precision: Precision,
    /// Left out without test-time augmentation.
    #[serde(skip_serializing_if = "is_none")]
    tta: Tta,
    /// Reading, decoding, preprocessing and inference of this image.
    latency_ms: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Guess<'a> {
    index: usize,
    /// Empty, and left out, for a head's classes.
    #[serde(skip_serializing_if = "str::is_empty")]
    wnid: &'a str,
    label: &'a str,
    score: f32,
}

/// Prints the Top-3 classes of each image, ImageNet's or a head's (with the latency of
/// reading, decoding, preprocessing and inference) as a table or JSON lines. An image that
/// fails is reported on stderr and the others are still classified; the command then fails,
/// saying how many failed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut weights = args.weights;
    if weights.is_empty() {
        weights.push(crate::model::default_weights_path());
    }
    let classifier = Classifier::load(
        &weights,
        args.classifier.backbone.as_deref(),
        &args.classifier.inference,
    )?;
    let mut preprocessor = Preprocessor::new(classifier.model.preprocess_config());
    let mut buffers = Buffers::default();
    let mut first_failure = None;
    let mut failures = 0;
    // Write errors end the command (a closed pipe is a quiet success, decided in main).
    let mut out = std::io::stdout().lock();
    for path in &args.images {
        let started = Instant::now();
        let mut classify = || -> anyhow::Result<()> {
            let frame = read_image_file(path)?;
            preprocessor.decode(&frame)?;
            buffers
                .classify(&classifier, &mut preprocessor, args.classifier.tta)
                .with_context(|| format!("classifying {}", path.display()))
        };
        if let Err(err) = classify() {
            eprintln!("edgeclass: {err:#}");
            failures += 1;
            first_failure.get_or_insert(err);
            continue;
        }
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let report = Report::new(
            &classifier,
            &mut buffers,
            path,
            args.classifier.tta,
            latency_ms,
        );
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&report)?)?;
        } else {
            write_table(&mut out, &report)?;
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

impl<'a> Report<'a> {
    /// The report of the image `buffers` classified last (its scores become probabilities),
    /// named `file`, which took `latency_ms`.
    pub(crate) fn new(
        classifier: &'a Classifier,
        buffers: &mut Buffers,
        file: &'a Path,
        tta: Tta,
        latency_ms: f64,
    ) -> Self {
        let scores = buffers.scores();
        softmax_in_place(scores);
        let top3 = top_k(scores, 3)
            .into_iter()
            .map(|(index, score)| {
                let (label, wnid) = classifier.class(index);
                Guess {
                    index,
                    wnid,
                    label,
                    score,
                }
            })
            .collect();
        Report {
            file,
            top3,
            model: classifier.description.clone(),
            precision: classifier.model.precision(),
            tta,
            latency_ms,
        }
    }
}

fn is_none(tta: &Tta) -> bool {
    *tta == Tta::None
}

fn write_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let tta = match report.tta {
        Tta::None => String::new(),
        tta => format!(", tta {tta}"),
    };
    writeln!(
        out,
        "{}  ({}{tta}, {:.1} ms)",
        report.file.display(),
        report.model,
        report.latency_ms
    )?;
    for (rank, guess) in report.top3.iter().enumerate() {
        // A head's classes have no WordNet id: then only the index follows the label.
        let id = if guess.wnid.is_empty() {
            format!("#{}", guess.index)
        } else {
            format!("{} #{}", guess.wnid, guess.index)
        };
        writeln!(
            out,
            "  {}. {:>5.1}%  {:<30} {id}",
            rank + 1,
            guess.score * 100.0,
            guess.label,
        )?;
    }
    Ok(())
}

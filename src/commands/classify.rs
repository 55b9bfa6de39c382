//! `edgeclass classify IMAGE...`: the Top-3 ImageNet classes of image files, or the Top-3 of a
//! custom head's classes when `--weights` is a head file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::model::{is_head_file, Head, Model, Precision, IMAGENET_CLASSES};
use crate::postprocess::labels::imagenet;
use crate::postprocess::topk::{softmax_in_place, top_k};
use crate::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

use super::InferenceArgs;

/// Arguments of `edgeclass classify`: image files, the weights, precision and thread count,
/// and the output form.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image files (JPEG, PNG, BMP, GIF, TIFF, WebP, PNM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Model weights: torchvision ResNet-18 safetensors or an edgeclass GGUF, or a head file
    /// (`edgeclass train`) to print its classes instead of ImageNet's
    /// [default: resnet18-q8_0.gguf in the data directory, as `edgeclass fetch-model` writes it].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// With a head file as `--weights`: the backbone to run it on; it must be the one the head
    /// was trained on [default: the backbone file the head records].
    #[arg(long)]
    pub backbone: Option<PathBuf>,
    /// Compute precision and threads.
    #[command(flatten)]
    pub inference: InferenceArgs,
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
    /// Empty, and left out, for a head's classes.
    #[serde(skip_serializing_if = "str::is_empty")]
    wnid: &'a str,
    label: &'a str,
    score: f32,
}

/// The classifier `classify` runs: the ImageNet fc, or a head on the backbone's features.
struct Classifier {
    model: Model,
    head: Option<Head>,
    /// `model` of the report: the network and precision, and the head file's name.
    description: String,
}

impl Classifier {
    /// The model in `weights`, or the head in `weights` on `backbone` (default: the backbone
    /// file the head records), checked to be the backbone it was trained on.
    fn load(
        weights: &Path,
        backbone: Option<&Path>,
        inference: &InferenceArgs,
    ) -> anyhow::Result<Self> {
        let load = |path: &Path| Model::load(path, inference.precision, inference.threads);
        if !is_head_file(weights) {
            if let Some(backbone) = backbone {
                anyhow::bail!(
                    "--backbone {} is for a head file, but {} is a whole network",
                    backbone.display(),
                    weights.display()
                );
            }
            let model = load(weights).context(
                "no usable model (download one with `edgeclass fetch-model`, or pass --weights)",
            )?;
            model.require_classes(IMAGENET_CLASSES)?;
            let description = model.description();
            return Ok(Classifier {
                model,
                head: None,
                description,
            });
        }
        let head = Head::load(weights)?;
        let backbone = backbone.unwrap_or(&head.backbone().file);
        let model = load(backbone).with_context(|| {
            format!(
                "no usable backbone for the head {} (pass --backbone)",
                weights.display()
            )
        })?;
        model.check_head(&head, weights)?;
        let name = weights.file_stem().unwrap_or_default().to_string_lossy();
        let description = format!("{}+{name}", model.description());
        Ok(Classifier {
            model,
            head: Some(head),
            description,
        })
    }

    /// Name and WordNet id (empty for a head's classes) of class `index`.
    fn class(&self, index: usize) -> (&str, &str) {
        match &self.head {
            Some(head) => (&head.classes()[index], ""),
            None => {
                let class = &imagenet()[index];
                (&class.name, &class.wnid)
            }
        }
    }
}

/// The buffers one image's classification writes, reused from image to image.
#[derive(Default)]
struct Buffers {
    logits: Vec<f32>,
    features: Vec<f32>,
    hidden: Vec<f32>,
    head_logits: Vec<f32>,
}

impl Buffers {
    /// Runs `classifier` on `tensor`; [`Buffers::scores`] then holds its logits.
    fn classify(
        &mut self,
        classifier: &Classifier,
        tensor: &[f32],
    ) -> Result<(), crate::model::ModelError> {
        let Some(head) = &classifier.head else {
            return classifier.model.forward(tensor, &mut self.logits);
        };
        classifier
            .model
            .forward_with_features(tensor, &mut self.logits, &mut self.features)?;
        head.forward(&self.features, &mut self.hidden, &mut self.head_logits);
        Ok(())
    }

    /// The classifier's output of the last [`Buffers::classify`].
    fn scores(&mut self, classifier: &Classifier) -> &mut [f32] {
        match classifier.head {
            Some(_) => &mut self.head_logits,
            None => &mut self.logits,
        }
    }
}

/// Prints the Top-3 classes of each image, ImageNet's or a head's (with the latency of
/// reading, decoding, preprocessing and inference) as a table or JSON lines. An image that
/// fails is reported on stderr and the others are still classified; the command then fails,
/// saying how many failed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let weights = args
        .weights
        .unwrap_or_else(crate::model::default_weights_path);
    let classifier = Classifier::load(&weights, args.backbone.as_deref(), &args.inference)?;
    let size = classifier.model.input_size() as u32;
    let mut preprocessor = Preprocessor::new(PreprocessConfig::for_input_size(size));
    let mut buffers = Buffers::default();
    let mut first_failure = None;
    let mut failures = 0;
    // Write errors end the command (a closed pipe is a quiet success, decided in main).
    let mut out = std::io::stdout().lock();
    for path in &args.images {
        let started = Instant::now();
        let mut classify = || -> anyhow::Result<()> {
            let frame = read_image_file(path)?;
            let tensor = preprocessor.run(&frame)?;
            buffers
                .classify(&classifier, tensor)
                .with_context(|| format!("classifying {}", path.display()))
        };
        if let Err(err) = classify() {
            eprintln!("edgeclass: {err:#}");
            failures += 1;
            first_failure.get_or_insert(err);
            continue;
        }
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let scores = buffers.scores(&classifier);
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
        let report = Report {
            file: path,
            top3,
            model: classifier.description.clone(),
            precision: classifier.model.precision(),
            latency_ms,
        };
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

fn write_table(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "{}  ({}, {:.1} ms)",
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

//! `edgeclass eval DATA`: accuracy, calibration and threshold trade-offs of a model on a
//! labelled folder of images (one sub-folder per class, named by ImageNet WordNet id or
//! English name). The figures come from [`crate::evaluate`].

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::dataset::{imagenet_class_folders, images_in};
use crate::evaluate::{report, Evaluation, Sample};
use crate::model::{Model, IMAGENET_CLASSES};
use crate::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

use super::InferenceArgs;

/// Arguments of `edgeclass eval`: the labelled folder, the model, the output forms and the
/// precision to recommend thresholds for.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled images: one folder per class, named by WordNet id (`n02123045`) or English
    /// name (`tabby`).
    pub data: PathBuf,
    /// Model weights: torchvision ResNet-18 safetensors or an edgeclass GGUF.
    #[arg(long)]
    pub weights: PathBuf,
    /// Compute precision and threads.
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with the plots.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Recommend the lowest global and per-class thresholds whose covered accuracy reaches P.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    pub target_precision: Option<f64>,
    /// Write the recommended thresholds as a `[postprocess]` TOML snippet (needs
    /// --target-precision).
    #[arg(long, value_name = "FILE", requires = "target_precision")]
    pub write_thresholds: Option<PathBuf>,
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{text:?} is not a probability in 0.0..=1.0")),
    }
}

/// Classifies every image of the labelled folder and prints the [`Evaluation`] as text or JSON;
/// optionally writes the HTML report and the recommended thresholds. Unreadable images are
/// skipped and counted; the command fails if none is readable.
pub fn run(args: Args) -> anyhow::Result<()> {
    let folders = imagenet_class_folders(&args.data)?;
    let model = Model::load(
        &args.weights,
        args.inference.precision,
        args.inference.threads,
    )?;
    model.require_classes(IMAGENET_CLASSES)?;
    let mut preprocessor =
        Preprocessor::new(PreprocessConfig::for_input_size(model.input_size() as u32));
    let mut samples = Vec::new();
    let mut skipped = 0usize;
    for (class, folder) in &folders {
        for path in images_in(folder)? {
            let mut classify = |logits: &mut Vec<f32>| -> anyhow::Result<()> {
                let frame = read_image_file(&path)?;
                model.forward(preprocessor.run(&frame)?, logits)?;
                Ok(())
            };
            let mut logits = Vec::with_capacity(IMAGENET_CLASSES);
            match classify(&mut logits) {
                Ok(()) => samples.push(Sample {
                    logits,
                    truth: class.index,
                }),
                Err(err) => {
                    skipped += 1;
                    eprintln!("edgeclass: skipping {}: {err:#}", path.display());
                }
            }
        }
    }
    if skipped > 0 {
        eprintln!("edgeclass: skipped {skipped} unreadable images");
    }
    if samples.is_empty() {
        bail!(
            "no readable images in the class folders of {}",
            args.data.display()
        );
    }
    let classes = folders.into_iter().map(|(class, _)| class).collect();
    let evaluation = Evaluation::new(&samples, classes, args.target_precision);

    if let Some(path) = &args.report {
        let title = args.data.display().to_string();
        std::fs::write(path, report::html(&evaluation, &title))
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    if let (Some(path), Some(toml)) = (&args.write_thresholds, evaluation.thresholds_toml()) {
        std::fs::write(path, toml)
            .with_context(|| format!("writing thresholds {}", path.display()))?;
    }
    if args.json {
        let mut value = serde_json::to_value(&evaluation)?;
        value["skipped"] = skipped.into();
        value["model"] = model.description().into();
        println!("{value}");
    } else {
        print!("{}", evaluation.text());
        if skipped > 0 {
            println!("{skipped} unreadable images skipped");
        }
    }
    Ok(())
}

//! `edgeclass eval DATA`: accuracy, calibration and threshold trade-offs of a model on a
//! labelled folder of images (one sub-folder per class, named by ImageNet WordNet id or
//! English name, or by a head's class names). The figures come from [`crate::evaluate`].

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::dataset::{imagenet_class_folders, images_in, named_class_folders};
use crate::evaluate::{report, Evaluation, Sample};
use crate::model::scale_temperature;
use crate::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

use super::classifier::{Buffers, Classifier};
use super::InferenceArgs;

/// Arguments of `edgeclass eval`: the labelled folder, the model, the output forms and the
/// precision to recommend thresholds for.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled images: one folder per class, named by WordNet id (`n02123045`) or English
    /// name (`tabby`), or by the class names of a head.
    pub data: PathBuf,
    /// Model weights: torchvision ResNet-18 safetensors, an edgeclass GGUF, or a head file
    /// (`edgeclass train`).
    #[arg(long)]
    pub weights: PathBuf,
    /// With a head file as `--weights`: the backbone to run it on [default: the backbone file
    /// the head records].
    #[arg(long)]
    pub backbone: Option<PathBuf>,
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
    /// Store the fitted temperature in the model file (a head or a GGUF network), so its
    /// scores mean what they say; thresholds are then recommended on the calibrated scores
    /// (a head stores them too, with --target-precision). The daemon applies a head's on
    /// reload, a network's on restart.
    #[arg(long)]
    pub update_model: bool,
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
    let classifier = Classifier::load(&args.weights, args.backbone.as_deref(), &args.inference)?;
    let folders = match &classifier.head {
        Some(head) => named_class_folders(&args.data, head.classes())?,
        None => imagenet_class_folders(&args.data)?,
    };
    let size = classifier.model.input_size() as u32;
    let mut preprocessor = Preprocessor::new(PreprocessConfig::for_input_size(size));
    let mut buffers = Buffers::default();
    let mut samples = Vec::new();
    let mut skipped = 0usize;
    for (class, folder) in &folders {
        for path in images_in(folder)? {
            let mut classify = || -> anyhow::Result<Vec<f32>> {
                let frame = read_image_file(&path)?;
                buffers.classify(&classifier, preprocessor.run(&frame)?)?;
                Ok(buffers.scores(&classifier).to_vec())
            };
            match classify() {
                Ok(logits) => samples.push(Sample {
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
    let classes: Vec<_> = folders.into_iter().map(|(class, _)| class).collect();
    let evaluation = Evaluation::new(&samples, classes.clone(), args.target_precision);
    // Once the temperature is stored, scores are calibrated: recommend thresholds on those.
    let recommending = if args.update_model {
        let fitted = evaluation.calibration.temperature as f32;
        for sample in &mut samples {
            sample.logits.iter_mut().for_each(|l| *l /= fitted);
        }
        let calibrated = Evaluation::new(&samples, classes, args.target_precision);
        update_model(&args, &classifier, fitted, &calibrated)?;
        calibrated
    } else {
        evaluation.clone()
    };

    if let Some(path) = &args.report {
        let title = args.data.display().to_string();
        std::fs::write(path, report::html(&evaluation, &title))
            .with_context(|| format!("writing report {}", path.display()))?;
    }
    if let (Some(path), Some(toml)) = (&args.write_thresholds, recommending.thresholds_toml()) {
        std::fs::write(path, toml)
            .with_context(|| format!("writing thresholds {}", path.display()))?;
    }
    if args.json {
        let mut value = serde_json::to_value(&evaluation)?;
        value["skipped"] = skipped.into();
        value["model"] = classifier.description.clone().into();
        println!("{value}");
    } else {
        print!("{}", evaluation.text());
        if skipped > 0 {
            println!("{skipped} unreadable images skipped");
        }
    }
    Ok(())
}

/// Stores the fitted temperature (on top of the model's own) in the model file, and for a
/// head, with a target precision, the per-class thresholds recommended on the calibrated
/// scores. A whole network's thresholds go to the config (`--write-thresholds`).
fn update_model(
    args: &Args,
    classifier: &Classifier,
    fitted: f32,
    calibrated: &Evaluation,
) -> anyhow::Result<()> {
    let Some(head) = &classifier.head else {
        let temperature = scale_temperature(&args.weights, fitted)?;
        eprintln!(
            "edgeclass: stored temperature {temperature:.3} in {}",
            args.weights.display()
        );
        return Ok(());
    };
    let mut head = head.clone();
    head.set_temperature(head.temperature() * fitted)
        .map_err(anyhow::Error::msg)?;
    let mut what = format!("temperature {:.3}", head.temperature());
    if args.target_precision.is_some() {
        let floor = crate::train::MIN_RECOMMENDED_THRESHOLD;
        // In the head's class order; a class without a folder here keeps its threshold.
        let mut thresholds = head
            .thresholds()
            .map_or_else(|| vec![floor; head.classes().len()], <[f32]>::to_vec);
        for (class, threshold) in calibrated
            .classes
            .iter()
            .zip(calibrated.class_thresholds(floor))
        {
            thresholds[class.class.index] = threshold;
        }
        what.push_str(&format!(", thresholds {thresholds:.2?}"));
        head.set_thresholds(thresholds)
            .map_err(anyhow::Error::msg)?;
    }
    head.save(&args.weights)?;
    eprintln!("edgeclass: stored {what} in {}", args.weights.display());
    Ok(())
}

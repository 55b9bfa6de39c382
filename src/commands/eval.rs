//! `edgeclass eval DATA`: accuracy, calibration and threshold trade-offs of a model on a
//! labelled folder of images (one sub-folder per class, named by ImageNet WordNet id or
//! English name, or by a head's class names). The figures come from [`crate::evaluate`].
//! With `--tta` they are of the probabilities averaged over the test-time views, preceded by
//! top-1, top-5 and milliseconds per image without and with the augmentation. Several head
//! files make an ensemble: each member's top-1 and top-5 precede the ensemble's figures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::dataset::{imagenet_class_folders, images_in, named_class_folders};
use crate::evaluate::{report, Evaluation, Sample};
use crate::model::{scale_temperature, Head};
use crate::preprocess::{read_image_file, Preprocessor, Tta};

use super::classifier::{Buffers, Classifier};
use super::ClassifierArgs;

/// Arguments of `edgeclass eval`: the labelled folder, the model, the output forms and the
/// precision to recommend thresholds for.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled images: one folder per class, named by WordNet id (`n02123045`) or English
    /// name (`tabby`), or by the class names of a head.
    pub data: PathBuf,
    /// Model weights: torchvision ResNet-18 safetensors, an edgeclass GGUF, or a head file
    /// (`edgeclass train`). Repeated with head files (same classes, same backbone): an ensemble
    /// averaging their probabilities, reported member by member and as a whole.
    #[arg(long, required = true)]
    pub weights: Vec<PathBuf>,
    /// The backbone of head files, precision, threads, test-time augmentation.
    #[command(flatten)]
    pub classifier: ClassifierArgs,
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
    let classifier = Classifier::load(
        &args.weights,
        args.classifier.backbone.as_deref(),
        &args.classifier.inference,
    )?;
    if args.update_model && args.weights.len() > 1 {
        bail!(
            "--update-model stores one model's calibration; {} is one of an ensemble",
            args.weights[0].display()
        );
    }
    if args.update_model && args.classifier.tta != Tta::None {
        bail!(
            "--update-model fits the model's own scores; run it without --tta {}",
            args.classifier.tta
        );
    }
    let folders = match &classifier.head {
        Some(head) => named_class_folders(&args.data, head.classes())?,
        None => imagenet_class_folders(&args.data)?,
    };
    let mut preprocessor = Preprocessor::new(classifier.model.preprocess_config());
    let mut buffers = Buffers::default();
    let mut samples = Vec::new();
    let mut plain_samples = Vec::new();
    let members = classifier.head.as_ref().map_or(0, |h| h.members().len());
    // Each member's samples, for an ensemble.
    let mut member_samples = vec![Vec::new(); if members > 1 { members } else { 0 }];
    let (mut time, mut plain_time) = (Duration::ZERO, Duration::ZERO);
    let mut skipped = 0usize;
    for (class, folder) in &folders {
        for path in images_in(folder)? {
            let mut classify = || -> anyhow::Result<()> {
                let frame = read_image_file(&path)?;
                preprocessor.decode(&frame)?;
                buffers.classify(&classifier, &mut preprocessor, args.classifier.tta)?;
                Ok(())
            };
            match classify() {
                Ok(()) => {
                    let truth = class.index;
                    samples.push(Sample {
                        logits: buffers.scores().to_vec(),
                        truth,
                    });
                    plain_samples.push(Sample {
                        logits: buffers.plain_scores().to_vec(),
                        truth,
                    });
                    for (member, samples) in member_samples.iter_mut().enumerate() {
                        samples.push(Sample {
                            logits: buffers.member_scores(member).to_vec(),
                            truth,
                        });
                    }
                    (time, plain_time) = (time + buffers.time, plain_time + buffers.plain_time);
                }
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
    let comparison = (args.classifier.tta != Tta::None).then(|| {
        let images = samples.len() as f64;
        let plain = Evaluation::new(&plain_samples, classes.clone(), None);
        TtaComparison {
            tta: args.classifier.tta,
            views: args.classifier.tta.views().len(),
            without: Cost::of(&plain, plain_time, images),
            with: Cost::of(&evaluation, time, images),
        }
    });
    let members: Vec<Member> = member_samples
        .iter()
        .zip(&args.weights)
        .map(|(samples, weights)| {
            let evaluation = Evaluation::new(samples, classes.clone(), None);
            Member {
                weights: weights.clone(),
                top1_accuracy: evaluation.top1_accuracy,
                top5_accuracy: evaluation.top5_accuracy,
            }
        })
        .collect();
    // Once the temperature is stored, scores are calibrated: recommend thresholds on those.
    let recommending = if args.update_model {
        let fitted = evaluation.calibration.temperature as f32;
        for sample in &mut samples {
            sample.logits.iter_mut().for_each(|l| *l /= fitted);
        }
        let calibrated = Evaluation::new(&samples, classes, args.target_precision);
        let head = classifier.head.as_ref().and_then(|h| h.single());
        update_model(
            &args.weights[0],
            head,
            args.target_precision.is_some(),
            fitted,
            &calibrated,
        )?;
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
        if let Some(comparison) = &comparison {
            value["tta"] = serde_json::to_value(comparison)?;
        }
        if !members.is_empty() {
            value["members"] = serde_json::to_value(&members)?;
        }
        println!("{value}");
    } else {
        for member in &members {
            println!(
                "member {}: top-1 {:.1} %, top-5 {:.1} %",
                member.weights.display(),
                member.top1_accuracy * 100.0,
                member.top5_accuracy * 100.0
            );
        }
        if !members.is_empty() {
            println!("ensemble of {}:", members.len());
        }
        if let Some(comparison) = &comparison {
            print!("{}", comparison.text());
        }
        print!("{}", evaluation.text());
        if skipped > 0 {
            println!("{skipped} unreadable images skipped");
        }
    }
    Ok(())
}

/// One member of an ensemble on its own.
#[derive(Debug, Serialize)]
struct Member {
    /// Its head file.
    weights: PathBuf,
    top1_accuracy: f64,
    top5_accuracy: f64,
}

/// Accuracy and cost without and with test-time augmentation (`--tta`).
#[derive(Debug, Serialize)]
struct TtaComparison {
    tta: Tta,
    /// Views classified per image: backbone passes.
    views: usize,
    without: Cost,
    with: Cost,
}

/// One side of a [`TtaComparison`].
#[derive(Debug, Serialize)]
struct Cost {
    top1_accuracy: f64,
    top5_accuracy: f64,
    /// Preprocessing and inference per image (decoding, the same for both, left out).
    ms_per_image: f64,
}

impl Cost {
    fn of(evaluation: &Evaluation, time: Duration, images: f64) -> Cost {
        Cost {
            top1_accuracy: evaluation.top1_accuracy,
            top5_accuracy: evaluation.top5_accuracy,
            ms_per_image: time.as_secs_f64() * 1e3 / images,
        }
    }
}

impl TtaComparison {
    fn text(&self) -> String {
        let line = |name: String, cost: &Cost| {
            format!(
                "{name:<32} top-1 {:>5.1} %, top-5 {:>5.1} %, {:>7.1} ms/image\n",
                cost.top1_accuracy * 100.0,
                cost.top5_accuracy * 100.0,
                cost.ms_per_image
            )
        };
        let views = format!("with tta {} ({} views):", self.tta, self.views);
        format!(
            "{}{}\n",
            line("without tta:".into(), &self.without),
            line(views, &self.with)
        )
    }
}

/// Stores the fitted temperature (on top of the model's own) in the model file, and for a
/// head, with a target precision, the per-class thresholds recommended on the calibrated
/// scores. A whole network's thresholds go to the config (`--write-thresholds`).
fn update_model(
    path: &Path,
    head: Option<&Head>,
    with_thresholds: bool,
    fitted: f32,
    calibrated: &Evaluation,
) -> anyhow::Result<()> {
    let Some(head) = head else {
        let temperature = scale_temperature(path, fitted)?;
        eprintln!(
            "edgeclass: stored temperature {temperature:.3} in {}",
            path.display()
        );
        return Ok(());
    };
    let mut head = head.clone();
    head.set_temperature(head.temperature() * fitted)
        .map_err(anyhow::Error::msg)?;
    let mut what = format!("temperature {:.3}", head.temperature());
    if with_thresholds {
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
    head.save(path)?;
    eprintln!("edgeclass: stored {what} in {}", path.display());
    Ok(())
}

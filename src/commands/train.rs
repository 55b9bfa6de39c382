//! `edgeclass train DATA --output MODEL.gguf`: trains a head for the classes in DATA's folders
//! on the device's CPU ([`crate::train`]) and writes it as a head file the daemon, `classify`
//! and `eval` load.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::dataset::training_classes;
use crate::model::{default_weights_path, Ensemble, Model, LAST_STAGE};
use crate::train::augment::Augmentation;
use crate::train::features::Skipped;
use crate::train::fit::{Distillation, Epoch, FitOptions};
use crate::train::unfreeze::Unfreeze;
use crate::train::{self, Progress, Teacher, TrainOptions};

use super::InferenceArgs;

/// Arguments of `edgeclass train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled pictures: one folder per class (`DATA/open/*.jpg`, `DATA/closed/*.jpg`); the
    /// folder names become the published labels.
    pub data: PathBuf,
    /// Where to write the trained head.
    #[arg(
        long,
        short,
        value_name = "MODEL.gguf",
        required_unless_present = "dry_run"
    )]
    pub output: Option<PathBuf>,
    /// The backbone the head reads features from: the daemon's `[model] weights`
    /// [default: resnet18-q8_0.gguf in the data directory].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Compute precision and threads of the backbone (use the daemon's).
    #[command(flatten)]
    pub inference: InferenceArgs,
    /// Check the data and print its counts; train nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Hidden layer width of the head; 0 trains a linear head.
    #[arg(long, default_value_t = FitOptions::default().hidden)]
    pub hidden: usize,
    /// Dropout before the output layer (MLP heads).
    #[arg(long, default_value_t = FitOptions::default().dropout)]
    pub dropout: f32,
    /// Most epochs.
    #[arg(long, default_value_t = FitOptions::default().max_epochs)]
    pub epochs: usize,
    /// Early stopping: epochs without a better validation loss before stopping (0: never).
    #[arg(long, default_value_t = FitOptions::default().patience)]
    pub patience: usize,
    /// Peak learning rate (cosine schedule after a linear warm-up).
    #[arg(long, default_value_t = FitOptions::default().learning_rate)]
    pub learning_rate: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = FitOptions::default().weight_decay)]
    pub weight_decay: f64,
    /// Warm-up epochs.
    #[arg(long, default_value_t = FitOptions::default().warmup_epochs)]
    pub warmup_epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = FitOptions::default().batch_size)]
    pub batch_size: usize,
    /// Label smoothing.
    #[arg(long, default_value_t = FitOptions::default().label_smoothing)]
    pub label_smoothing: f32,
    /// Do not weight classes by the inverse of their size.
    #[arg(long)]
    pub no_balance: bool,
    /// Train on the pictures as they are, without augmented views.
    #[arg(long)]
    pub no_augment: bool,
    /// Never mirror pictures (for states that are not mirror-symmetric).
    #[arg(long)]
    pub no_flip: bool,
    /// Augmented views per picture.
    #[arg(long, default_value_t = TrainOptions::default().views)]
    pub views: usize,
    /// Share of each class held out for validation.
    #[arg(long, default_value_t = TrainOptions::default().val_fraction)]
    pub val_split: f64,
    /// Precision the recommended per-class thresholds should reach on the validation split.
    #[arg(long, default_value_t = TrainOptions::default().target_precision)]
    pub target_precision: f64,
    /// Seeds the split, augmentation, initialization and shuffling.
    #[arg(long, default_value_t = FitOptions::default().seed)]
    pub seed: u64,
    /// Also fine-tune this stage of the backbone with the head, in f32 (only `layer4`): the
    /// head file then carries its own layer4. Slower (layer4 runs forward and backward over
    /// every view each epoch); `classify`, `eval` and `--teacher` run such a head, the daemon's
    /// `[[heads]]` do not (distil it into a head that shares the backbone).
    #[arg(long, value_name = "STAGE", value_parser = [LAST_STAGE])]
    pub unfreeze: Option<String>,
    /// Most epochs of fine-tuning the unfrozen stage (after the head's own epochs).
    #[arg(long, default_value_t = Unfreeze::default().epochs, requires = "unfreeze")]
    pub unfreeze_epochs: usize,
    /// Learning rate of the unfrozen stage relative to the head's.
    #[arg(long, default_value_t = Unfreeze::default().lr_scale, requires = "unfreeze")]
    pub unfreeze_lr_scale: f64,
    /// Distil from this head (same backbone and classes); repeated: from the ensemble of
    /// these heads, their probabilities averaged.
    #[arg(long, value_name = "HEAD.gguf")]
    pub teacher: Vec<PathBuf>,
    /// Distillation temperature T.
    #[arg(long, default_value_t = Distillation::default().temperature, requires = "teacher")]
    pub temperature: f32,
    /// Distillation weight α of the teacher's term.
    #[arg(long, default_value_t = Distillation::default().alpha, requires = "teacher")]
    pub alpha: f32,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    fn options(&self) -> TrainOptions {
        TrainOptions {
            augmentation: (!self.no_augment).then(|| Augmentation {
                flip: !self.no_flip,
                ..Augmentation::default()
            }),
            views: self.views,
            val_fraction: self.val_split,
            target_precision: self.target_precision,
            fit: FitOptions {
                hidden: self.hidden,
                dropout: self.dropout,
                max_epochs: self.epochs,
                patience: self.patience,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
                weight_decay: self.weight_decay,
                warmup_epochs: self.warmup_epochs,
                label_smoothing: self.label_smoothing,
                balance_classes: !self.no_balance,
                seed: self.seed,
                distillation: (!self.teacher.is_empty()).then_some(Distillation {
                    temperature: self.temperature,
                    alpha: self.alpha,
                }),
            },
            unfreeze: self.unfreeze.is_some().then_some(Unfreeze {
                epochs: self.unfreeze_epochs,
                lr_scale: self.unfreeze_lr_scale,
            }),
        }
    }
}

/// Checks the data, trains, writes the head and prints the report.
pub fn run(args: Args) -> anyhow::Result<()> {
    let classes = training_classes(&args.data)?;
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        for class in &classes {
            writeln!(out, "{:<24} {:>6} pictures", class.name, class.images.len())?;
        }
        let total: usize = classes.iter().map(|c| c.images.len()).sum();
        writeln!(
            out,
            "{} classes, {total} pictures: ready to train",
            classes.len()
        )?;
        return Ok(());
    }
    let output = args
        .output
        .clone()
        .context("--output is required to train")?;
    let weights = args.weights.clone().unwrap_or_else(default_weights_path);
    let model = Model::load(&weights, args.inference.precision, args.inference.threads)?;
    let teacher = match args.teacher.as_slice() {
        [] => None,
        paths => Some(Ensemble::load(paths, None)?),
    };
    let options = args.options();
    let mut progress = Bars::new(!args.json && std::io::stderr().is_terminal());
    let trained = train::train(
        &model,
        &absolute(&weights),
        &classes,
        &options,
        teacher.as_ref().map(|heads| Teacher { heads }),
        &mut progress,
    )?;
    progress.finish();
    trained.head.save(&output)?;

    let report = &trained.report;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(report)?;
        value["output"] = output.display().to_string().into();
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(
        out,
        "trained {} classes on {} pictures ({} skipped) in {:.1} s: best epoch {} of {}{}",
        report.classes.len(),
        report
            .classes
            .iter()
            .map(|c| c.train + c.validation)
            .sum::<usize>(),
        report.skipped.len(),
        report.timings.total_s,
        report.best_epoch,
        report.epochs_run,
        if report.stopped_early {
            " (stopped early)"
        } else {
            ""
        },
    )?;
    if let Some(unfrozen) = &report.unfrozen {
        writeln!(
            out,
            "{} fine-tuned in {:.1} s: best epoch {} of {}{}; validation accuracy of the head \
             on the frozen backbone was {:.1} %",
            unfrozen.stage,
            unfrozen.fit_s,
            unfrozen.best_epoch,
            unfrozen.epochs_run,
            if unfrozen.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            unfrozen.frozen_val_accuracy * 100.0
        )?;
    }
    writeln!(
        out,
        "accuracy: train {:.1} %, validation {:.1} %",
        report.train_accuracy * 100.0,
        report.val_accuracy * 100.0
    )?;
    writeln!(out, "\nvalidation split:")?;
    write!(out, "{}", report.validation.text())?;
    writeln!(out, "\nrecommended thresholds (stored in the model):")?;
    for (class, threshold) in report.classes.iter().zip(&report.thresholds) {
        writeln!(out, "  {:<24} {threshold:.2}", class.name)?;
    }
    writeln!(out, "\nwrote {}", output.display())?;
    Ok(())
}

/// The backbone path as recorded in the head: absolute, so `classify` finds it from anywhere.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Progress on stderr: a bar over pictures, then one over epochs (hidden when stderr is not
/// a terminal); skipped pictures are always reported.
struct Bars {
    visible: bool,
    bar: Option<ProgressBar>,
}

impl Bars {
    fn new(visible: bool) -> Self {
        Self { visible, bar: None }
    }

    fn bar(&mut self, total: usize, template: &str) -> &ProgressBar {
        let visible = self.visible;
        self.bar.get_or_insert_with(|| {
            let bar = if visible {
                ProgressBar::new(total as u64)
            } else {
                ProgressBar::hidden()
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        })
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn unfreezing(&mut self) {
        self.finish();
    }

    fn picture(&mut self, done: usize, total: usize) {
        self.bar(total, "features {bar:30} {pos}/{len} pictures {elapsed}")
            .set_position(done as u64);
        if done == total {
            self.finish();
        }
    }

    fn skipped(&mut self, skipped: &Skipped) {
        let line = format!(
            "edgeclass: skipping {}: {}",
            skipped.path.display(),
            skipped.reason
        );
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn epoch(&mut self, epoch: &Epoch, max_epochs: usize) {
        let bar = self.bar(max_epochs, "epoch {bar:30} {pos}/{len} {msg}");
        bar.set_position(epoch.epoch as u64);
        bar.set_message(format!(
            "loss {:.3}  val acc {:.1} %  lr {:.1e}",
            epoch.train_loss,
            epoch.val_accuracy * 100.0,
            epoch.learning_rate
        ));
    }
}

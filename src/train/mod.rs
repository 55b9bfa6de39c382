//! Training a head for the user's own classes on the device's CPU (`edgeclass train`).
//!
//! The backbone stays frozen and runs on the int8 engine the daemon uses, once per picture
//! and augmented view ([`features`]); a small head is then fitted on those cached features
//! with candle's autograd ([`fit`]). The result is a [`Head`] file: the class names, the
//! recommended per-class thresholds from the validation split, and this run's [`Report`].
//!
//! 1. [`crate::dataset::training_classes`] checks the folder before any work.
//! 2. [`split`]: a stratified, seeded validation split, by picture (a picture's augmented
//!    views never straddle the split).
//! 3. [`features::extract`]: the plain view and `views` augmented ones ([`augment`]); corrupt
//!    pictures are skipped with their name.
//! 4. [`fit::fit`]: AdamW, cosine schedule with warm-up, label smoothing, class weights,
//!    optional distillation from a teacher head (or an ensemble of heads), early stopping that
//!    restores the best epoch.
//! 5. With `--unfreeze layer4` ([`unfreeze`]): the backbone's layer4 and the head are then
//!    fine-tuned together in f32 on the cached feature maps before layer4 (the int8 engine
//!    still runs everything up to there, once per view); the head file carries the trained
//!    layer4 ([`crate::model::LastStage`]).
//! 6. The validation split is evaluated with [`crate::evaluate`]: per-class precision and
//!    recall, the confusion matrix, and thresholds reaching the target precision.

pub mod augment;
pub mod features;
pub mod fit;
pub mod unfreeze;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::dataset::TrainingClass;
use crate::evaluate::{Evaluation, LabelledClass, Sample};
use crate::model::{
    BackboneRef, Ensemble, EnsembleBuffers, FeatureMap, Head, LastStage, Model, ModelError,
    Network, SplitMix, LAST_STAGE,
};
use crate::preprocess::Preprocessor;
use crate::sysexits::Sysexit;

use augment::Augmentation;
use features::{Picture, Skipped};
use fit::{Epoch, Example, FitOptions};
use unfreeze::{MapExample, Unfreeze};

/// Most memory the cached feature maps before the last stage may take (f16), for
/// `--unfreeze` or a teacher with its own last stage: 1 GiB, about 10,900 views at 224 pixels.
pub const STAGE_CACHE_BUDGET: u64 = 1 << 30;

/// Lowest recommended threshold: a perfect but small validation split would otherwise
/// recommend 0 ("always sure"), and frames unlike any class must still be able to fall below.
pub const MIN_RECOMMENDED_THRESHOLD: f32 = 0.5;

/// How to train, beyond the fitting hyper-parameters.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    /// Augmented views per picture; `None` trains on the plain pictures only.
    pub augmentation: Option<Augmentation>,
    /// Augmented views per picture (besides the plain one).
    pub views: usize,
    /// Share of each class's pictures held out for validation (at least one each).
    pub val_fraction: f64,
    /// Precision the recommended per-class thresholds should reach on the validation split.
    pub target_precision: f64,
    /// The head and its optimization.
    pub fit: FitOptions,
    /// Fine-tune the backbone's last stage (layer4) with the head; `None`: frozen backbone.
    pub unfreeze: Option<Unfreeze>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            augmentation: Some(Augmentation::default()),
            views: 4,
            val_fraction: 0.2,
            target_precision: 0.95,
            fit: FitOptions::default(),
            unfreeze: None,
        }
    }
}

/// Why training failed (bad data is reported before any work by
/// [`crate::dataset::training_classes`]).
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The backbone failed on a picture (boxed: a model error is large).
    #[error("running the backbone")]
    Model(#[source] Box<ModelError>),
    /// Too few pictures were readable to train and validate.
    #[error("class {class:?} has {readable} readable picture(s); training needs at least 2")]
    TooFewReadable {
        /// The class.
        class: String,
        /// Pictures that decoded.
        readable: usize,
    },
    /// The teacher cannot teach this student.
    #[error("teacher {}: {reason}", path.display())]
    Teacher {
        /// The teacher's file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// The last stage cannot be fine-tuned (or a teacher's run) on this backbone or data.
    #[error("{LAST_STAGE}: {0}")]
    Stage(String),
    /// candle failed while fitting.
    #[error("fitting the head")]
    Fit(#[source] candle_core::Error),
}

impl From<ModelError> for TrainError {
    fn from(error: ModelError) -> Self {
        TrainError::Model(Box::new(error))
    }
}

impl TrainError {
    /// The kind of failure, for the process exit status.
    pub fn sysexit(&self) -> Sysexit {
        match self {
            TrainError::Model(e) => e.sysexit(),
            TrainError::TooFewReadable { .. } | TrainError::Teacher { .. } => Sysexit::DataErr,
            TrainError::Stage(_) => Sysexit::Usage,
            TrainError::Fit(_) => Sysexit::Software,
        }
    }
}

/// A teacher for distillation: a head, or an ensemble of heads (their probabilities averaged
/// at the distillation temperature), on the same backbone with the same classes.
pub struct Teacher<'a> {
    /// The teacher heads.
    pub heads: &'a Ensemble,
}

/// What training tells as it goes.
pub trait Progress {
    /// `done` of `total` pictures have been through the backbone.
    fn picture(&mut self, done: usize, total: usize);
    /// A picture was skipped.
    fn skipped(&mut self, skipped: &Skipped);
    /// An epoch ended.
    fn epoch(&mut self, epoch: &Epoch, max_epochs: usize);
    /// The head is fitted; fine-tuning of the last stage starts (its epochs count from 1).
    fn unfreezing(&mut self) {}
}

/// One class's pictures in the run.
#[derive(Debug, Clone, Serialize)]
pub struct ClassCounts {
    /// The class name.
    pub name: String,
    /// Pictures used for training.
    pub train: usize,
    /// Pictures held out for validation.
    pub validation: usize,
}

/// Wall-clock time of each phase, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    /// Running the backbone over every picture and view.
    pub features_s: f64,
    /// Fitting the head.
    pub fit_s: f64,
    /// The whole run.
    pub total_s: f64,
}

/// Everything a training run measured; stored in the head file as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Per class: pictures in each split.
    pub classes: Vec<ClassCounts>,
    /// Pictures that could not be used.
    pub skipped: Vec<Skipped>,
    /// Top-1 accuracy on the training pictures (plain view), in `[0, 1]`.
    pub train_accuracy: f64,
    /// Top-1 accuracy on the validation split, in `[0, 1]`.
    pub val_accuracy: f64,
    /// The validation split evaluated: per-class precision and recall, confusion matrix,
    /// calibration, threshold trade-offs and recommendations.
    pub validation: Evaluation,
    /// Recommended threshold per class (class order), stored in the head.
    pub thresholds: Vec<f32>,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Epochs run.
    pub epochs_run: usize,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
    /// Every epoch's figures.
    pub history: Vec<Epoch>,
    /// How long each phase took.
    pub timings: Timings,
    /// The options of the run.
    pub options: TrainOptions,
    /// The teacher distilled from (its head files: several for an ensemble); empty: none.
    pub teacher: Vec<PathBuf>,
    /// Fine-tuning of the last stage, when unfrozen (`history`, `best_epoch` and the rest
    /// above are those of the head on the frozen features, which it started from).
    pub unfrozen: Option<UnfrozenReport>,
}

/// What fine-tuning the last stage did.
#[derive(Debug, Clone, Serialize)]
pub struct UnfrozenReport {
    /// The stage fine-tuned (`layer4`).
    pub stage: String,
    /// Validation accuracy of the head on the frozen features (its best epoch), before.
    pub frozen_val_accuracy: f64,
    /// The epoch kept (0: none improved the validation loss; the stage stays the backbone's).
    pub best_epoch: usize,
    /// Epochs run.
    pub epochs_run: usize,
    /// Whether early stopping ended fine-tuning.
    pub stopped_early: bool,
    /// Every epoch's figures.
    pub history: Vec<Epoch>,
    /// Memory of the cached feature maps, in bytes.
    pub cache_bytes: u64,
    /// Fine-tuning's wall-clock time, in seconds.
    pub fit_s: f64,
}

/// A trained head and its report.
pub struct Trained {
    /// The head, ready to save.
    pub head: Head,
    /// What the run measured (also attached to the head as JSON).
    pub report: Report,
}

/// Holds out `fraction` of each class's pictures (rounded, at least one, never all) for
/// validation, chosen by `seed`. Returns `(train, validation)` indices into `pictures`.
pub fn split(
    pictures: &[Picture],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix::new(seed ^ 0x5EED_5711);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for class in 0..classes {
        let mut members: Vec<usize> = (0..pictures.len())
            .filter(|&i| pictures[i].class == class)
            .collect();
        rng.shuffle(&mut members);
        let held = ((members.len() as f64 * fraction).round() as usize)
            .clamp(1, members.len().saturating_sub(1).max(1));
        val.extend_from_slice(&members[..held.min(members.len())]);
        train.extend_from_slice(&members[held.min(members.len())..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

/// Trains a head on `classes` over `model`'s backbone (read from `backbone_file`).
pub fn train(
    model: &Model,
    backbone_file: &Path,
    classes: &[TrainingClass],
    options: &TrainOptions,
    teacher: Option<Teacher>,
    progress: &mut dyn Progress,
) -> Result<Trained, TrainError> {
    let started = Instant::now();
    let names: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
    let teacher = teacher
        .map(|t| teacher_order(&t, model, &names).map(|order| (t.heads, order)))
        .transpose()?;

    let total: usize = classes.iter().map(|c| c.images.len()).sum();
    // The stage to fine-tune, and whether the feature maps before it must be cached (for it,
    // or for a teacher with its own).
    let stage = options
        .unfreeze
        .map(|u| start_stage(model, backbone_file).map(|s| (u, s)))
        .transpose()?;
    let teacher_needs_maps = teacher.as_ref().is_some_and(|(t, _)| t.needs_stage_input());
    let map_shape = match (
        stage.is_some() || teacher_needs_maps,
        model.stage_input_shape(),
    ) {
        (false, _) => None,
        (true, Some(shape)) => Some(shape),
        (true, None) => {
            return Err(TrainError::Stage(format!(
                "the backbone {} has no {LAST_STAGE} (it is not a ResNet-18)",
                model.source().display()
            )))
        }
    };
    let views_per_picture = 1 + options.augmentation.as_ref().map_or(0, |_| options.views);
    let cache_bytes = map_shape.map_or(0, |(c, h, w)| {
        (total * views_per_picture * c * h * w * std::mem::size_of::<half::f16>()) as u64
    });
    if cache_bytes > STAGE_CACHE_BUDGET {
        let (c, h, w) = map_shape.unwrap_or_default();
        return Err(TrainError::Stage(format!(
            "caching the {c}x{h}x{w} feature maps before it for {total} pictures x \
             {views_per_picture} views takes {} MiB, above the {} MiB budget: use fewer --views \
             or pictures",
            cache_bytes >> 20,
            STAGE_CACHE_BUDGET >> 20
        )));
    }
    let mut preprocessor = Preprocessor::new(model.preprocess_config());
    let mut done = 0;
    let (pictures, skipped) = features::extract(
        model,
        &mut preprocessor,
        classes,
        options.augmentation.as_ref(),
        options.views,
        map_shape.is_some(),
        options.fit.seed,
        || {
            done += 1;
            progress.picture(done, total);
        },
    )?;
    skipped.iter().for_each(|s| progress.skipped(s));
    for (index, class) in classes.iter().enumerate() {
        let readable = pictures.iter().filter(|p| p.class == index).count();
        if readable < 2 {
            return Err(TrainError::TooFewReadable {
                class: class.name.clone(),
                readable,
            });
        }
    }
    let features_s = started.elapsed().as_secs_f64();

    let (train_ids, val_ids) = split(
        &pictures,
        classes.len(),
        options.val_fraction,
        options.fit.seed,
    );
    // Teacher logits, one row per view, in the class order of this run.
    let temperature = options.fit.distillation.map_or(1.0, |d| d.temperature);
    // A view's cached feature map before the last stage, back in f32.
    let stage_input = |picture: &Picture, view: usize| -> Option<FeatureMap> {
        let (channels, height, width) = map_shape?;
        let values = picture.maps.get(view)?.iter().map(|v| v.to_f32()).collect();
        Some(FeatureMap {
            values,
            channels,
            height,
            width,
        })
    };
    let teacher_logits: Vec<Vec<Vec<f32>>> = match &teacher {
        Some((heads, order)) => pictures
            .iter()
            .map(|p| {
                (0..p.views.len())
                    .map(|v| {
                        let input = stage_input(p, v);
                        head_logits(heads, &p.views[v], input.as_ref(), order, temperature)
                    })
                    .collect::<Result<_, _>>()
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let example = |picture: usize, view: usize| Example {
        features: &pictures[picture].views[view],
        class: pictures[picture].class,
        teacher: teacher_logits
            .get(picture)
            .map(|views| views[view].as_slice()),
    };
    let train_examples: Vec<Example> = train_ids
        .iter()
        .flat_map(|&p| (0..pictures[p].views.len()).map(move |v| (p, v)))
        .map(|(p, v)| example(p, v))
        .collect();
    let val_examples: Vec<Example> = val_ids.iter().map(|&p| example(p, 0)).collect();
    let mut fit_options = options.fit.clone();
    if teacher.is_none() {
        fit_options.distillation = None;
    }
    let fit_started = Instant::now();
    let fitted = fit::fit(
        &train_examples,
        &val_examples,
        classes.len(),
        &fit_options,
        |epoch| progress.epoch(epoch, fit_options.max_epochs),
    )
    .map_err(TrainError::Fit)?;
    let fit_s = fit_started.elapsed().as_secs_f64();

    let backbone = BackboneRef {
        fingerprint: model.fingerprint().to_string(),
        file: backbone_file.to_path_buf(),
    };
    let fit_error = |reason| TrainError::Fit(candle_core::Error::Msg(reason));
    let (mut head, unfrozen) = match (stage, map_shape) {
        (Some((unfreeze, stage)), Some(shape)) => {
            progress.unfreezing();
            let started = Instant::now();
            let maps = |ids: &[usize], all_views: bool| -> Vec<MapExample> {
                ids.iter()
                    .flat_map(|&p| {
                        let views = if all_views { pictures[p].maps.len() } else { 1 };
                        (0..views).map(move |v| (p, v))
                    })
                    .map(|(p, v)| MapExample {
                        map: &pictures[p].maps[v],
                        class: pictures[p].class,
                        teacher: teacher_logits.get(p).map(|views| views[v].as_slice()),
                    })
                    .collect()
            };
            let tuned = unfreeze::fine_tune(
                &maps(&train_ids, true),
                &maps(&val_ids, false),
                shape,
                classes.len(),
                &stage,
                (&fitted.standardized.0, &fitted.standardized.1),
                &fit_options,
                &unfreeze,
                |epoch| progress.epoch(epoch, unfreeze.epochs),
            )
            .map_err(TrainError::Fit)?;
            let frozen_val_accuracy = fitted
                .history
                .get(fitted.best_epoch.saturating_sub(1))
                .map_or(0.0, |e| e.val_accuracy);
            let head = Head::new(names.clone(), tuned.layers, model.feature_len(), backbone)
                .and_then(|h| h.with_last_stage(tuned.stage))
                .map_err(fit_error)?;
            let report = UnfrozenReport {
                stage: LAST_STAGE.into(),
                frozen_val_accuracy,
                best_epoch: tuned.best_epoch,
                epochs_run: tuned.history.len(),
                stopped_early: tuned.stopped_early,
                history: tuned.history,
                cache_bytes,
                fit_s: started.elapsed().as_secs_f64(),
            };
            (head, Some(report))
        }
        _ => {
            let head = Head::new(names.clone(), fitted.layers, model.feature_len(), backbone)
                .map_err(fit_error)?;
            (head, None)
        }
    };

    let samples = |ids: &[usize]| -> Result<Vec<Sample>, TrainError> {
        let (mut hidden, mut logits, mut own) = (Vec::new(), Vec::new(), Vec::new());
        ids.iter()
            .map(|&p| {
                let input = stage_input(&pictures[p], 0);
                let features = head.features(pictures[p].plain(), input.as_ref(), &mut own)?;
                head.forward(features, &mut hidden, &mut logits);
                Ok(Sample {
                    logits: logits.clone(),
                    truth: pictures[p].class,
                })
            })
            .collect()
    };
    let labelled: Vec<LabelledClass> = names
        .iter()
        .enumerate()
        .map(|(index, name)| LabelledClass {
            index,
            key: name.clone(),
            name: name.clone(),
        })
        .collect();
    let train_eval = Evaluation::new(&samples(&train_ids)?, labelled.clone(), None);
    let validation = Evaluation::new(
        &samples(&val_ids)?,
        labelled,
        Some(options.target_precision),
    );
    let thresholds = validation.class_thresholds(MIN_RECOMMENDED_THRESHOLD);
    head.set_thresholds(thresholds.clone())
        .map_err(|reason| TrainError::Fit(candle_core::Error::Msg(reason)))?;

    let counts = classes
        .iter()
        .enumerate()
        .map(|(index, class)| ClassCounts {
            name: class.name.clone(),
            train: train_ids
                .iter()
                .filter(|&&p| pictures[p].class == index)
                .count(),
            validation: val_ids
                .iter()
                .filter(|&&p| pictures[p].class == index)
                .count(),
        })
        .collect();
    let report = Report {
        classes: counts,
        skipped,
        train_accuracy: train_eval.top1_accuracy,
        val_accuracy: validation.top1_accuracy,
        thresholds,
        best_epoch: fitted.best_epoch,
        epochs_run: fitted.history.len(),
        stopped_early: fitted.stopped_early,
        history: fitted.history,
        validation,
        timings: Timings {
            features_s,
            fit_s,
            total_s: started.elapsed().as_secs_f64(),
        },
        options: TrainOptions {
            fit: fit_options,
            ..options.clone()
        },
        teacher: teacher.map_or_else(Vec::new, |(heads, _)| heads.paths().to_vec()),
        unfrozen,
    };
    if let Ok(json) = serde_json::to_string(&report) {
        head.set_report(json);
    }
    Ok(Trained { head, report })
}

/// Per class of the student, its index among the teacher's outputs; each teacher head must
/// run on the same backbone, and the teacher know exactly the same classes.
fn teacher_order(
    teacher: &Teacher,
    model: &Model,
    names: &[String],
) -> Result<Vec<usize>, TrainError> {
    let error = |path: &Path, reason: String| TrainError::Teacher {
        path: path.to_path_buf(),
        reason,
    };
    let paths = teacher.heads.paths();
    for (head, path) in teacher.heads.members().iter().zip(paths) {
        model
            .check_head(head, path)
            .map_err(|e| error(path, e.to_string()))?;
    }
    let theirs = teacher.heads.classes();
    let order: Option<Vec<usize>> = names
        .iter()
        .map(|n| theirs.iter().position(|t| t == n))
        .collect();
    match order {
        Some(order) if theirs.len() == names.len() => Ok(order),
        _ => Err(error(
            &paths[0],
            format!(
                "its classes are {}, the data's are {}",
                theirs.join(", "),
                names.join(", ")
            ),
        )),
    }
}

/// The teacher's logits for one view (whose softmax at `temperature` is the ensemble's mean at
/// that temperature), reordered to the student's classes.
fn head_logits(
    heads: &Ensemble,
    features: &[f32],
    stage_input: Option<&FeatureMap>,
    order: &[usize],
    temperature: f32,
) -> Result<Vec<f32>, ModelError> {
    let (mut buffers, mut logits) = (EnsembleBuffers::default(), Vec::new());
    heads.forward(
        features,
        stage_input,
        temperature,
        &mut buffers,
        &mut logits,
        |_, _| {},
    )?;
    Ok(order.iter().map(|&i| logits[i]).collect())
}

/// The backbone's own last stage, read from its file: where fine-tuning starts.
fn start_stage(model: &Model, backbone_file: &Path) -> Result<LastStage, TrainError> {
    let network = Network::load(backbone_file)?;
    if network.backbone_fingerprint() != model.fingerprint() {
        return Err(TrainError::Stage(format!(
            "{} is not the backbone the model was loaded from",
            backbone_file.display()
        )));
    }
    LastStage::from_network(&network).ok_or_else(|| {
        TrainError::Stage(format!(
            "the backbone {} has no {LAST_STAGE}",
            backbone_file.display()
        ))
    })
}

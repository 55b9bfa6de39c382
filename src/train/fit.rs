//! Fitting a head on cached features with candle's autograd and candle-nn: `VarMap` for the
//! parameters, `AdamW` with weight decay, a cosine learning-rate schedule with warm-up,
//! label smoothing, class weights, optional knowledge distillation, and early stopping that
//! restores the best epoch. Everything random (initialization, shuffling, dropout) comes from
//! the seed, so a run is reproducible.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Init, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::Serialize;

use crate::model::{Dense, SplitMix};

/// Hyper-parameters of [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FitOptions {
    /// Width of the hidden layer; 0 makes the head one linear layer.
    pub hidden: usize,
    /// Dropout before the output layer of an MLP head, in `[0, 1)`.
    pub dropout: f32,
    /// Most epochs to run.
    pub max_epochs: usize,
    /// Stop after this many epochs without a lower validation loss; 0 never stops early.
    pub patience: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate, reached after the warm-up.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Epochs of linear warm-up before the cosine decay.
    pub warmup_epochs: usize,
    /// Share of the target probability spread over the other classes.
    pub label_smoothing: f32,
    /// Weight examples by the inverse of their class's frequency (uneven folders).
    pub balance_classes: bool,
    /// Seeds initialization, shuffling and dropout.
    pub seed: u64,
    /// Distil from a teacher's soft targets (the examples then carry teacher logits).
    pub distillation: Option<Distillation>,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            hidden: 0,
            dropout: 0.2,
            max_epochs: 60,
            patience: 8,
            batch_size: 32,
            learning_rate: 3e-3,
            weight_decay: 1e-2,
            warmup_epochs: 2,
            label_smoothing: 0.1,
            balance_classes: true,
            seed: 1,
            distillation: None,
        }
    }
}

/// Knowledge distillation: `loss = α·T²·KL(teacher_T ‖ student_T) + (1 − α)·CE`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Distillation {
    /// Temperature `T` both distributions are softened with.
    pub temperature: f32,
    /// Weight `α` of the teacher's term.
    pub alpha: f32,
}

impl Default for Distillation {
    fn default() -> Self {
        Self {
            temperature: 4.0,
            alpha: 0.7,
        }
    }
}

/// One training or validation example.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    /// Backbone features.
    pub features: &'a [f32],
    /// True class.
    pub class: usize,
    /// The teacher's logits for these features, when distilling.
    pub teacher: Option<&'a [f32]>,
}

/// What one epoch did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Epoch {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss (the optimized objective).
    pub train_loss: f64,
    /// Cross-entropy on the validation split.
    pub val_loss: f64,
    /// Top-1 accuracy on the validation split, in `[0, 1]`.
    pub val_accuracy: f64,
    /// Learning rate of the epoch's last step.
    pub learning_rate: f64,
}

/// A fitted head's layers (feature standardization folded in) and how training went.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// Dense layers, first to last, reading raw backbone features.
    pub layers: Vec<Dense>,
    /// Every epoch run.
    pub history: Vec<Epoch>,
    /// The epoch whose weights were kept (lowest validation loss).
    pub best_epoch: usize,
    /// Whether early stopping ended training before `max_epochs`.
    pub stopped_early: bool,
    /// The kept layers as trained, on standardized features (what fine-tuning continues).
    pub(super) standardized: (Vec<Dense>, Standardization),
}

/// The learning rate at optimizer step `step` (0-based) of `total`: linear warm-up over the
/// first `warmup` steps to `peak`, then a cosine decay to zero at `total`:
/// `peak · ½ · (1 + cos(π · (step − warmup) / (total − warmup)))`.
pub fn cosine_learning_rate(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Early stopping on the validation loss: remembers the best epoch and says when `patience`
/// epochs have passed without improving on it.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    patience: usize,
    best: Option<(usize, f64)>,
}

impl EarlyStopping {
    /// Stops after `patience` epochs without improvement; 0 never stops.
    pub fn new(patience: usize) -> Self {
        Self {
            patience,
            best: None,
        }
    }

    /// Records epoch `epoch`'s validation loss; returns whether it is the best so far.
    pub fn improved(&mut self, epoch: usize, loss: f64) -> bool {
        let better = self.best.is_none_or(|(_, best)| loss < best);
        if better {
            self.best = Some((epoch, loss));
        }
        better
    }

    /// Whether training should stop after epoch `epoch`.
    pub fn should_stop(&self, epoch: usize) -> bool {
        self.patience > 0
            && self
                .best
                .is_some_and(|(best, _)| epoch - best >= self.patience)
    }

    /// The best epoch so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best.map(|(epoch, _)| epoch)
    }
}

/// The training objective for a batch, averaged: cross-entropy against `targets` (smoothed
/// one-hot rows) weighted per example by `weights`, and with `distillation`
/// `α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − α)·CE`.
pub fn loss(
    student: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    teacher: Option<(&Tensor, Distillation)>,
) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(student, D::Minus1)?;
    let per_example = (targets * log_p)?.sum(D::Minus1)?.neg()?;
    let ce = ((per_example * weights)?.sum_all()? / weights.sum_all()?.to_scalar::<f32>()? as f64)?;
    let Some((teacher, d)) = teacher else {
        return Ok(ce);
    };
    let t = d.temperature as f64;
    let log_q = candle_nn::ops::log_softmax(&(student / t)?, D::Minus1)?;
    let log_p_teacher = candle_nn::ops::log_softmax(&(teacher / t)?, D::Minus1)?;
    let kl = (log_p_teacher.exp()? * (log_p_teacher - log_q)?)?
        .sum(D::Minus1)?
        .mean_all()?;
    let alpha = d.alpha as f64;
    (kl * (alpha * t * t))? + (ce * (1.0 - alpha))?
}

/// The network being trained: one linear layer, or two with a ReLU and dropout between.
pub(super) struct Network {
    pub(super) layers: Vec<Linear>,
    pub(super) dropout: f32,
}

impl Network {
    /// Runs the layers; dropout is applied when given its generator (training).
    pub(super) fn forward(
        &self,
        x: &Tensor,
        dropout: Option<&mut SplitMix>,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.layers[0].forward(x)?;
        if let Some(output) = self.layers.get(1) {
            x = x.relu()?;
            if let (Some(rng), true) = (dropout, self.dropout > 0.0) {
                // candle's dropout draws from an unseeded generator; this mask is seeded.
                let keep = 1.0 - self.dropout;
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| {
                        if rng.next_f32() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
                x = (x * mask)?;
            }
            x = output.forward(&x)?;
        }
        Ok(x)
    }
}

/// Per-feature mean and inverse standard deviation of the training features: the network
/// trains on standardized inputs, and the export folds this back into the first layer.
#[derive(Debug, Clone)]
pub(super) struct Standardization {
    pub(super) mean: Vec<f32>,
    pub(super) inv_std: Vec<f32>,
}

impl Standardization {
    fn fit(examples: &[Example]) -> Self {
        let len = examples.first().map_or(0, |e| e.features.len());
        let n = examples.len().max(1) as f64;
        let mut mean = vec![0f64; len];
        let mut square = vec![0f64; len];
        for e in examples {
            for (i, &v) in e.features.iter().enumerate() {
                mean[i] += v as f64 / n;
                square[i] += (v as f64).powi(2) / n;
            }
        }
        let inv_std = mean
            .iter()
            .zip(&square)
            .map(|(m, s)| {
                let std = (s - m * m).max(0.0).sqrt();
                // A constant feature carries nothing: ignore it rather than divide by ~0.
                if std > 1e-6 {
                    (1.0 / std) as f32
                } else {
                    0.0
                }
            })
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            inv_std,
        }
    }

    fn apply(&self, examples: &[Example]) -> Vec<f32> {
        examples
            .iter()
            .flat_map(|e| {
                e.features
                    .iter()
                    .zip(&self.mean)
                    .zip(&self.inv_std)
                    .map(|((v, m), s)| (v - m) * s)
            })
            .collect()
    }

    /// `W·((x − mean)·inv_std) + b` as `W'·x + b'`.
    pub(super) fn fold(&self, first: &mut Dense) {
        let inputs = first.inputs();
        for (row, bias) in first.weight.chunks_mut(inputs).zip(&mut first.bias) {
            for ((w, m), s) in row.iter_mut().zip(&self.mean).zip(&self.inv_std) {
                *w *= s;
                *bias -= *w * m;
            }
        }
    }
}

/// Trains a head on `train`, early-stopping on `val` (which must not be empty), and calls
/// `progress` after each epoch.
pub fn fit(
    train: &[Example],
    val: &[Example],
    classes: usize,
    options: &FitOptions,
    mut progress: impl FnMut(&Epoch),
) -> candle_core::Result<Fitted> {
    let device = Device::Cpu;
    let features = train.first().map_or(0, |e| e.features.len());
    if features == 0 || val.is_empty() || classes < 2 {
        candle_core::bail!("training needs examples, a validation split and two classes");
    }
    let mut rng = SplitMix::new(options.seed);
    let standardization = Standardization::fit(train);

    // Parameters live in a VarMap; initialized from the seed (PyTorch's Linear default:
    // uniform in ±1/√fan_in) rather than candle's unseeded generator.
    let mut varmap = VarMap::new();
    let builder = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let widths: Vec<usize> = match options.hidden {
        0 => vec![features, classes],
        hidden => vec![features, hidden, classes],
    };
    let mut layers = Vec::new();
    for (i, pair) in widths.windows(2).enumerate() {
        let (inputs, outputs) = (pair[0], pair[1]);
        let bound = 1.0 / (inputs as f32).sqrt();
        let mut layer = |name: String, shape: &[usize]| -> candle_core::Result<Tensor> {
            let tensor = builder.get_with_hints(shape, &name, Init::Const(0.0))?;
            let values = (0..tensor.elem_count())
                .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                .collect();
            varmap.set_one(&name, Tensor::from_vec(values, shape, &device)?)?;
            Ok(tensor)
        };
        let weight = layer(format!("head.{i}.weight"), &[outputs, inputs])?;
        let bias = layer(format!("head.{i}.bias"), &[outputs])?;
        layers.push(Linear::new(weight, Some(bias)));
    }
    let network = Network {
        layers,
        dropout: options.dropout,
    };

    let x_train = Tensor::from_vec(
        standardization.apply(train),
        (train.len(), features),
        &device,
    )?;
    let x_val = Tensor::from_vec(standardization.apply(val), (val.len(), features), &device)?;
    let loss_targets = LossTargets::new(train, classes, options, &device)?;
    let val_truth: Vec<u32> = val.iter().map(|e| e.class as u32).collect();
    let val_truth = Tensor::from_vec(val_truth, val.len(), &device)?;

    let mut optimizer = candle_nn::AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: options.learning_rate,
            weight_decay: options.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let batch = options.batch_size.max(1);
    let steps_per_epoch = train.len().div_ceil(batch);
    let total_steps = steps_per_epoch * options.max_epochs;
    let warmup_steps = steps_per_epoch * options.warmup_epochs;
    let mut order: Vec<u32> = (0..train.len() as u32).collect();
    let mut stopping = EarlyStopping::new(options.patience);
    let mut best_layers = export(&network, &standardization)?;
    let mut best_standardized = dense_layers(&network)?;
    let mut history = Vec::new();
    let mut step = 0;
    for epoch in 1..=options.max_epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0;
        let mut learning_rate = options.learning_rate;
        for chunk in order.chunks(batch) {
            learning_rate =
                cosine_learning_rate(step, total_steps, warmup_steps, options.learning_rate);
            optimizer.set_learning_rate(learning_rate);
            let index = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let logits = network.forward(&x_train.index_select(&index, 0)?, Some(&mut rng))?;
            let batch_loss = loss_targets.loss(&logits, &index)?;
            optimizer.backward_step(&batch_loss)?;
            loss_sum += batch_loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            step += 1;
        }
        let val_logits = network.forward(&x_val, None)?;
        let val_loss =
            candle_nn::loss::cross_entropy(&val_logits, &val_truth)?.to_scalar::<f32>()? as f64;
        let predicted = val_logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let right = predicted
            .iter()
            .zip(val)
            .filter(|(&p, e)| p as usize == e.class)
            .count();
        let record = Epoch {
            epoch,
            train_loss: loss_sum / train.len() as f64,
            val_loss,
            val_accuracy: right as f64 / val.len() as f64,
            learning_rate,
        };
        history.push(record);
        progress(&record);
        if stopping.improved(epoch, val_loss) {
            best_layers = export(&network, &standardization)?;
            best_standardized = dense_layers(&network)?;
        }
        if stopping.should_stop(epoch) {
            break;
        }
    }
    let epochs_run = history.len();
    Ok(Fitted {
        layers: best_layers,
        standardized: (best_standardized, standardization),
        best_epoch: stopping.best_epoch().unwrap_or(epochs_run),
        stopped_early: epochs_run < options.max_epochs,
        history,
    })
}

/// What the loss compares each training example's logits with: its smoothed target, its class
/// weight and, when distilling, its teacher's logits.
pub(super) struct LossTargets {
    targets: Tensor,
    weights: Tensor,
    teacher: Option<(Tensor, Distillation)>,
}

impl LossTargets {
    /// The targets of `train`, in order; distilling needs every example's teacher logits.
    pub(super) fn new(
        train: &[Example],
        classes: usize,
        options: &FitOptions,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let teacher = match options.distillation {
            Some(d) => {
                let logits: Option<Vec<f32>> = train
                    .iter()
                    .map(|e| e.teacher.map(<[f32]>::to_vec))
                    .collect::<Option<Vec<_>>>()
                    .map(|rows| rows.concat());
                let logits = logits.ok_or_else(|| {
                    candle_core::Error::Msg(
                        "distillation needs the teacher's logits for every example".into(),
                    )
                })?;
                Some((Tensor::from_vec(logits, (train.len(), classes), device)?, d))
            }
            None => None,
        };
        Ok(Self {
            targets: smoothed_targets(train, classes, options.label_smoothing, device)?,
            weights: class_weights(train, classes, options.balance_classes, device)?,
            teacher,
        })
    }

    /// The [`loss`] of `logits`, the outputs for the examples at `index`.
    pub(super) fn loss(&self, logits: &Tensor, index: &Tensor) -> candle_core::Result<Tensor> {
        let teacher = match &self.teacher {
            Some((t, d)) => Some((t.index_select(index, 0)?, *d)),
            None => None,
        };
        loss(
            logits,
            &self.targets.index_select(index, 0)?,
            &self.weights.index_select(index, 0)?,
            teacher.as_ref().map(|(t, d)| (t, *d)),
        )
    }
}

/// One-hot rows of the true classes, with `smoothing` spread evenly over all classes.
pub(super) fn smoothed_targets(
    examples: &[Example],
    classes: usize,
    smoothing: f32,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let off = smoothing / classes as f32;
    let mut rows = vec![off; examples.len() * classes];
    for (row, e) in rows.chunks_mut(classes).zip(examples) {
        row[e.class] += 1.0 - smoothing;
    }
    Tensor::from_vec(rows, (examples.len(), classes), device)
}

/// Per-example weights: `n / (classes · n_class)` when balancing, else 1.
pub(super) fn class_weights(
    examples: &[Example],
    classes: usize,
    balance: bool,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut counts = vec![0usize; classes];
    examples.iter().for_each(|e| counts[e.class] += 1);
    let weights: Vec<f32> = examples
        .iter()
        .map(|e| {
            if balance {
                examples.len() as f32 / (classes * counts[e.class].max(1)) as f32
            } else {
                1.0
            }
        })
        .collect();
    Tensor::from_vec(weights, examples.len(), device)
}

/// The network's current weights as [`Dense`] layers reading raw features.
fn export(network: &Network, standardization: &Standardization) -> candle_core::Result<Vec<Dense>> {
    let mut layers = dense_layers(network)?;
    if let Some(first) = layers.first_mut() {
        standardization.fold(first);
    }
    Ok(layers)
}

/// The network's current weights as [`Dense`] layers, as they are.
pub(super) fn dense_layers(network: &Network) -> candle_core::Result<Vec<Dense>> {
    network
        .layers
        .iter()
        .map(|layer| {
            Ok(Dense {
                weight: layer.weight().flatten_all()?.to_vec1::<f32>()?,
                bias: match layer.bias() {
                    Some(b) => b.to_vec1::<f32>()?,
                    None => vec![0.0; layer.weight().dim(0)?],
                },
            })
        })
        .collect::<candle_core::Result<Vec<Dense>>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rate_warms_up_linearly_then_follows_the_cosine() {
        let (total, warmup, peak) = (100, 10, 0.01);
        for step in 0..warmup {
            let expected = peak * (step + 1) as f64 / warmup as f64;
            assert!((cosine_learning_rate(step, total, warmup, peak) - expected).abs() < 1e-12);
        }
        assert_eq!(cosine_learning_rate(warmup, total, warmup, peak), peak);
        for step in [10, 25, 55, 77, 99] {
            let t = (step - warmup) as f64 / (total - warmup) as f64;
            let expected = 0.5 * peak * (1.0 + (std::f64::consts::PI * t).cos());
            let lr = cosine_learning_rate(step, total, warmup, peak);
            assert!(
                (lr - expected).abs() < 1e-12,
                "step {step}: {lr} vs {expected}"
            );
        }
        // Half-way through the decay: half the peak; at the end: zero.
        assert!((cosine_learning_rate(55, total, warmup, peak) - peak / 2.0).abs() < 1e-12);
        assert!(cosine_learning_rate(total, total, warmup, peak).abs() < 1e-12);
    }

    #[test]
    fn early_stopping_waits_patience_epochs_after_the_best() {
        let mut stopping = EarlyStopping::new(3);
        let losses = [1.0, 0.8, 0.9, 0.85, 0.81, 0.7, 0.75];
        let mut stopped_at = None;
        for (i, &loss) in losses.iter().enumerate() {
            let epoch = i + 1;
            stopping.improved(epoch, loss);
            if stopping.should_stop(epoch) {
                stopped_at = Some(epoch);
                break;
            }
        }
        assert_eq!(stopped_at, Some(5), "3 epochs after the best (2)");
        assert_eq!(stopping.best_epoch(), Some(2));
        let mut never = EarlyStopping::new(0);
        (1..100).for_each(|e| {
            never.improved(e, 1.0);
        });
        assert!(!never.should_stop(99));
    }

    #[test]
    fn distillation_loss_matches_the_hand_computed_value() {
        let device = Device::Cpu;
        let student = Tensor::new(&[[1.0f32, 2.0, 0.0], [0.5, -1.0, 1.5]], &device).unwrap();
        let teacher = Tensor::new(&[[0.5f32, 2.5, -1.0], [2.0, 0.0, 1.0]], &device).unwrap();
        let examples = [
            Example {
                features: &[],
                class: 1,
                teacher: None,
            },
            Example {
                features: &[],
                class: 2,
                teacher: None,
            },
        ];
        let targets = smoothed_targets(&examples, 3, 0.1, &device).unwrap();
        let weights = Tensor::new(&[1.0f32, 2.0], &device).unwrap();
        // numpy: smoothed, weighted cross-entropy 0.494672, KL(teacher_4 ‖ student_4)
        // 0.018499, 0.7 · 16 · KL + 0.3 · CE = 0.355595.
        let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap() as f64;
        let ce = scalar(loss(&student, &targets, &weights, None).unwrap());
        assert!((ce - 0.494_672_453_8).abs() < 1e-5, "{ce}");
        let distilled = loss(
            &student,
            &targets,
            &weights,
            Some((&teacher, Distillation::default())),
        );
        let distilled = scalar(distilled.unwrap());
        assert!((distilled - 0.355_594_697_3).abs() < 1e-5, "{distilled}");
    }

    /// Two noisy Gaussian blobs in 16 dimensions, and a teacher that is confident in
    /// proportion to the distance from the boundary.
    fn blobs(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>, Vec<Vec<f32>>) {
        let mut rng = SplitMix::new(seed);
        let mut features = Vec::new();
        let mut classes = Vec::new();
        let mut teacher = Vec::new();
        for i in 0..n {
            let class = i % 2;
            let centre = if class == 0 { -0.5 } else { 0.5 };
            let x: Vec<f32> = (0..16)
                .map(|_| centre + (rng.next_f32() - 0.5) * 3.0)
                .collect();
            let margin: f32 = x.iter().sum::<f32>() * 0.4;
            teacher.push(vec![-margin, margin]);
            features.push(x);
            classes.push(class);
        }
        (features, classes, teacher)
    }

    fn examples<'a>(
        features: &'a [Vec<f32>],
        classes: &[usize],
        teacher: &'a [Vec<f32>],
    ) -> Vec<Example<'a>> {
        features
            .iter()
            .zip(classes)
            .zip(teacher)
            .map(|((f, &class), t)| Example {
                features: f,
                class,
                teacher: Some(t),
            })
            .collect()
    }

    fn head_logits(layers: &[Dense], features: &[f32]) -> Vec<f32> {
        let layer = &layers[0];
        layer
            .weight
            .chunks(layer.inputs())
            .zip(&layer.bias)
            .map(|(row, b)| b + row.iter().zip(features).map(|(w, x)| w * x).sum::<f32>())
            .collect()
    }

    #[test]
    fn fitting_is_seeded_and_keeps_the_best_epoch() {
        let (f, c, t) = blobs(200, 1);
        let all = examples(&f, &c, &t);
        let (train, val) = all.split_at(160);
        let options = FitOptions {
            max_epochs: 40,
            patience: 5,
            learning_rate: 0.05,
            ..FitOptions::default()
        };
        let a = fit(train, val, 2, &options, |_| {}).unwrap();
        let b = fit(train, val, 2, &options, |_| {}).unwrap();
        assert_eq!(a.layers, b.layers, "same seed, same head");
        let best = a.history[a.best_epoch - 1];
        let lowest = a
            .history
            .iter()
            .map(|e| e.val_loss)
            .fold(f64::MAX, f64::min);
        assert_eq!(best.val_loss, lowest);
        assert!(
            a.stopped_early && a.history.len() == a.best_epoch + 5,
            "{:?}",
            a.history
        );
        // The kept layers are the best epoch's: their validation loss is the best one, not
        // the last epoch's.
        let nll: f64 = val
            .iter()
            .map(|e| {
                let z = head_logits(&a.layers, e.features);
                let max = z[0].max(z[1]);
                let log_sum = max + ((z[0] - max).exp() + (z[1] - max).exp()).ln();
                (log_sum - z[e.class]) as f64
            })
            .sum::<f64>()
            / val.len() as f64;
        assert!(
            (nll - best.val_loss).abs() < 1e-4,
            "{nll} vs best {}",
            best.val_loss
        );
        let other_seed = FitOptions { seed: 2, ..options };
        assert_ne!(
            fit(train, val, 2, &other_seed, |_| {}).unwrap().layers,
            a.layers
        );
    }

    #[test]
    fn a_distilled_student_ends_closer_to_its_teacher() {
        let (f, c, t) = blobs(400, 3);
        let all = examples(&f, &c, &t);
        let (train, rest) = all.split_at(240);
        let (val, test) = rest.split_at(80);
        let base = FitOptions {
            max_epochs: 30,
            patience: 0,
            learning_rate: 0.02,
            ..FitOptions::default()
        };
        let distilled = FitOptions {
            distillation: Some(Distillation::default()),
            ..base.clone()
        };
        let kl_to_teacher = |layers: &[Dense]| -> f64 {
            let softmax = |z: &[f32]| -> Vec<f64> {
                let z: Vec<f64> = z.iter().map(|&v| v as f64 / 4.0).collect();
                let max = z.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.iter().map(|v| v / sum).collect()
            };
            test.iter()
                .map(|e| {
                    let p = softmax(e.teacher.unwrap_or_default());
                    let q = softmax(&head_logits(layers, e.features));
                    p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum::<f64>()
                })
                .sum::<f64>()
                / test.len() as f64
        };
        let without = kl_to_teacher(&fit(train, val, 2, &base, |_| {}).unwrap().layers);
        let with = kl_to_teacher(&fit(train, val, 2, &distilled, |_| {}).unwrap().layers);
        println!("KL to the teacher on held-out examples: distilled {with:.5}, not distilled {without:.5}");
        assert!(
            with < without * 0.8,
            "KL to the teacher: distilled {with}, not {without}"
        );
    }
}

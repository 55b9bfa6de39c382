//! Fine-tuning with the last stage unfrozen (`edgeclass train --unfreeze layer4`).
//!
//! After the head has been fitted on the frozen backbone's pooled features ([`super::fit`]),
//! the backbone's layer4 (BatchNorm already folded into its convolutions) and that head are
//! trained together, in f32, with candle's autograd: two `VarMap`s, one `AdamW` each, the
//! stage at `lr_scale` (0.001 by default) times the head's learning rate, both on the same
//! cosine schedule with warm-up. The inputs are the feature maps after layer3 that the int8
//! engine computed once per picture and view, cached as f16. Early stopping on the
//! validation loss restores the best epoch's stage and head; epoch 0 is the starting point,
//! so a run that never improves keeps the frozen head on the backbone's own layer4.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Init, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use half::f16;
use serde::Serialize;

use super::fit::{
    cosine_learning_rate, dense_layers, EarlyStopping, Epoch, Example, FitOptions, LossTargets,
    Network, Standardization,
};
use crate::model::{Dense, LastStage, SplitMix};

/// How the last stage is fine-tuned.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Unfreeze {
    /// Most epochs of fine-tuning (each runs layer4 forward and backward over every view).
    pub epochs: usize,
    /// The stage's learning rate relative to the head's.
    pub lr_scale: f64,
}

impl Default for Unfreeze {
    fn default() -> Self {
        Self {
            epochs: 4,
            // Measured on the seeded backbone: at 0.1 and 0.01 the first AdamW steps (a step
            // of the learning rate on every one of layer4's 8.4 M weights) wreck layer4 and
            // early stopping keeps the backbone's; 0.001 trains.
            lr_scale: 0.001,
        }
    }
}

/// One training or validation example: a cached feature map before the last stage.
#[derive(Debug, Clone, Copy)]
pub struct MapExample<'a> {
    /// `channels x height x width` values, f16.
    pub map: &'a [f16],
    /// True class.
    pub class: usize,
    /// The teacher's logits for this view, when distilling.
    pub teacher: Option<&'a [f32]>,
}

/// The fine-tuned stage and head, and how it went.
#[derive(Debug, Clone)]
pub struct FineTuned {
    /// The best epoch's stage.
    pub stage: LastStage,
    /// The best epoch's head layers (reading the stage's pooled output).
    pub layers: Vec<Dense>,
    /// Every epoch run.
    pub history: Vec<Epoch>,
    /// The epoch kept; 0: none improved on the starting point.
    pub best_epoch: usize,
    /// Whether early stopping ended fine-tuning before `epochs`.
    pub stopped_early: bool,
}

/// Fine-tunes `stage` and the head `layers` (already fitted on the frozen features, reading
/// them standardized by `standardization`, which stays fixed) on `train`, early-stopping on
/// `val`; `shape` is each map's `(channels, height, width)`. The head comes back with the
/// standardization folded in.
#[allow(clippy::too_many_arguments)]
pub(super) fn fine_tune(
    train: &[MapExample],
    val: &[MapExample],
    shape: (usize, usize, usize),
    classes: usize,
    stage: &LastStage,
    (layers, standardization): (&[Dense], &Standardization),
    options: &FitOptions,
    unfreeze: &Unfreeze,
    mut progress: impl FnMut(&Epoch),
) -> candle_core::Result<FineTuned> {
    let device = Device::Cpu;
    if train.is_empty() || val.is_empty() {
        candle_core::bail!("fine-tuning needs training and validation examples");
    }
    let mut rng = SplitMix::new(options.seed ^ 0x0001_A7E4);

    // The stage and the head as Vars, starting from the backbone's layer4 and the head.
    let mut stage_vars = VarMap::new();
    let stage_builder = VarBuilder::from_varmap(&stage_vars, DType::F32, &device);
    let trained_stage = stage.map_tensors(|name, t| {
        let var = stage_builder.get_with_hints(t.dims(), name, Init::Const(0.0))?;
        stage_vars.set_one(name, t)?;
        Ok(var)
    })?;
    let (layers, standardization) = &floor_spread(layers, standardization);
    let mut head_vars = VarMap::new();
    let head_builder = VarBuilder::from_varmap(&head_vars, DType::F32, &device);
    let mut linear = Vec::new();
    for (i, dense) in layers.iter().enumerate() {
        let (outputs, inputs) = (dense.outputs(), dense.inputs());
        let (w, b) = (format!("head.{i}.weight"), format!("head.{i}.bias"));
        let weight = head_builder.get_with_hints((outputs, inputs), &w, Init::Const(0.0))?;
        let bias = head_builder.get_with_hints(outputs, &b, Init::Const(0.0))?;
        head_vars.set_one(
            &w,
            Tensor::from_slice(&dense.weight, (outputs, inputs), &device)?,
        )?;
        head_vars.set_one(&b, Tensor::from_slice(&dense.bias, outputs, &device)?)?;
        linear.push(Linear::new(weight, Some(bias)));
    }
    let head = Network {
        layers: linear,
        dropout: options.dropout,
    };
    let features = standardization.mean.len();
    let mean = Tensor::from_slice(&standardization.mean, (1, features), &device)?;
    let inv_std = Tensor::from_slice(&standardization.inv_std, (1, features), &device)?;
    let standardize = |pooled: Tensor| pooled.broadcast_sub(&mean)?.broadcast_mul(&inv_std);
    let export = |head: &Network| -> candle_core::Result<Vec<Dense>> {
        let mut layers = dense_layers(head)?;
        if let Some(first) = layers.first_mut() {
            standardization.fold(first);
        }
        Ok(layers)
    };

    let plain: Vec<Example> = train
        .iter()
        .map(|e| Example {
            features: &[],
            class: e.class,
            teacher: e.teacher,
        })
        .collect();
    let loss_targets = LossTargets::new(&plain, classes, options, &device)?;
    let batch_maps = |examples: &[MapExample], ids: &[u32]| -> candle_core::Result<Tensor> {
        let (c, h, w) = shape;
        let mut values = Vec::with_capacity(ids.len() * c * h * w);
        ids.iter()
            .for_each(|&i| values.extend_from_slice(examples[i as usize].map));
        Tensor::from_vec(values, (ids.len(), c, h, w), &device)?.to_dtype(DType::F32)
    };
    let batch = options.batch_size.max(1);
    // Validation loss and accuracy of the current stage and head.
    let validate = |stage: &LastStage, head: &Network| -> candle_core::Result<(f64, f64)> {
        let ids: Vec<u32> = (0..val.len() as u32).collect();
        let mut logits = Vec::new();
        for chunk in ids.chunks(batch) {
            let pooled = standardize(stage.forward(&batch_maps(val, chunk)?)?.detach())?;
            logits.push(head.forward(&pooled, None)?.detach());
        }
        let logits = Tensor::cat(&logits, 0)?;
        let truth: Vec<u32> = val.iter().map(|e| e.class as u32).collect();
        let truth = Tensor::from_vec(truth, val.len(), &device)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &truth)?.to_scalar::<f32>()?;
        let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let right = predicted
            .iter()
            .zip(val)
            .filter(|(&p, e)| p as usize == e.class)
            .count();
        Ok((loss as f64, right as f64 / val.len() as f64))
    };

    let adamw = |vars: &VarMap| {
        candle_nn::AdamW::new(
            vars.all_vars(),
            ParamsAdamW {
                lr: options.learning_rate,
                weight_decay: options.weight_decay,
                ..ParamsAdamW::default()
            },
        )
    };
    let (mut stage_optimizer, mut head_optimizer) = (adamw(&stage_vars)?, adamw(&head_vars)?);
    let steps_per_epoch = train.len().div_ceil(batch);
    let total_steps = steps_per_epoch * unfreeze.epochs;
    let warmup_steps = steps_per_epoch * options.warmup_epochs.min(unfreeze.epochs / 2);
    let mut stopping = EarlyStopping::new(options.patience);
    let (start_loss, _) = validate(&trained_stage, &head)?;
    stopping.improved(0, start_loss);
    let mut best = (stage.snapshot()?, export(&head)?);
    let mut order: Vec<u32> = (0..train.len() as u32).collect();
    let mut history = Vec::new();
    let mut step = 0;
    for epoch in 1..=unfreeze.epochs {
        rng.shuffle(&mut order);
        let (mut loss_sum, mut learning_rate) = (0.0, options.learning_rate);
        for chunk in order.chunks(batch) {
            learning_rate =
                cosine_learning_rate(step, total_steps, warmup_steps, options.learning_rate);
            head_optimizer.set_learning_rate(learning_rate);
            stage_optimizer.set_learning_rate(learning_rate * unfreeze.lr_scale);
            let index = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let pooled = standardize(trained_stage.forward(&batch_maps(train, chunk)?)?)?;
            let logits = head.forward(&pooled, Some(&mut rng))?;
            let batch_loss = loss_targets.loss(&logits, &index)?;
            let grads: GradStore = batch_loss.backward()?;
            head_optimizer.step(&grads)?;
            stage_optimizer.step(&grads)?;
            loss_sum += batch_loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
            step += 1;
        }
        let (val_loss, val_accuracy) = validate(&trained_stage, &head)?;
        let record = Epoch {
            epoch,
            train_loss: loss_sum / train.len() as f64,
            val_loss,
            val_accuracy,
            learning_rate,
        };
        history.push(record);
        progress(&record);
        if stopping.improved(epoch, val_loss) {
            best = (trained_stage.snapshot()?, export(&head)?);
        }
        if stopping.should_stop(epoch) {
            break;
        }
    }
    let epochs_run = history.len();
    Ok(FineTuned {
        stage: best.0,
        layers: best.1,
        best_epoch: stopping.best_epoch().unwrap_or(0),
        stopped_early: epochs_run < unfreeze.epochs,
        history,
    })
}

/// The head re-expressed on features standardized with each spread at least a tenth of the
/// median spread: the same function, but a feature that barely varied on the frozen backbone
/// no longer multiplies its changes (once layer4 trains) by its tiny spread's inverse.
fn floor_spread(
    layers: &[Dense],
    standardization: &Standardization,
) -> (Vec<Dense>, Standardization) {
    let mut spreads: Vec<f32> = standardization
        .inv_std
        .iter()
        .filter(|&&s| s > 0.0)
        .map(|s| 1.0 / s)
        .collect();
    spreads.sort_by(f32::total_cmp);
    let floor = spreads.get(spreads.len() / 2).copied().unwrap_or(0.0) * 0.1;
    let mut layers = layers.to_vec();
    let mut floored = standardization.clone();
    for (i, inv_std) in floored.inv_std.iter_mut().enumerate() {
        if *inv_std > 0.0 && 1.0 / *inv_std < floor {
            let scale = floor * *inv_std;
            if let Some(first) = layers.first_mut() {
                let inputs = first.inputs();
                first
                    .weight
                    .chunks_mut(inputs)
                    .for_each(|row| row[i] *= scale);
            }
            *inv_std = 1.0 / floor;
        }
    }
    (layers, floored)
}

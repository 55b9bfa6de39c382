//! Logits to a [`Classification`]: softmax, top-k, thresholds, label mapping, publish policy.

pub mod labels;
pub mod topk;

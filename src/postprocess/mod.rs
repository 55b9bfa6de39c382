//! Logits to a [`Classification`]: softmax, top-k, thresholds, label mapping, publish policy.

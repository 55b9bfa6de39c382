//! The `[model]` section of the daemon's configuration.

use std::path::PathBuf;

use serde::Deserialize;

use super::fetch::{data_dir, WeightsSource};
use super::{Architecture, Precision};
use crate::preprocess::Tta;

/// `[model]`: which weights, at which precision, on how many threads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// safetensors or GGUF; downloaded (and quantized) on first start when missing. Unset means
    /// [`default_weights_path`], resolved by [`ModelConfig::weights_path`].
    pub weights: Option<PathBuf>,
    /// The architecture `weights` must hold; unset: whatever the file holds (detected).
    pub arch: Option<Architecture>,
    /// Compute precision (safetensors weights are quantized at load).
    pub precision: Precision,
    /// Inference threads; 0 means one per core.
    pub threads: usize,
    /// Download missing weights from `base_url` (a Hugging Face hub or a mirror of it).
    pub fetch: bool,
    /// Where missing weights are downloaded from.
    pub base_url: String,
    /// Expected SHA-256 of the download (default: the pinned torchvision weights).
    pub sha256: String,
    /// Seeded random weights of the real shapes instead of a file: for tests and benchmarks.
    pub synthetic_seed: Option<u64>,
    /// Test-time augmentation: classify each frame's views and average their probabilities
    /// (ImageNet's and every head's); each view costs one backbone pass.
    pub tta: Tta,
}

impl Default for ModelConfig {
    fn default() -> Self {
        let source = WeightsSource::default();
        Self {
            weights: None,
            arch: None,
            precision: Precision::Q8_0,
            threads: 0,
            fetch: true,
            base_url: source.base_url,
            sha256: source.sha256,
            synthetic_seed: None,
            tta: Tta::None,
        }
    }
}

impl ModelConfig {
    /// The weights file: `weights`, else [`default_weights_path`].
    pub fn weights_path(&self) -> PathBuf {
        self.weights.clone().unwrap_or_else(default_weights_path)
    }
}

/// `resnet18-q8_0.gguf` in the data directory, where `edgeclass fetch-model` writes it. Reads
/// the environment (see [`data_dir`]), so it is resolved when needed, not in `Default`.
pub fn default_weights_path() -> PathBuf {
    data_dir().join("resnet18-q8_0.gguf")
}

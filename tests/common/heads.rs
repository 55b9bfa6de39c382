//! Custom heads for the daemon tests: seeded weights over the synthetic backbone, as
//! `edgeclass train` would write them.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use edgeclass::model::{BackboneRef, Dense, Head, Model, Precision};

/// The daemon's synthetic model (`synthetic_seed = 7` in the tests' configs), built once: heads must be
/// trained on its backbone, and the tests compute what a head should say about a photo.
pub fn synthetic_backbone() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::synthetic(7, Precision::Q8_0, 1).expect("synthetic model"))
}

/// A head over the synthetic backbone's features with seeded weights (`512 -> hidden -> classes`,
/// or `512 -> classes` when `hidden` is 0), as `edgeclass train` would write it; `fingerprint`
/// is the backbone it claims.
pub fn seeded_head(classes: &[&str], hidden: usize, seed: u64, fingerprint: &str) -> Head {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut dense = |inputs: usize, outputs: usize| {
        let mut values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect()
        };
        Dense {
            weight: values(inputs * outputs),
            bias: values(outputs),
        }
    };
    let features = synthetic_backbone().feature_len();
    let layers = match hidden {
        0 => vec![dense(features, classes.len())],
        n => vec![dense(features, n), dense(n, classes.len())],
    };
    let backbone = BackboneRef {
        fingerprint: fingerprint.to_string(),
        file: PathBuf::from("resnet18-synthetic-7.gguf"),
    };
    let classes = classes.iter().map(|c| c.to_string()).collect();
    Head::new(classes, layers, features, backbone).expect("valid head")
}

/// [`seeded_head`] over the synthetic backbone, saved to `path`.
pub fn write_head(path: &Path, classes: &[&str], hidden: usize, seed: u64) -> Head {
    let head = seeded_head(classes, hidden, seed, synthetic_backbone().fingerprint());
    head.save(path).expect("save head");
    head
}

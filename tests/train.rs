//! `edgeclass train` on rendered door scenes over the seeded full-size backbone: the trained
//! head classifies held-out scenes, and each training method shows its effect.

mod common {
    pub mod cli;
    pub mod scenes;
}

use std::path::{Path, PathBuf};

use common::cli::{edgeclass, text};
use common::scenes::{door, write_doors, Variation};
use edgeclass::model::{write_gguf, Head, Model, Network, Precision, StorageDtype};
use edgeclass::preprocess::{PreprocessConfig, Preprocessor};
use serde_json::Value;

const BACKBONE_SEED: u64 = 11;

/// The seeded full-size ResNet-18 as a q8_0 GGUF file in `dir`.
fn backbone(dir: &Path) -> PathBuf {
    let path = dir.join("backbone-q8_0.gguf");
    write_gguf(
        &Network::synthetic(BACKBONE_SEED),
        StorageDtype::Q8_0,
        &path,
    )
    .expect("write backbone");
    path
}

/// Share of `scenes` (picture, is open) the head classifies right.
fn accuracy(model: &Model, head: &Head, scenes: &[(image::RgbImage, bool)]) -> f64 {
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let open = head
        .classes()
        .iter()
        .position(|c| c == "open")
        .expect("an open class");
    let (mut logits, mut features, mut hidden, mut head_logits) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let right = scenes
        .iter()
        .filter(|(picture, is_open)| {
            model
                .forward_with_features(preprocessor.transform(picture), &mut logits, &mut features)
                .expect("forward");
            head.forward(&features, &mut hidden, &mut head_logits);
            let predicted_open = head_logits[open] >= head_logits[1 - open];
            predicted_open == *is_open
        })
        .count();
    right as f64 / scenes.len() as f64
}

fn scenes(count: usize, first_seed: u64, variation: Variation) -> Vec<(image::RgbImage, bool)> {
    (0..count as u64)
        .flat_map(|i| [true, false].map(|open| (door(open, first_seed + i, variation), open)))
        .collect()
}

/// Trains with the CLI; returns the head and the JSON report.
fn train(data: &Path, weights: &Path, output: &Path, extra: &[&str]) -> (Head, Value) {
    let mut args = vec![
        "train",
        data.to_str().expect("utf-8 path"),
        "--output",
        output.to_str().expect("utf-8 path"),
        "--weights",
        weights.to_str().expect("utf-8 path"),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = edgeclass(&args);
    assert!(
        out.status.success(),
        "train {extra:?} failed: {}",
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    (Head::load(output).expect("a head file"), report)
}

/// Held-out scenes are classified right, and augmentation is what keeps the head right when
/// the camera is bumped, the light changes or the door is mirrored.
#[test]
fn trained_head_classifies_held_out_scenes_and_augmentation_carries_it_to_shifted_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = backbone(dir.path());
    let data = dir.path().join("data");
    write_doors(&data, 40, 1, Variation::CAMERA);
    let model = Model::load(&weights, Precision::Q8_0, 0).expect("backbone");
    let held_out = scenes(50, 10_000, Variation::CAMERA);
    let shifted = scenes(50, 20_000, Variation::SHIFTED);

    let (augmented, report) = train(&data, &weights, &dir.path().join("a.gguf"), &[]);
    let (plain, _) = train(
        &data,
        &weights,
        &dir.path().join("p.gguf"),
        &["--no-augment"],
    );
    assert_eq!(augmented.classes(), ["closed", "open"]);
    assert_eq!(augmented.backbone().fingerprint, model.fingerprint());
    assert_eq!(report["classes"][0]["train"].as_u64(), Some(32));
    assert_eq!(report["classes"][0]["validation"].as_u64(), Some(8));

    let held_out_accuracy = accuracy(&model, &augmented, &held_out);
    let with = accuracy(&model, &augmented, &shifted);
    let without = accuracy(&model, &plain, &shifted);
    println!(
        "held-out {held_out_accuracy:.3}; shifted scenes: augmented {with:.3}, not augmented {without:.3}"
    );
    assert!(
        held_out_accuracy >= 0.95,
        "held-out accuracy {held_out_accuracy}"
    );
    assert!(
        with >= without + 0.04,
        "augmentation should help on shifted scenes: {with} vs {without}"
    );
}

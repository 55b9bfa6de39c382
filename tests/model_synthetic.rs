//! The full-size ResNet-18 (widths 64..512, 1000 classes) with seeded synthetic weights:
//! every precision runs, and quantization noise (SQNR of the logits vs f32) stays bounded.

use edgeclass::model::{synthetic_input, write_gguf, Model, Network, Precision, StorageDtype};

const SEED: u64 = 7;

fn logits(model: &Model, input: &[f32]) -> Vec<f32> {
    let mut out = Vec::new();
    model.forward(input, &mut out).unwrap();
    out
}

/// Signal-to-quantization-noise ratio of `q` against `reference`, in dB.
fn sqnr_db(reference: &[f32], q: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&r| (r as f64).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(q)
        .map(|(&r, &q)| (r as f64 - q as f64).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

#[test]
fn full_size_network_all_precisions_and_sqnr() {
    let input = synthetic_input(SEED, 224);
    let f32_model = Model::synthetic(SEED, Precision::F32, 2).unwrap();
    assert_eq!(f32_model.num_classes(), 1000);
    let reference = logits(&f32_model, &input);
    assert_eq!(reference.len(), 1000);
    assert!(reference.iter().all(|v| v.is_finite()));
    let mean = reference.iter().sum::<f32>() / 1000.0;
    let spread = reference.iter().map(|v| (v - mean).abs()).sum::<f32>() / 1000.0;
    assert!(
        spread > 1e-3,
        "logits are not varied: mean abs deviation {spread}"
    );

    for (precision, floor_db) in [(Precision::Q8_0, 30.0), (Precision::Q4_0, 10.0)] {
        let dynamic = Model::synthetic(SEED, precision, 2).unwrap();
        let calibrated = Model::synthetic_calibrated(SEED, precision, 2).unwrap();
        assert_eq!(calibrated.activation_scales(), "calibrated");
        for model in [dynamic, calibrated] {
            let q = logits(&model, &input);
            let scales = model.activation_scales();
            assert_eq!(q.len(), 1000);
            assert!(q.iter().all(|v| v.is_finite()), "{precision} {scales}");
            let sqnr = sqnr_db(&reference, &q);
            println!(
                "SQNR {precision} ({scales} activations) vs f32, full-size synthetic: {sqnr:.1} dB"
            );
            assert!(
                sqnr >= floor_db,
                "{precision} {scales}: SQNR {sqnr:.1} dB below {floor_db} dB"
            );
        }
    }
}

#[test]
fn full_size_q8_0_gguf_matches_synthetic_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18-q8_0.gguf");
    let size = write_gguf(&Network::synthetic(SEED), StorageDtype::Q8_0, &path).unwrap();
    // 11.7 M weights at ~1.06 bytes each, plus the f32 stem and biases.
    println!("full-size q8_0 GGUF: {:.2} MiB", size as f64 / 1048576.0);
    assert!(size < 14 * 1024 * 1024, "{size} bytes");
    let input = synthetic_input(SEED, 224);
    let file_model = Model::load(&path, Precision::Q8_0, 2).unwrap();
    let memory_model = Model::synthetic(SEED, Precision::Q8_0, 2).unwrap();
    assert_eq!(logits(&file_model, &input), logits(&memory_model, &input));
    // Heads trained on one may run on the other: the backbone is the same.
    assert_eq!(file_model.fingerprint(), memory_model.fingerprint());
    let other_seed = Model::synthetic(SEED + 1, Precision::Q8_0, 2).unwrap();
    assert_ne!(file_model.fingerprint(), other_seed.fingerprint());
}

/// The features a head classifies are fc's input: on the f32 path fc applied to them by hand
/// gives the logits, and asking for features leaves the logits unchanged on every path.
#[test]
fn features_are_what_fc_classifies() {
    let input = synthetic_input(SEED, 224);
    let network = Network::synthetic(SEED);
    for precision in Precision::ALL {
        let model = Model::synthetic(SEED, precision, 2).unwrap();
        let (mut with, mut features) = (Vec::new(), Vec::new());
        model
            .forward_with_features(&input, &mut with, &mut features)
            .unwrap();
        assert_eq!(with, logits(&model, &input), "{precision}");
        assert_eq!(features.len(), model.feature_len());
        assert_eq!(model.feature_len(), 512);
        // Pooled after a ReLU: non-negative, and not all zero.
        assert!(features.iter().all(|&f| f >= 0.0), "{precision}");
        assert!(features.iter().any(|&f| f > 0.0), "{precision}");
        if precision == Precision::F32 {
            let (weight, bias) = network.fc();
            for (class, &logit) in with.iter().enumerate().step_by(97) {
                let row = &weight[class * 512..(class + 1) * 512];
                let by_hand =
                    bias[class] + row.iter().zip(&features).map(|(w, f)| w * f).sum::<f32>();
                assert!(
                    (by_hand - logit).abs() < 1e-3,
                    "class {class}: {by_hand} vs {logit}"
                );
            }
        }
    }
}

/// A fitted temperature is stored in the GGUF file and divides the logits; the weights are
/// rewritten exactly as they were stored, and a safetensors file is refused.
#[test]
fn temperature_is_stored_in_the_file_and_divides_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18-q8_0.gguf");
    write_gguf(&Network::synthetic(SEED), StorageDtype::Q8_0, &path).unwrap();
    let input = synthetic_input(SEED, 224);
    let before = logits(&Model::load(&path, Precision::Q8_0, 2).unwrap(), &input);
    assert_eq!(
        edgeclass::model::scale_temperature(&path, 2.0).unwrap(),
        2.0
    );
    assert_eq!(
        edgeclass::model::scale_temperature(&path, 1.5).unwrap(),
        3.0
    );
    let model = Model::load(&path, Precision::Q8_0, 2).unwrap();
    assert_eq!(model.temperature(), 3.0);
    let after = logits(&model, &input);
    for (b, a) in before.iter().zip(&after) {
        assert!(
            (b / 3.0 - a).abs() <= 1e-6 * b.abs().max(1.0),
            "{b} / 3 vs {a}"
        );
    }
    assert_eq!(Network::load(&path).unwrap().temperature(), 3.0);

    let safetensors = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model_tiny_resnet18.safetensors");
    let err = edgeclass::model::scale_temperature(&safetensors, 2.0).unwrap_err();
    assert!(err.to_string().contains("only a GGUF file"), "{err}");
}

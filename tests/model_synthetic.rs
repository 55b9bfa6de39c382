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
    let from_file = logits(&Model::load(&path, Precision::Q8_0, 2).unwrap(), &input);
    let in_memory = logits(&Model::synthetic(SEED, Precision::Q8_0, 2).unwrap(), &input);
    assert_eq!(from_file, in_memory);
}

//! The ResNet-18 against PyTorch: a narrow ResNet-18 (widths 8/16/32/64, random weights and
//! BatchNorm statistics) and its eval-mode logits on a preprocessed photo, both written by
//! `tests/fixtures/make_reference.py`.

use std::path::{Path, PathBuf};

use edgeclass::model::{
    calibrate, quantize_file, write_gguf, Model, Network, Precision, StorageDtype,
};
use edgeclass::preprocess::{read_image_file, PreprocessConfig, Preprocessor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_f32(name: &str) -> Vec<f32> {
    std::fs::read(fixture(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn weights() -> PathBuf {
    fixture("model_tiny_resnet18.safetensors")
}

fn logits(model: &Model) -> Vec<f32> {
    let mut out = Vec::new();
    model
        .forward(&read_f32("model_chelsea_input.f32"), &mut out)
        .unwrap();
    out
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Top-1 of the PyTorch reference: "tabby" (the fixture lifts it 1.5 above the rest).
const TABBY: usize = 281;

#[test]
fn f32_logits_match_pytorch() {
    let expected = read_f32("model_tiny_logits.f32");
    let model = Model::load(&weights(), Precision::F32, 2).unwrap();
    assert_eq!(model.num_classes(), 1000);
    assert_eq!(model.input_size(), 224);
    assert_eq!(model.description(), "resnet18-f32");
    let got = logits(&model);
    assert_eq!(got.len(), expected.len());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("f32 vs PyTorch: max |diff| {worst:.2e}, max |logit| {scale:.3}");
    assert!(worst <= 1e-3 * scale, "max diff {worst} vs scale {scale}");
    assert_eq!(argmax(&got), TABBY);
}

#[test]
fn q8_0_keeps_top1_and_direction() {
    let f32_logits = logits(&Model::load(&weights(), Precision::F32, 2).unwrap());
    let q8 = logits(&Model::load(&weights(), Precision::Q8_0, 2).unwrap());
    let cos = cosine(&q8, &f32_logits);
    println!("q8_0 vs f32 cosine {cos:.6}");
    assert_eq!(argmax(&q8), TABBY);
    assert!(cos >= 0.999, "cosine {cos}");
}

/// Preprocessed sample photos (not the reference photo) for calibration.
fn calibration_images() -> Vec<Vec<f32>> {
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    ["coffee.jpg", "astronaut.jpg"]
        .iter()
        .map(|name| {
            let frame = read_image_file(&fixture("images").join(name)).unwrap();
            preprocessor.run(&frame).unwrap().to_vec()
        })
        .collect()
}

#[test]
fn calibrated_q8_0_keeps_top1_and_direction_on_an_unseen_photo() {
    let f32_logits = logits(&Model::load(&weights(), Precision::F32, 2).unwrap());
    let images = calibration_images();
    let network = calibrate(
        Network::load(&weights()).unwrap(),
        Precision::Q8_0,
        2,
        images.iter().map(Vec::as_slice),
    )
    .unwrap();
    assert_eq!(network.activation_ranges().map(|r| r.images()), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibrated.gguf");
    write_gguf(&network, StorageDtype::Q8_0, &path).unwrap();

    let calibrated = Model::load(&path, Precision::Q8_0, 2).unwrap();
    assert_eq!(calibrated.activation_scales(), "calibrated");
    let static_logits = logits(&calibrated);
    let cos = cosine(&static_logits, &f32_logits);
    println!("calibrated q8_0 vs f32 cosine {cos:.6} (calibrated on 2 other photos)");
    assert_eq!(argmax(&static_logits), TABBY);
    assert!(cos >= 0.999, "cosine {cos}");
    // Bit-identical from 1 and 2 threads, and stable from frame to frame.
    let one_thread = logits(&Model::load(&path, Precision::Q8_0, 1).unwrap());
    assert_eq!(one_thread, static_logits);
    assert_eq!(logits(&calibrated), static_logits);

    // The same file without ranges, and f32 from the calibrated file, stay dynamic / exact.
    let plain = dir.path().join("plain.gguf");
    quantize_file(&weights(), &plain, StorageDtype::Q8_0).unwrap();
    assert_eq!(
        Model::load(&plain, Precision::Q8_0, 2)
            .unwrap()
            .activation_scales(),
        "dynamic"
    );
    assert_eq!(
        Model::load(&path, Precision::F32, 2)
            .unwrap()
            .activation_scales(),
        "none"
    );
}

/// A fixture photo preprocessed with its shorter side resized to `resize` (centre 224 crop),
/// mirrored when `mirror`.
fn photo_view(name: &str, resize: u32, mirror: bool) -> Vec<f32> {
    let config = PreprocessConfig {
        resize,
        ..PreprocessConfig::default()
    };
    let frame = read_image_file(&fixture("images").join(name)).unwrap();
    let mut input = Preprocessor::new(config).run(&frame).unwrap().to_vec();
    if mirror {
        input.chunks_exact_mut(224).for_each(<[f32]>::reverse);
    }
    input
}

/// Guards the calibration method over more than one unseen picture: calibrated on two of the
/// three fixture photos, the static path's logits on 12 views (6 scales, mirrored or not) of
/// the third stay close to f32, for each photo left out. Mean cosine over the 36 views: 0.99909
/// with least-error ranges floored by the percentile and mirrored calibration views; 0.99870
/// with the 0.1 % percentile ranges alone, 0.99896 with least-error ranges alone (both fail).
#[test]
fn calibrated_q8_0_tracks_f32_on_views_of_photos_left_out() {
    let photos = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"];
    let reference = Model::load(&weights(), Precision::F32, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut f32_logits, mut q8_logits) = (Vec::new(), Vec::new());
    let mut cosines = Vec::new();
    for left_out in photos {
        let images: Vec<Vec<f32>> = photos
            .iter()
            .filter(|&&name| name != left_out)
            .map(|name| photo_view(name, 256, false))
            .collect();
        let network = calibrate(
            Network::load(&weights()).unwrap(),
            Precision::Q8_0,
            2,
            images.iter().map(Vec::as_slice),
        )
        .unwrap();
        let path = dir.path().join("calibrated.gguf");
        write_gguf(&network, StorageDtype::Q8_0, &path).unwrap();
        let calibrated = Model::load(&path, Precision::Q8_0, 2).unwrap();
        for resize in [224, 256, 288, 320, 384, 448] {
            for mirror in [false, true] {
                let input = photo_view(left_out, resize, mirror);
                reference.forward(&input, &mut f32_logits).unwrap();
                calibrated.forward(&input, &mut q8_logits).unwrap();
                assert_eq!(
                    argmax(&q8_logits),
                    argmax(&f32_logits),
                    "top-1 of {left_out} at {resize}, mirrored: {mirror}"
                );
                cosines.push(cosine(&q8_logits, &f32_logits));
            }
        }
    }
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    let min = cosines.iter().copied().fold(1.0, f64::min);
    println!(
        "{} views, calibrated q8_0 vs f32: cosine mean {mean:.6}, min {min:.6}",
        cosines.len()
    );
    assert!(mean >= 0.999, "mean cosine {mean}");
}

#[test]
fn q4_0_runs_with_finite_logits() {
    let model = Model::load(&weights(), Precision::Q4_0, 1).unwrap();
    assert_eq!(model.description(), "resnet18-q4_0");
    let q4 = logits(&model);
    let f32_logits = logits(&Model::load(&weights(), Precision::F32, 1).unwrap());
    println!("q4_0 vs f32 cosine {:.4}", cosine(&q4, &f32_logits));
    assert_eq!(q4.len(), 1000);
    assert!(q4.iter().all(|v| v.is_finite()));
    assert!(cosine(&q4, &f32_logits) > 0.5, "q4_0 lost the signal");
}

#[test]
fn gguf_round_trip_equals_quantize_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, precision) in [
        (StorageDtype::Q8_0, Precision::Q8_0),
        (StorageDtype::Q4_0, Precision::Q4_0),
        (StorageDtype::F16, Precision::Q8_0),
    ] {
        // An extension that says nothing: the loader must look at the content.
        let gguf = dir.path().join(format!("tiny-{dtype}.bin"));
        let size = quantize_file(&weights(), &gguf, dtype).unwrap();
        let meta = std::fs::metadata(&gguf).unwrap();
        assert_eq!(size, meta.len());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o644,
                "not world-readable"
            );
        }
        let from_gguf = logits(&Model::load(&gguf, precision, 2).unwrap());
        let at_load = logits(&Model::load(&weights(), precision, 2).unwrap());
        if dtype == StorageDtype::F16 {
            // f16 storage rounds the weights: close, not identical.
            assert!(cosine(&from_gguf, &at_load) > 0.999, "{dtype}");
        } else {
            assert_eq!(from_gguf, at_load, "{dtype} GGUF vs quantize-at-load");
        }
    }
}

#[test]
fn quantized_gguf_is_smaller_and_loads_as_f32_too() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("tiny-q8_0.gguf");
    let q4 = dir.path().join("tiny-q4_0.gguf");
    let q8_size = quantize_file(&weights(), &q8, StorageDtype::Q8_0).unwrap();
    let q4_size = quantize_file(&weights(), &q4, StorageDtype::Q4_0).unwrap();
    let f32_size = std::fs::metadata(weights()).unwrap().len();
    println!("sizes: safetensors {f32_size}, q8_0 {q8_size}, q4_0 {q4_size}");
    assert!(q8_size < f32_size / 3 && q4_size < q8_size);
    // Dequantized q8_0 weights in the f32 engine stay close to the float reference.
    let deq = logits(&Model::load(&q8, Precision::F32, 2).unwrap());
    let expected = read_f32("model_tiny_logits.f32");
    assert!(cosine(&deq, &expected) > 0.999);
    assert_eq!(argmax(&deq), TABBY);
}

#[test]
fn one_model_serves_concurrent_callers() {
    let model = Model::load(&weights(), Precision::Q8_0, 2).unwrap();
    let expected = logits(&model);
    let input = read_f32("model_chelsea_input.f32");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    model.forward(&input, &mut out).unwrap();
                    out
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected);
        }
    });
}

/// A GGUF from another writer: candle's own Q8_0 quantization, one scale per 32-value block.
/// The loader must requantize per channel and still agree with quantize-at-load closely.
#[test]
fn gguf_with_per_block_scales_is_requantized() {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    use candle_core::Device;
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.gguf");
    quantize_file(&weights(), &ours, StorageDtype::F16).unwrap();
    let mut file = std::fs::File::open(&ours).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    let mut requantized = 0;
    for name in &names {
        let t = content.tensor(&mut file, name, &Device::Cpu).unwrap();
        let floats = t.dequantize(&Device::Cpu).unwrap();
        let blockable = floats.dims().last().is_some_and(|&d| d % 32 == 0);
        let t = if name.ends_with(".weight") && blockable {
            requantized += 1;
            QTensor::quantize(&floats, GgmlDType::Q8_0).unwrap()
        } else {
            QTensor::quantize(&floats, GgmlDType::F32).unwrap()
        };
        tensors.push(t);
    }
    assert!(requantized >= 5, "only {requantized} tensors in Q8_0");
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let named: Vec<(&str, &QTensor)> = names.iter().map(|n| n.as_str()).zip(&tensors).collect();
    let foreign = dir.path().join("foreign.gguf");
    let mut out = std::fs::File::create(&foreign).unwrap();
    gguf_file::write(&mut out, &metadata, &named).unwrap();
    drop(out);

    let from_foreign = logits(&Model::load(&foreign, Precision::Q8_0, 2).unwrap());
    let at_load = logits(&Model::load(&weights(), Precision::Q8_0, 2).unwrap());
    let cos = cosine(&from_foreign, &at_load);
    println!("per-block GGUF vs quantize-at-load cosine {cos:.6}");
    assert!(cos > 0.999, "cosine {cos}");
    assert_eq!(argmax(&from_foreign), TABBY);
}

//! Bad model files: every one is an error naming the file and the problem, never a panic.

use std::path::{Path, PathBuf};

use edgeclass::model::{quantize_file, Head, Model, ModelError, Precision, StorageDtype};
use edgeclass::sysexits::Sysexit;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tiny() -> PathBuf {
    fixture("model_tiny_resnet18.safetensors")
}

/// Loads `path` at every precision; all must fail the same way. Returns the message.
fn load_error(path: &Path) -> (ModelError, String) {
    let mut last = None;
    for precision in Precision::ALL {
        let err = Model::load(path, precision, 1).expect_err("bad file loaded");
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "error does not name the file: {message}"
        );
        last = Some((err, message));
    }
    last.unwrap()
}

/// Rewrites a safetensors file through `edit(name, shape, data) -> Option<(shape, data)>`.
fn rewrite_safetensors(
    out: &Path,
    mut edit: impl FnMut(&str, &[usize], &[u8]) -> Option<(Vec<usize>, Vec<u8>)>,
) {
    let bytes = std::fs::read(tiny()).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = Vec::new();
    for (name, view) in tensors.tensors() {
        if let Some((shape, data)) = edit(&name, view.shape(), view.data()) {
            kept.push((name, shape, data, view.dtype()));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = kept
        .iter()
        .map(|(n, s, d, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*t, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, out).unwrap();
}

#[test]
fn unreadable_path() {
    let path = Path::new("/nonexistent/edgeclass/resnet18.safetensors");
    let (err, message) = load_error(path);
    assert!(matches!(err, ModelError::Open { .. }), "{message}");
    assert_eq!(err.sysexit(), Sysexit::NoInput);
}

#[test]
fn wrong_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    std::fs::write(&path, b"\x89PNG\r\n\x1a\n not a model at all").unwrap();
    let (err, message) = load_error(&path);
    assert!(matches!(err, ModelError::UnknownFormat { .. }), "{message}");
    assert!(
        message.contains("neither GGUF nor safetensors"),
        "{message}"
    );
    assert_eq!(err.sysexit(), Sysexit::DataErr);
    // An empty file too.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        load_error(&path).0,
        ModelError::UnknownFormat { .. }
    ));
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny()).unwrap();
    for keep in [12, 200, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.path().join(format!("cut-{keep}.safetensors"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let (err, message) = load_error(&path);
        assert!(
            matches!(err, ModelError::Malformed { .. }),
            "{keep}: {message}"
        );
    }
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.gguf");
    quantize_file(&tiny(), &full, StorageDtype::Q8_0).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    for keep in [4, 30, 1000, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.path().join(format!("cut-{keep}.gguf"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let (err, message) = load_error(&path);
        assert!(
            matches!(
                err,
                ModelError::Malformed { .. } | ModelError::BadTensor { .. }
            ),
            "{keep}: {message}"
        );
    }
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-bn.safetensors");
    rewrite_safetensors(&path, |name, shape, data| {
        (name != "layer3.1.bn2.running_var").then(|| (shape.to_vec(), data.to_vec()))
    });
    let (err, message) = load_error(&path);
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{message}");
    assert!(message.contains("layer3.1.bn2.running_var"), "{message}");
}

#[test]
fn wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad-shape.safetensors");
    rewrite_safetensors(&path, |name, shape, data| {
        if name == "layer2.1.conv1.weight" {
            // [16, 16, 3, 3] presented as [16, 144, 1, 1]: same bytes, wrong layout.
            Some((vec![shape[0], shape[1] * 9, 1, 1], data.to_vec()))
        } else {
            Some((shape.to_vec(), data.to_vec()))
        }
    });
    let (err, message) = load_error(&path);
    assert!(matches!(err, ModelError::BadTensor { .. }), "{message}");
    assert!(
        message.contains("layer2.1.conv1.weight") && message.contains("shape"),
        "{message}"
    );
}

#[test]
fn non_finite_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    rewrite_safetensors(&path, |name, shape, data| {
        let mut data = data.to_vec();
        if name == "layer1.0.conv2.weight" {
            data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        Some((shape.to_vec(), data))
    });
    let (err, message) = load_error(&path);
    assert!(matches!(err, ModelError::BadTensor { .. }), "{message}");
    assert!(message.contains("layer1.0.conv2.weight"), "{message}");
}

#[test]
fn wrong_class_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ten-classes.safetensors");
    rewrite_safetensors(&path, |name, shape, data| match name {
        "fc.weight" => Some((vec![10, shape[1]], data[..10 * shape[1] * 4].to_vec())),
        "fc.bias" => Some((vec![10], data[..40].to_vec())),
        _ => Some((shape.to_vec(), data.to_vec())),
    });
    // Any class count loads; the ImageNet label table requires 1000.
    let model = Model::load(&path, Precision::Q8_0, 1).unwrap();
    assert_eq!(model.num_classes(), 10);
    let message = model.require_classes(1000).unwrap_err().to_string();
    assert!(
        message.contains("ten-classes.safetensors") && message.contains("10 classes"),
        "{message}"
    );
}

#[test]
fn wrong_input_size() {
    let model = Model::load(&tiny(), Precision::Q8_0, 1).unwrap();
    let err = model.forward(&[0.0; 100], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ModelError::InputSize { .. }), "{err}");
}

#[test]
fn gguf_of_another_architecture() {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama.gguf");
    let t = candle_core::Tensor::zeros((2, 32), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let arch = gguf_file::Value::String("llama".into());
    let mut f = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("w", &q)]).unwrap();
    let (err, message) = load_error(&path);
    assert!(matches!(err, ModelError::Malformed { .. }), "{message}");
    assert!(message.contains("llama"), "{message}");
}

/// Head files the fuzzing found panicking the loader (a tensor shape whose value count, or byte
/// size, overflows), kept as regression tests: now errors naming the file. New crashes from
/// `fuzz/run.sh` join them here.
#[test]
fn crashes_found_by_fuzzing_are_errors() {
    for name in [
        "fuzz/head-overflowing-shape-1.gguf",
        "fuzz/head-overflowing-shape-2.gguf",
        "fuzz/head-overflowing-size.gguf",
    ] {
        let err = Head::load(&fixture(name)).expect_err(name).to_string();
        assert!(err.contains(name), "{err}");
        let (_, message) = load_error(&fixture(name));
        assert!(message.contains(name), "{message}");
    }
}

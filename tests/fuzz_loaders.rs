//! Seeded mutation fuzzing of everything edgeclass reads from outside: model files (GGUF,
//! safetensors), head files, images and raw camera frames, config, label map and groups
//! files. Each mutated input must give `Ok` or an error, never a panic. Inputs that panic are saved under
//! `target/fuzz-crashes/` for a regression test.
//!
//! `EDGECLASS_FUZZ_ITERATIONS` sets the mutations per target (default 1500, a few seconds;
//! run more by hand: `EDGECLASS_FUZZ_ITERATIONS=200000 cargo test --release --test fuzz_loaders
//! -- --nocapture`).

mod common {
    pub mod rng;
}

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::rng::Rng;
use edgeclass::capture::{Frame, PixelFormat};
use edgeclass::config::Config;
use edgeclass::model::{write_gguf, BackboneRef, Dense, Head, Network, StorageDtype};
use edgeclass::postprocess::{PostprocessConfig, Postprocessor};
use edgeclass::preprocess::{PreprocessConfig, Preprocessor};

/// One to eight mutations of `seed`: random bytes, bit flips, truncation, overwritten 64-bit
/// words (lengths and offsets in headers), duplicated spans.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        if data.is_empty() {
            data.push(rng.next() as u8);
        }
        let at = rng.below(data.len());
        match rng.below(5) {
            0 => data[at] = rng.next() as u8,
            1 => data[at] ^= 1 << rng.below(8),
            2 => data.truncate(at),
            3 => {
                let word = [rng.next(), u64::from(u32::MAX), 0, 1 << 40][rng.below(4)];
                let bytes = word.to_le_bytes();
                let n = bytes.len().min(data.len() - at);
                data[at..at + n].copy_from_slice(&bytes[..n]);
            }
            _ => {
                let end = (at + 1 + rng.below(64)).min(data.len());
                let span = data[at..end].to_vec();
                data.splice(at..at, span);
            }
        }
    }
    data
}

fn iterations() -> usize {
    std::env::var("EDGECLASS_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1500)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs `target` on `iterations()` mutations of each seed; returns how many ran and saves (and
/// names) the inputs that panicked.
fn fuzz(name: &str, seeds: &[Vec<u8>], mut target: impl FnMut(&[u8])) -> usize {
    let mut rng = Rng(name
        .bytes()
        .fold(7, |h, b| h.wrapping_mul(31) ^ u64::from(b)));
    let mut crashes = Vec::new();
    let runs = iterations();
    for i in 0..runs {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
            let path = dir.join(format!("{name}-{i}"));
            let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &input));
            crashes.push(format!("{} ({saved:?})", path.display()));
        }
    }
    assert!(
        crashes.is_empty(),
        "{name}: inputs that panicked: {crashes:?}"
    );
    println!("{name}: {runs} mutated inputs, no panic");
    runs
}

#[test]
fn model_and_head_files_never_panic_the_loaders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let safetensors = fixture("model_tiny_resnet18.safetensors");
    let gguf = dir.path().join("tiny-q8_0.gguf");
    let network = Network::load(&safetensors).expect("fixture network");
    write_gguf(&network, StorageDtype::Q8_0, &gguf).expect("write GGUF");
    let head_path = dir.path().join("head.gguf");
    let head = Head::new(
        vec!["open".into(), "closed".into()],
        vec![Dense {
            weight: vec![0.5; 2 * 512],
            bias: vec![0.0, 0.1],
        }],
        512,
        BackboneRef {
            fingerprint: network.backbone_fingerprint(),
            file: gguf.clone(),
        },
    )
    .expect("head");
    head.save(&head_path).expect("save head");

    let read = |p: &Path| std::fs::read(p).expect("seed file");
    let input = dir.path().join("input");
    let mut load = |bytes: &[u8]| {
        std::fs::write(&input, bytes).expect("write input");
        let _ = Network::load(&input);
        let _ = Head::load(&input);
    };
    fuzz("network", &[read(&gguf), read(&safetensors)], &mut load);
    fuzz("head", &[read(&head_path)], &mut load);
}

#[test]
fn images_and_camera_frames_never_panic_preprocessing() {
    let read = |name: &str| std::fs::read(fixture(name)).expect("fixture image");
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let encoded = [
        read("preprocess_coffee.jpg"),
        read("preprocess_chelsea_small.png"),
        read("preprocess_tiny.png"),
    ];
    fuzz("image", &encoded, |bytes| {
        let _ = preprocessor.run(&Frame::encoded(bytes.to_vec(), "fuzz".into()));
    });

    // Raw frames: the data's length and the declared size disagree in every way.
    let mut sizes = Rng(3);
    let raw: Vec<Vec<u8>> = vec![vec![128; 64 * 48 * 2], vec![60; 64 * 48 * 3 / 2]];
    fuzz("raw frame", &raw, |bytes| {
        let format = [
            PixelFormat::Yuyv,
            PixelFormat::Nv12,
            PixelFormat::Rgb24,
            PixelFormat::Mjpeg,
        ][sizes.below(4)];
        let frame = Frame {
            format,
            width: [0, 1, 63, 64, 65, 4096][sizes.below(6)],
            height: [0, 1, 47, 48, 49][sizes.below(5)],
            data: bytes.to_vec(),
            captured_at: SystemTime::now(),
            seq: 0,
            origin: "fuzz".into(),
        };
        let _ = preprocessor.run(&frame);
    });
}

#[test]
fn config_files_never_panic_the_loader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seeds: Vec<Vec<u8>> = ["configs/demo.toml", "configs/edgeclass.toml"]
        .iter()
        .map(|p| std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).expect("config"))
        .collect();
    let file = dir.path().join("edgeclass.toml");
    fuzz("config", &seeds, |bytes| {
        std::fs::write(&file, bytes).expect("write config");
        let _ = Config::load(&file);
    });
}

/// Inputs fuzzing found panicking (a tensor shape whose value count, or byte size, overflows),
/// kept as regression tests: now errors naming the file.
#[test]
fn crashes_found_by_fuzzing_are_errors() {
    for name in [
        "fuzz/head-overflowing-shape-1.gguf",
        "fuzz/head-overflowing-shape-2.gguf",
        "fuzz/head-overflowing-size.gguf",
    ] {
        let err = Head::load(&fixture(name)).expect_err(name).to_string();
        assert!(err.contains(name), "{err}");
        let _ = Network::load(&fixture(name));
    }
}

#[test]
fn label_map_and_groups_files_never_panic_the_postprocessor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let labels = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/labels");
    let read = |name: &str| std::fs::read(labels.join(name)).expect("label file");
    let file = dir.path().join("labels.toml");
    fuzz("groups file", &[read("groups-home.toml")], |bytes| {
        std::fs::write(&file, bytes).expect("write groups");
        let config = PostprocessConfig {
            groups: Some(file.clone()),
            ..PostprocessConfig::default()
        };
        let _ = Postprocessor::new(&config);
    });
    fuzz("label map", &[read("zh.toml")], |bytes| {
        std::fs::write(&file, bytes).expect("write label map");
        let config = PostprocessConfig {
            label_map: Some(file.clone()),
            ..PostprocessConfig::default()
        };
        let _ = Postprocessor::new(&config);
    });
}

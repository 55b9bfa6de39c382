//! The `classify`, `quantize` and `bench` subcommands, run as the real binary.

mod common {
    pub mod cli;
}

use std::path::Path;
use std::process::Output;

use common::cli::{edgeclass, fixture, text};
use edgeclass::model::{BackboneRef, Dense, Head, Model, Precision};
use edgeclass::postprocess::topk::{softmax_in_place, top_k};
use edgeclass::postprocess::MeanProbabilities;
use edgeclass::preprocess::{read_image_file, PreprocessConfig, Preprocessor, Tta, TtaView};

fn tiny() -> String {
    fixture("model_tiny_resnet18.safetensors")
        .display()
        .to_string()
}

fn cat() -> String {
    fixture("model_chelsea.jpg").display().to_string()
}

#[test]
fn classify_json_gives_top3_of_the_cat() {
    let out = edgeclass(&[
        "classify",
        "--weights",
        &tiny(),
        "--precision",
        "f32",
        "--threads",
        "1",
        "--json",
        &cat(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["file"], cat());
    assert_eq!(v["model"], "resnet18-f32");
    assert_eq!(v["precision"], "f32");
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0);
    let top3 = v["top3"].as_array().unwrap();
    assert_eq!(top3.len(), 3);
    // The fixture network's PyTorch top-1 on this photo is "tabby".
    assert_eq!(top3[0]["index"], 281);
    assert_eq!(top3[0]["wnid"], "n02123045");
    assert_eq!(top3[0]["label"], "tabby");
    let scores: Vec<f64> = top3.iter().map(|g| g["score"].as_f64().unwrap()).collect();
    assert!(scores[0] >= scores[1] && scores[1] >= scores[2] && scores[2] > 0.0);
}

#[test]
fn classify_table_by_default() {
    let out = edgeclass(&["classify", "--weights", &tiny(), &cat()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("resnet18-q8_0"), "{stdout}");
    let first = stdout.lines().nth(1).unwrap_or_default();
    assert!(first.contains("1.") && first.contains("tabby"), "{stdout}");
}

#[test]
fn bad_images_are_reported_and_the_rest_classified() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.jpg");
    let jpeg = std::fs::read(fixture("model_chelsea.jpg")).unwrap();
    std::fs::write(&truncated, &jpeg[..200]).unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"this is not an image").unwrap();
    let missing = dir.path().join("missing.jpg");
    let (t, g, m) = (
        truncated.display().to_string(),
        garbage.display().to_string(),
        missing.display().to_string(),
    );
    let out = edgeclass(&[
        "classify",
        "--weights",
        &tiny(),
        "--json",
        &t,
        &cat(),
        &g,
        &m,
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for bad in [&t, &g, &m] {
        assert!(stderr.contains(bad.as_str()), "{bad} not named: {stderr}");
    }
    assert!(stderr.contains("3 of 4 images"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("model_chelsea.jpg"));
}

/// A two-class head over `model`'s features that claims the backbone `fingerprint` in `file`:
/// "cat" weighs the features one way, "no cat" the other.
fn head_on(model: &Model, fingerprint: &str, file: &Path) -> Head {
    let n = model.feature_len();
    let weight = (0..2 * n)
        .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.4)
        .collect();
    let backbone = BackboneRef {
        fingerprint: fingerprint.to_string(),
        file: file.to_path_buf(),
    };
    let layer = Dense {
        weight,
        bias: vec![0.1, -0.1],
    };
    Head::new(
        vec!["cat".into(), "no cat".into()],
        vec![layer],
        n,
        backbone,
    )
    .unwrap()
}

#[test]
fn classify_a_head_on_its_backbone_and_refuse_another_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let tiny_path = fixture("model_tiny_resnet18.safetensors");
    let model = Model::load(&tiny_path, Precision::Q8_0, 1).unwrap();
    let head = head_on(&model, model.fingerprint(), &tiny_path);
    let head_file = dir.path().join("door.gguf");
    head.save(&head_file).unwrap();
    let h = head_file.display().to_string();

    // What the head says about the photo, computed here.
    let frame = read_image_file(&fixture("model_chelsea.jpg")).unwrap();
    let mut preprocessor = Preprocessor::new(PreprocessConfig::default());
    let (mut logits, mut features, mut hidden, mut scores) = Default::default();
    model
        .forward_with_features(
            preprocessor.run(&frame).unwrap(),
            &mut logits,
            &mut features,
        )
        .unwrap();
    head.forward(&features, &mut hidden, &mut scores);
    softmax_in_place(&mut scores);
    let expected = top_k(&scores, 2);

    // The backbone comes from the file the head records.
    let out = edgeclass(&[
        "classify",
        "--weights",
        &h,
        "--threads",
        "1",
        "--json",
        &cat(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["model"], "resnet18-q8_0+door");
    let top = v["top3"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{v}");
    for (got, (index, score)) in top.iter().zip(&expected) {
        assert_eq!(got["index"], *index);
        assert_eq!(got["label"], ["cat", "no cat"][*index]);
        assert!(
            (got["score"].as_f64().unwrap() - f64::from(*score)).abs() < 1e-5,
            "{v}"
        );
        assert!(got.get("wnid").is_none(), "{v}");
    }
    // An ensemble of the head with itself says the same.
    let out = edgeclass(&[
        "classify",
        "--weights",
        &h,
        "--weights",
        &h,
        "--threads",
        "1",
        "--json",
        &cat(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let twice: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(twice["model"], "resnet18-q8_0+door+door");
    for (a, b) in top.iter().zip(twice["top3"].as_array().unwrap()) {
        assert_eq!(a["index"], b["index"]);
        let (a, b) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-6, "{v} vs {twice}");
    }
    let table = edgeclass(&["classify", "--weights", &h, &cat()]);
    let stdout = text(&table.stdout);
    let first = stdout.lines().nth(1).unwrap_or_default();
    assert!(
        first.contains("1.") && first.contains(["cat", "no cat"][expected[0].0]),
        "{stdout}"
    );

    // A head whose recorded backbone moved: named, and --backbone finds it.
    let moved = head_on(
        &model,
        model.fingerprint(),
        &dir.path().join("gone.safetensors"),
    );
    let moved_file = dir.path().join("moved.gguf");
    moved.save(&moved_file).unwrap();
    let m = moved_file.display().to_string();
    let out = edgeclass(&["classify", "--weights", &m, &cat()]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("gone.safetensors"),
        "{}",
        text(&out.stderr)
    );
    let out = edgeclass(&[
        "classify",
        "--weights",
        &m,
        "--backbone",
        &tiny(),
        "--json",
        &cat(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Trained on another backbone: refused, naming both files.
    let other = head_on(&model, "0123456789abcdef", &tiny_path);
    let other_file = dir.path().join("other.gguf");
    other.save(&other_file).unwrap();
    let o = other_file.display().to_string();
    let out = edgeclass(&["classify", "--weights", &o, &cat()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.contains(&o) && stderr.contains(&tiny()) && stderr.contains("retrain"),
        "{stderr}"
    );
}

#[test]
fn classify_rejects_bad_weights_with_exit_codes() {
    let out = edgeclass(&["classify", "--weights", "/nonexistent/w.gguf", &cat()]);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/nonexistent/w.gguf"));

    // The photo is not a model: bad content.
    let out = edgeclass(&["classify", "--weights", &cat(), &cat()]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("neither GGUF nor safetensors"));
}

#[test]
fn quantize_then_classify_from_gguf() {
    let dir = tempfile::tempdir().unwrap();
    for dtype in ["q8_0", "q4_0", "f16"] {
        let gguf = dir.path().join(format!("tiny-{dtype}.gguf"));
        let g = gguf.display().to_string();
        let out = edgeclass(&[
            "quantize",
            "--input",
            &tiny(),
            "--output",
            &g,
            "--dtype",
            dtype,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(dtype));
        assert!(std::fs::read(&gguf).unwrap().starts_with(b"GGUF"));
        let precision = if dtype == "f16" { "f32" } else { dtype };
        let out = edgeclass(&[
            "classify",
            "--weights",
            &g,
            "--precision",
            precision,
            "--json",
            &cat(),
        ]);
        assert!(out.status.success(), "{dtype}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
        assert_eq!(v["precision"], precision);
        assert_eq!(v["top3"].as_array().unwrap().len(), 3);
    }
    let out = edgeclass(&["quantize", "--input", &cat(), "--output", "/tmp/never.gguf"]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stderr));
}

#[test]
fn quantize_calibrates_on_a_folder_and_names_bad_folders() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("samples");
    std::fs::create_dir(&images).unwrap();
    for name in ["coffee.jpg", "astronaut.jpg"] {
        std::fs::copy(fixture("images").join(name), images.join(name)).unwrap();
    }
    // Not an image: skipped with a warning, the calibration goes on.
    std::fs::write(images.join("notes.txt"), "camera mounted on the porch").unwrap();
    let gguf = dir.path().join("calibrated.gguf");
    let args = ["quantize", "--input", &tiny(), "--output"];
    let out = edgeclass(
        &[
            &args[..],
            &[gguf.to_str().unwrap(), "--calibrate"],
            &[images.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("calibrated activations"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("notes.txt"),
        "{}",
        text(&out.stderr)
    );

    let out = edgeclass(&[
        "classify",
        "--weights",
        gguf.to_str().unwrap(),
        "--json",
        &cat(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["top3"][0]["label"], "tabby");

    // An existing GGUF calibrated in place (as the README suggests): the weights stay.
    let plain = dir.path().join("plain.gguf");
    let plain = plain.to_str().unwrap();
    assert!(
        edgeclass(&["quantize", "--input", &tiny(), "--output", plain])
            .status
            .success()
    );
    let before = edgeclass(&["classify", "--weights", plain, "--json", &cat()]);
    let out = edgeclass(&[
        "quantize",
        "--input",
        plain,
        "--output",
        plain,
        "--calibrate",
        images.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let top1 = |o: &Output| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap();
        v["top3"][0]["label"].clone()
    };
    assert_eq!(top1(&before), "tabby");
    let recalibrated = edgeclass(&["classify", "--weights", plain, "--json", &cat()]);
    assert_eq!(top1(&recalibrated), "tabby");
    assert_eq!(
        std::fs::read(plain).unwrap(),
        std::fs::read(&gguf).unwrap(),
        "same weights and ranges as calibrating from safetensors"
    );

    // fetch-model with local weights calibrates the same way.
    let fetched = dir.path().join("fetched.gguf");
    let fetched = fetched.to_str().unwrap();
    let out = edgeclass(&[
        "fetch-model",
        "--weights",
        &tiny(),
        "--output",
        fetched,
        "--calibrate",
        images.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model = Model::load(Path::new(fetched), Precision::Q8_0, 1).unwrap();
    assert_eq!(model.activation_scales(), "calibrated");
    assert_eq!(
        std::fs::read(fetched).unwrap(),
        std::fs::read(&gguf).unwrap()
    );

    // A folder without images, and a missing folder: exit 66 naming the folder.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for folder in [empty.clone(), dir.path().join("missing")] {
        let out = edgeclass(
            &[
                &args[..],
                &[gguf.to_str().unwrap(), "--calibrate"],
                &[folder.to_str().unwrap()],
            ]
            .concat(),
        );
        assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("calibration images in {}", folder.display())),
            "{stderr}"
        );
    }
}

#[test]
fn bench_json_and_layers_per_configuration() {
    let args = [
        "bench",
        "--weights",
        &tiny(),
        "--runs",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
    ];
    let out = edgeclass(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let precisions: Vec<&str> = rows
        .iter()
        .map(|r| r["precision"].as_str().unwrap())
        .collect();
    assert_eq!(precisions, ["f32", "q8_0", "q4_0"]);
    for r in &rows {
        assert_eq!(r["threads"], 1);
        let (median, p90) = (
            r["median_ms"].as_f64().unwrap(),
            r["p90_ms"].as_f64().unwrap(),
        );
        assert!(median > 0.0 && p90 >= median, "{r}");
        assert!(r["images_per_s"].as_f64().unwrap() > 0.0);
        let expected = if r["precision"] == "f32" {
            "none"
        } else {
            "dynamic"
        };
        assert_eq!(r["activations"], expected, "{r}");
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0, "{r}");
    }

    let out = edgeclass(&[&args[..], &["--precisions", "f32,q8_0", "--layers"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for layer in [
        "conv1",
        "maxpool",
        "layer2.0.downsample.0",
        "layer4.1.conv2",
        "fc",
    ] {
        assert!(stdout.contains(layer), "{layer} missing: {stdout}");
    }
    assert!(stdout.contains("vs f32"), "{stdout}");
}

#[test]
fn bench_times_heads_against_fc_only() {
    let dir = tempfile::tempdir().unwrap();
    let tiny_path = fixture("model_tiny_resnet18.safetensors");
    let model = Model::load(&tiny_path, Precision::Q8_0, 1).unwrap();
    let head = dir.path().join("door.gguf");
    head_on(&model, model.fingerprint(), &tiny_path)
        .save(&head)
        .unwrap();
    let h = head.display().to_string();
    let args = [
        "bench",
        "--weights",
        &tiny(),
        "--precisions",
        "q8_0",
        "--threads",
        "1",
        "--runs",
        "3",
        "--warmup",
        "0",
        "--head",
        &h,
        "--head",
        &h,
    ];
    let out = edgeclass(&[&args[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let heads = &row["heads"];
    assert_eq!(heads["count"], 2, "{row}");
    for key in ["median_ms", "ratio", "heads_median_ms", "percent_per_head"] {
        assert!(heads[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {row}");
    }
    let out = edgeclass(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("with heads ms"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bench_frames_times_every_stage_of_every_frame_case() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().display().to_string();
    let images = fixture("images").display().to_string();
    let out = edgeclass(&[
        "bench",
        "--frames",
        "--weights",
        &tiny(),
        "--images",
        &images,
        "--save-frames",
        &saved,
        "--runs",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cases: Vec<&str> = rows.iter().map(|r| r["case"].as_str().unwrap()).collect();
    assert_eq!(
        cases,
        [
            "YUYV 640x480 fast",
            "YUYV 640x480 exact",
            "MJPEG 1280x720 fast",
            "MJPEG 1280x720 exact",
            "MJPEG 1920x1080 fast",
            "MJPEG 1920x1080 exact",
            "NV12 1280x720 fast",
            "NV12 1280x720 exact",
            "NV12 1920x1080 fast",
            "NV12 1920x1080 exact"
        ]
    );
    for r in &rows {
        let ms = |key: &str| r[key].as_f64().unwrap_or_else(|| panic!("{key}: {r}"));
        for key in [
            "decode_ms",
            "resize_normalize_ms",
            "inference_ms",
            "postprocess_ms",
        ] {
            assert!(ms(key) > 0.0, "{key}: {r}");
        }
        let outside = ms("decode_ms") + ms("resize_normalize_ms") + ms("postprocess_ms");
        let percent = outside / ms("inference_ms") * 100.0;
        assert!(
            (ms("non_model_percent") - percent).abs() < 1e-6 * percent,
            "{r}"
        );
        // Fast rows compare their Top-3 with the exact row's on the same three photos.
        if r["case"].as_str().unwrap().ends_with("fast") {
            let same = r["top3_same_as_exact"]
                .as_u64()
                .unwrap_or_else(|| panic!("{r}"));
            assert!(same <= 3, "{r}");
            assert!((0.0..=100.0).contains(&ms("top3_max_shift_pp")), "{r}");
        } else {
            assert!(r["top3_same_as_exact"].is_null(), "{r}");
            assert!(r["top3_max_shift_pp"].is_null(), "{r}");
        }
    }
    // The frames measured, written as a camera would send them.
    for (name, bytes) in [
        ("chelsea-640x480.yuyv", Some(640 * 480 * 2)),
        ("coffee-1920x1080.nv12", Some(1920 * 1080 * 3 / 2)),
        ("astronaut-1280x720.jpg", None),
    ] {
        let data = std::fs::read(dir.path().join(name)).unwrap();
        match bytes {
            Some(len) => assert_eq!(data.len(), len, "{name}"),
            None => assert!(data.starts_with(&[0xFF, 0xD8]), "{name}"),
        }
    }
}

/// `edgeclass classify --json a.jpg b.jpg | head -1`: a reader that closed the pipe ends the
/// command quietly with success, not with a panic (exit 101).
#[test]
fn closed_stdout_ends_quietly_with_success() {
    for format in [&["--json"][..], &[][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgeclass"))
            .args(["classify", "--weights", &tiny()])
            .args(format)
            .args([cat(), cat()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before anything is written: every write then fails with EPIPE.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format:?}: {stderr}");
        assert!(stderr.is_empty(), "{format:?}: {stderr}");
    }
}

/// The cat photo with its left half mirrored onto the right: its own mirror image.
fn symmetric_cat(dir: &Path) -> String {
    let mut rgb = image::open(fixture("model_chelsea.jpg")).unwrap().to_rgb8();
    let width = rgb.width();
    for y in 0..rgb.height() {
        for x in width / 2..width {
            let left = *rgb.get_pixel(width - 1 - x, y);
            rgb.put_pixel(x, y, left);
        }
    }
    let path = dir.join("symmetric.png");
    rgb.save(&path).unwrap();
    path.display().to_string()
}

fn top3_scores(out: &Output) -> Vec<(u64, f64)> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    v["top3"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["index"].as_u64().unwrap(), g["score"].as_f64().unwrap()))
        .collect()
}

#[test]
fn tta_flip_of_a_mirror_symmetric_image_is_the_plain_result() {
    let dir = tempfile::tempdir().unwrap();
    let image = symmetric_cat(dir.path());
    // Tensor level: the mirrored view is the plain view bit for bit, so the int8 network's
    // averaged probabilities are its plain ones.
    let mut pre = Preprocessor::new(PreprocessConfig::for_input_size(224));
    pre.decode(&read_image_file(Path::new(&image)).unwrap())
        .unwrap();
    let plain = pre.view(TtaView::Plain).to_vec();
    assert_eq!(pre.view(TtaView::Mirror), plain.as_slice());
    let model = Model::load(Path::new(&tiny()), Precision::Q8_0, 1).unwrap();
    let mut mean = MeanProbabilities::default();
    let mut logits = Vec::new();
    for view in Tta::Flip.views() {
        model.forward(pre.view(*view), &mut logits).unwrap();
        mean.add(&logits, 1.0);
    }
    let mut averaged = mean.logits().to_vec();
    softmax_in_place(&mut averaged);
    model.forward(&plain, &mut logits).unwrap();
    softmax_in_place(&mut logits);
    for (a, p) in averaged.iter().zip(&logits) {
        assert!((a - p).abs() < 1e-6, "{a} vs {p}");
    }
    // Command level: the same Top-3.
    let run = |tta: &str| {
        top3_scores(&edgeclass(&[
            "classify",
            "--weights",
            &tiny(),
            "--threads",
            "1",
            "--json",
            "--tta",
            tta,
            &image,
        ]))
    };
    let (plain, flipped) = (run("none"), run("flip"));
    for ((i, a), (j, b)) in plain.iter().zip(&flipped) {
        assert_eq!(i, j);
        assert!((a - b).abs() < 1e-6, "{plain:?} vs {flipped:?}");
    }
}

#[test]
fn tta_on_a_photo_moves_the_scores_a_little() {
    let run = |tta: &str| {
        let out = edgeclass(&[
            "classify",
            "--weights",
            &tiny(),
            "--precision",
            "f32",
            "--threads",
            "1",
            "--json",
            "--tta",
            tta,
            &cat(),
        ]);
        let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
        (top3_scores(&out), v)
    };
    let ((plain, v), (flipped, vf), (crops, vc)) = (run("none"), run("flip"), run("flip+crops"));
    assert!(v.get("tta").is_none(), "{v}");
    assert_eq!(
        (vf["tta"].as_str(), vc["tta"].as_str()),
        (Some("flip"), Some("flip+crops"))
    );
    // The photo is not symmetric, so the mean differs, but its top-1 stays the tabby.
    assert_eq!(flipped[0].0, plain[0].0);
    assert_ne!(flipped[0].1, plain[0].1);
    assert!(
        (flipped[0].1 - plain[0].1).abs() < 0.25,
        "{plain:?} vs {flipped:?}"
    );
    assert!(
        crops.iter().all(|&(_, s)| (0.0..=1.0).contains(&s)),
        "{crops:?}"
    );
}

//! `edgeclass train` on rendered door scenes over the seeded full-size backbone: the trained
//! head classifies held-out scenes, and each training method shows its effect.

mod common {
    pub mod cli;
    pub mod rng;
    pub mod scenes;
}

use std::path::{Path, PathBuf};

use common::cli::{edgeclass, text};
use common::scenes::{door, write_doors, Variation};
use edgeclass::config::HeadConfig;
use edgeclass::model::{
    write_gguf, FeatureMap, Head, LastStage, Model, Network, Precision, StorageDtype,
};
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
    let (mut logits, mut features, mut hidden, mut head_logits, mut own) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut map = FeatureMap::default();
    let right = scenes
        .iter()
        .filter(|(picture, is_open)| {
            let input = preprocessor.transform(picture);
            model
                .forward_with_stage_input(input, &mut logits, &mut features, &mut map)
                .expect("forward");
            let read = head
                .features(&features, Some(&map), &mut own)
                .expect("the head's own layer4 runs");
            head.forward(read, &mut hidden, &mut head_logits);
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
    assert_best_epoch_restored(&report);
}

/// Every figure of the report is consistent with the stored head: early stopping ended the
/// run before the epoch limit, and the head is the best epoch's (its validation NLL is that
/// epoch's loss, not the last one's).
fn assert_best_epoch_restored(report: &Value) {
    let history = report["history"].as_array().expect("history");
    let best = report["best_epoch"].as_u64().expect("best epoch") as usize;
    let epochs = report["epochs_run"].as_u64().expect("epochs run") as usize;
    let max_epochs = report["options"]["fit"]["max_epochs"]
        .as_u64()
        .expect("max") as usize;
    let patience = report["options"]["fit"]["patience"]
        .as_u64()
        .expect("patience") as usize;
    assert_eq!(report["stopped_early"], true);
    assert_eq!(epochs, history.len());
    assert!(epochs < max_epochs, "{epochs} of {max_epochs}");
    assert_eq!(
        epochs,
        best + patience,
        "stopped {patience} epochs after the best"
    );
    let loss = |e: &Value| e["val_loss"].as_f64().expect("val loss");
    let lowest = history.iter().map(loss).fold(f64::MAX, f64::min);
    assert_eq!(loss(&history[best - 1]), lowest);
    let stored = report["validation"]["calibration"]["nll"]
        .as_f64()
        .expect("nll");
    assert!(
        (stored - lowest).abs() < 1e-3,
        "the stored head's validation NLL {stored} is not the best epoch's {lowest}"
    );
}

/// A corrupt and a truncated picture are skipped with a warning naming them; training still
/// completes, and the same seed gives the same head.
#[test]
fn corrupt_pictures_are_skipped_by_name_and_training_is_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = backbone(dir.path());
    let data = dir.path().join("data");
    write_doors(&data, 8, 100, Variation::CAMERA);
    let garbage = data.join("open/garbage.jpg");
    std::fs::write(&garbage, b"this is not a JPEG").expect("write garbage");
    let png = std::fs::read(data.join("closed/closed-100.png")).expect("read scene");
    let truncated = data.join("closed/truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 3]).expect("write truncated");

    let output = dir.path().join("head.gguf");
    let args = |output: &Path| {
        vec![
            "train".to_string(),
            data.display().to_string(),
            "--output".into(),
            output.display().to_string(),
            "--weights".into(),
            weights.display().to_string(),
            "--views".into(),
            "1".into(),
        ]
    };
    let run = |output: &Path| {
        let args = args(output);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        edgeclass(&args)
    };
    let out = run(&output);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for skipped in [&garbage, &truncated] {
        assert!(
            stderr.contains(&format!("skipping {}", skipped.display())),
            "no warning names {}: {stderr}",
            skipped.display()
        );
    }
    let stdout = text(&out.stdout);
    assert!(stdout.contains("on 16 pictures (2 skipped)"), "{stdout}");
    assert!(
        stdout.contains(&format!("wrote {}", output.display())),
        "{stdout}"
    );

    let again = dir.path().join("again.gguf");
    assert!(run(&again).status.success());
    let (first, second) = (
        Head::load(&output).expect("head"),
        Head::load(&again).expect("head"),
    );
    assert!(
        first.layers().eq(second.layers()),
        "the same seed must give the same head"
    );
    assert_eq!(first.thresholds(), second.thresholds());
}

/// Bad data is refused before any work, with the folder named and exit 65; `--dry-run`
/// prints the counts and trains nothing.
#[test]
fn bad_data_is_refused_before_any_work_and_dry_run_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_doors(&data, 5, 1, Variation::CAMERA);
    let out = edgeclass(&["train", data.to_str().expect("utf-8"), "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("closed") && stdout.contains("5 pictures"),
        "{stdout}"
    );
    assert!(stdout.contains("2 classes, 10 pictures"), "{stdout}");

    // No model is needed to refuse bad data: the weights path does not even exist.
    let refuse = |data: &Path, expected: &str| {
        let out = edgeclass(&[
            "train",
            data.to_str().expect("utf-8"),
            "--output",
            "/nonexistent/head.gguf",
            "--weights",
            "/nonexistent/backbone.gguf",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    };
    std::fs::remove_file(data.join("open/open-5.png")).expect("remove one");
    refuse(&data, "open has 4 picture(s); training needs at least 5");
    std::fs::rename(data.join("open"), data.join("open+ajar")).expect("rename");
    refuse(&data, "\"open+ajar\" cannot be a label");
    std::fs::remove_dir_all(data.join("open+ajar")).expect("remove class");
    refuse(&data, "has 1 class folder(s); training needs at least 2");
}

/// The training benchmark of the README (not a timed test: run it by hand, in release):
/// `cargo test --release --test train -- --ignored --nocapture`.
/// 200 pictures in 2 classes, augmentation and early stopping on, every core.
#[test]
#[ignore = "benchmark, run by hand"]
fn benchmark_training_200_pictures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = backbone(dir.path());
    let data = dir.path().join("data");
    write_doors(&data, 100, 1, Variation::CAMERA);
    let started = std::time::Instant::now();
    let (_, report) = train(&data, &weights, &dir.path().join("head.gguf"), &[]);
    let wall = started.elapsed().as_secs_f64();
    let timings = &report["timings"];
    println!(
        "train, 200 pictures x (1 + {} views): {wall:.1} s wall (features {:.1} s, fit {:.1} s, {} epochs, best {}), validation accuracy {:.3}",
        report["options"]["views"], timings["features_s"], timings["fit_s"], report["epochs_run"],
        report["best_epoch"], report["val_accuracy"]
    );
    assert!(report["val_accuracy"].as_f64().expect("accuracy") > 0.9);
}

/// The cost of `--unfreeze layer4` (not a timed test: run it by hand, in release):
/// `cargo test --release --test train -- --ignored --nocapture benchmark_unfreezing`.
/// The same 200 pictures, trained with the backbone frozen, then with layer4 unfrozen.
#[test]
#[ignore = "benchmark, run by hand"]
fn benchmark_unfreezing_200_pictures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = backbone(dir.path());
    let data = dir.path().join("data");
    write_doors(&data, 100, 1, Variation::CAMERA);
    let timed = |name: &str, extra: &[&str]| -> (f64, Value) {
        let started = std::time::Instant::now();
        let (_, report) = train(&data, &weights, &dir.path().join(name), extra);
        (started.elapsed().as_secs_f64(), report)
    };
    let (frozen, frozen_report) = timed("frozen.gguf", &[]);
    let (unfrozen, report) = timed("unfrozen.gguf", &["--unfreeze", "layer4"]);
    println!(
        "train, 200 pictures x 5 views: frozen {frozen:.1} s (validation accuracy {}), layer4 \
         unfrozen {unfrozen:.1} s ({:.1}x; fine-tuning {:.1} s, {} epochs, best {}, cache {} \
         MiB; validation accuracy {})",
        frozen_report["val_accuracy"],
        unfrozen / frozen,
        report["unfrozen"]["fit_s"].as_f64().unwrap_or_default(),
        report["unfrozen"]["epochs_run"],
        report["unfrozen"]["best_epoch"],
        report["unfrozen"]["cache_bytes"]
            .as_u64()
            .unwrap_or_default()
            >> 20,
        report["val_accuracy"],
    );
    assert!(report["val_accuracy"].as_f64().expect("accuracy") > 0.9);
}

/// `eval` measures a trained head on held-out pictures named by its classes, and
/// `--update-model` stores the fitted temperature and calibrated thresholds in the head.
#[test]
fn eval_measures_a_trained_head_and_stores_its_calibration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = backbone(dir.path());
    let data = dir.path().join("data");
    write_doors(&data, 12, 1, Variation::CAMERA);
    let output = dir.path().join("head.gguf");
    let (trained, _) = train(&data, &weights, &output, &["--views", "1"]);
    assert_eq!(trained.temperature(), 1.0);
    let held_out = dir.path().join("held_out");
    write_doors(&held_out, 15, 5_000, Variation::CAMERA);

    let out = edgeclass(&[
        "eval",
        held_out.to_str().expect("utf-8"),
        "--weights",
        output.to_str().expect("utf-8"),
        "--json",
        "--target-precision",
        "0.95",
        "--update-model",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let evaluation: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(evaluation["images"], 30);
    assert!(
        evaluation["top1_accuracy"].as_f64().expect("accuracy") >= 0.95,
        "{evaluation}"
    );
    let names: Vec<&str> = evaluation["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["closed", "open"]);
    assert!(evaluation["model"]
        .as_str()
        .expect("model")
        .ends_with("+head"));

    let updated = Head::load(&output).expect("updated head");
    let fitted = evaluation["calibration"]["temperature"]
        .as_f64()
        .expect("temperature");
    assert!(
        (f64::from(updated.temperature()) - fitted).abs() < 1e-3,
        "{fitted}"
    );
    assert!(
        updated.layers().eq(trained.layers()),
        "only the metadata changes"
    );
    assert!(
        text(&out.stderr).contains("stored temperature"),
        "{}",
        text(&out.stderr)
    );
    let thresholds = updated.thresholds().expect("thresholds");
    assert!(
        thresholds.iter().all(|t| (0.5..=1.0).contains(t)),
        "{thresholds:?}"
    );
}

/// Two trained heads: `eval` of a head with itself gives the head's figures, of both the
/// members' and the ensemble's; and both can teach a student together.
#[test]
fn ensembles_of_trained_heads_in_eval_and_as_teacher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = backbone(dir.path());
    let data = dir.path().join("data");
    write_doors(&data, 12, 1, Variation::CAMERA);
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    train(&data, &weights, &a, &["--views", "1"]);
    train(&data, &weights, &b, &["--views", "1", "--seed", "2"]);
    let held_out = dir.path().join("held_out");
    write_doors(&held_out, 15, 5_000, Variation::CAMERA);
    let eval = |heads: &[&Path]| -> Value {
        let mut args = vec!["eval", held_out.to_str().expect("utf-8"), "--json"];
        for head in heads {
            args.extend(["--weights", head.to_str().expect("utf-8")]);
        }
        let out = edgeclass(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };

    let (alone, twice) = (eval(&[&a]), eval(&[&a, &a]));
    for key in ["images", "top1_accuracy", "top5_accuracy", "confusion"] {
        assert_eq!(alone[key], twice[key], "{key}");
    }
    assert!(alone.get("members").is_none());
    let members = twice["members"].as_array().expect("members");
    assert_eq!(members.len(), 2);
    assert!(members
        .iter()
        .all(|m| m["top1_accuracy"] == alone["top1_accuracy"]));

    let (other, both) = (eval(&[&b]), eval(&[&a, &b]));
    let members = both["members"].as_array().expect("members");
    assert_eq!(members[0]["top1_accuracy"], alone["top1_accuracy"]);
    assert_eq!(members[1]["top1_accuracy"], other["top1_accuracy"]);
    assert_eq!(members[1]["weights"], b.to_str().expect("utf-8"));
    assert!(
        both["model"].as_str().expect("model").ends_with("+a+b"),
        "{both}"
    );
    assert!(
        both["top1_accuracy"].as_f64().expect("accuracy") >= 0.9,
        "{both}"
    );

    let student = dir.path().join("student.gguf");
    let (_, report) = train(
        &data,
        &weights,
        &student,
        &[
            "--views",
            "1",
            "--teacher",
            a.to_str().expect("utf-8"),
            "--teacher",
            b.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        report["teacher"],
        serde_json::json!([a.to_str().expect("utf-8"), b.to_str().expect("utf-8")])
    );
}

/// `--unfreeze layer4`: the backbone's layer4 is fine-tuned with the head and travels in the
/// head file. The held-out accuracy holds, `classify` runs the trained layer4 (not the
/// backbone's), `eval` measures the file, it teaches a student that shares the backbone, and
/// the daemon's `[[heads]]` refuse it with what to do instead.
#[test]
fn unfreezing_layer4_trains_it_and_the_head_file_carries_it_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = backbone(dir.path());
    let data = dir.path().join("data");
    write_doors(&data, 12, 1, Variation::CAMERA);
    let model = Model::load(&weights, Precision::Q8_0, 0).expect("backbone");
    let original =
        LastStage::from_network(&Network::load(&weights).expect("network")).expect("a layer4");
    let path = |name: &str| dir.path().join(name);

    // Plain pictures and no label smoothing keep the test short and give layer4 something to
    // improve: the frozen head is already right on every validation picture, but not sure.
    let plain = ["--no-augment", "--label-smoothing", "0"];
    let (frozen, _) = train(&data, &weights, &path("frozen.gguf"), &plain);
    let unfreeze = [
        &plain[..],
        &["--unfreeze", "layer4", "--unfreeze-epochs", "3"],
    ]
    .concat();
    let (tuned, report) = train(&data, &weights, &path("tuned.gguf"), &unfreeze);
    assert!(frozen.last_stage().is_none());
    let stage = tuned.last_stage().expect("the file carries layer4");
    assert_ne!(stage, &original, "layer4 was trained");
    let unfrozen = &report["unfrozen"];
    assert_eq!(unfrozen["stage"], "layer4");
    assert!(
        unfrozen["best_epoch"].as_u64().expect("best epoch") >= 1,
        "an epoch improved on the backbone's own layer4: {unfrozen}"
    );
    assert_eq!(
        unfrozen["cache_bytes"].as_u64(),
        Some(24 * 256 * 14 * 14 * 2),
        "24 pictures, one view each, of 256x14x14 f16"
    );

    let held_out = scenes(15, 10_000, Variation::CAMERA);
    let (with, without) = (
        accuracy(&model, &tuned, &held_out),
        accuracy(&model, &frozen, &held_out),
    );
    println!("held-out accuracy: layer4 unfrozen {with:.3}, frozen {without:.3}");
    assert!(
        with >= 0.95 && with >= without,
        "{with} vs frozen {without}"
    );

    // The same dense layers on the backbone's own layer4 classify otherwise: classify runs the
    // file's layer4.
    let same_head = Head::new(
        tuned.classes().to_vec(),
        tuned.layers().cloned().collect(),
        tuned.feature_len(),
        tuned.backbone().clone(),
    )
    .and_then(|h| h.with_last_stage(original))
    .expect("same head, original layer4");
    same_head.save(&path("original.gguf")).expect("save");
    let picture = data.join("open/open-1.png");
    let classify = |head: &Path| -> Value {
        let out = edgeclass(&[
            "classify",
            "--weights",
            head.to_str().expect("utf-8"),
            "--json",
            picture.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let (trained_top, original_top) = (
        classify(&path("tuned.gguf"))["top3"][0].clone(),
        classify(&path("original.gguf"))["top3"][0].clone(),
    );
    assert_eq!(trained_top["label"], "open");
    assert_ne!(
        trained_top["score"], original_top["score"],
        "classify must run the trained layer4"
    );

    let held_out_dir = dir.path().join("held_out");
    write_doors(&held_out_dir, 8, 5_000, Variation::CAMERA);
    let out = edgeclass(&[
        "eval",
        held_out_dir.to_str().expect("utf-8"),
        "--weights",
        path("tuned.gguf").to_str().expect("utf-8"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let evaluation: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        evaluation["top1_accuracy"].as_f64().expect("accuracy") >= 0.95,
        "{evaluation}"
    );

    let teacher = path("tuned.gguf");
    let teacher = teacher.to_str().expect("utf-8");
    let student = path("student.gguf");
    let (student_head, report) = train(
        &data,
        &weights,
        &student,
        &[&plain[..], &["--teacher", teacher]].concat(),
    );
    assert_eq!(report["teacher"], serde_json::json!([teacher]));
    assert!(student_head.last_stage().is_none());

    let entry: HeadConfig =
        toml::from_str(&format!("name = \"door\"\nweights = {teacher:?}\n")).expect("entry");
    let err = entry.load(Some(&model)).expect_err("refused").to_string();
    assert!(
        err.contains("brings its own layer4") && err.contains("--teacher"),
        "{err}"
    );
    let entry: HeadConfig =
        toml::from_str(&format!("name = \"door\"\nweights = {:?}\n", student)).expect("entry");
    entry
        .load(Some(&model))
        .expect("the distilled student runs in the daemon");
}

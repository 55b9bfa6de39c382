//! Postprocess stage against real label files: the shipped ones in configs/labels and small
//! files written to a temp dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeclass::postprocess::{
    label_problem, Classification, Decision, HeadPostprocessConfig, PolicyConfig,
    PostprocessConfig, PostprocessError, Postprocessor, PublishMode, PublishPolicy,
};

const CLASSES: usize = 1000;
const TABBY: usize = 281;
const TIGER_CAT: usize = 282;
const BASSET: usize = 161;
const BEAGLE: usize = 162;
const MAILBOX: usize = 637;

/// Logits whose softmax gives `probs` for the listed classes and spreads the rest evenly.
fn logits_for(probs: &[(usize, f32)]) -> Vec<f32> {
    let listed: f32 = probs.iter().map(|&(_, p)| p).sum();
    let rest = ((1.0 - listed) / (CLASSES - probs.len()) as f32).ln();
    let mut logits = vec![rest; CLASSES];
    for &(i, p) in probs {
        logits[i] = p.ln();
    }
    logits
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/labels")
        .join(name)
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-4
}

fn with_thresholds(pairs: &[(&str, f32)]) -> BTreeMap<String, f32> {
    pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
}

#[test]
fn softmax_and_top_k_report_sorted_raw_predictions() {
    let post = Postprocessor::new(&PostprocessConfig::default()).unwrap();
    let c = post.classify(&logits_for(&[
        (TABBY, 0.7),
        (TIGER_CAT, 0.2),
        (BEAGLE, 0.05),
    ]));
    assert_eq!(c.label, "tabby");
    assert!(!c.unknown);
    assert!(close(c.score, 0.7), "{c:?}");
    assert_eq!(c.top.len(), 3);
    let got: Vec<(usize, &str, &str)> = c
        .top
        .iter()
        .map(|p| (p.index, p.label.as_str(), p.wnid.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (TABBY, "tabby", "n02123045"),
            (TIGER_CAT, "tiger cat", "n02123159"),
            (BEAGLE, "beagle", "n02088364"),
        ]
    );
    assert!(close(c.top[1].score, 0.2) && close(c.top[2].score, 0.05));

    let five = Postprocessor::new(&PostprocessConfig {
        top_k: 5,
        ..Default::default()
    })
    .unwrap();
    let c = five.classify(&logits_for(&[(TABBY, 0.7)]));
    assert_eq!(c.top.len(), 5);
    assert!(c.top.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn below_global_threshold_is_unknown_but_top_is_still_reported() {
    let post = Postprocessor::new(&PostprocessConfig {
        unknown_label: "nichts".to_string(),
        ..Default::default()
    })
    .unwrap();
    let c = post.classify(&logits_for(&[(TABBY, 0.5), (TIGER_CAT, 0.3)]));
    assert!(c.unknown);
    assert_eq!(c.label, "nichts");
    assert!(close(c.score, 0.5));
    assert_eq!(c.top[0].label, "tabby");
    assert_eq!(c.top[1].label, "tiger cat");
    // A score exactly at the threshold passes.
    let at = Postprocessor::new(&PostprocessConfig {
        threshold: c.score,
        ..Default::default()
    })
    .unwrap();
    assert!(
        !at.classify(&logits_for(&[(TABBY, 0.5), (TIGER_CAT, 0.3)]))
            .unknown
    );
}

#[test]
fn per_label_thresholds_override_the_global_one() {
    for key in ["tabby", "281", "n02123045"] {
        let post = Postprocessor::new(&PostprocessConfig {
            thresholds: with_thresholds(&[(key, 0.4)]),
            ..Default::default()
        })
        .unwrap();
        let c = post.classify(&logits_for(&[(TABBY, 0.5)]));
        assert_eq!((c.label.as_str(), c.unknown), ("tabby", false), "key {key}");
        // Other classes keep the global threshold.
        let c = post.classify(&logits_for(&[(TIGER_CAT, 0.5)]));
        assert!(c.unknown, "key {key}");
    }
    // A stricter per-label threshold turns a globally known top-1 into unknown.
    let post = Postprocessor::new(&PostprocessConfig {
        thresholds: with_thresholds(&[("tabby", 0.9)]),
        ..Default::default()
    })
    .unwrap();
    let c = post.classify(&logits_for(&[(TABBY, 0.8)]));
    assert_eq!(
        (c.label.as_str(), c.top[0].label.as_str()),
        ("unrecognized", "tabby")
    );
    // What the web page's Thresholds page shows: the global threshold, and which labels have
    // their own.
    assert_eq!(
        post.global_threshold(),
        Some(PostprocessConfig::default().threshold)
    );
    assert!(post.has_own_threshold("tabby"));
    assert!(!post.has_own_threshold("tiger cat"));
    assert_eq!(post.threshold_of("tabby"), Some(0.9));
    let classes = ["open".to_string(), "closed".to_string()];
    let head = |threshold| {
        let config = HeadPostprocessConfig {
            threshold,
            thresholds: with_thresholds(&[("open", 0.7)]),
            ..Default::default()
        };
        Postprocessor::for_head(&classes, Some(&[0.3, 0.4]), &config, "heads[0].postprocess")
            .unwrap()
    };
    let recommended = head(None);
    assert_eq!(recommended.global_threshold(), None);
    assert_eq!(recommended.threshold_of("closed"), Some(0.4));
    assert!(recommended.has_own_threshold("open") && !recommended.has_own_threshold("closed"));
    let global = head(Some(0.2));
    assert_eq!(global.global_threshold(), Some(0.2));
    assert_eq!(
        (global.threshold_of("closed"), global.threshold_of("open")),
        (Some(0.2), Some(0.7))
    );
}

#[test]
fn label_map_keys_by_index_wnid_and_english_name() {
    let dir = tempfile::tempdir().unwrap();
    let map = write(
        &dir,
        "map.toml",
        "[names]\n\"281\" = \"Minka\"\nn02123159 = \"Tiger\"\nbeagle = \"Snoopy\"\n",
    );
    let post = Postprocessor::new(&PostprocessConfig {
        label_map: Some(map),
        thresholds: with_thresholds(&[("Snoopy", 0.1)]),
        ..Default::default()
    })
    .unwrap();
    let c = post.classify(&logits_for(&[
        (TABBY, 0.4),
        (TIGER_CAT, 0.3),
        (BEAGLE, 0.2),
    ]));
    let labels: Vec<(&str, &str)> = c
        .top
        .iter()
        .map(|p| (p.label.as_str(), p.raw_label.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("Minka", "tabby"),
            ("Tiger", "tiger cat"),
            ("Snoopy", "beagle")
        ]
    );
    // The per-label threshold keyed by the mapped name applies.
    let c = post.classify(&logits_for(&[(BEAGLE, 0.2)]));
    assert_eq!((c.label.as_str(), c.unknown), ("Snoopy", false));
    // Unmapped classes keep their English name.
    let c = post.classify(&logits_for(&[(MAILBOX, 0.9)]));
    assert_eq!(c.label, "mailbox");
}

#[test]
fn groups_sum_member_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let groups = write(
        &dir,
        "groups.toml",
        "[groups.dog]\nmembers = [\"151-268\"]\n[groups.cat]\nmembers = [\"tabby\", \"n02123159\", \"283\"]\n",
    );
    // Two breeds each below the 0.6 threshold, together above it; an ungrouped class between.
    let logits = logits_for(&[(BEAGLE, 0.35), (BASSET, 0.3), (MAILBOX, 0.32)]);
    let plain = Postprocessor::new(&PostprocessConfig::default()).unwrap();
    let c = plain.classify(&logits);
    assert!(c.unknown && c.top[0].label == "beagle", "{c:?}");

    let grouped = Postprocessor::new(&PostprocessConfig {
        groups: Some(groups),
        ..Default::default()
    })
    .unwrap();
    let c = grouped.classify(&logits);
    assert_eq!((c.label.as_str(), c.unknown), ("dog", false), "{c:?}");
    // The group's prediction names its best member.
    let dog = &c.top[0];
    assert_eq!(
        (dog.raw_label.as_str(), dog.index, dog.wnid.as_str()),
        ("beagle", BEAGLE, "n02088364")
    );
    // 0.65 plus the spread mass of the other 116 breeds.
    let spread = (1.0 - 0.97) / 997.0;
    assert!(close(dog.score, 0.65 + 116.0 * spread), "{}", dog.score);
    // The group competes with ungrouped classes in the same top-k.
    assert_eq!(c.top[1].label, "mailbox");
    assert!(c
        .top
        .iter()
        .all(|p| p.label != "beagle" && p.label != "basset"));

    let cats = grouped.classify(&logits_for(&[
        (TABBY, 0.25),
        (TIGER_CAT, 0.25),
        (283, 0.25),
    ]));
    assert_eq!(cats.label, "cat");
    assert_eq!(cats.top[0].raw_label, "tabby", "ties pick the lower index");
}

#[test]
fn group_thresholds_and_threshold_key_errors() {
    let dir = tempfile::tempdir().unwrap();
    let groups = write(
        &dir,
        "groups.toml",
        "[groups.dog]\nmembers = [\"151-268\"]\n",
    );
    let map = write(&dir, "map.toml", "[groups]\ndog = \"Hund\"\n");
    let logits = logits_for(&[(BEAGLE, 0.35), (BASSET, 0.3)]);
    let config = |thresholds: &[(&str, f32)]| PostprocessConfig {
        groups: Some(groups.clone()),
        label_map: Some(map.clone()),
        threshold: 0.9,
        thresholds: with_thresholds(thresholds),
        ..Default::default()
    };
    // Keyed by the group name or by its mapped label.
    for key in ["dog", "Hund"] {
        let c = Postprocessor::new(&config(&[(key, 0.5)]))
            .unwrap()
            .classify(&logits);
        assert_eq!((c.label.as_str(), c.unknown), ("Hund", false), "key {key}");
        let c = Postprocessor::new(&config(&[(key, 0.8)]))
            .unwrap()
            .classify(&logits);
        assert_eq!(
            (c.label.as_str(), c.top[0].label.as_str()),
            ("unrecognized", "Hund")
        );
    }
    // Without a per-label threshold the global 0.9 applies.
    assert!(
        Postprocessor::new(&config(&[]))
            .unwrap()
            .classify(&logits)
            .unknown
    );

    let err = Postprocessor::new(&config(&[("beagle", 0.5)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("postprocess.thresholds.\"beagle\"") && err.contains("group dog"),
        "{err}"
    );
    let err = Postprocessor::new(&config(&[("dgo", 0.5)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"dgo\"") && err.contains("names no output label"),
        "{err}"
    );
    let err = Postprocessor::new(&config(&[("dog", 0.5), ("Hund", 0.6)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"dog\"") && err.contains("already has a threshold from key \"Hund\""),
        "{err}"
    );
    let err = Postprocessor::new(&config(&[("dog", 1.5)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"dog\"") && err.contains("0.0..=1.0"),
        "{err}"
    );
}

#[test]
fn shipped_groups_and_chinese_names_load_and_resolve() {
    // Loading validates every member (resolves, in one group only) and every zh key.
    let post = Postprocessor::new(&PostprocessConfig {
        groups: Some(shipped("groups-home.toml")),
        label_map: Some(shipped("zh.toml")),
        thresholds: with_thresholds(&[("dog", 0.4), ("猫", 0.5)]),
        ..Default::default()
    })
    .unwrap();
    let labels: Vec<&str> = post.labels().collect();
    for group in ["狗", "猫", "鸟", "车辆", "人", "包裹"] {
        assert_eq!(labels.iter().filter(|&&l| l == group).count(), 1, "{group}");
    }
    for grouped in ["beagle", "tabby", "jay", "minivan", "groom", "carton"] {
        assert!(
            !labels.contains(&grouped),
            "{grouped} should be inside a group"
        );
    }
    assert!(labels.contains(&"信箱") && labels.contains(&"unrecognized"));

    // Uniform logits: every class has 0.001, so a group's score counts its members.
    let c = post.classify(&[0.0; CLASSES]);
    let score_of = |label: &str| {
        let wide = Postprocessor::new(&PostprocessConfig {
            groups: Some(shipped("groups-home.toml")),
            label_map: Some(shipped("zh.toml")),
            top_k: CLASSES,
            ..Default::default()
        })
        .unwrap();
        let c = wide.classify(&[0.0; CLASSES]);
        c.top
            .iter()
            .find(|p| p.label == label)
            .map(|p| (p.score * 1000.0).round())
    };
    assert_eq!(c.top[0].label, "狗");
    assert_eq!(score_of("狗"), Some(118.0));
    assert_eq!(score_of("猫"), Some(5.0));
    assert_eq!(score_of("鸟"), Some(59.0));
    assert_eq!(score_of("包裹"), Some(5.0));
    assert!(score_of("车辆").is_some_and(|n| n >= 25.0));
    assert!(score_of("人").is_some_and(|n| n >= 20.0));

    // The zh file also works without groups: [groups] is ignored, classes are renamed.
    let plain = Postprocessor::new(&PostprocessConfig {
        label_map: Some(shipped("zh.toml")),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(plain.classify(&logits_for(&[(TABBY, 0.9)])).label, "虎斑猫");
    assert_eq!(plain.classify(&logits_for(&[(283, 0.9)])).label, "波斯猫");
    assert_eq!(
        plain.classify(&logits_for(&[(207, 0.9)])).label,
        "金毛寻回犬"
    );

    let zh: toml::Table =
        toml::from_str(&std::fs::read_to_string(shipped("zh.toml")).unwrap()).unwrap();
    let names = zh["names"].as_table().unwrap();
    assert!(names.len() >= 50, "only {} class names", names.len());
}

/// The error for `text` in a file named `name`, loaded as a groups or label map file.
fn load_error(name: &str, text: &str, as_groups: bool) -> (String, PostprocessError) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, name, text);
    let config = if as_groups {
        PostprocessConfig {
            groups: Some(path.clone()),
            ..Default::default()
        }
    } else {
        PostprocessConfig {
            label_map: Some(path.clone()),
            ..Default::default()
        }
    };
    let err = Postprocessor::new(&config).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    (err.to_string(), err)
}

#[test]
fn bad_files_name_file_line_entry_and_problem() {
    let cases: &[(&str, bool, &str, &[&str])] = &[
        (
            "[groups.dog]\nmembers = [\"151-268\"]\n[groups.pets]\nmembers = [\"tabby\",\n  \"n99999999\"]\n",
            true,
            "line 5",
            &["groups.pets.members \"n99999999\"", "WordNet id"],
        ),
        (
            "[groups.big]\nmembers = [\"990-1000\"]\n",
            true,
            "line 2",
            &["\"990-1000\"", "bad index range"],
        ),
        (
            "[groups.x]\nmembers = [\"151-\"]\n",
            true,
            "line 2",
            &["groups.x.members \"151-\"", "bad index range"],
        ),
        (
            "[groups.dog]\nmembers = [\"151-268\"]\n[groups.small]\nmembers = [\"beagle\"]\n",
            true,
            "line 4",
            &["\"beagle\"", "already in group dog"],
        ),
        (
            "[groups.empty]\nmembers = []\n",
            true,
            "line 1",
            &["groups.empty.members", "at least one member"],
        ),
        (
            "[groups.dog]\nmember = [\"151-268\"]\n",
            true,
            "line 2",
            &["unknown field `member`"],
        ),
        (
            "[names]\n\"1000\" = \"x\"\n",
            false,
            "line 2",
            &["names.\"1000\"", "out of range"],
        ),
        (
            "[names]\ntabby = \"a\"\n\"281\" = \"b\"\n",
            false,
            "line 3",
            &["names.\"281\"", "already named by key \"tabby\""],
        ),
        (
            "[names]\nunicorn = \"x\"\n",
            false,
            "line 2",
            &["names.\"unicorn\"", "no ImageNet-1k class"],
        ),
        (
            "# comment\n[names\ntabby = \"x\"\n",
            false,
            "line 2",
            &["parsing label map file"],
        ),
    ];
    for &(text, as_groups, line, needles) in cases {
        let (message, _) = load_error("labels.toml", text, as_groups);
        assert!(message.contains(line), "{line} missing: {message}");
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
    }
    // A label map naming a group the groups file lacks.
    let dir = tempfile::tempdir().unwrap();
    let groups = write(&dir, "g.toml", "[groups.dog]\nmembers = [\"151-268\"]\n");
    let map = write(
        &dir,
        "m.toml",
        "[groups]\ndog = \"Hund\"\ncat = \"Katze\"\n",
    );
    let err = Postprocessor::new(&PostprocessConfig {
        groups: Some(groups),
        label_map: Some(map.clone()),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&map.display().to_string()) && err.contains("line 3"),
        "{err}"
    );
    assert!(
        err.contains("groups.\"cat\"") && err.contains("no such group"),
        "{err}"
    );

    // A missing file is a config error (exit 78) that names the file.
    let missing = dir.path().join("nope.toml");
    let err = Postprocessor::new(&PostprocessConfig {
        groups: Some(missing.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(err, PostprocessError::Read { .. }));
    assert!(err.to_string().contains("nope.toml"));
    assert_eq!(err.sysexit(), edgeclass::sysexits::Sysexit::Config);
}

#[test]
fn config_values_are_validated() {
    let cases = [
        (
            PostprocessConfig {
                top_k: 0,
                ..Default::default()
            },
            "postprocess.top_k",
        ),
        (
            PostprocessConfig {
                threshold: 1.2,
                ..Default::default()
            },
            "postprocess.threshold",
        ),
        (
            PostprocessConfig {
                threshold: f32::NAN,
                ..Default::default()
            },
            "postprocess.threshold",
        ),
        (
            PostprocessConfig {
                unknown_label: " ".to_string(),
                ..Default::default()
            },
            "postprocess.unknown_label",
        ),
    ];
    for (config, key) in cases {
        let err = Postprocessor::new(&config).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
    let err = PublishPolicy::new(&PolicyConfig {
        hold: 0,
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("publish_policy.hold"), "{err}");
}

#[test]
fn config_tables_deserialize_with_defaults_and_reject_unknown_keys() {
    #[derive(serde::Deserialize)]
    struct Daemon {
        #[serde(default)]
        postprocess: PostprocessConfig,
        #[serde(default)]
        publish_policy: PolicyConfig,
    }
    let full: Daemon = toml::from_str(
        r#"
        [postprocess]
        top_k = 5
        threshold = 0.5
        unknown_label = "?"
        label_map = "/etc/edgeclass/labels/zh.toml"
        groups = "/etc/edgeclass/labels/groups-home.toml"
        [postprocess.thresholds]
        dog = 0.4
        [publish_policy]
        mode = "every"
        hold = 2
        min_interval_ms = 250
        heartbeat_s = 0
        "#,
    )
    .unwrap();
    assert_eq!(full.postprocess.top_k, 5);
    assert_eq!(full.postprocess.unknown_label, "?");
    assert_eq!(full.postprocess.thresholds["dog"], 0.4);
    assert_eq!(
        full.postprocess.groups.as_deref(),
        Some(Path::new("/etc/edgeclass/labels/groups-home.toml"))
    );
    assert_eq!(
        full.publish_policy,
        PolicyConfig {
            mode: PublishMode::Every,
            hold: 2,
            min_interval_ms: 250,
            heartbeat_s: 0
        }
    );

    let empty: Daemon = toml::from_str("").unwrap();
    assert_eq!(empty.postprocess, PostprocessConfig::default());
    assert_eq!(
        (
            empty.postprocess.top_k,
            empty.postprocess.threshold,
            empty.postprocess.unknown_label.as_str()
        ),
        (3, 0.6, "unrecognized")
    );
    assert_eq!(
        empty.publish_policy,
        PolicyConfig {
            mode: PublishMode::OnChange,
            hold: 3,
            min_interval_ms: 0,
            heartbeat_s: 60
        }
    );

    for bad in [
        "[postprocess]\ntopk = 3\n",
        "[publish_policy]\nmode = \"sometimes\"\n",
    ] {
        assert!(toml::from_str::<Daemon>(bad).is_err(), "{bad}");
    }
}

#[test]
fn broken_logits_never_panic_or_produce_nan() {
    let post = Postprocessor::new(&PostprocessConfig::default()).unwrap();
    let mut logits = logits_for(&[(TABBY, 0.9)]);
    logits[5] = f32::NAN;
    logits[6] = f32::NEG_INFINITY;
    let c = post.classify(&logits);
    assert_eq!(c.label, "tabby");
    assert!(c.top.iter().all(|p| p.score.is_finite()));

    let c = post.classify(&[f32::NAN; CLASSES]);
    assert!(c.unknown && c.score.is_finite());

    let c = post.classify(&[]);
    assert!(c.unknown && c.top.is_empty() && c.score == 0.0);

    // Short logits: only the given classes compete.
    let c = post.classify(&[0.0, 5.0]);
    assert_eq!((c.top.len(), c.top[0].raw_label.as_str()), (2, "goldfish"));

    // Extra logits beyond the 1000 classes are ignored.
    let mut long = logits_for(&[(TABBY, 0.9)]);
    long.push(100.0);
    assert_eq!(post.classify(&long).label, "tabby");
}

// ---- heads ---------------------------------------------------------------------------------

fn door_classes() -> Vec<String> {
    ["open", "closed", "ajar"].map(String::from).to_vec()
}

/// Head logits whose softmax is `probs`, one per class.
fn head_logits(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

const SECTION: &str = "heads[0].postprocess";

#[test]
fn head_classes_are_named_indexed_and_have_no_wnid() {
    let post = Postprocessor::for_head(
        &door_classes(),
        None,
        &HeadPostprocessConfig::default(),
        SECTION,
    )
    .unwrap();
    let c = post.classify(&head_logits(&[0.1, 0.7, 0.2]));
    assert_eq!((c.label.as_str(), c.unknown), ("closed", false));
    let got: Vec<(usize, &str, &str)> = c
        .top
        .iter()
        .map(|p| (p.index, p.raw_label.as_str(), p.wnid.as_str()))
        .collect();
    assert_eq!(got, [(1, "closed", ""), (2, "ajar", ""), (0, "open", "")]);
    // No WordNet id for a head's class, so none in the event JSON.
    let json = serde_json::to_value(&c.top[0]).unwrap();
    assert_eq!(json.get("wnid"), None, "{json}");
    assert_eq!(json["raw_label"], "closed");
    // top_k (default 3) is clamped to the class count.
    let two = ["yes", "no"].map(String::from);
    let post =
        Postprocessor::for_head(&two, None, &HeadPostprocessConfig::default(), SECTION).unwrap();
    assert_eq!(post.classify(&head_logits(&[0.9, 0.1])).top.len(), 2);
    assert_eq!(
        post.labels().collect::<Vec<_>>(),
        ["yes", "no", "unrecognized"]
    );
}

#[test]
fn head_thresholds_come_from_the_file_unless_config_keys_override_them() {
    let classes = door_classes();
    let recommended = [0.9, 0.5, 0.5];
    let frame = head_logits(&[0.8, 0.1, 0.1]);

    // The file's 0.9 for `open` makes 0.8 unknown; the default 0.6 would not.
    let from_file = Postprocessor::for_head(
        &classes,
        Some(&recommended),
        &HeadPostprocessConfig::default(),
        SECTION,
    )
    .unwrap();
    let c = from_file.classify(&frame);
    assert!(c.unknown && c.label == "unrecognized", "{c:?}");
    let without_file =
        Postprocessor::for_head(&classes, None, &HeadPostprocessConfig::default(), SECTION)
            .unwrap();
    assert_eq!(without_file.classify(&frame).label, "open");

    // The head's global threshold replaces the file's for every class ...
    let global = HeadPostprocessConfig {
        threshold: Some(0.7),
        ..Default::default()
    };
    let post = Postprocessor::for_head(&classes, Some(&recommended), &global, SECTION).unwrap();
    assert_eq!(post.classify(&frame).label, "open");
    assert!(post.classify(&head_logits(&[0.1, 0.65, 0.25])).unknown);

    // ... and a class's own key overrides both.
    let per_class = HeadPostprocessConfig {
        threshold: Some(0.95),
        thresholds: with_thresholds(&[("open", 0.75)]),
        ..Default::default()
    };
    let post = Postprocessor::for_head(&classes, Some(&recommended), &per_class, SECTION).unwrap();
    assert_eq!(post.classify(&frame).label, "open");
    assert!(post.classify(&head_logits(&[0.05, 0.9, 0.05])).unknown);
}

#[test]
fn head_labels_rename_classes_and_thresholds_may_name_them() {
    let config = HeadPostprocessConfig {
        unknown_label: "not sure".into(),
        labels: [("open", "Door open"), ("closed", "Door closed")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        thresholds: with_thresholds(&[("Door open", 0.9)]),
        ..Default::default()
    };
    let post = Postprocessor::for_head(&door_classes(), None, &config, SECTION).unwrap();
    let c = post.classify(&head_logits(&[0.1, 0.8, 0.1]));
    assert_eq!(
        (c.label.as_str(), c.top[0].raw_label.as_str()),
        ("Door closed", "closed")
    );
    let c = post.classify(&head_logits(&[0.85, 0.1, 0.05]));
    assert!(c.unknown, "{c:?}");
    assert_eq!(
        (c.label.as_str(), c.top[0].label.as_str()),
        ("not sure", "Door open")
    );
    assert_eq!(
        post.labels().collect::<Vec<_>>(),
        ["Door open", "Door closed", "ajar", "not sure"]
    );
}

#[test]
fn head_config_errors_name_the_heads_key() {
    let classes = door_classes();
    let cases = [
        (
            HeadPostprocessConfig {
                labels: [("opne".to_string(), "Open".to_string())].into(),
                ..Default::default()
            },
            "heads[0].postprocess.labels.\"opne\"",
            "classes: open, closed, ajar",
        ),
        (
            HeadPostprocessConfig {
                thresholds: with_thresholds(&[("shut", 0.5)]),
                ..Default::default()
            },
            "heads[0].postprocess.thresholds.\"shut\"",
            "names no output label or class of this head",
        ),
        (
            HeadPostprocessConfig {
                threshold: Some(1.5),
                ..Default::default()
            },
            "heads[0].postprocess.threshold",
            "not a probability",
        ),
        (
            HeadPostprocessConfig {
                top_k: 0,
                ..Default::default()
            },
            "heads[0].postprocess.top_k",
            "at least 1",
        ),
    ];
    for (config, key, problem) in cases {
        let err = Postprocessor::for_head(&classes, None, &config, SECTION).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(key) && text.contains(problem), "{text}");
        assert_eq!(err.sysexit(), edgeclass::sysexits::Sysexit::Config);
    }
}

#[test]
fn home_assistant_state_words_are_refused_as_labels_but_the_old_default_only_warns() {
    assert_eq!(PostprocessConfig::default().unknown_label, "unrecognized");
    assert_eq!(PostprocessConfig::default().warning(), None);
    for word in [
        "unknown",
        "Unknown",
        "unavailable",
        "UNAVAILABLE",
        "None",
        "none",
        " ",
    ] {
        assert!(label_problem(word).is_some(), "{word:?}");
    }
    for fine in ["unrecognized", "unknown person", "nobody", "Hund"] {
        assert_eq!(label_problem(fine), None, "{fine:?}");
    }

    // unknown_label: refused, except the old default, which loads and warns.
    for word in ["unavailable", "None", ""] {
        let err = Postprocessor::new(&PostprocessConfig {
            unknown_label: word.to_string(),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("postprocess.unknown_label"), "{word:?}: {err}");
    }
    let old_default = PostprocessConfig {
        unknown_label: "unknown".to_string(),
        ..Default::default()
    };
    let post = Postprocessor::new(&old_default).expect("the old default still loads");
    assert_eq!(post.unknown_label(), "unknown");
    let warning = old_default.warning().expect("a warning");
    assert!(
        warning.contains("postprocess.unknown_label = \"unknown\"")
            && warning.contains("Home Assistant")
            && warning.contains("\"unrecognized\""),
        "{warning}"
    );

    // A label map or group label, named by the file's key.
    let dir = tempfile::tempdir().unwrap();
    let map = write(&dir, "map.toml", "[names]\ntabby = \"Unavailable\"\n");
    let err = Postprocessor::new(&PostprocessConfig {
        label_map: Some(map),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("postprocess.label_map") && err.contains("\"Unavailable\" is Home Assistant"),
        "{err}"
    );
    let groups = write(
        &dir,
        "groups.toml",
        "[groups.none]\nmembers = [\"tabby\"]\n",
    );
    let err = Postprocessor::new(&PostprocessConfig {
        groups: Some(groups),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("postprocess.groups") && err.contains("\"none\" is Home Assistant"),
        "{err}"
    );

    // A head: its labels, its unknown label, and a class name it would publish unmapped.
    let head = |config: HeadPostprocessConfig, classes: &[&str]| {
        let classes: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
        Postprocessor::for_head(&classes, None, &config, SECTION).map(drop)
    };
    let err = head(
        HeadPostprocessConfig {
            labels: [("open".to_string(), "unknown".to_string())].into(),
            ..Default::default()
        },
        &["open", "closed"],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("heads[0].postprocess.labels.\"open\""),
        "{err}"
    );
    let err = head(Default::default(), &["open", "None"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("heads[0].postprocess.labels.\"None\"") && err.contains("another name"),
        "{err}"
    );
    // ... which mapping it to another label cures.
    head(
        HeadPostprocessConfig {
            labels: [("None".to_string(), "nothing".to_string())].into(),
            ..Default::default()
        },
        &["open", "None"],
    )
    .expect("mapped away from the reserved word");
    let old_default = HeadPostprocessConfig {
        unknown_label: "unknown".to_string(),
        ..Default::default()
    };
    head(old_default.clone(), &["open", "closed"]).expect("the old default still loads");
    assert!(old_default
        .warning(SECTION)
        .is_some_and(|w| w.contains("heads[0].postprocess.unknown_label")));
}

// ---- publish policy ------------------------------------------------------------------------

fn classification(label: &str) -> Classification {
    Classification {
        label: label.to_string(),
        score: 0.9,
        unknown: false,
        top: Vec::new(),
    }
}

/// Feeds `labels` one second apart from `start`, returning the decisions.
fn run(policy: &mut PublishPolicy, start: Instant, labels: &[&str]) -> Vec<Decision> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| policy.decide(&classification(l), start + Duration::from_secs(i as u64)))
        .collect()
}

use Decision::{Heartbeat, Publish, Skip};

#[test]
fn every_mode_publishes_each_classification() {
    let mut policy = PublishPolicy::new(&PolicyConfig {
        mode: PublishMode::Every,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        run(&mut policy, Instant::now(), &["cat", "cat", "dog"]),
        [Publish, Publish, Publish]
    );
    assert_eq!(policy.published_label(), Some("dog"));
}

#[test]
fn on_change_needs_a_held_change_and_ignores_flicker() {
    let config = PolicyConfig {
        heartbeat_s: 0,
        ..Default::default()
    };
    let mut policy = PublishPolicy::new(&config).unwrap();
    let t0 = Instant::now();
    // The first stable label is a change: published once on its third sighting.
    assert_eq!(
        run(&mut policy, t0, &["cat", "cat", "cat", "cat", "cat"]),
        [Skip, Skip, Publish, Skip, Skip]
    );
    // Flicker never holds for 3 classifications.
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(
        run(
            &mut policy,
            t1,
            &[
                "dog",
                "cat",
                "dog",
                "dog",
                "cat",
                "unrecognized",
                "dog",
                "cat"
            ]
        ),
        [Skip; 8]
    );
    assert_eq!(policy.published_label(), Some("cat"));
    // A change held three times publishes once.
    let t2 = t1 + Duration::from_secs(10);
    assert_eq!(
        run(&mut policy, t2, &["dog", "dog", "dog", "dog", "dog"]),
        [Skip, Skip, Publish, Skip, Skip]
    );
    assert_eq!(policy.published_label(), Some("dog"));
}

#[test]
fn min_interval_delays_publishes() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut every = PublishPolicy::new(&PolicyConfig {
        mode: PublishMode::Every,
        min_interval_ms: 1000,
        heartbeat_s: 0,
        ..Default::default()
    })
    .unwrap();
    let decisions: Vec<Decision> = [0, 400, 999, 1000, 1500, 2100]
        .iter()
        .map(|&at| every.decide(&classification("cat"), t0 + ms(at)))
        .collect();
    assert_eq!(decisions, [Publish, Skip, Skip, Publish, Skip, Publish]);

    // on_change: a change due inside the interval is published by the next sighting after it.
    let mut change = PublishPolicy::new(&PolicyConfig {
        hold: 1,
        min_interval_ms: 1000,
        heartbeat_s: 0,
        ..Default::default()
    })
    .unwrap();
    let decisions: Vec<Decision> = [
        (0, "cat"),
        (300, "dog"),
        (600, "dog"),
        (1100, "dog"),
        (1200, "dog"),
    ]
    .iter()
    .map(|&(at, l)| change.decide(&classification(l), t0 + ms(at)))
    .collect();
    assert_eq!(decisions, [Publish, Skip, Skip, Publish, Skip]);
}

#[test]
fn heartbeat_when_nothing_was_published_for_a_while() {
    let mut policy = PublishPolicy::new(&PolicyConfig {
        hold: 1,
        heartbeat_s: 60,
        ..Default::default()
    })
    .unwrap();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let decisions: Vec<Decision> = [
        (0, "cat"),
        (30, "cat"),
        (59, "cat"),
        (60, "cat"),
        (61, "cat"),
        (100, "dog"),
        (159, "dog"),
        (160, "dog"),
    ]
    .iter()
    .map(|&(at, l)| policy.decide(&classification(l), t0 + s(at)))
    .collect();
    assert_eq!(
        decisions,
        [Publish, Skip, Skip, Heartbeat, Skip, Publish, Skip, Heartbeat]
    );

    // The heartbeat period starts at the first classification even before any publish.
    let mut quiet = PublishPolicy::new(&PolicyConfig {
        heartbeat_s: 10,
        ..Default::default()
    })
    .unwrap();
    let decisions: Vec<Decision> = [(0, "a"), (5, "b"), (10, "a"), (15, "b")]
        .iter()
        .map(|&(at, l)| quiet.decide(&classification(l), t0 + s(at)))
        .collect();
    assert_eq!(decisions, [Skip, Skip, Heartbeat, Skip]);
}

#[test]
fn heartbeat_due_for_frames_that_were_not_classified() {
    let mut policy = PublishPolicy::new(&PolicyConfig {
        hold: 1,
        heartbeat_s: 10,
        ..Default::default()
    })
    .unwrap();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    // Nothing classified yet: nothing to repeat.
    assert!(!policy.heartbeat_due(t0 + s(100)));
    assert_eq!(policy.decide(&classification("cat"), t0), Publish);
    // A static scene: frames skipped by motion gating only ask for heartbeats.
    assert!(!policy.heartbeat_due(t0 + s(9)));
    assert!(policy.heartbeat_due(t0 + s(10)));
    assert!(!policy.heartbeat_due(t0 + s(15)));
    assert!(policy.heartbeat_due(t0 + s(20)));
}

#[test]
fn reconfigure_keeps_history() {
    let mut policy = PublishPolicy::new(&PolicyConfig {
        heartbeat_s: 0,
        ..Default::default()
    })
    .unwrap();
    let t0 = Instant::now();
    assert_eq!(
        run(&mut policy, t0, &["cat", "cat", "cat", "dog", "dog"]),
        [Skip, Skip, Publish, Skip, Skip]
    );

    // Raising hold mid-streak: the two "dog" sightings still count.
    policy
        .reconfigure(&PolicyConfig {
            hold: 4,
            heartbeat_s: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(policy.config().hold, 4);
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        run(&mut policy, t1, &["dog", "dog", "dog"]),
        [Skip, Publish, Skip]
    );
    assert_eq!(policy.published_label(), Some("dog"));

    // A bad config is rejected and the old one stays in force.
    assert!(policy
        .reconfigure(&PolicyConfig {
            hold: 0,
            ..Default::default()
        })
        .is_err());
    assert_eq!(policy.config().hold, 4);

    // Switching to `every` keeps the published label; switching back does not republish it.
    policy
        .reconfigure(&PolicyConfig {
            mode: PublishMode::Every,
            heartbeat_s: 0,
            ..Default::default()
        })
        .unwrap();
    let t2 = t1 + Duration::from_secs(5);
    assert_eq!(run(&mut policy, t2, &["dog"]), [Publish]);
    policy
        .reconfigure(&PolicyConfig {
            hold: 1,
            heartbeat_s: 0,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        run(&mut policy, t2 + Duration::from_secs(1), &["dog", "cat"]),
        [Skip, Publish]
    );
}

#[test]
fn postprocessor_is_shareable_across_inference_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Postprocessor>();
    let post = std::sync::Arc::new(Postprocessor::new(&PostprocessConfig::default()).unwrap());
    let handles: Vec<_> = [TABBY, BEAGLE]
        .into_iter()
        .map(|class| {
            let post = post.clone();
            std::thread::spawn(move || post.classify(&logits_for(&[(class, 0.9)])).top[0].index)
        })
        .collect();
    let got: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, [TABBY, BEAGLE]);
}

#[test]
fn daemon_config_loader_reads_the_tables() {
    // The daemon's loader must keep keys as written (mixed case, Chinese), validating them
    // against the label files the section names.
    let text = format!(
        r#"
        [postprocess]
        groups = {groups:?}
        label_map = {label_map:?}
        [postprocess.thresholds]
        "狗" = 0.4
        "Granny Smith" = 0.7
        [publish_policy]
        mode = "every"
        heartbeat_s = 30
        [[cameras]]
        id = "door"
        source = "file:/tmp"
    "#,
        groups = shipped("groups-home.toml"),
        label_map = shipped("zh.toml"),
    );
    let daemon = edgeclass::config::Config::parse(Path::new("daemon.toml"), &text).unwrap();
    assert_eq!(
        daemon.postprocess.thresholds,
        with_thresholds(&[("Granny Smith", 0.7), ("狗", 0.4)])
    );
    assert_eq!(daemon.postprocess.top_k, 3);
    assert_eq!(daemon.publish_policy.mode, PublishMode::Every);
    assert_eq!(
        (
            daemon.publish_policy.heartbeat_s,
            daemon.publish_policy.hold
        ),
        (30, 3)
    );
}

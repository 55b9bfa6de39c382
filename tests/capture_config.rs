//! `[[cameras]]` parsing and validation: source specs, defaults, and errors that name the key.

use std::path::{Path, PathBuf};

use edgeclass::capture::{
    validate_cameras, CameraConfig, CameraId, CaptureError, CollectConfig, MotionConfig,
    PixelFormatPreference, SourceSpec, V4l2Device,
};
use edgeclass::config::{Config, ConfigError};
use edgeclass::preprocess::CropRegion;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Root {
    cameras: Vec<CameraConfig>,
}

fn parse(text: &str) -> Result<Vec<CameraConfig>, String> {
    toml::from_str::<Root>(text)
        .map(|root| root.cameras)
        .map_err(|e| e.to_string())
}

#[test]
fn source_specs_parse_into_their_kinds() {
    let cases = [
        (
            "v4l2:/dev/video0",
            SourceSpec::V4l2(V4l2Device::Path("/dev/video0".into())),
        ),
        ("v4l2:2", SourceSpec::V4l2(V4l2Device::Index(2))),
        (
            "file:/srv/demo",
            SourceSpec::File(PathBuf::from("/srv/demo")),
        ),
        (
            "file:images/cat.jpg",
            SourceSpec::File(PathBuf::from("images/cat.jpg")),
        ),
        (
            "http://10.0.0.5/snap.jpg",
            SourceSpec::Http("http://10.0.0.5/snap.jpg".into()),
        ),
        (
            "https://cam.local:8443/cgi-bin/snapshot?ch=1",
            SourceSpec::Http("https://cam.local:8443/cgi-bin/snapshot?ch=1".into()),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(text.parse::<SourceSpec>(), Ok(expected), "{text}");
    }
}

#[test]
fn bad_source_specs_say_what_is_expected() {
    for text in [
        "",
        "/dev/video0",
        "v4l2:",
        "v4l2:video0",
        "file:",
        "ftp://x/y",
        "http://",
        "rtsp://cam/stream",
    ] {
        let error = text.parse::<SourceSpec>().unwrap_err().to_string();
        assert!(error.contains(&format!("{text:?}")), "{error}");
        assert!(
            error.contains("v4l2:/dev/videoN, v4l2:N, file:PATH or http(s)://"),
            "{error}"
        );
    }
    let rtsp = "rtsp://cam/stream"
        .parse::<SourceSpec>()
        .unwrap_err()
        .to_string();
    assert!(rtsp.contains("snapshot URL"), "{rtsp}");
}

#[test]
fn passwords_are_masked_in_display_but_kept_for_serialization() {
    let spec: SourceSpec = "http://admin:hunter2@10.0.0.5/snap.jpg".parse().unwrap();
    assert_eq!(spec.to_string(), "http://admin:***@10.0.0.5/snap.jpg");
    let camera = CameraConfig {
        source: spec,
        ..parse("[[cameras]]\nid = \"a\"\nsource = \"file:x\"")
            .unwrap()
            .remove(0)
    };
    let text = toml::to_string(&camera).unwrap();
    assert!(
        text.contains("http://admin:hunter2@10.0.0.5/snap.jpg"),
        "{text}"
    );
    assert_eq!(toml::from_str::<CameraConfig>(&text).unwrap(), camera);
}

#[test]
fn minimal_camera_gets_documented_defaults() {
    let cameras = parse("[[cameras]]\nid = \"door\"\nsource = \"v4l2:0\"\n").unwrap();
    let camera = &cameras[0];
    assert_eq!(camera.interval_ms, 1000);
    assert_eq!(camera.timeout_ms, 5000);
    assert_eq!(
        (camera.width, camera.height, camera.fps),
        (None, None, None)
    );
    assert_eq!(camera.pixel_format, PixelFormatPreference::Auto);
    assert_eq!(camera.display_name(), "door");
    assert_eq!(
        camera.motion,
        MotionConfig {
            enabled: true,
            cell_threshold: 0.06,
            min_area: 0.003,
            mask: Vec::new(),
            max_skip_s: 60,
            idle_fps: 5.0,
            threshold: None,
        }
    );
    assert_eq!(camera.crop, None);
    // As documented in configs/edgeclass.toml.
    assert_eq!(
        camera.collect,
        CollectConfig {
            enabled: false,
            dir: None,
            every_s: 10,
            max_files: 1000,
            max_bytes: 268_435_456,
            min_change: 0.02,
        }
    );
    validate_cameras(&cameras).unwrap();
}

#[test]
fn full_camera_parses_every_key() {
    let text = r#"
[[cameras]]
id = "garage"
name = "Garage door"
source = "v4l2:/dev/video2"
interval_ms = 500
width = 1280
height = 720
fps = 10
pixel_format = "yuyv"
crop = [0.25, 0, 0.5, 1]

[cameras.motion]
enabled = false
cell_threshold = 0.1
min_area = 0.01
mask = [[0, 0, 0.25, 0.5], [0.75, 0, 0.25, 1]]
max_skip_s = 0
idle_fps = 0.5

[cameras.collect]
enabled = true
dir = "/srv/frames/garage"
every_s = 0
max_files = 5
max_bytes = 1000000
min_change = 0.1

[[cameras]]
id = "porch"
source = "https://cam.local/snap.jpg"
timeout_ms = 2000
"#;
    let cameras = parse(text).unwrap();
    assert_eq!(cameras.len(), 2);
    let garage = &cameras[0];
    assert_eq!(garage.display_name(), "Garage door");
    assert_eq!(garage.interval_ms, 500);
    assert_eq!(
        (garage.width, garage.height, garage.fps),
        (Some(1280), Some(720), Some(10))
    );
    assert_eq!(garage.pixel_format, PixelFormatPreference::Yuyv);
    assert_eq!(
        garage.motion,
        MotionConfig {
            enabled: false,
            cell_threshold: 0.1,
            min_area: 0.01,
            mask: vec![
                CropRegion::new(0.0, 0.0, 0.25, 0.5).unwrap(),
                CropRegion::new(0.75, 0.0, 0.25, 1.0).unwrap(),
            ],
            max_skip_s: 0,
            idle_fps: 0.5,
            threshold: None,
        }
    );
    assert_eq!(garage.motion.deprecation(), None);
    assert_eq!(
        garage.crop,
        Some(CropRegion::new(0.25, 0.0, 0.5, 1.0).unwrap())
    );
    assert_eq!(
        garage.collect,
        CollectConfig {
            enabled: true,
            dir: Some(PathBuf::from("/srv/frames/garage")),
            every_s: 0,
            max_files: 5,
            max_bytes: 1_000_000,
            min_change: 0.1,
        }
    );
    assert_eq!(cameras[1].timeout_ms, 2000);
    assert_eq!(cameras[1].crop, None);
    assert!(!cameras[1].collect.enabled);
    validate_cameras(&cameras).unwrap();
}

#[test]
fn serde_errors_name_the_problem() {
    let unknown = parse("[[cameras]]\nid = \"a\"\nsource = \"v4l2:0\"\nfsp = 5\n").unwrap_err();
    assert!(unknown.contains("fsp"), "{unknown}");
    let motion =
        parse("[[cameras]]\nid = \"a\"\nsource = \"v4l2:0\"\n[cameras.motion]\nthreshhold = 0.1\n")
            .unwrap_err();
    assert!(motion.contains("threshhold"), "{motion}");
    let format = parse("[[cameras]]\nid = \"a\"\nsource = \"v4l2:0\"\npixel_format = \"h264\"\n")
        .unwrap_err();
    assert!(
        format.contains("h264") && format.contains("mjpeg"),
        "{format}"
    );
    let source = parse("[[cameras]]\nid = \"a\"\nsource = \"webcam\"\n").unwrap_err();
    assert!(
        source.contains("source") && source.contains("v4l2:N"),
        "{source}"
    );
    let missing = parse("[[cameras]]\nid = \"a\"\n").unwrap_err();
    assert!(missing.contains("source"), "{missing}");
}

fn config_error(text: &str) -> (String, String) {
    match validate_cameras(&parse(text).unwrap()) {
        Err(CaptureError::Config { key, message }) => (key, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn validation_names_the_key() {
    let cases = [
        (
            "id = \"a\"\nsource = \"v4l2:0\"\ninterval_ms = 0",
            "cameras[0].interval_ms",
            "outside 1..=86400000",
        ),
        (
            "id = \"a\"\nsource = \"http://x/y\"\ntimeout_ms = 0",
            "cameras[0].timeout_ms",
            "outside 1..=",
        ),
        (
            "id = \"a\"\nsource = \"file:x\"\nwidth = 640\nheight = 480",
            "cameras[0].width",
            "only to v4l2",
        ),
        (
            "id = \"a\"\nsource = \"http://x/y\"\npixel_format = \"mjpeg\"",
            "cameras[0].pixel_format",
            "only to v4l2",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\nwidth = 640",
            "cameras[0].width",
            "together",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\nfps = 0",
            "cameras[0].fps",
            "at least 1",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.motion]\ncell_threshold = 0",
            "cameras[0].motion.cell_threshold",
            "(0, 1]",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.motion]\nidle_fps = 0.05",
            "cameras[0].motion.idle_fps",
            "neither 0 (look at every frame) nor within 0.1..=1000",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.motion]\nidle_fps = -1",
            "cameras[0].motion.idle_fps",
            "-1 is neither 0",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.motion]\nmin_area = 1.5",
            "cameras[0].motion.min_area",
            "(0, 1]",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.motion]\nmask = [[0, 0, 0.5, 1], [0.5, 0, 0.5, 1]]",
            "cameras[0].motion.mask",
            "whole watched image",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.collect]\nmin_change = -0.1",
            "cameras[0].collect.min_change",
            "[0, 1]",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.collect]\nmax_files = 0",
            "cameras[0].collect.max_files",
            "at least 1",
        ),
        (
            "id = \"a\"\nsource = \"v4l2:0\"\n[cameras.collect]\nmax_bytes = 0",
            "cameras[0].collect.max_bytes",
            "at least 1",
        ),
    ];
    for (body, key, fragment) in cases {
        let (got_key, message) = config_error(&format!("[[cameras]]\n{body}\n"));
        assert_eq!(got_key, key, "{body}");
        assert!(message.contains(fragment), "{body}: {message}");
    }
    let (key, message) = config_error(
        "[[cameras]]\nid = \"a\"\nsource = \"v4l2:0\"\n[[cameras]]\nid = \"a\"\nsource = \"v4l2:1\"\n",
    );
    assert_eq!(key, "cameras[1].id");
    assert!(message.contains("earlier camera"), "{message}");
}

/// Ids are checked once, when a [`CameraId`] is made: the config loader names the key.
#[test]
fn camera_ids_are_topic_levels() {
    for good in ["door", "Front_Door-2"] {
        assert_eq!(good.parse::<CameraId>().unwrap().as_str(), good);
    }
    for bad in ["", "front door", "a/b", "a+", "#", "bad\0id", "tür"] {
        let error = bad.parse::<CameraId>().unwrap_err().to_string();
        assert!(
            error.contains(&format!("{bad:?}")) && error.contains("MQTT"),
            "{error}"
        );
    }
    for id in ["front door", ""] {
        let text = format!("[[cameras]]\nid = {id:?}\nsource = \"v4l2:0\"\n");
        match Config::parse(Path::new("cameras.toml"), &text) {
            Err(ConfigError::Key { key, message, .. }) => {
                assert_eq!(key, "cameras[0].id");
                assert!(message.contains("MQTT"), "{message}");
            }
            other => panic!("expected a key error, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_crop_is_a_config_error_naming_the_key_and_the_file() {
    let cases = [
        ("[0.5, 0, 0.6, 1]", "x + w = 1.1 is beyond the frame"),
        ("[0, 0.5, 1, 0.75]", "y + h = 1.25 is beyond the frame"),
        ("[0, 0, 0, 1]", "w must be above 0"),
        ("[-0.25, 0, 0.5, 1]", "x = -0.25 is outside 0..=1"),
        ("[0, 0, 1, nan]", "h = NaN is outside 0..=1"),
        ("[0, 0, 1]", "length 3"),
        ("\"left half\"", "array"),
    ];
    for (value, problem) in cases {
        let text = format!("[[cameras]]\nid = \"door\"\nsource = \"v4l2:0\"\ncrop = {value}\n");
        let error = Config::parse(Path::new("/etc/edgeclass/cameras.toml"), &text).unwrap_err();
        assert_eq!(error.sysexit(), edgeclass::sysexits::Sysexit::Config);
        let ConfigError::Key { key, message, .. } = &error else {
            panic!("{value}: expected a key error, got {error:?}");
        };
        assert_eq!(key, "cameras[0].crop", "{value}");
        assert!(message.contains(problem), "{value}: {message}");
        let text = error.to_string();
        assert!(
            text.contains("/etc/edgeclass/cameras.toml") && text.contains("cameras[0].crop"),
            "{text}"
        );
    }
}

#[test]
fn config_errors_exit_with_the_config_code() {
    let error = validate_cameras(
        &parse("[[cameras]]\nid = \"a\"\nsource = \"v4l2:0\"\ninterval_ms = 0\n").unwrap(),
    )
    .unwrap_err();
    assert_eq!(error.sysexit(), edgeclass::sysexits::Sysexit::Config);
}

/// Configs written for the whole-frame gate still load: `threshold` is kept aside, ignored by
/// the gate, and reported with what to use instead.
#[test]
fn the_old_motion_threshold_loads_with_a_deprecation() {
    let cameras =
        parse("[[cameras]]\nid = \"a\"\nsource = \"v4l2:0\"\n[cameras.motion]\nthreshold = 0.02\n")
            .unwrap();
    validate_cameras(&cameras).unwrap();
    let motion = &cameras[0].motion;
    assert_eq!(motion.threshold, Some(0.02));
    assert_eq!(
        motion.cell_threshold,
        MotionConfig::default().cell_threshold
    );
    let deprecation = motion.deprecation().expect("a deprecation");
    assert!(
        deprecation.contains("motion.threshold is ignored")
            && deprecation.contains("motion.cell_threshold")
            && deprecation.contains("motion.min_area"),
        "{deprecation}"
    );
}

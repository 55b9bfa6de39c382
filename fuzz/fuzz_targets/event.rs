//! The JSON of `<prefix>/<camera>/event` (and `state`) from any camera id, labels, scores,
//! numbers and capture time: it parses back as JSON with the same values (non-finite scores
//! become `null`), or, for a capture time outside 1970..=9999, serializing fails with an error
//! the publisher counts; never a panic.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use edgeclass::capture::CameraId;
use edgeclass::postprocess::Prediction;
use edgeclass::publish::Event;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Debug, Arbitrary)]
struct Input {
    camera: String,
    seq: u64,
    /// Milliseconds from the epoch (negative: before it, as a clock without RTC may report).
    ts_ms: i64,
    frame: u64,
    label: String,
    score: f32,
    unknown: bool,
    top3: Vec<(String, String, usize, String, f32)>,
    model: String,
    latency_ms: f32,
    heartbeat: bool,
}

/// Whether `json` carries `value`: the same f32, or `null` for a non-finite one.
fn same_score(json: &Value, value: f32) -> bool {
    match json.as_f64() {
        Some(v) => value.is_finite() && v as f32 == value,
        None => json.is_null() && !value.is_finite(),
    }
}

fuzz_target!(|input: Input| {
    let Ok(camera) = input.camera.parse::<CameraId>() else {
        return;
    };
    let ts = match u64::try_from(input.ts_ms) {
        Ok(ms) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
        Err(_) => {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_millis(input.ts_ms.unsigned_abs()))
        }
    };
    let Some(ts) = ts else { return };
    let top3: Vec<Prediction> = input
        .top3
        .into_iter()
        .take(3)
        .map(|(label, raw_label, index, wnid, score)| Prediction {
            label,
            raw_label,
            index,
            wnid,
            score,
        })
        .collect();
    let event = Event {
        camera,
        seq: input.seq,
        ts,
        frame: input.frame,
        label: input.label,
        score: input.score,
        unknown: input.unknown,
        top3,
        model: input.model,
        latency_ms: input.latency_ms,
        heartbeat: input.heartbeat,
    };
    // RFC 3339 covers the years 1970 to 9999; other capture times are errors.
    let in_range = event
        .ts
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(false, |since| since < Duration::from_secs(253_402_300_800));
    let json = match serde_json::to_vec(&event) {
        Ok(json) => json,
        Err(e) => {
            assert!(!in_range, "{e}");
            return;
        }
    };
    let back: Value = serde_json::from_slice(&json).expect("the event's JSON parses");
    assert_eq!(back["camera"], event.camera.as_str());
    assert_eq!(back["seq"], event.seq);
    assert_eq!(back["frame"], event.frame);
    assert_eq!(back["label"], event.label.as_str());
    assert!(same_score(&back["score"], event.score), "{}", back["score"]);
    assert_eq!(back["unknown"], event.unknown);
    assert_eq!(back["model"], event.model.as_str());
    assert!(same_score(&back["latency_ms"], event.latency_ms));
    assert_eq!(back["heartbeat"], event.heartbeat);
    let ts = back["ts"].as_str().expect("ts is a string");
    let parsed = humantime::parse_rfc3339(ts).expect("ts is RFC 3339");
    let millis = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
    };
    assert_eq!(millis(parsed).ok(), millis(event.ts).ok(), "{ts}");
    let top3 = back["top3"].as_array().expect("top3 is an array");
    assert_eq!(top3.len(), event.top3.len());
    for (json, prediction) in top3.iter().zip(&event.top3) {
        assert_eq!(json["label"], prediction.label.as_str());
        assert_eq!(json["raw_label"], prediction.raw_label.as_str());
        assert_eq!(json["index"], prediction.index);
        assert!(same_score(&json["score"], prediction.score));
        match prediction.wnid.as_str() {
            "" => assert!(json.get("wnid").is_none()),
            wnid => assert_eq!(json["wnid"], wnid),
        }
    }
});

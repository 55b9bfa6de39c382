//! The JSON payload of `<prefix>/<camera>/event`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::ser::Error as _;
use serde::{Serialize, Serializer};

use crate::capture::CameraId;
use crate::postprocess::Prediction;

/// One classification of one frame, as published on `<prefix>/<camera>/event`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Camera id (also the topic level).
    pub camera: CameraId,
    /// Per-camera event number, assigned by [`super::Publisher::event`] (the value passed in is
    /// replaced): consecutive from 1 per publisher, so a gap means lost events.
    pub seq: u64,
    /// Capture time, serialized as RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    /// Frame number from the camera.
    pub frame: u64,
    /// Top-1 label after label mapping, or the unknown label.
    pub label: String,
    /// Top-1 score (0..1).
    pub score: f32,
    /// True when the top-1 score was below the threshold.
    pub unknown: bool,
    /// Best three predictions, best first.
    pub top3: Vec<Prediction>,
    /// Model name (and quantization).
    pub model: String,
    /// Preprocess + inference + postprocess time in milliseconds.
    pub latency_ms: f32,
    /// True when this repeats the last classification as a sign of life (the scene did not
    /// change, or the publish policy's heartbeat interval passed).
    pub heartbeat: bool,
}

/// The first second RFC 3339 cannot write (year 10000).
const YEAR_10000: Duration = Duration::from_secs(253_402_300_800);

/// A capture time outside 1970..=9999 (a clock gone wrong) is an error, which the publisher counts
/// and logs, rather than the formatter's panic (found by `fuzz/fuzz_targets/event.rs`).
fn rfc3339<S: Serializer>(ts: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    match ts.duration_since(UNIX_EPOCH) {
        Ok(since) if since < YEAR_10000 => {
            serializer.collect_str(&humantime::format_rfc3339_millis(*ts))
        }
        _ => Err(S::Error::custom(format!(
            "capture time {ts:?} is outside the years 1970 to 9999"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_rfc3339_timestamp_and_all_fields() {
        let event = Event {
            camera: "door".parse().unwrap(),
            seq: 7,
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            frame: 42,
            label: "cat".into(),
            score: 0.5,
            unknown: false,
            top3: vec![Prediction {
                label: "cat".into(),
                raw_label: "tabby".into(),
                index: 281,
                wnid: "n02123045".into(),
                score: 0.5,
            }],
            model: "resnet18-q8".into(),
            latency_ms: 12.5,
            heartbeat: false,
        };
        let last = UNIX_EPOCH + YEAR_10000 - Duration::from_millis(1);
        let json = serde_json::to_value(Event {
            ts: last,
            ..event.clone()
        })
        .unwrap();
        assert_eq!(json["ts"], "9999-12-31T23:59:59.999Z");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["seq"], 7);
        assert_eq!(json["top3"][0]["wnid"], "n02123045");
        assert_eq!(json["top3"][0]["index"], 281);
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 11, "{keys:?}");
        assert_eq!(json["heartbeat"], false);
    }

    /// Capture times fuzzing found panicking the serializer (before 1970, after 9999): errors.
    #[test]
    fn out_of_range_capture_times_are_errors() {
        let event = |ts| Event {
            camera: "door".parse().unwrap(),
            seq: 1,
            ts,
            frame: 0,
            label: String::new(),
            score: 0.0,
            unknown: true,
            top3: Vec::new(),
            model: String::new(),
            latency_ms: 0.0,
            heartbeat: false,
        };
        for ts in [
            UNIX_EPOCH - Duration::from_millis(1),
            UNIX_EPOCH + YEAR_10000,
            // The input `fuzz/run.sh` found: 10737834481281513 ms after the epoch.
            UNIX_EPOCH + Duration::from_millis(10_737_834_481_281_513),
        ] {
            let err = serde_json::to_vec(&event(ts)).unwrap_err().to_string();
            assert!(err.contains("outside the years 1970 to 9999"), "{err}");
        }
    }
}

//! What the web page shows of each camera, written by the daemon's threads and read by the
//! web server: counters, the latest frame and events, and a broadcast of live updates.
//!
//! Writing costs the pipeline little and nothing scales with the number of browsers: a frame
//! is moved (not copied) into its camera's slot, counters are atomics, the latest event
//! replaces the previous one, and a live update is serialized only while someone listens.
//!
//! Recent scores (for the Thresholds page) are recorded only while *armed*: a Thresholds
//! request ([`Board::arm_recording`]) arms recording for [`RECORDING_ARMED_FOR`] from the
//! request (emptying the rings first when it was off), so the histograms fill while someone
//! works on the page. Unarmed, a classification costs one relaxed atomic load; armed, its top-1 is copied
//! into a fixed ring per camera and classifier (strings reused once the ring is full). The
//! first classification after the time is up disarms it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::capture::{CameraId, Frame, FrameSlot};
use crate::postprocess::Classification;
use crate::publish::Event;

/// How many live updates a slow browser may fall behind before it skips some.
const LIVE_BACKLOG: usize = 64;

/// How many recent classifications each camera keeps per classifier for the Thresholds page.
pub const RECENT_SCORES: usize = 240;

/// How long recent scores are recorded after the last Thresholds request.
pub const RECORDING_ARMED_FOR: Duration = Duration::from_secs(600);

/// One classified frame's top-1 before its threshold, for previewing thresholds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentScore {
    /// The top-1 output label (mapped, or the group's), whatever its score.
    pub label: String,
    /// Its score.
    pub score: f32,
    /// When it was classified, in milliseconds since the Unix epoch.
    pub ts_ms: u64,
}

/// The last [`RECENT_SCORES`] classifications of a camera, oldest overwritten first.
#[derive(Default)]
struct Ring {
    entries: Vec<RecentScore>,
    /// Where the next entry goes once the ring is full.
    next: usize,
    /// Classifications recorded since the ring was emptied (also those overwritten).
    seen: u64,
}

impl Ring {
    fn record(&mut self, label: &str, score: f32, ts_ms: u64) {
        self.seen += 1;
        if self.entries.len() < RECENT_SCORES {
            self.entries.push(RecentScore {
                label: label.to_string(),
                score,
                ts_ms,
            });
            return;
        }
        // Reuses the entry's string: no allocation once the ring is full.
        let entry = &mut self.entries[self.next];
        entry.label.clear();
        entry.label.push_str(label);
        entry.score = score;
        entry.ts_ms = ts_ms;
        self.next = (self.next + 1) % RECENT_SCORES;
    }

    /// Newest first.
    fn newest_first(&self) -> Vec<RecentScore> {
        let (older, newer) = self.entries.split_at(self.next.min(self.entries.len()));
        newer.iter().chain(older).rev().cloned().collect()
    }
}

/// Every camera's [`CameraWatch`], and the live update channel.
pub struct Board {
    cameras: BTreeMap<String, Arc<CameraWatch>>,
    live: broadcast::Sender<Arc<str>>,
    recording: Arc<Recording>,
}

/// Whether recent scores are recorded, shared by the board and its cameras.
#[derive(Default)]
struct Recording {
    /// Until when (milliseconds since the Unix epoch) classifications are recorded; 0: not.
    armed_until_ms: AtomicU64,
    /// When recording was armed after being off, i.e. since when the rings hold frames.
    since_ms: AtomicU64,
}

/// What [`Board::arm_recording`] armed: recent scores are from `since_ms` on, and are recorded
/// until `until_ms` (milliseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordingWindow {
    /// Since when the recent scores were recorded.
    pub since_ms: u64,
    /// Until when recording stays armed without another request.
    pub until_ms: u64,
}

/// A camera's recent scores of one classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentScores {
    /// Classifications recorded since recording was armed (more than `scores` once the ring
    /// overwrote some).
    pub seen: u64,
    /// The last at most [`RECENT_SCORES`], newest first.
    pub scores: Vec<RecentScore>,
}

/// One camera, as the web page sees it.
pub struct CameraWatch {
    id: CameraId,
    /// The slot between the camera and its pipeline: frames captured and dropped.
    slot: Arc<FrameSlot>,
    online: AtomicBool,
    processed: AtomicU64,
    /// Preprocess + inference + postprocess of classified frames, in seconds.
    pub(super) latency: Histogram,
    latest_frame: Mutex<Option<Frame>>,
    /// The last event of each classifier: `None` is ImageNet's, `Some(name)` a head's.
    latest_events: Mutex<BTreeMap<Option<String>, Event>>,
    /// Each classifier's recent top-1 scores (`None`: ImageNet's), while recording is armed.
    recent: Mutex<Vec<(Option<String>, Ring)>>,
    recording: Arc<Recording>,
    live: broadcast::Sender<Arc<str>>,
}

/// One live update: an event of a camera (`head` is absent for the ImageNet classifier).
#[derive(Serialize)]
struct LiveEvent<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<&'a str>,
    event: &'a Event,
}

/// One live update: a camera went online or offline.
#[derive(Serialize)]
struct LiveAvailability<'a> {
    kind: &'static str,
    camera: &'a CameraId,
    online: bool,
}

impl Board {
    /// A board for the cameras with these slots, all offline until they deliver.
    pub fn new<'a>(cameras: impl IntoIterator<Item = (&'a CameraId, &'a Arc<FrameSlot>)>) -> Self {
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        let recording = Arc::new(Recording::default());
        let cameras = cameras
            .into_iter()
            .map(|(id, slot)| {
                let watch = CameraWatch {
                    id: id.clone(),
                    slot: slot.clone(),
                    online: AtomicBool::new(false),
                    processed: AtomicU64::new(0),
                    latency: Histogram::new(LATENCY_BUCKETS.iter().copied()),
                    latest_frame: Mutex::new(None),
                    latest_events: Mutex::new(BTreeMap::new()),
                    recent: Mutex::new(Vec::new()),
                    recording: recording.clone(),
                    live: live.clone(),
                };
                (id.to_string(), Arc::new(watch))
            })
            .collect();
        Self {
            cameras,
            live,
            recording,
        }
    }

    /// Records recent scores from now until [`RECORDING_ARMED_FOR`] from now; when recording
    /// was off (or its time was up), empties every ring first, so they hold only frames from
    /// the returned `since_ms` on.
    pub fn arm_recording(&self) -> RecordingWindow {
        let now = now_ms();
        let until_ms = now.saturating_add(RECORDING_ARMED_FOR.as_millis() as u64);
        let previous = self
            .recording
            .armed_until_ms
            .swap(until_ms, Ordering::Relaxed);
        if previous < now {
            for camera in self.cameras.values() {
                lock(&camera.recent).clear();
            }
            self.recording.since_ms.store(now, Ordering::Relaxed);
        }
        RecordingWindow {
            since_ms: self.recording.since_ms.load(Ordering::Relaxed),
            until_ms,
        }
    }

    /// The camera `id`'s watch, if there is such a camera.
    pub fn camera(&self, id: &str) -> Option<&Arc<CameraWatch>> {
        self.cameras.get(id)
    }

    /// Every camera, by id.
    pub fn cameras(&self) -> impl Iterator<Item = &Arc<CameraWatch>> {
        self.cameras.values()
    }

    /// A receiver of the live updates (JSON texts) from now on.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.live.subscribe()
    }
}

/// Latency buckets in seconds: a Pi's int8 ResNet-18 takes tens to hundreds of milliseconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0,
];

impl CameraWatch {
    /// The camera's id.
    pub fn id(&self) -> &CameraId {
        &self.id
    }

    /// Records a frame the pipeline is done with (moved in: the previous one is dropped), and
    /// its classification latency when it was classified.
    pub fn frame_done(&self, frame: Frame, latency_ms: Option<f32>) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        if let Some(ms) = latency_ms {
            self.latency.observe(f64::from(ms) / 1e3);
        }
        *lock(&self.latest_frame) = Some(frame);
    }

    /// Records a classification of a frame by the ImageNet classifier (`head` `None`) or a
    /// head (its top-1, before the threshold) in the classifier's ring of recent scores, while
    /// recording is armed; otherwise costs one relaxed atomic load.
    pub fn classified(&self, head: Option<&str>, classification: &Classification) {
        let armed_until_ms = self.recording.armed_until_ms.load(Ordering::Relaxed);
        if armed_until_ms == 0 {
            return;
        }
        let ts_ms = now_ms();
        if ts_ms > armed_until_ms {
            // A request that re-armed it meanwhile wins.
            let _ = self.recording.armed_until_ms.compare_exchange(
                armed_until_ms,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        let Some(best) = classification.top.first() else {
            return;
        };
        let mut rings = lock(&self.recent);
        match rings.iter_mut().find(|(name, _)| name.as_deref() == head) {
            Some((_, ring)) => ring.record(&best.label, best.score, ts_ms),
            None => {
                let mut ring = Ring::default();
                ring.record(&best.label, best.score, ts_ms);
                rings.push((head.map(str::to_string), ring));
            }
        }
    }

    /// The classifier's (`None`: ImageNet's) recorded classifications: how many, and the last
    /// at most [`RECENT_SCORES`] top-1 scores, newest first.
    pub fn recent_scores(&self, head: Option<&str>) -> RecentScores {
        let rings = lock(&self.recent);
        match rings.iter().find(|(name, _)| name.as_deref() == head) {
            Some((_, ring)) => RecentScores {
                seen: ring.seen,
                scores: ring.newest_first(),
            },
            None => RecentScores {
                seen: 0,
                scores: Vec::new(),
            },
        }
    }

    /// Records an event as published (a heartbeat only refreshes it); tells live browsers.
    pub fn event(&self, head: Option<&str>, event: &Event) {
        lock(&self.latest_events).insert(head.map(str::to_string), event.clone());
        self.send_live(|| {
            serde_json::to_string(&LiveEvent {
                kind: "event",
                head,
                event,
            })
        });
    }

    /// Records whether the camera delivers frames; tells live browsers.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
        self.send_live(|| {
            serde_json::to_string(&LiveAvailability {
                kind: "availability",
                camera: &self.id,
                online,
            })
        });
    }

    /// Whether the camera delivers frames.
    pub fn online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Frames the pipeline has finished.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Frames captured (handed to the pipeline, replaced by a newer one, or not wanted by the
    /// idle motion gate) and frames dropped (replaced before the pipeline took them).
    pub fn captured_and_dropped(&self) -> (u64, u64) {
        let stats = self.slot.stats();
        (
            stats.delivered + stats.dropped + stats.unwanted,
            stats.dropped,
        )
    }

    /// The last event of each classifier (`None`: ImageNet's; `Some(head)`).
    pub fn latest_events(&self) -> BTreeMap<Option<String>, Event> {
        lock(&self.latest_events).clone()
    }

    /// Calls `read` with the latest processed frame, if there is one.
    pub fn with_latest_frame<T>(&self, read: impl FnOnce(&Frame) -> T) -> Option<T> {
        lock(&self.latest_frame).as_ref().map(read)
    }

    /// Serializes and sends a live update only while a browser listens.
    fn send_live(&self, json: impl FnOnce() -> serde_json::Result<String>) {
        if self.live.receiver_count() == 0 {
            return;
        }
        if let Ok(text) = json() {
            // No receiver left in between: nobody missed it.
            let _ = self.live.send(text.into());
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A poisoned lock only means a thread panicked while replacing a value; the value is whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn event(camera: &CameraId, label: &str) -> Event {
        Event {
            camera: camera.clone(),
            seq: 1,
            ts: SystemTime::now(),
            frame: 3,
            label: label.into(),
            score: 0.9,
            unknown: false,
            top3: Vec::new(),
            model: "m".into(),
            latency_ms: 12.0,
            heartbeat: false,
        }
    }

    #[test]
    fn live_updates_reach_listeners_and_cost_nothing_without_them() {
        let id: CameraId = "door".parse().unwrap();
        let slot = Arc::new(FrameSlot::new());
        let board = Board::new([(&id, &slot)]);
        let watch = board.camera("door").unwrap();
        // Without a listener nothing is sent (and nothing serialized).
        watch.event(None, &event(&id, "cat"));
        let mut live = board.subscribe();
        watch.event(Some("garage"), &event(&id, "open"));
        watch.set_online(true);
        let first: serde_json::Value = serde_json::from_str(&live.try_recv().unwrap()).unwrap();
        assert_eq!(first["kind"], "event");
        assert_eq!(first["head"], "garage");
        assert_eq!(first["event"]["label"], "open");
        let second: serde_json::Value = serde_json::from_str(&live.try_recv().unwrap()).unwrap();
        assert_eq!(
            (second["kind"].as_str(), second["online"].as_bool()),
            (Some("availability"), Some(true))
        );
        assert!(live.try_recv().is_err());
        let latest = watch.latest_events();
        assert_eq!(latest[&None].label, "cat");
        assert_eq!(latest[&Some("garage".to_string())].label, "open");
    }

    #[test]
    fn the_ring_keeps_the_newest_scores_in_fixed_room() {
        let mut ring = Ring::default();
        for n in 0..RECENT_SCORES + 5 {
            ring.record(if n % 2 == 0 { "cat" } else { "dog" }, n as f32, n as u64);
        }
        let recent = ring.newest_first();
        assert_eq!(recent.len(), RECENT_SCORES);
        assert_eq!(recent[0].ts_ms, (RECENT_SCORES + 4) as u64);
        assert_eq!(recent[0].label, "cat");
        assert_eq!(recent[RECENT_SCORES - 1].ts_ms, 5);
        assert!(recent.windows(2).all(|w| w[0].ts_ms == w[1].ts_ms + 1));
    }

    fn classification(label: &str, score: f32) -> Classification {
        Classification {
            label: label.into(),
            score,
            unknown: false,
            top: vec![crate::postprocess::Prediction {
                label: label.into(),
                raw_label: label.into(),
                index: 0,
                wnid: String::new(),
                score,
            }],
        }
    }

    #[test]
    fn recent_scores_are_recorded_only_while_armed_and_per_classifier() {
        let id: CameraId = "door".parse().unwrap();
        let slot = Arc::new(FrameSlot::new());
        let board = Board::new([(&id, &slot)]);
        let watch = board.camera("door").unwrap();
        for _ in 0..5 {
            watch.classified(None, &classification("cat", 0.5));
        }
        assert_eq!(
            watch.recent_scores(None).seen,
            0,
            "recorded while not armed"
        );
        let window = board.arm_recording();
        assert!(window.until_ms >= window.since_ms + 600_000);
        watch.classified(None, &classification("dog", 0.4));
        watch.classified(Some("garage"), &classification("open", 0.9));
        watch.classified(None, &classification("cat", 0.7));
        let imagenet = watch.recent_scores(None);
        assert_eq!(imagenet.seen, 2);
        let labels: Vec<_> = imagenet.scores.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["cat", "dog"]);
        assert_eq!(watch.recent_scores(Some("garage")).scores[0].label, "open");
        // Re-armed while armed: the rings keep what they hold, from the same start.
        assert_eq!(board.arm_recording().since_ms, window.since_ms);
        assert_eq!(watch.recent_scores(None).seen, 2);
        // The time is up: the next classification disarms, and nothing more is recorded.
        board.recording.armed_until_ms.store(1, Ordering::Relaxed);
        watch.classified(None, &classification("cat", 0.7));
        assert_eq!(board.recording.armed_until_ms.load(Ordering::Relaxed), 0);
        watch.classified(None, &classification("cat", 0.7));
        assert_eq!(watch.recent_scores(None).seen, 2);
        // Armed again after being off: the rings start empty.
        board.arm_recording();
        assert_eq!(watch.recent_scores(None).seen, 0);
        assert!(watch.recent_scores(Some("garage")).scores.is_empty());
    }

    #[test]
    fn the_latest_frame_replaces_the_previous_and_counts() {
        let id: CameraId = "door".parse().unwrap();
        let slot = Arc::new(FrameSlot::new());
        let board = Board::new([(&id, &slot)]);
        let watch = board.camera("door").unwrap();
        assert_eq!(watch.with_latest_frame(|f| f.data.len()), None);
        watch.frame_done(Frame::encoded(vec![1, 2], "a".into()), Some(5.0));
        watch.frame_done(Frame::encoded(vec![1, 2, 3], "b".into()), None);
        assert_eq!(watch.with_latest_frame(|f| f.data.len()), Some(3));
        assert_eq!(watch.processed(), 2);
        assert!(board.camera("../etc").is_none());
    }
}

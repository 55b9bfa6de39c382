//! What the web page shows of each camera, written by the daemon's threads and read by the
//! web server: counters, the latest frame and events, and a broadcast of live updates.
//!
//! Writing costs the pipeline little and nothing scales with the number of browsers: a frame
//! is moved (not copied) into its camera's slot, counters are atomics, the latest event
//! replaces the previous one, a classification's top-1 is copied into a fixed ring of recent
//! scores (its strings reused once the ring is full), and a live update is serialized only
//! while someone listens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::capture::{CameraId, Frame, FrameSlot};
use crate::postprocess::Classification;
use crate::publish::Event;

/// How many live updates a slow browser may fall behind before it skips some.
const LIVE_BACKLOG: usize = 64;

/// How many recent classifications each camera keeps for the Thresholds page.
pub const RECENT_SCORES: usize = 240;

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
}

impl Ring {
    fn record(&mut self, label: &str, score: f32, ts_ms: u64) {
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
    /// The ImageNet classifier's recent top-1 scores.
    recent: Mutex<Ring>,
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
                    recent: Mutex::new(Ring::default()),
                    live: live.clone(),
                };
                (id.to_string(), Arc::new(watch))
            })
            .collect();
        Self { cameras, live }
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

    /// Records the ImageNet classifier's classification of a frame (its top-1, before the
    /// threshold) in the ring of recent scores.
    pub fn classified(&self, classification: &Classification) {
        let Some(best) = classification.top.first() else {
            return;
        };
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        lock(&self.recent).record(&best.label, best.score, ts_ms);
    }

    /// The recent classifications' top-1 scores, newest first (at most [`RECENT_SCORES`]).
    pub fn recent_scores(&self) -> Vec<RecentScore> {
        lock(&self.recent).newest_first()
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

    /// Frames captured (handed to the pipeline or replaced by a newer one) and frames dropped
    /// (replaced before the pipeline took them).
    pub fn captured_and_dropped(&self) -> (u64, u64) {
        let stats = self.slot.stats();
        (stats.delivered + stats.dropped, stats.dropped)
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

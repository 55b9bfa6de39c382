use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{validate_cameras, CameraConfig, CameraId, CaptureError, Frame, FrameSlot, SourceSpec};
use crate::heartbeat::Heartbeat;
use crate::shutdown::Shutdown;

/// A camera's availability changed; sent once per transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraEvent {
    /// The camera delivered its first frame since start or since an outage. Carries the camera id.
    Online(CameraId),
    /// The camera failed; it is retried with backoff until it recovers.
    Offline {
        /// The camera that failed.
        camera: CameraId,
        /// The error that took it offline.
        reason: String,
    },
}

/// A frame source, driven by the camera thread that created it (a V4L2 stream stays on the thread that opened it).
/// Sources (re)open their device or connection lazily inside `next_frame`, so a failure only
/// costs one call.
pub(super) trait FrameSource {
    /// The next frame, captured no earlier than `due`; `Ok(None)` once `cancel` is set.
    fn next_frame(&mut self, due: Instant, cancel: &Cancel) -> Result<Option<Frame>, CaptureError>;
}

/// Tells a camera thread to stop: the daemon's shutdown, or the slot being closed.
pub(super) struct Cancel {
    shutdown: Shutdown,
    slot: Arc<FrameSlot>,
}

impl Cancel {
    pub(super) fn is_set(&self) -> bool {
        self.shutdown.is_triggered() || self.slot.is_closed()
    }

    /// Sleeps until `deadline`; returns `true` if cancelled meanwhile. Shutdown wakes the sleep
    /// at once; a closed slot (which has no way to wake it) is noticed when it ends.
    pub(super) fn sleep_until(&self, deadline: Instant) -> bool {
        self.shutdown.sleep_until(deadline) || self.slot.is_closed()
    }
}

/// Retry delays after failures: 1 s doubling to 60 s; reset by a success.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Starts the camera's capture thread (named `cam-<id>`). It delivers at most one frame per
/// `interval_ms` into `slot`, none before the instant the slot's consumer wants the next one from
/// ([`FrameSlot::wanted_from`]), reports [`CameraEvent`]s on `events` (a closed receiver is fine),
/// retries failures with backoff, and keeps `heartbeat` on its schedule: each capture is due by
/// its interval (plus the HTTP timeout), each retry by its backoff.
///
/// The thread ends when `shutdown` is triggered (at once, unless it is inside a blocking read:
/// then after that read) or, at its next step, when `slot` is closed.
///
/// Fails with `InvalidInput` if `config` does not pass [`validate_cameras`].
pub fn spawn(
    config: CameraConfig,
    slot: Arc<FrameSlot>,
    events: Sender<CameraEvent>,
    shutdown: Shutdown,
    heartbeat: Arc<Heartbeat>,
) -> std::io::Result<JoinHandle<()>> {
    // Validated values keep the thread name and deadline arithmetic from panicking.
    validate_cameras(std::slice::from_ref(&config))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let cancel = Cancel { shutdown, slot };
    thread::Builder::new()
        .name(format!("cam-{}", config.id))
        .spawn(move || run(&config, open_source(&config), &cancel, &events, &heartbeat))
}

/// How long one capture may block after its due time: HTTP requests and waits for a V4L2 frame
/// up to their configured timeout; file reads have no timeout of their own, and the watchdog's
/// tolerance covers them.
fn read_allowance(config: &CameraConfig) -> Duration {
    match config.source {
        SourceSpec::Http(_) | SourceSpec::V4l2(_) => Duration::from_millis(config.timeout_ms),
        SourceSpec::File(_) => Duration::ZERO,
    }
}

fn open_source(config: &CameraConfig) -> Box<dyn FrameSource> {
    match &config.source {
        SourceSpec::File(path) => Box::new(super::file::FileSource::new(path.clone())),
        SourceSpec::Http(url) => Box::new(super::http::HttpSource::new(
            url,
            Duration::from_millis(config.timeout_ms),
        )),
        #[cfg(feature = "camera")]
        SourceSpec::V4l2(device) => Box::new(super::v4l2::V4l2Source::new(device.clone(), config)),
        #[cfg(not(feature = "camera"))]
        SourceSpec::V4l2(_) => Box::new(Unsupported),
    }
}

/// Stands in for V4L2 sources in builds without the `camera` feature: the camera stays offline
/// with a reason saying so, like any other unavailable camera.
#[cfg(not(feature = "camera"))]
struct Unsupported;

#[cfg(not(feature = "camera"))]
impl FrameSource for Unsupported {
    fn next_frame(&mut self, _: Instant, _: &Cancel) -> Result<Option<Frame>, CaptureError> {
        Err(CaptureError::CameraSupportDisabled)
    }
}

#[derive(PartialEq)]
enum Status {
    Starting,
    Online,
    Offline,
}

fn run(
    config: &CameraConfig,
    mut source: Box<dyn FrameSource>,
    cancel: &Cancel,
    events: &Sender<CameraEvent>,
    heartbeat: &Heartbeat,
) {
    let camera = &config.id;
    let interval = Duration::from_millis(config.interval_ms);
    let read_allowance = read_allowance(config);
    let mut status = Status::Starting;
    let mut backoff = Backoff::new();
    let mut seq = 0;
    let mut due = Instant::now();
    log::debug!("camera {camera}: starting ({})", config.source);
    while !cancel.is_set() {
        // A frame the consumer does not want yet (the motion gate idles) is not captured: a
        // file is not read, a snapshot not fetched, a V4L2 frame not copied.
        if let Some(wanted_from) = cancel.slot.wanted_from() {
            due = due.max(wanted_from);
        }
        heartbeat.expect_by(due + read_allowance);
        match source.next_frame(due, cancel) {
            Ok(None) => break,
            Ok(Some(mut frame)) => {
                if status != Status::Online {
                    log::info!("camera {camera}: online ({})", config.source);
                    status = Status::Online;
                    // A closed receiver only means nobody listens for events.
                    let _ = events.send(CameraEvent::Online(camera.clone()));
                }
                backoff.reset();
                frame.seq = seq;
                seq += 1;
                cancel.slot.put(frame);
                // Never catch up with a burst after a slow capture: at most one frame per interval.
                due = (due + interval).max(Instant::now());
            }
            Err(error) => {
                // The reason names each cause once, e.g. "cannot read X: No such file ...".
                let error = format!("{:#}", anyhow::Error::new(error));
                let delay = backoff.delay();
                if status == Status::Offline {
                    log::debug!("camera {camera}: still offline: {error}; retry in {delay:?}");
                } else {
                    log::warn!("camera {camera}: offline: {error}; retrying with backoff");
                    status = Status::Offline;
                    let _ = events.send(CameraEvent::Offline {
                        camera: camera.clone(),
                        reason: error,
                    });
                }
                // Offline and retrying on schedule is alive as far as the watchdog is concerned.
                due = Instant::now() + delay;
                heartbeat.expect_by(due + read_allowance);
                if cancel.sleep_until(due) {
                    break;
                }
            }
        }
    }
    heartbeat.idle();
    log::debug!("camera {camera}: stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far longer than a wake-up takes on a loaded machine, far shorter than the interval below.
    const PROMPT: Duration = Duration::from_secs(30);

    #[test]
    fn shutdown_ends_a_camera_waiting_for_its_next_frame_at_once() {
        let image = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/images/coffee.jpg"
        );
        let config: CameraConfig = toml::from_str(&format!(
            "id = \"hourly\"\nsource = \"file:{image}\"\ninterval_ms = 3600000"
        ))
        .expect("test camera config");
        let slot = Arc::new(FrameSlot::new());
        let (events, _) = std::sync::mpsc::channel();
        let shutdown = Shutdown::new();
        let heartbeat = Arc::new(Heartbeat::new());
        let thread = spawn(
            config,
            slot.clone(),
            events,
            shutdown.clone(),
            heartbeat.clone(),
        )
        .expect("camera thread");
        assert!(slot.take(PROMPT).is_some(), "the first frame comes at once");
        // Waiting an hour for the next frame is on schedule, not a stall.
        let deadline = Instant::now() + PROMPT;
        while heartbeat.lateness(Instant::now() + Duration::from_secs(1800)) > Duration::ZERO {
            assert!(
                Instant::now() < deadline,
                "the camera schedules its next frame"
            );
            std::thread::sleep(Duration::from_millis(1));
        }

        let triggered_at = Instant::now();
        shutdown.trigger();
        while !thread.is_finished() {
            assert!(
                triggered_at.elapsed() < PROMPT,
                "the camera thread did not wake"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(thread.join().is_ok());
        assert_eq!(heartbeat.lateness(Instant::now() + PROMPT), Duration::ZERO);
    }

    #[test]
    fn waits_for_cameras_and_snapshots_count_against_the_heartbeat_up_to_their_timeout() {
        let allowance = |source: &str| {
            let config: CameraConfig = toml::from_str(&format!(
                "id = \"cam\"\nsource = \"{source}\"\ntimeout_ms = 2500"
            ))
            .expect("test camera config");
            read_allowance(&config)
        };
        assert_eq!(allowance("v4l2:/dev/video0"), Duration::from_millis(2500));
        assert_eq!(
            allowance("http://127.0.0.1:9/snapshot.jpg"),
            Duration::from_millis(2500)
        );
        assert_eq!(allowance("file:/tmp/frame.jpg"), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.delay(), Duration::from_secs(1));
    }
}

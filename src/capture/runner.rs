use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{validate_cameras, CameraConfig, CameraId, CaptureError, Frame, FrameSlot, SourceSpec};

/// A camera's availability changed; sent once per transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraEvent {
    /// The camera delivered its first frame since start or since an outage. Carries the camera id.
    Online(CameraId),
    /// The camera failed; it is retried with backoff until it recovers.
    Offline { camera: CameraId, reason: String },
}

/// A frame source, driven by the camera thread that created it (nokhwa's camera is not `Send`).
/// Sources (re)open their device or connection lazily inside `next_frame`, so a failure only
/// costs one call.
pub(super) trait FrameSource {
    /// The next frame, captured no earlier than `due`; `Ok(None)` once `cancel` is set.
    fn next_frame(&mut self, due: Instant, cancel: &Cancel) -> Result<Option<Frame>, CaptureError>;
}

/// Tells a camera thread to stop: the daemon's stop flag, or the slot being closed.
pub(super) struct Cancel {
    stop: Arc<AtomicBool>,
    slot: Arc<FrameSlot>,
}

/// Longest uninterrupted sleep, so a stop request is noticed within this time.
const CANCEL_POLL: Duration = Duration::from_millis(250);

impl Cancel {
    pub(super) fn is_set(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.slot.is_closed()
    }

    /// Sleeps until `deadline`; returns `true` if cancelled meanwhile.
    pub(super) fn sleep_until(&self, deadline: Instant) -> bool {
        loop {
            if self.is_set() {
                return true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            thread::sleep(remaining.min(CANCEL_POLL));
        }
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
/// `interval_ms` into `slot`, reports [`CameraEvent`]s on `events` (a closed receiver is fine),
/// retries failures with backoff, and ends when `stop` is set or `slot` is closed.
///
/// Fails with `InvalidInput` if `config` does not pass [`validate_cameras`].
pub fn spawn(
    config: CameraConfig,
    slot: Arc<FrameSlot>,
    events: Sender<CameraEvent>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    // Validated values keep the thread name and deadline arithmetic from panicking.
    validate_cameras(std::slice::from_ref(&config))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let cancel = Cancel { stop, slot };
    thread::Builder::new()
        .name(format!("cam-{}", config.id))
        .spawn(move || run(&config, open_source(&config), &cancel, &events))
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
) {
    let camera = &config.id;
    let interval = Duration::from_millis(config.interval_ms);
    let mut status = Status::Starting;
    let mut backoff = Backoff::new();
    let mut seq = 0;
    let mut due = Instant::now();
    log::debug!("camera {camera}: starting ({})", config.source);
    while !cancel.is_set() {
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
                let delay = backoff.delay();
                if status == Status::Offline {
                    log::debug!("camera {camera}: still offline: {error}; retry in {delay:?}");
                } else {
                    log::warn!("camera {camera}: offline: {error}; retrying with backoff");
                    status = Status::Offline;
                    let _ = events.send(CameraEvent::Offline {
                        camera: camera.clone(),
                        reason: error.to_string(),
                    });
                }
                if cancel.sleep_until(Instant::now() + delay) {
                    break;
                }
                due = Instant::now();
            }
        }
    }
    log::debug!("camera {camera}: stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.delay(), Duration::from_secs(1));
    }
}

//! systemd integration: readiness, a watchdog fed by every camera's heartbeats, journald logging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::capture::CameraId;
use crate::heartbeat::Heartbeat;
use crate::shutdown::Shutdown;

/// The heartbeats of one camera's two threads.
pub struct CameraHeartbeats {
    /// The camera's id, for the log line that names a stalled camera.
    pub camera: CameraId,
    /// The capture thread's: due by each capture, or by the next retry while offline.
    pub capture: Arc<Heartbeat>,
    /// The pipeline thread's: idle while waiting for a frame, due at once while processing one.
    pub pipeline: Arc<Heartbeat>,
}

/// A thread the watchdog found later than it tolerates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// The camera whose thread is late.
    pub camera: CameraId,
    /// Which of its threads: `"capture"` or `"pipeline"`.
    pub thread: &'static str,
    /// How far past its deadline the thread is.
    pub late: Duration,
}

/// Every thread more than `tolerance` past its deadline at `now`. The watchdog is petted only
/// when this is empty, so one hung camera is not hidden by a healthy one.
pub fn stalls(cameras: &[CameraHeartbeats], now: Instant, tolerance: Duration) -> Vec<Stall> {
    cameras
        .iter()
        .flat_map(|camera| {
            [("capture", &camera.capture), ("pipeline", &camera.pipeline)]
                .into_iter()
                .filter_map(move |(thread, heartbeat)| {
                    let late = heartbeat.lateness(now);
                    (late > tolerance).then(|| Stall {
                        camera: camera.camera.clone(),
                        thread,
                        late,
                    })
                })
        })
        .collect()
}

/// Logs to journald when systemd connected our stderr to the journal, else to stderr.
/// `RUST_LOG` overrides `level`.
pub fn init_logging(level: &str) {
    // The embedded broker (rumqttd) logs routine traffic at ERROR level through `tracing`.
    let filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| format!("{level},rumqttd=off,tracing=off"));
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(journal) = systemd_journal_logger::JournalLog::new() {
            let journal = journal.with_syslog_identifier("edgeclass".into());
            let filter = env_filter::Builder::new().parse(&filter).build();
            log::set_max_level(filter.filter());
            if log::set_boxed_logger(Box::new(Filtered {
                filter,
                inner: journal,
            }))
            .is_ok()
            {
                return;
            }
        }
    }
    // A second init (tests calling run twice in one process) keeps the first logger.
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format_timestamp_millis()
        .try_init();
}

/// Applies `RUST_LOG`-style per-module filters to a logger that has none (journald).
struct Filtered<L> {
    filter: env_filter::Filter,
    inner: L,
}

impl<L: log::Log> log::Log for Filtered<L> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.filter.enabled(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if self.filter.matches(record) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

fn notify(state: &[NotifyState]) {
    // Outside systemd NOTIFY_SOCKET is unset and this is a no-op; a failure to reach systemd
    // must not stop the daemon, systemd will notice by itself.
    if let Err(err) = sd_notify::notify(state) {
        log::debug!("sd_notify failed: {err}");
    }
}

/// How far each notice pushes systemd's start timeout out, and how often one is sent while
/// starting: a first start downloads the model (47 MB), far longer than `TimeoutStartSec` on
/// a slow link, and a killed start would begin the download again.
const START_EXTENSION: Duration = Duration::from_secs(60);
const START_EXTENSION_EVERY: Duration = Duration::from_secs(20);

/// Runs `work` (loading or downloading the model) while telling systemd, every
/// [`START_EXTENSION_EVERY`], to extend its start timeout by [`START_EXTENSION`], with
/// `status` for `systemctl status`. Outside systemd this just runs `work`.
pub fn while_starting<T>(status: &str, work: impl FnOnce() -> T) -> T {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || loop {
            let usec = START_EXTENSION.as_micros().try_into().unwrap_or(u32::MAX);
            notify(&[
                NotifyState::ExtendTimeoutUsec(usec),
                NotifyState::Status(status),
            ]);
            match wait.recv_timeout(START_EXTENSION_EVERY) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        });
        let result = work();
        // Ends the notices; a send error means the thread is already gone.
        let _ = done.send(());
        result
    })
}

/// Tells systemd it is ready, with `status` for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// When systemd asks for a watchdog, pets it at half its interval while no camera thread is
/// more than that half interval behind its schedule (a stuck camera gets the service
/// restarted). Ends on shutdown.
pub fn spawn_watchdog(cameras: Vec<CameraHeartbeats>, shutdown: Shutdown) {
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
        return;
    };
    let period = timeout / 2;
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.recv() => return,
            }
            let stalled = stalls(&cameras, Instant::now(), period);
            for stall in &stalled {
                log::warn!(
                    "camera {}: {} thread is {:?} behind schedule; not petting the watchdog",
                    stall.camera,
                    stall.thread,
                    stall.late
                );
            }
            if stalled.is_empty() {
                notify(&[NotifyState::Watchdog]);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: Duration = Duration::from_secs(15);

    fn camera(id: &str) -> CameraHeartbeats {
        CameraHeartbeats {
            camera: id.parse().expect("valid camera id"),
            capture: Arc::new(Heartbeat::new()),
            pipeline: Arc::new(Heartbeat::new()),
        }
    }

    #[test]
    fn idle_and_on_schedule_threads_pet_the_watchdog() {
        let now = Instant::now();
        let waiting = camera("waiting"); // both idle: a pipeline waiting, a thread ended
        let slow = camera("slow"); // next capture in an hour, pipeline just started a frame
        slow.capture.expect_by(now + Duration::from_secs(3600));
        slow.pipeline.expect_by(now);
        let offline = camera("offline"); // retrying in a minute
        offline.capture.expect_by(now + Duration::from_secs(60));
        let busy = camera("busy"); // inference a little slow, within the tolerance
        busy.pipeline.expect_by(now - Duration::from_secs(10));
        assert_eq!(stalls(&[waiting, slow, offline, busy], now, TOLERANCE), []);
    }

    #[test]
    fn one_hung_camera_stops_the_pets_and_is_named() {
        let now = Instant::now();
        let healthy = camera("porch");
        healthy.capture.expect_by(now + Duration::from_secs(1));
        let hung_read = camera("garage");
        hung_read.capture.expect_by(now - Duration::from_secs(20));
        let hung_model = camera("yard");
        hung_model.pipeline.expect_by(now - Duration::from_secs(16));
        assert_eq!(
            stalls(&[healthy, hung_read, hung_model], now, TOLERANCE),
            [
                Stall {
                    camera: "garage".parse().unwrap(),
                    thread: "capture",
                    late: Duration::from_secs(20),
                },
                Stall {
                    camera: "yard".parse().unwrap(),
                    thread: "pipeline",
                    late: Duration::from_secs(16),
                },
            ]
        );
    }
}

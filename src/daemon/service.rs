//! systemd integration: readiness, watchdog fed by pipeline progress, journald logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sd_notify::NotifyState;

/// Counts pipeline iterations; the watchdog only pets systemd while this moves.
#[derive(Debug, Default)]
pub struct Progress(AtomicU64);

impl Progress {
    pub fn tick(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
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

pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Pets the systemd watchdog at half its interval, but only when `progress` moved since the
/// last pet: a stuck pipeline gets the service restarted.
pub fn spawn_watchdog(progress: Arc<Progress>) {
    let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) else {
        return;
    };
    let period = timeout / 2;
    tokio::spawn(async move {
        let mut last = progress.count();
        let mut ticker = tokio::time::interval(period);
        loop {
            ticker.tick().await;
            let now = progress.count();
            if now != last {
                notify(&[NotifyState::Watchdog]);
                last = now;
            } else {
                log::warn!("pipeline made no progress for {period:?}; not petting the watchdog");
            }
        }
    });
}

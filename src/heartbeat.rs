//! Per-thread liveness for the systemd watchdog: by when a worker thread next expects to have
//! made progress.
//!
//! A deadline rather than a progress counter, because a healthy thread may legitimately do
//! nothing for a long time: a camera with a long `interval_ms` sleeps until its next capture, an
//! offline camera until its next retry, a pipeline until its camera delivers. Such a thread sets
//! its deadline to its next scheduled step (or declares itself [`Heartbeat::idle`] while waiting
//! on a thread that has its own heartbeat), so only a thread stuck past its own schedule is late:
//! a capture hung in a read, a pipeline that never returns from inference.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One worker thread's schedule, written by the thread and read by the watchdog.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// When the thread expects to be done with its current step; `None` while it waits on
    /// another thread.
    due: Mutex<Option<Instant>>,
}

impl Heartbeat {
    /// An idle heartbeat (late never, until the thread sets a deadline).
    pub fn new() -> Self {
        Self::default()
    }

    /// The thread starts a step it should finish by `deadline`: now for work that only takes
    /// compute, a capture's due time plus its read timeout for a capture.
    pub fn expect_by(&self, deadline: Instant) {
        *self.lock() = Some(deadline);
    }

    /// The thread waits for another thread (which has its own heartbeat), however long that
    /// takes.
    pub fn idle(&self) {
        *self.lock() = None;
    }

    /// How far past its deadline the thread is at `now`; zero while idle or on time.
    pub fn lateness(&self, now: Instant) -> Duration {
        self.lock()
            .map_or(Duration::ZERO, |due| now.saturating_duration_since(due))
    }

    // A single `Option` assignment cannot be left half done by a panicking holder.
    fn lock(&self) -> MutexGuard<'_, Option<Instant>> {
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_only_past_a_deadline() {
        let now = Instant::now();
        let heartbeat = Heartbeat::new();
        assert_eq!(heartbeat.lateness(now), Duration::ZERO);
        heartbeat.expect_by(now + Duration::from_secs(5));
        assert_eq!(heartbeat.lateness(now), Duration::ZERO);
        assert_eq!(
            heartbeat.lateness(now + Duration::from_secs(7)),
            Duration::from_secs(2)
        );
        heartbeat.idle();
        assert_eq!(
            heartbeat.lateness(now + Duration::from_secs(7)),
            Duration::ZERO
        );
    }
}

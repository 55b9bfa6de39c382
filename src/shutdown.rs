//! The daemon's one stop signal: triggered once, seen at once by every waiter, whether a std
//! thread sleeping until its next capture or a tokio task.
//!
//! Threads cannot await and tasks must not block, so the signal is kept twice under one
//! [`Shutdown::trigger`]: a flag with a condition variable for threads, a watch channel for tasks.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

/// A handle on the stop signal; clones share it, and [`Shutdown::trigger`] on any of them wakes
/// every waiter of all of them.
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    triggered: Mutex<bool>,
    /// Wakes threads blocked in [`Shutdown::sleep_until`].
    wake_threads: Condvar,
    /// Wakes tasks awaiting [`Shutdown::recv`]; holds `true` once triggered.
    wake_tasks: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not triggered yet.
    pub fn new() -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                triggered: Mutex::new(false),
                wake_threads: Condvar::new(),
                wake_tasks: watch::Sender::new(false),
            }),
        }
    }

    /// Signals shutdown: every current and future waiter returns at once. Idempotent.
    pub fn trigger(&self) {
        *self.lock() = true;
        self.inner.wake_threads.notify_all();
        self.inner.wake_tasks.send_replace(true);
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        *self.lock()
    }

    /// Blocks the calling thread until `deadline` or until shutdown, whichever comes first;
    /// `true` if shutdown was triggered.
    pub fn sleep_until(&self, deadline: Instant) -> bool {
        let mut triggered = self.lock();
        loop {
            if *triggered {
                return true;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return false;
            }
            // Spurious wake-ups and timeouts both land back in the checks above.
            triggered = self
                .inner
                .wake_threads
                .wait_timeout(triggered, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Completes once shutdown is triggered (at once if it already was).
    pub async fn recv(&self) {
        let mut triggered = self.inner.wake_tasks.subscribe();
        // The sender lives in `inner`, which `self` keeps alive, so the channel cannot close.
        let _ = triggered.wait_for(|&triggered| triggered).await;
    }

    // The flag is a single bool, consistent whatever a panicking holder did.
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.inner
            .triggered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Far longer than a wake-up takes on a loaded machine, far shorter than the sleeps below.
    const PROMPT: Duration = Duration::from_secs(30);
    const FOREVER: Duration = Duration::from_secs(3600);

    #[test]
    fn trigger_wakes_a_sleeping_thread_at_once() {
        let shutdown = Shutdown::new();
        let (entered, entered_rx) = mpsc::channel();
        let (woke, woke_rx) = mpsc::channel();
        let sleeper = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let _ = entered.send(());
            let _ = woke.send(sleeper.sleep_until(Instant::now() + FOREVER));
        });
        entered_rx.recv_timeout(PROMPT).expect("the thread starts");
        let triggered_at = Instant::now();
        shutdown.trigger();
        let result = woke_rx
            .recv_timeout(PROMPT)
            .expect("woken before its deadline");
        assert!(result, "sleep_until reports the shutdown");
        assert!(triggered_at.elapsed() < PROMPT);
        thread.join().expect("the sleeper ends");
        assert!(shutdown.is_triggered());
    }

    #[test]
    fn sleep_until_returns_false_at_its_deadline() {
        let shutdown = Shutdown::default();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(!shutdown.sleep_until(deadline));
        assert!(Instant::now() >= deadline);
        assert!(!shutdown.is_triggered());
    }

    #[test]
    fn after_trigger_every_wait_returns_at_once() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        shutdown.trigger();
        let clone = shutdown.clone();
        assert!(clone.sleep_until(Instant::now() + FOREVER));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            tokio::time::timeout(PROMPT, clone.recv())
                .await
                .expect("recv after trigger completes");
        });
    }

    #[test]
    fn trigger_wakes_a_waiting_task_at_once() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        let shutdown = Shutdown::new();
        let waiter = shutdown.clone();
        runtime.block_on(async move {
            let task = tokio::spawn(async move { waiter.recv().await });
            tokio::task::yield_now().await;
            assert!(!task.is_finished());
            shutdown.trigger();
            tokio::time::timeout(PROMPT, task)
                .await
                .expect("woken before the deadline")
                .expect("the task ends");
        });
    }
}

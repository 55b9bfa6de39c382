use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Frame;

/// Hand-over point between one camera thread and its consumer: holds at most one frame.
///
/// A newer frame replaces an unconsumed one, so a slow consumer always sees the latest scene and
/// nothing queues up; replaced frames are counted as dropped.
#[derive(Debug, Default)]
pub struct FrameSlot {
    state: Mutex<SlotState>,
    frame_ready: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Frame>,
    closed: bool,
    stats: SlotStats,
}

/// Frame counts of a [`FrameSlot`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Frames handed to the consumer by [`FrameSlot::take`].
    pub delivered: u64,
    /// Frames replaced by a newer one before anyone took them.
    pub dropped: u64,
}

impl FrameSlot {
    /// An empty, open slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers a frame, replacing (and counting as dropped) any frame not yet taken.
    /// Ignored once the slot is closed.
    pub fn put(&self, frame: Frame) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.frame.replace(frame).is_some() {
            state.stats.dropped += 1;
        }
        drop(state);
        self.frame_ready.notify_one();
    }

    /// Waits up to `timeout` for a frame. `None` on timeout or once the slot is closed.
    pub fn take(&self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(frame) = state.frame.take() {
                state.stats.delivered += 1;
                return Some(frame);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            state = self
                .frame_ready
                .wait_timeout(state, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Closes the slot: waiting and future `take`s return `None`, `put`s are ignored, and the
    /// camera thread feeding it stops.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.frame = None;
        drop(state);
        self.frame_ready.notify_all();
    }

    /// Whether [`FrameSlot::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Frames delivered and dropped so far.
    pub fn stats(&self) -> SlotStats {
        self.lock().stats
    }

    // A panic elsewhere while holding the lock leaves the state consistent (every update is a
    // single assignment), so poisoning is not a reason to fail.
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

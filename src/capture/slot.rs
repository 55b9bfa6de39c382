use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Frame;

/// Hand-over point between one camera thread and its consumer: holds at most one frame.
///
/// A newer frame replaces an unconsumed one, so a slow consumer always sees the latest scene and
/// nothing queues up; replaced frames are counted as dropped.
///
/// The consumer may also say it wants no frame before a given instant ([`FrameSlot::want_from`]:
/// the motion gate while the scene is settled). Frames offered earlier are dropped at once
/// (counted as unwanted) without waking the consumer, and the camera thread does not capture
/// them in the first place where its source allows ([`FrameSlot::wanted_from`]).
#[derive(Debug, Default)]
pub struct FrameSlot {
    state: Mutex<SlotState>,
    frame_ready: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Frame>,
    closed: bool,
    wanted_from: Option<Instant>,
    stats: SlotStats,
}

/// Frame counts of a [`FrameSlot`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Frames handed to the consumer by [`FrameSlot::take`].
    pub delivered: u64,
    /// Frames replaced by a newer one before anyone took them.
    pub dropped: u64,
    /// Frames offered before the instant the consumer wanted the next one from.
    pub unwanted: u64,
}

impl FrameSlot {
    /// An empty, open slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers a frame, replacing (and counting as dropped) any frame not yet taken. Ignored
    /// once the slot is closed, and dropped (counted as unwanted) before the instant set by
    /// [`FrameSlot::want_from`].
    pub fn put(&self, frame: Frame) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if state.wanted_from.is_some_and(|from| Instant::now() < from) {
            state.stats.unwanted += 1;
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

    /// The consumer wants no frame offered before `from` (`None`: every frame), until it says
    /// otherwise. A frame waiting in the slot was offered before `from`, so it is dropped too
    /// (counted as unwanted) if `from` is still ahead.
    pub fn want_from(&self, from: Option<Instant>) {
        let mut state = self.lock();
        state.wanted_from = from;
        if from.is_some_and(|from| Instant::now() < from) && state.frame.take().is_some() {
            state.stats.unwanted += 1;
        }
    }

    /// The instant set by [`FrameSlot::want_from`], if still ahead: a camera thread need not
    /// capture a frame before it.
    pub fn wanted_from(&self) -> Option<Instant> {
        self.lock()
            .wanted_from
            .filter(|&from| from > Instant::now())
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

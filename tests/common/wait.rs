//! Waiting for a condition under a deadline instead of sleeping for a fixed time, so a test is
//! as fast as the code under test and still passes on a loaded machine.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::fs;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// How often a condition is re-checked: short next to anything the tests wait for.
const POLL: Duration = Duration::from_millis(10);

/// Checks `condition` until it holds (true) or `timeout` has passed (false). Callers assert on
/// the result with a message saying what did not happen.
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn is_listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The calling thread's kernel thread id, for [`wait_until_asleep`].
pub fn current_thread_id() -> libc::pid_t {
    // SAFETY: gettid(2) has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Waits until thread `tid` of this process is asleep in the kernel (state `S`), e.g. blocked on
/// a condition variable; false after `timeout`. Lets a test act only once another thread is
/// really waiting, instead of sleeping and hoping it got there.
pub fn wait_until_asleep(tid: libc::pid_t, timeout: Duration) -> bool {
    let stat = format!("/proc/self/task/{tid}/stat");
    poll_until(timeout, || {
        // `pid (comm) state ...`: comm may contain spaces and parentheses, the state follows
        // the last `)`.
        fs::read_to_string(&stat).is_ok_and(|line| {
            line.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
        })
    })
}

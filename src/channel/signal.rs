//! An eventcount in shared memory: sleepers wait for "something changed", wakers
//! skip the syscall when nobody sleeps.
//!
//! | field      | written by | meaning                                          |
//! |------------|------------|--------------------------------------------------|
//! | `seq`      | wakers     | bumped on every wake-up; the futex word           |
//! | `sleepers` | waiters    | how many may be asleep on `seq`                   |
//!
//! A waiter registers in `sleepers` *before* its last check of the condition, and a
//! waker changes the condition *before* reading `sleepers` (both sequentially
//! consistent), so either the waiter sees the change or the waker sees the waiter.
//! A waiter killed asleep leaves `sleepers` high (costing wakers a syscall); a
//! scribbled `sleepers` can delay a sleeper by at most [`SAFETY_POLL`].

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Duration;

use crate::sync::wait::{sleep_on, spin, wake, Wait, SAFETY_POLL};

/// How a [`Signal::wait_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    Ready,
    TimedOut,
    /// A poll period passed: look around, then wait again.
    Polled,
}

#[repr(C)]
pub(crate) struct Signal {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Signal {
    /// Wakes every sleeper, if any. Call after making the condition true.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        self.notify_after_commit();
    }

    /// As [`notify`](Self::notify), for a caller whose change of the condition was
    /// itself a sequentially consistent read-modify-write (which orders the
    /// `sleepers` read after it, as the fence would).
    #[inline]
    pub(crate) fn notify_after_commit(&self) {
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            wake(&self.seq, u32::MAX);
        }
    }

    /// Waits until `ready()` holds (spinning briefly first), `wait`'s deadline
    /// passes, or, when `poll` is given, that long has passed, so that the caller can
    /// look at what no waker will tell it (a peer process's death) and call again.
    pub(crate) fn wait_until(&self, wait: Wait, poll: Option<Duration>, mut ready: impl FnMut() -> bool) -> Waited {
        if ready() || spin(|| ready().then_some(())).is_some() {
            return Waited::Ready;
        }

        if wait.expired() {
            return Waited::TimedOut;
        }
        let slice = poll.map_or(SAFETY_POLL, |p| p.min(SAFETY_POLL));
        loop {
            let seen = self.seq.load(Ordering::SeqCst);
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            // Orders our registration before the condition's loads below on every
            // architecture (on x86 the locked add already does).
            fence(Ordering::SeqCst);
            let in_time = ready() || sleep_on(&self.seq, seen, wait, Some(slice));
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if ready() {
                return Waited::Ready;
            }
            if !in_time {
                return Waited::TimedOut;
            }
            if poll.is_some() {
                return Waited::Polled;
            }
        }
    }
}

//! An eventcount in shared memory: sleepers wait for "something changed", wakers
//! skip the syscall when nobody sleeps.
//!
//! | field      | written by | meaning                                          |
//! |------------|------------|--------------------------------------------------|
//! | `seq`      | wakers     | bumped on every wake-up; the futex word           |
//! | `sleepers` | waiters    | how many may be asleep on `seq` ([`Asker::Count`]) |
//!
//! A waiter asks to be woken *before* its last look at the condition, and a waker
//! changes the condition *before* it finds out whether anyone asked, so either the
//! waiter sees the change or the waker sees the waiter. There are two ways to ask:
//!
//! - [`Asker::Count`]: add one to `sleepers`; a waker fences and reads it. For
//!   changes made without a lock (`task_done`).
//! - [`Asker::Release`]: set the NOTIFY bit of the lock under which the change is
//!   made (a ring's put or get lock); the holder's release reports it. This costs the
//!   holder nothing beyond the release it makes anyway, which is why a put or a get
//!   has no fence of its own.
//!
//! A waiter killed asleep leaves `sleepers` (or the bit) high, costing wakers a
//! syscall; a scribbled `sleepers` can delay a sleeper by at most [`SAFETY_POLL`].

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sync::wait::{sleep_on, spin, wake, Wait, SAFETY_POLL};
use crate::sync::RawMutex;

/// How a [`Signal::wait_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    Ready,
    TimedOut,
    /// A poll period passed: look around, then wait again.
    Polled,
}

/// How a waiter asks to be woken (see the module docs).
#[derive(Clone, Copy)]
pub(crate) enum Asker<'a> {
    /// Counted in `sleepers`, for wakers that call [`Signal::notify`].
    Count,
    /// By the next release of this lock, whose releaser calls [`Signal::wake_all`].
    Release(&'a RawMutex),
}

/// How long a waiter whose spin ran out keeps giving its CPU away before it sleeps.
const YIELD_TIME: Duration = Duration::from_micros(100);

/// Between spinning and sleeping: yields the CPU while looking for `ready()`, for
/// up to [`YIELD_TIME`]. A waiter sharing a CPU with the process it waits for (more
/// processes than CPUs) thus lets it run, and is not asleep when it delivers: a
/// sleeper, once woken, is often run on the waker's CPU, taking it from the waker.
/// Measured with a producer and two consumers on two CPUs (`joinable_queue`): 1 to
/// 12 M items/s from run to run, the producer preempted up to 2 700 times in a
/// 50 000-item run, without this phase; 11.6 to 12.4 M items/s, no preemption, with.
fn yield_until(wait: Wait, ready: &mut impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let end = wait.deadline().map_or(start + YIELD_TIME, |d| d.min(start + YIELD_TIME));
    while Instant::now() < end {
        std::thread::yield_now();
        if ready() {
            return true;
        }
    }
    false
}

#[repr(C)]
pub(crate) struct Signal {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Signal {
    /// Wakes every sleeper counted in `sleepers`, if any. Call after making the
    /// condition true.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_all();
        }
    }

    /// Wakes every sleeper, however it asked. Call after making the condition true.
    pub(crate) fn wake_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        wake(&self.seq, u32::MAX);
    }

    /// Waits until `ready()` holds (spinning briefly first), `wait`'s deadline
    /// passes, or, when `poll` is given, that long has passed, so that the caller can
    /// look at what no waker will tell it (a peer process's death) and call again.
    pub(crate) fn wait_until(
        &self,
        wait: Wait,
        poll: Option<Duration>,
        asker: Asker<'_>,
        mut ready: impl FnMut() -> bool,
    ) -> Waited {
        if ready() || spin(|| ready().then_some(())).is_some() || yield_until(wait, &mut ready) {
            return Waited::Ready;
        }
        if wait.expired() {
            return Waited::TimedOut;
        }
        let slice = poll.map_or(SAFETY_POLL, |p| p.min(SAFETY_POLL));
        loop {
            let seen = self.seq.load(Ordering::SeqCst);
            match asker {
                Asker::Count => {
                    self.sleepers.fetch_add(1, Ordering::SeqCst);
                    // Orders our registration before the condition's loads below on
                    // every architecture (on x86 the locked add already does).
                    fence(Ordering::SeqCst);
                }
                Asker::Release(lock) => lock.request_notify(),
            }
            let in_time = ready() || sleep_on(&self.seq, seen, wait, Some(slice));
            if let Asker::Count = asker {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
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

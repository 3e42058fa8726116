//! An eventcount in shared memory: sleepers wait for "something changed", wakers
//! skip the syscall when nobody asked to be woken.
//!
//! | field      | written by | meaning                                          |
//! |------------|------------|--------------------------------------------------|
//! | `seq`      | wakers     | bumped on every wake-up; the futex word           |
//! | `sleepers` | waiters    | how many may be asleep on `seq`                   |
//!
//! A waiter asks to be woken *before* its last look at the condition, and a waker
//! changes the condition *before* it finds out whether anyone asked, so either the
//! waiter sees the change or the waker sees the waiter. There are two ways to ask:
//!
//! - [`Asker::Count`]: add one to `sleepers`; a waker fences and reads it. For
//!   changes made without a lock (`task_done`).
//! - [`Asker::Release`]: also set the NOTIFY bit of the lock under which the change
//!   is made (a ring's put or get lock); the holder's release reports it and wakes
//!   all sleepers, or one ([`Signal::wake_one`], for consumers). This costs the
//!   holder nothing beyond the release it makes anyway, which is why a put or a get
//!   has no fence of its own.
//!
//! A waiter killed asleep leaves `sleepers` high: a counted signal's every notify
//! then makes a system call, a lock's bit only the next release (`wake_one` re-arms
//! only after waking someone). A scribbled `sleepers` can delay a sleeper by at most
//! [`safety_poll`](crate::sync::wait::safety_poll).

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub(crate) use crate::sync::wait::YIELD_TIME;
use crate::sync::wait::{safety_poll, sleep_on, spin, spin_rounds, wake, yield_until, Wait};
use crate::sync::RawMutex;

/// How a [`Signal::wait_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    Ready,
    TimedOut,
    /// The [`Poll`] check said there is no point waiting any longer.
    Gone,
}

/// What a waiter looks at now and then because no waker will tell it (a peer
/// process's death), while it sleeps.
pub(crate) struct Poll<'a> {
    pub(crate) every: Duration,
    /// `true`: stop waiting ([`Waited::Gone`]).
    pub(crate) gone: &'a mut dyn FnMut() -> bool,
}

/// How a waiter asks to be woken (see the module docs).
#[derive(Clone, Copy)]
pub(crate) enum Asker<'a> {
    /// Counted in `sleepers`, for wakers that call [`Signal::notify`].
    Count,
    /// Counted, and by the next release of this lock, whose releaser calls
    /// [`Signal::wake_all`] or [`Signal::wake_one`].
    Release(&'a RawMutex),
}

/// What a waiter does between spinning and sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Yields its CPU for up to [`YIELD_TIME`] first (see [`yield_until`](crate::sync::wait::yield_until)).
    Yield,
    /// Sleeps at once: for a waiter whose waits have been long (an idle worker
    /// between sporadic tasks), where yielding would only burn CPU.
    Sleep,
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

    /// For the releaser of `lock` that found its NOTIFY bit set: wakes one sleeper,
    /// and if any may be left, sets the bit again, so that the next release wakes
    /// the next one. For consumers, any of whom can take any message: one message
    /// wakes one of them, not every idle worker of a pool (each of which would spin
    /// and yield for a hundred microseconds before sleeping again).
    pub(crate) fn wake_one(&self, lock: &RawMutex) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        // Re-armed only when someone was asleep: if nobody was, every counted waiter
        // is about to see the new `seq` and look again itself, or is dead (a count
        // left high must not make every later put pay a system call). The one just
        // woken may not have left the count yet: then the next release wakes
        // nobody, a wasted system call, rather than leave a sleeper behind.
        if wake(&self.seq, 1) != 0 && self.sleepers.load(Ordering::SeqCst) != 0 {
            lock.request_notify();
        }
    }

    /// For a consumer that took a message and saw more behind it: wakes one more
    /// sleeper, if any. Two puts can commit before the first one's release wakes
    /// anyone (the second release finds the bit already cleared); this hands the
    /// second message to a sleeper instead of leaving it to the safety poll.
    pub(crate) fn pass_on(&self) {
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.seq.fetch_add(1, Ordering::SeqCst);
            wake(&self.seq, 1);
        }
    }

    /// Waits until `ready()` holds (spinning, then, per `patience`, yielding the CPU
    /// first), `wait`'s deadline passes, or `poll`'s check, made every `poll.every`
    /// while asleep, says to stop. Also tells how long the waiter slept (zero when
    /// spinning or yielding was enough: no clock is read then).
    pub(crate) fn wait_until(
        &self,
        wait: Wait,
        poll: Option<Poll<'_>>,
        asker: Asker<'_>,
        patience: Patience,
        ready: impl FnMut() -> bool,
    ) -> (Waited, Duration) {
        self.wait_until_spinning(None, wait, poll, asker, patience, ready)
    }

    /// [`wait_until`](Signal::wait_until) spinning `rounds` (see
    /// [`spin_rounds`]) instead of the default budget, when given.
    pub(crate) fn wait_until_spinning(
        &self,
        rounds: Option<u32>,
        wait: Wait,
        poll: Option<Poll<'_>>,
        asker: Asker<'_>,
        patience: Patience,
        mut ready: impl FnMut() -> bool,
    ) -> (Waited, Duration) {
        let spun = match rounds {
            Some(r) => spin_rounds(r, || ready().then_some(())).is_some(),
            None => spin(|| ready().then_some(())).is_some(),
        };
        if ready() || spun || (patience == Patience::Yield && yield_until(wait, &mut ready)) {
            return (Waited::Ready, Duration::ZERO);
        }
        if wait.expired() {
            return (Waited::TimedOut, Duration::ZERO);
        }
        let asleep = Instant::now();
        let waited = self.sleep_until(wait, poll, asker, ready);
        (waited, asleep.elapsed())
    }

    /// The sleeping part of a wait.
    fn sleep_until(
        &self,
        wait: Wait,
        mut poll: Option<Poll<'_>>,
        asker: Asker<'_>,
        mut ready: impl FnMut() -> bool,
    ) -> Waited {
        let slice = poll.as_ref().map_or(safety_poll(), |p| p.every.min(safety_poll()));
        loop {
            let _ = crate::steps::point("sleep:begin");
            let seen = self.seq.load(Ordering::SeqCst);
            let _ = crate::steps::point("sleep:seen");
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let _ = crate::steps::point("sleep:counted");
            match asker {
                // Orders our registration before the condition's loads below on
                // every architecture (on x86 the locked add already does).
                Asker::Count => fence(Ordering::SeqCst),
                Asker::Release(lock) => lock.request_notify(),
            }
            let _ = crate::steps::point("sleep:asked");
            let in_time = ready() || {
                let _ = crate::steps::point("sleep:checked");
                sleep_on(&self.seq, seen, wait, Some(slice))
            };
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if ready() {
                return Waited::Ready;
            }
            if !in_time {
                return Waited::TimedOut;
            }
            if poll.as_mut().is_some_and(|p| (p.gone)()) {
                return Waited::Gone;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Two sleepers asked one lock to wake them. The first notifying release wakes
    /// one and re-arms the bit (the other still sleeps), so the second release is
    /// told to wake again.
    #[test]
    fn each_notifying_release_wakes_one_more_sleeper() {
        // SAFETY: all zeroes is a free, unpoisoned RawMutex (atomics only).
        let lock: &'static RawMutex = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
        let signal: &'static Signal = Box::leak(Box::new(Signal { seq: 0.into(), sleepers: 0.into() }));
        let tokens: &'static AtomicU32 = Box::leak(Box::new(AtomicU32::new(0)));
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    let ready = || tokens.load(Ordering::SeqCst) > 0;
                    let wait = Wait::timeout(Duration::from_secs(10));
                    signal.wait_until(wait, None, Asker::Release(lock), Patience::Sleep, ready).0
                })
            })
            .collect();
        while signal.sleepers.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20)); // both in the futex
        for round in 0..2 {
            assert_eq!(lock.acquire_spinning(Wait::Forever), crate::sync::Acquire::Clean);
            tokens.fetch_add(1, Ordering::SeqCst);
            assert_eq!(lock.release_notifying(), Ok(true), "round {round}: a sleeper asked");
            signal.wake_one(lock);
        }
        for s in sleepers {
            assert_eq!(s.join().unwrap(), Waited::Ready);
        }
        // Nobody asleep any more. The second wake-up may have re-armed the bit (the
        // one it woke was still counted); then one release pays a wake-up that
        // wakes nobody, and does not re-arm it, even with a stale count.
        signal.sleepers.fetch_add(1, Ordering::SeqCst); // a sleeper that died
        lock.request_notify(); // and had asked
        assert_eq!(lock.acquire_spinning(Wait::Forever), crate::sync::Acquire::Clean);
        assert_eq!(lock.release_notifying(), Ok(true));
        signal.wake_one(lock);
        assert_eq!(lock.acquire_spinning(Wait::Forever), crate::sync::Acquire::Clean);
        assert_eq!(lock.release_notifying(), Ok(false), "no re-arming after waking nobody");
    }
}

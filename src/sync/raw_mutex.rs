//! The raw robust lock under `Lock`, `RLock`, `Condition`, `Value`, `Array` and
//! `Barrier`: state only, no data, no guard.
//!
//! ## Why a futex word with owner checks
//! Three candidates were measured on this machine (2 cores; see the README):
//!
//! | lock                                   | robust | uncontended | 2 processes contending |
//! |----------------------------------------|--------|-------------|------------------------|
//! | raw_sync's pshared pthread mutex        | no: a dead holder blocks everyone forever | 21 ns | 19 M/s (DEPENDENCIES.md) |
//! | robust pshared pthread mutex + spinning | yes, by the kernel's robust list         | 16 ns | 23 M/s |
//! | this futex word + owner checks          | yes, by checking the owner's liveness    | 10 ns | 59–86 M/s |
//!
//! The kernel's robust list would be the ideal owner-death detector, but each thread
//! has exactly one, and glibc owns it for its own mutexes. So this lock records its
//! owner's thread id in the lock word and its start time beside it, and a waiter
//! that has slept [`OWNER_CHECK`] without being woken (1 ms the first time) asks
//! `/proc` whether the owner is still alive. A dead owner's lock is taken over at
//! once, poisoned. `/proc` failing to answer (not mounted, out of descriptors) counts
//! as alive: a lock is never taken from an owner that might live. This also ports to
//! macOS, which has no robust pthread mutexes.
//!
//! ## The words
//! | field       | written by        | meaning |
//! |-------------|-------------------|---------|
//! | `word`      | lockers, unlocker | `0` free; else the owner's thread id (bits 0–29); bit 31 set when a waiter may sleep on it; bit 30 ([`NOTIFY`]) set by someone waiting for what the holder will do |
//! | `depth`     | the owner         | re-entry depth of an `RLock` (1 for a `Lock`) |
//! | `poisoned`  | any holder        | 1 once a holder died or panicked holding it; sticky until cleared |
//! | `owner_tag` | the owner         | `(tid << 32) | start`, written right after taking the lock, cleared right after releasing it |
//!
//! A holder killed between taking the lock and writing `owner_tag` leaves a tag that
//! names an older thread; checkers then judge by the thread id alone. A thread id
//! recycled by a later thread is caught by the start time whenever the tag is current;
//! because a live owner can be caught between its compare-exchange and its tag
//! store, a start-time mismatch is acted on only when a second look, a check period
//! later, sees the same word. A thread that finds its own id in the word but not its
//! own tag knows an earlier thread with that id died holding the lock.
//!
//! ## Never trusting the word
//! Any 32-bit value is a state: a free lock, or a lock held by some thread id. A
//! scribbled word naming no live thread is recovered as a dead owner (poisoned); one
//! that forges a live thread's id makes waiters wait for that thread, never longer
//! than their deadline. `depth` is only ever compared, never used as an index.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::wait::{sleep_on, wake, Wait};
use crate::sys::{self, ThreadIdentity, ThreadState};

/// How long a waiter sleeps between checks that the owner is still alive: the bound
/// on how late a holder's death is noticed.
pub(crate) const OWNER_CHECK: Duration = Duration::from_millis(20);

/// The first check comes sooner, so that a lock whose holder is already dead is
/// recovered after about a millisecond's sleep (up to 5 ms measured on a loaded
/// machine, where the wake-up itself is late); a waiter woken by an unlock before
/// then pays nothing for it.
const FIRST_OWNER_CHECK: Duration = Duration::from_millis(1);

const TID_MASK: u32 = (1 << 30) - 1;
const WAITERS: u32 = 1 << 31;
/// Set by a process waiting for what this lock's holders do under it (a channel's
/// consumer waiting for a put); the release that clears it tells its caller to wake
/// that waiter. Because setting it and releasing are read-modify-writes of one word,
/// either the release sees the bit or the waiter, having set it, sees everything the
/// holder did: no separate fence on the holder's path. Lockers keep the bit.
const NOTIFY: u32 = 1 << 30;
/// The bits a locker keeps when it takes the word.
const KEPT: u32 = WAITERS | NOTIFY;

/// All zeroes is a free, unpoisoned lock: a fresh segment needs no initialisation.
///
/// 24 bytes, so that a `Value`'s data shares the lock's cache line: under contention
/// each hand-off between processes then moves one line, not two.
#[repr(C)]
pub(crate) struct RawMutex {
    word: AtomicU32,
    depth: AtomicU32,
    poisoned: AtomicU32,
    _reserved: AtomicU32,
    owner_tag: AtomicU64,
}

/// What an acquisition attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// Held, never poisoned.
    Clean,
    /// Held; a holder died or panicked earlier and nobody has cleared the poison.
    Poisoned,
    WouldBlock,
    TimedOut,
    /// The calling thread already holds this (non-re-entrant) lock.
    Deadlock,
    /// The lock's memory is damaged (an errno-style code).
    Corrupted(i32),
}

/// Whether the calling thread may take a lock it already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reentry {
    /// `Lock`: taking it again is [`Acquire::Deadlock`].
    Refuse,
    /// `RLock`: taking it again counts one more level.
    Count,
}

fn tag(me: ThreadIdentity) -> u64 {
    (u64::from(me.tid) << 32) | u64::from(me.start)
}

/// What a look at the owner found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Alive, or `/proc` cannot tell.
    Alive,
    /// No such thread, or a zombie.
    Dead,
    /// A live thread with the owner's id but another start time: the id was probably
    /// recycled, unless the owner is between taking the lock and writing its tag.
    /// Taken over only when a second look, a check period later, agrees.
    Recycled,
}

impl RawMutex {
    #[inline]
    pub(crate) fn acquire(&self, wait: Wait, reentry: Reentry) -> Acquire {
        let me = sys::current_thread();
        match self.word.compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return self.taken(me, false),
            Err(cur) if cur & TID_MASK == me.tid => {
                if let Some(a) = self.held_by_my_id(me, cur, reentry) {
                    return a;
                }
            }
            Err(_) => {}
        }
        if wait == Wait::Never {
            // The only look a try gets: a dead owner's lock must not look busy forever.
            return self.try_take_from_dead_owner(me).unwrap_or(Acquire::WouldBlock);
        }
        // No spinning here, unlike the hand-off primitives: when two processes hammer
        // one lock, a spinning waiter pulls the cache line away after every release
        // and the lock changes hands on every acquisition (28 M/s measured); a waiter
        // that sleeps at once lets the holder run on with the line in its cache
        // (59-86 M/s). See the README's benchmark notes.
        self.acquire_slow(me, wait)
    }

    /// As [`acquire`](Self::acquire), but spinning a little before sleeping: for
    /// locks held for a few dozen nanoseconds (a channel's ring), where the holder is
    /// almost always about to let go and a sleep would cost microseconds.
    #[inline]
    pub(crate) fn acquire_spinning(&self, wait: Wait) -> Acquire {
        let me = sys::current_thread();
        if self.word.compare_exchange(0, me.tid, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return self.taken(me, false);
        }
        if wait != Wait::Never {
            if let Some(a) = super::wait::spin(|| self.try_take(me, 0)) {
                return a;
            }
        }
        self.acquire(wait, Reentry::Refuse)
    }

    /// The word names our thread id. Ours if the tag says so; otherwise an earlier
    /// thread that had our (recycled) id died holding it. `None` if the word moved
    /// meanwhile (someone else recovered it first).
    fn held_by_my_id(&self, me: ThreadIdentity, cur: u32, reentry: Reentry) -> Option<Acquire> {
        if self.owner_tag.load(Ordering::Acquire) == tag(me) {
            return Some(self.reenter(reentry));
        }
        self.take_over(me, cur)
    }

    /// One attempt to take a free lock, keeping `extra` bits (the waiters bit).
    fn try_take(&self, me: ThreadIdentity, extra: u32) -> Option<Acquire> {
        let cur = self.word.load(Ordering::Relaxed);
        if cur & TID_MASK != 0 {
            return None;
        }
        self.word
            .compare_exchange(cur, me.tid | extra | (cur & KEPT), Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.taken(me, false))
    }

    #[cold]
    fn acquire_slow(&self, me: ThreadIdentity, wait: Wait) -> Acquire {
        let mut next_check = Instant::now() + FIRST_OWNER_CHECK;
        // The word at which the owner last looked recycled: a second such look at the
        // same word, a check period later, confirms it.
        let mut suspect = None;
        loop {
            // We may not be the only waiter: keep the bit so that our unlock wakes the
            // next one. Set even before we have slept, although a sleeper sets it
            // itself: setting it only after sleeping (which saves the unlock a
            // wake-up of nobody) measured 50-80 M contended increments a second
            // against 91-96 M in four alternating runs of value_lock_increment.
            if let Some(a) = self.try_take(me, WAITERS) {
                return a;
            }
            let cur = self.word.load(Ordering::Acquire);
            if cur & TID_MASK == 0 {
                continue;
            }
            if Instant::now() >= next_check {
                let verdict = self.owner(cur & TID_MASK);
                // By owner alone: the flag bits change under us (a NOTIFY request,
                // our own WAITERS bit) without the owner changing.
                let confirmed = verdict == Owner::Recycled && suspect == Some(cur & TID_MASK);
                if verdict == Owner::Dead || confirmed {
                    if let Some(a) = self.take_over(me, cur) {
                        return a;
                    }
                    continue;
                }
                suspect = (verdict == Owner::Recycled).then_some(cur & TID_MASK);
                next_check = Instant::now() + OWNER_CHECK;
            }
            if cur & WAITERS == 0
                && self.word.compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            let until_check = next_check.saturating_duration_since(Instant::now());
            if !sleep_on(&self.word, cur | WAITERS, wait, Some(until_check)) {
                return self.try_take(me, WAITERS).unwrap_or(Acquire::TimedOut);
            }
        }
    }

    /// For `try_*`: takes the lock if it is free or its owner is certainly gone.
    /// Rate-limited per thread, so that a try loop on a busy lock does not turn into
    /// a stream of `/proc` reads.
    fn try_take_from_dead_owner(&self, me: ThreadIdentity) -> Option<Acquire> {
        thread_local! {
            static LAST_LOOK: std::cell::Cell<Option<(usize, u32, Instant)>> = const { std::cell::Cell::new(None) };
        }
        let cur = self.word.load(Ordering::Acquire);
        if cur & TID_MASK == 0 {
            return self.try_take(me, 0);
        }
        let key = (self as *const Self as usize, cur & TID_MASK);
        let now = Instant::now();
        let recent = LAST_LOOK.with(|l| {
            l.get().is_some_and(|(addr, word, at)| (addr, word) == key && now.duration_since(at) < FIRST_OWNER_CHECK)
        });
        if recent {
            return None;
        }
        LAST_LOOK.with(|l| l.set(Some((key.0, key.1, now))));
        (self.owner(cur & TID_MASK) == Owner::Dead).then(|| self.take_over(me, cur)).flatten()
    }

    /// Replaces the dead owner in `cur` by us; `None` if the word changed meanwhile.
    fn take_over(&self, me: ThreadIdentity, cur: u32) -> Option<Acquire> {
        self.word
            .compare_exchange(cur, me.tid | (cur & KEPT), Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.taken(me, true))
    }

    fn owner(&self, owner: u32) -> Owner {
        match sys::thread_state(owner) {
            ThreadState::Gone => Owner::Dead,
            ThreadState::Unknown => Owner::Alive,
            ThreadState::Alive { start } => {
                let t = self.owner_tag.load(Ordering::Acquire);
                let (tag_tid, tag_start) = ((t >> 32) as u32, t as u32);
                // Start times are compared only when both are known (non-zero).
                let recycled = tag_tid == owner && tag_start != 0 && start != 0 && tag_start != start;
                if recycled {
                    Owner::Recycled
                } else {
                    Owner::Alive
                }
            }
        }
    }

    #[inline]
    fn taken(&self, me: ThreadIdentity, owner_died: bool) -> Acquire {
        self.owner_tag.store(tag(me), Ordering::Release);
        self.depth.store(1, Ordering::Relaxed);
        if owner_died {
            self.poison();
        }
        if self.is_poisoned() {
            Acquire::Poisoned
        } else {
            Acquire::Clean
        }
    }

    fn reenter(&self, reentry: Reentry) -> Acquire {
        if reentry == Reentry::Refuse {
            return Acquire::Deadlock;
        }
        match self.depth.load(Ordering::Relaxed).checked_add(1) {
            Some(d) => self.depth.store(d, Ordering::Relaxed),
            None => return Acquire::Corrupted(libc::EAGAIN),
        }
        if self.is_poisoned() {
            Acquire::Poisoned
        } else {
            Acquire::Clean
        }
    }

    /// Releases one hold; `Err(EPERM)` when the calling thread holds none (never
    /// did, or lost it to a takeover after being judged dead).
    #[inline]
    pub(crate) fn release(&self, reentry: Reentry) -> Result<(), i32> {
        self.release_word(reentry).map(|_| ())
    }

    /// As [`release`](Self::release) for a lock taken with
    /// [`acquire_spinning`](Self::acquire_spinning): `Ok(true)` when someone had
    /// asked, with [`request_notify`](Self::request_notify), to be woken after it.
    #[inline]
    pub(crate) fn release_notifying(&self) -> Result<bool, i32> {
        self.release_word(Reentry::Refuse).map(|old| old & NOTIFY != 0)
    }

    /// Asks the current holder's release (or, if the lock is free, the next
    /// holder's) to report that someone waits for what holders do under it. The
    /// caller looks at the state it waits for after this: see [`NOTIFY`].
    pub(crate) fn request_notify(&self) {
        self.word.fetch_or(NOTIFY, Ordering::SeqCst);
    }

    /// Releases one hold, returning the word as it was just before.
    #[inline]
    fn release_word(&self, reentry: Reentry) -> Result<u32, i32> {
        let me = sys::current_thread();
        let mut cur = self.word.load(Ordering::Relaxed);
        // The id alone decides: a lock taken over from us names its new owner, and no
        // two live threads share an id.
        if cur & TID_MASK != me.tid {
            return Err(libc::EPERM);
        }
        if reentry == Reentry::Count {
            let depth = self.depth.load(Ordering::Relaxed);
            if depth > 1 {
                self.depth.store(depth - 1, Ordering::Relaxed);
                return Ok(0);
            }
            self.depth.store(0, Ordering::Relaxed);
        }
        // A compare-exchange, not a swap: only our own hold may be released. AcqRel:
        // a NOTIFY seen here was set before the notifier looked at the state, so
        // the wake-up the caller sends comes after that look.
        loop {
            match self.word.compare_exchange_weak(cur, 0, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) if now & TID_MASK == me.tid => cur = now, // a waiter set its bit
                Err(_) => return Err(libc::EPERM),
            }
        }
        // No tag outlives its hold: a later thread that reuses our id and is caught
        // between its compare-exchange and its own tag store must not be judged
        // "recycled" (and its lock taken over while it runs) by our stale start time.
        // Only our own tag: a new owner may already have written its own, which its
        // re-entry check (`held_by_my_id`) relies on.
        let _ = self.owner_tag.compare_exchange(tag(me), 0, Ordering::Relaxed, Ordering::Relaxed);
        if cur & WAITERS != 0 {
            wake(&self.word, 1);
        }
        Ok(cur)
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(1, Ordering::Release);
    }

    /// Whether some thread holds the lock now (a dead holder too, until a locker
    /// takes it over). A snapshot: it may change as soon as it is read.
    pub(crate) fn is_locked(&self) -> bool {
        self.word.load(Ordering::Acquire) & TID_MASK != 0
    }

    #[inline]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) != 0
    }

    pub(crate) fn clear_poison(&self) {
        self.poisoned.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock whose word is `word`, everything else zero.
    fn with_word(word: u32) -> RawMutex {
        RawMutex { word: word.into(), depth: 0.into(), poisoned: 0.into(), _reserved: 0.into(), owner_tag: 0.into() }
    }

    fn take(lock: &RawMutex) {
        assert_eq!(lock.acquire_spinning(Wait::Never), Acquire::Clean);
    }

    #[test]
    fn a_notify_request_is_reported_by_exactly_one_release() {
        let lock = with_word(0);
        // Asked while held: this holder's release reports it.
        take(&lock);
        lock.request_notify();
        assert_eq!(lock.release_notifying(), Ok(true));
        take(&lock);
        assert_eq!(lock.release_notifying(), Ok(false), "the release cleared the request");
        // Asked while free: the next holder keeps the bit and reports it.
        lock.request_notify();
        take(&lock);
        assert_eq!(lock.word.load(Ordering::Relaxed) & NOTIFY, NOTIFY);
        assert_eq!(lock.release_notifying(), Ok(true));
        assert_eq!(lock.word.load(Ordering::Relaxed), 0);
    }

    /// Regression: a tag left behind named a thread id that a later thread could
    /// reuse; caught between its compare-exchange and its tag store, that thread was
    /// judged "recycled" twice and its lock taken over while it ran.
    #[test]
    fn a_release_leaves_no_owner_tag_behind() {
        let lock = with_word(0);
        take(&lock);
        assert_ne!(lock.owner_tag.load(Ordering::Relaxed), 0);
        assert_eq!(lock.release(Reentry::Refuse), Ok(()));
        assert_eq!(lock.owner_tag.load(Ordering::Relaxed), 0);
        // A re-entrant hold keeps its tag until the last release.
        assert_eq!(lock.acquire(Wait::Never, Reentry::Count), Acquire::Clean);
        assert_eq!(lock.acquire(Wait::Never, Reentry::Count), Acquire::Clean);
        assert_eq!(lock.release(Reentry::Count), Ok(()));
        assert_ne!(lock.owner_tag.load(Ordering::Relaxed), 0);
        assert_eq!(lock.release(Reentry::Count), Ok(()));
        assert_eq!(lock.owner_tag.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_pending_notify_request_does_not_hide_a_free_lock() {
        let lock = with_word(NOTIFY);
        assert_eq!(lock.acquire(Wait::Never, Reentry::Refuse), Acquire::Clean);
        assert_eq!(lock.release(Reentry::Refuse), Ok(()));
        let lock = with_word(NOTIFY);
        assert_eq!(lock.acquire(Wait::timeout(Duration::from_secs(5)), Reentry::Refuse), Acquire::Clean);
    }

    /// Who the word names, in the exhaustive model below.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Holder {
        Free,
        /// A thread that has exited (killed holding the lock).
        Dead,
        /// A live thread of this process, with its true tag.
        LiveOther,
        /// A live thread's id, with a tag of another start time: a recycled id.
        Recycled,
        /// The calling thread, with its own tag: it holds the lock.
        MineOwnTag,
        /// The calling thread's id with another start time's tag: an earlier thread
        /// with this id died holding it.
        MineForeignTag,
    }

    /// The lock with owner death, as a state machine: every state the word and its
    /// fields can be in (who holds it, the waiter and notify bits, the poison), an
    /// acquisition of each kind (timed, try; counting and refusing re-entry) from
    /// each, and the outcome and state it must leave. 192 cases.
    #[test]
    fn every_state_of_the_lock_acquires_as_specified() {
        let me = sys::current_thread();
        let dead = std::thread::spawn(sys::current_thread).join().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let live_thread = std::thread::spawn(move || {
            tx.send(sys::current_thread()).unwrap();
            let _ = stop_rx.recv();
        });
        let live = rx.recv().unwrap();
        let holders = [
            Holder::Free,
            Holder::Dead,
            Holder::LiveOther,
            Holder::Recycled,
            Holder::MineOwnTag,
            Holder::MineForeignTag,
        ];
        // Kept alive to the end, so that no two cases share an address (the try
        // path rate-limits its /proc looks per lock address).
        let mut locks = Vec::new();
        let mut cases = 0;
        for holder in holders {
            for bits in [0, WAITERS, NOTIFY, WAITERS | NOTIFY] {
                for poisoned in [false, true] {
                    for timed in [true, false] {
                        for reentry in [Reentry::Refuse, Reentry::Count] {
                            let (owner, owner_tag) = match holder {
                                Holder::Free => (0, 0),
                                Holder::Dead => (dead.tid, tag(dead)),
                                Holder::LiveOther => (live.tid, tag(live)),
                                Holder::Recycled => (live.tid, (u64::from(live.tid) << 32) | u64::from(live.start ^ 1)),
                                Holder::MineOwnTag => (me.tid, tag(me)),
                                Holder::MineForeignTag => (me.tid, (u64::from(me.tid) << 32) | u64::from(me.start ^ 1)),
                            };
                            let lock = Box::new(with_word(owner | bits));
                            lock.owner_tag.store(owner_tag, Ordering::Relaxed);
                            lock.depth.store(u32::from(owner != 0), Ordering::Relaxed);
                            lock.poisoned.store(u32::from(poisoned), Ordering::Relaxed);
                            let wait = if timed { Wait::timeout(Duration::from_millis(80)) } else { Wait::Never };
                            let started = Instant::now();
                            let got = lock.acquire(wait, reentry);
                            let took = started.elapsed();
                            let case =
                                format!("{holder:?} bits {bits:#x} poisoned {poisoned} timed {timed} {reentry:?}");
                            let held_by_me = lock.word.load(Ordering::Relaxed) & TID_MASK == me.tid;
                            let clean_or_poisoned = if poisoned { Acquire::Poisoned } else { Acquire::Clean };
                            match (holder, timed, reentry) {
                                (Holder::Free, ..) => {
                                    assert_eq!(got, clean_or_poisoned, "{case}");
                                    assert!(held_by_me, "{case}");
                                    assert_eq!(
                                        lock.word.load(Ordering::Relaxed) & NOTIFY,
                                        bits & NOTIFY,
                                        "{case}: NOTIFY kept"
                                    );
                                    assert_eq!(lock.owner_tag.load(Ordering::Relaxed), tag(me), "{case}");
                                }
                                (Holder::Dead | Holder::MineForeignTag, ..) | (Holder::Recycled, true, _) => {
                                    assert_eq!(
                                        got,
                                        Acquire::Poisoned,
                                        "{case}: a dead owner's lock is taken over, poisoned"
                                    );
                                    assert!(held_by_me && lock.is_poisoned(), "{case}");
                                    assert_eq!(lock.depth.load(Ordering::Relaxed), 1, "{case}: a fresh hold");
                                }
                                (Holder::LiveOther, true, _) => {
                                    assert_eq!(got, Acquire::TimedOut, "{case}");
                                    assert!(took >= Duration::from_millis(80), "{case}: gave up early");
                                    assert_eq!(lock.word.load(Ordering::Relaxed) & TID_MASK, live.tid, "{case}");
                                }
                                (Holder::LiveOther | Holder::Recycled, false, _) => {
                                    // A try never takes from an owner that may live.
                                    assert_eq!(got, Acquire::WouldBlock, "{case}");
                                    assert_eq!(lock.word.load(Ordering::Relaxed) & TID_MASK, live.tid, "{case}");
                                }
                                (Holder::MineOwnTag, _, Reentry::Refuse) => {
                                    assert_eq!(got, Acquire::Deadlock, "{case}")
                                }
                                (Holder::MineOwnTag, _, Reentry::Count) => {
                                    assert_eq!(got, clean_or_poisoned, "{case}");
                                    assert_eq!(lock.depth.load(Ordering::Relaxed), 2, "{case}: one level deeper");
                                }
                            }
                            assert!(took < Duration::from_secs(2), "{case}: took {took:?}");
                            cases += 1;
                            locks.push(lock);
                        }
                    }
                }
            }
        }
        stop_tx.send(()).unwrap();
        live_thread.join().unwrap();
        assert_eq!(cases, 192);
    }
}

//! `Condition`: a process-shared condition variable with its lock
//! (Python's `multiprocessing.Condition`).
//!
//! ## Protocol
//! `state` packs four 16-bit fields in one word, so each step is one
//! compare-and-swap: `epoch` (bumped by every notify that finds waiters), `old`
//! (waiters registered before the latest such notify, not yet notified), `tokens`
//! (notifications not yet claimed) and `new` (waiters registered since). `seq` is
//! the futex word waiters sleep on.
//!
//! - *wait*: holding the lock, `new += 1`, remember `epoch`, read `seq`; release
//!   the lock; then loop: claim a token and return, or sleep on `seq`. Only a waiter
//!   whose remembered epoch is no longer current, one registered *before* some
//!   notify, may claim a token: a waiter that arrives after `notify(1)` cannot take
//!   the notification from the waiter it was meant for. On time-out: claim a token
//!   if one raced in, else give back our count (`old` or `new`, by epoch). Then
//!   re-acquire the lock.
//! - *notify(n)*: `old += new; new = 0`, then move `k = min(n, old)` from `old` to
//!   `tokens`, bump `epoch` and `seq`, wake every sleeper (each re-checks; the futex
//!   cannot tell old waiters from new ones), with no system call if none sleeps.
//!
//! A waiter spins, then yields its CPU, then sleeps, like the other hand-off
//! primitives: when both processes run, the notifier usually comes within a
//! microsecond or two, and a sleep and wake-up cost more than that. Once notified,
//! it takes the lock back spinning too, as the notifier is about to let it go:
//! sleeping on the lock a second time was most of a hand-off's cost (18-23 µs
//! measured before, against a semaphore round trip of 0.23 µs).
//!
//! Every waiter that leaves either claims a token or gives back its count, so
//! `notify(n)` releases at most `n` waiters, and a notification is never lost to a
//! waiter that has already timed out. Because the counters are atomic, `notify` does
//! not need the lock (Python requires it; std does not). Any earlier waiter may take
//! a token, so the order among waiters is not Python's strict FIFO.
//!
//! **Crashes and scribbles.** A waiter killed while waiting leaves its count behind:
//! a later notify may then make a token for it, which another earlier waiter claims
//! (an extra, spurious wake-up), never a lost one. A wait can also return early if
//! 65 536 notifies wrap the epoch while it sleeps. So loop on your predicate, or use
//! [`ConditionGuard::wait_for`]. Sleepers re-check every [`safety_poll`](crate::sync::wait::safety_poll), so damaged
//! counters cannot strand them. The lock itself is the robust [`Lock`]: a holder that
//! dies poisons it and the next waiter re-acquires it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::error::{lock_result, LockError, LockResult};
use super::lock::Lock;
use super::raw_mutex::{Acquire, RawMutex, Reentry};
use super::wait::{safety_poll, sleep_on, spin, wake, yield_until, Wait};
use crate::segment::transfer::serde_as_segments;
use crate::segment::{self, Backing, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, View};

#[repr(C)]
pub(crate) struct ConditionBody {
    /// The condition's own lock; unused when built [`Condition::with_lock`].
    mutex: RawMutex,
    state: AtomicU64,
    seq: AtomicU32,
    /// Waiters asleep (or about to sleep) on `seq`: a notify that finds none makes
    /// no system call. A sleeper killed asleep leaves its count: later notifies then
    /// pay a futex call each, nothing worse.
    sleepers: AtomicU32,
}

/// The four counters of `state`, unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    epoch: u16,
    old: u16,
    tokens: u16,
    new: u16,
}

impl State {
    fn unpack(s: u64) -> State {
        State { epoch: (s >> 48) as u16, old: (s >> 32) as u16, tokens: (s >> 16) as u16, new: s as u16 }
    }

    fn pack(self) -> u64 {
        (u64::from(self.epoch) << 48)
            | (u64::from(self.old) << 32)
            | (u64::from(self.tokens) << 16)
            | u64::from(self.new)
    }
}

/// A condition variable shared between processes, with the [`Lock`] it waits under.
///
/// Wait through the guard that [`acquire`](Condition::acquire) returns:
///
/// ```
/// use std::time::Duration;
/// let cond = shmproc::Condition::new()?;
/// let mut guard = cond.acquire().unwrap();
/// // Nobody notifies: the wait times out, still holding the lock afterwards.
/// assert_eq!(guard.wait_timeout(Duration::from_millis(5)).unwrap(), false);
/// cond.notify_all();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    body: View<ConditionBody>,
    lock: Lock,
}

impl Condition {
    /// A condition with its own lock, in an anonymous segment.
    pub fn new() -> Result<Condition, SegmentCreateError> {
        Self::create(Backing::Anonymous, None)
    }

    /// A condition waiting under `lock`, shared with whatever else uses it (Python's
    /// `Condition(lock)`).
    pub fn with_lock(lock: &Lock) -> Result<Condition, SegmentCreateError> {
        Self::create(Backing::Anonymous, Some(lock.clone()))
    }

    /// A condition with its own lock, in a named segment.
    pub fn new_named() -> Result<Condition, SegmentCreateError> {
        Self::create(Backing::Named, None)
    }

    /// A condition with its own lock, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](Condition::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str) -> Result<Condition, SegmentCreateError> {
        Self::create(Backing::NamedAs(name), None)
    }

    /// Attaches to the named condition `name` (one made by `new_named`).
    pub fn open(name: &str) -> Result<Condition, SegmentOpenError> {
        let body: View<ConditionBody> = segment::open_view(name, ObjectKind::Condition)?;
        let lock = Lock::from_view(Self::own_lock(&body));
        Ok(Condition { body, lock })
    }

    /// A condition handed to this process: its segment, and its lock's.
    fn attach(seg: Arc<Segment>, lock_seg: Arc<Segment>) -> Result<Condition, SegmentOpenError> {
        Ok(Condition { body: segment::view_of(seg, &[ObjectKind::Condition])?, lock: Lock::from_segment(lock_seg)? })
    }

    fn create(backing: Backing, lock: Option<Lock>) -> Result<Condition, SegmentCreateError> {
        // Zeroed: a free lock and nobody waiting.
        let body = segment::create_view(ObjectKind::Condition, backing, |_: *mut ConditionBody| Ok(()))?;
        let lock = lock.unwrap_or_else(|| Lock::from_view(Self::own_lock(&body)));
        Ok(Condition { body, lock })
    }

    fn own_lock(body: &View<ConditionBody>) -> View<RawMutex> {
        // SAFETY: the mutex is the body's first field (offset 0, repr(C)), initialised
        // by the creator.
        unsafe { View::new(body.segment().clone(), 0) }
    }

    /// The segment's name, for a condition made by `new_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.body.segment().name()
    }

    /// The lock this condition waits under (Python's `cond._lock`, or the `lock` given).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Blocks until the condition's lock is acquired.
    pub fn acquire(&self) -> LockResult<ConditionGuard<'_>> {
        self.acquire_with(Wait::Forever)
    }

    /// Acquires the lock only if that needs no waiting.
    pub fn try_acquire(&self) -> LockResult<ConditionGuard<'_>> {
        self.acquire_with(Wait::Never)
    }

    /// Waits at most `timeout` for the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<ConditionGuard<'_>> {
        self.acquire_with(Wait::timeout(timeout))
    }

    /// Waits until `deadline` at the latest for the lock.
    pub fn acquire_deadline(&self, deadline: Instant) -> LockResult<ConditionGuard<'_>> {
        self.acquire_with(Wait::Until(deadline))
    }

    fn acquire_with(&self, wait: Wait) -> LockResult<ConditionGuard<'_>> {
        let guard =
            || ConditionGuard { cond: self, held: true, panicking: std::thread::panicking(), _not_send: PhantomData };
        lock_result(self.lock.raw().acquire(wait, Reentry::Refuse), guard)
    }

    /// Wakes up to `n` waiters (Python's `notify(n)`). Holding the lock is not required.
    pub fn notify(&self, n: u32) {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        let notified = self.update(|mut st| {
            st.old = st.old.saturating_add(st.new);
            st.new = 0;
            let k = st.old.min(n).min(u16::MAX - st.tokens);
            if k == 0 {
                return None;
            }
            st.old -= k;
            st.tokens += k;
            st.epoch = st.epoch.wrapping_add(1);
            Some(st)
        });
        if notified.is_some() {
            self.body.seq.fetch_add(1, Ordering::Release);
            // Pairs with the fence in `sleep_until_notified`: either that sleeper's
            // count is seen here, or it sees the token before it sleeps.
            fence(Ordering::SeqCst);
            if self.body.sleepers.load(Ordering::Relaxed) != 0 {
                wake(&self.body.seq, u32::MAX);
            }
        }
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    /// Applies `f` to the counters atomically; the state before, if `f` changed it.
    fn update(&self, mut f: impl FnMut(State) -> Option<State>) -> Option<State> {
        self.body
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| f(State::unpack(s)).map(State::pack))
            .ok()
            .map(State::unpack)
    }

    /// Counts us as a new waiter; our epoch, or `None` if 65 535 already wait.
    fn register_waiter(&self) -> Option<u16> {
        let before = self.update(|mut st| {
            st.new = st.new.checked_add(1)?;
            Some(st)
        })?;
        Some(before.epoch)
    }

    /// Claims a notification made since we registered at `epoch`.
    fn claim_token(&self, epoch: u16) -> bool {
        self.update(|mut st| {
            if st.epoch == epoch || st.tokens == 0 {
                return None;
            }
            st.tokens -= 1;
            Some(st)
        })
        .is_some()
    }

    /// Leaves after a time-out: take a token that raced in, or give back our count.
    fn depart(&self, epoch: u16) -> bool {
        let mut notified = false;
        self.update(|mut st| {
            notified = false;
            if st.epoch == epoch {
                st.new = st.new.checked_sub(1)?; // None: counters damaged, nothing to give back
            } else if st.tokens > 0 {
                st.tokens -= 1;
                notified = true;
            } else {
                st.old = st.old.checked_sub(1)?;
            }
            Some(st)
        });
        notified
    }

    /// Waits for a notification with the lock released; `true` if notified.
    fn wait_unlocked(&self, epoch: u16, wait: Wait) -> bool {
        if spin(|| self.claim_token(epoch).then_some(())).is_some()
            || yield_until(wait, &mut || self.claim_token(epoch))
        {
            return true;
        }
        loop {
            match self.sleep_until_notified(epoch, wait) {
                Some(true) => return true,
                Some(false) => {}
                None => return self.depart(epoch),
            }
        }
    }

    /// One sleep: `Some(true)` with a token claimed, `Some(false)` woken without one,
    /// `None` once `wait` has expired.
    fn sleep_until_notified(&self, epoch: u16, wait: Wait) -> Option<bool> {
        let b = &*self.body;
        b.sleepers.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let seq = b.seq.load(Ordering::Acquire);
        let outcome = if self.claim_token(epoch) {
            Some(true)
        } else if sleep_on(&b.seq, seq, wait, Some(safety_poll())) {
            self.claim_token(epoch).then_some(true).or(Some(false))
        } else {
            None
        };
        b.sleepers.fetch_sub(1, Ordering::Relaxed);
        outcome
    }
}

serde_as_segments!(Condition, 2, |c| [c.body.segment(), c.lock.segment()], |segs| {
    let [seg, lock_seg] = segs;
    Condition::attach(seg, lock_seg)
});

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = State::unpack(self.body.state.load(Ordering::Relaxed));
        f.debug_struct("Condition")
            .field("name", &self.name())
            .field("waiting", &(u32::from(st.old) + u32::from(st.new)))
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

/// The held lock of a [`Condition`], through which the holder waits.
///
/// Released when dropped; dropping it during a panic poisons the lock.
///
/// ```
/// use shmproc::{Condition, Process, RawValue};
/// use std::time::Duration;
///
/// fn finish((cond, done): (Condition, RawValue<u32>)) {
///     // Changed under the lock, so a waiter cannot miss it between check and sleep.
///     let _guard = cond.acquire().unwrap();
///     done.set(1);
///     cond.notify_all();
/// }
///
/// let cond = Condition::new()?;
/// let done = RawValue::new(0u32)?;
/// let mut p = Process::new(finish, (cond.clone(), done.clone()));
/// p.start()?;
/// let mut guard = cond.acquire().unwrap();
/// // The lock is let go while waiting and held again each time the predicate runs.
/// assert!(guard.wait_for(|| done.get() == 1, Some(Duration::from_secs(10))).unwrap());
/// drop(guard);
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    /// False only after re-acquiring failed because the lock was damaged.
    held: bool,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl ConditionGuard<'_> {
    /// Releases the lock, waits for a notification, and re-acquires the lock.
    ///
    /// May also return after a waiter died (see the module docs): check your
    /// condition in a loop, or use [`wait_for`](Self::wait_for).
    pub fn wait(&mut self) -> Result<(), LockError<()>> {
        self.wait_with(Wait::Forever).map(drop).map_err(|e| e.map(drop))
    }

    /// As [`wait`](Self::wait), giving up after `timeout`; `Ok(true)` if notified,
    /// `Ok(false)` on time-out (the lock is held again either way).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool, LockError<bool>> {
        self.wait_with(Wait::timeout(timeout))
    }

    /// As [`wait_timeout`](Self::wait_timeout), with a deadline.
    pub fn wait_deadline(&mut self, deadline: Instant) -> Result<bool, LockError<bool>> {
        self.wait_with(Wait::Until(deadline))
    }

    /// Waits until `predicate` holds, or `timeout` (if any) passes; returns the
    /// predicate's last value, as Python's `wait_for` does. The predicate runs with
    /// the lock held.
    pub fn wait_for(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, LockError<bool>> {
        let wait = timeout.map_or(Wait::Forever, Wait::timeout);
        let mut poisoned = false;
        let mut ok = predicate();
        while !ok && !wait.expired() {
            match self.wait_with(wait) {
                Ok(_) => {}
                Err(LockError::Poisoned(_)) => poisoned = true,
                Err(e) => return Err(e),
            }
            ok = predicate();
        }
        if poisoned {
            Err(LockError::Poisoned(PoisonError::new(ok)))
        } else {
            Ok(ok)
        }
    }

    fn wait_with(&mut self, wait: Wait) -> Result<bool, LockError<bool>> {
        if !self.held {
            return Err(LockError::Corrupted { code: libc::ENOTRECOVERABLE });
        }
        let raw = self.cond.lock.raw();
        let Some(epoch) = self.cond.register_waiter() else {
            return Ok(true); // 65 535 waiters already: a spurious wake-up, allowed
        };
        if let Err(code) = raw.release(Reentry::Refuse) {
            self.cond.depart(epoch);
            self.held = false;
            return Err(LockError::Corrupted { code });
        }
        let notified = self.cond.wait_unlocked(epoch, wait);
        match raw.acquire_spinning(Wait::Forever) {
            Acquire::Clean => Ok(notified),
            Acquire::Poisoned => Err(LockError::Poisoned(PoisonError::new(notified))),
            Acquire::Corrupted(code) => {
                self.held = false;
                Err(LockError::Corrupted { code })
            }
            other => {
                // WouldBlock/TimedOut cannot come from an unbounded wait, and Deadlock
                // cannot either: we released the lock just above.
                self.held = false;
                Err(LockError::Corrupted {
                    code: if other == Acquire::Deadlock { libc::EDEADLK } else { libc::EINVAL },
                })
            }
        }
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let raw = self.cond.lock.raw();
        if !self.panicking && std::thread::panicking() {
            raw.poison();
        }
        let _ = raw.release(Reentry::Refuse);
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard").field("held", &self.held).finish_non_exhaustive()
    }
}

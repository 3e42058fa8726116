//! `RLock`: a robust, process-shared re-entrant lock (Python's `multiprocessing.RLock`).

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::error::{lock_result, LockResult, ReleaseError};
use super::raw_mutex::{RawMutex, Reentry};
use super::wait::Wait;
use crate::segment::transfer::serde_as_segments;
use crate::segment::{self, Backing, ObjectKind, SegmentCreateError, SegmentOpenError, View};

/// A re-entrant lock shared between processes: the thread that holds it may acquire
/// it again, and must release it as many times.
///
/// Re-entry is counted per owning thread of a process. Robust like [`Lock`](crate::Lock):
/// if the holder dies, the next acquirer gets it, poisoned.
///
/// Each `acquire` returns a guard that releases one level when dropped. For Python's
/// unpaired style, [`RLockGuard::detach`] keeps the hold without a guard and
/// [`RLock::release`] gives one level back; `release` from a thread that does not hold
/// the lock is [`ReleaseError::NotOwner`] (Python's RuntimeError).
///
/// ```
/// let r = shmproc::RLock::new()?;
/// let outer = r.acquire().unwrap();
/// let inner = r.acquire().unwrap(); // same thread: re-entry, no deadlock
/// drop(inner);
/// drop(outer);
/// assert_eq!(r.release(), Err(shmproc::ReleaseError::NotOwner));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    raw: View<RawMutex>,
}

impl RLock {
    /// A new, unlocked re-entrant lock in an anonymous segment.
    pub fn new() -> Result<RLock, SegmentCreateError> {
        Self::create(Backing::Anonymous)
    }

    /// A new re-entrant lock in a named segment (see [`Lock::new_named`](crate::Lock::new_named)).
    pub fn new_named() -> Result<RLock, SegmentCreateError> {
        Self::create(Backing::Named)
    }

    /// A new re-entrant lock under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](RLock::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str) -> Result<RLock, SegmentCreateError> {
        Self::create(Backing::NamedAs(name))
    }

    /// Attaches to the named re-entrant lock `name`.
    pub fn open(name: &str) -> Result<RLock, SegmentOpenError> {
        Ok(RLock { raw: segment::open_view(name, ObjectKind::RLock)? })
    }

    fn create(backing: Backing) -> Result<RLock, SegmentCreateError> {
        // A zeroed RawMutex is a free lock.
        let raw = segment::create_view(ObjectKind::RLock, backing, |_: *mut RawMutex| Ok(()))?;
        Ok(RLock { raw })
    }

    /// The segment's name, for a lock made by `new_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.raw.segment().name()
    }

    /// Blocks until the lock is acquired (at once if this thread holds it).
    pub fn acquire(&self) -> LockResult<RLockGuard<'_>> {
        self.acquire_with(Wait::Forever)
    }

    /// Acquires the lock only if that needs no waiting.
    pub fn try_acquire(&self) -> LockResult<RLockGuard<'_>> {
        self.acquire_with(Wait::Never)
    }

    /// Waits at most `timeout` for the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<RLockGuard<'_>> {
        self.acquire_with(Wait::timeout(timeout))
    }

    /// Waits until `deadline` at the latest for the lock.
    pub fn acquire_deadline(&self, deadline: Instant) -> LockResult<RLockGuard<'_>> {
        self.acquire_with(Wait::Until(deadline))
    }

    fn acquire_with(&self, wait: Wait) -> LockResult<RLockGuard<'_>> {
        let guard = || RLockGuard { lock: self, panicking: std::thread::panicking(), _not_send: PhantomData };
        lock_result(self.raw.acquire(wait, Reentry::Count), guard)
    }

    /// Gives back one level of a hold kept by [`RLockGuard::detach`].
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.raw.release(Reentry::Count).map_err(|_| ReleaseError::NotOwner)
    }

    /// Whether a holder died or panicked holding the lock since the poison was cleared.
    pub fn is_poisoned(&self) -> bool {
        self.raw.is_poisoned()
    }

    /// Clears the poison, in every process.
    pub fn clear_poison(&self) {
        self.raw.clear_poison();
    }
}

serde_as_segments!(RLock, 1, |l| [l.raw.segment()], |segs| {
    let [seg] = segs;
    Ok(RLock { raw: segment::view_of(seg, &[ObjectKind::RLock])? })
});

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("name", &self.name())
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

/// One level of hold on an [`RLock`]; dropping it releases that level.
///
/// ```
/// let r = shmproc::RLock::new()?;
/// let outer = r.acquire().unwrap();
/// // Python's unpaired style: keep a level with no guard, and give it back later.
/// r.acquire().unwrap().detach();
/// r.release()?;
/// drop(outer); // the last level: the lock is free
/// assert_eq!(r.release(), Err(shmproc::ReleaseError::NotOwner));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Keeps this level held with no guard; give it back with [`RLock::release`].
    pub fn detach(self) {
        std::mem::forget(self);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.lock.raw.poison();
        }
        // Fails only if `release` already gave this level back: nothing left to do.
        let _ = self.lock.raw.release(Reentry::Count);
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").field("lock", self.lock).finish()
    }
}

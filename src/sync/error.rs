//! The errors of the sync layer, shaped like `std::sync`'s.

use std::error::Error;
use std::fmt;
use std::sync::PoisonError;

use super::raw_mutex::Acquire;

/// Why acquiring a lock did not simply succeed.
///
/// Like `std::sync::TryLockError`, with two more cases that only a lock in shared
/// memory has: the calling thread already holds it ([`Deadlock`](Self::Deadlock), which
/// std would leave as a hang), and its memory was damaged by another process
/// ([`Corrupted`](Self::Corrupted)). `acquire()` / `lock()` return only `Poisoned`,
/// `Deadlock` and `Corrupted`; `try_*` may add `WouldBlock`; `*_timeout` and
/// `*_deadline` may add `Timeout`.
///
/// ```
/// use shmproc::{Lock, LockError};
///
/// let lock = Lock::new()?;
/// let guard = lock.acquire().unwrap();
/// // Waiting for ourselves would never end: said at once, not a hang.
/// assert!(matches!(lock.try_acquire(), Err(LockError::Deadlock)));
/// drop(guard);
///
/// // A holder that panics poisons the lock; the next taker still gets it.
/// let _ = std::thread::scope(|s| s.spawn(|| {
///     let _held = lock.acquire().unwrap();
///     panic!("mid-update");
/// }).join());
/// match lock.acquire() {
///     Ok(_) => unreachable!("the lock is poisoned"),
///     Err(LockError::Poisoned(p)) => {
///         let _guard = p.into_inner(); // repair the data here, then:
///         lock.clear_poison();
///     }
///     Err(e) => return Err(e.to_string().into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum LockError<G> {
    /// The lock *was* acquired, but a holder died (killed, crashed) or panicked while
    /// holding it. The guard is inside: take it with [`PoisonError::into_inner`] to
    /// use the data anyway, and clear the poison once it is repaired.
    Poisoned(PoisonError<G>),
    /// `try_*`: the lock is held elsewhere.
    WouldBlock,
    /// `*_timeout` / `*_deadline`: the deadline passed first.
    Timeout,
    /// The calling thread already holds this lock; waiting would never end.
    Deadlock,
    /// The lock's state in shared memory is damaged.
    Corrupted {
        /// An errno naming what was found: for example `EPERM`, the lock was taken
        /// from us while we held it; `EAGAIN`, an `RLock`'s re-entry count overflowed.
        code: i32,
    },
}

/// The result of acquiring a lock: the guard, or why not.
///
/// Its error holds the guard (on `Poisoned`), which borrows the lock, so `?` cannot
/// send it up to a `Box<dyn Error>`, as with std's `Mutex`. Take the guard out of
/// a poisoned result, or turn the error into a string first:
///
/// ```
/// use shmproc::{Lock, LockGuard, LockResult};
///
/// let lock = Lock::new()?;
/// let r: LockResult<LockGuard<'_>> = lock.acquire();
/// // Poisoned still means acquired: keep the guard; any other error goes up as text.
/// let guard = r.or_else(|e| e.into_inner().ok_or("lock not acquired"))?;
/// assert!(lock.locked());
/// drop(guard);
/// let _guard = lock.acquire().map_err(|e| e.to_string())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type LockResult<G> = Result<G, LockError<G>>;

impl<G> LockError<G> {
    /// The guard, if the lock was acquired (that is, if this is `Poisoned`).
    pub fn into_inner(self) -> Option<G> {
        match self {
            LockError::Poisoned(p) => Some(p.into_inner()),
            _ => None,
        }
    }

    /// Whether the lock was acquired but is poisoned.
    pub fn is_poisoned(&self) -> bool {
        matches!(self, LockError::Poisoned(_))
    }

    /// Whether a deadline passed (`Timeout`).
    pub fn is_timeout(&self) -> bool {
        matches!(self, LockError::Timeout)
    }

    /// Replaces the guard inside `Poisoned`, keeping every other case.
    pub(crate) fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::Poisoned(p) => LockError::Poisoned(PoisonError::new(f(p.into_inner()))),
            LockError::WouldBlock => LockError::WouldBlock,
            LockError::Timeout => LockError::Timeout,
            LockError::Deadlock => LockError::Deadlock,
            LockError::Corrupted { code } => LockError::Corrupted { code },
        }
    }
}

/// Turns a raw acquisition into the public result, building the guard only when
/// the lock is held.
#[inline]
pub(crate) fn lock_result<G>(outcome: Acquire, guard: impl FnOnce() -> G) -> LockResult<G> {
    match outcome {
        Acquire::Clean => Ok(guard()),
        Acquire::Poisoned => Err(LockError::Poisoned(PoisonError::new(guard()))),
        Acquire::WouldBlock => Err(LockError::WouldBlock),
        Acquire::TimedOut => Err(LockError::Timeout),
        Acquire::Deadlock => Err(LockError::Deadlock),
        Acquire::Corrupted(code) => Err(LockError::Corrupted { code }),
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Poisoned(_) => f.write_str("Poisoned(..)"),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::Timeout => f.write_str("Timeout"),
            LockError::Deadlock => f.write_str("Deadlock"),
            LockError::Corrupted { code } => f.debug_struct("Corrupted").field("code", code).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Poisoned(_) => {
                f.write_str("lock acquired, but poisoned: a holder died or panicked while holding it")
            }
            LockError::WouldBlock => f.write_str("lock is held elsewhere"),
            LockError::Timeout => f.write_str("timed out waiting for the lock"),
            LockError::Deadlock => f.write_str("the calling thread already holds this lock"),
            LockError::Corrupted { code } => {
                write!(f, "lock state in shared memory is damaged ({})", std::io::Error::from_raw_os_error(*code))
            }
        }
    }
}

impl<G> Error for LockError<G> {}

/// Releasing an `RLock` or a semaphore failed; nothing was released.
///
/// ```
/// use shmproc::{BoundedSemaphore, ReleaseError, RLock};
///
/// let s = BoundedSemaphore::new(1)?;
/// // Nothing was acquired, so a release would raise it above its bound.
/// match s.release() {
///     Err(ReleaseError::TooManyReleases { max }) => assert_eq!(max, 1),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(RLock::new()?.release(), Err(ReleaseError::NotOwner));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// `RLock::release` by a thread that does not hold it (Python's RuntimeError).
    #[error("cannot release an RLock the calling thread does not hold")]
    NotOwner,
    /// `BoundedSemaphore::release` above its initial value (Python's ValueError), or a
    /// `Semaphore` already at `u32::MAX`.
    #[error("semaphore released too many times (its maximum is {max})")]
    TooManyReleases {
        /// The value the semaphore may not exceed.
        max: u32,
    },
}

/// Waiting at a [`Barrier`](crate::Barrier) failed (Python's `BrokenBarrierError`).
///
/// ```
/// use shmproc::{Barrier, BarrierError};
/// use std::time::Duration;
///
/// let b = Barrier::new(2)?;
/// // The other party never comes: this one gives up, and breaks the barrier for all.
/// match b.wait_timeout(Duration::from_millis(10)) {
///     Err(BarrierError::Broken) => assert!(b.broken()),
///     other => panic!("{other:?}"),
/// }
/// b.reset()?; // usable again
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier is broken: a party timed out, died while waiting, or called
    /// `abort`; or `reset` was called while this party waited. It stays broken until
    /// `reset`.
    #[error("barrier is broken")]
    Broken,
    /// The barrier's state in shared memory is damaged.
    #[error("barrier state in shared memory is damaged")]
    Corrupted,
}

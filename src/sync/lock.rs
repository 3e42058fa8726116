//! `Lock`: a robust, process-shared mutual-exclusion lock (Python's `multiprocessing.Lock`).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{lock_result, LockResult};
use super::raw_mutex::{RawMutex, Reentry};
use super::wait::Wait;
use crate::segment::transfer::serde_as_segments;
use crate::segment::{self, Backing, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, View};

/// A lock shared between processes, robust against a holder's death.
///
/// Cloning gives another handle to the same lock. A forked child can use the lock
/// it inherited; a named lock (`new_named`) can be opened by any process of the same
/// user with [`Lock::open`].
///
/// Unlike Python's `Lock`, which any process may release, this lock is owned by the
/// thread that acquired it and is released by dropping its guard. That ownership is
/// what makes it robust: if the holder dies, the next `acquire` gets the lock at once
/// and reports it as [`LockError::Poisoned`](crate::LockError::Poisoned), instead of
/// waiting forever as Python does. Acquiring it again from the thread that holds it is
/// [`LockError::Deadlock`](crate::LockError::Deadlock), not a hang. To hand a signal
/// from one process to another, use a [`Semaphore`](crate::Semaphore).
///
/// ```
/// let lock = shmproc::Lock::new()?;
/// {
///     let _guard = lock.acquire().unwrap();
///     assert!(lock.try_acquire().is_err()); // this thread holds it
/// }
/// assert!(lock.try_acquire().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    raw: View<RawMutex>,
}

impl Lock {
    /// A new, unlocked lock in an anonymous segment.
    pub fn new() -> Result<Lock, SegmentCreateError> {
        Self::create(Backing::Anonymous)
    }

    /// A new lock in a named segment, which other processes can [`open`](Lock::open)
    /// by [`name`](Lock::name) until this handle (in the creating process) drops.
    pub fn new_named() -> Result<Lock, SegmentCreateError> {
        Self::create(Backing::Named)
    }

    /// A new lock under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](Lock::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    ///
    /// ```
    /// let lock = shmproc::Lock::new_named_as("/doc_lock_example")?;
    /// let same = shmproc::Lock::open("/doc_lock_example")?; // from any process
    /// assert!(matches!(
    ///     shmproc::Lock::new_named_as("/doc_lock_example"),
    ///     Err(shmproc::SegmentCreateError::AlreadyExists(_))
    /// ));
    /// drop(same);
    /// drop(lock); // its creator's drop removes the name
    /// assert!(shmproc::Lock::open("/doc_lock_example").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_named_as(name: &str) -> Result<Lock, SegmentCreateError> {
        Self::create(Backing::NamedAs(name))
    }

    /// Attaches to the named lock `name`.
    pub fn open(name: &str) -> Result<Lock, SegmentOpenError> {
        Ok(Lock { raw: segment::open_view(name, ObjectKind::Lock)? })
    }

    fn create(backing: Backing) -> Result<Lock, SegmentCreateError> {
        // A zeroed RawMutex is a free lock.
        let raw = segment::create_view(ObjectKind::Lock, backing, |_: *mut RawMutex| Ok(()))?;
        Ok(Lock { raw })
    }

    /// The lock at the start of a segment handed to this process: a `Lock`'s own, or
    /// the one a `Value`, `Array` or `Condition` carries.
    pub(crate) fn from_segment(seg: Arc<Segment>) -> Result<Lock, SegmentOpenError> {
        const HOSTS: [ObjectKind; 4] = [ObjectKind::Lock, ObjectKind::Value, ObjectKind::Array, ObjectKind::Condition];
        Ok(Lock { raw: segment::view_of(seg, &HOSTS)? })
    }

    /// A lock living inside another object's segment (a `Value`'s, a `Condition`'s).
    pub(crate) fn from_view(raw: View<RawMutex>) -> Lock {
        Lock { raw }
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        self.raw.segment()
    }

    pub(crate) fn raw(&self) -> &RawMutex {
        &self.raw
    }

    /// The segment's name, for a lock made by `new_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.raw.segment().name()
    }

    /// Blocks until the lock is acquired.
    #[inline]
    pub fn acquire(&self) -> LockResult<LockGuard<'_>> {
        self.acquire_with(Wait::Forever)
    }

    /// Acquires the lock only if that needs no waiting.
    pub fn try_acquire(&self) -> LockResult<LockGuard<'_>> {
        self.acquire_with(Wait::Never)
    }

    /// Waits at most `timeout` for the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> LockResult<LockGuard<'_>> {
        self.acquire_with(Wait::timeout(timeout))
    }

    /// Waits until `deadline` at the latest for the lock.
    pub fn acquire_deadline(&self, deadline: Instant) -> LockResult<LockGuard<'_>> {
        self.acquire_with(Wait::Until(deadline))
    }

    #[inline]
    pub(crate) fn acquire_with(&self, wait: Wait) -> LockResult<LockGuard<'_>> {
        lock_result(self.raw.acquire(wait, Reentry::Refuse), || LockGuard::new(self))
    }

    /// As [`acquire`](Lock::acquire), but spinning a little before sleeping: for a
    /// lock held a few hundred nanoseconds at a time and taken again at once by its
    /// holder (a manager's), where a sleeping waiter costs a wake-up syscall on every
    /// release.
    pub(crate) fn acquire_spinning(&self) -> LockResult<LockGuard<'_>> {
        lock_result(self.raw.acquire_spinning(Wait::Forever), || LockGuard::new(self))
    }

    /// Whether the lock is held now, by any thread of any process (Python's
    /// `locked()`). A holder that died still holds it until the next locker takes it
    /// over. Only a snapshot: use `try_acquire` to act on it.
    ///
    /// ```
    /// let lock = shmproc::Lock::new()?;
    /// assert!(!lock.locked());
    /// // (`acquire()?` in a function returning `Box<dyn Error>` does not compile, as
    /// // with std's `Mutex`: the error holds the guard, which borrows the lock.)
    /// let guard = lock.acquire().unwrap();
    /// assert!(lock.locked());
    /// drop(guard);
    /// assert!(!lock.locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// Whether a holder died or panicked holding the lock since the poison was last
    /// cleared. Visible in every process.
    pub fn is_poisoned(&self) -> bool {
        self.raw.is_poisoned()
    }

    /// Clears the poison, in every process, once the protected data is repaired.
    pub fn clear_poison(&self) {
        self.raw.clear_poison();
    }
}

serde_as_segments!(Lock, 1, |l| [l.raw.segment()], |segs| {
    let [seg] = segs;
    Lock::from_segment(seg)
});

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name())
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

/// Proof that the calling thread holds a [`Lock`]; releases it when dropped.
///
/// Dropping it while the thread panics poisons the lock, as std's `MutexGuard` does.
/// Not `Send`: the lock belongs to the thread that acquired it, and only that thread
/// can release it.
///
/// ```
/// use shmproc::{Lock, RawValue};
///
/// let lock = Lock::new()?;
/// let balance = RawValue::new(100i64)?;
/// {
///     // Read and write under one hold, so no other process sees the half-done update.
///     let _guard = lock.acquire().unwrap();
///     balance.set(balance.get() - 30);
/// } // released here
/// assert!(!lock.locked());
/// assert_eq!(balance.get(), 70);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    #[inline]
    pub(crate) fn new(lock: &'a Lock) -> LockGuard<'a> {
        LockGuard { lock, panicking: std::thread::panicking(), _not_send: PhantomData }
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.lock.raw.poison();
        }
        // An error here means the mutex was damaged while held; a destructor has no
        // one to tell, and the next acquirer sees the damage as `Corrupted`.
        let _ = self.lock.raw.release(Reentry::Refuse);
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").field("lock", self.lock).finish()
    }
}

//! The raw robust lock under `Lock`, `RLock`, `Condition`, `Value`, `Array` and `Barrier`:
//! state only, no data, no guard.
//!
//! **Why a pthread mutex and not raw_sync or a futex word.** raw_sync's mutex is not
//! robust: when its holder dies, every later `lock()` blocks forever. A plain futex
//! lock is ~3× cheaper uncontended but is not robust either: the kernel's robust list
//! belongs to glibc, which registers one per thread for its own mutexes. A
//! `PTHREAD_MUTEX_ROBUST` + `PTHREAD_PROCESS_SHARED` mutex gets the kernel's help: when
//! the holder's thread or process ends, however it ends, the kernel marks the mutex
//! "owner died" and wakes one waiter, which acquires it with `EOWNERDEAD`; we then call
//! `pthread_mutex_consistent` and record the poison. Recovery is immediate, not a
//! timeout.
//!
//! | field      | written by           | meaning                                             |
//! |------------|----------------------|-----------------------------------------------------|
//! | `mutex`    | pthread / the kernel | the lock word: owner TID, waiters bit, owner-died bit |
//! | `poisoned` | a holder             | 1 once a holder died or panicked holding it; sticky  |
//!
//! A damaged mutex (another process scribbled on it) gives pthread error codes, which
//! surface as [`Acquire::Corrupted`]; no scribble makes this code misbehave, though a
//! scribble that forges a live owner's TID makes waiters wait for that owner.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use super::wait::{spin, Wait};
use crate::sys::{MutexLock, MutexType, PthreadMutex};

#[repr(C, align(64))]
pub(crate) struct RawMutex {
    mutex: PthreadMutex,
    poisoned: AtomicU32,
}

// SAFETY: the pthread mutex is process-shared and thread-safe by construction; the
// poison flag is atomic.
unsafe impl Sync for RawMutex {}

/// What an acquisition attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// Held, never poisoned.
    Clean,
    /// Held; a holder died or panicked earlier and nobody has cleared the poison.
    Poisoned,
    WouldBlock,
    TimedOut,
    /// The calling thread already holds this (non-recursive) lock.
    Deadlock,
    /// The lock's memory is damaged (pthread's errno).
    Corrupted(i32),
}

impl RawMutex {
    /// # Safety
    /// `this` points to zeroed, writable memory for a `RawMutex` that nothing else
    /// uses until this returns.
    pub(crate) unsafe fn init(this: *mut RawMutex, kind: MutexType) -> io::Result<()> {
        // SAFETY: forwarded; `&raw mut` makes no reference to the uninitialised mutex.
        unsafe { PthreadMutex::init(&raw mut (*this).mutex, kind) }
    }

    pub(crate) fn acquire(&self, wait: Wait) -> Acquire {
        let outcome = match wait {
            Wait::Never => self.mutex.try_lock(),
            Wait::Until(_) | Wait::Forever => {
                match spin(|| Some(self.mutex.try_lock()).filter(|r| *r != MutexLock::Busy)) {
                    Some(done) => done,
                    None => self.mutex.lock(wait.deadline()),
                }
            }
        };
        match outcome {
            MutexLock::Acquired if self.is_poisoned() => Acquire::Poisoned,
            MutexLock::Acquired => Acquire::Clean,
            MutexLock::AcquiredOwnerDied => {
                self.poison();
                Acquire::Poisoned
            }
            MutexLock::Busy => Acquire::WouldBlock,
            MutexLock::TimedOut => Acquire::TimedOut,
            MutexLock::Deadlock => Acquire::Deadlock,
            MutexLock::Invalid(e) => Acquire::Corrupted(e),
        }
    }

    /// Releases one hold; `Err(errno)` when the calling thread holds none.
    pub(crate) fn release(&self) -> Result<(), i32> {
        self.mutex.unlock()
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(1, Ordering::Release);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire) != 0
    }

    pub(crate) fn clear_poison(&self) {
        self.poisoned.store(0, Ordering::Release);
    }
}

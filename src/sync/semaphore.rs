//! `Semaphore` and `BoundedSemaphore`: process-shared counters of permits.
//!
//! | field     | written by          | meaning                                          |
//! |-----------|---------------------|--------------------------------------------------|
//! | `value`   | acquire / release   | permits available; the futex word sleepers wait on |
//! | `sleepers`| waiters             | how many may be asleep, so `release` can skip the wake-up syscall |
//! | `max`     | creator             | the bound (`u32::MAX` for a plain semaphore)       |
//!
//! A permit has no owner, so a process that dies holding one does not give it back
//! (as in Python). A process that dies asleep leaves `sleepers` one too high, which
//! costs later releases a wake-up syscall and nothing else; one too low (scribbled)
//! costs a sleeper at most [`safety_poll`](crate::sync::wait::safety_poll) of delay. `max` is read once when
//! attaching; a scribbled `value` above it makes the next release fail.

use std::fmt;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::ReleaseError;
use super::wait::{safety_poll, sleep_on, spin, wake, Wait};
use crate::segment::transfer::serde_as_segments;
use crate::segment::{self, Backing, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, View};

#[repr(C)]
pub(crate) struct SemaphoreBody {
    value: AtomicU32,
    sleepers: AtomicU32,
    max: AtomicU32,
}

/// The mechanism both semaphore types share.
#[derive(Clone)]
struct RawSemaphore {
    body: View<SemaphoreBody>,
    max: u32,
}

impl RawSemaphore {
    fn create(kind: ObjectKind, value: u32, max: u32, backing: Backing) -> Result<RawSemaphore, SegmentCreateError> {
        let body = segment::create_view(kind, backing, |b: *mut SemaphoreBody| {
            // SAFETY: `b` is the fresh, unpublished body; nothing else sees it.
            unsafe {
                b.write(SemaphoreBody {
                    value: AtomicU32::new(value),
                    sleepers: AtomicU32::new(0),
                    max: AtomicU32::new(max),
                })
            };
            Ok(())
        })?;
        Ok(RawSemaphore { body, max })
    }

    fn open(name: &str, kind: ObjectKind) -> Result<RawSemaphore, SegmentOpenError> {
        Self::from_view(segment::open_view(name, kind)?, kind)
    }

    fn from_segment(seg: Arc<Segment>, kind: ObjectKind) -> Result<RawSemaphore, SegmentOpenError> {
        Self::from_view(segment::view_of(seg, &[kind])?, kind)
    }

    fn from_view(body: View<SemaphoreBody>, kind: ObjectKind) -> Result<RawSemaphore, SegmentOpenError> {
        let max = body.max.load(Ordering::Relaxed);
        if kind == ObjectKind::Semaphore && max != u32::MAX {
            return Err(SegmentOpenError::Corrupted("a plain semaphore's bound must be u32::MAX"));
        }
        Ok(RawSemaphore { body, max })
    }

    fn try_take(&self) -> bool {
        self.body.value.fetch_update(Ordering::Acquire, Ordering::Relaxed, |v| v.checked_sub(1)).is_ok()
    }

    fn acquire(&self, wait: Wait) -> bool {
        if self.try_take() {
            return true;
        }
        if wait == Wait::Never {
            return false;
        }
        if spin(|| self.try_take().then_some(())).is_some() {
            return true;
        }
        self.body.sleepers.fetch_add(1, Ordering::SeqCst);
        // Orders the registration before `try_take`'s load on every architecture, as
        // `release`'s fence does on its side (on x86 the locked add already does).
        fence(Ordering::SeqCst);
        let got = loop {
            if self.try_take() {
                break true;
            }
            if !sleep_on(&self.body.value, 0, wait, Some(safety_poll())) {
                break self.try_take();
            }
        };
        self.body.sleepers.fetch_sub(1, Ordering::SeqCst);
        got
    }

    fn release(&self) -> Result<(), ReleaseError> {
        let max = self.max;
        self.body
            .value
            .fetch_update(Ordering::Release, Ordering::Relaxed, |v| (v < max).then(|| v + 1))
            .map_err(|_| ReleaseError::TooManyReleases { max })?;
        // SeqCst pairs with the sleeper's increment: either it sees the new value
        // before sleeping, or we see it counted and wake it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.body.sleepers.load(Ordering::SeqCst) > 0 {
            wake(&self.body.value, 1);
        }
        Ok(())
    }

    fn value(&self) -> u32 {
        self.body.value.load(Ordering::Relaxed)
    }
}

macro_rules! semaphore_api {
    ($ty:ident, $kind:expr) => {
        impl $ty {
            /// Attaches to the named semaphore `name`.
            pub fn open(name: &str) -> Result<$ty, SegmentOpenError> {
                Ok($ty { raw: RawSemaphore::open(name, $kind)? })
            }

            /// The segment's name, for a semaphore made by `new_named` or `open`.
            pub fn name(&self) -> Option<&str> {
                self.raw.body.segment().name()
            }

            /// Takes a permit, waiting as long as it takes for one.
            pub fn acquire(&self) {
                self.raw.acquire(Wait::Forever);
            }

            /// Takes a permit if one is free now; `false` if none is.
            #[must_use = "false means no permit was taken"]
            pub fn try_acquire(&self) -> bool {
                self.raw.acquire(Wait::Never)
            }

            /// Takes a permit, waiting at most `timeout`; `false` if none came.
            #[must_use = "false means no permit was taken"]
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.raw.acquire(Wait::timeout(timeout))
            }

            /// Takes a permit, waiting until `deadline` at the latest; `false` if none came.
            #[must_use = "false means no permit was taken"]
            pub fn acquire_deadline(&self, deadline: Instant) -> bool {
                self.raw.acquire(Wait::Until(deadline))
            }

            /// The number of free permits now (Python's `get_value`).
            pub fn get_value(&self) -> u32 {
                self.raw.value()
            }
        }

        serde_as_segments!($ty, 1, |s| [s.raw.body.segment()], |segs| {
            let [seg] = segs;
            Ok($ty { raw: RawSemaphore::from_segment(seg, $kind)? })
        });

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.name())
                    .field("value", &self.get_value())
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A counter of permits shared between processes (Python's `multiprocessing.Semaphore`).
///
/// Any process may release a permit that another acquired: that is how one process
/// signals another.
///
/// ```
/// let s = shmproc::Semaphore::new(1)?;
/// s.acquire();
/// assert!(!s.try_acquire());
/// s.release()?;
/// assert_eq!(s.get_value(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    raw: RawSemaphore,
}

impl Semaphore {
    /// A semaphore with `value` permits, in an anonymous segment.
    pub fn new(value: u32) -> Result<Semaphore, SegmentCreateError> {
        Ok(Semaphore { raw: RawSemaphore::create(ObjectKind::Semaphore, value, u32::MAX, Backing::Anonymous)? })
    }

    /// A semaphore with `value` permits, in a named segment.
    pub fn new_named(value: u32) -> Result<Semaphore, SegmentCreateError> {
        Ok(Semaphore { raw: RawSemaphore::create(ObjectKind::Semaphore, value, u32::MAX, Backing::Named)? })
    }

    /// A semaphore with `value` permits, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](Semaphore::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str, value: u32) -> Result<Semaphore, SegmentCreateError> {
        Ok(Semaphore { raw: RawSemaphore::create(ObjectKind::Semaphore, value, u32::MAX, Backing::NamedAs(name))? })
    }

    /// Gives a permit back and wakes one waiter. Fails only at `u32::MAX` permits.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.raw.release()
    }
}

semaphore_api!(Semaphore, ObjectKind::Semaphore);

/// A semaphore that may not be released above its initial value
/// (Python's `multiprocessing.BoundedSemaphore`).
///
/// ```
/// let s = shmproc::BoundedSemaphore::new(1)?;
/// assert!(s.release().is_err()); // already at its initial value
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    raw: RawSemaphore,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` permits, which is also its maximum.
    pub fn new(value: u32) -> Result<BoundedSemaphore, SegmentCreateError> {
        Ok(BoundedSemaphore {
            raw: RawSemaphore::create(ObjectKind::BoundedSemaphore, value, value, Backing::Anonymous)?,
        })
    }

    /// A bounded semaphore with `value` permits, in a named segment.
    pub fn new_named(value: u32) -> Result<BoundedSemaphore, SegmentCreateError> {
        Ok(BoundedSemaphore { raw: RawSemaphore::create(ObjectKind::BoundedSemaphore, value, value, Backing::Named)? })
    }

    /// A bounded semaphore with `value` permits, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](BoundedSemaphore::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str, value: u32) -> Result<BoundedSemaphore, SegmentCreateError> {
        let raw = RawSemaphore::create(ObjectKind::BoundedSemaphore, value, value, Backing::NamedAs(name))?;
        Ok(BoundedSemaphore { raw })
    }

    /// Gives a permit back; [`ReleaseError::TooManyReleases`] if that would exceed
    /// the initial value (Python's ValueError).
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.raw.release()
    }

    /// The initial value, which the semaphore may never exceed.
    pub fn max_value(&self) -> u32 {
        self.raw.max
    }
}

semaphore_api!(BoundedSemaphore, ObjectKind::BoundedSemaphore);

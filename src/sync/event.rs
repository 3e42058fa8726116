//! `Event`: a process-shared flag that waiters can sleep on (Python's `multiprocessing.Event`).
//!
//! `flag` (0 or 1) is the futex word; `sleepers` counts waiters that may be asleep,
//! so that `set` skips the wake-up syscall when nobody waits. A waiter that dies
//! asleep leaves `sleepers` too high, which costs `set` a syscall and nothing else.
//! Any non-zero `flag` counts as set, so no scribble can strand a waiter.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::wait::{sleep_on, spin, wake, Wait};
use crate::segment::{self, Backing, ObjectKind, SegmentCreateError, SegmentOpenError, View};

#[repr(C)]
pub(crate) struct EventBody {
    flag: AtomicU32,
    sleepers: AtomicU32,
}

/// A flag shared between processes: `set` wakes every process waiting on it.
///
/// ```
/// let e = shmproc::Event::new()?;
/// assert!(!e.wait_timeout(std::time::Duration::from_millis(1)));
/// e.set();
/// assert!(e.is_set());
/// e.wait();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Event {
    body: View<EventBody>,
}

impl Event {
    /// A new, clear event in an anonymous segment.
    pub fn new() -> Result<Event, SegmentCreateError> {
        Self::create(Backing::Anonymous)
    }

    /// A new, clear event in a named segment.
    pub fn new_named() -> Result<Event, SegmentCreateError> {
        Self::create(Backing::Named)
    }

    /// Attaches to the named event `name`.
    pub fn open(name: &str) -> Result<Event, SegmentOpenError> {
        Ok(Event { body: segment::open_view(name, ObjectKind::Event)? })
    }

    fn create(backing: Backing) -> Result<Event, SegmentCreateError> {
        // A zeroed body is a clear event with no sleepers.
        Ok(Event { body: segment::create_view(ObjectKind::Event, backing, |_: *mut EventBody| Ok(()))? })
    }

    /// The segment's name, for an event made by `new_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.body.segment().name()
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.body.flag.load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        self.body.flag.store(1, Ordering::SeqCst);
        if self.body.sleepers.load(Ordering::SeqCst) > 0 {
            wake(&self.body.flag, u32::MAX);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.body.flag.store(0, Ordering::Release);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_with(Wait::Forever);
    }

    /// Waits at most `timeout`; `true` if the flag is set, `false` on time-out.
    #[must_use = "false means the event was not set in time"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_with(Wait::timeout(timeout))
    }

    /// Waits until `deadline` at the latest; `true` if the flag is set.
    #[must_use = "false means the event was not set in time"]
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.wait_with(Wait::Until(deadline))
    }

    fn wait_with(&self, wait: Wait) -> bool {
        if self.is_set() || spin(|| self.is_set().then_some(())).is_some() {
            return true;
        }
        self.body.sleepers.fetch_add(1, Ordering::SeqCst);
        let set = loop {
            if self.is_set() {
                break true;
            }
            if !sleep_on(&self.body.flag, 0, wait, None) {
                break self.is_set();
            }
        };
        self.body.sleepers.fetch_sub(1, Ordering::SeqCst);
        set
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("name", &self.name()).field("set", &self.is_set()).finish_non_exhaustive()
    }
}

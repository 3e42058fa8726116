//! `Event`: a process-shared flag that waiters can sleep on (Python's `multiprocessing.Event`).
//!
//! `word` is the futex word: bit 0 is the flag, the other bits count how many times
//! it went from clear to set. A waiter returns `true` as soon as the word differs
//! from what it saw while the flag was clear, so a `set` followed at once by a
//! `clear` still releases everyone who was waiting (as Python's does). `set` wakes
//! every sleeper whenever it changes the word, and sleepers re-check every
//! [`safety_poll`](crate::sync::wait::safety_poll), so no scribble can strand a waiter.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::wait::{safety_poll, sleep_on, spin, wake, Wait};
use crate::segment::transfer::serde_as_segments;
use crate::segment::{self, Backing, ObjectKind, SegmentCreateError, SegmentOpenError, View};

#[repr(C)]
pub(crate) struct EventBody {
    word: AtomicU32,
}

const FLAG: u32 = 1;
/// One more clear-to-set transition.
const GENERATION: u32 = 2;

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

    /// A new, clear event under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](Event::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str) -> Result<Event, SegmentCreateError> {
        Self::create(Backing::NamedAs(name))
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
        self.body.word.load(Ordering::Acquire) & FLAG != 0
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let changed = self
            .body
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w & FLAG == 0).then(|| (w | FLAG).wrapping_add(GENERATION))
            })
            .is_ok();
        if changed {
            wake(&self.body.word, u32::MAX);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.body.word.fetch_and(!FLAG, Ordering::AcqRel);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_with(Wait::Forever);
    }

    /// Waits at most `timeout`; `true` if the flag was set, `false` on time-out.
    #[must_use = "false means the event was not set in time"]
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_with(Wait::timeout(timeout))
    }

    /// Waits until `deadline` at the latest; `true` if the flag was set.
    #[must_use = "false means the event was not set in time"]
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.wait_with(Wait::Until(deadline))
    }

    fn wait_with(&self, wait: Wait) -> bool {
        let seen = self.body.word.load(Ordering::Acquire);
        if seen & FLAG != 0 {
            return true;
        }
        // Any change from a clear word is a set (possibly cleared again since).
        let changed = || (self.body.word.load(Ordering::Acquire) != seen).then_some(());
        if spin(changed).is_some() {
            return true;
        }
        loop {
            let in_time = sleep_on(&self.body.word, seen, wait, Some(safety_poll()));
            if changed().is_some() {
                return true;
            }
            if !in_time {
                return false;
            }
        }
    }
}

serde_as_segments!(Event, 1, |e| [e.body.segment()], |segs| {
    let [seg] = segs;
    Ok(Event { body: segment::view_of(seg, &[ObjectKind::Event])? })
});

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("name", &self.name()).field("set", &self.is_set()).finish_non_exhaustive()
    }
}

//! `Barrier`: a process-shared rendezvous of a fixed number of parties
//! (Python's `multiprocessing.Barrier`).
//!
//! ## Protocol
//! The body holds a robust mutex guarding `count` (parties arrived in the current
//! generation), `broken`, `reset_generation`, and the pid of each arrived party;
//! `generation` is the futex word.
//!
//! - *wait*: under the mutex, take index `count`, record our pid, `count += 1`. The
//!   last party sets `count = 0`, bumps `generation` and wakes everyone. The others
//!   sleep on `generation` until it moves (passed, or reset if `reset_generation`
//!   names their generation) or `broken` is set.
//! - A party that times out, a sleeper that finds an arrived party dead (checked every
//!   [`LIVENESS_POLL`]), a holder of the mutex that dies inside it, and `abort` all
//!   set `broken` and wake everyone: every waiter gets [`BarrierError::Broken`] and the
//!   barrier stays broken until `reset`.
//!
//! `parties` is read once when attaching; `count` read from shared memory is checked
//! against it, and a value out of range is [`BarrierError::Corrupted`].

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::BarrierError;
use super::raw_mutex::{Acquire, RawMutex, Reentry};
use super::wait::{sleep_on, spin, wake, Wait};
use crate::segment::transfer;
use crate::segment::{Backing, Expect, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, View};
use crate::sys;

/// How often a sleeping party checks that the parties already arrived are alive.
/// Every sleeper checks every arrived party: fine for the handful of processes a
/// barrier usually joins, O(parties²) `/proc` reads per period for large ones.
const LIVENESS_POLL: Duration = Duration::from_millis(20);

#[repr(C)]
pub(crate) struct BarrierBody {
    mutex: RawMutex,
    parties: AtomicU32,
    count: AtomicU32,
    generation: AtomicU32,
    broken: AtomicU32,
    reset_generation: AtomicU32,
    /// The default timeout of `wait`, in microseconds (0: none), for every process.
    default_timeout_us: AtomicU64,
}

/// A rendezvous point for `parties` processes (or threads): each `wait` blocks until
/// all have arrived.
///
/// Python's `action` is [`with_action`](Barrier::with_action): a function the last
/// party to arrive calls before any party passes.
///
/// ```
/// let b = shmproc::Barrier::new(1)?;
/// assert_eq!(b.wait(), Ok(0)); // one party: passes at once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    body: View<BarrierBody>,
    pids: View<AtomicU64>,
    parties: u32,
    /// Called by the last party to arrive through this handle (`run_action::<F>`).
    action: Option<fn()>,
}

/// Calls the action `F`, a zero-sized function type (see [`Barrier::with_action`]).
fn run_action<F: Fn() + Copy + 'static>() {
    crate::process::conjure::<F>()();
}

fn body_len(parties: u32) -> Option<usize> {
    const { assert!(std::mem::size_of::<BarrierBody>().is_multiple_of(8)) };
    std::mem::size_of::<BarrierBody>().checked_add((parties as usize).checked_mul(8)?)
}

impl Barrier {
    /// A barrier for `parties` parties (at least one), in an anonymous segment.
    pub fn new(parties: u32) -> Result<Barrier, SegmentCreateError> {
        Self::create(parties, Backing::Anonymous)
    }

    /// A barrier for `parties` parties, in a named segment.
    pub fn new_named(parties: u32) -> Result<Barrier, SegmentCreateError> {
        Self::create(parties, Backing::Named)
    }

    /// A barrier for `parties` parties, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](Barrier::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str, parties: u32) -> Result<Barrier, SegmentCreateError> {
        Self::create(parties, Backing::NamedAs(name))
    }

    /// A barrier for `parties` parties whose `wait` gives up after `timeout` unless
    /// told otherwise (Python's `Barrier(parties, timeout=t)`), breaking the barrier as
    /// [`wait_timeout`](Self::wait_timeout) does.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = shmproc::Barrier::with_timeout(2, Duration::from_millis(20))?;
    /// assert_eq!(b.timeout(), Some(Duration::from_millis(20)));
    /// // The other party never comes: the default timeout ends the wait.
    /// assert_eq!(b.wait(), Err(shmproc::BarrierError::Broken));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Barrier, SegmentCreateError> {
        let b = Self::create(parties, Backing::Anonymous)?;
        b.set_timeout(Some(timeout));
        Ok(b)
    }

    /// Sets (or, with `None`, removes) the default timeout of [`wait`](Self::wait),
    /// for every process using the barrier.
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        let us = timeout.map_or(0, |t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1));
        self.body.default_timeout_us.store(us, Ordering::Release);
    }

    /// The default timeout of [`wait`](Self::wait), if any (Python's `timeout`).
    pub fn timeout(&self) -> Option<Duration> {
        match self.body.default_timeout_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// A barrier for `parties` parties whose last arrival calls `action` before any
    /// party passes (Python's `Barrier(parties, action=f)`). `action` is a fn item or
    /// a non-capturing closure, so that it can be called in every process the
    /// barrier is handed to as a process argument. If it panics, the barrier breaks:
    /// every party gets [`BarrierError::Broken`].
    ///
    /// ```
    /// fn announce() {
    ///     println!("everyone is here");
    /// }
    /// let b = shmproc::Barrier::with_action(1, announce)?;
    /// assert_eq!(b.wait(), Ok(0)); // the one party arrives last, and announces
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_action<F>(parties: u32, action: F) -> Result<Barrier, SegmentCreateError>
    where
        F: Fn() + Copy + Send + Sync + 'static,
    {
        let _ = action; // a zero-sized type: its type is the action
        let mut b = Self::create(parties, Backing::Anonymous)?;
        b.action = Some(run_action::<F>);
        Ok(b)
    }

    fn create(parties: u32, backing: Backing) -> Result<Barrier, SegmentCreateError> {
        if parties == 0 {
            return Err(SegmentCreateError::InvalidArgument("a barrier needs at least one party"));
        }
        let len = body_len(parties).ok_or(SegmentCreateError::TooLarge(ObjectKind::Barrier))?;
        let expect = Expect { kind: ObjectKind::Barrier, elem: None };
        let seg = Segment::create(expect, u64::from(parties), len, backing, |b| {
            let b = b.cast::<BarrierBody>();
            // SAFETY: `b` is the fresh, zeroed, unpublished body, `len` bytes long; a
            // zeroed mutex is free.
            unsafe {
                (*b).parties.store(parties, Ordering::Relaxed);
                // No generation has been reset yet. (Generation u32::MAX, 4 billion
                // rounds away, would read as reset: a spurious Broken, nothing worse.)
                (*b).reset_generation.store(u32::MAX, Ordering::Relaxed);
            }
            Ok(())
        })?;
        Ok(Self::from_segment(Arc::new(seg), parties))
    }

    /// Attaches to the named barrier `name`.
    pub fn open(name: &str) -> Result<Barrier, SegmentOpenError> {
        Self::attach(Arc::new(Segment::open(name, Expect { kind: ObjectKind::Barrier, elem: None })?))
    }

    /// A barrier in a segment opened by name or handed to this process.
    fn attach(seg: Arc<Segment>) -> Result<Barrier, SegmentOpenError> {
        seg.check(Expect { kind: ObjectKind::Barrier, elem: None })?;
        let parties = u32::try_from(seg.elem_count()).map_err(|_| SegmentOpenError::Corrupted("barrier parties"))?;
        if parties == 0 || body_len(parties) != Some(seg.body_len()) {
            return Err(SegmentOpenError::Corrupted("barrier size does not match its parties"));
        }
        Ok(Self::from_segment(seg, parties))
    }

    fn from_segment(seg: Arc<Segment>, parties: u32) -> Barrier {
        // SAFETY: the body is a BarrierBody followed by `parties` u64 slots (the
        // length was made or checked to be exactly that, and the body's size is a
        // multiple of 8, so they are aligned), built by the creator.
        let (body, pids) = unsafe { (View::new(seg.clone(), 0), View::new(seg, std::mem::size_of::<BarrierBody>())) };
        Barrier { body, pids, parties, action: None }
    }

    fn pid_slot(&self, index: u32) -> &AtomicU64 {
        debug_assert!(index < self.parties);
        let index = index.min(self.parties - 1) as usize;
        // SAFETY: `index < parties` and the segment holds `parties` slots after the
        // body (see `from_segment`); the View's pointer carries the whole mapping's
        // provenance, and AtomicU64 is valid for any bits.
        unsafe { &*self.pids.as_ptr().add(index) }
    }

    /// The segment's name, for a barrier made by `new_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.body.segment().name()
    }

    /// The number of parties that must arrive.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// The number of parties waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.body.count.load(Ordering::Relaxed).min(self.parties)
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.body.broken.load(Ordering::Acquire) != 0
    }

    /// Waits for every party; returns this party's arrival index, `0..parties`.
    /// With a default [`timeout`](Self::timeout), as `wait_timeout` with it.
    pub fn wait(&self) -> Result<u32, BarrierError> {
        match self.timeout() {
            Some(t) => self.wait_with(Wait::timeout(t)),
            None => self.wait_with(Wait::Forever),
        }
    }

    /// As [`wait`](Self::wait), but a party still waiting after `timeout` breaks the
    /// barrier (for everyone) and gets [`BarrierError::Broken`], as in Python.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BarrierError> {
        self.wait_with(Wait::timeout(timeout))
    }

    /// As [`wait_timeout`](Self::wait_timeout), with a deadline.
    pub fn wait_deadline(&self, deadline: Instant) -> Result<u32, BarrierError> {
        self.wait_with(Wait::Until(deadline))
    }

    /// Breaks the barrier: every waiting party, and every later one until `reset`,
    /// gets [`BarrierError::Broken`].
    pub fn abort(&self) {
        self.body.broken.store(1, Ordering::Release);
        wake(&self.body.generation, u32::MAX);
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting now get
    /// [`BarrierError::Broken`].
    pub fn reset(&self) -> Result<(), BarrierError> {
        let b = &*self.body;
        self.lock()?;
        if b.count.load(Ordering::Relaxed) > 0 {
            let gen = b.generation.load(Ordering::Relaxed);
            b.reset_generation.store(gen, Ordering::Relaxed);
            b.generation.store(gen.wrapping_add(1), Ordering::Release);
        }
        b.count.store(0, Ordering::Relaxed);
        b.broken.store(0, Ordering::Release);
        self.unlock();
        wake(&b.generation, u32::MAX);
        Ok(())
    }

    /// Takes the internal mutex; a party that died inside it breaks the barrier.
    fn lock(&self) -> Result<(), BarrierError> {
        let m = &self.body.mutex;
        match m.acquire(Wait::Forever, Reentry::Refuse) {
            Acquire::Clean => Ok(()),
            Acquire::Poisoned => {
                // The dead holder may have left `count` half-updated: the only safe
                // state is broken, until someone resets.
                m.clear_poison();
                self.body.broken.store(1, Ordering::Release);
                Ok(())
            }
            _ => Err(BarrierError::Corrupted),
        }
    }

    fn unlock(&self) {
        // Fails only if the mutex was scribbled on while we held it; the next
        // locker sees that as Corrupted.
        let _ = self.body.mutex.release(Reentry::Refuse);
    }

    fn wait_with(&self, wait: Wait) -> Result<u32, BarrierError> {
        let b = &*self.body;
        self.lock()?;
        if self.broken() {
            self.unlock();
            wake(&b.generation, u32::MAX);
            return Err(BarrierError::Broken);
        }
        let index = b.count.load(Ordering::Relaxed);
        if index >= self.parties {
            self.unlock();
            return Err(BarrierError::Corrupted);
        }
        let gen = b.generation.load(Ordering::Relaxed);
        self.pid_slot(index).store(sys::ProcessId::me().to_bits(), Ordering::Release);
        if index + 1 == self.parties {
            if let Some(action) = self.action {
                // Before any party passes, as in Python; a panic breaks the barrier.
                if std::panic::catch_unwind(action).is_err() {
                    b.broken.store(1, Ordering::Release);
                    self.unlock();
                    wake(&b.generation, u32::MAX);
                    return Err(BarrierError::Broken);
                }
            }
            b.count.store(0, Ordering::Relaxed);
            b.generation.store(gen.wrapping_add(1), Ordering::Release);
            self.unlock();
            wake(&b.generation, u32::MAX);
            return Ok(index);
        }
        b.count.store(index + 1, Ordering::Release);
        self.unlock();
        self.sleep_until_passed(gen, wait).map(|()| index)
    }

    fn sleep_until_passed(&self, gen: u32, wait: Wait) -> Result<(), BarrierError> {
        let b = &*self.body;
        let passed = || {
            if b.generation.load(Ordering::Acquire) != gen {
                let reset = b.reset_generation.load(Ordering::Relaxed) == gen;
                Some(if reset { Err(BarrierError::Broken) } else { Ok(()) })
            } else if self.broken() {
                Some(Err(BarrierError::Broken))
            } else {
                None
            }
        };
        if let Some(done) = spin(passed) {
            return done;
        }
        loop {
            if let Some(done) = passed() {
                return done;
            }
            let timed_out = !sleep_on(&b.generation, gen, wait, Some(LIVENESS_POLL));
            if timed_out || self.an_arrived_party_died() {
                // Re-check under the mutex: the barrier may have passed meanwhile, and
                // a party seen dead must still be one of this generation's.
                self.lock()?;
                let done = passed();
                let must_break = done.is_none() && (timed_out || self.an_arrived_party_died());
                if must_break {
                    b.broken.store(1, Ordering::Release);
                }
                self.unlock();
                wake(&b.generation, u32::MAX);
                if done.is_none() && !must_break {
                    continue;
                }
                return done.unwrap_or(Err(BarrierError::Broken));
            }
        }
    }

    fn an_arrived_party_died(&self) -> bool {
        let arrived = self.body.count.load(Ordering::Acquire).min(self.parties);
        (0..arrived).any(|i| !sys::ProcessId::from_bits(self.pid_slot(i).load(Ordering::Acquire)).is_alive())
    }
}

// A barrier travels as its segment and its action's place in the executable. The
// place is a code address to call, so it travels only in a child's start arguments
// (written by its parent, never in shared memory, where a scribble could make it
// any address): in a message, a barrier with an action is refused, and an action
// arriving outside a child's arguments is not believed.
impl serde::Serialize for Barrier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let action = match self.action {
            None => None,
            Some(_) if !transfer::collecting_now() => {
                let why = "a Barrier with an action travels only as a process argument, not in a message";
                return Err(S::Error::custom(transfer::refuse(why.to_owned())));
            }
            Some(f) => Some(crate::process::code_offset(f as usize).ok_or_else(|| {
                S::Error::custom(transfer::refuse("the barrier's action lives outside the executable".into()))
            })?),
        };
        (action, transfer::SegmentsOf(&[self.body.segment()], "Barrier")).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Barrier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let (action, transfer::Segments([seg])) = <(Option<u64>, transfer::Segments<1>)>::deserialize(d)?;
        if action.is_some() && !transfer::receiving_now() {
            return Err(D::Error::custom("a barrier's action arrived outside a child's start arguments"));
        }
        let mut b = Barrier::attach(seg).map_err(D::Error::custom)?;
        // SAFETY: the offset came in this child's start arguments, written by its
        // parent (which runs this same executable, checked when the child started)
        // from the address of a `run_action::<F>`, a `fn()`.
        b.action =
            action.map(|offset| unsafe { std::mem::transmute::<usize, fn()>(crate::process::code_address(offset)) });
        Ok(b)
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("name", &self.name())
            .field("parties", &self.parties)
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish_non_exhaustive()
    }
}

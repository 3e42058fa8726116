//! The ring of bytes under `Queue`, `JoinableQueue` and `Pipe`: frames in a circular
//! buffer in shared memory, any number of producers and consumers, whole messages or
//! nothing.
//!
//! ## Layout
//! A [`RingHeader`] then `capacity` bytes of frames. A frame is an 8-byte header
//! (`len: u32`, a kind byte, a check byte) and the payload padded to 8 bytes; positions
//! are multiples of 8 and the capacity too, so a header never wraps (a payload may).
//!
//! | field      | written by              | meaning |
//! |------------|-------------------------|---------|
//! | `put_lock` | producers               | one producer writes at a time |
//! | `get_lock` | consumers               | one consumer reads at a time |
//! | `tail`     | the producer holding `put_lock` | bits 0–39: end of the last committed frame (a byte position, mod 2⁴⁰); bits 40–63: messages put (mod 2²⁴) |
//! | `head`     | the consumer holding `get_lock` | the same for the first unread frame and messages taken |
//! | `head_seen`, `tail_seen` | each side, under its lock | its last look at the other side's word, refreshed only when the ring seems full (empty) |
//! | `done`     | `task_done`             | messages marked done (mod 2²⁴), for `JoinableQueue` |
//! | `closed`   | `close`                 | no more puts |
//!
//! Each of these changes at its own pace, so each group has a cache line of its own
//! ([`RingHeader`]): the producers' lock with `head_seen`, `tail`, the consumers'
//! lock with `tail_seen`, `head`, the three signals, `done`, and the fixed words. A
//! consumer polling `tail` then never steals the line a producer locks, and one
//! producer and one consumer exchange only the data and the two positions.
//!
//! ## Waking
//! A consumer about to sleep sets the NOTIFY bit of `put_lock`, and the producer's
//! release of that lock reports it (see [`Signal`]); the same the other way round
//! with `get_lock`. So a put or a get costs two locked instructions (take and release
//! the lock) and no fence: the commit itself is a plain release store; a producer
//! with many messages at hand (a pool's refill) puts a run of them under one hold
//! ([`Ring::try_put_many`]), each still committed by its own store. A consumer
//! that keeps catching up with its producer holds back before it looks again
//! ([`pace`](super::pace)).
//!
//! ## Whole or nothing
//! A producer writes its frame beyond `tail`, where no consumer looks, then commits it
//! with one release store of `tail` (position and count together). A consumer copies a
//! frame out, then commits with one store of `head`. So a process killed anywhere in a
//! put or get leaves either the old or the new state, never a half: the next holder of
//! the (robust) lock finds it poisoned, clears the poison and carries on. A put never
//! waits for a get or the other way round under a lock, so two producers and two
//! consumers never deadlock, and a producer and a consumer never contend for a lock
//! (a waiter only sets a bit in the other side's lock word, see Waking).
//!
//! ## Never trusting the ring
//! Positions and lengths read from shared memory are checked before use: a ring
//! claiming more bytes than its capacity, a frame with a bad check byte, kind or
//! length, all give [`ChannelFault::Corrupted`]; every copy stays inside the data area,
//! whose size is this process's own copy of the capacity.
//!
//! ## Messages larger than the ring
//! A payload over a quarter of the capacity travels in a side segment: a named,
//! sealed-size segment holding the payload, whose name the frame carries. The
//! consumer opens it, unlinks it at once and copies the payload out. A producer killed
//! before committing leaves an orphan that [`remove_orphaned_segments`] reclaims.
//!
//! [`remove_orphaned_segments`]: crate::remove_orphaned_segments

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::error::{ChannelFault, RecvTimeoutError};
use super::pace::{self, Pace};
use super::signal::{Asker, Patience, Poll, Signal, Waited};
use crate::segment::Segment;

/// A test's simulated death of the holder at the point `name` (see
/// [`steps`](crate::steps)): it stops there as a killed process would, its lock
/// still held, storing nothing more.
macro_rules! dies_at {
    ($name:literal, $held:expr, $err:expr) => {
        if crate::steps::point($name) == crate::steps::Step::Die {
            std::mem::forget($held);
            return Err($err);
        }
    };
}

mod frame;
mod loan;
mod side;

pub(crate) use loan::{GetSlot, PutSlot};

/// A producer rewinds a ring that holds little to the beginning of its data area
/// when a frame would cross a multiple of this many bytes (see `Ring::rewind`);
/// rings of under four times this never rewind.
const REWIND_AT: u64 = 16 << 10;

/// How long a close waits for the put lock before it closes without it.
const CLOSE_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the orphan sweep waits for a ring's locks before it gives up asking
/// (long enough to recover a lock from a holder that died: see `RawMutex`).
const KEEPER_LOOK: std::time::Duration = std::time::Duration::from_millis(50);

use crate::sync::wait::Wait;
use crate::sync::{Acquire, Line, RawMutex};
use frame::*;
pub(crate) use frame::{MAX_CAPACITY, MIN_CAPACITY};
pub(crate) use side::hold_registry as hold_ring_registry;
pub(crate) use side::set_stall as set_side_stall;
use side::SideOpen;
pub(crate) use side::SideSegment;
pub use side::SideStall;

/// What only producers touch, on a cache line of its own: a consumer's reads and
/// writes never steal it from a producer in the middle of a put.
#[repr(C)]
struct ProducerSide {
    put_lock: RawMutex,
    /// The producers' last look at `head`: refreshed only when the ring seems full,
    /// so that a put does not pull the consumers' line on every message.
    head_seen: AtomicU64,
}

/// What only consumers touch, on a cache line of its own.
#[repr(C)]
struct ConsumerSide {
    get_lock: RawMutex,
    /// The consumers' last look at `tail`, refreshed only when the ring seems empty.
    tail_seen: AtomicU64,
}

/// What is set once, or once in a lifetime (`closed`): read on every put and get,
/// so it shares its line with nothing that changes.
#[repr(C)]
struct Fixed {
    closed: AtomicU32,
    maxsize: AtomicU32,
    capacity: AtomicU64,
    /// 1 for a `JoinableQueue`'s ring, whose unfinished count must not wrap.
    joinable: AtomicU32,
    /// 1 when every frame starts with a CRC32C of its message (`QueueBuilder::checksum`).
    checksum: AtomicU32,
}

/// Every word that changes at its own pace has its own line. `tail` and `head`,
/// which the other side polls, are apart from the locks: a consumer spinning on
/// `tail` does not make the producer's lock and unlock miss the cache.
#[repr(C)]
pub(crate) struct RingHeader {
    producer: Line<ProducerSide>,
    tail: Line<AtomicU64>,
    consumer: Line<ConsumerSide>,
    head: Line<AtomicU64>,
    pub(crate) not_empty: Line<Signal>,
    pub(crate) not_full: Line<Signal>,
    pub(crate) all_done: Line<Signal>,
    done: Line<AtomicU64>,
    fixed: Line<Fixed>,
}

/// The bytes a ring of `capacity` takes, header included, 64-byte aligned; `None`
/// when that is more than this machine can address (`isize::MAX`: a capacity read
/// from a hostile header on a 32-bit target must not wrap into a small one).
pub(crate) fn ring_len(capacity: u64) -> Option<usize> {
    let len = usize::try_from(capacity).ok()?.checked_add(header_len())?;
    isize::try_from(len).is_ok().then_some(len)
}

fn header_len() -> usize {
    std::mem::size_of::<RingHeader>().next_multiple_of(64)
}

/// Why a put did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PutFail {
    Full,
    Closed,
    Fault(ChannelFault),
}

/// Why a get did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GetFail {
    Empty,
    /// Closed and drained.
    Closed,
    Fault(ChannelFault),
}

impl From<GetFail> for RecvTimeoutError {
    /// For a get that waited: empty means nothing came in time.
    fn from(fail: GetFail) -> RecvTimeoutError {
        match fail {
            GetFail::Empty => RecvTimeoutError::Timeout,
            GetFail::Closed => RecvTimeoutError::Disconnected,
            GetFail::Fault(f) => RecvTimeoutError::Failed(f),
        }
    }
}

/// One ring inside a segment: its header, its data, and this process's own copy of
/// its size and bound.
#[derive(Clone)]
pub(crate) struct Ring {
    seg: Arc<Segment>,
    hdr: NonNull<RingHeader>,
    data: NonNull<u8>,
    capacity: u64,
    maxsize: u32,
    /// A `JoinableQueue`'s ring: see [`Ring::unfinished_at_limit`].
    joinable: bool,
    /// Frames start with a CRC32C of their message (see [`Outgoing`]).
    checksum: bool,
    /// The inode of the ring's segment: what keeps its side segments (see
    /// [`SideSegment::disown`]).
    keeper: u64,
    /// How this handle's recent waits for data went.
    pace: Pace,
    /// How this handle's recent waits for room went.
    room_pace: Pace,
    /// This handle's spin budget before yielding, if not the default (see
    /// [`spin_rounds`](crate::sync::wait::spin_rounds)).
    spin: Option<u32>,
}

// SAFETY: the header is atomics and robust locks; the data area is only touched
// through the ring protocol (see the module docs). The segment is kept alive by the Arc.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Initialises a ring at `at` in a fresh (zeroed, unpublished) segment body.
    ///
    /// # Safety
    /// `at` points to `ring_len(capacity)` (which is `Some`) writable, zeroed bytes, 64-byte aligned,
    /// that nothing else uses yet.
    pub(crate) unsafe fn init(at: *mut u8, capacity: u64, maxsize: u32, joinable: bool, checksum: bool) {
        let hdr = at.cast::<RingHeader>();
        // SAFETY: per the contract; zeroed locks and signals are valid and free.
        let fixed = unsafe { &(*hdr).fixed };
        fixed.capacity.store(capacity, Ordering::Relaxed);
        fixed.maxsize.store(maxsize, Ordering::Relaxed);
        fixed.joinable.store(u32::from(joinable), Ordering::Relaxed);
        fixed.checksum.store(u32::from(checksum), Ordering::Relaxed);
    }

    /// The ring at `offset` in `seg`'s body, checked against the segment's size.
    pub(crate) fn attach(seg: Arc<Segment>, offset: usize) -> Result<Ring, ChannelFault> {
        let ring = Self::attach_unregistered(seg, offset)?;
        side::register(&ring.seg, offset);
        Ok(ring)
    }

    /// `attach`, without making the ring known to the orphan sweep (for the sweep).
    fn attach_unregistered(seg: Arc<Segment>, offset: usize) -> Result<Ring, ChannelFault> {
        let fits = |len: usize| offset.checked_add(len).is_some_and(|end| end <= seg.body_len());
        if !offset.is_multiple_of(64) || !fits(header_len()) {
            return Err(ChannelFault::Corrupted("ring outside its segment"));
        }
        // SAFETY: `offset..offset + header_len()` is inside the body and 64-byte
        // aligned (the body is); RingHeader is atomics and locks, valid for any bits.
        let hdr = unsafe { &*seg.body().add(offset).cast::<RingHeader>() };
        let capacity = hdr.fixed.capacity.load(Ordering::Relaxed);
        let maxsize = hdr.fixed.maxsize.load(Ordering::Relaxed);
        let joinable = hdr.fixed.joinable.load(Ordering::Relaxed) != 0;
        let checksum = hdr.fixed.checksum.load(Ordering::Relaxed) != 0;
        let keeper = seg.inode();
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
            || !capacity.is_power_of_two()
            || ring_len(capacity).is_none_or(|len| !fits(len))
        {
            return Err(ChannelFault::Corrupted("ring capacity"));
        }
        // SAFETY: checked just above: header and data are inside the body.
        let (hdr, data) = unsafe {
            let base = seg.body().add(offset);
            (NonNull::new_unchecked(base.cast()), NonNull::new_unchecked(base.add(header_len())))
        };
        Ok(Ring {
            seg,
            hdr,
            data,
            capacity,
            maxsize,
            joinable,
            checksum,
            keeper,
            pace: Pace::default(),
            room_pace: Pace::default(),
            spin: None,
        })
    }

    /// Spins `rounds` before yielding in this handle's waits (a pool, whose
    /// processes outnumber the CPUs, wants its waiters off the CPU soon).
    pub(crate) fn set_spin(&mut self, rounds: u32) {
        self.spin = Some(rounds);
    }

    pub(crate) fn header(&self) -> &RingHeader {
        // SAFETY: checked in `attach`; the Arc keeps the mapping alive.
        unsafe { self.hdr.as_ref() }
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn maxsize(&self) -> u32 {
        self.maxsize
    }

    /// Takes one of the ring's robust locks, waiting per `wait` (`None`: not in
    /// time). A holder that died mid-put or mid-get left the committed state whole
    /// (see the module docs), so the poison is cleared.
    fn lock<'a, const ONE: bool>(
        &self,
        lock: &'a RawMutex,
        wakes: &'a Signal,
        wait: Wait,
    ) -> Result<Option<LockHeld<'a, ONE>>, ChannelFault> {
        match lock.acquire_spinning(wait) {
            Acquire::Clean => Ok(Some(LockHeld { lock, wakes, _thread_bound: std::marker::PhantomData })),
            Acquire::Poisoned => {
                lock.clear_poison();
                Ok(Some(LockHeld { lock, wakes, _thread_bound: std::marker::PhantomData }))
            }
            Acquire::WouldBlock | Acquire::TimedOut => Ok(None),
            // This thread holds it already: a loan it has not committed or dropped.
            Acquire::Deadlock => Err(ChannelFault::LoanHeld),
            Acquire::Corrupted(_) => Err(ChannelFault::Corrupted("ring lock")),
        }
    }

    /// Takes the producers' lock; its release wakes a consumer that asked for it
    /// (one: any consumer can take any message).
    fn lock_puts(&self, wait: Wait) -> Result<Option<LockHeld<'_, true>>, ChannelFault> {
        let h = self.header();
        self.lock(&h.producer.put_lock, &h.not_empty, wait)
    }

    /// Takes the consumers' lock; its release wakes the producers that asked for it
    /// (all: each waits for room for its own message, large or small).
    fn lock_gets(&self, wait: Wait) -> Result<Option<LockHeld<'_, false>>, ChannelFault> {
        let h = self.header();
        self.lock(&h.consumer.get_lock, &h.not_full, wait)
    }

    /// Waits until `ready()` (a consumer's condition): the next put wakes us. A
    /// consumer that keeps catching up with its producer first holds back (see
    /// [`pace`](super::pace)).
    ///
    /// Past the deadline it reports `TimedOut` at once, ready or not: a caller whose
    /// try just failed (its lock held by another, a scribbled owner say) while the
    /// ring looks ready would otherwise go round forever.
    pub(crate) fn wait_for_data(&self, wait: Wait, poll: Option<Poll<'_>>, mut ready: impl FnMut() -> bool) -> Waited {
        if wait.expired() {
            return Waited::TimedOut;
        }
        let h = self.header();
        let held_back = self.pace.hold_back();
        if pace::look_briefly(&mut ready) {
            // After a pause, a lone message means the producer is not streaming.
            self.pace.record(!held_back || self.len() >= 2);
            return Waited::Ready;
        }
        self.pace.record(false);
        let asker = Asker::Release(&h.producer.put_lock);
        let (waited, asleep) =
            h.not_empty.wait_until_spinning(self.spin, wait, poll, asker, self.pace.patience(), ready);
        self.pace.slept(asleep);
        waited
    }

    /// Waits until `ready()` (a producer's condition, about `message`): the next get
    /// wakes us. A producer that keeps catching up with its consumer in a full ring
    /// first holds back, as a consumer does (see [`pace`](super::pace)).
    pub(crate) fn wait_for_room(
        &self,
        payload: usize,
        wait: Wait,
        poll: Option<Poll<'_>>,
        mut ready: impl FnMut() -> bool,
    ) -> Waited {
        // As in `wait_for_data`: past the deadline, no round again.
        if wait.expired() {
            return Waited::TimedOut;
        }
        let h = self.header();
        let held_back = self.room_pace.hold_back();
        if pace::look_briefly(&mut ready) {
            // After a pause, room for a lone message means the consumer is not
            // streaming.
            self.room_pace.record(!held_back || self.has_room_for_two(payload));
            return Waited::Ready;
        }
        self.room_pace.record(false);
        let asker = Asker::Release(&h.consumer.get_lock);
        let (waited, asleep) =
            h.not_full.wait_until_spinning(self.spin, wait, poll, asker, self.room_pace.patience(), ready);
        self.room_pace.slept(asleep);
        waited
    }

    /// Waits until every message put was marked done (`JoinableQueue::join`).
    pub(crate) fn wait_all_done(&self, wait: Wait) -> bool {
        let all_done = || self.unfinished() == 0;
        self.header().all_done.wait_until(wait, None, Asker::Count, Patience::Yield, all_done).0 == Waited::Ready
    }

    /// Wakes producers waiting for room, whatever they wait for: for a change that
    /// is not a get (the other end of a pipe closing).
    pub(crate) fn wake_producers(&self) {
        self.header().not_full.wake_all();
    }

    /// Under the get lock, passes the skip frame of `frame` bytes at `pos` (see
    /// [`rewind`](Ring::rewind)): `head` moves to the lap's beginning without
    /// counting a message; the new head. `None` if the skip does not end where a
    /// lap does, as every skip a producer writes does: a message's header damaged
    /// into a skip's does not pass over the message.
    pub(super) fn pass_skip(&self, pos: u64, frame: u64, gets: u32) -> Option<u64> {
        if !(pos + frame).is_multiple_of(self.capacity) {
            return None;
        }
        let head = pack(pos + frame, gets);
        self.header().head.store(head, Ordering::Release);
        Some(head)
    }

    /// Bytes and messages in the ring now, if the words make sense.
    fn occupancy(&self, tail: u64, head: u64) -> Result<(u64, u32), ChannelFault> {
        let (tp, tc) = unpack(tail);
        let (hp, hc) = unpack(head);
        let used = tp.wrapping_sub(hp) & POS_MASK;
        // Each position a multiple of 8, not just their distance: frame headers are
        // read and written as aligned words at them.
        if used > self.capacity || !tp.is_multiple_of(8) || !hp.is_multiple_of(8) {
            return Err(ChannelFault::Corrupted("ring positions"));
        }
        let count = tc.wrapping_sub(hc) & COUNT_MASK;
        // Every message counted takes a frame of a header at least: more messages
        // than that (say, some where no byte is) would have consumers try a get
        // that finds nothing, again and again, and producers wait for room a count
        // says is taken.
        if u64::from(count) * FRAME_HEADER > used {
            return Err(ChannelFault::Corrupted("ring counts"));
        }
        Ok((used, count))
    }

    /// Whether a frame of `frame` bytes cannot go in with the ring at `occupancy`:
    /// the one rule both `put` and its waiters use.
    fn full(&self, (used, count): (u64, u32), frame: u64) -> bool {
        self.capacity - used < frame || (self.maxsize != 0 && count >= self.maxsize) || count == COUNT_MASK
    }

    /// Messages in the ring (Python's `qsize`).
    pub(crate) fn len(&self) -> usize {
        let h = self.header();
        self.occupancy(h.tail.load(Ordering::Acquire), h.head.load(Ordering::Acquire)).map_or(0, |(_, n)| n as usize)
    }

    /// Whether a message whose frame carries `payload` bytes would fit now (a hint
    /// for waiters).
    pub(crate) fn has_room(&self, payload: usize) -> bool {
        let h = self.header();
        match self.occupancy(h.tail.load(Ordering::Acquire), h.head.load(Ordering::Acquire)) {
            // A joinable ring at its unfinished limit is full until task_done catches
            // up (the waiter then polls, instead of spinning on a put that fails).
            Ok(occupancy) => {
                !self.full(occupancy, frame_len(payload as u64))
                    && (!self.joinable || self.unfinished() < COUNT_MASK - LIMIT_LOOK)
            }
            Err(_) => true, // let the put report the corruption
        }
    }

    /// Whether two messages of `payload` bytes would fit now.
    fn has_room_for_two(&self, payload: usize) -> bool {
        let h = self.header();
        let frame = frame_len(payload as u64);
        match self.occupancy(h.tail.load(Ordering::Acquire), h.head.load(Ordering::Acquire)) {
            Ok((used, count)) => {
                used + frame <= self.capacity && !self.full((used + frame, count.saturating_add(1)), frame)
            }
            Err(_) => false,
        }
    }

    /// Whether something can be taken now, or the ring is closed (a hint for waiters).
    pub(crate) fn has_data_or_closed(&self) -> bool {
        let h = self.header();
        // By message counts, not positions: a ring holding only a skip frame has
        // nothing to take.
        let (tail, head) = (h.tail.load(Ordering::Acquire), h.head.load(Ordering::Acquire));
        unpack(tail).1 != unpack(head).1 || self.is_closed()
    }

    pub(crate) fn is_closed(&self) -> bool {
        // SeqCst: `close` stores it SeqCst and then wakes sleepers unconditionally; a
        // waiter that asked to be woken and then reads it here either sees the close
        // or is woken after it.
        self.header().fixed.closed.load(Ordering::SeqCst) != 0
    }

    /// Closes the ring for every process. Under the put lock, so that no put that
    /// saw it open commits after a consumer saw it closed and drained.
    pub(crate) fn close(&self) {
        let h = self.header();
        // The release wakes the consumers that asked the put lock; the explicit
        // wake-ups cover the rest (producers asked the get lock). Under the lock, so
        // that no put commits after the close; without it if the lock is damaged,
        // this thread holds it for a put loan (whose commit then sees the close), or
        // a holder keeps it past `CLOSE_LOOK` (a put holds it for nanoseconds; a put
        // loan on another thread for as long as its owner writes: its commit checks
        // the flag too, and a close never waits on user code for ever).
        let held = self.lock_puts(Wait::timeout(CLOSE_LOOK));
        h.fixed.closed.store(1, Ordering::SeqCst);
        drop(held);
        h.not_empty.wake_all();
        h.not_full.wake_all();
    }

    /// The largest payload kept in the ring itself; larger ones travel in side
    /// segments. Below 4 GiB whatever the capacity: a frame's length is 32 bits.
    pub(crate) fn side_threshold(&self) -> u64 {
        (self.capacity / 4).min(u64::from(u32::MAX) / 2)
    }

    /// `payload` ready to put if the ring holds it inline (no side segment).
    pub(crate) fn prepare_inline<'a>(&self, payload: &'a [u8]) -> Option<Outgoing<'a>> {
        (payload.len() as u64 <= self.side_threshold())
            .then(|| Outgoing::Inline(payload, self.checksum.then(|| crc32c::crc32c(payload))))
    }

    /// Gets `payload` ready to put: a large one goes to its side segment now, once,
    /// however many times the put has to wait for room.
    pub(crate) fn prepare<'a>(&self, payload: &'a [u8]) -> Result<Outgoing<'a>, ChannelFault> {
        let crc = self.checksum.then(|| crc32c::crc32c(payload));
        if payload.len() as u64 > self.side_threshold() {
            Ok(Outgoing::Side(SideSegment::create(payload)?, crc))
        } else {
            Ok(Outgoing::Inline(payload, crc))
        }
    }

    /// Puts one message if there is room now, waiting per `wait` only for the lock.
    pub(crate) fn try_put(&self, message: &Outgoing<'_>, wait: Wait) -> Result<(), PutFail> {
        let Some(held) = self.lock_puts(wait).map_err(PutFail::Fault)? else {
            return Err(PutFail::Full);
        };
        match self.put_locked(held, [message])? {
            0 => Err(PutFail::Full),
            _ => Ok(()),
        }
    }

    /// Puts as many of `messages` as fit now, in order, under one hold of the put
    /// lock (each committed by its own store of `tail`, as a lone put is: a producer
    /// killed midway leaves the ones before whole and no part of the rest); how
    /// many. A producer handing out many messages at once (a pool's refill) takes
    /// and releases the lock, and wakes the consumer, once for all of them.
    pub(crate) fn try_put_many<'m>(&self, messages: impl IntoIterator<Item = Outgoing<'m>>) -> Result<usize, PutFail> {
        match self.lock_puts(Wait::Never).map_err(PutFail::Fault)? {
            Some(held) => self.put_locked(held, messages),
            None => Ok(0),
        }
    }

    /// Under the put lock (`held`, released on return): commits `messages` one by
    /// one while they fit; how many. Taken one at a time (a run's checksums are
    /// computed only for what goes in).
    fn put_locked<'m, M: std::borrow::Borrow<Outgoing<'m>>>(
        &self,
        held: LockHeld<'_, true>,
        messages: impl IntoIterator<Item = M>,
    ) -> Result<usize, PutFail> {
        dies_at!("put:locked", held, PutFail::Fault(KILLED));
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        let h = self.header();
        let mut put = 0;
        for message in messages {
            let message = message.borrow();
            let (kind, bytes, crc) = match message {
                Outgoing::Inline(b, crc) => (INLINE, *b, *crc),
                Outgoing::Side(s, crc) => (SIDE, s.name().as_bytes(), *crc),
            };
            let len = message.frame_payload_len() as u64;
            let frame = frame_len(len);
            let old = h.tail.load(Ordering::Relaxed);
            let tail = self.rewind(old, frame);
            if tail != old {
                dies_at!("put:rewound", held, PutFail::Fault(KILLED));
            }
            match self.fits(tail, frame) {
                Ok(true) => {}
                Ok(false) => break,
                // What was put is whole: counted; the damage is reported next time.
                Err(_) if put > 0 => break,
                Err(fault) => return Err(fault),
            }
            if let Outgoing::Side(s, _) = message {
                // From here the message is the queue's: no sweep may take it, even if this
                // producer dies at once. (Dying between this line and the commit below
                // leaks the side segment: the price of never losing a committed message.)
                s.disown(self.keeper);
                side::stall_point(side::SideStall::BeforeCommit);
            }
            let (pos, puts) = unpack(tail);
            let header = frame_word(len, kind, puts);
            self.write_word(pos, header);
            dies_at!("put:header", held, PutFail::Fault(KILLED));
            match crc {
                Some(crc) => {
                    self.write(pos + FRAME_HEADER, &crc.to_le_bytes());
                    self.write(pos + FRAME_HEADER + CRC_LEN as u64, bytes);
                }
                None => self.write(pos + FRAME_HEADER, bytes),
            }
            dies_at!("put:payload", held, PutFail::Fault(KILLED));
            h.tail.store(pack(pos + frame, puts.wrapping_add(1)), Ordering::Release);
            dies_at!("put:committed", held, PutFail::Fault(KILLED));
            put += 1;
        }
        drop(held); // wakes consumers that asked
        Ok(put)
    }

    /// Under the put lock, before a frame of `frame` bytes goes after `tail`: if
    /// the frame would cross a multiple of [`REWIND_AT`] past the first, the ring
    /// holds little (a quarter of it at most, in one stretch) and the frame fits
    /// before the first unread one, writes a skip frame over the rest of the lap,
    /// so that the frame goes at the beginning of the data area instead; the tail
    /// to put at. The frame's commit commits the skip too.
    ///
    /// A message crosses the whole ring before the same bytes are used again, and a
    /// page of shared memory costs its first touch in each process (a fault of
    /// 1.5-5 µs on a virtual machine): a fresh pool's rings took hundreds of them.
    /// Rewound, a ring whose consumers keep up (a pool's, a pipe's) stays in its
    /// first pages, warm in the caches too; one that fills up is left alone (the
    /// skipped bytes are room a burst would miss). The head is looked at once per
    /// [`REWIND_AT`] bytes put, not once per put.
    fn rewind(&self, tail: u64, frame: u64) -> u64 {
        let (pos, puts) = unpack(tail);
        let offset = pos % self.capacity;
        let crossing = offset >= REWIND_AT && (offset + frame) / REWIND_AT != offset / REWIND_AT;
        // A frame's length is 32 bits: a skip over more (a ring of over 4 GiB) is not written.
        let rest = self.capacity - offset;
        if !crossing || self.capacity < 4 * REWIND_AT || rest.saturating_sub(FRAME_HEADER) > u64::from(u32::MAX) {
            return tail;
        }
        let h = self.header();
        let head = h.head.load(Ordering::Acquire);
        h.producer.head_seen.store(head, Ordering::Relaxed);
        // Damaged positions are left for `fits` to report.
        let Ok((used, _)) = self.occupancy(tail, head) else { return tail };
        let head_offset = unpack(head).0 % self.capacity;
        // The unread frames lie in [head_offset, offset) when they do not wrap; the
        // frame then has [0, head_offset) to itself.
        let one_stretch = head_offset + used == offset;
        if !one_stretch || used > self.capacity / 4 || head_offset < frame {
            return tail;
        }
        // The skip is written past `tail`, where no consumer looks, and is committed
        // with the message after it, by the store that commits that message: a skip
        // is never alone in the ring (a put refused as full, or a producer killed
        // before its commit, leaves neither). A lone skip would not count as a
        // message, so no consumer waiting by the counts would pass it, while its
        // bytes keep a large message from fitting: both sides would wait for ever.
        self.write_word(pos, frame_word(rest - FRAME_HEADER, SKIP, puts));
        pack(pos + rest, puts)
    }

    /// Where the next frame goes, as an offset in the data area (for the models).
    #[cfg(test)]
    pub(crate) fn tail_offset(&self) -> u64 {
        unpack(self.header().tail.load(Ordering::Acquire)).0 % self.capacity
    }

    /// Under the put lock: whether a frame of `frame` bytes fits after `tail` now.
    fn fits(&self, tail: u64, frame: u64) -> Result<bool, PutFail> {
        let h = self.header();
        // First against the last head we saw: it only errs towards "full".
        let mut room = self.occupancy(tail, h.producer.head_seen.load(Ordering::Relaxed));
        if room.as_ref().map_or(true, |r| self.full(*r, frame)) {
            let head = h.head.load(Ordering::Acquire);
            h.producer.head_seen.store(head, Ordering::Relaxed);
            room = self.occupancy(tail, head);
        }
        Ok(!self.full(room.map_err(PutFail::Fault)?, frame) && !self.unfinished_at_limit(tail))
    }

    /// A frame header read at a consumer's `gets`-th message, with `used` bytes
    /// committed: its payload length, kind and frame length, if it is one (the check
    /// byte, a known kind, inside what is committed, and the number it must carry:
    /// a position moved back or forward by whole frames would otherwise deliver an
    /// old message again, silently).
    fn valid_frame(&self, word: u64, used: u64, gets: u32) -> Option<(u64, u8, u64)> {
        let (len, kind, check, seq) = frame_fields(word);
        let frame = frame_len(len);
        (check == CHECK && matches!(kind, INLINE | SIDE | SKIP) && frame <= used && seq == gets as u16)
            .then_some((len, kind, frame))
    }

    /// Takes one message into `out` (replacing its contents) if there is one now,
    /// waiting per `wait` only for the lock.
    pub(crate) fn try_get(&self, out: &mut Vec<u8>, wait: Wait) -> Result<(), GetFail> {
        self.try_get_many(std::slice::from_mut(out), wait).map(drop)
    }

    /// Takes up to `outs.len()` (at most 64) messages if there are any now, one into
    /// each buffer in order, under one hold of the get lock (each still committed
    /// by its own store of `head`, so a consumer killed midway leaves every message
    /// either taken whole or still there); how many it took, at least one.
    pub(crate) fn try_get_many(&self, outs: &mut [Vec<u8>], wait: Wait) -> Result<usize, GetFail> {
        let h = self.header();
        let Some(held) = self.lock_gets(wait).map_err(GetFail::Fault)? else {
            return Err(GetFail::Empty);
        };
        dies_at!("get:locked", held, GetFail::Fault(KILLED));
        // `closed` before `tail`: a put that commits after this load was made before
        // the close (close takes the put lock), so it is still seen below.
        let closed = self.is_closed();
        let mut head = h.head.load(Ordering::Relaxed);
        // Side segments opened (and validated) before their frames were committed.
        let mut sides: Vec<(usize, SideSegment, Option<u32>)> = Vec::new();
        let mut taken = 0;
        let mut more = false;
        let mut failure = None;
        let max = outs.len().min(64);
        while taken < max {
            // First against the last tail we saw: it only errs towards "empty".
            let mut occupancy = self.occupancy(h.consumer.tail_seen.load(Ordering::Acquire), head);
            if occupancy.as_ref().map_or(true, |(used, _)| *used == 0) {
                let tail = h.tail.load(Ordering::Acquire);
                h.consumer.tail_seen.store(tail, Ordering::Release);
                occupancy = self.occupancy(tail, head);
            }
            let used = match occupancy {
                Ok((used, _)) => used,
                // What was taken is whole: deliver it; the damage is reported next time.
                Err(_) if taken > 0 => break,
                Err(f) => return Err(GetFail::Fault(f)),
            };
            if used == 0 {
                break;
            }
            let (pos, gets) = unpack(head);
            let Some((len, kind, frame)) = self.valid_frame(self.read_word(pos), used, gets) else {
                if taken > 0 {
                    break; // what was taken is whole; the damage is reported next time
                }
                return Err(GetFail::Fault(ChannelFault::Corrupted("frame header")));
            };
            if kind == SKIP {
                let Some(next) = self.pass_skip(pos, frame, gets) else {
                    if taken > 0 {
                        break;
                    }
                    return Err(GetFail::Fault(ChannelFault::Corrupted("frame header")));
                };
                head = next;
                more = frame < used;
                continue;
            }
            let crc = if self.checksum {
                if len < CRC_LEN as u64 {
                    if taken > 0 {
                        break;
                    }
                    return Err(GetFail::Fault(ChannelFault::Corrupted("frame too short for its checksum")));
                }
                // The checksum's word is 8-aligned and inside the (8-padded) frame.
                let crc = self.read_word(pos + FRAME_HEADER) as u32;
                self.read_into(pos + FRAME_HEADER + CRC_LEN as u64, (len - CRC_LEN as u64) as usize, &mut outs[taken]);
                Some(crc)
            } else {
                self.read_into(pos + FRAME_HEADER, len as usize, &mut outs[taken]);
                None
            };
            dies_at!("get:copied", held, GetFail::Fault(KILLED));
            if let (Some(crc), INLINE) = (crc, kind) {
                if crc32c::crc32c(&outs[taken]) != crc {
                    if taken > 0 {
                        break; // reported on its own, next time
                    }
                    // The frame is whole, the message damaged: passed over, reported once.
                    head = pack(pos + frame, gets.wrapping_add(1));
                    h.head.store(head, Ordering::Release);
                    failure = Some(ChannelFault::Corrupted("message checksum"));
                    more = frame < used;
                    break;
                }
            }
            if kind == SIDE && crc.is_some() && taken > 0 {
                // A side message is checked after its commit: alone in its batch, so
                // that a damaged one takes no other message down with it.
                break;
            }
            if kind == SIDE {
                // Opened before the commit: a consumer out of descriptors or memory
                // leaves the message in the queue, to be taken again, instead of
                // losing it (and leaving its file behind).
                match SideSegment::open(&outs[taken]) {
                    Ok(side) => sides.push((taken, side, crc)),
                    Err(SideOpen::Retry(fault)) => {
                        if taken == 0 {
                            return Err(GetFail::Fault(fault));
                        }
                        break;
                    }
                    Err(SideOpen::Lost(fault)) => {
                        // Missing or damaged: no retry can bring it back. Passed
                        // over (committed), and reported once what came before is out.
                        if taken > 0 {
                            break;
                        }
                        head = pack(pos + frame, gets.wrapping_add(1));
                        h.head.store(head, Ordering::Release);
                        failure = Some(fault);
                        more = frame < used;
                        break;
                    }
                }
            }
            head = pack(pos + frame, gets.wrapping_add(1));
            h.head.store(head, Ordering::Release);
            dies_at!("get:committed", held, GetFail::Fault(KILLED));
            taken += 1;
            more = frame < used;
        }
        drop(held); // wakes producers that asked
        if more {
            // More behind what we took (as far as we looked): a consumer asleep may
            // have missed its wake-up (see `Signal::pass_on`).
            h.not_empty.pass_on();
        }
        if let Some(fault) = failure {
            return Err(GetFail::Fault(fault));
        }
        if taken == 0 {
            return Err(if closed { GetFail::Closed } else { GetFail::Empty });
        }
        let mut damaged = false;
        if !sides.is_empty() {
            side::stall_point(side::SideStall::BeforeUnlink);
        }
        for (k, side, crc) in sides {
            outs[k] = side.take();
            damaged |= crc.is_some_and(|crc| crc32c::crc32c(&outs[k]) != crc);
        }
        if damaged {
            // Taken (and unlinked) already: the batch is reported damaged whole.
            return Err(GetFail::Fault(ChannelFault::Corrupted("message checksum")));
        }
        Ok(taken)
    }

    /// For the orphan sweep: whether a frame now in the ring names the side segment
    /// `name` (without its leading '/'). Looked at under both locks, so that no put is
    /// between disowning its side segment and committing its frame: a file kept for
    /// this ring and named by no frame is no queue's any more (its producer died
    /// before the commit, or its consumer after it but before unlinking; a consumer
    /// still alive there has it mapped already and copies from its mapping). `None`
    /// when it cannot tell: a lock stays busy, or the ring is damaged.
    pub(crate) fn names_side(&self, name: &[u8]) -> Option<bool> {
        let _puts = self.lock_puts(Wait::timeout(KEEPER_LOOK)).ok()??;
        let _gets = self.lock_gets(Wait::timeout(KEEPER_LOOK)).ok()??;
        let h = self.header();
        let mut head = h.head.load(Ordering::Acquire);
        let (mut used, _) = self.occupancy(h.tail.load(Ordering::Acquire), head).ok()?;
        let mut found = Vec::new();
        while used > 0 {
            let (pos, _) = unpack(head);
            let (len, kind, check, _) = frame_fields(self.read_word(pos));
            let frame = frame_len(len);
            if check != CHECK || frame > used {
                return None;
            }
            if kind == SIDE {
                let skip = self.crc_len() as u64;
                let named = len.checked_sub(skip)?;
                self.read_into(pos + FRAME_HEADER + skip, named as usize, &mut found);
                if found.strip_prefix(b"/").unwrap_or(&found) == name {
                    return Some(true);
                }
            }
            head = pack(pos + frame, 0);
            used -= frame;
        }
        Some(false)
    }

    /// For a joinable ring: whether the unfinished count (puts not yet marked done,
    /// 24 bits) is near its limit, where one more put would wrap it and `join`
    /// would return early. Then the ring counts as full until `task_done` catches
    /// up. Looked at once every [`LIMIT_LOOK`] puts (the count cannot climb more than
    /// that between two looks), so a put does not read `done`, the consumers' line.
    fn unfinished_at_limit(&self, tail: u64) -> bool {
        let (_, puts) = unpack(tail);
        self.joinable && puts % LIMIT_LOOK == 0 && self.unfinished() >= COUNT_MASK - LIMIT_LOOK
    }

    /// Test support: moves `head` (as a scribbler could).
    #[cfg(test)]
    pub(crate) fn set_head(&self, head: u64) {
        self.header().head.store(head, Ordering::Release);
    }

    /// Test support: flips the bits of `mask` in byte `at` of the frame at `head`'s
    /// position (counted from the frame's header word), as a scribbler could.
    #[cfg(test)]
    pub(crate) fn scribble_at_head(&self, at: u64, mask: u8) {
        let (pos, _) = unpack(self.header().head.load(Ordering::Acquire));
        let off = self.offset(pos + at);
        // SAFETY: a test's own ring, with a frame at `head` at least `at + 1` long.
        unsafe { *self.data.as_ptr().add(off) ^= mask };
    }

    /// Test support: `head` as it is.
    #[cfg(test)]
    pub(crate) fn head(&self) -> u64 {
        self.header().head.load(Ordering::Acquire)
    }

    /// Test support: pretends `done` items were marked done.
    #[cfg(test)]
    pub(crate) fn set_done(&self, done: u64) {
        self.header().done.store(done, Ordering::Release);
    }

    /// Messages put and not yet marked done (`JoinableQueue`).
    pub(crate) fn unfinished(&self) -> u32 {
        let h = self.header();
        let (_, puts) = unpack(h.tail.load(Ordering::Acquire));
        puts.wrapping_sub(h.done.load(Ordering::Acquire) as u32) & COUNT_MASK
    }

    /// Takes and drops every message now in the ring (a joinable ring counts each
    /// as done); how many. Stops at the first damaged one.
    pub(crate) fn discard_all(&self) -> usize {
        let mut buf = Vec::new();
        let mut n = 0;
        while self.try_get(&mut buf, Wait::Forever).is_ok() {
            n += 1;
            if self.joinable {
                self.task_done();
            }
        }
        n
    }

    /// Marks one message done; `false` if none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let h = self.header();
        let mut left = 0;
        let ok = h
            .done
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                let (_, puts) = unpack(h.tail.load(Ordering::Acquire));
                let unfinished = puts.wrapping_sub(d as u32) & COUNT_MASK;
                left = unfinished.saturating_sub(1);
                (unfinished != 0).then(|| u64::from((d as u32).wrapping_add(1) & COUNT_MASK))
            })
            .is_ok();
        if ok && left == 0 {
            h.all_done.notify();
        }
        ok
    }

    /// Where ring position `pos` is in the data area: an offset below the capacity.
    fn offset(&self, pos: u64) -> usize {
        (pos & (self.capacity - 1)) as usize
    }

    /// Writes a frame header at ring position `pos` (a multiple of 8: never wraps).
    fn write_word(&self, pos: u64, word: u64) {
        // SAFETY: the offset is a multiple of 8 below the capacity (a multiple of 8),
        // so the word is inside the data area and aligned (the area is 64-aligned).
        // It is beyond the committed tail, where only the put_lock holder writes.
        unsafe { self.data.as_ptr().add(self.offset(pos)).cast::<u64>().write(word.to_le()) }
    }

    /// Reads the frame header at ring position `pos` (a multiple of 8).
    fn read_word(&self, pos: u64) -> u64 {
        // SAFETY: as in `write_word`; committed bytes, which no producer overwrites
        // until `head` moves past them. Volatile: another process may scribble on
        // them, and the value is checked, not trusted.
        u64::from_le(unsafe { self.data.as_ptr().add(self.offset(pos)).cast::<u64>().read_volatile() })
    }

    /// Copies `bytes` into the data area at ring position `pos` (wrapping).
    fn write(&self, pos: u64, bytes: &[u8]) {
        let at = self.offset(pos);
        let first = bytes.len().min(self.capacity as usize - at);
        // SAFETY: `at + first <= capacity` and the rest (< capacity, as every frame
        // fits the ring) starts at 0: both inside the data area. The bytes are beyond
        // the committed tail, where only the put_lock holder writes and no consumer
        // reads.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.as_ptr().add(at), first);
            if first < bytes.len() {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), self.data.as_ptr(), bytes.len() - first);
            }
        }
    }

    /// Replaces `out`'s contents with the `len` bytes at ring position `pos`, without
    /// zero-filling first (a 1 MiB message would otherwise be written twice).
    fn read_into(&self, pos: u64, len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(len);
        let at = self.offset(pos);
        let first = len.min(self.capacity as usize - at);
        // SAFETY: the source is inside the data area, as in `write` (`len` is a checked
        // frame's, smaller than the capacity), in committed bytes that only the
        // get_lock holder consumes and no producer overwrites until `head` moves;
        // `out` has room for `len` bytes, all written before `set_len`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(at), out.as_mut_ptr(), first);
            if first < len {
                std::ptr::copy_nonoverlapping(self.data.as_ptr(), out.as_mut_ptr().add(first), len - first);
            }
            out.set_len(len);
        }
    }
}

/// What a holder that a test killed at one of the ring's steps returns.
const KILLED: ChannelFault = ChannelFault::Corrupted("the holder was killed here (a test)");

/// A held ring lock, released on drop, waking `wakes` (`ONE` sleeper, or all) when a
/// waiter asked.
struct LockHeld<'a, const ONE: bool> {
    lock: &'a RawMutex,
    wakes: &'a Signal,
    /// Released by the thread that took it (the lock's owner is a thread): not
    /// `Send`, as a `MutexGuard` (and, as one, `Sync`).
    _thread_bound: std::marker::PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl<const ONE: bool> Drop for LockHeld<'_, ONE> {
    fn drop(&mut self) {
        let asked = self.lock.release_notifying() == Ok(true);
        let _ = crate::steps::point("release:released");
        if asked {
            if ONE {
                self.wakes.wake_one(self.lock);
            } else {
                self.wakes.wake_all();
            }
        }
        let _ = crate::steps::point("release:woke");
    }
}

/// A message ready to put: in the ring itself, or in a side segment.
/// A message ready to put: in the ring (the bytes) or in a side segment (its name),
/// with the CRC32C of the message when the ring checksums (the frame then starts
/// with it, little-endian, before the bytes or the name).
pub(crate) enum Outgoing<'a> {
    Inline(&'a [u8], Option<u32>),
    Side(SideSegment, Option<u32>),
}

impl Outgoing<'_> {
    /// How many bytes the frame itself carries.
    pub(crate) fn frame_payload_len(&self) -> usize {
        match self {
            Outgoing::Inline(b, crc) => b.len() + crc.map_or(0, |_| CRC_LEN),
            Outgoing::Side(s, crc) => s.name().len() + crc.map_or(0, |_| CRC_LEN),
        }
    }
}

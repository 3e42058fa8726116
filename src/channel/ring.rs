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
//!
//! The producers' words and the consumers' words sit on separate cache lines, so
//! one producer and one consumer exchange only the data and, now and then, an index.
//! | `done`     | `task_done`             | messages marked done (mod 2²⁴), for `JoinableQueue` |
//! | `closed`   | `close`                 | no more puts |
//!
//! ## Whole or nothing
//! A producer writes its frame beyond `tail`, where no consumer looks, then commits it
//! with one release store of `tail` (position and count together). A consumer copies a
//! frame out, then commits with one store of `head`. So a process killed anywhere in a
//! put or get leaves either the old or the new state, never a half: the next holder of
//! the (robust) lock finds it poisoned, clears the poison and carries on. A put never
//! waits for a get or the other way round under a lock, so two producers and two
//! consumers never deadlock, and a producer and a consumer never contend for a lock.
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

use super::error::ChannelFault;
use super::signal::Signal;
use crate::segment::{Backing, Expect, ObjectKind, Segment};
use crate::sync::wait::Wait;
use crate::sync::{Acquire, RawMutex, Reentry};

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_MASK: u32 = (1 << 24) - 1;
/// The largest capacity: positions are compared modulo 2⁴⁰.
pub(crate) const MAX_CAPACITY: u64 = 1 << 38;
/// The smallest capacity worth having.
pub(crate) const MIN_CAPACITY: u64 = 256;

const FRAME_HEADER: u64 = 8;
const CHECK: u64 = 0xA5;
const INLINE: u8 = 1;
const SIDE: u8 = 2;

/// What the producers write, on a cache line of its own: a consumer's writes never
/// steal it from a producer, and the other way round.
#[repr(C, align(64))]
struct ProducerSide {
    put_lock: RawMutex,
    tail: AtomicU64,
    /// The producers' last look at `head`: refreshed only when the ring seems full,
    /// so that a put does not pull the consumers' line on every message.
    head_seen: AtomicU64,
}

/// What the consumers write, on a cache line of its own.
#[repr(C, align(64))]
struct ConsumerSide {
    get_lock: RawMutex,
    head: AtomicU64,
    /// The consumers' last look at `tail`, refreshed only when the ring seems empty.
    tail_seen: AtomicU64,
}

/// A signal on a cache line of its own.
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[repr(C)]
pub(crate) struct RingHeader {
    producer: ProducerSide,
    consumer: ConsumerSide,
    pub(crate) not_empty: Line<Signal>,
    pub(crate) not_full: Line<Signal>,
    pub(crate) all_done: Line<Signal>,
    done: AtomicU64,
    closed: AtomicU32,
    maxsize: AtomicU32,
    capacity: AtomicU64,
}

/// The bytes a ring of `capacity` takes, header included, 64-byte aligned.
pub(crate) fn ring_len(capacity: u64) -> usize {
    header_len() + capacity as usize
}

fn header_len() -> usize {
    std::mem::size_of::<RingHeader>().next_multiple_of(64)
}

fn unpack(word: u64) -> (u64, u32) {
    (word & POS_MASK, (word >> POS_BITS) as u32 & COUNT_MASK)
}

fn pack(pos: u64, count: u32) -> u64 {
    (pos & POS_MASK) | (u64::from(count & COUNT_MASK) << POS_BITS)
}

fn frame_len(payload: u64) -> u64 {
    FRAME_HEADER + payload.next_multiple_of(8)
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

/// One ring inside a segment: its header, its data, and this process's own copy of
/// its size and bound.
#[derive(Clone)]
pub(crate) struct Ring {
    seg: Arc<Segment>,
    hdr: NonNull<RingHeader>,
    data: NonNull<u8>,
    capacity: u64,
    maxsize: u32,
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
    /// `at` points to `ring_len(capacity)` writable, zeroed bytes, 64-byte aligned,
    /// that nothing else uses yet.
    pub(crate) unsafe fn init(at: *mut u8, capacity: u64, maxsize: u32) {
        let hdr = at.cast::<RingHeader>();
        // SAFETY: per the contract; zeroed locks and signals are valid and free.
        unsafe {
            (*hdr).capacity.store(capacity, Ordering::Relaxed);
            (*hdr).maxsize.store(maxsize, Ordering::Relaxed);
        }
    }

    /// The ring at `offset` in `seg`'s body, checked against the segment's size.
    pub(crate) fn attach(seg: Arc<Segment>, offset: usize) -> Result<Ring, ChannelFault> {
        let fits = |len: usize| offset.checked_add(len).is_some_and(|end| end <= seg.body_len());
        if !offset.is_multiple_of(64) || !fits(header_len()) {
            return Err(ChannelFault::Corrupted("ring outside its segment"));
        }
        // SAFETY: `offset..offset + header_len()` is inside the body and 64-byte
        // aligned (the body is); RingHeader is atomics and locks, valid for any bits.
        let hdr = unsafe { &*seg.body().add(offset).cast::<RingHeader>() };
        let capacity = hdr.capacity.load(Ordering::Relaxed);
        let maxsize = hdr.maxsize.load(Ordering::Relaxed);
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity)
            || !capacity.is_power_of_two()
            || !fits(ring_len(capacity))
        {
            return Err(ChannelFault::Corrupted("ring capacity"));
        }
        // SAFETY: checked just above: header and data are inside the body.
        let (hdr, data) = unsafe {
            let base = seg.body().add(offset);
            (NonNull::new_unchecked(base.cast()), NonNull::new_unchecked(base.add(header_len())))
        };
        Ok(Ring { seg, hdr, data, capacity, maxsize })
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
    fn lock<'a>(&self, lock: &'a RawMutex, wait: Wait) -> Result<Option<LockHeld<'a>>, ChannelFault> {
        match lock.acquire_spinning(wait) {
            Acquire::Clean => Ok(Some(LockHeld(lock))),
            Acquire::Poisoned => {
                lock.clear_poison();
                Ok(Some(LockHeld(lock)))
            }
            Acquire::WouldBlock | Acquire::TimedOut => Ok(None),
            _ => Err(ChannelFault::Corrupted("ring lock")),
        }
    }

    /// Bytes and messages in the ring now, if the words make sense.
    fn occupancy(&self, tail: u64, head: u64) -> Result<(u64, u32), ChannelFault> {
        let (tp, tc) = unpack(tail);
        let (hp, hc) = unpack(head);
        let used = tp.wrapping_sub(hp) & POS_MASK;
        if used > self.capacity || !used.is_multiple_of(8) {
            return Err(ChannelFault::Corrupted("ring positions"));
        }
        Ok((used, tc.wrapping_sub(hc) & COUNT_MASK))
    }

    /// Whether a frame of `frame` bytes cannot go in with the ring at `occupancy`:
    /// the one rule both `put` and its waiters use.
    fn full(&self, (used, count): (u64, u32), frame: u64) -> bool {
        self.capacity - used < frame || (self.maxsize != 0 && count >= self.maxsize) || count == COUNT_MASK
    }

    /// Messages in the ring (Python's `qsize`).
    pub(crate) fn len(&self) -> usize {
        let h = self.header();
        self.occupancy(h.producer.tail.load(Ordering::Acquire), h.consumer.head.load(Ordering::Acquire))
            .map_or(0, |(_, n)| n as usize)
    }

    /// Whether `message` would fit now (a hint for waiters).
    pub(crate) fn has_room(&self, message: &Outgoing<'_>) -> bool {
        let h = self.header();
        match self.occupancy(h.producer.tail.load(Ordering::Acquire), h.consumer.head.load(Ordering::Acquire)) {
            Ok(occupancy) => !self.full(occupancy, frame_len(message.frame_payload().len() as u64)),
            Err(_) => true, // let the put report the corruption
        }
    }

    /// Whether something can be taken now, or the ring is closed (a hint for waiters).
    pub(crate) fn has_data_or_closed(&self) -> bool {
        let h = self.header();
        h.producer.tail.load(Ordering::Acquire) & POS_MASK != h.consumer.head.load(Ordering::Acquire) & POS_MASK
            || self.is_closed()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.header().closed.load(Ordering::Acquire) != 0
    }

    /// Closes the ring for every process. Under the put lock, so that no put that
    /// saw it open commits after a consumer saw it closed and drained.
    pub(crate) fn close(&self) {
        let h = self.header();
        let held = self.lock(&h.producer.put_lock, Wait::Forever);
        h.closed.store(1, Ordering::SeqCst);
        drop(held);
        h.not_empty.notify();
        h.not_full.notify();
    }

    /// The largest payload kept in the ring itself; larger ones travel in side
    /// segments. Below 4 GiB whatever the capacity: a frame's length is 32 bits.
    fn side_threshold(&self) -> u64 {
        (self.capacity / 4).min(u64::from(u32::MAX) / 2)
    }

    /// Gets `payload` ready to put: a large one goes to its side segment now, once,
    /// however many times the put has to wait for room.
    pub(crate) fn prepare<'a>(&self, payload: &'a [u8]) -> Result<Outgoing<'a>, ChannelFault> {
        if payload.len() as u64 > self.side_threshold() {
            Ok(Outgoing::Side(SideSegment::create(payload)?))
        } else {
            Ok(Outgoing::Inline(payload))
        }
    }

    /// Puts one message if there is room now, waiting per `wait` only for the lock.
    pub(crate) fn try_put(&self, message: &Outgoing<'_>, wait: Wait) -> Result<(), PutFail> {
        let (kind, bytes) = match message {
            Outgoing::Inline(b) => (INLINE, *b),
            Outgoing::Side(s) => (SIDE, s.name().as_bytes()),
        };
        let h = self.header();
        let Some(held) = self.lock(&h.producer.put_lock, wait).map_err(PutFail::Fault)? else {
            return Err(PutFail::Full);
        };
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        let tail = h.producer.tail.load(Ordering::Relaxed);
        let len = bytes.len() as u64;
        let frame = frame_len(len);
        // First against the last head we saw: it only errs towards "full".
        let mut room = self.occupancy(tail, h.producer.head_seen.load(Ordering::Relaxed));
        if room.as_ref().map_or(true, |r| self.full(*r, frame)) {
            let head = h.consumer.head.load(Ordering::Acquire);
            h.producer.head_seen.store(head, Ordering::Relaxed);
            room = self.occupancy(tail, head);
        }
        if self.full(room.map_err(PutFail::Fault)?, frame) {
            return Err(PutFail::Full);
        }
        if let Outgoing::Side(s) = message {
            // From here the message is the queue's: no sweep may take it, even if this
            // producer dies at once. (Dying between this line and the commit below
            // leaks the side segment: the price of never losing a committed message.)
            s.disown();
        }
        let (pos, puts) = unpack(tail);
        let header = len | (u64::from(kind) << 32) | (CHECK << 40);
        self.write(pos, &header.to_le_bytes());
        self.write(pos + FRAME_HEADER, bytes);
        // SeqCst: the commit also orders the `sleepers` read in `notify_after_commit`.
        h.producer.tail.swap(pack(pos + frame, puts.wrapping_add(1)), Ordering::SeqCst);
        drop(held);
        h.not_empty.notify_after_commit();
        Ok(())
    }

    /// Takes one message into `out` (replacing its contents) if there is one now,
    /// waiting per `wait` only for the lock.
    pub(crate) fn try_get(&self, out: &mut Vec<u8>, wait: Wait) -> Result<(), GetFail> {
        let h = self.header();
        let Some(held) = self.lock(&h.consumer.get_lock, wait).map_err(GetFail::Fault)? else {
            return Err(GetFail::Empty);
        };
        // `closed` before `tail`: a put that commits after this load was made before
        // the close (close takes the put lock), so it is still seen below.
        let closed = self.is_closed();
        let head = h.consumer.head.load(Ordering::Relaxed);
        // First against the last tail we saw: it only errs towards "empty".
        let mut tail = h.consumer.tail_seen.load(Ordering::Acquire);
        if tail & POS_MASK == head & POS_MASK || self.occupancy(tail, head).is_err() {
            tail = h.producer.tail.load(Ordering::Acquire);
            h.consumer.tail_seen.store(tail, Ordering::Release);
        }
        let (used, _) = self.occupancy(tail, head).map_err(GetFail::Fault)?;
        if used == 0 {
            return Err(if closed { GetFail::Closed } else { GetFail::Empty });
        }
        let (pos, gets) = unpack(head);
        let mut word = [0u8; 8];
        self.read(pos, &mut word);
        let word = u64::from_le_bytes(word);
        let (len, kind, check) = (word & 0xFFFF_FFFF, (word >> 32) as u8, (word >> 40) & 0xFF);
        let frame = frame_len(len);
        if check != CHECK || !(kind == INLINE || kind == SIDE) || frame > used {
            return Err(GetFail::Fault(ChannelFault::Corrupted("frame header")));
        }
        self.read_into(pos + FRAME_HEADER, len as usize, out);
        h.consumer.head.swap(pack(pos + frame, gets.wrapping_add(1)), Ordering::SeqCst);
        drop(held);
        h.not_full.notify_after_commit();
        if kind == SIDE {
            let name = std::str::from_utf8(out).map_err(|_| GetFail::Fault(ChannelFault::Corrupted("side name")))?;
            *out = SideSegment::take(name).map_err(GetFail::Fault)?;
        }
        Ok(())
    }

    /// Messages put and not yet marked done (`JoinableQueue`).
    pub(crate) fn unfinished(&self) -> u32 {
        let h = self.header();
        let (_, puts) = unpack(h.producer.tail.load(Ordering::Acquire));
        puts.wrapping_sub(h.done.load(Ordering::Acquire) as u32) & COUNT_MASK
    }

    /// Marks one message done; `false` if none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let h = self.header();
        let mut left = 0;
        let ok = h
            .done
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                let (_, puts) = unpack(h.producer.tail.load(Ordering::Acquire));
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

    /// Copies `bytes` into the data area at ring position `pos` (wrapping).
    fn write(&self, pos: u64, bytes: &[u8]) {
        let at = (pos % self.capacity) as usize;
        let first = bytes.len().min(self.capacity as usize - at);
        // SAFETY: `at + first <= capacity` and the rest (< capacity, as every frame
        // fits the ring) starts at 0: both inside the data area. The bytes are beyond
        // the committed tail, where only the put_lock holder writes and no consumer
        // reads.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.as_ptr().add(at), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), self.data.as_ptr(), bytes.len() - first);
        }
    }

    /// Replaces `out`'s contents with the `len` bytes at ring position `pos`, without
    /// zero-filling first (a 1 MiB message would otherwise be written twice).
    fn read_into(&self, pos: u64, len: usize, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(len);
        let at = (pos % self.capacity) as usize;
        let first = len.min(self.capacity as usize - at);
        // SAFETY: as in `read` for the source (`len` is a checked frame's, smaller than
        // the capacity); `out` has room for `len` bytes, all written before `set_len`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(at), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data.as_ptr(), out.as_mut_ptr().add(first), len - first);
            out.set_len(len);
        }
    }

    /// Copies from ring position `pos` (wrapping) into `out`.
    fn read(&self, pos: u64, out: &mut [u8]) {
        let at = (pos % self.capacity) as usize;
        let first = out.len().min(self.capacity as usize - at);
        // SAFETY: as in `write`: inside the data area (`out` is at most a checked
        // frame, smaller than the capacity), in committed bytes that only the
        // get_lock holder consumes and no producer overwrites until `head` moves.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(at), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data.as_ptr(), out.as_mut_ptr().add(first), out.len() - first);
        }
    }
}

/// A held ring lock, released on drop.
struct LockHeld<'a>(&'a RawMutex);

impl Drop for LockHeld<'_> {
    fn drop(&mut self) {
        let _ = self.0.release(Reentry::Refuse);
    }
}

/// A message ready to put: in the ring itself, or in a side segment.
pub(crate) enum Outgoing<'a> {
    Inline(&'a [u8]),
    Side(SideSegment),
}

impl Outgoing<'_> {
    /// What the frame itself carries.
    fn frame_payload(&self) -> &[u8] {
        match self {
            Outgoing::Inline(b) => b,
            Outgoing::Side(s) => s.name().as_bytes(),
        }
    }
}

/// A named segment carrying one large payload from a producer to a consumer.
pub(crate) struct SideSegment(Segment);

impl SideSegment {
    fn expect() -> Expect {
        Expect { kind: ObjectKind::QueueSide, elem: None }
    }

    fn create(payload: &[u8]) -> Result<SideSegment, ChannelFault> {
        let seg = Segment::create(Self::expect(), payload.len() as u64, payload.len(), Backing::Named, |body| {
            // SAFETY: the body is `payload.len()` fresh bytes nobody else sees yet.
            unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), body, payload.len()) };
            Ok(())
        })
        .map_err(|e| ChannelFault::Side(e.to_string()))?;
        Ok(SideSegment(seg))
    }

    fn name(&self) -> &str {
        self.0.name().unwrap_or_default()
    }

    /// About to be committed: from now on the consumer owns (and unlinks) the name,
    /// and the orphan sweep leaves it alone whatever happens to this producer.
    fn disown(&self) {
        self.0.disown();
    }

    /// The consumer's side: open, unlink at once, copy out.
    fn take(name: &str) -> Result<Vec<u8>, ChannelFault> {
        let seg = Segment::open(name, Self::expect()).map_err(|e| ChannelFault::Side(e.to_string()))?;
        let _ = crate::sys::shm_unlink(name);
        let len = usize::try_from(seg.elem_count()).map_err(|_| ChannelFault::Corrupted("side segment length"))?;
        if len != seg.body_len() {
            return Err(ChannelFault::Corrupted("side segment length"));
        }
        let mut out = vec![0u8; len];
        // SAFETY: the body is `len` bytes (checked); the producer finished writing it
        // before committing the frame that named it.
        unsafe { std::ptr::copy_nonoverlapping(seg.body(), out.as_mut_ptr(), len) };
        Ok(out)
    }
}

//! `Pipe`: two connected ends that pass messages (Python's `multiprocessing.Pipe`).
//!
//! One segment holds a [`PipeHeader`] and one ring per direction (one in all for a
//! simplex pipe). Each ring has exactly one writer and one reader, so its locks are
//! never contended and a round trip is two hand-offs through shared memory: the
//! receiver spins, then yields its CPU for up to 100 µs, then sleeps on a futex.
//!
//! The header holds each end's [holders](super::holders): the processes holding it,
//! by pid and start time. An end is held first by its creator's handle; a handle
//! handed to a child is held by that child from the moment its start succeeds
//! (before it attaches) and no longer by the handle it came from; a handle handed to
//! several children, or cloned with [`Connection::try_clone`], has several holders.
//! The end closes for its peer when its last holder closes it, drops it, or dies.
//!
//! A receiver waiting on an empty ring looks every [`PEER_CHECK`] whether the other
//! end was closed or all its holders died, and then reports `Disconnected`: within
//! 200 ms, instead of blocking forever.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{decode, with_scratch, Encoding};
use super::error::{BufferTooShort, ChannelFault, RecvError, RecvTimeoutError, SendError, SendTimeoutError};
use super::holders::HolderTable;
use super::ring::{self, GetFail, PutFail, Ring};
use super::signal::{Poll, Waited};
use crate::segment::{transfer, Backing, Expect, ObjectKind, Segment, SegmentCreateError, TypeInfo};
use crate::sync::wait::Wait;
use crate::sys;

/// How often a waiting receiver checks that the other end is still there.
const PEER_CHECK: Duration = Duration::from_millis(50);

/// The byte capacity of each direction's ring: 4 MiB.
const PIPE_CAPACITY: u64 = 4 << 20;

#[repr(C)]
pub(crate) struct PipeHeader {
    holders: [HolderTable; 2],
}

fn header_len() -> usize {
    std::mem::size_of::<PipeHeader>().next_multiple_of(64)
}

fn ring_offset(i: usize) -> usize {
    // PIPE_CAPACITY (4 MiB) is addressable everywhere.
    header_len() + i * ring::ring_len(PIPE_CAPACITY).unwrap_or(usize::MAX / 4)
}

/// Makes pipes (Python's `multiprocessing.Pipe`).
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// Two ends that both send and receive (Python's `Pipe()`).
    ///
    /// ```
    /// let (a, b) = shmproc::Pipe::duplex::<String>()?;
    /// a.send(&"ping".to_string())?;
    /// assert_eq!(b.recv()?, "ping");
    /// b.send(&"pong".to_string())?;
    /// assert_eq!(a.recv()?, "pong");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn duplex<T: Serialize + DeserializeOwned>() -> Result<(Connection<T>, Connection<T>), SegmentCreateError> {
        let seg = Self::create::<T>(true)?;
        Ok((Connection::new(Arc::clone(&seg), 0)?, Connection::new(seg, 1)?))
    }

    /// A receiving end and a sending end (Python's `Pipe(duplex=False)`: the first
    /// can only receive, the second only send).
    pub fn simplex<T: Serialize + DeserializeOwned>() -> Result<(Connection<T>, Connection<T>), SegmentCreateError> {
        let seg = Self::create::<T>(false)?;
        Ok((Connection::new(Arc::clone(&seg), 0)?, Connection::new(seg, 1)?))
    }

    fn create<T>(duplex: bool) -> Result<Arc<Segment>, SegmentCreateError> {
        let rings = if duplex { 2 } else { 1 };
        let len = ring_offset(rings);
        let expect = Expect { kind: ObjectKind::Pipe, elem: Some(TypeInfo::of_message::<T>()) };
        let seg = Segment::create(expect, rings as u64, len, Backing::Anonymous, |body| {
            // SAFETY: the fresh, zeroed body holds the header (zeroed: no holder
            // yet; each handle takes its slot as it attaches) and `rings` rings.
            unsafe {
                for i in 0..rings {
                    Ring::init(body.add(ring_offset(i)), PIPE_CAPACITY, 0, false, false);
                }
            }
            Ok(())
        })?;
        Ok(Arc::new(seg))
    }
}

/// One end of a [`Pipe`]: sends to and receives from the other end.
///
/// Pass it to a child process as (part of) its arguments; the child then owns it.
/// Dropping or closing it in the process that owns it tells the other end, whose
/// `recv` then reports `Disconnected` once it has drained what was sent.
pub struct Connection<T> {
    seg: Arc<Segment>,
    end: usize,
    send: Option<Ring>,
    recv: Option<Ring>,
    /// When this handle last looked whether the peer's process lives (coarse ms).
    peer_looked: AtomicU64,
    /// The holder slots this handle has: shared with the hand-overs that change them.
    holding: Arc<Mutex<Holding>>,
    /// `close` was called on this handle.
    closed_here: AtomicBool,
    _t: PhantomData<fn(T) -> T>,
}

/// `recv_bytes_into` failed.
///
/// ```
/// use shmproc::{Pipe, RecvIntoError};
///
/// let (a, b) = Pipe::duplex::<()>()?;
/// a.send_bytes(b"hello, world")?;
/// let mut buf = [0u8; 5];
/// match b.recv_bytes_into(&mut buf) {
///     Ok(n) => panic!("12 bytes cannot fit in 5, yet {n} came"),
///     // Nothing is lost: the whole message is in the error.
///     Err(RecvIntoError::BufferTooShort(e)) => assert_eq!(e.message, b"hello, world"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvIntoError {
    /// The other end is closed or gone, and nothing is left to receive.
    #[error("receiving on a closed, empty pipe")]
    Disconnected,
    /// The buffer was too short; the whole message is in the error.
    #[error(transparent)]
    BufferTooShort(BufferTooShort),
    /// Another failure.
    #[error(transparent)]
    Failed(ChannelFault),
}

impl<T> Connection<T> {
    fn new(seg: Arc<Segment>, end: usize) -> Result<Connection<T>, SegmentCreateError> {
        let failed = |e: ChannelFault| SegmentCreateError::Os {
            op: "attaching a pipe",
            source: std::io::Error::other(e.to_string()),
        };
        let conn = Self::attach(seg, end).map_err(failed)?;
        conn.hold_new_slot().map_err(failed)?;
        Ok(conn)
    }

    fn attach(seg: Arc<Segment>, end: usize) -> Result<Connection<T>, ChannelFault> {
        if end > 1 || seg.body_len() < header_len() {
            return Err(ChannelFault::Corrupted("pipe header"));
        }
        let duplex = match seg.elem_count() {
            2 => true,
            1 => false,
            _ => return Err(ChannelFault::Corrupted("pipe ring count")),
        };
        let ring = |i: usize| {
            let r = Ring::attach(Arc::clone(&seg), ring_offset(i))?;
            // The offsets assume this capacity: another would overlap the next ring.
            if r.capacity() != PIPE_CAPACITY {
                return Err(ChannelFault::Corrupted("pipe ring capacity"));
            }
            Ok(r)
        };
        // Duplex: end 0 sends on ring 0 and receives on ring 1; end 1 the reverse.
        // Simplex: ring 0 carries end 1's messages to end 0.
        let (send, recv) = match (duplex, end) {
            (true, 0) => (Some(ring(0)?), Some(ring(1)?)),
            (true, _) => (Some(ring(1)?), Some(ring(0)?)),
            (false, 0) => (None, Some(ring(0)?)),
            (false, _) => (Some(ring(0)?), None),
        };
        Ok(Connection {
            seg,
            end,
            send,
            recv,
            peer_looked: AtomicU64::new(0),
            holding: Arc::new(Mutex::new(Holding::default())),
            closed_here: AtomicBool::new(false),
            _t: PhantomData,
        })
    }

    fn header(&self) -> &PipeHeader {
        // SAFETY: `attach` checked the body holds a PipeHeader at offset 0 (64-byte
        // aligned); it is atomics only; the Arc keeps the mapping alive.
        unsafe { &*self.seg.body().cast::<PipeHeader>() }
    }

    fn peer(&self) -> usize {
        1 - self.end
    }

    fn holders(&self, end: usize) -> &HolderTable {
        &self.header().holders[end]
    }

    fn holding(&self) -> MutexGuard<'_, Holding> {
        // The data is slot numbers, consistent at every step: a panic elsewhere
        // while it was held leaves nothing half-done.
        self.holding.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a new holder slot for this handle, in this process's name.
    fn hold_new_slot(&self) -> Result<(), ChannelFault> {
        let slot = self.holders(self.end).reserve(sys::ProcessId::me()).ok_or(ChannelFault::TooManyHolders)?;
        self.holding().own = Some(slot);
        Ok(())
    }

    /// Whether the other end was closed (an atomic load: cheap).
    pub(super) fn peer_closed(&self) -> bool {
        self.holders(self.peer()).closed()
    }

    /// Whether the other end was closed, or every process holding it is gone (reads
    /// `/proc`: only for a waiter that has slept a while).
    fn peer_gone(&self) -> bool {
        self.holders(self.peer()).gone()
    }

    /// A second handle to the same end, holding it too (as `dup` does a
    /// descriptor): the end closes for its peer once both are closed or dropped.
    /// Hand one to a child and keep using the other (Python's pattern of a
    /// connection used by a parent and its children alike).
    ///
    /// ```
    /// let (a, b) = shmproc::Pipe::duplex::<u32>()?;
    /// let b2 = b.try_clone()?;
    /// drop(b);
    /// b2.send(&7)?;
    /// assert_eq!(a.recv()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<Connection<T>, ChannelFault> {
        if self.is_closed() {
            return Err(ChannelFault::UseAfterClose);
        }
        let conn = Connection::attach(Arc::clone(&self.seg), self.end)?;
        conn.hold_new_slot()?;
        Ok(conn)
    }

    /// Closes this end (Python's `close()`): once every holder of the end has
    /// closed it, the other end's `recv` reports `Disconnected` once drained, and
    /// its `send` fails.
    ///
    /// Closing a handle that was handed to a child (Python's `p.start();
    /// child_conn.close()`) only closes this handle: the child's end stays open.
    pub fn close(&self) {
        self.closed_here.store(true, Ordering::Release);
        let me = sys::ProcessId::me();
        let mut holding = self.holding();
        let slots: Vec<usize> = holding.own.take().into_iter().chain(holding.reserved.drain(..)).collect();
        drop(holding);
        let mut last = false;
        for slot in slots {
            last |= self.holders(self.end).give_back(slot, me);
        }
        if last {
            self.close_end();
        }
    }

    /// The last holder went: wake the peer, whichever way it waits.
    fn close_end(&self) {
        if let Some(r) = &self.send {
            r.close(); // wakes a receiver waiting on it
        }
        if let Some(r) = &self.recv {
            r.wake_producers();
        }
    }

    /// Whether this handle or its end was closed.
    pub fn is_closed(&self) -> bool {
        self.closed_here.load(Ordering::Acquire) || self.holders(self.end).closed()
    }

    /// Whether the peer is gone, looking at its process at most every PEER_CHECK (a
    /// /proc read), timed on the coarse clock.
    fn peer_gone_now_and_then(&self) -> bool {
        let now = sys::coarse_millis();
        let looked = self.peer_looked.load(Ordering::Relaxed);
        if looked != 0 && now.saturating_sub(looked) < PEER_CHECK.as_millis() as u64 {
            return self.peer_closed();
        }
        self.peer_looked.store(now.max(1), Ordering::Relaxed);
        self.peer_gone()
    }

    pub(super) fn send_raw(&self, bytes: &[u8], wait: Wait) -> Result<(), SendTimeoutError<()>> {
        let ring = self.sending_ring()?;
        let message = ring.prepare(bytes).map_err(failed_send)?;
        self.sending(ring, message.frame_payload_len(), wait, || ring.try_put(&message, wait))
    }

    /// The ring this end sends on, if it may send now: its direction, not closed
    /// here or by the peer, the peer's process still there (a write to a pipe whose
    /// reader is gone fails: EPIPE).
    pub(super) fn sending_ring(&self) -> Result<&Ring, SendTimeoutError<()>> {
        let ring = self.send.as_ref().ok_or(failed_send(ChannelFault::WrongDirection("send")))?;
        self.still_open(|| self.peer_gone_now_and_then())?;
        Ok(ring)
    }

    /// `Ok` while this end is open and the peer is there as far as `peer_gone`
    /// tells (a look at `/proc` now and then, or only the shared flags).
    pub(super) fn still_open(&self, peer_gone: impl FnOnce() -> bool) -> Result<(), SendTimeoutError<()>> {
        if self.closed_here.load(Ordering::Acquire) {
            return Err(failed_send(ChannelFault::UseAfterClose));
        }
        if self.is_closed() || peer_gone() {
            return Err(SendTimeoutError::Disconnected(()));
        }
        Ok(())
    }

    /// Tries `attempt` (a put, or a loan's reservation, of a frame carrying
    /// `payload` bytes) until it succeeds, waiting for room per `wait` between
    /// tries while the peer is there.
    pub(super) fn sending<R>(
        &self,
        ring: &Ring,
        payload: usize,
        wait: Wait,
        mut attempt: impl FnMut() -> Result<R, PutFail>,
    ) -> Result<R, SendTimeoutError<()>> {
        loop {
            if self.peer_closed() {
                return Err(SendTimeoutError::Disconnected(()));
            }
            match attempt() {
                Ok(sent) => return Ok(sent),
                Err(PutFail::Full) => {}
                Err(PutFail::Closed) => return Err(SendTimeoutError::Disconnected(())),
                Err(PutFail::Fault(fault)) => return Err(failed_send(fault)),
            }
            let ready = || ring.has_room(payload) || self.peer_closed();
            // Woken by every get while a large message waits for room: /proc at most
            // every PEER_CHECK.
            let mut gone = || self.peer_gone_now_and_then();
            let poll = Poll { every: PEER_CHECK, gone: &mut gone };
            match ring.wait_for_room(payload, wait, Some(poll), ready) {
                Waited::Ready => {}
                Waited::Gone => return Err(SendTimeoutError::Disconnected(())),
                Waited::TimedOut => return Err(SendTimeoutError::Timeout(())),
            }
        }
    }

    fn recv_raw(&self, out: &mut Vec<u8>, wait: Wait) -> Result<(), RecvTimeoutError> {
        let ring = self.receiving_ring()?;
        self.receiving(ring, wait, |wait| ring.try_get(out, wait))
    }

    /// The ring this end receives on, if it may receive.
    pub(super) fn receiving_ring(&self) -> Result<&Ring, RecvTimeoutError> {
        if self.closed_here.load(Ordering::Acquire) {
            return Err(RecvTimeoutError::Failed(ChannelFault::UseAfterClose));
        }
        self.recv.as_ref().ok_or(RecvTimeoutError::Failed(ChannelFault::WrongDirection("receive")))
    }

    /// Tries `attempt` (a get, or a loan's look at the next message; it waits for
    /// the ring's lock per the `Wait` it is given) until it succeeds, waiting for a
    /// message per `wait` while the peer is there, and taking a last look once it
    /// is gone.
    pub(super) fn receiving<R>(
        &self,
        ring: &Ring,
        wait: Wait,
        mut attempt: impl FnMut(Wait) -> Result<R, GetFail>,
    ) -> Result<R, RecvTimeoutError> {
        loop {
            // The lock, too, is waited for only until the deadline: a lock word that
            // names another live thread (scribbled) must not outlast the time-out.
            match attempt(wait) {
                Ok(got) => return Ok(got),
                Err(GetFail::Empty) => {}
                Err(GetFail::Closed) => return Err(RecvTimeoutError::Disconnected),
                Err(GetFail::Fault(f)) => return Err(RecvTimeoutError::Failed(f)),
            }
            let ready = || ring.has_data_or_closed() || self.peer_closed();
            let mut gone = || self.peer_gone();
            let poll = Poll { every: PEER_CHECK, gone: &mut gone };
            let gone = match ring.wait_for_data(wait, Some(poll), ready) {
                // A short timeout never reaches a poll: look before reporting it.
                Waited::TimedOut if !self.peer_gone_now_and_then() => return Err(RecvTimeoutError::Timeout),
                Waited::TimedOut => true,
                Waited::Ready => self.peer_closed(),
                Waited::Gone => true,
            };
            if gone {
                // One more look: the peer may have sent just before it went (the lock
                // waited for a moment at most, as above).
                return match attempt(Wait::timeout(LAST_LOOK)) {
                    Ok(got) => Ok(got),
                    Err(GetFail::Fault(f)) => Err(RecvTimeoutError::Failed(f)),
                    Err(_) => Err(RecvTimeoutError::Disconnected),
                };
            }
        }
    }

    /// Sends raw bytes (Python's `send_bytes`).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), SendError<()>> {
        self.send_raw(bytes, Wait::Forever).map_err(SendTimeoutError::unbounded)
    }

    /// Sends raw bytes, waiting at most `timeout` for room.
    pub fn send_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<(), SendTimeoutError<()>> {
        self.send_raw(bytes, Wait::timeout(timeout))
    }

    /// Receives a message sent with `send_bytes` (Python's `recv_bytes`).
    pub fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_bytes_timeout_with(Wait::Forever).map_err(RecvTimeoutError::unbounded)
    }

    /// Receives raw bytes, waiting at most `timeout`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        self.recv_bytes_timeout_with(Wait::timeout(timeout))
    }

    fn recv_bytes_timeout_with(&self, wait: Wait) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut out = Vec::new();
        self.recv_raw(&mut out, wait)?;
        Ok(out)
    }

    /// Receives raw bytes, refusing a message longer than `max` (Python's
    /// `recv_bytes(maxlength)`). Python then leaves the connection unusable; here the
    /// message is not lost: it comes back whole inside the error, and the
    /// connection goes on.
    ///
    /// ```
    /// use shmproc::{Pipe, RecvIntoError};
    /// let (a, b) = Pipe::duplex::<()>()?;
    /// a.send_bytes(b"0123456789")?;
    /// a.send_bytes(b"ok")?;
    /// let Err(RecvIntoError::BufferTooShort(e)) = b.recv_bytes_max(4) else { panic!() };
    /// assert_eq!(e.message, b"0123456789");
    /// assert_eq!(b.recv_bytes_max(4)?, b"ok");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes_max(&self, max: usize) -> Result<Vec<u8>, RecvIntoError> {
        let mut out = Vec::new();
        match self.recv_raw(&mut out, Wait::Forever) {
            Ok(()) if out.len() <= max => Ok(out),
            Ok(()) => Err(RecvIntoError::BufferTooShort(BufferTooShort { buffer_len: max, message: out })),
            Err(RecvTimeoutError::Failed(f)) => Err(RecvIntoError::Failed(f)),
            Err(_) => Err(RecvIntoError::Disconnected),
        }
    }

    /// Whether a receive would return at once (a message, or the news that the peer
    /// is gone), looking at the peer's process at most every `PEER_CHECK`.
    pub(crate) fn ready_now(&self) -> bool {
        match &self.recv {
            Some(ring) => ring.has_data_or_closed() || self.peer_closed() || self.peer_gone_now_and_then(),
            None => false,
        }
    }

    /// Whether this end can receive (Python's `readable`): false for the sending
    /// end of a simplex pipe.
    pub fn readable(&self) -> bool {
        self.recv.is_some()
    }

    /// Whether this end can send (Python's `writable`): false for the receiving end
    /// of a simplex pipe.
    pub fn writable(&self) -> bool {
        self.send.is_some()
    }

    /// Receives raw bytes into `buf`; their length (Python's `recv_bytes_into`). A
    /// message longer than `buf` is still received, whole, inside the error.
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, RecvIntoError> {
        with_scratch(|out| match self.recv_raw(out, Wait::Forever) {
            Ok(()) if out.len() <= buf.len() => {
                buf[..out.len()].copy_from_slice(out);
                Ok(out.len())
            }
            Ok(()) => {
                let message = std::mem::take(out);
                Err(RecvIntoError::BufferTooShort(BufferTooShort { buffer_len: buf.len(), message }))
            }
            Err(RecvTimeoutError::Failed(f)) => Err(RecvIntoError::Failed(f)),
            Err(_) => Err(RecvIntoError::Disconnected),
        })
    }

    /// Whether a message (or the news that the other end is gone) is there to
    /// receive, waiting up to `timeout` for one (Python's `poll`; `None` waits forever).
    pub fn poll(&self, timeout: Option<Duration>) -> bool {
        let Some(ring) = &self.recv else { return false };
        let wait = timeout.map_or(Wait::Forever, Wait::timeout);
        // A real look, not a rate-limited one: `poll(Some(ZERO))` is how a caller asks
        // "is the peer still there?" right now.
        if ring.has_data_or_closed() || self.peer_gone() {
            return true;
        }
        let ready = || ring.has_data_or_closed() || self.peer_closed();
        let mut gone = || self.peer_gone();
        let poll = Poll { every: PEER_CHECK, gone: &mut gone };
        match ring.wait_for_data(wait, Some(poll), ready) {
            Waited::Ready | Waited::Gone => true,
            Waited::TimedOut => ring.has_data_or_closed(),
        }
    }
}

/// How long the last look for a message from a peer that is gone waits for the lock.
const LAST_LOOK: Duration = Duration::from_millis(100);

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends `msg` (Python's `send`).
    pub fn send(&self, msg: &T) -> Result<(), SendError<()>> {
        self.send_with(msg, Wait::Forever).map_err(SendTimeoutError::unbounded)
    }

    /// Sends `msg`, waiting at most `timeout` for room (a reader that has stopped
    /// reading with 4 MiB unread).
    pub fn send_timeout(&self, msg: &T, timeout: Duration) -> Result<(), SendTimeoutError<()>> {
        self.send_with(msg, Wait::timeout(timeout))
    }

    fn send_with(&self, msg: &T, wait: Wait) -> Result<(), SendTimeoutError<()>> {
        let mut encoded = Encoding::new();
        encoded.encode(msg).map_err(|fault| SendTimeoutError::Failed { value: (), fault })?;
        self.send_raw(encoded.bytes(), wait)
    }

    /// Receives a message, waiting as long as it takes (Python's `recv`).
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::Forever).map_err(RecvTimeoutError::unbounded)
    }

    /// Receives a message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_with(Wait::timeout(timeout))
    }

    /// Receives a message, waiting until `deadline` at the latest.
    pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.recv_with(Wait::Until(deadline))
    }

    fn recv_with(&self, wait: Wait) -> Result<T, RecvTimeoutError> {
        with_scratch(|bytes| {
            self.recv_raw(bytes, wait)?;
            decode(bytes).map_err(RecvTimeoutError::Failed)
        })
    }
}

fn failed_send(fault: ChannelFault) -> SendTimeoutError<()> {
    SendTimeoutError::Failed { value: (), fault }
}

impl<T> Drop for Connection<T> {
    fn drop(&mut self) {
        // Gives back what this handle holds: nothing if it was handed to a child (a
        // parent dropping its copy must not close the child's end).
        self.close();
    }
}

impl<T> Serialize for Connection<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A slot for the child, reserved in this process's name (so the end cannot
        // close on the way). Once the start succeeds, the slot is the child's (by
        // its pid, before it even attaches: a child killed on its way still shows
        // as a gone holder), and this handle gives back its own. A start that fails
        // leaves both slots to this handle, which gives them back when it closes.
        use serde::ser::Error as _;
        if self.closed_here.load(Ordering::Acquire) {
            return Err(S::Error::custom(transfer::refuse(ChannelFault::UseAfterClose.to_string())));
        }
        if !transfer::collecting_now() {
            // A pipe is anonymous: it cannot travel by name in a message.
            return Err(S::Error::custom(transfer::refuse(transfer::anonymous_refusal("Connection"))));
        }
        let me = sys::ProcessId::me();
        let slot = self
            .holders(self.end)
            .reserve(me)
            .ok_or_else(|| S::Error::custom(transfer::refuse(ChannelFault::TooManyHolders.to_string())))?;
        self.holding().reserved.push(slot);
        let (seg, end, holding) = (Arc::clone(&self.seg), self.end, Arc::clone(&self.holding));
        transfer::on_handover(Box::new(move |child| {
            // SAFETY: the segment was checked to hold a PipeHeader when this handle
            // attached it, and `seg` keeps it mapped.
            let holders = unsafe { &(*seg.body().cast::<PipeHeader>()).holders[end] };
            holders.pass(slot, me, sys::ProcessId::of(child));
            let mut holding = holding.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            holding.reserved.retain(|s| *s != slot);
            if let Some(own) = holding.own.take() {
                // Never the last: the child's slot is taken.
                holders.give_back(own, me);
            }
        }));
        (self.end as u8, slot as u32, me.to_bits(), transfer::SegmentsOf(&[&self.seg], "Connection")).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Connection<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (end, slot, from, transfer::Segments([seg])) = <(u8, u32, u64, transfer::Segments<1>)>::deserialize(d)?;
        seg.check(Expect { kind: ObjectKind::Pipe, elem: Some(TypeInfo::of_message::<T>()) })
            .map_err(D::Error::custom)?;
        let conn = Connection::attach(seg, usize::from(end)).map_err(D::Error::custom)?;
        // The slot reserved for this process is now its own.
        let slot = slot as usize;
        let me = sys::ProcessId::me();
        if !conn.holders(conn.end).claim(slot, sys::ProcessId::from_bits(from), me) {
            return Err(D::Error::custom(ChannelFault::Corrupted("pipe holder slot")));
        }
        conn.holding().own = Some(slot);
        Ok(conn)
    }
}

/// The holder slots of one handle.
#[derive(Debug, Default)]
struct Holding {
    /// The slot this handle holds the end by; `None` once closed or handed on.
    own: Option<usize>,
    /// Slots reserved for children whose start has not succeeded (yet).
    reserved: Vec<usize>,
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("end", &self.end)
            .field("can_send", &self.send.is_some())
            .field("can_recv", &self.recv.is_some())
            .field("closed", &self.is_closed())
            .finish()
    }
}

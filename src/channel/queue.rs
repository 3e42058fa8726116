//! `Queue<T>` and `JoinableQueue<T>`: bounded multi-producer, multi-consumer queues
//! between processes (Python's `multiprocessing.Queue` and `JoinableQueue`).

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::codec::{decode, with_scratch, Encoding};
use super::error::{
    ChannelFault, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TaskDoneError, TryRecvError, TrySendError,
};
use super::ring::{self, GetFail, PutFail, Ring};
use super::signal::Waited;
use crate::segment::{transfer, Backing, Expect, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, TypeInfo};
use crate::sync::wait::Wait;

/// The default byte capacity of a queue's ring: 4 MiB. Messages larger than a
/// quarter of it travel in side segments (see [`QueueBuilder::capacity`]).
///
/// ```
/// use shmproc::{Queue, DEFAULT_CAPACITY};
///
/// let q: Queue<Vec<u8>> = Queue::builder().capacity(4 * DEFAULT_CAPACITY).build()?;
/// // Under a quarter of this 16 MiB ring: it travels in the ring, not in a side segment.
/// q.put(vec![7; DEFAULT_CAPACITY / 2])?;
/// assert_eq!(q.get()?.len(), DEFAULT_CAPACITY / 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const DEFAULT_CAPACITY: usize = 4 << 20;

/// Why a blocking or timed operation stopped early.
pub(super) enum Stop {
    Timeout,
    Closed,
    Fault(ChannelFault),
}

impl From<PutFail> for Stop {
    /// A put that found no room when it could not wait timed out.
    fn from(fail: PutFail) -> Stop {
        match fail {
            PutFail::Full => Stop::Timeout,
            PutFail::Closed => Stop::Closed,
            PutFail::Fault(f) => Stop::Fault(f),
        }
    }
}

impl Stop {
    /// The error of a put with a deadline, handing `value` back.
    pub(super) fn timed_out<T>(self, value: T) -> SendTimeoutError<T> {
        match self {
            Stop::Timeout => SendTimeoutError::Timeout(value),
            Stop::Closed => SendTimeoutError::Disconnected(value),
            Stop::Fault(fault) => SendTimeoutError::Failed { value, fault },
        }
    }

    /// The error of a put that had no deadline: it cannot have timed out, so a
    /// `Timeout` here would mean the ring's state is nonsense.
    pub(super) fn unbounded<T>(self, value: T) -> SendError<T> {
        match self {
            Stop::Closed => SendError::Disconnected(value),
            Stop::Fault(fault) => SendError::Failed { value, fault },
            Stop::Timeout => SendError::Failed { value, fault: ChannelFault::Corrupted("unbounded wait timed out") },
        }
    }
}

/// The mechanism every queue flavour shares: a ring and the waiting around it,
/// independent of the message type (so that it is compiled once, not per `T`).
#[derive(Clone)]
pub(crate) struct RawQueue {
    pub(super) ring: Ring,
}

impl RawQueue {
    fn create(kind: ObjectKind, elem: TypeInfo, opts: &Options) -> Result<RawQueue, SegmentCreateError> {
        // A power of two, so that positions (kept modulo 2^40) map to the same offsets
        // on both sides of their wrap-around.
        let capacity = (opts.capacity as u64).checked_next_power_of_two().unwrap_or(u64::MAX);
        if !(ring::MIN_CAPACITY..=ring::MAX_CAPACITY).contains(&capacity) {
            return Err(SegmentCreateError::InvalidArgument("queue capacity out of range (256 bytes to 256 GiB)"));
        }
        let maxsize = opts.maxsize;
        let expect = Expect { kind, elem: Some(elem) };
        let backing = match (&opts.name, opts.named) {
            (Some(name), _) => Backing::NamedAs(name),
            (None, true) => Backing::Named,
            (None, false) => Backing::Anonymous,
        };
        let len = ring::ring_len(capacity)
            .ok_or(SegmentCreateError::InvalidArgument("queue capacity out of range for this machine"))?;
        let seg = Segment::create(expect, 1, len, backing, |body| {
            // SAFETY: the fresh body is exactly one ring of `capacity`, zeroed.
            unsafe { Ring::init(body, capacity, maxsize, kind == ObjectKind::JoinableQueue, opts.checksum) };
            Ok(())
        })?;
        let ring = Ring::attach(Arc::new(seg), 0).map_err(|e| SegmentCreateError::Os {
            op: "attaching the new ring",
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(RawQueue { ring })
    }

    fn attach(seg: Arc<Segment>, kind: ObjectKind, elem: TypeInfo) -> Result<RawQueue, SegmentOpenError> {
        seg.check(Expect { kind, elem: Some(elem) })?;
        let ring = Ring::attach(seg, 0).map_err(|_| SegmentOpenError::Corrupted("queue ring"))?;
        Ok(RawQueue { ring })
    }

    /// Puts `bytes`, waiting for room per `wait` (full, once it may wait no longer:
    /// `Stop::Timeout`).
    pub(super) fn put(&self, bytes: &[u8], wait: Wait) -> Result<(), Stop> {
        let message = self.ring.prepare(bytes).map_err(Stop::Fault)?;
        self.putting(message.frame_payload_len(), wait, || self.ring.try_put(&message, wait))
    }

    /// Tries `attempt` (a put, or a loan's reservation, of a frame carrying
    /// `payload` bytes) until it succeeds, waiting for room per `wait` between tries.
    pub(super) fn putting<R>(
        &self,
        payload: usize,
        wait: Wait,
        mut attempt: impl FnMut() -> Result<R, PutFail>,
    ) -> Result<R, Stop> {
        loop {
            match attempt() {
                Ok(put) => return Ok(put),
                // Waited for below (`Wait::Never` has expired already: a time-out).
                Err(PutFail::Full) => {}
                Err(fail) => return Err(fail.into()),
            }
            let ready = || self.ring.has_room(payload) || self.ring.is_closed();
            match self.ring.wait_for_room(payload, wait, None, ready) {
                Waited::Ready | Waited::Gone => {}
                Waited::TimedOut => return Err(Stop::Timeout),
            }
        }
    }

    /// Takes one message or more (up to `outs.len()`, each into its own buffer),
    /// waiting for the first per `wait`; how many.
    fn get_many(&self, outs: &mut [Vec<u8>], wait: Wait) -> Result<usize, GetFail> {
        self.getting(wait, || self.ring.try_get_many(outs, wait))
    }

    /// Takes a message, waiting for one per `wait` (none in time: `GetFail::Empty`).
    fn get(&self, out: &mut Vec<u8>, wait: Wait) -> Result<(), GetFail> {
        self.getting(wait, || self.ring.try_get(out, wait))
    }

    /// Tries `attempt` (a get, or a loan's look at the next message) until it finds
    /// something, waiting for a message per `wait` between tries.
    pub(super) fn getting<R>(&self, wait: Wait, mut attempt: impl FnMut() -> Result<R, GetFail>) -> Result<R, GetFail> {
        loop {
            match attempt() {
                // Waited for below (`Wait::Never` has expired already: empty).
                Err(GetFail::Empty) => {}
                other => return other,
            }
            match self.ring.wait_for_data(wait, None, || self.ring.has_data_or_closed()) {
                Waited::Ready | Waited::Gone => {}
                Waited::TimedOut => return Err(GetFail::Empty),
            }
        }
    }
}

/// Options for a new queue of `T`: `maxsize`, byte `capacity`, named or anonymous,
/// checksummed. It carries the message type, so the queue it builds is of that
/// type (named where the builder is made, or inferred from where the queue goes).
///
/// ```
/// use shmproc::Queue;
/// let q: Queue<String> = Queue::builder().maxsize(100).capacity(1 << 16).build()?;
/// q.put("typed".to_string())?;
/// let jobs = shmproc::JoinableQueue::<u32>::builder().maxsize(8).build_joinable()?;
/// jobs.put(1)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A builder of one type cannot build a queue of another:
///
/// ```compile_fail
/// let q: shmproc::Queue<u32> = shmproc::Queue::<String>::builder().build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build`"]
pub struct QueueBuilder<T> {
    options: Options,
    _t: PhantomData<fn(T) -> T>,
}

/// What a builder sets, whatever the message type.
#[derive(Debug, Clone)]
struct Options {
    maxsize: u32,
    capacity: usize,
    named: bool,
    /// The name the user chose, if any (then `named`).
    name: Option<String>,
    checksum: bool,
}

impl<T> Default for QueueBuilder<T> {
    fn default() -> Self {
        QueueBuilder {
            options: Options { maxsize: 0, capacity: DEFAULT_CAPACITY, named: false, name: None, checksum: false },
            _t: PhantomData,
        }
    }
}

impl<T> Clone for QueueBuilder<T> {
    fn clone(&self) -> Self {
        QueueBuilder { options: self.options.clone(), _t: PhantomData }
    }
}

impl<T> fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("message", &crate::names::type_name::<T>())
            .field("maxsize", &self.options.maxsize)
            .field("capacity", &self.options.capacity)
            .field("named", &self.options.named)
            .field("name", &self.options.name)
            .field("checksum", &self.options.checksum)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// The most messages the queue holds (0, the default: as many as fit).
    pub fn maxsize(mut self, maxsize: u32) -> Self {
        self.options.maxsize = maxsize;
        self
    }

    /// The ring's size in bytes, rounded up to a power of two (default
    /// [`DEFAULT_CAPACITY`], 256 bytes at least).
    /// Messages over a quarter of it are passed in side segments instead of the ring.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.options.capacity = bytes;
        self
    }

    /// Checks every message with a CRC32C (hardware-accelerated where the CPU has
    /// it), so that a message whose bytes were damaged in shared memory is
    /// `ChannelFault::Corrupted` instead of a wrong value (default: off; see the
    /// README for what it costs).
    pub fn checksum(mut self, checksum: bool) -> Self {
        self.options.checksum = checksum;
        self
    }

    /// Makes the queue openable by name from unrelated processes.
    pub fn named(mut self, named: bool) -> Self {
        self.options.named = named;
        if !named {
            self.options.name = None;
        }
        self
    }

    /// Makes the queue openable under `name`, chosen by you, so that unrelated
    /// programs can meet at it (implies `named(true)`). `name` is `/` then up to 254
    /// characters, not starting with `/shmproc.`; a name in use makes `build` fail
    /// with [`SegmentCreateError::AlreadyExists`].
    ///
    /// ```
    /// use shmproc::Queue;
    /// let q = Queue::<u32>::builder().name("/doc_jobs_example").build()?;
    /// let other = Queue::<u32>::open("/doc_jobs_example")?; // from any process
    /// q.put(7)?;
    /// assert_eq!(other.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(mut self, name: &str) -> Self {
        self.options.named = true;
        self.options.name = Some(name.to_owned());
        self
    }

    /// The queue.
    pub fn build(self) -> Result<Queue<T>, SegmentCreateError> {
        let raw = RawQueue::create(ObjectKind::Queue, TypeInfo::of_message::<T>(), &self.options)?;
        Ok(Queue { raw, _t: PhantomData })
    }

    /// A joinable queue.
    pub fn build_joinable(self) -> Result<JoinableQueue<T>, SegmentCreateError> {
        let raw = RawQueue::create(ObjectKind::JoinableQueue, TypeInfo::of_message::<T>(), &self.options)?;
        Ok(JoinableQueue { queue: Queue { raw, _t: PhantomData } })
    }
}

/// A bounded queue of `T` shared by any number of producer and consumer processes
/// (Python's `multiprocessing.Queue`).
///
/// Messages are serialized with postcard (any `T: Serialize + DeserializeOwned`);
/// `put_bytes` / `get_bytes` move raw bytes without a codec. A put is synchronous:
/// when it returns, the message is in shared memory. There is no feeder thread, so
/// Python's "a process that used a queue cannot be joined" deadlock and its items lost
/// at exit cannot happen. A message larger than the ring still goes through.
///
/// ```
/// let q = shmproc::Queue::<String>::new(10)?;
/// q.put("hello".to_string())?;
/// assert_eq!(q.qsize(), 1);
/// assert_eq!(q.get()?, "hello");
/// q.close();
/// assert!(q.get().is_err()); // closed and drained
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    pub(super) raw: RawQueue,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { raw: self.raw.clone(), _t: PhantomData }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue holding at most `maxsize` messages (0: as many as fit in its ring).
    pub fn new(maxsize: u32) -> Result<Queue<T>, SegmentCreateError> {
        QueueBuilder::default().maxsize(maxsize).build()
    }

    /// Options for a new queue of `T`.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder::default()
    }

    /// Attaches to the named queue `name`; its message type must be `T`.
    pub fn open(name: &str) -> Result<Queue<T>, SegmentOpenError> {
        let seg =
            Arc::new(Segment::open(name, Expect { kind: ObjectKind::Queue, elem: Some(TypeInfo::of_message::<T>()) })?);
        Ok(Queue { raw: RawQueue::attach(seg, ObjectKind::Queue, TypeInfo::of_message::<T>())?, _t: PhantomData })
    }

    /// The segment's name, for a queue built `named`.
    pub fn name(&self) -> Option<&str> {
        self.raw.ring.segment().name()
    }

    /// Puts `item`, waiting for room as long as it takes.
    pub fn put(&self, item: T) -> Result<(), SendError<T>> {
        self.put_with(item, Wait::Forever).map_err(|(item, why)| why.unbounded(item))
    }

    /// Puts `item` only if there is room now (Python's `put_nowait`).
    pub fn try_put(&self, item: T) -> Result<(), TrySendError<T>> {
        self.put_with(item, Wait::Never).map_err(|(item, why)| match why {
            Stop::Timeout => TrySendError::Full(item),
            Stop::Closed => TrySendError::Disconnected(item),
            Stop::Fault(fault) => TrySendError::Failed { value: item, fault },
        })
    }

    /// Puts `item`, waiting at most `timeout` for room.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.put_deadline_with(item, Wait::timeout(timeout))
    }

    /// Puts `item`, waiting until `deadline` at the latest for room.
    pub fn put_deadline(&self, item: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
        self.put_deadline_with(item, Wait::Until(deadline))
    }

    fn put_deadline_with(&self, item: T, wait: Wait) -> Result<(), SendTimeoutError<T>> {
        self.put_with(item, wait).map_err(|(item, why)| why.timed_out(item))
    }

    fn put_with(&self, item: T, wait: Wait) -> Result<(), (T, Stop)> {
        let mut encoded = Encoding::new();
        let sent = match encoded.encode(&item) {
            Ok(()) => self.raw.put(encoded.bytes(), wait),
            Err(fault) => Err(Stop::Fault(fault)),
        };
        sent.map_err(|stop| (item, stop))
    }

    /// Puts raw bytes, skipping the codec; a consumer takes them with `get_bytes`.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(), SendError<()>> {
        self.raw.put(bytes, Wait::Forever).map_err(|why| why.unbounded(()))
    }

    /// Puts raw bytes, waiting at most `timeout` for room.
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<(), SendTimeoutError<()>> {
        self.raw.put(bytes, Wait::timeout(timeout)).map_err(|why| why.timed_out(()))
    }

    /// Takes the oldest message, waiting as long as it takes.
    pub fn get(&self) -> Result<T, RecvError> {
        self.get_deadline_with(Wait::Forever).map_err(RecvTimeoutError::unbounded)
    }

    /// Takes a message only if one is there now (Python's `get_nowait`).
    pub fn try_get(&self) -> Result<T, TryRecvError> {
        with_scratch(|bytes| match self.raw.get(bytes, Wait::Never) {
            Ok(()) => decode(bytes).map_err(TryRecvError::Failed),
            Err(GetFail::Empty) => Err(TryRecvError::Empty),
            Err(GetFail::Closed) => Err(TryRecvError::Disconnected),
            Err(GetFail::Fault(f)) => Err(TryRecvError::Failed(f)),
        })
    }

    /// Takes a message, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.get_deadline_with(Wait::timeout(timeout))
    }

    /// Takes a message, waiting until `deadline` at the latest.
    pub fn get_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
        self.get_deadline_with(Wait::Until(deadline))
    }

    fn get_deadline_with(&self, wait: Wait) -> Result<T, RecvTimeoutError> {
        with_scratch(|bytes| {
            self.raw.get(bytes, wait)?;
            decode(bytes).map_err(RecvTimeoutError::Failed)
        })
    }

    fn get_bytes_with(&self, wait: Wait) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut bytes = Vec::new();
        self.raw.get(&mut bytes, wait)?;
        Ok(bytes)
    }

    /// Takes the oldest message as raw bytes (see `put_bytes`).
    pub fn get_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.get_bytes_with(Wait::Forever).map_err(RecvTimeoutError::unbounded)
    }

    /// Takes raw bytes, waiting at most `timeout`.
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        self.get_bytes_with(Wait::timeout(timeout))
    }

    /// The number of messages in the queue now (Python's `qsize`; as in Python, it
    /// may change before you act on it).
    pub fn qsize(&self) -> usize {
        self.raw.ring.len()
    }

    /// Whether the queue holds no message now.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` messages now (never, for maxsize 0).
    pub fn full(&self) -> bool {
        let max = self.raw.ring.maxsize();
        max != 0 && self.qsize() >= max as usize
    }

    /// The most messages the queue holds (0: as many as fit).
    pub fn maxsize(&self) -> u32 {
        self.raw.ring.maxsize()
    }

    /// Closes the queue, for every process: later puts fail and hand the item back;
    /// gets drain what is left, then report `Disconnected`.
    pub fn close(&self) {
        self.raw.ring.close();
    }

    /// Shuts the queue down for every process (Python 3.13's `shutdown`): later
    /// puts fail and hand the item back; gets drain what is left, then report
    /// `Disconnected` (Python's `ShutDown`). With `immediate`, what is left is
    /// discarded instead, so gets report `Disconnected` at once (a `JoinableQueue`
    /// counts each discarded item done, so `join` returns). How many were discarded.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::new(0)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!(q.shutdown(true), 2);
    /// assert!(matches!(q.get(), Err(shmproc::RecvError::Disconnected)));
    /// assert!(q.put(3).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shutdown(&self, immediate: bool) -> usize {
        self.close();
        if immediate {
            self.raw.ring.discard_all()
        } else {
            0
        }
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        self.raw.ring.is_closed()
    }
}

/// An unbounded queue with only `put`, `get` and `empty` (Python's `SimpleQueue`):
/// a [`Queue`] without a size limit, under a narrower API.
///
/// ```
/// let q = shmproc::SimpleQueue::<String>::new()?;
/// q.put("job".to_string())?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, "job");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { queue: self.queue.clone() }
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// An empty queue.
    pub fn new() -> Result<SimpleQueue<T>, SegmentCreateError> {
        Ok(SimpleQueue { queue: Queue::new(0)? })
    }

    /// Puts `item`, waiting for room in the ring if it is full.
    pub fn put(&self, item: T) -> Result<(), SendError<T>> {
        self.queue.put(item)
    }

    /// Takes the oldest item, waiting for one.
    pub fn get(&self) -> Result<T, RecvError> {
        self.queue.get()
    }

    /// Takes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.queue.get_timeout(timeout)
    }

    /// Whether the queue is empty now.
    pub fn empty(&self) -> bool {
        self.queue.empty()
    }

    /// Closes the queue for every process (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close();
    }
}

impl<T> Serialize for SimpleQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(SimpleQueue { queue: Queue::deserialize(d)? })
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue").field("queue", &self.queue).finish()
    }
}

/// The raw side, for the layers above (pool, process): no codec, so no bounds.
impl<T> Queue<T> {
    /// This handle spins `rounds` (see [`spin_rounds`](crate::sync::wait::spin_rounds))
    /// before it yields in its waits.
    pub(crate) fn spinning(mut self, rounds: u32) -> Self {
        self.raw.ring.set_spin(rounds);
        self
    }

    /// Test support: the ring under this queue.
    #[cfg(test)]
    pub(crate) fn raw_ring(&self) -> &Ring {
        &self.raw.ring
    }

    /// Puts raw bytes, waiting for room per `wait` (the pool's hot path).
    pub(crate) fn put_bytes_with(&self, bytes: &[u8], wait: Wait) -> Result<(), SendTimeoutError<()>> {
        self.raw.put(bytes, wait).map_err(|why| why.timed_out(()))
    }

    /// Puts as many of `messages` as fit now, in order, under one hold of the ring's
    /// put lock; how many. It stops before a message too large for the ring itself
    /// (put that one with [`put_bytes_with`](Queue::put_bytes_with)).
    pub(crate) fn put_bytes_many_now<'m>(
        &self,
        messages: impl IntoIterator<Item = &'m [u8]>,
    ) -> Result<usize, SendTimeoutError<()>> {
        let ring = &self.raw.ring;
        let inline = messages.into_iter().map_while(|m| ring.prepare_inline(m));
        ring.try_put_many(inline).map_err(|fail| Stop::from(fail).timed_out(()))
    }

    /// Takes raw bytes into `out` (replacing its contents), waiting per `wait`
    /// (nothing in time: `Timeout`). Reuses `out`'s allocation.
    pub(crate) fn get_bytes_into(&self, out: &mut Vec<u8>, wait: Wait) -> Result<(), RecvTimeoutError> {
        Ok(self.raw.get(out, wait)?)
    }

    /// Takes one message or more as raw bytes, each into its own buffer of `outs`
    /// (replacing its contents), waiting for the first per `wait`; how many.
    pub(crate) fn get_bytes_many(&self, outs: &mut [Vec<u8>], wait: Wait) -> Result<usize, RecvTimeoutError> {
        Ok(self.raw.get_many(outs, wait)?)
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        transfer::serialize_segments(&[self.raw.ring.segment()], &crate::names::type_name::<Self>(), s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [seg] = transfer::deserialize_segments::<D, 1>(d)?;
        let raw = RawQueue::attach(seg, ObjectKind::Queue, TypeInfo::of_message::<T>()).map_err(D::Error::custom)?;
        Ok(Queue { raw, _t: PhantomData })
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.raw.ring.segment().name())
            .field("len", &self.raw.ring.len())
            .field("maxsize", &self.raw.ring.maxsize())
            .field("capacity", &self.raw.ring.capacity())
            .finish()
    }
}

/// A [`Queue`] whose consumers report each item done, so that a producer can wait
/// for all of them (Python's `multiprocessing.JoinableQueue`). Everything `Queue`
/// has is available through `Deref`.
///
/// ```
/// let q = shmproc::JoinableQueue::<u32>::new(0)?;
/// q.put(1)?;
/// assert!(!q.join_timeout(std::time::Duration::from_millis(1))); // not done yet
/// q.get()?;
/// q.task_done()?;
/// q.join();
/// assert!(q.task_done().is_err()); // more task_done calls than items
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { queue: self.queue.clone() }
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue holding at most `maxsize` messages (0: as many as fit).
    pub fn new(maxsize: u32) -> Result<JoinableQueue<T>, SegmentCreateError> {
        QueueBuilder::default().maxsize(maxsize).build_joinable()
    }

    /// Options for a new joinable queue of `T` (finish with
    /// [`build_joinable`](QueueBuilder::build_joinable)).
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder::default()
    }

    /// Attaches to the named joinable queue `name`.
    pub fn open(name: &str) -> Result<JoinableQueue<T>, SegmentOpenError> {
        let elem = TypeInfo::of_message::<T>();
        let seg = Arc::new(Segment::open(name, Expect { kind: ObjectKind::JoinableQueue, elem: Some(elem) })?);
        let raw = RawQueue::attach(seg, ObjectKind::JoinableQueue, elem)?;
        Ok(JoinableQueue { queue: Queue { raw, _t: PhantomData } })
    }

    /// Marks one item taken by `get` as processed.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.queue.raw.ring.task_done() {
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> usize {
        self.queue.raw.ring.unfinished() as usize
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) {
        self.queue.raw.ring.wait_all_done(Wait::Forever);
    }

    /// Waits at most `timeout`; `true` if every item was marked done.
    #[must_use = "false means items are still unfinished"]
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.queue.raw.ring.wait_all_done(Wait::timeout(timeout))
    }

    /// Waits until `deadline` at the latest; `true` if every item was marked done.
    #[must_use = "false means items are still unfinished"]
    pub fn join_deadline(&self, deadline: Instant) -> bool {
        self.queue.raw.ring.wait_all_done(Wait::Until(deadline))
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        transfer::serialize_segments(&[self.queue.raw.ring.segment()], &crate::names::type_name::<Self>(), s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [seg] = transfer::deserialize_segments::<D, 1>(d)?;
        let raw =
            RawQueue::attach(seg, ObjectKind::JoinableQueue, TypeInfo::of_message::<T>()).map_err(D::Error::custom)?;
        Ok(JoinableQueue { queue: Queue { raw, _t: PhantomData } })
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("queue", &self.queue)
            .field("unfinished", &self.queue.raw.ring.unfinished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A scribbled byte near the head and an arbitrary head word (position and
        /// count): each get gives a message or an error, at once, never a panic.
        #[test]
        fn any_head_word_and_scribble_give_messages_or_errors(head: u64, at in 0u64..200, mask: u8) {
            let q = Queue::<Vec<u8>>::builder().capacity(4096).build().unwrap();
            for i in 0..5u8 {
                q.put(vec![i; usize::from(i) * 30]).unwrap();
            }
            q.raw.ring.scribble_at_head(at, mask);
            q.raw.ring.set_head(head);
            for _ in 0..8 {
                if let Ok(m) = q.try_get() {
                    prop_assert!(m.len() <= 4096);
                }
            }
        }
    }

    /// Regression: a head moved back by one whole frame used to deliver the old
    /// message again, silently; each frame now carries its number.
    #[test]
    fn a_head_moved_back_a_frame_is_corruption_not_a_replay() {
        let q = Queue::<u64>::new(0).unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        let before = q.raw.ring.head();
        assert_eq!(q.try_get(), Ok(0));
        // The position moved back one frame (the count left as it is): a frame
        // boundary, inside the ring, agreeing with the tail; only the frame's number
        // tells.
        let after = q.raw.ring.head();
        q.raw.ring.set_head((before & ((1 << 40) - 1)) | (after & !((1 << 40) - 1)));
        assert!(matches!(q.try_get(), Err(TryRecvError::Failed(ChannelFault::Corrupted(_)))));
    }

    /// Regression: a flipped payload bit came back as `Ok(garbage)`; with checksums
    /// it is `Corrupted`, passed over, and the queue goes on.
    #[test]
    fn a_checksummed_queue_reports_a_damaged_message_and_goes_on() {
        let q: Queue<u64> = QueueBuilder::default().checksum(true).build().unwrap();
        q.put(1_000_000).unwrap();
        q.put(2).unwrap();
        // Byte 8 is the checksum's first; 12 the message's first.
        q.raw.ring.scribble_at_head(12, 0x01);
        assert!(matches!(q.try_get(), Err(TryRecvError::Failed(ChannelFault::Corrupted("message checksum")))));
        assert_eq!(q.try_get(), Ok(2));
        // A large message, in a side segment, is checked too.
        let big: Queue<Vec<u8>> = QueueBuilder::default().capacity(4096).checksum(true).build().unwrap();
        let v: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        big.put(v.clone()).unwrap();
        big.put(vec![1]).unwrap();
        assert_eq!(big.try_get(), Ok(v));
        assert_eq!(big.try_get(), Ok(vec![1]));
        // Without checksums the same flip decodes to another value: what the
        // option is for.
        let plain = Queue::<u64>::new(0).unwrap();
        plain.put(1_000_000).unwrap();
        plain.raw.ring.scribble_at_head(8, 0x01);
        assert!(matches!(plain.try_get(), Ok(v) if v != 1_000_000));
    }

    /// Regression: on a 32-bit target `capacity as usize` truncated, so a hostile
    /// capacity of 2^32 passed the checks as a small ring.
    #[test]
    fn a_ring_length_that_does_not_fit_the_address_space_is_refused() {
        assert_eq!(ring::ring_len(u64::MAX), None);
        assert_eq!(ring::ring_len(1 << 63), None);
        assert!(ring::ring_len(1 << 20).is_some_and(|l| l > 1 << 20));
        // What a hostile header could claim on a 32-bit target: 2^32 would wrap to a
        // small ring with `as usize`, and 2^31 does not fit beside the header in an
        // isize. (Run on i686 under Miri by `.ci/run`.)
        #[cfg(target_pointer_width = "32")]
        {
            assert_eq!(ring::ring_len(1 << 32), None);
            assert_eq!(ring::ring_len(1 << 31), None);
        }
        #[cfg(target_pointer_width = "64")]
        assert!(ring::ring_len(1 << 32).is_some());
    }

    /// Regression: the unfinished count is 24 bits; past 16.7 M items taken and not
    /// marked done it wrapped and `join` returned early. Now the queue is full there.
    #[test]
    fn a_joinable_queue_is_full_before_its_unfinished_count_wraps() {
        let q: JoinableQueue<u8> = QueueBuilder::default().build_joinable().unwrap();
        for _ in 0..4096 {
            q.put(1).unwrap();
        }
        let ring = &q.queue.raw.ring;
        // 4096 puts; make it look as if only a few of 2^24 - 11 unfinished were done.
        ring.set_done(4096 + 11);
        assert_eq!(q.unfinished(), (1 << 24) - 1 - 10);
        assert!(matches!(q.try_put(1), Err(TrySendError::Full(1))));
        ring.set_done(0);
        assert_eq!(q.unfinished(), 4096);
        q.try_put(1).unwrap();
    }

    #[test]
    fn get_many_takes_what_is_there_in_order_up_to_its_buffers() {
        let q: Queue<Vec<u8>> = Queue::<Vec<u8>>::builder().capacity(4096).build().unwrap();
        for i in 0..10u8 {
            q.put_bytes(&[i; 3]).unwrap();
            if i == 2 {
                // Over a quarter of the ring: it travels in a side segment.
                q.put_bytes(&[77; 2000]).unwrap();
            }
        }
        let mut bufs = vec![Vec::new(); 4];
        assert_eq!(q.get_bytes_many(&mut bufs, Wait::Never), Ok(4));
        assert_eq!(bufs[0], [0; 3]);
        assert_eq!(bufs[2], [2; 3]);
        assert_eq!(bufs[3], [77; 2000]);
        let mut bufs = vec![Vec::new(); 16];
        assert_eq!(q.get_bytes_many(&mut bufs, Wait::Never), Ok(7));
        assert!((0..7).all(|k| bufs[k] == [k as u8 + 3; 3]));
        assert_eq!(q.get_bytes_many(&mut bufs, Wait::Never), Err(RecvTimeoutError::Timeout));
        q.close();
        assert_eq!(q.get_bytes_many(&mut bufs, Wait::Never), Err(RecvTimeoutError::Disconnected));
    }
}

//! Loans: a queue message written and read in place in shared memory, for large
//! messages without the copy into the ring that `put_bytes` makes and the copy out
//! that `get_bytes` makes.
//!
//! [`Queue::put_loan`] (or [`Connection::send_loan`]) reserves room for one message
//! and hands it out as a [`PutLoan`] (a `&mut [u8]`); [`PutLoan::commit`] publishes
//! it whole, and a loan dropped without its commit publishes nothing.
//! [`Queue::get_loan`] (or [`Connection::recv_loan`]) hands the next message out as
//! a [`GetLoan`] (a `&[u8]`); dropping the loan takes the message. While a loan
//! lives it holds the ring's put (get) lock: other producers (consumers) wait, so
//! keep loans short. A process killed while it holds a put loan
//! publishes nothing and takes no room; one killed while it holds a get loan leaves
//! the message for the next consumer (see the ring's [`loan`](super::ring) module).
//!
//! In place when the message fits the ring contiguously; a message over a quarter
//! of the ring (a side segment's) or one whose bytes would wrap past the ring's end
//! is lent from an ordinary buffer instead, copied once at commit (or taken with a
//! get), so every loan works whatever its size.
//!
//! A loan lives on the thread that took it (its lock is that thread's): it is not
//! `Send`, and asking the same side of the same ring again on that thread while it
//! lives is [`ChannelFault::LoanHeld`](super::ChannelFault::LoanHeld), not a
//! deadlock. In-place bytes start 8-aligned (4-aligned in a checksummed ring).
//!
//! A thread that holds a put loan must not wait for a get on the same queue (and
//! the other way round) with nothing else to end the wait: the loan holds what the
//! other side needs.
//!
//! What a loan cannot promise: its bytes are shared memory. A process that ignores
//! the protocol (a scribbler) can change them while you read them, and a
//! checksummed ring checks them once, when it lends them; copy them out (or use
//! `get_bytes`) before you trust their contents, as you would any bytes from another
//! process.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use super::error::{RecvError, RecvTimeoutError, SendError, SendTimeoutError};
use super::pipe::Connection;
use super::queue::{Queue, RawQueue, Stop};
use super::ring::{GetFail, GetSlot, PutFail, PutSlot, Ring};
use crate::sync::wait::Wait;

/// Room for one message in a [`Queue`], written in place, published by
/// [`commit`](PutLoan::commit). Dropped uncommitted, it publishes nothing.
///
/// ```
/// let q = shmproc::Queue::<Vec<u8>>::new(0)?;
/// let mut loan = q.put_loan(4)?;
/// loan.copy_from_slice(b"ping");
/// loan.commit()?;
/// assert_eq!(&*q.get_loan()?, b"ping");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a put loan publishes nothing until `commit`"]
pub struct PutLoan<'q> {
    /// Where a loan lent from a buffer is sent at commit.
    sender: &'q dyn SendBuffer,
    room: Room<'q>,
    /// How long the commit of a buffered loan may wait for room.
    wait: Wait,
}

enum Room<'q> {
    InPlace(PutSlot<'q>),
    Buffer(Vec<u8>),
}

/// The next message of a [`Queue`], read in place; dropping the loan takes it.
///
/// It stays on the thread that took it:
///
/// ```compile_fail
/// fn elsewhere<T: Send>(_: T) {}
/// let q = shmproc::Queue::<Vec<u8>>::new(0).unwrap();
/// q.put_bytes(b"x").unwrap();
/// elsewhere(q.get_loan().unwrap());
/// ```
#[must_use = "dropping a get loan takes its message"]
pub struct GetLoan<'q> {
    message: Lent<'q>,
}

enum Lent<'q> {
    InPlace(GetSlot<'q>),
    Taken(Vec<u8>),
}

impl<T> Queue<T> {
    /// Reserves room for a message of `len` bytes, to be written in place and
    /// published with [`PutLoan::commit`], waiting as long as it takes for room. The
    /// message is raw bytes, as with [`put_bytes`](Queue::put_bytes).
    pub fn put_loan(&self, len: usize) -> Result<PutLoan<'_>, SendError<()>> {
        self.raw.reserve(len, Wait::Forever).map_err(|why| why.unbounded(()))
    }

    /// [`put_loan`](Queue::put_loan), waiting at most `timeout` for room (the
    /// commit of a loan lent from a buffer waits at most until the same deadline).
    pub fn put_loan_timeout(&self, len: usize, timeout: Duration) -> Result<PutLoan<'_>, SendTimeoutError<()>> {
        self.raw.reserve(len, Wait::timeout(timeout)).map_err(timed_out)
    }

    /// [`put_loan`](Queue::put_loan), waiting until `deadline` at the latest.
    pub fn put_loan_deadline(&self, len: usize, deadline: Instant) -> Result<PutLoan<'_>, SendTimeoutError<()>> {
        self.raw.reserve(len, Wait::Until(deadline)).map_err(timed_out)
    }

    /// Lends the oldest message, read in place, waiting as long as it takes.
    pub fn get_loan(&self) -> Result<GetLoan<'_>, RecvError> {
        self.raw.borrow(Wait::Forever).map_err(|e| RecvTimeoutError::from(e).unbounded())
    }

    /// [`get_loan`](Queue::get_loan), waiting at most `timeout`.
    pub fn get_loan_timeout(&self, timeout: Duration) -> Result<GetLoan<'_>, RecvTimeoutError> {
        Ok(self.raw.borrow(Wait::timeout(timeout))?)
    }

    /// [`get_loan`](Queue::get_loan), waiting until `deadline` at the latest.
    pub fn get_loan_deadline(&self, deadline: Instant) -> Result<GetLoan<'_>, RecvTimeoutError> {
        Ok(self.raw.borrow(Wait::Until(deadline))?)
    }
}

fn timed_out(why: Stop) -> SendTimeoutError<()> {
    why.timed_out(())
}

/// One try at room for `len` bytes: in the ring when it fits there contiguously
/// now, else a buffer (a message over the side threshold, or one that would wrap).
fn try_room(ring: &Ring, len: usize, wait: Wait) -> Result<Room<'_>, PutFail> {
    if len as u64 > ring.side_threshold() {
        return Ok(Room::Buffer(vec![0; len]));
    }
    Ok(ring.try_reserve(len, wait)?.map_or_else(|| Room::Buffer(vec![0; len]), Room::InPlace))
}

/// One try at the oldest message: in place when it lies in the ring contiguously,
/// else taken into a buffer (`Empty` too if another consumer took it between the
/// two looks).
fn try_lend(ring: &Ring, wait: Wait) -> Result<Lent<'_>, GetFail> {
    match ring.try_borrow(wait)? {
        Some(slot) => Ok(Lent::InPlace(slot)),
        None => {
            let mut bytes = Vec::new();
            ring.try_get(&mut bytes, wait).map(|()| Lent::Taken(bytes))
        }
    }
}

impl RawQueue {
    /// A put loan of `len` bytes, waiting for room per `wait`.
    fn reserve(&self, len: usize, wait: Wait) -> Result<PutLoan<'_>, Stop> {
        if self.ring.is_closed() {
            return Err(Stop::Closed);
        }
        let room = self.putting(self.ring.loan_payload(len), wait, || try_room(&self.ring, len, wait))?;
        Ok(PutLoan { sender: self, room, wait })
    }

    /// A get loan of the oldest message, waiting for one per `wait`.
    fn borrow(&self, wait: Wait) -> Result<GetLoan<'_>, GetFail> {
        Ok(GetLoan { message: self.getting(wait, || try_lend(&self.ring, wait))? })
    }
}

/// What a loan is sent through: its queue or its connection.
trait SendBuffer {
    /// Sends a loan lent from a buffer.
    fn send_buffer(&self, bytes: &[u8], wait: Wait) -> Result<(), SendTimeoutError<()>>;
    /// What a send checks before it commits, beyond the ring's own close flag.
    fn may_commit(&self) -> Result<(), SendTimeoutError<()>> {
        Ok(())
    }
}

impl SendBuffer for RawQueue {
    fn send_buffer(&self, bytes: &[u8], wait: Wait) -> Result<(), SendTimeoutError<()>> {
        self.put(bytes, wait).map_err(timed_out)
    }
}

impl<T> SendBuffer for Connection<T> {
    fn send_buffer(&self, bytes: &[u8], wait: Wait) -> Result<(), SendTimeoutError<()>> {
        self.send_raw(bytes, wait)
    }

    /// This handle closed, or the peer closed or gone since the loan was made: the
    /// commit fails as a send would.
    fn may_commit(&self) -> Result<(), SendTimeoutError<()>> {
        // Under the ring's put lock: the shared flags only (the reservation looked
        // at `/proc` already, when it was due).
        self.still_open(|| self.peer_closed())
    }
}

impl<T> Connection<T> {
    /// Reserves room for a message of `len` bytes to the other end, written in place
    /// and sent with [`PutLoan::commit`] (raw bytes, as with
    /// [`send_bytes`](Connection::send_bytes)), waiting as long as it takes for room.
    ///
    /// ```
    /// let (a, b) = shmproc::Pipe::duplex::<()>()?;
    /// let mut loan = a.send_loan(5)?;
    /// loan.copy_from_slice(b"hello");
    /// loan.commit()?;
    /// assert_eq!(&*b.recv_loan()?, b"hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_loan(&self, len: usize) -> Result<PutLoan<'_>, SendError<()>> {
        self.send_loan_with(len, Wait::Forever).map_err(SendTimeoutError::unbounded)
    }

    /// [`send_loan`](Connection::send_loan), waiting at most `timeout` for room.
    pub fn send_loan_timeout(&self, len: usize, timeout: Duration) -> Result<PutLoan<'_>, SendTimeoutError<()>> {
        self.send_loan_with(len, Wait::timeout(timeout))
    }

    fn send_loan_with(&self, len: usize, wait: Wait) -> Result<PutLoan<'_>, SendTimeoutError<()>> {
        let ring = self.sending_ring()?;
        let room = self.sending(ring, ring.loan_payload(len), wait, || try_room(ring, len, wait))?;
        Ok(PutLoan { sender: self, room, wait })
    }

    /// Lends the next message from the other end, read in place, waiting as long as
    /// it takes.
    pub fn recv_loan(&self) -> Result<GetLoan<'_>, RecvError> {
        self.recv_loan_with(Wait::Forever).map_err(RecvTimeoutError::unbounded)
    }

    /// [`recv_loan`](Connection::recv_loan), waiting at most `timeout`.
    pub fn recv_loan_timeout(&self, timeout: Duration) -> Result<GetLoan<'_>, RecvTimeoutError> {
        self.recv_loan_with(Wait::timeout(timeout))
    }

    fn recv_loan_with(&self, wait: Wait) -> Result<GetLoan<'_>, RecvTimeoutError> {
        let ring = self.receiving_ring()?;
        Ok(GetLoan { message: self.receiving(ring, wait, |wait| try_lend(ring, wait))? })
    }
}

impl PutLoan<'_> {
    /// Publishes the message, whole. A loan lent from a buffer (see the module docs)
    /// is put now, waiting for room until the loan's deadline.
    pub fn commit(self) -> Result<(), SendTimeoutError<()>> {
        match self.room {
            Room::InPlace(slot) => {
                self.sender.may_commit()?;
                slot.commit().map_err(|fail| timed_out(fail.into()))
            }
            Room::Buffer(bytes) => self.sender.send_buffer(&bytes, self.wait),
        }
    }

    /// Whether the message is written in place in the ring (`false`: in a buffer,
    /// copied at commit).
    pub fn in_place(&self) -> bool {
        matches!(self.room, Room::InPlace(_))
    }
}

impl Deref for PutLoan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.room {
            Room::InPlace(slot) => slot.bytes(),
            Room::Buffer(bytes) => bytes,
        }
    }
}

impl DerefMut for PutLoan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.room {
            Room::InPlace(slot) => slot.bytes_mut(),
            Room::Buffer(bytes) => bytes,
        }
    }
}

impl GetLoan<'_> {
    /// Whether the message is read in place in the ring (`false`: it was copied out).
    pub fn in_place(&self) -> bool {
        matches!(self.message, Lent::InPlace(_))
    }
}

impl Deref for GetLoan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.message {
            Lent::InPlace(slot) => slot.bytes(),
            Lent::Taken(bytes) => bytes,
        }
    }
}

impl fmt::Debug for PutLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutLoan").field("len", &self.len()).field("in_place", &self.in_place()).finish()
    }
}

impl fmt::Debug for GetLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetLoan").field("len", &self.len()).field("in_place", &self.in_place()).finish()
    }
}

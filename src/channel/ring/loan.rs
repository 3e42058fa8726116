//! Loans: a message written or read in place in the ring's data area, without the
//! copy a put makes from the caller's buffer and a get makes into one.
//!
//! A put loan ([`PutSlot`]) holds the put lock from its reservation to its commit:
//! the caller writes beyond `tail`, where no consumer looks, and the commit is a put's
//! own (frame header, then one release store of `tail`). A slot dropped without its
//! commit, or a holder that dies, leaves `tail` where it was: nothing published, no
//! space taken (the next holder of the robust lock clears the poison, as after any
//! put). A get loan ([`GetSlot`]) holds the get lock while the caller reads the
//! message in place and commits `head` when it is released; a holder that dies
//! leaves the message in the ring for the next consumer.
//!
//! A loan is made only for an in-ring message whose bytes are contiguous in the data
//! area; one whose bytes would wrap past its end (or a side message) is not (`None`),
//! and the queue falls back to a buffer and one copy.

use std::sync::atomic::Ordering;

use super::frame::{frame_len, frame_word, pack, unpack, CRC_LEN, FRAME_HEADER, INLINE, SKIP};
use super::{GetFail, LockHeld, PutFail, Ring, KILLED};

/// Room reserved after `tail` for one message of `len` bytes, written in place.
pub(crate) struct PutSlot<'r> {
    ring: &'r Ring,
    held: LockHeld<'r, true>,
    /// Where the frame starts (a ring position) and the message's number.
    pos: u64,
    puts: u32,
    /// Where the message's bytes start in the data area, and how many.
    start: usize,
    len: usize,
}

/// A message at `head`, read in place until released.
pub(crate) struct GetSlot<'r> {
    ring: &'r Ring,
    held: Option<LockHeld<'r, false>>,
    start: usize,
    len: usize,
    /// `head` once this message is taken, and whether more follows it.
    next_head: u64,
    more: bool,
}

impl Ring {
    /// What a loaned message of `len` bytes carries in its frame (for waiters).
    pub(crate) fn loan_payload(&self, len: usize) -> usize {
        len + self.crc_len()
    }

    pub(super) fn crc_len(&self) -> usize {
        if self.checksum {
            CRC_LEN
        } else {
            0
        }
    }

    /// Reserves room for a `len`-byte message to be written in place, waiting per
    /// `wait` only for the lock: `Ok(None)` if its bytes would not be contiguous here
    /// now (the caller writes it elsewhere and puts it), `Full` if there is no room.
    /// Only for messages under the side threshold.
    pub(crate) fn try_reserve(&self, len: usize, wait: super::Wait) -> Result<Option<PutSlot<'_>>, PutFail> {
        debug_assert!(len as u64 <= self.side_threshold());
        let Some(held) = self.lock_puts(wait).map_err(PutFail::Fault)? else {
            return Err(PutFail::Full);
        };
        if self.is_closed() {
            return Err(PutFail::Closed);
        }
        let tail = self.header().tail.load(Ordering::Relaxed);
        if !self.fits(tail, frame_len((len + self.crc_len()) as u64))? {
            return Err(PutFail::Full);
        }
        let (pos, puts) = unpack(tail);
        let start = self.offset(pos + FRAME_HEADER + self.crc_len() as u64);
        if start + len > self.capacity as usize {
            return Ok(None);
        }
        Ok(Some(PutSlot { ring: self, held, pos, puts, start, len }))
    }

    /// Looks at the message at `head` for a loan, waiting per `wait` only for the
    /// lock: `Ok(None)` if it cannot be read in place (a side message, or bytes that
    /// wrap: the caller takes it with a get). A message whose checksum fails is
    /// passed over and reported, as a get does.
    pub(crate) fn try_borrow(&self, wait: super::Wait) -> Result<Option<GetSlot<'_>>, GetFail> {
        let h = self.header();
        let Some(held) = self.lock_gets(wait).map_err(GetFail::Fault)? else {
            return Err(GetFail::Empty);
        };
        let closed = self.is_closed();
        let mut head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Acquire);
        h.consumer.tail_seen.store(tail, Ordering::Release);
        let (mut used, _) = self.occupancy(tail, head).map_err(GetFail::Fault)?;
        let (len, kind, frame, pos, gets) = loop {
            if used == 0 {
                return Err(if closed { GetFail::Closed } else { GetFail::Empty });
            }
            let (pos, gets) = unpack(head);
            let Some((len, kind, frame)) = self.valid_frame(self.read_word(pos), used, gets) else {
                return Err(GetFail::Fault(super::ChannelFault::Corrupted("frame header")));
            };
            if kind != SKIP {
                break (len, kind, frame, pos, gets);
            }
            let Some(next) = self.pass_skip(pos, frame, gets) else {
                return Err(GetFail::Fault(super::ChannelFault::Corrupted("frame header")));
            };
            head = next;
            used -= frame;
        };
        let crc_len = self.crc_len() as u64;
        if kind != INLINE || len < crc_len {
            return Ok(None);
        }
        let start = self.offset(pos + FRAME_HEADER + crc_len);
        let bytes = (len - crc_len) as usize;
        if start + bytes > self.capacity as usize {
            return Ok(None);
        }
        let next_head = pack(pos + frame, gets.wrapping_add(1));
        let slot = GetSlot { ring: self, held: Some(held), start, len: bytes, next_head, more: frame < used };
        if self.checksum {
            let crc = self.read_word(pos + FRAME_HEADER) as u32;
            if crc32c::crc32c(slot.bytes()) != crc {
                // The frame is whole, the message damaged: passed over, reported once.
                drop(slot);
                return Err(GetFail::Fault(super::ChannelFault::Corrupted("message checksum")));
            }
        }
        Ok(Some(slot))
    }
}

impl PutSlot<'_> {
    /// The reserved bytes as they are now.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`; shared, for reading back what was written.
        unsafe { std::slice::from_raw_parts(self.ring.data.as_ptr().add(self.start), self.len) }
    }

    /// The reserved bytes, to be written in place (their contents are whatever
    /// the ring held there before).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `start + len <= capacity` (checked at reservation): inside the data
        // area. The bytes are beyond the committed tail, which only the put lock's
        // holder (this slot, for its whole life) writes and no consumer reads; the
        // borrow of `self` keeps the slice from outliving the lock.
        unsafe { std::slice::from_raw_parts_mut(self.ring.data.as_ptr().add(self.start), self.len) }
    }

    /// Publishes the message: its checksum, its frame header, then the store of
    /// `tail` that commits it (as a put does).
    pub(crate) fn commit(mut self) -> Result<(), PutFail> {
        let ring = self.ring;
        if ring.is_closed() {
            // Closed while the loan was held (by this thread, or by another after
            // waiting for the lock in vain): nothing is published after a close.
            return Err(PutFail::Closed);
        }
        let crc = ring.checksum.then(|| crc32c::crc32c(self.bytes_mut()));
        if let Some(crc) = crc {
            ring.write(self.pos + FRAME_HEADER, &crc.to_le_bytes());
        }
        let len = (self.len + ring.crc_len()) as u64;
        ring.write_word(self.pos, frame_word(len, INLINE, self.puts));
        dies_at!("loan:header", self.held, PutFail::Fault(KILLED));
        let tail = pack(self.pos + frame_len(len), self.puts.wrapping_add(1));
        ring.header().tail.store(tail, Ordering::Release);
        drop(self.held); // wakes consumers that asked
        Ok(())
    }
}

impl GetSlot<'_> {
    /// The message, in place.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `start + len <= capacity` (checked when borrowed): inside the data
        // area, mapped for as long as `self.ring` is borrowed, in committed bytes
        // that no producer overwrites until `head` moves past them, which only this
        // slot's release does (it holds the get lock). A process outside the protocol
        // (a scribbler) may still change them under the borrow: they are plain bytes,
        // any value is a valid `u8`, and what they mean is the reader's to check (a
        // checksum is verified once, when the message is lent).
        unsafe { std::slice::from_raw_parts(self.ring.data.as_ptr().add(self.start), self.len) }
    }
}

impl Drop for GetSlot<'_> {
    /// Takes the message: `head` moves past it, and the lock is released.
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        if crate::steps::point("loan:release") == crate::steps::Step::Die {
            std::mem::forget(held);
            return;
        }
        let h = self.ring.header();
        h.head.store(self.next_head, Ordering::Release);
        drop(held); // wakes producers that asked
        if self.more {
            h.not_empty.pass_on();
        }
    }
}

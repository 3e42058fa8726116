//! The `#[repr(C)]` header at offset 0 of every segment, and its validation.
//!
//! | offset | field            | written by | meaning                                         |
//! |--------|------------------|------------|-------------------------------------------------|
//! | 0      | magic            | creator    | `b"SHMPROC\0"`                                  |
//! | 8      | version          | creator    | [`LAYOUT_VERSION`]; bumped on any layout change |
//! | 12     | state            | creator    | 0 while being built, [`READY`] once published   |
//! | 16     | kind             | creator    | the [`ObjectKind`] the body holds               |
//! | 20     | elem_size        | creator    | `size_of::<T>()` of the element type, or 0      |
//! | 24     | elem_align       | creator    | `align_of::<T>()`, or 0                         |
//! | 28     | creator_pid      | creator    | the creating process (named segments; else 0)   |
//! | 32     | type_fingerprint | creator    | a hash of the element type's name, or 0         |
//! | 40     | elem_count       | creator    | array length, barrier parties, or 1             |
//! | 48     | body_len         | creator    | bytes of body after the header                  |
//! | 56     | creator_start    | creator, then `disown` | low half: the creator's start time; high half: its pid namespace; once disowned, the inode of the segment that keeps it (a queue's, for its side segments), 0 for none |
//!
//! The creator writes every field, initialises the body, then stores `READY` with
//! release ordering; an opener loads `state` with acquire ordering before trusting
//! anything else. A creator that dies before publishing leaves `state == 0`, which an
//! opener reports as [`SegmentOpenError::Uninitialised`]. After validation the
//! opener keeps its own copy of every size it needs and never re-reads them.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{ObjectKind, SegmentOpenError, TypeInfo};

/// Identifies a shmproc segment.
pub(crate) const MAGIC: [u8; 8] = *b"SHMPROC\0";
/// The layout of the header and of every body; bumped on any change.
pub(crate) const LAYOUT_VERSION: u32 = 5;
/// `state` once the creator has finished building the segment.
pub(crate) const READY: u32 = 0x5245_4459; // "READ" + 'Y'-ish, unlikely by accident

/// Bytes reserved for the header; the body starts here, cache-line aligned.
pub(crate) const HEADER_LEN: usize = 64;

#[repr(C)]
pub(crate) struct Header {
    magic: [u8; 8],
    version: u32,
    state: AtomicU32,
    kind: u32,
    elem_size: u32,
    elem_align: u32,
    /// Atomic: `disown` writes it on a live segment that others may be reading.
    creator_pid: AtomicU32,
    type_fingerprint: u64,
    elem_count: u64,
    body_len: u64,
    /// Atomic: `disown` writes it on a live segment.
    creator_start: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

/// The process that created a named segment: its pid and start time, which tell it
/// from a later process given the same recycled pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Creator {
    pub(crate) pid: u32,
    pub(crate) start: u32,
    /// The creator's pid namespace (low 32 bits of its inode): a pid means nothing
    /// outside it, so only segments from our own namespace are judged.
    pub(crate) pid_ns: u32,
}

/// What a segment is meant to hold: checked against the header when attaching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expect {
    pub(crate) kind: ObjectKind,
    pub(crate) elem: Option<TypeInfo>,
}

impl Header {
    /// Writes every field except `state`, which stays 0 until [`Header::publish`].
    pub(crate) fn write(&mut self, expect: Expect, elem_count: u64, body_len: u64, creator: Option<Creator>) {
        let creator = creator.unwrap_or(Creator { pid: 0, start: 0, pid_ns: 0 });
        let elem = expect.elem.unwrap_or(TypeInfo::NONE);
        self.magic = MAGIC;
        self.version = LAYOUT_VERSION;
        self.kind = expect.kind as u32;
        self.elem_size = elem.size;
        self.elem_align = elem.align;
        self.creator_pid = AtomicU32::new(creator.pid);
        self.creator_start = AtomicU64::new(u64::from(creator.start) | (u64::from(creator.pid_ns) << 32));
        self.type_fingerprint = elem.fingerprint;
        self.elem_count = elem_count;
        self.body_len = body_len;
    }

    /// Forgets the creator, and records the segment that keeps this one from now on
    /// (`keeper`: its inode; 0 for none): the orphan sweep removes the segment only
    /// once no process maps its keeper.
    ///
    /// # Safety
    /// `this` points to a mapped header.
    pub(crate) unsafe fn disown(this: *mut Header, keeper: u64) {
        // SAFETY: per the contract; both are atomics, which any process may store to
        // while others read them. The keeper first: a sweep that sees no creator
        // sees the keeper too.
        unsafe {
            (*this).creator_start.store(keeper, Ordering::Release);
            (*this).creator_pid.store(0, Ordering::Release);
        }
    }

    pub(crate) fn publish(&self) {
        self.state.store(READY, Ordering::Release);
    }

    /// Checks the header at `at` against the real file length, and says what the
    /// segment holds; [`Expect::check`] then compares that with what the caller wants.
    ///
    /// Another process may be writing the header while we read it, so this takes one
    /// copy (after an acquire load of `state`, which orders it after the creator's
    /// writes) and judges only the copy: no field is read twice.
    ///
    /// # Safety
    /// `at` points to at least `HEADER_LEN` readable bytes, aligned for `Header`.
    pub(crate) unsafe fn read_and_validate(at: *const Header, file_len: u64) -> Result<Validated, SegmentOpenError> {
        // SAFETY: per the contract; `state` is an AtomicU32 inside the header.
        let state = unsafe { (*at).state.load(Ordering::Acquire) };
        // SAFETY: per the contract; every bit pattern is a valid Header (integers and
        // an atomic), and a volatile copy is not elided or re-read by the compiler.
        let h = unsafe { std::ptr::read_volatile(at) };
        if h.magic != MAGIC {
            return Err(SegmentOpenError::NotShmproc);
        }
        if state != READY {
            return Err(SegmentOpenError::Uninitialised);
        }
        if h.version != LAYOUT_VERSION {
            return Err(SegmentOpenError::VersionMismatch { found: h.version, expected: LAYOUT_VERSION });
        }
        let kind = ObjectKind::from_u32(h.kind).ok_or(SegmentOpenError::Corrupted("unknown object kind"))?;
        let needed =
            (HEADER_LEN as u64).checked_add(h.body_len).ok_or(SegmentOpenError::Corrupted("body length overflows"))?;
        if needed > file_len {
            return Err(SegmentOpenError::Truncated { len: file_len, needed });
        }
        // From the shared header, atomically: `disown` may store them at any time.
        // SAFETY: `at` points to a readable, aligned Header (the contract).
        let creator_pid = unsafe { (*at).creator_pid.load(Ordering::Acquire) };
        // SAFETY: as above.
        let start_and_ns = unsafe { (*at).creator_start.load(Ordering::Acquire) };
        let keeper = (creator_pid == 0 && start_and_ns != 0).then_some(start_and_ns);
        let creator = (creator_pid != 0).then_some(Creator {
            pid: creator_pid,
            start: start_and_ns as u32,
            pid_ns: (start_and_ns >> 32) as u32,
        });
        let elem = ElemInfo { size: h.elem_size, align: h.elem_align, fingerprint: h.type_fingerprint };
        Ok(Validated { kind, elem, elem_count: h.elem_count, body_len: h.body_len, creator, keeper })
    }
}

/// An element type as the header records it (a [`TypeInfo`] without the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ElemInfo {
    pub(crate) size: u32,
    pub(crate) align: u32,
    pub(crate) fingerprint: u64,
}

impl From<Option<TypeInfo>> for ElemInfo {
    fn from(t: Option<TypeInfo>) -> ElemInfo {
        let t = t.unwrap_or(TypeInfo::NONE);
        ElemInfo { size: t.size, align: t.align, fingerprint: t.fingerprint }
    }
}

impl Expect {
    /// Whether a segment holding `kind` with elements `elem` is what was asked for.
    pub(crate) fn check(&self, kind: ObjectKind, elem: ElemInfo) -> Result<(), SegmentOpenError> {
        if kind != self.kind {
            return Err(SegmentOpenError::WrongKind { found: kind, expected: self.kind });
        }
        if elem != ElemInfo::from(self.elem) {
            return Err(SegmentOpenError::WrongType { expected: self.elem.unwrap_or(TypeInfo::NONE).name });
        }
        Ok(())
    }
}

/// What attaching learned from a valid header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validated {
    pub(crate) kind: ObjectKind,
    pub(crate) elem: ElemInfo,
    pub(crate) elem_count: u64,
    pub(crate) body_len: u64,
    pub(crate) creator: Option<Creator>,
    /// For a disowned segment: the inode of the segment that keeps it.
    pub(crate) keeper: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `bytes` as a header, as `owner_of` reads one from a file.
    fn header_of(bytes: &[u8]) -> Header {
        let mut header = std::mem::MaybeUninit::<Header>::uninit();
        // SAFETY: `bytes` holds HEADER_LEN bytes (the strategy's length), and every bit
        // pattern is a valid Header (integers and atomics).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), header.as_mut_ptr().cast::<u8>(), HEADER_LEN);
            header.assume_init()
        }
    }

    proptest! {
        /// Any 64 bytes, made plausible (right magic, version, published) half the
        /// time to reach the deeper checks: an error or a header whose body fits in
        /// the file, never a panic.
        #[test]
        fn any_bytes_validate_to_an_error_or_a_body_that_fits(
            mut bytes in prop::collection::vec(any::<u8>(), HEADER_LEN),
            plausible: bool,
            file_len: u64,
        ) {
            if plausible {
                bytes[0..8].copy_from_slice(&MAGIC);
                bytes[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
                bytes[12..16].copy_from_slice(&READY.to_le_bytes());
            }
            let header = header_of(&bytes);
            // SAFETY: `header` is a whole, aligned Header on our stack.
            if let Ok(v) = unsafe { Header::read_and_validate(&header, file_len) } {
                prop_assert!(v.body_len.checked_add(HEADER_LEN as u64).is_some_and(|end| end <= file_len));
            }
        }
    }
}

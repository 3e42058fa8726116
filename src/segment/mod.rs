//! Shared-memory segments: the bytes every shared object lives in.
//!
//! A segment is one mapping, `MAP_SHARED`, that starts with a validated
//! [header](header) and continues with the body of exactly one object (a lock, a
//! `Value`, an `Array`, ...).
//!
//! - **Anonymous** (the default): `memfd_create` + `ftruncate` + `mmap`. A forked child
//!   shares it; it disappears when the last process unmaps it, so a crash never leaves a
//!   file in `/dev/shm`. Its size is sealed, so no process can shrink it under another's
//!   mapping. The descriptor is close-on-exec.
//! - **Named**, on request: `shm_open(O_CREAT | O_EXCL, 0600)` under a name with 128
//!   random bits, which an unrelated process can open. The creating *process* unlinks it
//!   when its handle drops; a forked copy of the handle never does (unlike
//!   shared_memory, whose forked copies unlink the segment for everyone). A creator
//!   killed before it drops leaves the name behind, as any named POSIX shm object
//!   does; the header records the creator's pid and start time, and
//!   [`remove_orphaned_segments`] (which every named creation runs) unlinks the
//!   segments of dead creators.
//!   POSIX shm cannot be sealed: a hostile process that truncates a named segment
//!   makes the others fault on their next access.
//!
//! Attaching checks the header against what the caller expects and against the file's
//! real length, and reports any mismatch as a [`SegmentOpenError`]; after that the
//! opener never re-reads a size from shared memory.

mod error;
mod header;
mod orphans;
pub(crate) mod transfer;
mod view;

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;

use memmap2::{MmapOptions, MmapRaw};

use crate::sys;
use header::{ElemInfo, Header};
pub(crate) use header::{Expect, HEADER_LEN};

pub use error::{SegmentCreateError, SegmentOpenError};
pub use orphans::remove_orphaned_segments;
pub(crate) use orphans::set_keeper_check;
use orphans::{check_name, random_name, this_process};

pub(crate) use view::{create_view, open_view, view_of, View};

/// The kind of shared object a segment holds, recorded in its header.
///
/// You meet it when a name leads to another kind of object than the one asked for:
///
/// ```
/// use shmproc::{Event, Lock, ObjectKind, SegmentOpenError};
///
/// let lock = Lock::new_named()?;
/// let name = lock.name().expect("a named lock has a name");
/// match Event::open(name) {
///     Err(SegmentOpenError::WrongKind { found, expected }) => {
///         assert_eq!((found, expected), (ObjectKind::Lock, ObjectKind::Event));
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A [`Lock`](crate::Lock).
    Lock = 1,
    /// An [`RLock`](crate::RLock).
    RLock = 2,
    /// A [`Semaphore`](crate::Semaphore).
    Semaphore = 3,
    /// A [`Condition`](crate::Condition) with its lock.
    Condition = 4,
    /// An [`Event`](crate::Event).
    Event = 5,
    /// A [`Barrier`](crate::Barrier).
    Barrier = 6,
    /// A [`Value`](crate::Value) with its lock.
    Value = 7,
    /// An [`Array`](crate::Array) with its lock.
    Array = 8,
    /// A [`RawValue`](crate::RawValue), or the data of a `Value` built on another lock.
    RawValue = 9,
    /// A [`RawArray`](crate::RawArray), or the data of an `Array` built on another lock.
    RawArray = 10,
    /// A [`BoundedSemaphore`](crate::BoundedSemaphore).
    BoundedSemaphore = 11,
    /// Where a fork server reports how one of its children ended.
    ProcessStatus = 12,
    /// A [`Queue`](crate::Queue).
    Queue = 13,
    /// A [`JoinableQueue`](crate::JoinableQueue).
    JoinableQueue = 14,
    /// A [`Pipe`](crate::Pipe): two connections.
    Pipe = 15,
    /// A message too large for its queue's ring, on its way to a consumer.
    QueueSide = 16,
    /// A [`Manager`](crate::Manager)'s arena: its dicts, lists and namespaces.
    Manager = 17,
}

impl ObjectKind {
    const ALL: [ObjectKind; 17] = [
        ObjectKind::Lock,
        ObjectKind::RLock,
        ObjectKind::Semaphore,
        ObjectKind::Condition,
        ObjectKind::Event,
        ObjectKind::Barrier,
        ObjectKind::Value,
        ObjectKind::Array,
        ObjectKind::RawValue,
        ObjectKind::RawArray,
        ObjectKind::BoundedSemaphore,
        ObjectKind::ProcessStatus,
        ObjectKind::Queue,
        ObjectKind::JoinableQueue,
        ObjectKind::Pipe,
        ObjectKind::QueueSide,
        ObjectKind::Manager,
    ];

    /// "a Value", "an Array": for messages.
    pub(crate) fn with_article(self) -> String {
        let name = format!("{self}");
        let article = if name.starts_with(['A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
        format!("{article} {name}")
    }

    fn from_u32(v: u32) -> Option<ObjectKind> {
        Self::ALL.into_iter().find(|k| *k as u32 == v)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The element type of a `Value` or `Array`, as recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypeInfo {
    pub(crate) size: u32,
    pub(crate) align: u32,
    /// FNV-1a of the type's name: tells `u64` from `f64`, which size and alignment
    /// cannot. Stable between copies of one binary and across builds of one crate
    /// version, which is what attaching needs.
    pub(crate) fingerprint: u64,
    pub(crate) name: &'static str,
}

impl TypeInfo {
    pub(crate) const NONE: TypeInfo = TypeInfo { size: 0, align: 0, fingerprint: 0, name: "()" };

    /// Any type, zero-sized ones included: what a channel records of its messages.
    pub(crate) fn of_message<T>() -> TypeInfo {
        let name = std::any::type_name::<T>();
        TypeInfo {
            size: u32::try_from(std::mem::size_of::<T>()).unwrap_or(u32::MAX),
            align: std::mem::align_of::<T>() as u32,
            fingerprint: fnv1a(name.as_bytes()),
            name,
        }
    }

    /// `None` for zero-sized types and types too large to record.
    pub(crate) fn of<T>() -> Option<TypeInfo> {
        let size = u32::try_from(std::mem::size_of::<T>()).ok().filter(|s| *s > 0)?;
        let name = std::any::type_name::<T>();
        Some(TypeInfo { size, align: std::mem::align_of::<T>() as u32, fingerprint: fnv1a(name.as_bytes()), name })
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Where a new segment's memory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Backing<'a> {
    /// memfd: shared with forked children, nameless, gone with its last mapping.
    #[default]
    Anonymous,
    /// POSIX shm under a random name, openable by unrelated processes.
    Named,
    /// POSIX shm under a name the user chose, so that unrelated programs can meet
    /// at it (made under a random name, then renamed into place once published).
    NamedAs(&'a str),
}

fn os_create(op: &'static str) -> impl FnOnce(io::Error) -> SegmentCreateError {
    move |source| SegmentCreateError::Os { op, source }
}

/// One mapping of a segment: header plus body.
pub(crate) struct Segment {
    map: MmapRaw,
    /// Kept open so that a start method can hand the segment to a child.
    _fd: OwnedFd,
    name: Option<String>,
    /// The process that must unlink `name` when this handle drops: the creator, and
    /// never a forked copy of it.
    unlink_in: std::sync::atomic::AtomicI32,
    kind: ObjectKind,
    elem: ElemInfo,
    elem_count: u64,
    body_len: usize,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("body_len", &self.body_len)
            .field("elem_count", &self.elem_count)
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Makes a segment whose body is `body_len` bytes, lets `init` build the body in
    /// place, then publishes it.
    ///
    /// `init` gets the body's address; the body is zero-filled and 64-byte aligned,
    /// and nothing else can see it yet.
    pub(crate) fn create(
        expect: Expect,
        elem_count: u64,
        body_len: usize,
        backing: Backing,
        init: impl FnOnce(*mut u8) -> io::Result<()>,
    ) -> Result<Segment, SegmentCreateError> {
        let total = HEADER_LEN.checked_add(body_len).ok_or(SegmentCreateError::TooLarge(expect.kind))?;
        if isize::try_from(total).is_err() {
            return Err(SegmentCreateError::TooLarge(expect.kind));
        }
        let (fd, name) = match backing {
            Backing::Anonymous => (sys::memfd_create("shmproc").map_err(os_create("memfd_create"))?, None),
            Backing::Named | Backing::NamedAs(_) => {
                if let Backing::NamedAs(chosen) = backing {
                    orphans::check_chosen_name(chosen)?;
                }
                // Named segments are the ones a crash can leave behind: reclaim those
                // of dead creators while we are here. Best effort by nature.
                orphans::sweep_now_and_then();
                let name = random_name().map_err(os_create("getrandom"))?;
                (sys::shm_create_exclusive(&name).map_err(os_create("shm_open"))?, Some(name))
            }
        };
        let map = size_and_map(&fd, total, backing).inspect_err(|_| {
            if let Some(name) = &name {
                let _ = sys::shm_unlink(name);
            }
        })?;
        // From here on, `Drop` unlinks a named segment if anything fails.
        let mut seg = Segment {
            map,
            _fd: fd,
            unlink_in: std::sync::atomic::AtomicI32::new(if name.is_some() { sys::getpid() } else { 0 }),
            name,
            kind: expect.kind,
            elem: ElemInfo::from(expect.elem),
            elem_count,
            body_len,
        };
        let header = seg.header_mut_ptr();
        let creator = seg.name.as_ref().map(|_| this_process());
        // SAFETY: the mapping is `total >= HEADER_LEN` bytes, page aligned, and not yet
        // visible to any other process or thread, so this exclusive write is unique.
        unsafe { (*header).write(expect, elem_count, body_len as u64, creator) };
        init(seg.body()).map_err(os_create("initialising the shared object"))?;
        // SAFETY: as above; `publish` is an atomic store.
        unsafe { (*header).publish() };
        if let (Backing::NamedAs(chosen), Some(made_as)) = (backing, &seg.name) {
            // Whole and published under its own name first, so that no process ever
            // opens a half-made segment under the chosen one, and a creator killed
            // before this line leaves a file the sweep knows by its name.
            sys::shm_rename_noreplace(made_as, chosen).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => SegmentCreateError::AlreadyExists(chosen.to_owned()),
                _ => SegmentCreateError::Os { op: "renameat2", source: e },
            })?;
            seg.name = Some(chosen.to_owned());
        }
        Ok(seg)
    }

    /// Attaches to the named segment `name`, checking that it holds what `expect` says.
    pub(crate) fn open(name: &str, expect: Expect) -> Result<Segment, SegmentOpenError> {
        let seg = Segment::open_unchecked(name)?;
        seg.check(expect)?;
        Ok(seg)
    }

    /// Attaches to the named segment `name`, checking its header but not yet what it
    /// holds: see [`Segment::check`].
    pub(crate) fn open_unchecked(name: &str) -> Result<Segment, SegmentOpenError> {
        check_name(name)?;
        let fd = sys::shm_open_existing(name).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SegmentOpenError::NotFound(name.to_owned()),
            io::ErrorKind::PermissionDenied => SegmentOpenError::PermissionDenied(name.to_owned()),
            _ => SegmentOpenError::Os { op: "shm_open", source: e },
        })?;
        Segment::attach(fd, Some(name.to_owned()))
    }

    /// Attaches to the segment behind `fd` (handed over by a parent process), checking
    /// its header but not yet what it holds: see [`Segment::check`].
    pub(crate) fn attach(fd: OwnedFd, name: Option<String>) -> Result<Segment, SegmentOpenError> {
        let file_len = sys::file_len(&fd).map_err(|source| SegmentOpenError::Os { op: "fstat", source })?;
        if file_len < HEADER_LEN as u64 {
            return Err(SegmentOpenError::Truncated { len: file_len, needed: HEADER_LEN as u64 });
        }
        let map_len = usize::try_from(file_len).map_err(|_| SegmentOpenError::Corrupted("file larger than memory"))?;
        let map = MmapOptions::new()
            .len(map_len)
            .map_raw(&fd)
            .map_err(|source| SegmentOpenError::Os { op: "mmap", source })?;
        // SAFETY: the mapping holds at least HEADER_LEN bytes (checked above) and is
        // page aligned.
        let v = unsafe { Header::read_and_validate(map.as_ptr().cast(), file_len)? };
        if let Some(creator) = v.creator {
            let ours = sys::pid_namespace();
            if creator.pid_ns != 0 && ours != 0 && creator.pid_ns != ours {
                return Err(SegmentOpenError::ForeignPidNamespace);
            }
        }
        let body_len = usize::try_from(v.body_len).map_err(|_| SegmentOpenError::Corrupted("body length"))?;
        Ok(Segment {
            map,
            _fd: fd,
            name,
            unlink_in: std::sync::atomic::AtomicI32::new(0),
            kind: v.kind,
            elem: v.elem,
            elem_count: v.elem_count,
            body_len,
        })
    }

    /// Gives the name away: this handle never unlinks it. Another process will (a
    /// queue's consumer), or, once no process maps `keeper` (the inode of the
    /// segment that holds the name: a queue's), the orphan sweep.
    pub(crate) fn disown(&self, keeper: u64) {
        self.unlink_in.store(0, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the header is inside the mapping (at least HEADER_LEN bytes); its
        // creator fields are atomics.
        unsafe { Header::disown(self.header_mut_ptr(), keeper) };
    }

    /// The inode of the file behind this segment (see [`Segment::disown`]).
    pub(crate) fn inode(&self) -> u64 {
        sys::file_inode(&self._fd).unwrap_or(0)
    }

    /// Whether this segment holds what `expect` says.
    pub(crate) fn check(&self, expect: Expect) -> Result<(), SegmentOpenError> {
        expect.check(self.kind, self.elem)
    }

    pub(crate) fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The descriptor behind the mapping, for handing the segment to a child.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self._fd
    }

    fn header_mut_ptr(&self) -> *mut Header {
        self.map.as_mut_ptr().cast()
    }

    /// The first byte of the body: 64-byte aligned, `body_len()` bytes long, valid
    /// for as long as `self` lives.
    pub(crate) fn body(&self) -> *mut u8 {
        // SAFETY: the mapping is at least HEADER_LEN bytes (checked at create/open),
        // so the offset stays inside it.
        unsafe { self.map.as_mut_ptr().add(HEADER_LEN) }
    }

    pub(crate) fn body_len(&self) -> usize {
        self.body_len
    }

    pub(crate) fn elem_count(&self) -> u64 {
        self.elem_count
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let pid = self.unlink_in.load(std::sync::atomic::Ordering::Relaxed);
        if let (Some(name), true) = (&self.name, pid != 0) {
            if pid == sys::getpid() {
                // Already unlinked by someone else is fine: the goal is that it is gone.
                let _ = sys::shm_unlink(name);
            }
        }
    }
}

fn size_and_map(fd: &OwnedFd, total: usize, backing: Backing) -> Result<MmapRaw, SegmentCreateError> {
    sys::set_len(fd, total).map_err(os_create("ftruncate"))?;
    match backing {
        Backing::Anonymous => sys::seal_size(fd).map_err(os_create("fcntl(F_ADD_SEALS)"))?,
        // A /dev/shm too small for the segment (64 MiB in a default container) must
        // fail here, not raise SIGBUS at the first touch of a missing page.
        Backing::Named | Backing::NamedAs(_) => sys::allocate(fd, total).map_err(os_create("posix_fallocate"))?,
    }
    MmapOptions::new().len(total).map_raw(fd).map_err(os_create("mmap"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECT: Expect = Expect { kind: ObjectKind::RawArray, elem: None };

    #[test]
    fn names_are_random_and_well_formed() {
        let a = random_name().unwrap();
        let b = random_name().unwrap();
        assert_ne!(a, b);
        assert!(check_name(&a).is_ok());
        assert!(a.starts_with("/shmproc.") && a.rsplit('.').next().unwrap().len() == 32);
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "/", "noslash", "/a/b", "/a\0b"] {
            assert!(matches!(check_name(bad), Err(SegmentOpenError::InvalidName(_))), "{bad:?}");
        }
    }

    #[test]
    fn type_info_tells_same_sized_types_apart() {
        let a = TypeInfo::of::<u64>().unwrap();
        let b = TypeInfo::of::<f64>().unwrap();
        assert_eq!((a.size, a.align), (b.size, b.align));
        assert_ne!(a.fingerprint, b.fingerprint);
        assert!(TypeInfo::of::<()>().is_none());
    }

    #[test]
    fn named_segment_round_trip_and_unlink() {
        let seg = Segment::create(EXPECT, 3, 24, Backing::Named, |_| Ok(())).unwrap();
        let name = seg.name().unwrap().to_owned();
        let other = Segment::open(&name, EXPECT).unwrap();
        assert_eq!((other.elem_count(), other.body_len()), (3, 24));
        drop(other);
        drop(seg);
        assert!(matches!(Segment::open(&name, EXPECT), Err(SegmentOpenError::NotFound(_))));
    }

    #[test]
    fn anonymous_segment_is_zeroed_and_sealed() {
        let seg = Segment::create(EXPECT, 1, 4096, Backing::Anonymous, |_| Ok(())).unwrap();
        // SAFETY: the body is 4096 bytes long and nobody else writes it.
        let body = unsafe { std::slice::from_raw_parts(seg.body(), seg.body_len()) };
        assert!(body.iter().all(|b| *b == 0));
        assert!(sys::set_len(&seg._fd, 10).is_err(), "the size must be sealed");
    }
}

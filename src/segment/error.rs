//! The errors of the segment layer: creating a shared object, and opening or
//! attaching to one (every check an attach makes has its variant).

use std::io;

use super::ObjectKind;

/// Creating a shared object failed.
///
/// ```
/// use shmproc::{Array, Lock, SegmentCreateError};
///
/// match Array::<u64>::zeroed(0) {
///     Err(SegmentCreateError::ZeroLength) => {}
///     other => panic!("{other:?}"),
/// }
/// // A chosen name starts with one '/' and has no other.
/// assert!(matches!(Lock::new_named_as("no/slash"), Err(SegmentCreateError::InvalidName { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentCreateError {
    /// An `Array` (or `RawArray`) of length zero was asked for.
    #[error("a shared array needs at least one element")]
    ZeroLength,
    /// The element type has size zero: there is nothing to share.
    #[error("the zero-sized type `{}` cannot be shared", crate::names::short_type_name(.0))]
    ZeroSizedType(&'static str),
    /// The requested size overflows what a segment can hold.
    #[error("{} of the requested size does not fit in memory", .0.with_article())]
    TooLarge(ObjectKind),
    /// An argument is outside what the object accepts (a barrier of zero parties, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A chosen name that cannot name a segment (`why` says what is wrong with it).
    #[error("`{name}` cannot name a shared object: {why}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A shared object of that name exists already (Python's `FileExistsError`):
    /// open it with `open`, or choose another name.
    #[error("a shared object named `{0}` exists already")]
    AlreadyExists(String),
    /// The operating system refused a step (`op` names it).
    #[error("{op} failed: {source}")]
    Os {
        /// The call that failed: `memfd_create`, `shm_open`, `ftruncate`, `mmap`, ...
        op: &'static str,
        /// What the operating system said.
        source: io::Error,
    },
}

/// Attaching to an existing shared object failed.
///
/// ```
/// use shmproc::{Lock, SegmentOpenError, Value};
///
/// match Lock::open("/shmproc_doc_no_such_lock") {
///     Err(SegmentOpenError::NotFound(name)) => assert_eq!(name, "/shmproc_doc_no_such_lock"),
///     other => panic!("{other:?}"),
/// }
/// // The header records the element type: a `u64` is never read as an `f64`.
/// let v = Value::<u64>::new_named(1)?;
/// let name = v.name().expect("a named value has a name");
/// assert!(matches!(Value::<f64>::open(name), Err(SegmentOpenError::WrongType { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentOpenError {
    /// The name is not of the form `/name` (one leading slash, no other, at most 255 bytes).
    #[error("invalid segment name {0:?}: expected \"/name\" with no other '/'")]
    InvalidName(String),
    /// No segment has that name (never made, or already unlinked).
    #[error("no shared segment named {0:?}")]
    NotFound(String),
    /// The segment exists but belongs to someone we may not read.
    #[error("permission denied opening {0:?}")]
    PermissionDenied(String),
    /// The file is shorter than its header says the object needs.
    #[error("segment truncated: {len} bytes where {needed} are needed")]
    Truncated {
        /// The file's real length.
        len: u64,
        /// What the header claims (or the header alone, if even that is missing).
        needed: u64,
    },
    /// The file does not start with shmproc's magic: not one of ours.
    #[error("not a shmproc segment (bad magic)")]
    NotShmproc,
    /// Its creator has not finished building it (or died before it did).
    #[error("segment not initialised: its creator has not published it")]
    Uninitialised,
    /// Made by a shmproc with a different memory layout.
    #[error("segment layout version {found}, this build reads version {expected}")]
    VersionMismatch {
        /// The version in the header.
        found: u32,
        /// The version this build writes and reads.
        expected: u32,
    },
    /// It holds another kind of object than the one asked for.
    #[error("segment holds {}, not {}", found.with_article(), expected.with_article())]
    WrongKind {
        /// What the header says it holds.
        found: ObjectKind,
        /// What the caller asked for.
        expected: ObjectKind,
    },
    /// It holds elements of another type than the one asked for.
    #[error("segment's element type is not `{}`", crate::names::short_type_name(expected))]
    WrongType {
        /// The type the caller asked for.
        expected: &'static str,
    },
    /// Made by a process in another pid namespace (another container sharing
    /// /dev/shm): lock ownership is recorded by thread id, which means nothing here.
    #[error("segment made in another pid namespace; its locks cannot be shared from here")]
    ForeignPidNamespace,
    /// A header field holds a value no shmproc writes.
    #[error("segment header corrupted: {0}")]
    Corrupted(&'static str),
    /// The operating system refused a step (`op` names it).
    #[error("{op} failed: {source}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// What the operating system said.
        source: io::Error,
    },
}

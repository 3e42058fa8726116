//! Shared data: `Value<T>` and `Array<T>` behind a robust [`Lock`](crate::Lock), and
//! their lock-free raw variants `RawValue<T>` and `RawArray<T>` (Python's `lock=False`).
//!
//! Elements are `T: bytemuck::Pod`: plain data, valid for any bit pattern, with no
//! pointers. That is what makes memory another process can scribble on safe to read:
//! whatever it wrote is some `T`. The element type's size, alignment and name are
//! recorded in the header, so opening a named `Array<f64>` as an `Array<u64>` is a
//! [`SegmentOpenError::WrongType`](crate::SegmentOpenError::WrongType).
//!
//! Lengths are fixed at creation and kept in each handle; nothing here re-reads a
//! length from shared memory after attaching, so every index is checked against a
//! number no other process can change.

mod array;
mod cells;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use value::{RawValue, Value, ValueGuard};

/// Indexing or copying into a shared array failed; nothing was written.
///
/// ```
/// use shmproc::{Array, ArrayError, RawArray};
///
/// let a = Array::<f64>::zeroed(3)?;
/// match a.copy_from_slice(&[1.0, 2.0]) {
///     Err(ArrayError::LengthMismatch { len, src_len }) => assert_eq!((len, src_len), (3, 2)),
///     other => panic!("{other:?}"),
/// }
/// let raw = RawArray::<u8>::zeroed(2)?;
/// assert!(matches!(raw.set(5, 1), Err(ArrayError::OutOfBounds { index: 5, len: 2 })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArrayError {
    /// The index is past the end (Python's IndexError).
    #[error("index {index} out of range for an array of length {len}")]
    OutOfBounds {
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// The slice to copy has another length than the array.
    #[error("cannot copy {src_len} elements into an array of length {len}")]
    LengthMismatch {
        /// The array's length.
        len: usize,
        /// The source slice's length.
        src_len: usize,
    },
    /// Acquiring the array's lock failed. On `Poisoned`, the copy was still made.
    #[error(transparent)]
    Lock(#[from] crate::LockError<()>),
}

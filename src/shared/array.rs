//! `Array<T>` (a fixed-length shared array behind a lock) and `RawArray<T>` (without one).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cells::{self, Cells};
use super::ArrayError;
use crate::segment::transfer;
use crate::segment::{Backing, ObjectKind, SegmentCreateError, SegmentOpenError};
use crate::sync::{Lock, LockError, LockGuard, LockResult};

/// A fixed-length run of `T` in shared memory, guarded by a robust [`Lock`]
/// (Python's `Array`).
///
/// Never empty: a zero-length array is [`SegmentCreateError::ZeroLength`].
///
/// ```
/// let a = shmproc::Array::from_slice(&[1.0f64, 2.0])?;
/// a.lock().unwrap()[1] = 3.0;          // the guard derefs to [T]
/// assert_eq!(a.to_vec()?, vec![1.0, 3.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T> {
    lock: Lock,
    cells: Cells<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array { lock: self.lock.clone(), cells: self.cells.clone() }
    }
}

#[allow(clippy::len_without_is_empty)] // never empty by construction
impl<T: Pod> Array<T> {
    /// `len` zeroes, with their own lock, in an anonymous segment (Python's `Array('d', n)`).
    pub fn zeroed(len: usize) -> Result<Array<T>, SegmentCreateError> {
        Self::create(len, None, Backing::Anonymous)
    }

    /// A copy of `src`, with its own lock, in an anonymous segment.
    pub fn from_slice(src: &[T]) -> Result<Array<T>, SegmentCreateError> {
        Self::create(src.len(), Some(src), Backing::Anonymous)
    }

    /// A copy of `src`, with its own lock, in a named segment that other processes
    /// can [`open`](Array::open).
    pub fn from_slice_named(src: &[T]) -> Result<Array<T>, SegmentCreateError> {
        Self::create(src.len(), Some(src), Backing::Named)
    }

    /// A copy of `src`, with its own lock, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](Array::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn from_slice_named_as(name: &str, src: &[T]) -> Result<Array<T>, SegmentCreateError> {
        Self::create(src.len(), Some(src), Backing::NamedAs(name))
    }

    fn create(len: usize, src: Option<&[T]>, backing: Backing) -> Result<Array<T>, SegmentCreateError> {
        let (lock, cells) = cells::create_locked(ObjectKind::Array, len, src, backing)?;
        Ok(Array { lock, cells })
    }

    /// A copy of `src` guarded by `lock`, which it shares with whatever else uses it.
    pub fn with_lock(src: &[T], lock: &Lock) -> Result<Array<T>, SegmentCreateError> {
        let cells = cells::create_raw(ObjectKind::RawArray, src.len(), Some(src), Backing::Anonymous)?;
        Ok(Array { lock: lock.clone(), cells })
    }

    /// Attaches to the named array `name`; its element type must be `T`.
    pub fn open(name: &str) -> Result<Array<T>, SegmentOpenError> {
        let (lock, cells) = cells::open_locked(name, ObjectKind::Array)?;
        Ok(Array { lock, cells })
    }

    /// The segment's name, for an array made by `from_slice_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.cells.name()
    }

    /// The number of elements, fixed at creation.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// The lock guarding this array (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Locks the array; the guard derefs to `[T]`.
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.acquire())
    }

    /// Locks the array only if that needs no waiting.
    pub fn try_lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.try_acquire())
    }

    /// Waits at most `timeout` for the lock.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.acquire_timeout(timeout))
    }

    /// Waits until `deadline` at the latest for the lock.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<ArrayGuard<'_, T>> {
        self.guard(self.lock.acquire_deadline(deadline))
    }

    fn guard<'a>(&'a self, r: LockResult<LockGuard<'a>>) -> LockResult<ArrayGuard<'a, T>> {
        let wrap = |held| ArrayGuard { _held: held, cells: &self.cells };
        r.map(wrap).map_err(|e| e.map(wrap))
    }

    /// A copy of every element, taken under the lock (Python's `arr[:]`). If the
    /// lock is poisoned the copy is inside the error.
    pub fn to_vec(&self) -> Result<Vec<T>, LockError<Vec<T>>> {
        match self.lock() {
            Ok(g) => Ok(g.to_vec()),
            Err(e) => Err(e.map(|g| g.to_vec())),
        }
    }

    /// Overwrites every element from `src` under the lock (Python's `arr[:] = src`).
    pub fn copy_from_slice(&self, src: &[T]) -> Result<(), ArrayError> {
        if src.len() != self.len() {
            return Err(ArrayError::LengthMismatch { len: self.len(), src_len: src.len() });
        }
        match self.lock() {
            Ok(mut g) => {
                g.copy_from_slice(src);
                Ok(())
            }
            Err(e) => Err(ArrayError::Lock(e.map(|mut g| g.copy_from_slice(src)))),
        }
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        transfer::serialize_segments(
            &[self.cells.segment(), self.lock.segment()],
            &crate::names::type_name::<Self>(),
            s,
        )
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [seg, lock_seg] = transfer::deserialize_segments::<D, 2>(d)?;
        let (lock, cells) = cells::guarded_from_segments(seg, lock_seg, ObjectKind::Array, ObjectKind::RawArray)
            .map_err(D::Error::custom)?;
        Ok(Array { lock, cells })
    }
}

impl<T: Pod> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("name", &self.name())
            .field("len", &self.len())
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

/// The locked elements of an [`Array`]; derefs to `[T]`, unlocks when dropped.
///
/// ```
/// let a = shmproc::Array::from_slice(&[3u32, 1, 2])?;
/// {
///     let mut g = a.lock().unwrap();
///     // Every slice method, under one hold: no process sees it half sorted.
///     g.sort();
/// }
/// assert_eq!(a.to_vec()?, [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    _held: LockGuard<'a>,
    cells: &'a Cells<T>,
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the guard holds the array's lock, so no cooperating thread or
        // process writes the cells while this borrow lives.
        unsafe { self.cells.as_slice() }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow.
        unsafe { self.cells.as_mut_slice() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&&**self).finish()
    }
}

/// A fixed-length run of `T` in shared memory with no lock
/// (Python's `Array(t, n, lock=False)`, `RawArray`).
///
/// The safe accessors copy elements in and out with relaxed atomic loads and stores
/// (8 bytes at a time where `T`'s alignment allows), so other threads and processes
/// may read and write at the same time: an element wider than that can tear (any bits
/// are still a valid `T`), and no index can go out of bounds, the length being this
/// handle's own. For zero-copy access there is [`as_slice`](RawArray::as_slice) under
/// an `unsafe` contract.
///
/// ```
/// let a = shmproc::RawArray::<u32>::zeroed(4)?;
/// a.set(2, 7)?;
/// assert_eq!(a.get(2), Some(7));
/// assert_eq!(a.get(4), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RawArray<T> {
    cells: Cells<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray { cells: self.cells.clone() }
    }
}

#[allow(clippy::len_without_is_empty)] // never empty by construction
impl<T: Pod> RawArray<T> {
    /// `len` zeroes in an anonymous segment.
    pub fn zeroed(len: usize) -> Result<RawArray<T>, SegmentCreateError> {
        Self::create(len, None, Backing::Anonymous)
    }

    /// A copy of `src` in an anonymous segment.
    pub fn from_slice(src: &[T]) -> Result<RawArray<T>, SegmentCreateError> {
        Self::create(src.len(), Some(src), Backing::Anonymous)
    }

    /// A copy of `src` in a named segment.
    pub fn from_slice_named(src: &[T]) -> Result<RawArray<T>, SegmentCreateError> {
        Self::create(src.len(), Some(src), Backing::Named)
    }

    /// A copy of `src`, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](RawArray::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn from_slice_named_as(name: &str, src: &[T]) -> Result<RawArray<T>, SegmentCreateError> {
        Self::create(src.len(), Some(src), Backing::NamedAs(name))
    }

    fn create(len: usize, src: Option<&[T]>, backing: Backing) -> Result<RawArray<T>, SegmentCreateError> {
        Ok(RawArray { cells: cells::create_raw(ObjectKind::RawArray, len, src, backing)? })
    }

    /// Attaches to the named raw array `name`; its element type must be `T`.
    pub fn open(name: &str) -> Result<RawArray<T>, SegmentOpenError> {
        Ok(RawArray { cells: cells::open_raw(name, ObjectKind::RawArray)? })
    }

    /// The segment's name, for an array made by `from_slice_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.cells.name()
    }

    /// The number of elements, fixed at creation.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// A copy of element `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<T> {
        self.cells.get(index)
    }

    /// Overwrites element `index`.
    pub fn set(&self, index: usize, value: T) -> Result<(), ArrayError> {
        if self.cells.set(index, value) {
            Ok(())
        } else {
            Err(ArrayError::OutOfBounds { index, len: self.len() })
        }
    }

    /// A copy of every element.
    pub fn to_vec(&self) -> Vec<T> {
        self.cells.copy_to_vec()
    }

    /// Overwrites every element from `src`, which must have the same length.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<(), ArrayError> {
        if self.cells.copy_from(src) {
            Ok(())
        } else {
            Err(ArrayError::LengthMismatch { len: self.len(), src_len: src.len() })
        }
    }

    /// The elements in place, without copying.
    ///
    /// # Safety
    /// While the slice lives, nothing may write the array: no thread of this process
    /// (through `set`, `copy_from_slice` or `as_mut_slice`) and no other process.
    /// Coordinate with the other processes first, for example by joining the writer,
    /// or through a [`Lock`], [`Event`](crate::Event) or [`Barrier`](crate::Barrier).
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: forwarded to the caller.
        unsafe { self.cells.as_slice() }
    }

    /// The elements in place, writable, without copying.
    ///
    /// # Safety
    /// While the slice lives, nothing else may read or write the array: no other
    /// thread of this process and no other process (coordinate as for `as_slice`).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: forwarded to the caller.
        unsafe { self.cells.as_mut_slice() }
    }
}

impl<T: Pod> Serialize for RawArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        transfer::serialize_segments(&[self.cells.segment()], &crate::names::type_name::<Self>(), s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [seg] = transfer::deserialize_segments::<D, 1>(d)?;
        Ok(RawArray { cells: cells::raw_from_segment(seg, ObjectKind::RawArray).map_err(D::Error::custom)? })
    }
}

impl<T: Pod> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray").field("name", &self.name()).field("len", &self.len()).finish()
    }
}

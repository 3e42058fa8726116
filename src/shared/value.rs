//! `Value<T>` (a single shared value behind a lock) and `RawValue<T>` (without one).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cells::{self, Cells};
use crate::segment::transfer;
use crate::segment::{Backing, ObjectKind, SegmentCreateError, SegmentOpenError};
use crate::sync::{Lock, LockError, LockGuard, LockResult};

/// One `T` in shared memory, guarded by a robust [`Lock`] (Python's `Value`).
///
/// ```
/// let v = shmproc::Value::<i64>::new(0)?;
/// *v.lock().unwrap() += 1;      // with v.get_lock(): v.value += 1
/// v.set(41)?;
/// assert_eq!(v.get()?, 41);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Cloning gives another handle to the same value.
pub struct Value<T> {
    lock: Lock,
    cells: Cells<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value { lock: self.lock.clone(), cells: self.cells.clone() }
    }
}

impl<T: Pod> Value<T> {
    /// A value holding `value`, with its own lock, in an anonymous segment.
    pub fn new(value: T) -> Result<Value<T>, SegmentCreateError> {
        Self::create(value, Backing::Anonymous)
    }

    /// A value holding `value`, with its own lock, in a named segment that other
    /// processes can [`open`](Value::open).
    pub fn new_named(value: T) -> Result<Value<T>, SegmentCreateError> {
        Self::create(value, Backing::Named)
    }

    /// A value holding `value`, with its own lock, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](Value::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str, value: T) -> Result<Value<T>, SegmentCreateError> {
        Self::create(value, Backing::NamedAs(name))
    }

    fn create(value: T, backing: Backing) -> Result<Value<T>, SegmentCreateError> {
        let (lock, cells) = cells::create_locked(ObjectKind::Value, 1, Some(&[value]), backing)?;
        Ok(Value { lock, cells })
    }

    /// A value guarded by `lock`, which it shares with whatever else uses it
    /// (Python's `Value(t, v, lock=lock)`): two values behind one lock.
    pub fn with_lock(value: T, lock: &Lock) -> Result<Value<T>, SegmentCreateError> {
        let cells = cells::create_raw(ObjectKind::RawValue, 1, Some(&[value]), Backing::Anonymous)?;
        Ok(Value { lock: lock.clone(), cells })
    }

    /// Attaches to the named value `name`; its element type must be `T`.
    pub fn open(name: &str) -> Result<Value<T>, SegmentOpenError> {
        let (lock, cells) = cells::open_locked(name, ObjectKind::Value)?;
        Ok(Value { lock, cells })
    }

    /// The segment's name, for a value made by `new_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.cells.name()
    }

    /// The lock guarding this value (Python's `get_lock()`), for critical sections
    /// that span several steps or several values.
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Locks the value; the guard derefs to `T`.
    #[inline]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.lock.acquire())
    }

    /// Locks the value only if that needs no waiting.
    pub fn try_lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.lock.try_acquire())
    }

    /// Waits at most `timeout` for the lock.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.lock.acquire_timeout(timeout))
    }

    /// Waits until `deadline` at the latest for the lock.
    pub fn lock_deadline(&self, deadline: Instant) -> LockResult<ValueGuard<'_, T>> {
        self.guard(self.lock.acquire_deadline(deadline))
    }

    #[inline]
    fn guard<'a>(&'a self, r: LockResult<LockGuard<'a>>) -> LockResult<ValueGuard<'a, T>> {
        let wrap = |held| ValueGuard { _held: held, cells: &self.cells };
        r.map(wrap).map_err(|e| e.map(wrap))
    }

    /// Reads the value under the lock (Python's `v.value`). If the lock is poisoned
    /// the value read is inside the error.
    pub fn get(&self) -> Result<T, LockError<T>> {
        match self.lock() {
            Ok(g) => Ok(*g),
            Err(e) => Err(e.map(|g| *g)),
        }
    }

    /// Writes the value under the lock (Python's `v.value = x`). On `Poisoned` the
    /// write was still made.
    pub fn set(&self, value: T) -> Result<(), LockError<()>> {
        match self.lock() {
            Ok(mut g) => {
                *g = value;
                Ok(())
            }
            Err(e) => Err(e.map(|mut g| *g = value)),
        }
    }
}

impl<T: Pod> Serialize for Value<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        transfer::serialize_segments(
            &[self.cells.segment(), self.lock.segment()],
            &crate::names::type_name::<Self>(),
            s,
        )
    }
}

impl<'de, T: Pod> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [seg, lock_seg] = transfer::deserialize_segments::<D, 2>(d)?;
        let (lock, cells) = cells::guarded_from_segments(seg, lock_seg, ObjectKind::Value, ObjectKind::RawValue)
            .map_err(D::Error::custom)?;
        Ok(Value { lock, cells })
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").field("name", &self.name()).field("lock", &self.lock).finish_non_exhaustive()
    }
}

/// The locked value of a [`Value`]; derefs to `T`, unlocks when dropped.
///
/// ```
/// let stats = shmproc::Value::new([0u64; 2])?; // [count, total]
/// {
///     let mut g = stats.lock().unwrap();
///     // Both fields change under one hold: no process sees one without the other.
///     g[0] += 1;
///     g[1] += 250;
/// }
/// assert_eq!(stats.get()?, [1, 250]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    _held: LockGuard<'a>,
    cells: &'a Cells<T>,
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the value's lock, so no cooperating thread or
        // process writes the cell while this borrow lives.
        unsafe { &self.cells.as_slice()[0] }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow.
        unsafe { &mut self.cells.as_mut_slice()[0] }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&**self).finish()
    }
}

/// One `T` in shared memory with no lock (Python's `Value(t, v, lock=False)`).
///
/// Each `get` and `set` is one whole-value copy; concurrent writers from several
/// processes can tear a value wider than the machine's word (any bits are still a
/// valid `T`). Use [`Value`] when updates must not be lost.
///
/// ```
/// let v = shmproc::RawValue::new(1.5f64)?;
/// v.set(2.5);
/// assert_eq!(v.get(), 2.5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RawValue<T> {
    cells: Cells<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue { cells: self.cells.clone() }
    }
}

impl<T: Pod> RawValue<T> {
    /// A raw value holding `value`, in an anonymous segment.
    pub fn new(value: T) -> Result<RawValue<T>, SegmentCreateError> {
        Self::create(value, Backing::Anonymous)
    }

    /// A raw value holding `value`, in a named segment.
    pub fn new_named(value: T) -> Result<RawValue<T>, SegmentCreateError> {
        Self::create(value, Backing::Named)
    }

    /// A raw value holding `value`, under `name`, chosen by you (Python's `name=` argument): unrelated programs can
    /// meet at it and [`open`](RawValue::open) it. `name` is `/` then up to 254 characters, not
    /// starting with `/shmproc.`; a name in use is [`SegmentCreateError::AlreadyExists`].
    pub fn new_named_as(name: &str, value: T) -> Result<RawValue<T>, SegmentCreateError> {
        Self::create(value, Backing::NamedAs(name))
    }

    fn create(value: T, backing: Backing) -> Result<RawValue<T>, SegmentCreateError> {
        Ok(RawValue { cells: cells::create_raw(ObjectKind::RawValue, 1, Some(&[value]), backing)? })
    }

    /// Attaches to the named raw value `name`; its element type must be `T`.
    pub fn open(name: &str) -> Result<RawValue<T>, SegmentOpenError> {
        Ok(RawValue { cells: cells::open_raw(name, ObjectKind::RawValue)? })
    }

    /// The segment's name, for a value made by `new_named` or `open`.
    pub fn name(&self) -> Option<&str> {
        self.cells.name()
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        self.cells.get(0).unwrap_or_else(T::zeroed)
    }

    /// Overwrites the value.
    pub fn set(&self, value: T) {
        self.cells.set(0, value);
    }
}

impl<T: Pod> Serialize for RawValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        transfer::serialize_segments(&[self.cells.segment()], &crate::names::type_name::<Self>(), s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let [seg] = transfer::deserialize_segments::<D, 1>(d)?;
        Ok(RawValue { cells: cells::raw_from_segment(seg, ObjectKind::RawValue).map_err(D::Error::custom)? })
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue").field("name", &self.name()).field("value", &self.get()).finish()
    }
}

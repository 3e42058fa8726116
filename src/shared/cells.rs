//! `Cells<T>`: a run of `T` in a segment, with the layout rules shared by every
//! `Value` and `Array` flavour.
//!
//! | kind               | body                                   |
//! |--------------------|----------------------------------------|
//! | `Value`, `Array`   | `RawMutex` (64 bytes), padding, `[T; n]` |
//! | `RawValue`, `RawArray` | padding, `[T; n]`                  |
//!
//! Padding aligns the data for `T` relative to the page-aligned mapping; `n` is the
//! header's `elem_count` and the body length must be exactly what `n` implies.

use std::ptr::NonNull;
use std::sync::Arc;

use bytemuck::Pod;

use crate::segment::{
    Backing, Expect, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, TypeInfo, View, HEADER_LEN,
};
use crate::sync::{Lock, RawMutex};

/// Alignment is taken relative to the mapping, which is only page aligned.
const MAX_ALIGN: usize = 4096;

pub(crate) struct Cells<T> {
    seg: Arc<Segment>,
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: Cells only hands out copies of `T` (or slices under an `unsafe` contract);
// T: Pod has no interior references, and the segment is kept alive by the Arc.
unsafe impl<T: Pod + Send> Send for Cells<T> {}
// SAFETY: as above.
unsafe impl<T: Pod + Send> Sync for Cells<T> {}

impl<T> Clone for Cells<T> {
    fn clone(&self) -> Self {
        Cells { seg: Arc::clone(&self.seg), ptr: self.ptr, len: self.len }
    }
}

/// The offset of the data inside the body, and the body's length, for `n` elements
/// after a prefix of `prefix` bytes.
fn layout<T>(prefix: usize, n: usize) -> Option<(usize, usize)> {
    let align = std::mem::align_of::<T>();
    if align > MAX_ALIGN {
        return None;
    }
    let start = (HEADER_LEN + prefix).checked_next_multiple_of(align)?;
    let offset = start - HEADER_LEN;
    let data = std::mem::size_of::<T>().checked_mul(n)?;
    let len = offset.checked_add(data)?;
    isize::try_from(HEADER_LEN.checked_add(len)?).ok().map(|_| (offset, len))
}

fn prefix(locked: bool) -> usize {
    if locked {
        std::mem::size_of::<RawMutex>()
    } else {
        0
    }
}

/// Makes a `Value`/`Array` segment (own lock, then the data) from `src`, or zeroes.
pub(crate) fn create_locked<T: Pod>(
    kind: ObjectKind,
    n: usize,
    src: Option<&[T]>,
    backing: Backing,
) -> Result<(Lock, Cells<T>), SegmentCreateError> {
    let (seg, offset) = create::<T>(kind, true, n, src, backing)?;
    Ok((lock_at_start(&seg), cells_at(seg, offset, n)))
}

/// Makes a `RawValue`/`RawArray` segment (the data alone) from `src`, or zeroes.
pub(crate) fn create_raw<T: Pod>(
    kind: ObjectKind,
    n: usize,
    src: Option<&[T]>,
    backing: Backing,
) -> Result<Cells<T>, SegmentCreateError> {
    let (seg, offset) = create::<T>(kind, false, n, src, backing)?;
    Ok(cells_at(seg, offset, n))
}

/// Attaches to the named `Value`/`Array` segment `name` with elements `T`.
pub(crate) fn open_locked<T: Pod>(name: &str, kind: ObjectKind) -> Result<(Lock, Cells<T>), SegmentOpenError> {
    locked_in(Arc::new(Segment::open(name, expect::<T>(kind)?)?))
}

/// Attaches to the named `RawValue`/`RawArray` segment `name` with elements `T`.
pub(crate) fn open_raw<T: Pod>(name: &str, kind: ObjectKind) -> Result<Cells<T>, SegmentOpenError> {
    raw_in(Arc::new(Segment::open(name, expect::<T>(kind)?)?))
}

/// A `RawValue`/`RawArray` (`raw_kind`) in a segment handed to this process.
pub(crate) fn raw_from_segment<T: Pod>(seg: Arc<Segment>, raw_kind: ObjectKind) -> Result<Cells<T>, SegmentOpenError> {
    seg.check(expect::<T>(raw_kind)?)?;
    raw_in(seg)
}

/// The lock and cells of a checked `Value`/`Array` segment.
fn locked_in<T: Pod>(seg: Arc<Segment>) -> Result<(Lock, Cells<T>), SegmentOpenError> {
    let (offset, n) = checked_layout::<T>(&seg, true)?;
    Ok((lock_at_start(&seg), cells_at(seg, offset, n)))
}

/// The cells of a checked `RawValue`/`RawArray` segment.
fn raw_in<T: Pod>(seg: Arc<Segment>) -> Result<Cells<T>, SegmentOpenError> {
    let (offset, n) = checked_layout::<T>(&seg, false)?;
    Ok(cells_at(seg, offset, n))
}

/// A `Value`/`Array` handed to this process: either one segment of `locked_kind`
/// holding its own lock, or a segment of `raw_kind` guarded by the lock in `lock_seg`.
pub(crate) fn guarded_from_segments<T: Pod>(
    seg: Arc<Segment>,
    lock_seg: Arc<Segment>,
    locked_kind: ObjectKind,
    raw_kind: ObjectKind,
) -> Result<(Lock, Cells<T>), SegmentOpenError> {
    if seg.kind() == raw_kind {
        return Ok((Lock::from_segment(lock_seg)?, raw_from_segment(seg, raw_kind)?));
    }
    seg.check(expect::<T>(locked_kind)?)?;
    locked_in(seg)
}

fn expect<T>(kind: ObjectKind) -> Result<Expect, SegmentOpenError> {
    let ty = TypeInfo::of::<T>().ok_or(SegmentOpenError::WrongType { expected: std::any::type_name::<T>() })?;
    Ok(Expect { kind, elem: Some(ty) })
}

/// The segment and the data's offset in its body.
fn create<T: Pod>(
    kind: ObjectKind,
    locked: bool,
    n: usize,
    src: Option<&[T]>,
    backing: Backing,
) -> Result<(Arc<Segment>, usize), SegmentCreateError> {
    let ty = TypeInfo::of::<T>().ok_or(SegmentCreateError::ZeroSizedType(std::any::type_name::<T>()))?;
    if n == 0 {
        return Err(SegmentCreateError::ZeroLength);
    }
    let (offset, body_len) = layout::<T>(prefix(locked), n).ok_or(SegmentCreateError::TooLarge(kind))?;
    let expect = Expect { kind, elem: Some(ty) };
    // With `locked`, the body starts with a zeroed RawMutex: a free lock.
    let seg = Segment::create(expect, n as u64, body_len, backing, |body| {
        if let Some(src) = src {
            // SAFETY: `offset..offset + n * size_of::<T>()` is inside the body by
            // `layout`, aligned for T, and `src` has `n` elements.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), body.add(offset).cast::<T>(), n) };
        }
        Ok(())
    })?;
    Ok((Arc::new(seg), offset))
}

/// The data's offset and the element count of a validated segment, checked against
/// the layout its header implies.
fn checked_layout<T: Pod>(seg: &Segment, locked: bool) -> Result<(usize, usize), SegmentOpenError> {
    let n = usize::try_from(seg.elem_count()).map_err(|_| SegmentOpenError::Corrupted("element count"))?;
    match layout::<T>(prefix(locked), n) {
        Some((offset, body_len)) if n > 0 && body_len == seg.body_len() => Ok((offset, n)),
        _ => Err(SegmentOpenError::Corrupted("body length does not match the element count")),
    }
}

/// The lock at the start of a locked layout's body.
fn lock_at_start(seg: &Arc<Segment>) -> Lock {
    // SAFETY: a locked layout's body starts with a RawMutex (offset 0, aligned), which
    // is valid for any bits.
    Lock::from_view(unsafe { View::new(seg.clone(), 0) })
}

fn cells_at<T>(seg: Arc<Segment>, offset: usize, len: usize) -> Cells<T> {
    // SAFETY: `offset` is inside the body, aligned for T, with `len` elements after
    // it (by `layout`, checked against the real body length).
    let ptr = unsafe { NonNull::new_unchecked(seg.body().add(offset).cast::<T>()) };
    Cells { seg, ptr, len }
}

impl<T: Pod> Cells<T> {
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn name(&self) -> Option<&str> {
        self.seg.name()
    }

    pub(crate) fn get(&self, index: usize) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let mut out = [T::zeroed()];
        // SAFETY: `index < len`, so one element at `ptr + index` is inside the cells.
        unsafe { load_shared(self.ptr.as_ptr().add(index), &mut out) };
        Some(out[0])
    }

    pub(crate) fn set(&self, index: usize, value: T) -> bool {
        if index >= self.len {
            return false;
        }
        // SAFETY: in bounds, as in `get`.
        unsafe { store_shared(std::slice::from_ref(&value), self.ptr.as_ptr().add(index)) };
        true
    }

    pub(crate) fn copy_to_vec(&self) -> Vec<T> {
        let mut out = vec![T::zeroed(); self.len];
        // SAFETY: `len` elements are readable at `ptr`; `out` has `len`.
        unsafe { load_shared(self.ptr.as_ptr(), &mut out) };
        out
    }

    /// Copies `src` in; `false` (and nothing written) if the lengths differ.
    pub(crate) fn copy_from(&self, src: &[T]) -> bool {
        if src.len() != self.len {
            return false;
        }
        // SAFETY: both runs have `len` elements.
        unsafe { store_shared(src, self.ptr.as_ptr()) };
        true
    }

    /// # Safety
    /// For as long as the slice lives, nothing writes the cells: no thread of this
    /// process, and no other process.
    pub(crate) unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: `len` valid, aligned elements; exclusion of writers per the contract.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// # Safety
    /// For as long as the slice lives, nothing else reads or writes the cells: no
    /// other thread of this process, and no other process.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: `len` valid, aligned elements; exclusivity per the contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// Loads `dst.len()` elements of `T` from the shared run at `src` into private
/// memory: relaxed atomic loads of the shared side, in the widest unit `T`'s
/// alignment allows (at most 8 bytes), plain stores of the private side.
///
/// Only the shared side is accessed atomically: making atomics out of memory that
/// Rust holds as a plain `&mut [T]` would alias it (undefined under Stacked
/// Borrows). The shared side may be written by other threads or processes at the
/// same time: atomic loads make that a defined race. An element wider than the unit
/// can tear (any bits are a valid `T: Pod`); each unit cannot.
///
/// # Safety
/// `src` is readable for `dst.len()` elements, aligned for `T`.
unsafe fn load_shared<T: Pod>(src: *const T, dst: &mut [T]) {
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
    let bytes = std::mem::size_of_val(dst);
    let out = dst.as_mut_ptr();
    macro_rules! load_in {
        ($atomic:ty, $plain:ty, $unit:expr) => {{
            let (s, d) = (src.cast::<$atomic>(), out.cast::<$plain>());
            for i in 0..bytes / $unit {
                // SAFETY: `i` units stay inside both runs (`bytes` is a multiple of the
                // unit, which divides T's alignment, so every unit is aligned); `d`
                // comes from the exclusive borrow `dst`.
                unsafe { d.add(i).write((*s.add(i)).load(Relaxed)) };
            }
        }};
    }
    match std::mem::align_of::<T>() {
        8.. => load_in!(AtomicU64, u64, 8),
        4 => load_in!(AtomicU32, u32, 4),
        2 => load_in!(AtomicU16, u16, 2),
        _ => load_in!(AtomicU8, u8, 1),
    }
}

/// Stores private `src` into the shared run at `dst`: plain loads of the private
/// side, relaxed atomic stores of the shared one (see [`load_shared`]).
///
/// # Safety
/// `dst` is writable for `src.len()` elements, aligned for `T`.
unsafe fn store_shared<T: Pod>(src: &[T], dst: *mut T) {
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
    let bytes = std::mem::size_of_val(src);
    let from = src.as_ptr();
    macro_rules! store_in {
        ($atomic:ty, $plain:ty, $unit:expr) => {{
            let (s, d) = (from.cast::<$plain>(), dst.cast::<$atomic>());
            for i in 0..bytes / $unit {
                // SAFETY: as in `load_shared`; `s` comes from the shared borrow `src`,
                // read plainly.
                unsafe { (*d.add(i)).store(s.add(i).read(), Relaxed) };
            }
        }};
    }
    match std::mem::align_of::<T>() {
        8.. => store_in!(AtomicU64, u64, 8),
        4 => store_in!(AtomicU32, u32, 4),
        2 => store_in!(AtomicU16, u16, 2),
        _ => store_in!(AtomicU8, u8, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copies touch the shared side only through atomics and the private side
    /// only plainly (under Miri, which checks the aliasing rules, this is the test
    /// that the private `&[T]` / `&mut [T]` never becomes an atomic).
    #[test]
    fn shared_copies_round_trip_at_every_alignment() {
        fn round_trip<T: Pod + PartialEq + std::fmt::Debug>(values: &[T]) {
            let mut shared = values.to_vec();
            let mut back = vec![T::zeroed(); values.len()];
            // SAFETY: `shared` and `back` have `values.len()` aligned elements.
            unsafe {
                store_shared(values, shared.as_mut_ptr());
                load_shared(shared.as_ptr(), &mut back);
            }
            assert_eq!(back, values);
        }
        round_trip(&[1u8, 2, 3]);
        round_trip(&[1u16, 0xffff]);
        round_trip(&[7u32, 8, 9]);
        round_trip(&[1.5f64, -2.25]);
        round_trip(&[[1u8; 3], [2; 3]]);
    }
}

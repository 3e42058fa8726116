//! Typed places inside a segment: a `View<B>` keeps its segment mapped and derefs
//! to the `#[repr(C)]` body `B` at an offset, checked against the segment's kind and
//! size when it is made.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use super::{Backing, Expect, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, HEADER_LEN};

/// A typed place inside a segment, keeping the segment mapped while it lives.
///
/// `B` is the `#[repr(C)]` body (or part of one) stored there: atomics only, valid
/// for any bit pattern another process may leave.
pub(crate) struct View<B> {
    seg: Arc<Segment>,
    ptr: NonNull<B>,
    _body: PhantomData<B>,
}

impl<B> View<B> {
    /// # Safety
    /// `offset` is inside `seg`'s body, suitably aligned for `B`, with at least
    /// `size_of::<B>()` bytes after it, and the bytes there were initialised as a `B`
    /// by the segment's creator.
    pub(crate) unsafe fn new(seg: Arc<Segment>, offset: usize) -> View<B> {
        // SAFETY: per the contract, `body + offset` stays inside the mapping, which is
        // never null.
        let ptr = unsafe { NonNull::new_unchecked(seg.body().add(offset).cast::<B>()) };
        View { seg, ptr, _body: PhantomData }
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The raw address, with the provenance of the whole mapping (for a `B` that
    /// starts a run of several).
    pub(crate) fn as_ptr(&self) -> *const B {
        self.ptr.as_ptr()
    }
}

impl<B> std::ops::Deref for View<B> {
    type Target = B;
    fn deref(&self) -> &B {
        // SAFETY: `new`'s contract makes `ptr` a valid, aligned `B` inside the mapping,
        // which `seg` keeps alive; bodies are made of atomics only, so `&B` aliasing
        // other processes' writes is sound.
        unsafe { self.ptr.as_ref() }
    }
}

impl<B> Clone for View<B> {
    fn clone(&self) -> Self {
        View { seg: Arc::clone(&self.seg), ptr: self.ptr, _body: PhantomData }
    }
}

impl<B> fmt::Debug for View<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View").field("segment", &self.seg).field("at", &self.ptr).finish()
    }
}

// SAFETY: a View is a shared reference into a mapping kept alive by an Arc; it is as
// thread-safe as `&B`, which needs `B: Sync`.
unsafe impl<B: Sync> Send for View<B> {}
// SAFETY: as above.
unsafe impl<B: Sync> Sync for View<B> {}

/// Creates a segment for one fixed-size body `B`, built in place by `init`.
pub(crate) fn create_view<B>(
    kind: ObjectKind,
    backing: Backing,
    init: impl FnOnce(*mut B) -> io::Result<()>,
) -> Result<View<B>, SegmentCreateError> {
    let expect = Expect { kind, elem: None };
    let seg = Segment::create(expect, 1, std::mem::size_of::<B>(), backing, |body| init(body.cast()))?;
    const { assert!(std::mem::align_of::<B>() <= HEADER_LEN) };
    // SAFETY: the body is size_of::<B>() bytes at a 64-byte aligned address (B's
    // alignment is at most 64, asserted above) and `init` built a B there.
    Ok(unsafe { View::new(Arc::new(seg), 0) })
}

/// Attaches to the named segment holding one fixed-size body `B` of `kind`.
pub(crate) fn open_view<B>(name: &str, kind: ObjectKind) -> Result<View<B>, SegmentOpenError> {
    view_of(Arc::new(Segment::open(name, Expect { kind, elem: None })?), &[kind])
}

/// The `B` at the start of `seg`'s body, if `seg` holds one of `kinds` (whose bodies
/// all start with a `B`) and is long enough.
pub(crate) fn view_of<B>(seg: Arc<Segment>, kinds: &[ObjectKind]) -> Result<View<B>, SegmentOpenError> {
    if !kinds.contains(&seg.kind()) {
        return Err(SegmentOpenError::WrongKind { found: seg.kind(), expected: kinds[0] });
    }
    if seg.body_len() < std::mem::size_of::<B>() {
        return Err(SegmentOpenError::Corrupted("body too short for the object kind"));
    }
    // SAFETY: the header is valid and says the body starts with a B (per `kinds`),
    // at least size_of::<B>() bytes; B is valid for any bit pattern.
    Ok(unsafe { View::new(seg, 0) })
}

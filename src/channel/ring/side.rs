//! Side segments: a message too large for the ring travels in a named segment of
//! its own, whose name the frame carries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::ChannelFault;
use crate::segment::{Backing, Expect, ObjectKind, Segment};

/// A named segment carrying one large payload from a producer to a consumer.
pub(crate) struct SideSegment(Segment);

impl SideSegment {
    fn expect() -> Expect {
        Expect { kind: ObjectKind::QueueSide, elem: None }
    }

    pub(super) fn create(payload: &[u8]) -> Result<SideSegment, ChannelFault> {
        let seg = Segment::create(Self::expect(), payload.len() as u64, payload.len(), Backing::Named, |body| {
            // SAFETY: the body is `payload.len()` fresh bytes nobody else sees yet.
            unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), body, payload.len()) };
            Ok(())
        })
        .map_err(|e| ChannelFault::Side(e.to_string()))?;
        Ok(SideSegment(seg))
    }

    pub(super) fn name(&self) -> &str {
        self.0.name().unwrap_or_default()
    }

    /// About to be committed: from now on the queue (its inode `keeper`) holds the
    /// name, which a consumer unlinks, or the orphan sweep once no process maps the
    /// queue any more; whatever happens to this producer.
    pub(super) fn disown(&self, keeper: u64) {
        self.0.disown(keeper);
    }

    /// The consumer's side, before it commits the frame: open and validate the
    /// segment named by the frame's bytes.
    pub(super) fn open(name: &[u8]) -> Result<SideSegment, SideOpen> {
        let lost = |why: &'static str| SideOpen::Lost(ChannelFault::Corrupted(why));
        let name = std::str::from_utf8(name).map_err(|_| lost("side name"))?;
        let seg = Segment::open(name, Self::expect()).map_err(|e| match &e {
            // Out of descriptors, memory or address space: worth another try.
            crate::SegmentOpenError::Os { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR)
                ) =>
            {
                SideOpen::Retry(ChannelFault::SideUnavailable(e.to_string()))
            }
            _ => SideOpen::Lost(ChannelFault::Side(e.to_string())),
        })?;
        let len = usize::try_from(seg.elem_count()).map_err(|_| lost("side segment length"))?;
        if len != seg.body_len() {
            return Err(lost("side segment length"));
        }
        Ok(SideSegment(seg))
    }

    /// After the commit: the message out, and the name unlinked (the queue's
    /// message is now this consumer's).
    pub(super) fn take(self) -> Vec<u8> {
        let len = self.0.body_len();
        let mut out = vec![0u8; len];
        // SAFETY: the body is `len` bytes (checked in `open` against the header's
        // count); the producer finished writing it before committing the frame that
        // named it.
        unsafe { std::ptr::copy_nonoverlapping(self.0.body(), out.as_mut_ptr(), len) };
        if let Some(name) = self.0.name() {
            let _ = crate::sys::shm_unlink(name);
        }
        out
    }
}

/// Why a side segment could not be opened.
pub(super) enum SideOpen {
    /// For now (descriptors, memory): leave the message in the queue.
    Retry(ChannelFault),
    /// For good (missing, damaged): pass over it.
    Lost(ChannelFault),
}

/// The rings this process maps, by their segment's inode (the keeper a side
/// segment names) and offset: the orphan sweep asks them whether a side segment
/// kept for them is still named by one of their frames.
static RINGS: Mutex<Vec<(u64, Weak<Segment>, usize)>> = Mutex::new(Vec::new());

/// The registry of rings held, for a fork: the child's copy of its lock is then
/// held by the forking thread, which lets it go (see `Process::fork`), never by a
/// thread the child does not have (a child attaching the rings it was given waited
/// forever on it).
pub(crate) fn hold_registry() -> MutexGuard<'static, Vec<(u64, Weak<Segment>, usize)>> {
    RINGS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes the ring at `offset` of `seg` known to the orphan sweep of this process.
pub(super) fn register(seg: &Arc<Segment>, offset: usize) {
    let inode = seg.inode();
    let mut rings = RINGS.lock().unwrap_or_else(PoisonError::into_inner);
    rings.retain(|(_, s, _)| s.strong_count() > 0);
    if !rings.iter().any(|(i, _, o)| *i == inode && *o == offset) {
        rings.push((inode, Arc::downgrade(seg), offset));
    }
    drop(rings);
    crate::segment::set_keeper_check(still_queued);
}

/// Whether a ring of the segment with `inode`, mapped by this process, holds a
/// frame that names the side segment `name`: `Some(false)` only when every such
/// ring was searched under both its locks and none does; `None` when this process
/// maps none, or cannot tell.
fn still_queued(inode: u64, name: &str) -> Option<bool> {
    let rings: Vec<_> = RINGS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(i, _, _)| *i == inode)
        .filter_map(|(_, s, o)| Some((s.upgrade()?, *o)))
        .collect();
    if rings.is_empty() {
        return None;
    }
    let name = name.trim_start_matches('/');
    for (seg, offset) in rings {
        let ring = super::Ring::attach_unregistered(seg, offset).ok()?;
        if ring.names_side(name.as_bytes())? {
            return Some(true);
        }
    }
    Some(false)
}

/// Test support: where a large message's hand-off stops (see
/// [`crate::testing::stall_side_handoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(hidden)]
pub enum SideStall {
    /// A producer, after disowning the side segment, before committing its frame.
    BeforeCommit,
    /// A consumer, after committing the frame, before unlinking the side segment.
    BeforeUnlink,
}

static STALL: Mutex<Option<(SideStall, crate::Event)>> = Mutex::new(None);
/// Whether `STALL` is set: the hand-off of every large message looks, so one load.
static STALL_SET: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_stall(stall: Option<(SideStall, crate::Event)>) {
    let mut slot = STALL.lock().unwrap_or_else(PoisonError::into_inner);
    STALL_SET.store(stall.is_some(), Ordering::Relaxed);
    *slot = stall;
}

/// Stops this thread for good at `at` if a test asked for it (after setting the
/// test's event): the test then kills the process there.
pub(super) fn stall_point(at: SideStall) {
    if !STALL_SET.load(Ordering::Relaxed) {
        return;
    }
    let stall = STALL.lock().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some((wanted, reached)) = stall {
        if wanted == at {
            reached.set();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

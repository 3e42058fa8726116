//! Side segments: a message too large for the ring travels in a named segment of
//! its own, whose name the frame carries.

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
                SideOpen::Retry(ChannelFault::Side(e.to_string()))
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

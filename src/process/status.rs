//! The status slot of a fork-server child: a tiny segment the parent makes and the
//! fork server fills in when it reaps the child, since only the server can.
//!
//! | field        | written by | meaning                                   |
//! |--------------|------------|-------------------------------------------|
//! | `state`      | server     | 0 running, 1 exited; the futex word       |
//! | `code`       | server     | the exit code, or `-signal`               |
//! | `server_pid` | parent     | the server, to tell a lost status from a late one |

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::segment::{self, Backing, ObjectKind, Segment, SegmentCreateError, SegmentOpenError, View};
use crate::sync::wait::{sleep_on, wake, Wait};
use crate::sys;

const RUNNING: u32 = 0;
const EXITED: u32 = 1;

#[repr(C)]
pub(crate) struct StatusBody {
    state: AtomicU32,
    code: AtomicI32,
    /// The fork server (`sys::ProcessId` bits).
    server: AtomicU64,
}

pub(crate) struct StatusSlot {
    body: View<StatusBody>,
}

impl StatusSlot {
    pub(crate) fn new(server: sys::ProcessId) -> Result<StatusSlot, SegmentCreateError> {
        let body = segment::create_view(ObjectKind::ProcessStatus, Backing::Anonymous, |b: *mut StatusBody| {
            // SAFETY: the fresh, unpublished body.
            unsafe { (*b).server.store(server.to_bits(), Ordering::Relaxed) };
            Ok(())
        })?;
        Ok(StatusSlot { body })
    }

    /// The fork server's side: the slot whose descriptor came with a request.
    pub(crate) fn attach(fd: OwnedFd) -> Result<StatusSlot, SegmentOpenError> {
        let seg = Arc::new(Segment::attach(fd, None)?);
        Ok(StatusSlot { body: segment::view_of(seg, &[ObjectKind::ProcessStatus])? })
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        self.body.segment().fd()
    }

    pub(crate) fn exit_code(&self) -> Option<i32> {
        (self.body.state.load(Ordering::Acquire) == EXITED).then(|| self.body.code.load(Ordering::Relaxed))
    }

    /// Records how the child ended and wakes whoever waits.
    pub(crate) fn publish(&self, code: i32) {
        self.body.code.store(code, Ordering::Relaxed);
        self.body.state.store(EXITED, Ordering::Release);
        wake(&self.body.state, u32::MAX);
    }

    /// Sleeps until the child has ended or `until`; whether it has.
    pub(crate) fn wait_until(&self, until: Instant) -> bool {
        if self.exit_code().is_none() {
            sleep_on(&self.body.state, RUNNING, Wait::Until(until), None);
        }
        self.exit_code().is_some()
    }

    pub(crate) fn server_alive(&self) -> bool {
        sys::ProcessId::from_bits(self.body.server.load(Ordering::Relaxed)).is_alive()
    }
}

//! The names of named segments, and reclaiming the orphans: named segments whose
//! creating process died without unlinking them.

use std::io;
use std::os::fd::OwnedFd;

use super::header::{Creator, Header, HEADER_LEN};
use super::SegmentOpenError;
use crate::sys;

pub(super) fn this_process() -> Creator {
    let pid = sys::getpid() as u32;
    let start = match sys::thread_state(pid) {
        sys::ThreadState::Alive { start } => start,
        sys::ThreadState::Gone | sys::ThreadState::Unknown => 0,
    };
    Creator { pid, start, pid_ns: sys::pid_namespace() }
}

/// Removes the named segments whose creating process has died without unlinking
/// them (killed, crashed, or leaked its handle); returns how many it removed.
///
/// A named segment lives as long as its creator's handle, so once the creator is gone
/// nobody new can rely on opening it; processes that already mapped it keep their
/// mapping. shmproc calls this itself whenever it creates a named segment, so a
/// crash's leftovers never pile up; call it directly after a crash if you want them
/// gone at once. Segments of other users, and files that are not shmproc's, are left
/// alone, and so are segments made in another pid namespace (another container
/// sharing /dev/shm), whose creators this process cannot see.
pub fn remove_orphaned_segments() -> io::Result<usize> {
    let mut removed = 0;
    let ours = sys::pid_namespace();
    for name in sys::shm_names_with_prefix(NAME_PREFIX)? {
        let Ok(fd) = sys::shm_open_existing(&name) else { continue };
        let Some(creator) = creator_of(fd) else { continue };
        if creator.pid_ns != ours || creator.pid_ns == 0 {
            continue; // made in another pid namespace: its pid means nothing here
        }
        let alive = match sys::thread_state(creator.pid) {
            sys::ThreadState::Gone => false,
            sys::ThreadState::Unknown => true,
            sys::ThreadState::Alive { start } => creator.start == 0 || start == 0 || start == creator.start,
        };
        if !alive && sys::shm_unlink(&name).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The creator recorded in the header of the shmproc segment behind `fd`, read
/// without mapping it (and parsed by the same code that validates on attach).
fn creator_of(fd: OwnedFd) -> Option<Creator> {
    let bytes = sys::read_prefix::<HEADER_LEN>(fd).ok()?;
    let mut header = std::mem::MaybeUninit::<Header>::uninit();
    // SAFETY: Header is exactly HEADER_LEN bytes of integers and an atomic (asserted
    // in header.rs), valid for any bits, so copying the file's bytes into it makes an
    // initialised, aligned Header.
    let header = unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), header.as_mut_ptr().cast::<u8>(), HEADER_LEN);
        header.assume_init()
    };
    // SAFETY: `header` is a whole, aligned Header on our stack.
    unsafe { Header::read_and_validate(&header, u64::MAX) }.ok()?.creator
}

/// The start of every name shmproc gives a segment (after the leading '/').
const NAME_PREFIX: &str = "shmproc.";

pub(super) fn random_name() -> io::Result<String> {
    Ok(format!("/{NAME_PREFIX}{:032x}", sys::random_u128()?))
}

pub(super) fn check_name(name: &str) -> Result<(), SegmentOpenError> {
    let ok = name.len() > 1 && name.len() <= 255 && name.starts_with('/') && !name[1..].contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(SegmentOpenError::InvalidName(name.to_owned()))
    }
}

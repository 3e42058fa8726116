//! The names of named segments, and reclaiming the orphans: named segments whose
//! creating process died without unlinking them.
//!
//! A creator is known two ways: its header (pid, start time, pid namespace), and its
//! name, `/shmproc.<pid namespace>.<pid>.<start time>.<128 random bits>` (hex). The
//! name is there from `shm_open` on, before any header: a process killed between
//! creating the file and publishing its header leaves a file the sweep can still
//! tell apart from a live creator's half-made one. A valid header wins over the name.
//! A header whose creator was given away names its keeper instead (a queue's side
//! segment names the queue's inode): it is swept once no queue can take it. Either
//! no process maps the keeper any more (a queue dropped with a large message in
//! it), or this process maps the keeper and its rings, searched under their locks,
//! have no frame naming the file (a producer killed between disowning the file and
//! committing its frame, a consumer killed between committing the frame and
//! unlinking the file): the [keeper check](set_keeper_check) answers that.
//!
//! The sweep reads all of `/dev/shm` and `/proc` for each file, so a named creation
//! runs it at most once per [`SWEEP_EVERY`]; [`remove_orphaned_segments`] called
//! directly always sweeps.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

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
///
/// ```
/// use shmproc::{Lock, Process, Queue, SegmentOpenError};
///
/// fn leak(names: Queue<String>) {
///     let lock = Lock::new_named().unwrap();
///     names.put(lock.name().unwrap().to_owned()).unwrap();
///     std::mem::forget(lock); // as if killed: its drop never unlinks the name
/// }
///
/// let names = Queue::new(1)?;
/// let mut p = Process::new(leak, names.clone());
/// p.start()?;
/// p.join()?;
/// let name = names.get()?;
/// // Another process's sweep may have removed it first: the count can be 0.
/// let removed = shmproc::remove_orphaned_segments()?;
/// println!("removed {removed} orphaned segments");
/// assert!(matches!(Lock::open(&name), Err(SegmentOpenError::NotFound(_))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn remove_orphaned_segments() -> io::Result<usize> {
    let mut removed = 0;
    let ours = sys::pid_namespace();
    // Every file: a name the user chose (see `check_chosen_name`) is shmproc's only if
    // it holds a valid shmproc header, whose creator then decides.
    for name in sys::shm_names_with_prefix("")? {
        let generated = name.trim_start_matches('/').starts_with(NAME_PREFIX);
        let Ok(fd) = sys::shm_open_existing(&name) else { continue };
        let creator = match owner_of(fd) {
            Some(Owner::Creator(from_header)) => from_header,
            Some(Owner::Keeper(inode)) => {
                // Given away to the segment with that inode (a queue): removed once no
                // process maps it, so no queue can take it any more. Only for names
                // of our own pid namespace, whose processes we can all see.
                let ours_too = creator_in_name(&name).is_some_and(|c| c.pid_ns == ours && ours != 0);
                let orphan = match sys::inode_mapped_anywhere(inode) {
                    Some(false) => true,
                    _ => KEEPER_CHECK.get().and_then(|check| check(inode, &name)) == Some(false),
                };
                if ours_too && orphan && sys::shm_unlink(&name).is_ok() {
                    removed += 1;
                }
                continue;
            }
            Some(Owner::Nobody) => continue,
            None if !generated => continue,
            // No valid header (yet): the name says who made it, if ours.
            None => match creator_in_name(&name) {
                Some(from_name) => from_name,
                None => continue,
            },
        };
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

/// Asks the segments this process maps whether one of them, the segment with the
/// given inode, still holds the named side segment: `Some(false)` when it surely
/// does not (see the module docs); `None` when it cannot tell.
pub(crate) type KeeperCheck = fn(u64, &str) -> Option<bool>;

static KEEPER_CHECK: std::sync::OnceLock<KeeperCheck> = std::sync::OnceLock::new();

/// Installs the keeper check (the channel layer's, once it maps a ring).
pub(crate) fn set_keeper_check(check: KeeperCheck) {
    let _ = KEEPER_CHECK.set(check);
}

/// Runs the sweep if none ran in this process within [`SWEEP_EVERY`] (for named
/// creations: a queue putting large messages creates one each time).
pub(super) fn sweep_now_and_then() {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = sys::coarse_millis().max(1);
    let last = LAST.load(Ordering::Relaxed);
    if sweep_due(last, now) && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        let _ = remove_orphaned_segments();
    }
}

/// How often a process sweeps on its own, at most (ms).
pub(super) const SWEEP_EVERY: u64 = 1000;

fn sweep_due(last: u64, now: u64) -> bool {
    last == 0 || now.saturating_sub(last) >= SWEEP_EVERY
}

/// Who answers for a segment, as its header says.
enum Owner {
    /// Its creating process.
    Creator(Creator),
    /// The segment with this inode (a queue holding it as a side segment).
    Keeper(u64),
    /// Nobody: it is never swept.
    Nobody,
}

/// Who answers for the shmproc segment behind `fd`, read from its header without
/// mapping it (and parsed by the same code that validates on attach); `None`
/// without a valid header.
fn owner_of(fd: OwnedFd) -> Option<Owner> {
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
    let valid = unsafe { Header::read_and_validate(&header, u64::MAX) }.ok()?;
    Some(match (valid.creator, valid.keeper) {
        (Some(c), _) => Owner::Creator(c),
        (None, Some(inode)) => Owner::Keeper(inode),
        (None, None) => Owner::Nobody,
    })
}

/// The creator written in a segment's name (see the module docs); `None` for a name
/// without one.
fn creator_in_name(name: &str) -> Option<Creator> {
    let rest = name.trim_start_matches('/').strip_prefix(NAME_PREFIX)?;
    let mut parts = rest.split('.');
    let mut hex = || parts.next().and_then(|p| u64::from_str_radix(p, 16).ok());
    let (pid_ns, pid, start, _random) = (hex()?, hex()?, hex()?, parts.next()?);
    Some(Creator {
        pid: u32::try_from(pid).ok()?,
        start: u32::try_from(start).ok()?,
        pid_ns: u32::try_from(pid_ns).ok()?,
    })
}

/// The start of every name shmproc gives a segment (after the leading '/').
const NAME_PREFIX: &str = "shmproc.";

/// A fresh name for a segment made by this process (see the module docs).
pub(super) fn random_name() -> io::Result<String> {
    let me = this_process();
    Ok(format!("/{NAME_PREFIX}{:x}.{:x}.{:x}.{:032x}", me.pid_ns, me.pid, me.start, sys::random_u128()?))
}

/// Whether `name` can be a user's chosen name: a valid POSIX shm name, outside the
/// names shmproc generates (whose form the sweep reads).
pub(super) fn check_chosen_name(name: &str) -> Result<(), super::SegmentCreateError> {
    let invalid = |why| super::SegmentCreateError::InvalidName { name: name.to_owned(), why };
    if check_name(name).is_err() {
        return Err(invalid("a name is '/' and then 1 to 254 characters, none of them '/' or NUL"));
    }
    if name[1..].starts_with(NAME_PREFIX) {
        return Err(invalid("names starting with `/shmproc.` are the ones shmproc makes up"));
    }
    Ok(())
}

pub(super) fn check_name(name: &str) -> Result<(), SegmentOpenError> {
    let ok = name.len() > 1 && name.len() <= 255 && name.starts_with('/') && !name[1..].contains(['/', '\0']);
    if ok {
        Ok(())
    } else {
        Err(SegmentOpenError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_carries_its_creator() {
        let name = random_name().unwrap();
        let me = this_process();
        let c = creator_in_name(&name).unwrap();
        assert_eq!((c.pid, c.start, c.pid_ns), (me.pid, me.start, me.pid_ns));
        assert!(creator_in_name("/shmproc.0123456789abcdef0123456789abcdef").is_none());
        assert!(creator_in_name("/shmproc.zz.1.2.3").is_none());
    }

    #[test]
    fn the_sweep_runs_at_most_once_a_second() {
        assert!(sweep_due(0, 5));
        assert!(!sweep_due(10_000, 10_000 + SWEEP_EVERY - 1));
        assert!(sweep_due(10_000, 10_000 + SWEEP_EVERY));
    }
}

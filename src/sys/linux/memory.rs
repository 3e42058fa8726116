//! Memory objects: anonymous (memfd) and named (POSIX shm) files, their size and
//! contents, and randomness for their names.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::memfd::{memfd_create as nix_memfd_create, MFdFlags};
use nix::sys::mman::{shm_open, shm_unlink as nix_shm_unlink};
use nix::sys::stat::{fstat, Mode};

use super::*;

/// An anonymous shared-memory file. Close-on-exec: a start method that wants a
/// child to have it hands it over on purpose.
pub(crate) fn memfd_create(debug_name: &str) -> io::Result<OwnedFd> {
    nix_memfd_create(debug_name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(nix_err)
}

/// Forbids any later change of a memfd's size. A mapping of a file that shrinks
/// under it faults (SIGBUS) on access; sealing rules that out for anonymous
/// segments. Named POSIX shm objects cannot be sealed: see `segment`'s docs.
pub(crate) fn seal_size(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).map(drop).map_err(nix_err)
}

/// Creates the named POSIX shm object `name`, failing if it exists; mode 0600.
pub(crate) fn shm_create_exclusive(name: &str) -> io::Result<OwnedFd> {
    // glibc's shm_open always sets FD_CLOEXEC.
    shm_open(name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR, Mode::S_IRUSR | Mode::S_IWUSR).map_err(nix_err)
}

/// Opens the existing named POSIX shm object `name` for reading and writing.
pub(crate) fn shm_open_existing(name: &str) -> io::Result<OwnedFd> {
    shm_open(name, OFlag::O_RDWR, Mode::empty()).map_err(nix_err)
}

/// Renames the POSIX shm object `from` to `to`, failing with `AlreadyExists` if `to`
/// exists (one atomic step: `renameat2` with `RENAME_NOREPLACE` in /dev/shm).
pub(crate) fn shm_rename_noreplace(from: &str, to: &str) -> io::Result<()> {
    let path = |name: &str| {
        std::ffi::CString::new(format!("/dev/shm/{}", name.trim_start_matches('/')))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (path(from)?, path(to)?);
    // SAFETY: both are NUL-terminated paths that outlive the call; AT_FDCWD with
    // absolute paths uses no descriptor.
    let r =
        unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    nix_shm_unlink(name).map_err(nix_err)
}

/// The names (with their leading '/') of the POSIX shm objects whose names start
/// with `prefix`. On Linux they are the files of /dev/shm.
pub(crate) fn shm_names_with_prefix(prefix: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        if let Some(name) = entry?.file_name().to_str().filter(|n| n.starts_with(prefix)) {
            names.push(format!("/{name}"));
        }
    }
    Ok(names)
}

/// Reads the first `N` bytes of a file without mapping it (and closes it).
pub(crate) fn read_prefix<const N: usize>(fd: OwnedFd) -> io::Result<[u8; N]> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd);
    let mut buf = [0u8; N];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

pub(crate) fn set_len(fd: &OwnedFd, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    nix::unistd::ftruncate(fd.as_fd(), len).map_err(nix_err)
}

/// Reserves `len` bytes of backing store for the file, so that later page faults
/// cannot fail for want of space.
pub(crate) fn allocate(fd: &OwnedFd, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    nix::fcntl::posix_fallocate(fd.as_fd(), 0, len).map_err(nix_err)
}

pub(crate) fn file_len(fd: &OwnedFd) -> io::Result<u64> {
    let st = fstat(fd.as_fd()).map_err(nix_err)?;
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// The inode number of the file behind `fd` (what /proc/*/maps shows for its mappings).
pub(crate) fn file_inode(fd: &OwnedFd) -> io::Result<u64> {
    let st = fstat(fd.as_fd()).map_err(nix_err)?;
    // `ino_t` is 32 bits on 32-bit targets, 64 on 64-bit ones.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.st_ino))
}

/// Whether any process maps a file with inode `ino`: `Some(true)` or `Some(false)`,
/// or `None` when a process's mappings could not be read for another reason than
/// permission. A process whose mappings this one may not read (another user's, or
/// one that forbids it, such as a container's init) is not counted: it cannot be
/// one this process handed a segment to.
pub(crate) fn inode_mapped_anywhere(ino: u64) -> Option<bool> {
    let want = ino.to_string();
    let mut unsure = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        match std::fs::read_to_string(entry.path().join("maps")) {
            // Fields: address, perms, offset, device, inode, path.
            Ok(maps) => {
                if maps.lines().any(|l| l.split_ascii_whitespace().nth(4) == Some(want.as_str())) {
                    return Some(true);
                }
            }
            // It exited meanwhile, or it is not ours to look at (see above).
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::PermissionDenied => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(_) => unsure = true,
        }
    }
    (!unsure).then_some(false)
}

/// 128 bits from the kernel's CSPRNG, for names nobody can guess.
pub(crate) fn random_u128() -> io::Result<u128> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which
        // lives for the whole call.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(u128::from_ne_bytes(buf))
}

/// A memfd holding `bytes`, positioned at 0, sealed against any change.
pub(crate) fn memfd_with(bytes: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Write;
    let fd = memfd_create("shmproc-task")?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let fd = OwnedFd::from(file);
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(nix_err)?;
    Ok(fd)
}

/// Reads a whole file from offset 0, at most `limit` bytes (and closes it).
pub(crate) fn read_all(fd: OwnedFd, limit: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd);
    let len = file.metadata()?.len();
    if len > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file larger than its limit"));
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

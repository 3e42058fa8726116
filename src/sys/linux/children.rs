//! Children: fork, exit, waiting for and reaping a child, signals.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::*;

/// The outcome of `fork` as seen by the caller.
#[derive(Debug)]
pub(crate) enum Forked {
    Parent(i32),
    Child,
}

/// # Safety
/// As `fork(2)` in a possibly multi-threaded process: the child may only call
/// async-signal-safe functions until it execs or exits, in the strict reading;
/// glibc makes malloc usable after fork, and the child must not touch locks that
/// other (now vanished) threads might have held.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: forwarded to the caller.
    match unsafe { nix::unistd::fork() }.map_err(nix_err)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Leaves the process at once with `code`: no destructors, no atexit handlers, no
/// flushing of stdio buffers inherited from the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Writes `bytes` to standard error with `write(2)` itself, taking no lock (a
/// forked child's copy of std's stderr lock may be held by a thread it does not
/// have); what cannot be written is dropped.
pub(crate) fn write_stderr_raw(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(std::io::stderr(), bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Ends this process as `kill -9` would (a test's simulated kill at a step).
pub(crate) fn kill_self() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    exit_now(137)
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    Exited(i32),
    Signaled(i32),
}

impl ChildExit {
    /// Python's `exitcode`: the exit status, or minus the signal.
    pub(crate) fn code(self) -> i32 {
        match self {
            ChildExit::Exited(code) => code,
            ChildExit::Signaled(sig) => -sig,
        }
    }
}

/// How a child ended, if `status` says it has.
fn child_exit(status: nix::sys::wait::WaitStatus) -> Option<ChildExit> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(ChildExit::Exited(code)),
        WaitStatus::Signaled(_, sig, _) => Some(ChildExit::Signaled(sig as i32)),
        _ => None,
    }
}

/// Reaps `pid` if it has ended, without blocking.
pub(crate) fn try_reap(pid: i32) -> io::Result<Option<ChildExit>> {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).map(child_exit).map_err(nix_err)
}

/// Sleeps until the child `pid` ends or `deadline` passes, without reaping it;
/// `false` if the deadline passed. Uses a pidfd (Linux 5.3+), so the wake-up is
/// immediate; where there is no pidfd to be had (an old kernel, or no descriptor
/// left: EMFILE, ENFILE) it polls, every 100 µs at first, backing off to 5 ms.
pub(crate) fn wait_child_exit(pid: i32, deadline: Instant) -> io::Result<bool> {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        // Already reaped (by another thread): it has ended.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
        Err(_) => {
            let mut pause = Duration::from_micros(100);
            while Instant::now() < deadline {
                if peek_exit(pid)?.is_some() {
                    return Ok(true);
                }
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            return Ok(false);
        }
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so that a sub-millisecond remainder still waits.
        let ms = i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&fd), events: libc::POLLIN, revents: 0 };
        // SAFETY: `pfd` is one valid pollfd on our stack.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            1.. => return Ok(true),
            0 if Instant::now() >= deadline => return Ok(false),
            0 => continue,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn send_signal(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Asks the kernel to SIGKILL the calling process when the thread that created it
/// exits (Linux ties the signal to the parent *thread*).
pub(crate) fn die_with_parent() -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(nix_err)
}

/// A pidfd for `pid`: readable once the process has ended (any process, not just
/// our children).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { adopt_fd(fd as i32) })
}

/// A descriptor that is readable at once and stays so (an eventfd holding 1): the
/// sentinel of a process that had ended before anyone asked for one.
pub(crate) fn readable_fd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(1, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { adopt_fd(fd) })
}

/// Waits until one of `fds` is readable (or hung up); which are (none if a signal
/// interrupted the wait).
pub(crate) fn poll_readable(fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    use std::os::fd::AsRawFd;
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|f| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `pfds` is a valid array of pollfd for the call's duration.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// How `pid` (a child that has ended) ended, without reaping it yet.
pub(crate) fn peek_exit(pid: i32) -> io::Result<Option<ChildExit>> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags).map(child_exit).map_err(nix_err)
}

/// Sets a signal's disposition to "ignore" or back to the default.
pub(crate) fn ignore_signal(signal: i32, ignore: bool) {
    // SAFETY: SIG_IGN and SIG_DFL are valid dispositions for any catchable signal.
    unsafe { libc::signal(signal, if ignore { libc::SIG_IGN } else { libc::SIG_DFL }) };
}

/// Reaps `pid`, waiting for it to end.
pub(crate) fn reap_blocking(pid: i32) -> io::Result<ChildExit> {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(status) => match child_exit(status) {
                Some(exit) => return Ok(exit),
                None => continue,
            },
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(nix_err(e)),
        }
    }
}

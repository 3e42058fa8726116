//! The fork server: a single-threaded copy of this program that forks children on
//! request (Python's `forkserver`, the default on Linux since Python 3.14).
//!
//! Forking a multi-threaded process copies locks that other threads held, and the
//! child may wait on them forever. The server is started once, by re-executing this
//! binary (so it is born single-threaded), and from then on forks children cheaply.
//!
//! ## Protocol
//! One `SOCK_SEQPACKET` socket per client process. A request is one message whose
//! descriptors are the task (a sealed memfd), the child's status slot, and the
//! child's shared segments; the reply is the child's pid (or `-errno`). The server
//! polls its socket and a pidfd per child; when a child ends it reaps it and writes
//! the exit code into the child's status slot, which the client waits on. End of
//! stream on the socket (every client copy closed, the client process gone) ends
//! the server; its daemon children die with it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::child::{self, MAX_TASK, ROLE_ENV, ROLE_FORKSERVER};
use super::registry::{self, ProcessInfo};
use super::status::StatusSlot;
use crate::segment::Segment;
use crate::sys::{self, ExecImage, Forked};

/// A client's connection to its fork server.
pub(crate) struct ServerClient {
    /// `None` only while dropping.
    sock: Option<OwnedFd>,
    pid: i32,
    /// The server as its children's status slots recognise it.
    identity: sys::ProcessId,
}

/// A request that failed: before reaching the server (safe to retry with a new
/// one), or after (the child may be running).
#[derive(Debug)]
pub(crate) enum RequestError {
    NotSent(std::io::Error),
    Lost(std::io::Error),
}

impl From<RequestError> for std::io::Error {
    fn from(e: RequestError) -> std::io::Error {
        match e {
            RequestError::NotSent(e) | RequestError::Lost(e) => e,
        }
    }
}

impl ServerClient {
    /// Starts a fork server for this process.
    pub(crate) fn start() -> std::io::Result<ServerClient> {
        let (ours, theirs) = sys::seqpacket_pair()?;
        let image = ExecImage::this_program(&[(ROLE_ENV, ROLE_FORKSERVER.to_owned())])?;
        let pid = sys::spawn_exec(&image, &[theirs.as_fd()], false)?;
        Ok(ServerClient { sock: Some(ours), pid, identity: sys::ProcessId::of(pid) })
    }

    pub(crate) fn identity(&self) -> sys::ProcessId {
        self.identity
    }

    /// Asks the server to start a child; its pid.
    pub(crate) fn request(
        &self,
        task: &OwnedFd,
        slot: &StatusSlot,
        segments: &[Arc<Segment>],
    ) -> Result<i32, RequestError> {
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the fork server is gone");
        let sock = self.sock.as_ref().ok_or_else(|| RequestError::NotSent(gone()))?;
        let mut fds: Vec<BorrowedFd<'_>> = vec![task.as_fd(), slot.fd().as_fd()];
        fds.extend(segments.iter().map(|s| s.fd().as_fd()));
        sys::send_with_fds(sock, b"run", &fds).map_err(RequestError::NotSent)?;
        let mut reply = [0u8; 4];
        match sys::recv_with_fds(sock, &mut reply).map_err(RequestError::Lost)? {
            (4, _) => match i32::from_ne_bytes(reply) {
                pid if pid > 0 => Ok(pid),
                errno => Err(RequestError::Lost(std::io::Error::from_raw_os_error(-errno))),
            },
            _ => Err(RequestError::Lost(gone())),
        }
    }

    /// Whether the server still runs (reaping it if it has died: it is our child).
    pub(crate) fn alive(&self) -> bool {
        matches!(sys::try_reap(self.pid), Ok(None))
    }
}

impl Drop for ServerClient {
    fn drop(&mut self) {
        // Closing our end makes the server exit; reap it when it has. In a forked
        // child the server is not ours to reap, and the thread finds that out at once.
        drop(self.sock.take());
        let pid = self.pid;
        if matches!(sys::try_reap(pid), Ok(None)) {
            let _ = std::thread::Builder::new().name("shmproc-reaper".into()).spawn(move || {
                let _ = sys::reap_blocking(pid);
            });
        }
    }
}

/// A child of the server, until it is reaped.
struct Served {
    pid: i32,
    pidfd: OwnedFd,
    slot: StatusSlot,
}

/// The server's `main`: never returns.
pub(crate) fn server_main() -> ! {
    let parent = ProcessInfo::new("client".into(), sys::getppid(), false);
    registry::become_child("ForkServer".into(), Vec::new(), parent, false);
    if !sys::fd_is_open(3) {
        sys::exit_now(1);
    }
    // SAFETY: the client placed our end of the socket at 3; nothing else owns it.
    let sock = unsafe { sys::adopt_fd(3) };
    // Ctrl-C goes to the whole process group: the client decides what it means,
    // not the server (as in Python's forkserver). Children get the default back.
    sys::ignore_signal(libc::SIGINT, true);
    let me = sys::getpid();
    let mut children: Vec<Served> = Vec::new();
    loop {
        let mut watched: Vec<BorrowedFd<'_>> = vec![sock.as_fd()];
        watched.extend(children.iter().map(|c| c.pidfd.as_fd()));
        let ready = match sys::poll_readable(&watched) {
            Ok(r) => r,
            Err(_) => sys::exit_now(1),
        };
        drop(watched);
        for (i, _) in ready.iter().enumerate().skip(1).filter(|(_, r)| **r).rev() {
            let c = children.swap_remove(i - 1);
            // Publish before reaping: until the reap, the pid cannot be recycled, so a
            // client that signals a child whose slot is empty never hits a stranger.
            let code = match sys::peek_exit(c.pid) {
                Ok(Some(exit)) => exit.code(),
                Ok(None) | Err(_) => -libc::SIGKILL,
            };
            c.slot.publish(code);
            let _ = sys::reap_blocking(c.pid);
        }
        if !ready[0] {
            continue;
        }
        let mut buf = [0u8; 16];
        let (len, mut fds) = match sys::recv_with_fds(&sock, &mut buf) {
            Ok(m) => m,
            Err(_) => sys::exit_now(1),
        };
        if len == 0 {
            sys::exit_now(0); // the client is gone
        }
        if fds.len() < 2 {
            let _ = sys::send_with_fds(&sock, &(-libc::EINVAL).to_ne_bytes(), &[]);
            continue;
        }
        let segments = fds.split_off(2);
        let Ok([task_fd, slot_fd]) = <[OwnedFd; 2]>::try_from(fds) else {
            unreachable!("two descriptors left after the check above")
        };
        let prepared = StatusSlot::attach(slot_fd)
            .map_err(|_| libc::EINVAL)
            .and_then(|slot| sys::read_all(task_fd, MAX_TASK).map(|blob| (slot, blob)).map_err(|_| libc::EIO));
        let (slot, blob) = match prepared {
            Ok(p) => p,
            Err(errno) => {
                let _ = sys::send_with_fds(&sock, &(-errno).to_ne_bytes(), &[]);
                continue;
            }
        };
        // SAFETY: this server is single-threaded, so the child may do anything.
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => {
                sys::ignore_signal(libc::SIGINT, false);
                // The child keeps only its own task's descriptors.
                drop(sock);
                drop(children);
                drop(slot);
                child::run_task(&blob, segments, Some(me))
            }
            Ok(Forked::Parent(pid)) => {
                let reply = match sys::pidfd_open(pid) {
                    Ok(pidfd) => {
                        children.push(Served { pid, pidfd, slot });
                        pid
                    }
                    Err(e) => {
                        // A child we cannot watch must not run unreported.
                        let _ = sys::send_signal(pid, libc::SIGKILL);
                        let _ = sys::reap_blocking(pid);
                        -e.raw_os_error().unwrap_or(libc::EIO)
                    }
                };
                let _ = sys::send_with_fds(&sock, &reply.to_ne_bytes(), &[]);
            }
            Err(e) => {
                let _ = sys::send_with_fds(&sock, &(-e.raw_os_error().unwrap_or(libc::EIO)).to_ne_bytes(), &[]);
            }
        }
    }
}

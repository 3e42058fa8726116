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

use super::child::{self, ROLE_ENV, ROLE_FORKSERVER};
use super::registry::{self, ProcessInfo};
use super::status::StatusSlot;
use crate::segment::Segment;
use crate::sys::{self, ExecImage, Forked};

/// A client's connection to its fork server.
pub(crate) struct ServerClient {
    sock: OwnedFd,
    pid: i32,
}

impl ServerClient {
    /// Starts a fork server for this process.
    pub(crate) fn start() -> std::io::Result<ServerClient> {
        let (ours, theirs) = sys::seqpacket_pair()?;
        let image = ExecImage::this_program(&[(ROLE_ENV, ROLE_FORKSERVER.to_owned())])?;
        let pid = sys::spawn_exec(&image, &[theirs.as_fd()], false)?;
        Ok(ServerClient { sock: ours, pid })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Asks the server to start a child; its pid.
    pub(crate) fn request(&self, task: &OwnedFd, slot: &StatusSlot, segments: &[Arc<Segment>]) -> std::io::Result<i32> {
        let mut fds: Vec<BorrowedFd<'_>> = vec![task.as_fd(), slot.fd().as_fd()];
        fds.extend(segments.iter().map(|s| s.fd().as_fd()));
        sys::send_with_fds(&self.sock, b"run", &fds)?;
        let mut reply = [0u8; 4];
        match sys::recv_with_fds(&self.sock, &mut reply)? {
            (4, _) => match i32::from_ne_bytes(reply) {
                pid if pid > 0 => Ok(pid),
                errno => Err(std::io::Error::from_raw_os_error(-errno)),
            },
            _ => Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the fork server is gone")),
        }
    }

    /// Whether the server still runs (reaping it if it has died: it is our child).
    pub(crate) fn alive(&self) -> bool {
        matches!(sys::try_reap(self.pid), Ok(None))
    }
}

impl Drop for ServerClient {
    fn drop(&mut self) {
        // Closing our end (when the field drops) makes the server exit; reap it then
        // if it already has, or leave it to finish on its own.
        let _ = sys::try_reap(self.pid);
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
    let parent = ProcessInfo { name: "client".into(), pid: sys::getppid() };
    registry::become_child("ForkServer".into(), Vec::new(), parent);
    if !sys::fd_is_open(3) {
        sys::exit_now(1);
    }
    // SAFETY: the client placed our end of the socket at 3; nothing else owns it.
    let sock = unsafe { sys::adopt_fd(3) };
    let me = sys::getpid();
    let mut children: Vec<Served> = Vec::new();
    loop {
        let mut watched: Vec<BorrowedFd<'_>> = vec![sock.as_fd()];
        watched.extend(children.iter().map(|c| c.pidfd.as_fd()));
        let ready = match sys::poll_readable(&watched, None) {
            Ok(r) => r,
            Err(_) => sys::exit_now(1),
        };
        drop(watched);
        for (i, _) in ready.iter().enumerate().skip(1).filter(|(_, r)| **r).rev() {
            let c = children.swap_remove(i - 1);
            let code = match sys::reap_blocking(c.pid) {
                Ok(sys::ChildExit::Exited(code)) => code,
                Ok(sys::ChildExit::Signaled(sig)) => -sig,
                Err(_) => -libc::SIGKILL,
            };
            c.slot.publish(code);
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
        let slot_fd = fds.pop();
        let task_fd = fds.pop();
        let (Some(task_fd), Some(slot_fd)) = (task_fd, slot_fd) else { continue };
        let prepared = StatusSlot::attach(slot_fd)
            .map_err(|_| libc::EINVAL)
            .and_then(|slot| sys::read_all(&task_fd, 1 << 30).map(|blob| (slot, blob)).map_err(|_| libc::EIO));
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
                // The child keeps only its own task's descriptors.
                drop(sock);
                drop(children);
                drop(slot);
                drop(task_fd);
                child::run_task(&blob, segments, Some(me))
            }
            Ok(Forked::Parent(pid)) => {
                let reply = match sys::pidfd_open(pid) {
                    Ok(pidfd) => {
                        children.push(Served { pid, pidfd, slot });
                        pid
                    }
                    Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
                };
                let _ = sys::send_with_fds(&sock, &reply.to_ne_bytes(), &[]);
            }
            Err(e) => {
                let _ = sys::send_with_fds(&sock, &(-e.raw_os_error().unwrap_or(libc::EIO)).to_ne_bytes(), &[]);
            }
        }
    }
}

//! Passing descriptors between processes over a Unix socket (`SCM_RIGHTS`).

use std::io;
use std::os::fd::OwnedFd;

use super::*;

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets: message boundaries
/// kept, descriptors passable.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(nix_err)
}

/// Sends one message carrying `bytes` and the descriptors `fds`.
pub(crate) fn send_with_fds(sock: &OwnedFd, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raw)] };
    sendmsg::<()>(sock.as_raw_fd(), &[io::IoSlice::new(bytes)], &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map(drop)
        .map_err(nix_err)
}

/// The most descriptors one message may carry (the kernel's SCM_MAX_FD is 253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 250;

/// Receives one message into `buf`; its length (0 at end of stream) and descriptors.
pub(crate) fn recv_with_fds(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!([i32; MAX_FDS_PER_MESSAGE]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(nix_err)?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(nix_err)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(raw.into_iter().map(|r| unsafe { adopt_fd(r) }));
        }
    }
    Ok((msg.bytes, fds))
}

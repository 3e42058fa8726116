//! A manager over TCP: frames, the mutual challenge-response handshake, the server
//! and the client.
//!
//! ## Wire
//! Every message is a frame: a 4-byte little-endian length, then that many bytes of
//! postcard. A frame over the receiver's limit closes the connection before its body
//! is read. The first frames are the handshake ([`auth`]); after it, the client sends
//! one [`Op`](super::op::Op) a frame and the server answers each with one
//! [`Reply`](super::op::Reply).
//!
//! ## What it protects
//! Both sides prove that they hold the authkey (HMAC-SHA256 over fresh nonces from
//! both sides, compared in constant time) before any request is read, so a peer
//! without the key can neither use the manager nor pose as its server. The traffic is
//! authenticated but not encrypted, as Python's: run it on loopback or a private
//! network, or through a TLS or SSH tunnel when the network is not yours.

mod auth;
mod client;
mod server;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

pub(crate) use client::Client;
pub use server::{ServeOptions, Server};

/// The default limit on one request: 64 MiB.
pub(crate) const MAX_FRAME: usize = 64 << 20;
/// The limit on one reply (a whole dict's items, say): 1 GiB.
pub(crate) const MAX_REPLY: usize = 1 << 30;

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the connection before a frame began.
    Closed,
    /// The frame announced more bytes than the limit.
    TooLarge(usize),
    /// Reading failed, or the deadline passed (`TimedOut` / `WouldBlock`).
    Io(io::Error),
}

impl From<FrameError> for super::ManagerError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed => super::ManagerError::Connection(io::ErrorKind::UnexpectedEof.into()),
            FrameError::TooLarge(n) => super::ManagerError::Protocol(format!("a frame of {n} bytes is over the limit")),
            FrameError::Io(e) => super::ManagerError::Connection(e),
        }
    }
}

/// Writes one frame (length and body in one write, so that one small request is one
/// segment on the wire).
pub(crate) fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("a frame over 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    stream.write_all(&buf)
}

/// Reads one frame of at most `max` bytes. The frame's first byte may come as late
/// as `idle_until`; once it has, the whole frame must arrive within `frame_time` counted
/// from then (a peer that trickles bytes is cut off).
pub(crate) fn read_frame(
    stream: &mut TcpStream,
    max: usize,
    idle_until: Option<Instant>,
    frame_time: std::time::Duration,
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let first = read_some(stream, &mut len, idle_until).map_err(FrameError::Io)?;
    if first == 0 {
        return Err(FrameError::Closed);
    }
    let deadline = Instant::now() + frame_time;
    read_exact_by(stream, &mut len[first..], deadline)?;
    let n = u32::from_le_bytes(len) as usize;
    if n > max {
        return Err(FrameError::TooLarge(n));
    }
    // Grown as bytes arrive, not as announced: a peer announcing a huge frame and
    // sending nothing costs one chunk, not the frame.
    let mut body = Vec::with_capacity(n.min(CHUNK));
    while body.len() < n {
        let have = body.len();
        body.resize(have + (n - have).min(CHUNK), 0);
        read_exact_by(stream, &mut body[have..], deadline)?;
    }
    Ok(body)
}

const CHUNK: usize = 1 << 20;

/// One read of at most `buf.len()` bytes, waiting until `until` at the latest
/// (forever when `None`). 0 means the peer closed.
fn read_some(stream: &mut TcpStream, buf: &mut [u8], until: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout = match until {
            Some(t) => Some(remaining(t)?),
            None => None,
        };
        stream.set_read_timeout(timeout)?;
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn read_exact_by(stream: &mut TcpStream, mut buf: &mut [u8], deadline: Instant) -> Result<(), FrameError> {
    while !buf.is_empty() {
        match read_some(stream, buf, Some(deadline)) {
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => buf = &mut buf[n..],
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// The time left until `t`, or `TimedOut` if none is.
fn remaining(t: Instant) -> io::Result<std::time::Duration> {
    let left = t.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

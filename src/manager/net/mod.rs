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
mod frame;
mod server;

pub(crate) use client::Client;
pub(crate) use frame::{FrameError, Framed};
pub use server::{ServeOptions, Server};

/// The default limit on one request: 64 MiB.
pub(crate) const MAX_FRAME: usize = 64 << 20;
/// The limit on one reply (a whole dict's items, say): 1 GiB.
pub(crate) const MAX_REPLY: usize = 1 << 30;

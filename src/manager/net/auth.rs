//! The handshake: each side proves it holds the authkey, the server first asking.
//!
//! | step | from   | frame |
//! |------|--------|-------|
//! | 1    | server | `SHMPROC1` and a fresh 32-byte nonce `s` |
//! | 2    | client | `HMAC(key, "client" ‖ s ‖ c)` and a fresh 32-byte nonce `c` |
//! | 3    | server | `HMAC(key, "server" ‖ c ‖ s)`, or `DENIED` and the connection closes |
//!
//! The labels keep one side's proof from being replayed as the other's; fresh nonces
//! from both sides keep an old proof from being replayed at all. Tags are compared in
//! constant time (`Mac::verify_slice`). The server reads no request before step 2
//! checks out, and the client sends none before step 3 does: a server without the
//! key learns nothing but a MAC it cannot use.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Framed;
use crate::manager::ManagerError;

type HmacSha256 = Hmac<Sha256>;

const HELLO: &[u8; 8] = b"SHMPROC1";
const DENIED: &[u8] = b"DENIED";
const NONCE: usize = 32;
const TAG: usize = 32;
/// The largest handshake frame.
const MAX: usize = 64;

fn nonce() -> Result<[u8; NONCE], ManagerError> {
    let mut out = [0u8; NONCE];
    for half in out.chunks_mut(16) {
        let r = crate::sys::random_u128().map_err(ManagerError::Connection)?;
        half.copy_from_slice(&r.to_le_bytes());
    }
    Ok(out)
}

fn mac(key: &[u8], label: &[u8], a: &[u8], b: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts every key length");
    m.update(label);
    m.update(a);
    m.update(b);
    m
}

fn read(stream: &mut Framed, deadline: Instant) -> Result<Vec<u8>, ManagerError> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    Ok(stream.read_frame(MAX, Some(left), left, Some(deadline))?)
}

fn send(stream: &mut Framed, bytes: &[u8]) -> Result<(), ManagerError> {
    stream.write_frame(bytes).map_err(ManagerError::Connection)
}

/// The server's side; `Ok` once the client proved it holds `key`.
pub(crate) fn server(stream: &mut Framed, key: &[u8], timeout: Duration) -> Result<(), ManagerError> {
    let deadline = Instant::now() + timeout;
    let s = nonce()?;
    send(stream, &[&HELLO[..], &s].concat())?;
    let answer = read(stream, deadline)?;
    if answer.len() != TAG + NONCE {
        return Err(ManagerError::Authentication("a malformed answer to the challenge"));
    }
    let (tag, c) = answer.split_at(TAG);
    if mac(key, b"client", &s, c).verify_slice(tag).is_err() {
        // Best effort: the peer learns why before the connection closes.
        let _ = send(stream, DENIED);
        return Err(ManagerError::Authentication("the client does not hold the key"));
    }
    send(stream, &mac(key, b"server", c, &s).finalize().into_bytes())
}

/// The client's side; `Ok` once the server proved it holds `key`.
pub(crate) fn client(stream: &mut Framed, key: &[u8], timeout: Duration) -> Result<(), ManagerError> {
    let deadline = Instant::now() + timeout;
    let hello = read(stream, deadline)?;
    let s = match hello.strip_prefix(&HELLO[..]) {
        Some(s) if s.len() == NONCE => s.to_vec(),
        _ => return Err(ManagerError::Authentication("the server did not greet as a shmproc manager")),
    };
    let c = nonce()?;
    send(stream, &[&mac(key, b"client", &s, &c).finalize().into_bytes()[..], &c].concat())?;
    let proof = read(stream, deadline)?;
    if proof == DENIED {
        return Err(ManagerError::Authentication("the server refused the key"));
    }
    if proof.len() != TAG || mac(key, b"server", &c, &s).verify_slice(&proof).is_err() {
        return Err(ManagerError::Authentication("the server does not hold the key"));
    }
    Ok(())
}

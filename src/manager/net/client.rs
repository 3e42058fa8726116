//! The client: one authenticated connection, one request at a time.

use std::fmt;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use super::{auth, Framed, MAX_FRAME, MAX_REPLY};
use crate::manager::op::{Op, Reply};
use crate::manager::ManagerError;

/// How long connecting and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reply may take: a request waits for the manager's lock, then the
/// operation runs, then the reply travels.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to a served manager, shared by every proxy made through it.
pub(crate) struct Client {
    addr: SocketAddr,
    /// `None` once the connection broke: a reply half read cannot be resynchronised.
    stream: Mutex<Option<Framed>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn connect(addr: impl ToSocketAddrs, key: &[u8]) -> Result<Client, ManagerError> {
        if key.is_empty() {
            return Err(ManagerError::Authentication("an empty authkey"));
        }
        let mut last = None;
        for addr in addr.to_socket_addrs().map_err(ManagerError::Connection)? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(ManagerError::Connection)?;
                    let mut stream = Framed::new(stream).map_err(ManagerError::Connection)?;
                    auth::client(&mut stream, key, CONNECT_TIMEOUT)?;
                    return Ok(Client { addr, stream: Mutex::new(Some(stream)) });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(ManagerError::Connection(
            last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to")),
        ))
    }

    /// Closes the connection: every later call is a `Connection` error.
    pub(crate) fn close(&self) {
        if let Some(stream) = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take() {
            drop(stream);
        }
    }

    /// Sends `op` and waits for its reply.
    pub(crate) fn call(&self, op: Op) -> Result<Reply, ManagerError> {
        let request = postcard::to_allocvec(&op).map_err(|e| ManagerError::Encode(e.to_string()))?;
        if request.len() > MAX_FRAME {
            return Err(ManagerError::TooLarge { len: request.len() });
        }
        let mut slot = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stream) = slot.as_mut() else {
            return Err(ManagerError::Connection(std::io::ErrorKind::NotConnected.into()));
        };
        let reply = exchange(stream, &request);
        if reply.is_err() {
            *slot = None;
        }
        let reply = reply?;
        postcard::from_bytes(&reply).map_err(|e| ManagerError::Protocol(format!("an unreadable reply: {e}")))
    }
}

fn exchange(stream: &mut Framed, request: &[u8]) -> Result<Vec<u8>, ManagerError> {
    stream.write_frame(request).map_err(ManagerError::Connection)?;
    Ok(stream.read_frame(MAX_REPLY, Some(REPLY_TIMEOUT), REPLY_TIMEOUT, None)?)
}

//! What can go wrong with a manager and its proxies.

use std::io;

/// Why a manager or one of its proxies could not do what was asked. A failed
/// operation changed nothing: a container is as it was before the call (except a
/// remote call whose connection failed after the request left: it may have run).
///
/// ```
/// use shmproc::{Manager, ManagerError};
///
/// let m = Manager::start()?;
/// let l = m.list::<u32>()?;
/// l.push(1)?;
/// assert!(matches!(l.get(5), Err(ManagerError::IndexOutOfRange { index: 5, len: 1 })));
/// m.shutdown();
/// assert!(matches!(l.push(2), Err(ManagerError::ShutDown)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The manager was shut down (explicitly, or its owner dropped it).
    #[error("the manager was shut down")]
    ShutDown,
    /// The manager's memory is full; make it with a larger
    /// [`ManagerBuilder::capacity`](crate::ManagerBuilder::capacity).
    #[error("the manager's {capacity} bytes are full (see ManagerBuilder::capacity)")]
    Full {
        /// The manager's capacity in bytes.
        capacity: usize,
    },
    /// A key, value or item over 4 GiB - 1 bytes encoded, or a request to a remote
    /// manager over 64 MiB (a server's default frame limit).
    #[error("{len} bytes are over the limit (an item: 4 GiB - 1; a request over the network: 64 MiB)")]
    TooLarge {
        /// Its encoded length.
        len: usize,
    },
    /// A list index past the end (Python's IndexError).
    #[error("index {index} out of range for a list of length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The list's length.
        len: u64,
    },
    /// A named container, namespace field or proxy holds other types than asked for.
    #[error("the container or field holds another type than asked for")]
    WrongType,
    /// A named container is of another kind (a list where a dict was asked for).
    /// A dict and a namespace are the same kind with other types: `WrongType`.
    #[error("the named container is of another kind (a dict or a list)")]
    WrongKind,
    /// A call that changes the manager from inside [`Dict::update`](crate::Dict::update)'s
    /// closure, which runs under the manager's lock (reads there work).
    #[error("a manager call that changes it, inside update's closure, would deadlock")]
    WouldDeadlock,
    /// A key or value could not be encoded; the message says which and why.
    #[error("encoding {0}")]
    Encode(String),
    /// Bytes in the manager could not be decoded as the proxy's type.
    #[error("decoding {0}")]
    Decode(String),
    /// The manager's memory is damaged (another process scribbled on it).
    #[error("the manager's memory is corrupted: {0}")]
    Corrupted(&'static str),
    /// What a manager reached over the network cannot do (a queue or lock lives in
    /// this machine's shared memory), or a proxy that cannot travel where it was sent.
    #[error("{0}")]
    Unsupported(String),
    /// Connecting, reading or writing the network connection failed.
    #[error("the connection to the manager failed: {0}")]
    Connection(#[source] io::Error),
    /// The authentication handshake failed: a wrong key on either side.
    #[error("authentication failed: {0}")]
    Authentication(&'static str),
    /// The peer broke the protocol (a frame too large, bytes that are no message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Making a shared object for the manager (a queue, a lock) failed.
    #[error(transparent)]
    Create(#[from] crate::SegmentCreateError),
    /// The server answered with an error of its own.
    #[error("the server says: {0}")]
    Remote(String),
}

impl ManagerError {
    /// Whether this is [`ManagerError::ShutDown`].
    pub fn is_shut_down(&self) -> bool {
        matches!(self, ManagerError::ShutDown)
    }
}

//! The errors of the channel layer, shaped like `std::sync::mpsc`'s and
//! crossbeam-channel's: a failed send hands the value back.

use std::fmt;

/// Why the bytes of a message could not be sent or received, beyond full/empty/closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelFault {
    /// The value could not be serialized.
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// A received message did not decode as the expected type.
    #[error("cannot decode the message as `{}`: {reason}", crate::names::short_type_name(expected))]
    Decode {
        /// The type the receiver asked for.
        expected: &'static str,
        /// What the codec said.
        reason: String,
    },
    /// The channel's shared memory holds something no shmproc process writes.
    #[error("channel memory corrupted: {0}")]
    Corrupted(&'static str),
    /// A message too large for the channel's side segments, or the OS refused one.
    #[error("cannot move a large message: {0}")]
    Side(String),
    /// The connection cannot be used in this direction (a simplex pipe's other role).
    #[error("this end of the pipe cannot {0}")]
    WrongDirection(&'static str),
    /// This connection was closed here (`close()`), and then used (Python's
    /// `OSError: handle is closed`): a mistake of this process, not the peer going away.
    #[error("this end of the pipe was closed here")]
    UseAfterClose,
    /// A pipe end already has as many holders (processes and cloned handles) as its
    /// table has room for: close or drop some before handing it on again.
    #[error("this end of the pipe already has {} holders", crate::channel::holders::MAX_HOLDERS)]
    TooManyHolders,
}

macro_rules! send_error {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident),* }) => {
        $(#[$doc])*
        pub enum $name<T> {
            $($(#[$vdoc])* $variant(T),)*
            /// The send failed for another reason, said by `fault`; the value is here.
            Failed {
                /// The value that was not sent.
                value: T,
                /// Why.
                fault: ChannelFault,
            },
        }

        impl<T> $name<T> {
            /// The value that was not sent.
            pub fn into_inner(self) -> T {
                match self {
                    $($name::$variant(v) => v,)*
                    $name::Failed { value, .. } => value,
                }
            }

            /// Whether the channel was closed (or, for a pipe, its peer is gone).
            pub fn is_disconnected(&self) -> bool {
                matches!(self, $name::Disconnected(_))
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)*
                    $name::Failed { fault, .. } => f.debug_struct("Failed").field("fault", fault).finish_non_exhaustive(),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_) => f.write_str(send_error!(@msg $variant)),)*
                    $name::Failed { fault, .. } => write!(f, "sending failed: {fault}"),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
    (@msg Disconnected) => { "sending on a closed channel" };
    (@msg Full) => { "the channel is full" };
    (@msg Timeout) => { "timed out waiting for room in the channel" };
}

send_error!(
    /// `put` / `send` failed; the value is handed back.
    SendError { /// The channel is closed (a pipe: the other end is closed or its process died).
    Disconnected }
);
send_error!(
    /// `try_put` failed without waiting; the value is handed back.
    TrySendError { /// No room now (Python's `queue.Full`).
    Full, /// The channel is closed.
    Disconnected }
);
send_error!(
    /// `put_timeout` failed; the value is handed back.
    SendTimeoutError { /// No room before the deadline (Python's `queue.Full`).
    Timeout, /// The channel is closed.
    Disconnected }
);

impl<T> SendTimeoutError<T> {
    /// The same outcome of a send that had no deadline, which cannot have timed out
    /// (if it says so, the channel's state is nonsense).
    pub(crate) fn unbounded(self) -> SendError<T> {
        match self {
            SendTimeoutError::Disconnected(value) => SendError::Disconnected(value),
            SendTimeoutError::Failed { value, fault } => SendError::Failed { value, fault },
            SendTimeoutError::Timeout(value) => {
                SendError::Failed { value, fault: ChannelFault::Corrupted("unbounded wait timed out") }
            }
        }
    }
}

/// `get` / `recv` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Closed and drained (a pipe: the other end is closed or its process died).
    #[error("receiving on a closed, empty channel")]
    Disconnected,
    /// A message arrived but could not be delivered: see the fault.
    #[error(transparent)]
    Failed(ChannelFault),
}

/// `try_get` failed without waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing to receive now (Python's `queue.Empty`).
    #[error("the channel is empty")]
    Empty,
    /// Closed and drained.
    #[error("receiving on a closed, empty channel")]
    Disconnected,
    /// A message arrived but could not be delivered.
    #[error(transparent)]
    Failed(ChannelFault),
}

/// `get_timeout` / `recv_timeout` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline (Python's `queue.Empty`).
    #[error("timed out waiting on an empty channel")]
    Timeout,
    /// Closed and drained.
    #[error("receiving on a closed, empty channel")]
    Disconnected,
    /// A message arrived but could not be delivered.
    #[error(transparent)]
    Failed(ChannelFault),
}

impl RecvTimeoutError {
    /// Whether this is `Timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }

    /// The same outcome of a wait that had no deadline, which cannot have timed out.
    pub(crate) fn unbounded(self) -> RecvError {
        match self {
            RecvTimeoutError::Failed(f) => RecvError::Failed(f),
            RecvTimeoutError::Disconnected | RecvTimeoutError::Timeout => RecvError::Disconnected,
        }
    }
}

impl TryRecvError {
    /// Whether this is `Empty`.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }
}

/// `recv_bytes_into` was given a buffer too short for the message (Python's
/// `BufferTooShort`); the whole message is inside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("buffer of {buffer_len} bytes is too short for a {}-byte message", .message.len())]
pub struct BufferTooShort {
    /// The message that did not fit, received whole.
    pub message: Vec<u8>,
    /// The length of the buffer that was given.
    pub buffer_len: usize,
}

/// `JoinableQueue::task_done` was called more times than items were put (Python's
/// ValueError).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than there were items")]
pub struct TaskDoneError;

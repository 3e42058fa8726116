//! The errors of the channel layer, shaped like `std::sync::mpsc`'s and
//! crossbeam-channel's: a failed send hands the value back.

use std::fmt;

/// Why the bytes of a message could not be sent or received, beyond full/empty/closed.
///
/// It comes inside the `Failed` case of every channel error.
///
/// ```
/// use shmproc::{ChannelFault, Pipe, Queue, RecvError, SendError};
///
/// let (rx, tx) = Pipe::simplex::<u32>()?;
/// // The first end of a simplex pipe only receives.
/// match rx.send(&1) {
///     Err(SendError::Failed { fault: ChannelFault::WrongDirection(_), .. }) => {}
///     other => panic!("{other:?}"),
/// }
/// tx.send(&2)?;
/// assert_eq!(rx.recv()?, 2);
///
/// // Raw bytes that are not a `String` fail at the receiver, which goes on.
/// let q = Queue::<String>::new(0)?;
/// q.put_bytes(&[0xff])?;
/// assert!(matches!(q.get(), Err(RecvError::Failed(ChannelFault::Decode { .. }))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    /// A large message's segment cannot be opened now: this process is out of
    /// descriptors or memory. The message stays in the channel, whole, for a later
    /// receive (here once something was freed, or by another consumer).
    #[error("cannot open a large message now (it stays in the channel): {0}")]
    SideUnavailable(String),
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
    /// This thread holds a loan on the ring (`put_loan`, `get_loan`, ...) and asked
    /// for the same side again: commit or drop the loan first.
    #[error("this thread holds a loan on this channel: commit or drop it first")]
    LoanHeld,
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
    ///
    /// ```
    /// use shmproc::{Queue, SendError};
    ///
    /// let q = Queue::<String>::new(0)?;
    /// q.close(); // for every process: puts fail from now on
    /// match q.put("late".to_string()) {
    ///     // Nothing is lost: the item comes back.
    ///     Err(SendError::Disconnected(item)) => assert_eq!(item, "late"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    SendError { /// The channel is closed (a pipe: the other end is closed or its process died).
    Disconnected }
);
send_error!(
    /// `try_put` failed without waiting; the value is handed back.
    ///
    /// ```
    /// use shmproc::{Queue, TrySendError};
    ///
    /// let q = Queue::<u32>::new(1)?;
    /// q.try_put(1)?;
    /// match q.try_put(2) {
    ///     // Python's `queue.Full`, with the item back to keep or retry.
    ///     Err(TrySendError::Full(item)) => assert_eq!(item, 2),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    TrySendError { /// No room now (Python's `queue.Full`).
    Full, /// The channel is closed.
    Disconnected }
);
send_error!(
    /// `put_timeout` failed; the value is handed back.
    ///
    /// ```
    /// use shmproc::{Queue, SendTimeoutError};
    /// use std::time::Duration;
    ///
    /// let q = Queue::<u32>::new(1)?;
    /// q.put(1)?;
    /// // Nobody takes the first item, so no room comes.
    /// match q.put_timeout(2, Duration::from_millis(10)) {
    ///     Err(SendTimeoutError::Timeout(item)) => assert_eq!(item, 2),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
///
/// ```
/// use shmproc::{Pipe, RecvError};
///
/// let (a, b) = Pipe::duplex::<u32>()?;
/// a.send(&1)?;
/// drop(a); // the other end is gone, but what it sent still arrives
/// assert_eq!(b.recv()?, 1);
/// match b.recv() {
///     Err(RecvError::Disconnected) => {} // Python's EOFError
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
///
/// ```
/// use shmproc::{Queue, TryRecvError};
///
/// let q = Queue::<u32>::new(0)?;
/// match q.try_get() {
///     Err(TryRecvError::Empty) => {} // Python's queue.Empty: try again later
///     other => panic!("{other:?}"),
/// }
/// q.put(7)?;
/// assert_eq!(q.try_get()?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
///
/// ```
/// use shmproc::{Queue, RecvTimeoutError};
/// use std::time::Duration;
///
/// let q = Queue::<u32>::new(0)?;
/// match q.get_timeout(Duration::from_millis(10)) {
///     Err(RecvTimeoutError::Timeout) => {} // Python's queue.Empty
///     other => panic!("{other:?}"),
/// }
/// q.close();
/// // Closed and drained: no wait, however long, would bring an item.
/// assert_eq!(q.get_timeout(Duration::from_secs(10)), Err(RecvTimeoutError::Disconnected));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
///
/// ```
/// use shmproc::{Pipe, RecvIntoError};
///
/// let (a, b) = Pipe::duplex::<()>()?;
/// a.send_bytes(b"0123456789")?;
/// let mut buf = [0u8; 4];
/// let Err(RecvIntoError::BufferTooShort(e)) = b.recv_bytes_into(&mut buf) else {
///     panic!("10 bytes cannot fit in 4");
/// };
/// assert_eq!((e.buffer_len, e.message.as_slice()), (4, &b"0123456789"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
///
/// ```
/// use shmproc::{JoinableQueue, TaskDoneError};
///
/// let q = JoinableQueue::<u32>::new(0)?;
/// q.put(1)?;
/// q.get()?;
/// q.task_done()?;
/// // One `task_done` per item: a second is a bookkeeping mistake.
/// assert_eq!(q.task_done(), Err(TaskDoneError));
/// q.join(); // every item is done
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than there were items")]
pub struct TaskDoneError;

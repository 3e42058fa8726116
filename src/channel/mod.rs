//! Channels between processes: `Queue<T>`, `JoinableQueue<T>` and `Pipe`.
//!
//! Every channel is a [ring of bytes](ring) in a shared segment, whole messages or
//! nothing, with the waiting (spin, yield, then sleep on a futex) around it in
//! [`signal`] and [`pace`].
//! The typed API on top serializes with postcard and hands a failed send's value
//! back, as std's channels do. What this layer promises:
//!
//! - **Nothing lost.** A message is committed with one store; a process killed at any
//!   point of a put leaves the queue usable, and every message committed before is
//!   delivered exactly once.
//! - **No size cliff.** A message larger than the ring still goes through, in a side
//!   segment, with no deadlock between one large producer and one consumer.
//! - **No feeder threads.** A put is done when it returns.
//! - **Never trust the ring.** Damaged positions or frames are errors, not UB.

mod codec;
mod error;
mod holders;
mod loan;
#[cfg(test)]
mod models;
mod pace;
mod pipe;
mod queue;
mod ring;
mod signal;

pub use error::{
    BufferTooShort, ChannelFault, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TaskDoneError,
    TryRecvError, TrySendError,
};
pub use loan::{GetLoan, PutLoan};
pub use pipe::{Connection, Pipe, RecvIntoError};
pub use queue::{JoinableQueue, Queue, QueueBuilder, SimpleQueue, DEFAULT_CAPACITY};
#[doc(hidden)]
pub use ring::SideStall;
pub(crate) use ring::{hold_ring_registry, set_side_stall};
pub(crate) use signal::YIELD_TIME;

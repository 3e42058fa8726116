//! Process-shared synchronisation: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Condition`, `Event`, `Barrier`.
//!
//! Each primitive lives in a segment of its own (or, for a `Value`'s or a
//! `Condition`'s lock, inside that object's segment) and works between every process
//! that has it: inherited across `fork`, or opened by name. What this layer promises:
//!
//! - **Robust.** The locks are futex words that name their owner (see `raw_mutex.rs`
//!   for why not raw_sync or a robust pthread mutex): a holder that dies, however it
//!   dies, hands the lock to the next waiter within milliseconds, poisoned. A
//!   `Barrier` party that dies while others wait breaks the barrier instead of
//!   stranding them.
//! - **Every wait can be bounded.** Each blocking call has a `try_` form, a
//!   `_timeout(Duration)` form and a `_deadline(Instant)` form, all thin calls into
//!   one private function taking a [`Wait`](wait::Wait).
//! - **Idle waiters sleep.** Waiting spins a few microseconds, then sleeps on a futex.
//! - **Never trust shared memory.** A scribbled lock reports
//!   [`LockError::Corrupted`]; a scribbled counter is read as some value, never as an
//!   index out of bounds.

mod barrier;
mod condition;
mod error;
mod event;
mod line;
mod lock;
mod raw_mutex;
mod rlock;
mod semaphore;
pub(crate) mod wait;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use error::{BarrierError, LockError, LockResult, ReleaseError};
pub use event::Event;
pub(crate) use line::Line;
pub use lock::{Lock, LockGuard};
pub(crate) use raw_mutex::{Acquire, RawMutex};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};

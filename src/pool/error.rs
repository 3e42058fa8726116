//! The errors of the pool layer: a task's failure is data ([`TaskError`]); setting
//! up or shutting down a pool is [`PoolError`].

use crate::ProcessError;

/// Why a task has no result. Each task fails alone: the others in the same pool,
/// map or chunk carry on.
///
/// ```
/// use shmproc::{Pool, TaskError};
///
/// fn check(x: u32) -> u32 {
///     assert!(x < 10, "{x} is too big");
///     x
/// }
/// let pool = Pool::new(1)?;
/// match pool.apply(check, 12) {
///     Err(TaskError::Panicked { message, .. }) => assert_eq!(message, "12 is too big"),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(pool.apply(check, 3)?, 3); // the same worker serves on
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked in its worker (which goes on serving).
    #[error("the task panicked at {location}: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
        /// Where it panicked (`file:line:column`).
        location: String,
    },
    /// The worker running the task died (killed by a signal, crashed, exited): it
    /// was replaced, and the pool keeps serving *(beyond: Python's Pool hangs)*.
    #[error("the worker (pid {pid}) running the task died: {}", describe_exit(*.exitcode))]
    WorkerDied {
        /// The worker's process id.
        pid: i32,
        /// How it ended: `-signal` when a signal killed it, else its exit code.
        exitcode: i32,
    },
    /// The pool was terminated (or dropped) before the task finished.
    #[error("the pool was terminated before the task finished")]
    Terminated,
    /// `get_timeout` / `next_timeout`: no result yet (the task goes on; ask again).
    #[error("timed out waiting for the result")]
    Timeout,
    /// The pool was closed (or terminated) before the task was submitted (Python's
    /// `ValueError: Pool not running`).
    #[error("the pool is not running (closed or terminated)")]
    PoolClosed,
    /// The arguments could not be serialized (shared objects such as `Value` or
    /// `Lock` cannot be task arguments, as in Python: pass them to the initializer).
    #[error("cannot serialize the task's arguments: {0}")]
    Encode(String),
    /// The arguments or the result could not be deserialized, or a message between
    /// the pool and its worker was damaged.
    #[error("cannot deserialize the task's data: {0}")]
    Decode(String),
    /// The pool's initializer failed in a worker, so the pool cannot run tasks.
    #[error("the pool's initializer failed: {0}")]
    Initializer(String),
    /// The result was already taken (by `get_timeout`, or a callback's `get`).
    #[error("the result was already taken")]
    AlreadyTaken,
    /// The task could not be handed to a worker (its arguments, over a quarter of
    /// the worker's ring, need a file of their own, and none could be made).
    #[error("cannot send the task to a worker: {0}")]
    Send(String),
    /// Waiting for a result on the pool's own result-handling thread (in a
    /// callback): the result could never arrive, so this fails at once instead.
    #[error("waiting for a pool's result inside its callback would wait forever")]
    WouldDeadlock,
    /// The task was cancelled before it started (an executor's
    /// [`TaskFuture::cancel`](crate::TaskFuture::cancel), or its shutdown with
    /// `cancel_futures`; Python's `CancelledError`).
    #[error("the task was cancelled")]
    Cancelled,
    /// The pool stopped serving after a worker died abruptly, as asked with
    /// [`ProcessPoolExecutorBuilder::break_on_worker_death`](crate::ProcessPoolExecutorBuilder::break_on_worker_death)
    /// (Python's `BrokenProcessPool`), or a thread executor's initializer panicked
    /// (`BrokenThreadPool`).
    #[error("the pool is broken: {0}")]
    Broken(String),
}

pub(super) fn describe_exit(code: i32) -> String {
    if code == crate::EXITCODE_UNKNOWN {
        "ended, how is unknown (its fork server died first)".to_owned()
    } else if code < 0 {
        format!("killed by signal {}", -code)
    } else {
        format!("exited with code {code}")
    }
}

impl TaskError {
    /// Whether this is [`TaskError::Timeout`] (the result may still come).
    pub fn is_timeout(&self) -> bool {
        matches!(self, TaskError::Timeout)
    }
}

/// Creating, joining or shutting down a [`Pool`](crate::Pool) failed.
///
/// ```
/// use shmproc::{Pool, PoolError};
///
/// match Pool::new(0) {
///     Err(PoolError::InvalidArgument(why)) => println!("no pool: {why}"),
///     other => panic!("{other:?}"),
/// }
/// let pool = Pool::new(1)?;
/// // The workers leave only after `close` or `terminate`: joining first would wait forever.
/// assert!(matches!(pool.join(), Err(PoolError::StillRunning)));
/// pool.close();
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// `processes(0)`, or another option out of range.
    #[error("invalid pool option: {0}")]
    InvalidArgument(&'static str),
    /// A worker process could not be started.
    #[error("cannot start a worker: {0}")]
    Start(#[from] ProcessError),
    /// The pool's shared memory could not be set up.
    #[error("cannot create the pool's queues: {0}")]
    Segment(#[from] crate::SegmentCreateError),
    /// `join` before `close` or `terminate` (Python's `ValueError`).
    #[error("join() needs close() or terminate() first")]
    StillRunning,
    /// The pool's result-handling thread could not be started, or panicked.
    #[error("the pool's result-handling thread: {0}")]
    Thread(String),
}

//! Executors: Python's `concurrent.futures` on the pool layer and on threads.
//!
//! [`ProcessPoolExecutor`] runs `fn(A) -> R` tasks in worker processes: it is a
//! [`Pool`](crate::Pool) underneath (the same workers, entry mechanism, rings and
//! recovery from a worker's death), with futures in place of `AsyncResult`s.
//! [`ThreadPoolExecutor`] runs tasks, capturing closures too, on threads of this
//! process. Both implement [`Executor`] and return a [`TaskFuture`] per task, which
//! [`as_completed`] and [`wait`] wait on in bulk and `.await` waits on from any
//! async runtime.
//!
//! What this layer promises:
//! - **A future completes once.** With the task's value, its error (a panic, its
//!   worker's death, the pool's end), or a cancel, which wins only while the task
//!   has not started: a future is never both cancelled and completed.
//! - **A dead worker fails only its task** and is replaced; the executor serves on.
//!   Python's behaviour, where any worker's death breaks the whole pool, is
//!   [`ProcessPoolExecutorBuilder::break_on_worker_death`].
//! - **Nothing is lost at submission.** `submit` on a shut-down or broken executor
//!   is a [`SubmitError`] that hands the arguments back.
//! - **Dropping an executor shuts it down and waits** for its tasks (Python's
//!   with-block); a [`ExecutorMap`] dropped early cancels the chunks not started.

mod future;
mod process;
mod thread;
mod wait;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use future::TaskFuture;
pub use process::{ProcessPoolExecutor, ProcessPoolExecutorBuilder};
pub use thread::{ThreadPoolExecutor, ThreadPoolExecutorBuilder};
pub use wait::{as_completed, wait, AsCompleted, ReturnWhen};

use crate::pool::TaskError;
use crate::sync::wait::Wait;

/// What Python's `concurrent.futures.Executor` does: submit tasks, map a function
/// over an input, shut down. Implemented by [`ProcessPoolExecutor`] and
/// [`ThreadPoolExecutor`]; the seam for another backend.
///
/// A task here is a fn item or non-capturing closure with serde arguments and
/// result, which both executors can run (the thread executor's own `submit` also
/// takes capturing closures). The generic methods make the trait unusable as
/// `dyn Executor` except for [`shutdown`](Executor::shutdown) and
/// [`max_workers`](Executor::max_workers), which a `dyn Executor` keeps.
///
/// ```
/// use shmproc::{Executor, MapOptions, ProcessPoolExecutor, ThreadPoolExecutor};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// // Written once against the trait, run on threads or on processes.
/// fn sum_of_squares(ex: &impl Executor, n: u64) -> u64 {
///     let results = ex.map(square, 0..n, MapOptions::new().chunksize(4)).unwrap();
///     results.map(Result::unwrap).sum()
/// }
/// assert_eq!(sum_of_squares(&ThreadPoolExecutor::new(2), 10), 285);
/// assert_eq!(sum_of_squares(&ProcessPoolExecutor::new(2)?, 10), 285);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Executor {
    /// Submits `f(args)` (Python's `submit(fn, *args)`); its future. Fails, handing
    /// `args` back, once the executor is shut down or broken.
    fn submit<F, A, R>(&self, f: F, args: A) -> Result<TaskFuture<R>, SubmitError<A>>
    where
        Self: Sized,
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// `f` over every item (Python's `map(fn, iterable, timeout, chunksize)`): the
    /// tasks are submitted now, in chunks of `options.chunksize`, and the results
    /// come lazily, in input order, from the iterator. A task that fails is an
    /// `Err` in its place; the others carry on.
    fn map<F, A, R, I>(&self, f: F, iterable: I, options: MapOptions) -> Result<ExecutorMap<R>, SubmitError<Vec<A>>>
    where
        Self: Sized,
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
        I: IntoIterator<Item = A>;

    /// Stops accepting tasks (Python's `shutdown(wait, cancel_futures)`). With
    /// `cancel_futures`, tasks not started are cancelled; with `wait`, returns once
    /// every other task has finished and the workers are gone.
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// The number of workers.
    fn max_workers(&self) -> usize;
}

/// `submit` or `map` could not take the task: the executor is shut down or broken.
/// The arguments come back in the error, as std's `SendError<T>` hands back its
/// value.
///
/// ```
/// use shmproc::{Executor, SubmitError, ThreadPoolExecutor};
///
/// let ex = ThreadPoolExecutor::new(1);
/// ex.shutdown(true, false);
/// match ex.submit(|x: u32| x + 1, 41) {
///     // Python raises RuntimeError; here the arguments come back too.
///     Err(SubmitError::Shutdown(args)) => assert_eq!(args, 41),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError<T> {
    /// After [`Executor::shutdown`] (Python's `RuntimeError: cannot schedule new
    /// futures after shutdown`).
    #[error("cannot submit a task: the executor is shut down")]
    Shutdown(T),
    /// The executor is broken (Python's `BrokenProcessPool` /
    /// `BrokenThreadPool`): the reason is the second field.
    #[error("cannot submit a task: the executor is broken ({1})")]
    Broken(T, String),
}

impl<T> SubmitError<T> {
    /// The arguments that were not submitted.
    pub fn into_inner(self) -> T {
        match self {
            SubmitError::Shutdown(t) | SubmitError::Broken(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Shutdown(_) => f.write_str("Shutdown(..)"),
            SubmitError::Broken(_, why) => f.debug_tuple("Broken").field(&format_args!("..")).field(why).finish(),
        }
    }
}

/// How [`Executor::map`] cuts and waits: `chunksize` tasks per message to a worker
/// (default 1, as in Python; larger chunks cost less per item), and a `timeout`
/// for the whole map, counted from the call.
///
/// ```
/// use shmproc::{Executor, MapOptions, ProcessPoolExecutor, TaskError};
/// use std::time::Duration;
///
/// let ex = ProcessPoolExecutor::new(2)?;
/// // Chunks of 100 cost far less per item than a message each.
/// let options = MapOptions::new().chunksize(100).timeout(Duration::from_secs(30));
/// let total: u64 = ex.map(|x: u64| x + 1, 0..1000u64, options)?.sum::<Result<u64, TaskError>>()?;
/// assert_eq!(total, 500_500);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapOptions {
    chunksize: Option<usize>,
    timeout: Option<Duration>,
}

impl MapOptions {
    /// Chunks of 1, no timeout.
    pub fn new() -> MapOptions {
        MapOptions::default()
    }

    /// Tasks sent to a worker together (0 counts as 1).
    pub fn chunksize(mut self, n: usize) -> MapOptions {
        self.chunksize = Some(n.max(1));
        self
    }

    /// After `timeout` from the `map` call, the iterator yields
    /// `Err(TaskError::Timeout)` for the next result not there, cancels the rest
    /// and ends.
    pub fn timeout(mut self, timeout: Duration) -> MapOptions {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn chunk_len(&self) -> usize {
        self.chunksize.unwrap_or(1)
    }
}

/// The iterator of [`Executor::map`]: one `Result<R, TaskError>` per input item,
/// in input order, each as soon as its chunk is done. Dropped early, it cancels the
/// chunks that have not started.
///
/// ```
/// use shmproc::{Executor, MapOptions, ProcessPoolExecutor, TaskError};
///
/// fn half(x: u32) -> u32 {
///     assert!(x % 2 == 0, "{x} is odd");
///     x / 2
/// }
/// let ex = ProcessPoolExecutor::new(2)?;
/// // A task that fails is an `Err` in its place; the others still come.
/// let results: Vec<Result<u32, TaskError>> = ex.map(half, [2, 3, 4], MapOptions::new())?.collect();
/// assert_eq!(results[0], Ok(1));
/// assert!(matches!(&results[1], Err(TaskError::Panicked { message, .. }) if message == "3 is odd"));
/// assert_eq!(results[2], Ok(2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "an ExecutorMap yields the results; dropped, it cancels what has not started"]
pub struct ExecutorMap<R> {
    /// Each chunk's future, with its number of items.
    chunks: VecDeque<(ChunkFuture<R>, usize)>,
    current: std::vec::IntoIter<Result<R, TaskError>>,
    deadline: Wait,
    /// Items of the chunk being reported as failed as a whole (cancelled).
    failing: Option<(TaskError, usize)>,
    ended: bool,
}

/// The future of one chunk of a map: a result per item.
pub(crate) type ChunkFuture<R> = TaskFuture<Vec<Result<R, TaskError>>>;

impl<R> ExecutorMap<R> {
    pub(crate) fn new(timeout: Option<Duration>) -> ExecutorMap<R> {
        ExecutorMap {
            chunks: VecDeque::new(),
            current: Vec::new().into_iter(),
            deadline: future::wait_for(timeout),
            failing: None,
            ended: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: ChunkFuture<R>, len: usize) {
        self.chunks.push_back((chunk, len));
    }

    /// Cancels every chunk not yet started; the iterator ends.
    fn cancel_rest(&mut self) {
        for (f, _) in self.chunks.drain(..) {
            f.cancel();
        }
        self.ended = true;
    }
}

impl<R> Iterator for ExecutorMap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.current.next() {
                return Some(r);
            }
            if let Some((e, left)) = &mut self.failing {
                if *left > 0 {
                    *left -= 1;
                    return Some(Err(e.clone()));
                }
                self.failing = None;
            }
            if self.ended {
                return None;
            }
            let (front, _) = self.chunks.front()?;
            if let Err(e) = front.wait(self.deadline) {
                // Out of time (or waiting could never end): this item fails, and
                // no later one is waited for.
                self.cancel_rest();
                return Some(Err(e));
            }
            let (mut chunk, len) = self.chunks.pop_front()?;
            match chunk.take() {
                Ok(results) => self.current = results.into_iter(),
                Err(e) => self.failing = Some((e, len)),
            }
        }
    }
}

impl<R> Drop for ExecutorMap<R> {
    fn drop(&mut self) {
        self.cancel_rest();
    }
}

impl<R> fmt::Debug for ExecutorMap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorMap").field("chunks_left", &self.chunks.len()).field("ended", &self.ended).finish()
    }
}

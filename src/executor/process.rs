//! [`ProcessPoolExecutor`]: Python's executor of the same name, a [`Pool`] whose
//! results land in futures.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::future::{ChunkSink, FutureCell, TaskFuture};
use super::{Executor, ExecutorMap, MapOptions, SubmitError};
use crate::pool::{Plain, Pool, PoolBuilder, PoolError, Sink, TaskError};
use crate::process::{Context, StartMethod};

/// An executor whose tasks run in worker processes (Python's
/// `concurrent.futures.ProcessPoolExecutor`).
///
/// Tasks are fn items or non-capturing closures with serde arguments and results,
/// as for [`Pool`]. A worker that dies fails only its task, with
/// [`TaskError::WorkerDied`] naming the signal, and is replaced
/// *(beyond: Python breaks the whole pool; ask for that with
/// [`break_on_worker_death`](ProcessPoolExecutorBuilder::break_on_worker_death))*.
/// Dropping the executor shuts it down and waits for its tasks.
///
/// ```
/// use shmproc::{as_completed, Executor, MapOptions, ProcessPoolExecutor};
/// fn fib(n: u64) -> u64 {
///     if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
/// }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let fibs: Vec<u64> = ex.map(fib, 0..10u64, MapOptions::new().chunksize(4))?.collect::<Result<_, _>>()?;
/// assert_eq!(fibs[9], 34);
/// let futures: Vec<_> = (20..23u64).map(|n| ex.submit(fib, n)).collect::<Result<_, _>>()?;
/// for f in as_completed(&futures, None) {
///     assert!(*f?.result(None)? >= 6765);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ProcessPoolExecutor {
    pool: Pool,
    shut: AtomicBool,
}

/// Options for a [`ProcessPoolExecutor`]: the number of workers, their start
/// method, an initializer, how many tasks a worker runs before it is replaced, and
/// whether a worker's death breaks the executor.
///
/// ```
/// use shmproc::{Executor, ProcessPoolExecutor, StartMethod};
///
/// fn double(x: u64) -> u64 {
///     x * 2
/// }
/// let ex = ProcessPoolExecutor::builder()
///     .max_workers(2)
///     .start_method(StartMethod::Fork)
///     .max_tasks_per_child(50)
///     .build()?;
/// assert_eq!(ex.max_workers(), 2);
/// let f = ex.submit(double, 21)?;
/// assert_eq!(*f.result(None)?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build`"]
#[derive(Debug, Default)]
pub struct ProcessPoolExecutorBuilder {
    pool: PoolBuilder,
}

impl ProcessPoolExecutorBuilder {
    /// The number of worker processes (default [`cpu_count`](crate::cpu_count)).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.pool = self.pool.processes(n);
        self
    }

    /// The start method of the workers (Python's `mp_context`).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.pool = self.pool.start_method(method);
        self
    }

    /// The start method of `ctx` (Python's `mp_context=ctx`).
    pub fn context(mut self, ctx: Context) -> Self {
        self.pool = self.pool.context(ctx);
        self
    }

    /// Runs `f(args)` in every worker when it starts (Python's `initializer` and
    /// `initargs`). If it panics, the executor is broken: its futures fail with
    /// [`TaskError::Initializer`] and `submit` fails.
    pub fn initializer<F, IA>(mut self, f: F, args: IA) -> Self
    where
        F: Fn(IA) + Copy + Send + Sync + 'static,
        IA: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        self.pool = self.pool.initializer(f, args);
        self
    }

    /// Replaces a worker after it has run `n` tasks (Python's
    /// `max_tasks_per_child`; `map` chunks count one each); 0, the default, never.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.pool = self.pool.max_tasks_per_child(n);
        self
    }

    /// Python's behaviour when a worker dies abruptly: the executor breaks, every
    /// pending future fails with [`TaskError::Broken`] and `submit` fails from then
    /// on. Off by default: only the dead worker's task fails, and the worker is
    /// replaced.
    pub fn break_on_worker_death(mut self, yes: bool) -> Self {
        self.pool = self.pool.break_on_worker_death(yes);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<ProcessPoolExecutor, PoolError> {
        Ok(ProcessPoolExecutor { pool: self.pool.build()?, shut: AtomicBool::new(false) })
    }
}

impl ProcessPoolExecutor {
    /// An executor of `max_workers` processes started with the default start method.
    pub fn new(max_workers: usize) -> Result<ProcessPoolExecutor, PoolError> {
        ProcessPoolExecutor::builder().max_workers(max_workers).build()
    }

    /// Options for an executor.
    pub fn builder() -> ProcessPoolExecutorBuilder {
        ProcessPoolExecutorBuilder::default()
    }

    /// The process ids of the workers running now.
    pub fn worker_pids(&self) -> Vec<i32> {
        self.pool.worker_pids()
    }

    /// A fresh, pending cell of this executor's pool.
    fn cell<R>(&self) -> Arc<FutureCell<R>> {
        Arc::new(FutureCell::new(Some(Arc::clone(self.pool.shared()))))
    }
}

/// `Err` if `error` refuses a submission of `args` (the executor is shut down or
/// broken); else `args` back, the error belonging to the task's future instead
/// (its arguments would not encode, ...).
fn refuse<T>(error: &TaskError, args: T) -> Result<T, SubmitError<T>> {
    match error {
        TaskError::PoolClosed => Err(SubmitError::Shutdown(args)),
        TaskError::Broken(_) | TaskError::Initializer(_) => Err(SubmitError::Broken(args, error.to_string())),
        _ => Ok(args),
    }
}

impl Executor for ProcessPoolExecutor {
    fn submit<F, A, R>(&self, f: F, args: A) -> Result<TaskFuture<R>, SubmitError<A>>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let _ = f;
        if self.shut.load(Ordering::Acquire) {
            return Err(SubmitError::Shutdown(args));
        }
        let cell = self.cell::<R>();
        let sink: Arc<dyn Sink> = cell.clone();
        if let Err(e) = self.pool.submit_one::<Plain<F, A>>(&args, sink) {
            refuse(&e, args)?;
            cell.complete(Err(e));
        }
        Ok(TaskFuture::new(cell))
    }

    fn map<F, A, R, I>(&self, f: F, iterable: I, options: MapOptions) -> Result<ExecutorMap<R>, SubmitError<Vec<A>>>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let mut items: Vec<A> = iterable.into_iter().collect();
        if self.shut.load(Ordering::Acquire) {
            return Err(SubmitError::Shutdown(items));
        }
        if let Err(e) = self.pool.shared().accepting() {
            items = refuse(&e, items)?;
        }
        // Each chunk is a future of its own, so that dropping the iterator can
        // cancel those not started. (Should the pool stop meanwhile, the chunks
        // left fail in their place.)
        let mut map = ExecutorMap::new(options.timeout);
        for chunk in items.chunks(options.chunk_len()) {
            let cell = self.cell::<Vec<Result<R, TaskError>>>();
            let sink = Arc::new(ChunkSink(Arc::clone(&cell)));
            if let Err(e) = self.pool.submit_chunk::<Plain<F, A>>(chunk, sink.clone()) {
                sink.fail(0, chunk.len() as u32, &e);
            }
            map.push(TaskFuture::new(cell), chunk.len());
        }
        Ok(map)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shut.store(true, Ordering::Release);
        if cancel_futures {
            self.pool.shared().cancel_pending();
        }
        self.pool.close();
        if wait {
            let _ = self.pool.join();
        }
    }

    fn max_workers(&self) -> usize {
        self.pool.processes()
    }
}

impl Drop for ProcessPoolExecutor {
    /// Shuts down and waits, as leaving Python's with-block does.
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.pool.processes())
            .field("shut_down", &self.shut.load(Ordering::Relaxed))
            .finish()
    }
}

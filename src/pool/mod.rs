//! Pools: Python's `multiprocessing.Pool` on our rings and processes, surviving its
//! workers' deaths.
//!
//! A [`Pool`] starts worker processes (any start method) and farms tasks out to
//! them: [`apply`](Pool::apply), [`apply_async`](Pool::apply_async),
//! [`map`](Pool::map), [`imap`](Pool::imap), [`starmap`](Pool::starmap) and their
//! variants. A task is a fn item or a non-capturing closure (checked at compile
//! time), called with serializable arguments; its result comes back serialized.
//!
//! What this layer promises:
//! - **A task fails alone.** A panic fails that task with its message and location
//!   ([`TaskError::Panicked`]); the worker goes on serving. A worker that dies
//!   (killed, crashed, out of memory) fails exactly the task(s) it was running with
//!   [`TaskError::WorkerDied`] and is replaced; every other task completes and no
//!   call hangs *(beyond: Python's Pool hangs, gh-96062, bpo-22393)*.
//! - **Submitting never blocks.** Tasks beyond what the workers' rings hold wait in
//!   the parent's memory (`apply_async` in a loop of a million calls completes), and
//!   `imap` reads its input lazily with a bounded number of tasks in flight.
//! - **Callbacks run in the parent**, on the pool's result-handling thread.
//! - **Nothing is left behind.** Dropping a pool terminates it (Python's with-block):
//!   its workers are killed and reaped, and pending results fail with
//!   [`TaskError::Terminated`].
//!
//! How the parent tracks tasks and workers is in `handler.rs`; the bytes that cross
//! are in `task.rs`; a worker's loop is `worker.rs`.

mod error;
mod handler;
#[cfg(test)]
mod model;
mod result;
mod task;
mod worker;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::{PoolError, TaskError};
pub use result::{AsyncResult, MapResult};
pub use task::StarTask;

pub(crate) use handler::{fail_worker_starts, Shared};
pub(crate) use result::{Latch, Sink};
pub(crate) use task::{Items, Plain};

use handler::Span;
use handler::Starter;
use result::{Marker, StreamSink};
use task::{Invoke, Star, TaggedRunner};
use worker::{no_initializer, worker_main, WorkerArgs};

use crate::channel::Queue;
use crate::process::{Context, Process, StartMethod};
use crate::shared::RawArray;
use crate::sync::wait::Wait;

/// How long the pool's waiters spin before they yield their CPU (see
/// [`spin_rounds`](crate::sync::wait::spin_rounds): 7 pauses, a fraction of a
/// microsecond). A pool runs more threads than there are CPUs (the caller, the
/// result-handling thread, the workers), and a waiter that spins keeps the thread it
/// waits for off the CPU: with the default budget (about 12 µs here) a synchronous
/// `apply` took 34 µs, with this one 7 µs.
pub(crate) const SPIN_ROUNDS: u32 = 3;

/// Chunks in flight per worker for `imap`, at most.
const IMAP_WINDOW_PER_WORKER: usize = 512;

static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Where a submitting thread encodes a task, so that a task costs no allocation.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::new(2)?;
/// assert_eq!(pool.apply(square, 7)?, 49);
/// assert_eq!(pool.map(square, 0..5u64)?, vec![0, 1, 4, 9, 16]);
/// let sum: u64 = pool.imap(square, 0..100u64).map(Result::unwrap).sum();
/// assert_eq!(sum, 328_350);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    processes: usize,
}

/// Options for a [`Pool`]: the number of workers, an initializer, how many tasks a
/// worker runs before it is replaced, the start method.
///
/// ```
/// use shmproc::{Pool, StartMethod};
/// use std::sync::OnceLock;
///
/// // Set once in each worker by the initializer; tasks read it.
/// static FACTOR: OnceLock<u64> = OnceLock::new();
/// fn init(factor: u64) {
///     let _ = FACTOR.set(factor);
/// }
/// fn scale(x: u64) -> u64 {
///     x * FACTOR.get().copied().unwrap_or(0)
/// }
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(init, 10)
///     .max_tasks_per_child(100)
///     .start_method(StartMethod::Fork)
///     .build()?;
/// assert_eq!(pool.map(scale, 1..4u64)?, [10, 20, 30]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build`"]
pub struct PoolBuilder {
    processes: Option<usize>,
    max_tasks: u64,
    method: Option<StartMethod>,
    break_on_death: bool,
    starter: Box<dyn FnOnce(Option<StartMethod>) -> Starter>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("max_tasks_per_child", &self.max_tasks)
            .field("start_method", &self.method)
            .finish_non_exhaustive()
    }
}

/// How a pool starts a worker: `worker_main` with initializer `I` and its arguments.
fn starter<I, IA>(method: Option<StartMethod>, init_args: IA) -> Starter
where
    I: Fn(IA) + Copy + Send + Sync + 'static,
    IA: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    Box::new(move |slot, tasks, results, key, max_tasks, board| {
        let n = NEXT_WORKER.fetch_add(1, Ordering::Relaxed);
        let args = WorkerArgs { slot, tasks, results, key, max_tasks, board, init_args: init_args.clone() };
        let mut b = Process::builder(worker_main::<I, IA>, args).name(format!("PoolWorker-{n}")).daemon(true);
        if let Some(m) = method {
            b = b.start_method(m);
        }
        b.start()
    })
}

/// [`starter`] for the (unnameable) type of the fn item `_init`.
fn starter_of<I, IA>(_init: I, method: Option<StartMethod>, init_args: IA) -> Starter
where
    I: Fn(IA) + Copy + Send + Sync + 'static,
    IA: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    starter::<I, IA>(method, init_args)
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: None,
            max_tasks: 0,
            method: None,
            break_on_death: false,
            starter: Box::new(|m| starter_of(no_initializer, m, ())),
        }
    }
}

impl PoolBuilder {
    /// The number of worker processes (default [`cpu_count`](crate::cpu_count)).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(args)` in every worker when it starts (Python's `initializer` and
    /// `initargs`): the place to hand workers shared objects (`Value`, `Lock`,
    /// queues), which cannot be task arguments. An initializer that panics makes the
    /// pool unusable: its tasks fail with [`TaskError::Initializer`].
    pub fn initializer<F, IA>(mut self, f: F, args: IA) -> Self
    where
        F: Fn(IA) + Copy + Send + Sync + 'static,
        IA: Serialize + DeserializeOwned + Clone + Send + 'static,
    {
        self.starter = Box::new(move |m| starter_of(f, m, args));
        self
    }

    /// Replaces a worker after it has run `n` tasks (chunks, as in Python's
    /// `maxtasksperchild`); 0, the default, never.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks = n;
        self
    }

    /// The start method of the workers (default: [`get_start_method`](crate::get_start_method)).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// The start method of `ctx` (Python's `ctx.Pool()`).
    pub fn context(self, ctx: Context) -> Self {
        self.start_method(ctx.start_method())
    }

    /// Makes a worker's abrupt death break the whole pool (Python's
    /// `BrokenProcessPool`), for the process executor's option of that name.
    pub(crate) fn break_on_worker_death(mut self, yes: bool) -> Self {
        self.break_on_death = yes;
        self
    }

    /// Starts the workers: returns once the first has started (an error if it
    /// cannot be), while the others start; tasks wait for a worker meanwhile.
    pub fn build(self) -> Result<Pool, PoolError> {
        let processes = match self.processes {
            Some(0) => return Err(PoolError::InvalidArgument("processes must be at least 1")),
            Some(n) => n,
            None => crate::cpu_count().max(1),
        };
        let results = Queue::<Vec<u8>>::builder().capacity(handler::RESULT_RING).build()?.spinning(SPIN_ROUNDS);
        let board = RawArray::zeroed(processes.saturating_mul(task::Progress::WORDS))?;
        let shared =
            Arc::new(Shared::new(results, board, handler::new_key()?, processes, self.max_tasks, self.break_on_death));
        shared.launch((self.starter)(self.method))?;
        Ok(Pool { shared, processes })
    }
}

/// Encodes one chunk of task arguments into a message.
struct Chunk<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
    count: u32,
}

impl<'b> Chunk<'b> {
    fn begin(buf: &'b mut Vec<u8>, runner: TaggedRunner) -> Chunk<'b> {
        Chunk::resume(buf, 0, runner)
    }

    /// A chunk whose message starts at `start` in `buf` (after others of a batch).
    fn resume(buf: &'b mut Vec<u8>, start: usize, runner: TaggedRunner) -> Chunk<'b> {
        buf.truncate(start);
        task::begin_task(buf, runner);
        Chunk { buf, start, count: 0 }
    }

    fn push<A: Serialize>(&mut self, item: &A) -> Result<(), TaskError> {
        task::append(item, self.buf).map_err(TaskError::Encode)?;
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> (&'b mut [u8], u32) {
        let message = &mut self.buf[self.start..];
        task::finish_task(message, self.count);
        (message, self.count)
    }
}

/// A map's input: read as it is encoded when the iterator knows its length (a
/// range, a `Vec`), else collected first (Python's `map` makes a list too, for
/// the chunksize).
struct Input<I: Iterator> {
    len: usize,
    items: Source<I>,
}

enum Source<I: Iterator> {
    Streamed(I),
    Collected(std::vec::IntoIter<I::Item>),
}

impl<I: Iterator> Input<I> {
    fn new(iter: I) -> Input<I> {
        match iter.size_hint() {
            (lo, Some(hi)) if lo == hi => Input { len: lo, items: Source::Streamed(iter) },
            _ => {
                let items: Vec<I::Item> = iter.collect();
                Input { len: items.len(), items: Source::Collected(items.into_iter()) }
            }
        }
    }

    /// The error of an iterator whose length was not what it said.
    fn miscounted(&self) -> TaskError {
        TaskError::Encode(format!(
            "the input iterator said it held {} items (its size_hint) but did not yield that many",
            self.len
        ))
    }
}

impl<I: Iterator> Iterator for Input<I> {
    type Item = I::Item;

    #[inline]
    fn next(&mut self) -> Option<I::Item> {
        match &mut self.items {
            Source::Streamed(iter) => iter.next(),
            Source::Collected(iter) => iter.next(),
        }
    }
}

/// Python's default chunksize: the input cut into about four chunks per worker.
fn default_chunksize(len: usize, workers: usize) -> usize {
    len.div_ceil(workers * 4).max(1)
}

impl Pool {
    /// A pool of `processes` workers started with the default start method.
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// Options for a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// What the pool's handles and its result-handling thread share.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The process ids of the workers running now (they change as workers are
    /// replaced).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.shared.worker_pids()
    }

    /// Runs `f(args)` in a worker and waits for the result (Python's `apply`).
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args).get()
    }

    /// Submits `f(args)` and returns at once (Python's `apply_async`); never blocks,
    /// however many tasks are pending. Attach callbacks with
    /// [`AsyncResult::callback`] and [`AsyncResult::error_callback`].
    ///
    /// ```
    /// let pool = shmproc::Pool::new(2)?;
    /// let r = pool.apply_async(|x: u64| x + 1, 41).callback(|v: &u64| assert_eq!(*v, 42));
    /// assert_eq!(r.get()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> AsyncResult<R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let (result, sink) = AsyncResult::new(Arc::clone(&self.shared));
        if let Err(e) = self.submit_one::<Plain<F, A>>(&args, Arc::clone(&sink)) {
            sink.fail(0, 1, &e);
        }
        result
    }

    /// Submits one task (or, for an executor's map, one chunk of `items`) whose
    /// results go to `sink`.
    pub(crate) fn submit_one<C: Invoke>(&self, args: &C::In, sink: Arc<dyn Sink>) -> Result<(), TaskError> {
        self.submit_chunk::<C>(std::slice::from_ref(args), sink)
    }

    /// Submits `items` as one chunk (results `0..items.len()` of `sink`).
    pub(crate) fn submit_chunk<C: Invoke>(&self, items: &[C::In], sink: Arc<dyn Sink>) -> Result<(), TaskError> {
        if !self.shared.is_running() {
            return Err(TaskError::PoolClosed);
        }
        let runner = self.shared.runner::<C>()?;
        SCRATCH.with(|scratch| {
            let mut fresh = Vec::new();
            let mut borrowed = scratch.try_borrow_mut();
            let buf = match borrowed.as_deref_mut() {
                Ok(b) => b,
                Err(_) => &mut fresh,
            };
            let mut chunk = Chunk::begin(buf, runner);
            for item in items {
                chunk.push(item)?;
            }
            let (bytes, count) = chunk.finish();
            let submitted = self.shared.submit(sink, 0, count, bytes);
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new();
            }
            submitted
        })
    }

    /// `f` applied to every item, in order (Python's `map`), with Python's default
    /// chunksize (about four chunks per worker). The first task that fails makes it
    /// an error.
    pub fn map<F, A, R, I>(&self, f: F, iterable: I) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, iterable).get()
    }

    /// [`map`](Pool::map) with an explicit chunksize (tasks sent to a worker together).
    pub fn map_chunked<F, A, R, I>(&self, f: F, iterable: I, chunksize: usize) -> Result<Vec<R>, TaskError>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_chunked(f, iterable, chunksize).get()
    }

    /// [`map`](Pool::map) without waiting (Python's `map_async`).
    pub fn map_async<F, A, R, I>(&self, f: F, iterable: I) -> MapResult<R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        let input = Input::new(iterable.into_iter());
        let chunksize = default_chunksize(input.len, self.processes);
        self.submit_all::<Plain<F, A>, _>(input, chunksize)
    }

    /// [`map_async`](Pool::map_async) with an explicit chunksize.
    pub fn map_async_chunked<F, A, R, I>(&self, f: F, iterable: I, chunksize: usize) -> MapResult<R>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        self.submit_all::<Plain<F, A>, _>(Input::new(iterable.into_iter()), chunksize)
    }

    /// `f(a, b, ...)` for every tuple, in order (Python's `starmap`): `f` takes 1 to
    /// 4 arguments.
    ///
    /// ```
    /// fn add(a: u64, b: u64) -> u64 {
    ///     a + b
    /// }
    /// let pool = shmproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn starmap<F, Args, I>(&self, f: F, iterable: I) -> Result<Vec<F::Output>, TaskError>
    where
        F: StarTask<Args>,
        Args: Serialize + DeserializeOwned + 'static,
        F::Output: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = Args>,
    {
        self.starmap_async(f, iterable).get()
    }

    /// [`starmap`](Pool::starmap) with an explicit chunksize.
    pub fn starmap_chunked<F, Args, I>(&self, f: F, iterable: I, chunksize: usize) -> Result<Vec<F::Output>, TaskError>
    where
        F: StarTask<Args>,
        Args: Serialize + DeserializeOwned + 'static,
        F::Output: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.submit_all::<Star<F, Args>, _>(Input::new(iterable.into_iter()), chunksize).get()
    }

    /// [`starmap`](Pool::starmap) without waiting (Python's `starmap_async`).
    pub fn starmap_async<F, Args, I>(&self, f: F, iterable: I) -> MapResult<F::Output>
    where
        F: StarTask<Args>,
        Args: Serialize + DeserializeOwned + 'static,
        F::Output: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        let input = Input::new(iterable.into_iter());
        let chunksize = default_chunksize(input.len, self.processes);
        self.submit_all::<Star<F, Args>, _>(input, chunksize)
    }

    /// Encodes the input chunk by chunk and hands each chunk over as it is ready.
    fn submit_all<C: Invoke, I>(&self, mut input: Input<I>, chunksize: usize) -> MapResult<C::Out>
    where
        C::Out: Send + 'static,
        I: Iterator<Item = C::In>,
    {
        let chunksize = chunksize.clamp(1, u32::MAX as usize);
        let len = input.len;
        if len == 0 && input.next().is_some() {
            return MapResult::failed(Arc::clone(&self.shared), input.miscounted());
        }
        let (result, sink) = MapResult::new(Arc::clone(&self.shared), len);
        let sink: Arc<dyn Sink> = sink;
        let runner = match self.shared.runner::<C>() {
            Ok(r) if self.shared.is_running() => r,
            Ok(_) => {
                sink.fail(0, 0, &TaskError::PoolClosed);
                return result;
            }
            Err(e) => {
                sink.fail(0, 0, &e);
                return result;
            }
        };
        let mut buf = Vec::new();
        for base in (0..len).step_by(chunksize) {
            let size = chunksize.min(len - base);
            let mut chunk = Chunk::begin(&mut buf, runner);
            for _ in 0..size {
                let pushed = match input.next() {
                    Some(item) => chunk.push(&item),
                    None => Err(input.miscounted()),
                };
                if let Err(e) = pushed {
                    sink.fail(base, size as u32, &e);
                    return result;
                }
            }
            if base + size == len && input.next().is_some() {
                // Checked before the last chunk goes: the map must not complete first.
                sink.fail(0, 0, &input.miscounted());
                return result;
            }
            let (bytes, count) = chunk.finish();
            if let Err(e) = self.shared.submit(Arc::clone(&sink), base, count, bytes) {
                sink.fail(base, count, &e);
                return result;
            }
        }
        result
    }

    /// The results of `f` over the input, in order, as an iterator (Python's
    /// `imap`, chunksize 1): the input is read lazily and at most a bounded number
    /// of tasks are in flight, so an endless input runs in bounded memory.
    ///
    /// ```
    /// let pool = shmproc::Pool::new(2)?;
    /// // An endless input: take what you need.
    /// let first: Vec<u64> = pool.imap(|x: u64| x * 2, 0..).take(5).collect::<Result<_, _>>()?;
    /// assert_eq!(first, vec![0, 2, 4, 6, 8]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn imap<F, A, R, I>(&self, f: F, iterable: I) -> IMap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.imap_chunked(f, iterable, 1)
    }

    /// [`imap`](Pool::imap) sending `chunksize` tasks to a worker at a time.
    pub fn imap_chunked<F, A, R, I>(&self, f: F, iterable: I, chunksize: usize) -> IMap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        IMap::new(self, self.shared.runner::<Plain<F, A>>(), iterable.into_iter(), chunksize, true)
    }

    /// [`imap`](Pool::imap) yielding results as they complete (Python's
    /// `imap_unordered`).
    pub fn imap_unordered<F, A, R, I>(&self, f: F, iterable: I) -> IMap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.imap_unordered_chunked(f, iterable, 1)
    }

    /// [`imap_unordered`](Pool::imap_unordered) with an explicit chunksize.
    pub fn imap_unordered_chunked<F, A, R, I>(&self, f: F, iterable: I, chunksize: usize) -> IMap<'_, A, R, I::IntoIter>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let _ = f;
        IMap::new(self, self.shared.runner::<Plain<F, A>>(), iterable.into_iter(), chunksize, false)
    }

    /// Stops accepting tasks (Python's `close()`); the workers exit once every
    /// submitted task has finished. Later submissions fail with
    /// [`TaskError::PoolClosed`].
    pub fn close(&self) {
        self.shared.close();
    }

    /// Stops the workers now (Python's `terminate()`): every pending result fails
    /// with [`TaskError::Terminated`]. Returns once they are reaped.
    pub fn terminate(&self) {
        self.shared.terminate();
        let _ = self.shared.join_handler();
    }

    /// Waits for the workers to exit (Python's `join()`): after [`close`](Pool::close)
    /// (every task finishes first) or [`terminate`](Pool::terminate).
    pub fn join(&self) -> Result<(), PoolError> {
        if self.shared.is_running() {
            return Err(PoolError::StillRunning);
        }
        self.shared.join_handler()
    }

    /// [`join`](Pool::join) for at most `timeout`; whether the workers are gone.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, PoolError> {
        if self.shared.is_running() {
            return Err(PoolError::StillRunning);
        }
        let deadline = std::time::Instant::now() + timeout;
        while !self.shared.is_done() {
            if std::time::Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.shared.join_handler().map(|()| true)
    }
}

impl Drop for Pool {
    /// Terminates the pool, as leaving Python's with-block does.
    fn drop(&mut self) {
        self.shared.terminate();
        let _ = self.shared.join_handler();
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("processes", &self.processes).field("workers", &self.worker_pids()).finish()
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: one
/// `Result<R, TaskError>` per input item (a task that failed is an `Err`; the
/// others carry on).
///
/// ```
/// use std::time::Duration;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::new(2)?;
/// let mut results = pool.imap_unordered(square, 1..=4u64);
/// // A bounded wait for one result, as Python's `next(timeout)`.
/// let first = results.next_timeout(Duration::from_secs(10)).expect("four results to come")?;
/// let mut squares: Vec<u64> = results.collect::<Result<_, _>>()?;
/// squares.push(first);
/// squares.sort();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct IMap<'p, A, R, I> {
    pool: &'p Pool,
    runner: Result<TaggedRunner, TaskError>,
    input: I,
    chunksize: usize,
    sink: Arc<StreamSink<R>>,
    submitted: usize,
    taken: usize,
    exhausted: bool,
    /// Results taken from the sink, not yet handed out.
    ready: VecDeque<Result<R, TaskError>>,
    /// The next refill's messages, back to back, and their spans.
    batch: Vec<u8>,
    spans: Vec<Span>,
    _types: Marker<(A, R)>,
}

impl<'p, A, R, I> IMap<'p, A, R, I>
where
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
    I: Iterator<Item = A>,
{
    fn new(pool: &'p Pool, runner: Result<TaggedRunner, TaskError>, input: I, chunksize: usize, ordered: bool) -> Self {
        IMap {
            pool,
            runner,
            input,
            chunksize: chunksize.clamp(1, u32::MAX as usize),
            sink: Arc::new(StreamSink::new(ordered)),
            submitted: 0,
            taken: 0,
            exhausted: false,
            ready: VecDeque::new(),
            batch: Vec::new(),
            spans: Vec::new(),
            _types: std::marker::PhantomData,
        }
    }

    /// Tops the tasks in flight up to the window once they have fallen a quarter
    /// below it: a refill is a batch of chunks under one lock of the pool, not a
    /// lock per result taken.
    fn fill(&mut self) {
        let window = IMAP_WINDOW_PER_WORKER.saturating_mul(self.pool.processes).saturating_mul(self.chunksize);
        let low = window - window / 4;
        if self.exhausted || (self.submitted > 0 && self.submitted.saturating_sub(self.taken) > low) {
            return;
        }
        if let Err(e) = self.pool.shared.accepting() {
            // Closed or broken: the next item gets the error, and no later one could
            // run either (an endless input would otherwise yield errors forever).
            if self.input.next().is_some() {
                self.sink.fail(self.submitted, 1, &e);
                self.submitted += 1;
            }
            self.exhausted = true;
            return;
        }
        let mut first = self.submitted == 0;
        while !self.exhausted && self.submitted.saturating_sub(self.taken) < window {
            self.encode_chunk();
            if first && !self.spans.is_empty() {
                // The workers start on the first chunk while the rest is encoded.
                self.flush();
                first = false;
            }
        }
        self.flush();
    }

    /// Encodes the next chunk into the batch (or fails its one bad item).
    fn encode_chunk(&mut self) {
        let base = self.submitted;
        let runner = match &self.runner {
            Ok(r) => *r,
            Err(e) => {
                // Every item fails the same way; the input is still read lazily.
                if self.input.next().is_none() {
                    self.exhausted = true;
                } else {
                    self.sink.fail(base, 1, e);
                    self.submitted += 1;
                }
                return;
            }
        };
        let start = self.batch.len();
        let mut bad = None;
        let mut chunk = Chunk::resume(&mut self.batch, start, runner);
        while (chunk.count as usize) < self.chunksize {
            let Some(item) = self.input.next() else {
                self.exhausted = true;
                break;
            };
            if let Err(e) = chunk.push(&item) {
                // That item fails alone: send what came before it, then report it.
                bad = Some(e);
                break;
            }
        }
        let count = chunk.finish().1;
        if count > 0 {
            self.spans.push(Span { base, count, len: self.batch.len() - start });
            self.submitted += count as usize;
        } else {
            self.batch.truncate(start);
        }
        if let Some(e) = bad {
            self.sink.fail(self.submitted, 1, &e);
            self.submitted += 1;
        }
    }

    /// Submits the batch.
    fn flush(&mut self) {
        if self.spans.is_empty() {
            return;
        }
        let sink: Arc<dyn Sink> = self.sink.clone();
        for (span, e) in self.pool.shared.submit_many(&sink, &mut self.batch, &self.spans) {
            if matches!(e, TaskError::PoolClosed | TaskError::Initializer(_)) {
                // No later task can run either: read no more input (an endless
                // input would otherwise yield errors forever).
                self.exhausted = true;
            }
            sink.fail(span.base, span.count, &e);
        }
        self.batch.clear();
        self.spans.clear();
    }

    fn next_with(&mut self, wait: Wait) -> Option<Result<R, TaskError>> {
        self.fill();
        if let Some(r) = self.ready.pop_front() {
            self.taken += 1;
            return Some(r);
        }
        if self.taken >= self.submitted {
            return None;
        }
        if self.pool.shared.on_handler_thread() {
            // In one of this pool's callbacks: no result can arrive while it waits.
            self.taken += 1;
            return Some(Err(TaskError::WouldDeadlock));
        }
        if !self.sink.take_ready(wait, &mut self.ready) {
            return Some(Err(TaskError::Timeout));
        }
        self.taken += 1;
        self.ready.pop_front()
    }

    /// The next result, waiting at most `timeout` (Python's `next(timeout)`):
    /// `Some(Err(TaskError::Timeout))` if it is not there yet (ask again).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        self.next_with(Wait::timeout(timeout))
    }
}

impl<A, R, I> Iterator for IMap<'_, A, R, I>
where
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
    I: Iterator<Item = A>,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Result<R, TaskError>> {
        self.next_with(Wait::Forever)
    }
}

impl<A, R, I> fmt::Debug for IMap<'_, A, R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap").field("submitted", &self.submitted).field("taken", &self.taken).finish_non_exhaustive()
    }
}

//! [`ThreadPoolExecutor`]: Python's executor of the same name, on threads of this
//! process. Threads start as tasks need them, up to `max_workers`, and an idle one
//! waits on an event count (spinning briefly first), so a burst of small tasks
//! costs no system call per task.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::future::{FutureCell, TaskFuture};
use super::{Executor, ExecutorMap, MapOptions, SubmitError};
use crate::pool::{Latch, TaskError};
use crate::process::{Panic, PanicCapture};
use crate::sync::wait::Wait;

static NEXT_EXECUTOR: AtomicUsize = AtomicUsize::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn panicked(p: Panic) -> TaskError {
    TaskError::Panicked { message: p.message, location: p.location }
}

/// A queued task, type-erased.
trait Job: Send {
    /// Runs it, unless its future was cancelled meanwhile.
    fn run(self: Box<Self>);
    /// Claims it for cancelling if it has not started (see `FutureCell::claim_cancel`).
    fn claim_cancel(&self) -> bool;
    /// Completes a claimed job as cancelled.
    fn cancelled(self: Box<Self>);
    /// Fails it (the executor broke before it ran).
    fn fail(self: Box<Self>, error: &TaskError);
}

/// `f(args)` for a future.
struct TaskJob<F, A, R> {
    f: F,
    args: A,
    cell: Arc<FutureCell<R>>,
}

impl<F, A, R> Job for TaskJob<F, A, R>
where
    F: FnOnce(A) -> R + Send,
    A: Send,
    R: Send + Sync,
{
    fn run(self: Box<Self>) {
        let TaskJob { f, args, cell } = *self;
        if cell.start() {
            let out = PanicCapture::begin(true).catch(move || f(args));
            cell.complete(out.map_err(|(p, _)| panicked(p)));
        }
    }

    fn claim_cancel(&self) -> bool {
        self.cell.claim_cancel()
    }

    fn cancelled(self: Box<Self>) {
        self.cell.finish_cancel();
    }

    fn fail(self: Box<Self>, error: &TaskError) {
        self.cell.complete(Err(error.clone()));
    }
}

/// One chunk of a `map`: `f` over `items`, each item's panic caught apart.
struct ChunkJob<F, A, R> {
    f: Arc<F>,
    items: Vec<A>,
    cell: Arc<FutureCell<Vec<Result<R, TaskError>>>>,
}

impl<F, A, R> Job for ChunkJob<F, A, R>
where
    F: Fn(A) -> R + Send + Sync,
    A: Send,
    R: Send + Sync,
{
    fn run(self: Box<Self>) {
        let ChunkJob { f, items, cell } = *self;
        if cell.start() {
            let capture = PanicCapture::begin(true);
            let results = items.into_iter().map(|a| capture.catch(|| (*f)(a)).map_err(|(p, _)| panicked(p))).collect();
            drop(capture);
            cell.complete(Ok(results));
        }
    }

    fn claim_cancel(&self) -> bool {
        self.cell.claim_cancel()
    }

    fn cancelled(self: Box<Self>) {
        self.cell.finish_cancel();
    }

    fn fail(self: Box<Self>, error: &TaskError) {
        let n = self.items.len();
        self.cell.complete(Ok((0..n).map(|_| Err(error.clone())).collect()));
    }
}

struct Queue {
    jobs: VecDeque<Box<dyn Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Threads waiting for a job.
    idle: usize,
    shut: bool,
    broken: Option<String>,
}

/// What the executor and its threads share.
struct Shared {
    queue: Mutex<Queue>,
    /// Jobs queued (read by idle threads without the lock).
    queued: AtomicUsize,
    /// Shut down or broken: idle threads exit once the queue is empty.
    stop: AtomicBool,
    latch: Latch,
    prefix: String,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
    max_workers: usize,
}

impl Shared {
    fn worker(self: Arc<Self>) {
        if let Some(init) = &self.initializer {
            // Printed, as Python logs "Exception in initializer".
            if let Err((p, _)) = PanicCapture::begin(false).catch(|| init()) {
                return self.break_down(format!("the initializer panicked at {}: {}", p.location, p.message));
            }
        }
        loop {
            let job = {
                let mut q = lock(&self.queue);
                match q.jobs.pop_front() {
                    Some(job) => {
                        self.queued.fetch_sub(1, Ordering::AcqRel);
                        Some(job)
                    }
                    None if q.shut || q.broken.is_some() => return,
                    None => {
                        q.idle += 1;
                        None
                    }
                }
            };
            match job {
                Some(job) => job.run(),
                None => {
                    let wake =
                        || (self.queued.load(Ordering::Acquire) > 0 || self.stop.load(Ordering::Acquire)).then_some(());
                    self.latch.wait_for(Wait::Forever, wake);
                    lock(&self.queue).idle -= 1;
                }
            }
        }
    }

    /// The executor is broken (Python's `BrokenThreadPool`): queued jobs fail, and
    /// so does every later submission.
    fn break_down(&self, why: String) {
        let jobs: Vec<Box<dyn Job>> = {
            let mut q = lock(&self.queue);
            q.broken.get_or_insert_with(|| why.clone());
            self.queued.store(0, Ordering::Release);
            q.jobs.drain(..).collect()
        };
        self.stop.store(true, Ordering::Release);
        self.latch.notify();
        let error = TaskError::Broken(why);
        for job in jobs {
            job.fail(&error);
        }
    }
}

/// An executor whose tasks run on threads of this process (Python's
/// `concurrent.futures.ThreadPoolExecutor`): for work that waits (on the network,
/// on files) rather than computes.
///
/// Its own [`submit`](ThreadPoolExecutor::submit) and [`map`](ThreadPoolExecutor::map)
/// take capturing closures and arguments of any `Send` type; through the
/// [`Executor`] trait it takes the same tasks as a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor).
/// Dropping it shuts it down and waits for its tasks.
///
/// ```
/// let ex = shmproc::ThreadPoolExecutor::new(4);
/// let base = String::from("page ");
/// let f = ex.submit(move |n: u32| format!("{base}{n}"), 7).unwrap();
/// assert_eq!(f.result(None).unwrap(), "page 7");
/// ```
pub struct ThreadPoolExecutor {
    shared: Arc<Shared>,
}

/// Options for a [`ThreadPoolExecutor`].
///
/// ```
/// use shmproc::ThreadPoolExecutor;
///
/// let ex = ThreadPoolExecutor::builder()
///     .max_workers(2)
///     .thread_name_prefix("io")
///     .initializer(|| println!("a thread is up"))
///     .build();
/// let f = ex.submit(|_: ()| std::thread::current().name().map(str::to_owned), ()).unwrap();
/// // The first thread: the prefix and its number.
/// assert_eq!(f.result(None).unwrap().as_deref(), Some("io_0"));
/// ```
#[must_use = "a builder does nothing until `build`"]
#[derive(Default)]
pub struct ThreadPoolExecutorBuilder {
    max_workers: Option<usize>,
    prefix: Option<String>,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for ThreadPoolExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolExecutorBuilder")
            .field("max_workers", &self.max_workers)
            .field("thread_name_prefix", &self.prefix)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}

impl ThreadPoolExecutorBuilder {
    /// The most threads it runs (default, as in Python: `min(32, cpu_count + 4)`;
    /// 0 counts as 1).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n.max(1));
        self
    }

    /// Names its threads `<prefix>_0`, `<prefix>_1`, ... (default
    /// `ThreadPoolExecutor-<n>`).
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Runs `f` on every thread when it starts (Python's `initializer`; capture
    /// what it needs). If it panics, the executor is broken: queued futures fail
    /// with [`TaskError::Broken`] and `submit` fails.
    pub fn initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(f));
        self
    }

    /// The executor (its threads start as tasks arrive).
    pub fn build(self) -> ThreadPoolExecutor {
        let n = NEXT_EXECUTOR.fetch_add(1, Ordering::Relaxed);
        let max_workers = self.max_workers.unwrap_or_else(|| (crate::cpu_count() + 4).min(32));
        ThreadPoolExecutor {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    threads: Vec::new(),
                    idle: 0,
                    shut: false,
                    broken: None,
                }),
                queued: AtomicUsize::new(0),
                stop: AtomicBool::new(false),
                latch: Latch::default(),
                prefix: self.prefix.unwrap_or_else(|| format!("ThreadPoolExecutor-{n}")),
                initializer: self.initializer,
                max_workers,
            }),
        }
    }
}

impl ThreadPoolExecutor {
    /// An executor of at most `max_workers` threads.
    pub fn new(max_workers: usize) -> ThreadPoolExecutor {
        ThreadPoolExecutor::builder().max_workers(max_workers).build()
    }

    /// Options for an executor.
    pub fn builder() -> ThreadPoolExecutorBuilder {
        ThreadPoolExecutorBuilder::default()
    }

    /// Queues the job `make(value)` and starts a thread if none is idle for it;
    /// `value` back if the executor is shut down or broken.
    fn enqueue<T>(&self, value: T, make: impl FnOnce(T) -> Box<dyn Job>) -> Result<(), SubmitError<T>> {
        let shared = &self.shared;
        let mut q = lock(&shared.queue);
        if q.shut {
            return Err(SubmitError::Shutdown(value));
        }
        if let Some(why) = &q.broken {
            return Err(SubmitError::Broken(value, why.clone()));
        }
        q.jobs.push_back(make(value));
        shared.queued.fetch_add(1, Ordering::AcqRel);
        if q.jobs.len() > q.idle && q.threads.len() < shared.max_workers {
            let name = format!("{}_{}", shared.prefix, q.threads.len());
            let me = Arc::clone(shared);
            match std::thread::Builder::new().name(name).spawn(move || me.worker()) {
                Ok(t) => q.threads.push(t),
                // With no thread at all, nothing would ever run the job.
                Err(e) if q.threads.is_empty() => {
                    drop(q);
                    shared.break_down(format!("cannot start a thread: {e}"));
                    return Ok(());
                }
                // Those running will take it.
                Err(_) => {}
            }
        }
        drop(q);
        shared.latch.notify();
        Ok(())
    }

    /// Submits `f(args)`; `f` may capture (Python's `submit(fn, *args)`). Fails,
    /// handing `args` back, once the executor is shut down or broken.
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Result<TaskFuture<R>, SubmitError<A>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + Sync + 'static,
    {
        let cell = Arc::new(FutureCell::new(None));
        let job_cell = Arc::clone(&cell);
        self.enqueue(args, move |args| Box::new(TaskJob { f, args, cell: job_cell }))?;
        Ok(TaskFuture::new(cell))
    }

    /// `f` over every item, results in order ([`Executor::map`]); `f` may capture.
    pub fn map<F, A, R, I>(&self, f: F, iterable: I, options: MapOptions) -> Result<ExecutorMap<R>, SubmitError<Vec<A>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + Sync + 'static,
        I: IntoIterator<Item = A>,
    {
        let f = Arc::new(f);
        let mut items = iterable.into_iter();
        let mut map = ExecutorMap::new(options.timeout);
        let mut first = true;
        loop {
            let chunk: Vec<A> = items.by_ref().take(options.chunk_len()).collect();
            if chunk.is_empty() {
                return Ok(map);
            }
            let len = chunk.len();
            let cell = Arc::new(FutureCell::new(None));
            let job_cell = Arc::clone(&cell);
            let f = Arc::clone(&f);
            if let Err(refused) = self.enqueue(chunk, move |items| Box::new(ChunkJob { f, items, cell: job_cell })) {
                if first {
                    // Nothing submitted: refuse the whole map, items back.
                    return Err(match refused {
                        SubmitError::Shutdown(mut v) => {
                            v.extend(items);
                            SubmitError::Shutdown(v)
                        }
                        SubmitError::Broken(mut v, why) => {
                            v.extend(items);
                            SubmitError::Broken(v, why)
                        }
                    });
                }
                // Shut down meanwhile (by another thread): the rest fails in place.
                cell.complete(Ok((0..len).map(|_| Err(TaskError::PoolClosed)).collect()));
            }
            first = false;
            map.push(TaskFuture::new(cell), len);
        }
    }
}

impl Executor for ThreadPoolExecutor {
    fn submit<F, A, R>(&self, f: F, args: A) -> Result<TaskFuture<R>, SubmitError<A>>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        ThreadPoolExecutor::submit(self, f, args)
    }

    fn map<F, A, R, I>(&self, f: F, iterable: I, options: MapOptions) -> Result<ExecutorMap<R>, SubmitError<Vec<A>>>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + Sync + 'static,
        I: IntoIterator<Item = A>,
    {
        ThreadPoolExecutor::map(self, f, iterable, options)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let shared = &self.shared;
        let (cancelled, threads) = {
            let mut q = lock(&shared.queue);
            q.shut = true;
            let mut cancelled = Vec::new();
            if cancel_futures {
                let (claimed, kept): (Vec<_>, Vec<_>) = q.jobs.drain(..).partition(|j| j.claim_cancel());
                q.jobs = kept.into();
                shared.queued.store(q.jobs.len(), Ordering::Release);
                cancelled = claimed;
            }
            let threads = if wait { std::mem::take(&mut q.threads) } else { Vec::new() };
            (cancelled, threads)
        };
        shared.stop.store(true, Ordering::Release);
        shared.latch.notify();
        for job in cancelled {
            job.cancelled();
        }
        let me = std::thread::current().id();
        for t in threads {
            // A task (or callback) shutting down its own executor cannot wait for itself.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    fn max_workers(&self) -> usize {
        self.shared.max_workers
    }
}

impl Drop for ThreadPoolExecutor {
    /// Shuts down and waits, as leaving Python's with-block does.
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = lock(&self.shared.queue);
        f.debug_struct("ThreadPoolExecutor")
            .field("max_workers", &self.shared.max_workers)
            .field("threads", &q.threads.len())
            .field("queued", &q.jobs.len())
            .field("shut_down", &q.shut)
            .finish()
    }
}

//! Where results land in the parent: a sink per submission (one task, a map, an
//! imap stream), filled by the pool's result-handling thread, and the handles that
//! wait on them (`AsyncResult`, `MapResult`, the imap iterators).

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::TaskError;
use super::handler::Shared;
use super::task::Items;
use crate::channel::YIELD_TIME;
use crate::sync::wait::{safety_poll, sleep_on, spin_rounds, wake, yield_for, Wait};
use crate::sync::Line;

/// Maps of this many tasks or more are waited for asleep (no yield phase).
const LONG_MAP: usize = 1000;

/// Where the result-handling thread puts what a chunk of tasks produced.
pub(crate) trait Sink: Send + Sync {
    /// The replies of tasks `base..base + count`, one item each. Reads exactly
    /// `count` items from `items`, whatever it makes of them: in a merged message
    /// the next part's items follow.
    fn deliver(&self, base: usize, count: u32, items: &mut Items<'_>);
    /// Tasks `base..base + count` failed, all with `error`.
    fn fail(&self, base: usize, count: u32, error: &TaskError);
    /// Wakes whoever waits on what `deliver` put here (once after several).
    fn notify(&self) {}
    /// The chunk is being handed to a worker (under the pool's lock): `false` if it
    /// was cancelled, and is then dropped instead of sent.
    fn start(&self) -> bool {
        true
    }
    /// The hand-over did not happen (the ring was full): it waits again, and may
    /// still be cancelled.
    fn unstart(&self) {}
    /// Claims a chunk that has not started for cancelling (under the pool's lock);
    /// if `true`, [`cancelled`](Sink::cancelled) must follow, outside that lock (it
    /// runs callbacks).
    fn claim_cancel(&self) -> bool {
        false
    }
    /// Completes a chunk claimed by [`claim_cancel`](Sink::claim_cancel).
    fn cancelled(&self) {}
    /// Whether the result thread's reference goes to the graveyard (freed by the
    /// next submitter) rather than being dropped as soon as the sink is delivered.
    /// An executor's future drops it at once: its owner takes the value only once
    /// nobody else holds the cell.
    fn bury(&self) -> bool {
        true
    }
    /// Whether a chunk of this sink may travel in one message with other chunks
    /// (see `Dispatch::merge`): only if it can be neither cancelled nor refused
    /// ([`start`](Sink::start) is always `true`), since a merged message goes whole.
    fn mergeable(&self) -> bool {
        false
    }
    /// Whether one task failing fails every task of this sink (a map's, as
    /// Python's `map` raises the first exception): its merged chunks may then
    /// share one part, since a part that fails whole loses nothing more.
    fn all_or_nothing(&self) -> bool {
        false
    }
}

/// An event count: waiters wait for `seq` to move past what they saw, spinning,
/// then yielding, then asleep on a futex; a notifier makes a syscall only when
/// someone sleeps.
#[derive(Default)]
pub(crate) struct Latch {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Latch {
    pub(crate) fn notify(&self) {
        // SeqCst pairs with the waiter's: either it sees the new `seq` or we see it
        // registered as a sleeper (and the futex compares `seq` before sleeping).
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            wake(&self.seq, u32::MAX);
        }
    }

    /// Waits until `ready` returns `Some`, at most as long as `wait` allows.
    pub(crate) fn wait_for<T>(&self, wait: Wait, ready: impl FnMut() -> Option<T>) -> Option<T> {
        self.wait_for_with(wait, true, ready)
    }

    /// [`wait_for`](Latch::wait_for), yielding the CPU for a while before sleeping
    /// when `yielding` (a wait that should be short), or sleeping soon (a wait for
    /// a long job, whose CPU the workers need meanwhile).
    pub(crate) fn wait_for_with<T>(
        &self,
        wait: Wait,
        yielding: bool,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        loop {
            let seen = self.seq.load(Ordering::Acquire);
            if let Some(t) = ready() {
                return Some(t);
            }
            if !self.wait_change(seen, wait, yielding) {
                return ready();
            }
        }
    }

    /// Waits for `seq` to leave `seen`; `false` once `wait` has run out.
    fn wait_change(&self, seen: u32, wait: Wait, yielding: bool) -> bool {
        let moved = || self.seq.load(Ordering::Acquire) != seen;
        if wait == Wait::Never {
            return moved();
        }
        if spin_rounds(super::SPIN_ROUNDS, || moved().then_some(())).is_some() {
            return true;
        }
        // Then give the CPU away for a while (with more threads than CPUs, the one
        // that would notify us may be waiting for this one).
        if yield_for(if yielding { YIELD_TIME } else { Duration::ZERO }, wait, &mut || moved()) {
            return true;
        }
        loop {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            if self.seq.load(Ordering::SeqCst) != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            let in_time = sleep_on(&self.seq, seen, wait, Some(safety_poll()));
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if moved() {
                return true;
            }
            if !in_time {
                return false;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a user's callback, so that one that panics does not take the pool's
/// result-handling thread with it (the panic is printed, as any panic is).
fn run_callback(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

/// A callback, called at most once through `&mut` (so that its box is freed with
/// its cell, on whichever thread drops that: see `Dispatch::graveyard`).
type Callback<T> = Box<dyn FnMut(&T) + Send>;
type ErrorCallback = Box<dyn FnMut(&TaskError) + Send>;

fn once<T: ?Sized>(f: impl FnOnce(&T) + Send + 'static) -> Box<dyn FnMut(&T) + Send> {
    let mut f = Some(f);
    Box::new(move |v: &T| {
        if let Some(f) = f.take() {
            f(v);
        }
    })
}

/// A completion: the outcome once there, callbacks until it is.
struct Completion<T> {
    /// The error boxed: a cell then fits glibc's fast bins (a request of at most
    /// 120 bytes), which a task's cell is allocated from and freed to in bulk.
    outcome: Option<Result<T, Box<TaskError>>>,
    taken: bool,
    /// How it ended, kept after the outcome was taken.
    succeeded: Option<bool>,
    callback: Option<Callback<T>>,
    error_callback: Option<ErrorCallback>,
}

impl<T> Completion<T> {
    fn new() -> Completion<T> {
        Completion { outcome: None, taken: false, succeeded: None, callback: None, error_callback: None }
    }

    fn complete(&mut self, outcome: Result<T, TaskError>) {
        match &outcome {
            Ok(v) => {
                if let Some(cb) = self.callback.as_mut() {
                    run_callback(|| cb(v));
                }
            }
            Err(e) => {
                if let Some(cb) = self.error_callback.as_mut() {
                    run_callback(|| cb(e));
                }
            }
        }
        self.succeeded = Some(outcome.is_ok());
        self.outcome = Some(outcome.map_err(Box::new));
    }

    fn take(&mut self) -> Result<T, TaskError> {
        match self.outcome.take() {
            Some(r) => {
                self.taken = true;
                r.map_err(|e| *e)
            }
            None if self.taken => Err(TaskError::AlreadyTaken),
            None => Err(TaskError::Timeout),
        }
    }
}

/// The state behind an [`AsyncResult`] or a [`MapResult`].
pub(crate) struct Cell<T> {
    state: Mutex<Completion<T>>,
    done: AtomicBool,
    /// Callbacks registered after the outcome came, not yet run (they run on the
    /// result-handling thread; the handle is not ready until they have).
    late_callbacks: AtomicU32,
    latch: Latch,
    /// Whether a waiter yields its CPU before sleeping (see [`Latch::wait_for_with`]).
    yielding: bool,
}

impl<T> Cell<T> {
    fn new(yielding: bool) -> Cell<T> {
        Cell {
            state: Mutex::new(Completion::new()),
            done: AtomicBool::new(false),
            late_callbacks: AtomicU32::new(0),
            latch: Latch::default(),
            yielding,
        }
    }

    fn complete(&self, outcome: Result<T, TaskError>) {
        let mut s = lock(&self.state);
        if s.outcome.is_some() || s.taken {
            return;
        }
        s.complete(outcome);
        drop(s);
        self.done.store(true, Ordering::Release);
        self.latch.notify();
    }

    fn wait(&self, wait: Wait) -> bool {
        self.latch.wait_for_with(wait, self.yielding, || self.ready().then_some(())).is_some()
    }

    /// The outcome is in, and every callback registered for it has run (as in
    /// Python, where a result is ready only once its callback has returned).
    fn ready(&self) -> bool {
        self.done.load(Ordering::Acquire) && self.late_callbacks.load(Ordering::Acquire) == 0
    }

    /// Runs `job` on the pool's result-handling thread for a callback registered
    /// after the outcome came; the handle is not ready until it has run.
    fn run_late(self: &Arc<Self>, pool: &Shared, job: impl FnOnce(&Cell<T>) + Send + 'static)
    where
        T: Send + 'static,
    {
        self.late_callbacks.fetch_add(1, Ordering::AcqRel);
        let me = Arc::clone(self);
        pool.defer(Box::new(move || {
            job(&me);
            me.late_callbacks.fetch_sub(1, Ordering::AcqRel);
            me.latch.notify();
        }));
    }

    fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        lock(&self.state).succeeded
    }

    fn get(&self, wait: Wait) -> Result<T, TaskError> {
        if !self.wait(wait) {
            // Not ready: no outcome yet, or one whose late callback has yet to run
            // (taking it now would leave that callback nothing to run with).
            return Err(if lock(&self.state).taken { TaskError::AlreadyTaken } else { TaskError::Timeout });
        }
        lock(&self.state).take()
    }

    /// [`get`](Cell::get) for a handle of `pool`: on the pool's own result-handling
    /// thread (a callback), only a result already there can be had.
    fn get_for(&self, pool: &Shared, wait: Wait) -> Result<T, TaskError> {
        if pool.on_handler_thread() {
            // Not there yet, or with a late callback queued to run later on this
            // very thread (which taking the value now would leave without it).
            if !self.ready() {
                return Err(TaskError::WouldDeadlock);
            }
            return lock(&self.state).take();
        }
        self.get(wait)
    }

    /// [`wait`](Cell::wait) for a handle of `pool`: on its result-handling thread,
    /// returns at once.
    fn wait_for(&self, pool: &Shared, wait: Wait) -> bool {
        if pool.on_handler_thread() {
            return self.done.load(Ordering::Acquire);
        }
        self.wait(wait)
    }
}

impl<T: Send + 'static> Cell<T> {
    /// Registers a callback, run on the result-handling thread: when the outcome
    /// arrives, or at once (on that thread) if it is already there.
    fn on_ok(self: &Arc<Self>, pool: &Shared, cb: Callback<T>) {
        let mut s = lock(&self.state);
        if s.outcome.is_none() && !s.taken {
            s.callback = Some(cb);
            return;
        }
        drop(s);
        let mut cb = cb;
        self.run_late(pool, move |me| {
            if let Some(Ok(v)) = &lock(&me.state).outcome {
                run_callback(|| cb(v));
            }
        });
    }

    fn on_err(self: &Arc<Self>, pool: &Shared, cb: ErrorCallback) {
        let mut s = lock(&self.state);
        if s.outcome.is_none() && !s.taken {
            s.error_callback = Some(cb);
            return;
        }
        drop(s);
        let mut cb = cb;
        self.run_late(pool, move |me| {
            if let Some(Err(e)) = &lock(&me.state).outcome {
                run_callback(|| cb(e));
            }
        });
    }
}

/// One task's sink is its cell.
impl<R: DeserializeOwned + Send + 'static> Sink for Cell<R> {
    fn mergeable(&self) -> bool {
        true
    }

    fn deliver(&self, _base: usize, count: u32, items: &mut Items<'_>) {
        self.complete(items.next::<R>());
        // A task's cell has one task: any more items are not its (read past all the same).
        for _ in 1..count {
            let _ = items.next::<R>();
        }
    }

    fn fail(&self, _base: usize, _count: u32, error: &TaskError) {
        self.complete(Err(error.clone()));
    }
}

/// A map's sink: each chunk's results decoded straight into a `Vec` of their own,
/// joined in order when the last arrives (or failed at the first failure, as
/// Python's `map` raises the first exception).
pub(crate) struct MapSink<R> {
    parts: Mutex<Parts<R>>,
    cell: Arc<Cell<Vec<R>>>,
}

/// The chunks delivered so far, by their first index, and how many results are
/// still to come.
struct Parts<R> {
    chunks: Vec<(usize, Vec<R>)>,
    missing: usize,
}

impl<R> Parts<R> {
    /// The results in order, if the chunks tile `0..len` exactly.
    fn join(&mut self) -> Result<Vec<R>, TaskError> {
        let mut chunks = std::mem::take(&mut self.chunks);
        chunks.sort_unstable_by_key(|(base, _)| *base);
        if chunks.len() == 1 && chunks[0].0 == 0 {
            return Ok(chunks.pop().map(|(_, values)| values).unwrap_or_default());
        }
        let mut out = Vec::with_capacity(chunks.iter().map(|(_, values)| values.len()).sum());
        for (base, mut values) in chunks {
            if base != out.len() {
                return Err(TaskError::Decode(format!("a map's results do not cover task {}", out.len())));
            }
            out.append(&mut values);
        }
        Ok(out)
    }
}

impl<R> MapSink<R> {
    fn finish_if_full(&self, parts: &mut Parts<R>) {
        if parts.missing == 0 {
            self.cell.complete(parts.join());
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for MapSink<R> {
    fn mergeable(&self) -> bool {
        true
    }

    fn all_or_nothing(&self) -> bool {
        true
    }

    fn deliver(&self, base: usize, count: u32, items: &mut Items<'_>) {
        // Every item is read, whatever becomes of it: in a merged message the next
        // part's items follow. Failed already (the first failure is the map's),
        // there is nothing to keep. Decoded before the lock: the waiter's `ready()`
        // is never held up by it.
        let keep = !self.cell.done.load(Ordering::Acquire);
        let mut values = Vec::with_capacity(if keep { count as usize } else { 0 });
        let mut failure = None;
        for _ in 0..count {
            match items.next::<R>() {
                Ok(v) if keep && failure.is_none() => values.push(v),
                Ok(_) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if !keep {
            return;
        }
        if let Some(e) = failure {
            return self.cell.complete(Err(e));
        }
        let mut parts = lock(&self.parts);
        if parts.missing < values.len() {
            // More results than the map has tasks left: the reply is not one of ours.
            drop(parts);
            return self.cell.complete(Err(TaskError::Decode("a map got more results than it has tasks".into())));
        }
        parts.missing -= values.len();
        parts.chunks.push((base, values));
        self.finish_if_full(&mut parts);
    }

    fn fail(&self, _base: usize, _count: u32, error: &TaskError) {
        self.cell.complete(Err(error.clone()));
    }
}

/// An imap stream's sink: results in order (by index) or as they come.
pub(crate) struct StreamSink<R> {
    /// Away from the `Arc`'s counts, which the submitting thread changes for every
    /// chunk it sends (and drops), while the result thread locks this for every
    /// chunk it delivers.
    state: Line<Mutex<Stream<R>>>,
    latch: Latch,
}

struct Stream<R> {
    ordered: bool,
    /// In order: `slots[i]` holds the result of task `head + i` once it came.
    slots: VecDeque<Option<Result<R, TaskError>>>,
    head: usize,
    /// As they come.
    arrived: VecDeque<Result<R, TaskError>>,
}

impl<R> Stream<R> {
    fn put(&mut self, index: usize, r: Result<R, TaskError>) {
        if !self.ordered {
            return self.arrived.push_back(r);
        }
        let Some(at) = index.checked_sub(self.head) else { return };
        if self.slots.len() <= at {
            self.slots.resize_with(at + 1, || None);
        }
        self.slots[at] = Some(r);
    }

    /// Moves every result that can be taken now into `into`; how many.
    fn take_all(&mut self, into: &mut VecDeque<Result<R, TaskError>>) -> usize {
        if !self.ordered {
            let n = self.arrived.len();
            into.append(&mut self.arrived);
            return n;
        }
        let n = self.slots.iter().take_while(|slot| slot.is_some()).count();
        into.extend(self.slots.drain(..n).flatten());
        self.head += n;
        n
    }
}

impl<R> StreamSink<R> {
    pub(crate) fn new(ordered: bool) -> StreamSink<R> {
        StreamSink {
            state: Line(Mutex::new(Stream { ordered, slots: VecDeque::new(), head: 0, arrived: VecDeque::new() })),
            latch: Latch::default(),
        }
    }

    /// Waits per `wait` until a result can be taken, then moves every one that can
    /// into `into` (one lock for a run of results): whether any came.
    pub(crate) fn take_ready(&self, wait: Wait, into: &mut VecDeque<Result<R, TaskError>>) -> bool {
        self.latch.wait_for(wait, || (lock(&self.state).take_all(into) > 0).then_some(())).is_some()
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for StreamSink<R> {
    fn mergeable(&self) -> bool {
        true
    }

    fn deliver(&self, base: usize, count: u32, items: &mut Items<'_>) {
        // Decoded first: a `Deserialize` that panics midway fails the whole chunk
        // (the caller's `fail`), with none of its results already out.
        if count == 1 {
            let r = items.next::<R>();
            return lock(&self.state).put(base, r);
        }
        let results: Vec<Result<R, TaskError>> = (0..count).map(|_| items.next::<R>()).collect();
        let mut s = lock(&self.state);
        for (i, r) in results.into_iter().enumerate() {
            s.put(base + i, r);
        }
    }

    fn notify(&self) {
        self.latch.notify();
    }

    fn fail(&self, base: usize, count: u32, error: &TaskError) {
        let mut s = lock(&self.state);
        for i in 0..count as usize {
            s.put(base + i, Err(error.clone()));
        }
        drop(s);
        self.latch.notify();
    }
}

/// The result of [`Pool::apply_async`](crate::Pool::apply_async) (Python's
/// `AsyncResult`): wait for it, ask whether it is there, or take it.
///
/// ```
/// use std::time::Duration;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::new(1)?;
/// let r = pool.apply_async(square, 12);
/// // Free to do other work here; then:
/// assert!(r.wait_timeout(Duration::from_secs(10)));
/// assert!(r.ready());
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get()?, 144);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "an AsyncResult does nothing unless you get its value (the task runs anyway)"]
pub struct AsyncResult<R> {
    cell: Arc<Cell<R>>,
    pool: Arc<Shared>,
}

impl<R: DeserializeOwned + Send + 'static> AsyncResult<R> {
    pub(crate) fn new(pool: Arc<Shared>) -> (AsyncResult<R>, Arc<dyn Sink>) {
        let cell = Arc::new(Cell::new(true));
        let sink: Arc<dyn Sink> = cell.clone();
        (AsyncResult { cell, pool }, sink)
    }

    /// Runs `callback` with the value when the task succeeds, in this process on the
    /// pool's result-handling thread (never in a worker). Register it right after
    /// `apply_async`: one registered once the value was taken never runs. One
    /// registered after the task completed runs as soon as that thread gets to it,
    /// and this handle is not [`ready`](AsyncResult::ready) (nor does a wait or
    /// `get` on it return) before it has, as Python runs a callback before it
    /// releases the result.
    pub fn callback(self, callback: impl FnOnce(&R) + Send + 'static) -> Self {
        self.cell.on_ok(&self.pool, once(callback));
        self
    }

    /// Runs `callback` with the error when the task fails, on the pool's
    /// result-handling thread.
    pub fn error_callback(self, callback: impl FnOnce(&TaskError) + Send + 'static) -> Self {
        self.cell.on_err(&self.pool, once(callback));
        self
    }

    /// Waits for the task and returns its value (Python's `get()`).
    pub fn get(self) -> Result<R, TaskError> {
        self.cell.get_for(&self.pool, Wait::Forever)
    }

    /// Waits at most `timeout`: the value, or `TaskError::Timeout` if it is not
    /// there yet (ask again later). Takes the value: a later `get` returns
    /// `TaskError::AlreadyTaken`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, TaskError> {
        self.cell.get_for(&self.pool, Wait::timeout(timeout))
    }

    /// Waits for the task to finish.
    pub fn wait(&self) {
        self.cell.wait_for(&self.pool, Wait::Forever);
    }

    /// Waits at most `timeout`; whether the task has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.cell.wait_for(&self.pool, Wait::timeout(timeout))
    }

    /// Whether the task has finished (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.cell.ready()
    }

    /// `Some(true)` if it finished with a value, `Some(false)` with an error, `None`
    /// while it runs (where Python raises `ValueError`).
    pub fn successful(&self) -> Option<bool> {
        self.cell.successful()
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.cell.done.load(Ordering::Relaxed)).finish()
    }
}

/// The result of [`Pool::map_async`](crate::Pool::map_async) and
/// [`starmap_async`](crate::Pool::starmap_async): every value in input order, or
/// the first error.
///
/// ```
/// use std::time::Duration;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let pool = shmproc::Pool::new(2)?;
/// // The callback runs in this process, once every value is in.
/// let r = pool.map_async(square, 0..10u64).callback(|v: &[u64]| assert_eq!(v[3], 9));
/// assert!(r.wait_timeout(Duration::from_secs(10)));
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get()?.iter().sum::<u64>(), 285);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a MapResult does nothing unless you get its values (the tasks run anyway)"]
pub struct MapResult<R> {
    cell: Arc<Cell<Vec<R>>>,
    pool: Arc<Shared>,
}

impl<R: DeserializeOwned + Send + 'static> MapResult<R> {
    pub(crate) fn new(pool: Arc<Shared>, len: usize) -> (MapResult<R>, Arc<MapSink<R>>) {
        // A large map takes a while: its waiter sleeps soon, leaving the CPU to the workers.
        let cell = Arc::new(Cell::new(len < LONG_MAP));
        let parts = Parts { chunks: Vec::new(), missing: len };
        let sink = Arc::new(MapSink { parts: Mutex::new(parts), cell: Arc::clone(&cell) });
        sink.finish_if_full(&mut lock(&sink.parts));
        (MapResult { cell, pool }, sink)
    }

    /// A map that failed before any task was sent.
    pub(crate) fn failed(pool: Arc<Shared>, error: TaskError) -> MapResult<R> {
        let cell = Arc::new(Cell::new(true));
        cell.complete(Err(error));
        MapResult { cell, pool }
    }

    /// Runs `callback` with all the values once every task succeeded, on the pool's
    /// result-handling thread.
    pub fn callback(self, callback: impl FnOnce(&[R]) + Send + 'static) -> Self {
        self.cell.on_ok(&self.pool, once(move |v: &Vec<R>| callback(v)));
        self
    }

    /// Runs `callback` with the first error, on the pool's result-handling thread.
    pub fn error_callback(self, callback: impl FnOnce(&TaskError) + Send + 'static) -> Self {
        self.cell.on_err(&self.pool, once(callback));
        self
    }

    /// Waits for every task; the values in input order, or the first error.
    pub fn get(self) -> Result<Vec<R>, TaskError> {
        self.cell.get_for(&self.pool, Wait::Forever)
    }

    /// Waits at most `timeout` (`TaskError::Timeout` if not done; ask again).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<R>, TaskError> {
        self.cell.get_for(&self.pool, Wait::timeout(timeout))
    }

    /// Waits for every task to finish (or the first to fail).
    pub fn wait(&self) {
        self.cell.wait_for(&self.pool, Wait::Forever);
    }

    /// Waits at most `timeout`; whether it has finished.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.cell.wait_for(&self.pool, Wait::timeout(timeout))
    }

    /// Whether it has finished.
    pub fn ready(&self) -> bool {
        self.cell.ready()
    }

    /// `Some(true)` if every task succeeded, `Some(false)` if one failed, `None`
    /// while they run.
    pub fn successful(&self) -> Option<bool> {
        self.cell.successful()
    }
}

impl<R> fmt::Debug for MapResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapResult").field("ready", &self.cell.done.load(Ordering::Relaxed)).finish()
    }
}

/// Keeps the `R` of an imap iterator without owning one.
pub(crate) type Marker<R> = PhantomData<fn() -> R>;

#[cfg(test)]
mod tests {
    use super::*;

    /// `apply_async` allocates a cell per task and its submitter frees them in
    /// bulk: an `Arc<Cell<u64>>` within glibc's fast-bin limit (a request of at
    /// most 120 bytes) took 20 000 of them from 20-25 to 13-19 ms in a fresh pool.
    #[test]
    fn a_small_results_cell_fits_the_fast_bins() {
        let arc_counts = 2 * std::mem::size_of::<usize>();
        assert!(std::mem::size_of::<Cell<u64>>() + arc_counts <= 120, "{}", std::mem::size_of::<Cell<u64>>());
    }
}

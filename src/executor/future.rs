//! The future of one submitted task: its state machine (pending, running, done,
//! cancelled), the outcome once there, callbacks, and the wake-ups of everything
//! that waits on it (a blocked thread, an async task's waker, an `as_completed` or
//! `wait` board).
//!
//! A cell is completed exactly once, by whoever first moves it out of pending or
//! running: the task's result, a failure (its worker died, the pool stopped), or a
//! cancel. A cancel wins only while the task is pending, so a future is never both
//! cancelled and completed.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::pool::{Items, Latch, Shared, Sink, TaskError};
use crate::sync::wait::Wait;

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
/// Claimed by its completer, whose callbacks are running.
const COMPLETING: u8 = 2;
const FINISHED: u8 = 3;
const CANCELLED: u8 = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A done-callback: called once with the outcome.
type DoneCallback<R> = Box<dyn FnOnce(&Result<R, TaskError>) + Send>;

/// Where `as_completed` and `wait` learn which of their futures finished: each
/// future, once done, pushes its index here.
#[derive(Default)]
pub(crate) struct Board {
    finished: Mutex<VecDeque<usize>>,
    latch: Latch,
}

impl Board {
    fn push(&self, index: usize) {
        lock(&self.finished).push_back(index);
        self.latch.notify();
    }

    /// Every index pushed so far (at least one, waiting as `wait` allows: none if
    /// it ran out), taken in one go.
    pub(crate) fn take(&self, wait: Wait, into: &mut VecDeque<usize>) -> bool {
        self.latch
            .wait_for(wait, || {
                let mut finished = lock(&self.finished);
                (!finished.is_empty()).then(|| into.append(&mut finished))
            })
            .is_some()
    }
}

/// Who waits on a cell besides its owner: most cells have one `as_completed` or
/// `wait` board at most, kept without an allocation.
#[derive(Default)]
struct Observers {
    first: Option<(Arc<Board>, usize)>,
    more: Vec<(Arc<Board>, usize)>,
}

impl Observers {
    fn push(&mut self, board: &Arc<Board>, index: usize) {
        match self.first {
            None => self.first = Some((Arc::clone(board), index)),
            Some(_) => self.more.push((Arc::clone(board), index)),
        }
    }

    fn remove(&mut self, board: &Arc<Board>) {
        if self.first.as_ref().is_some_and(|(b, _)| Arc::ptr_eq(b, board)) {
            self.first = None;
        }
        self.more.retain(|(b, _)| !Arc::ptr_eq(b, board));
    }

    fn tell(self) {
        for (board, index) in self.first.into_iter().chain(self.more) {
            board.push(index);
        }
    }
}

struct Slot<R> {
    callbacks: Vec<DoneCallback<R>>,
    observers: Observers,
    waker: Option<Waker>,
}

/// The state a [`TaskFuture`] shares with whatever completes it (a pool's
/// result-handling thread, a thread executor's worker).
pub(crate) struct FutureCell<R> {
    state: AtomicU8,
    /// Set (once) just before the state turns final; lent to callbacks and to
    /// `result`, taken whole by the owner once nobody else holds the cell.
    outcome: OnceLock<Result<R, TaskError>>,
    /// Done, and its callbacks have all run.
    settled: AtomicBool,
    slot: Mutex<Slot<R>>,
    latch: Latch,
    /// The pool whose result-handling thread completes this cell: waiting there
    /// (inside a callback) would wait forever.
    pool: Option<Arc<Shared>>,
}

impl<R> FutureCell<R> {
    pub(crate) fn new(pool: Option<Arc<Shared>>) -> FutureCell<R> {
        FutureCell {
            state: AtomicU8::new(PENDING),
            outcome: OnceLock::new(),
            settled: AtomicBool::new(false),
            slot: Mutex::new(Slot { callbacks: Vec::new(), observers: Observers::default(), waker: None }),
            latch: Latch::default(),
            pool,
        }
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state(), FINISHED | CANCELLED)
    }

    fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// The task starts (is handed to a worker): `false` if it was cancelled or
    /// completed meanwhile. Idempotent: a task taken back from a dead worker's ring
    /// starts again.
    pub(crate) fn start(&self) -> bool {
        match self.state.compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(now) => now == RUNNING,
        }
    }

    /// The hand-over did not happen: pending again (cancellable).
    pub(crate) fn unstart(&self) {
        let _ = self.state.compare_exchange(RUNNING, PENDING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Claims a pending cell for cancelling; [`finish_cancel`](Self::finish_cancel)
    /// must follow.
    pub(crate) fn claim_cancel(&self) -> bool {
        self.state.compare_exchange(PENDING, COMPLETING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub(crate) fn finish_cancel(&self) {
        self.publish(Err(TaskError::Cancelled), CANCELLED);
    }

    /// Cancels the cell if it is pending; whether it is cancelled now.
    pub(crate) fn cancel(&self) -> bool {
        if self.claim_cancel() {
            self.finish_cancel();
            return true;
        }
        self.state() == CANCELLED
    }

    /// Completes the cell with `outcome`, unless it is already done or cancelled
    /// (then `outcome` is dropped: the first completion wins).
    pub(crate) fn complete(&self, outcome: Result<R, TaskError>) {
        let claim = |s: u8| matches!(s, PENDING | RUNNING).then_some(COMPLETING);
        if self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, claim).is_ok() {
            self.publish(outcome, FINISHED);
        }
    }

    /// Makes the outcome visible and the state final (as Python does, before the
    /// callbacks: a callback sees its future done), wakes the waiters, then runs
    /// the callbacks registered so far. One added later sees the cell done and is
    /// run by whoever adds it.
    fn publish(&self, outcome: Result<R, TaskError>, last: u8) {
        // Only the claimant of COMPLETING gets here, once.
        let _ = self.outcome.set(outcome);
        let mut slot = lock(&self.slot);
        self.state.store(last, Ordering::Release);
        let callbacks = std::mem::take(&mut slot.callbacks);
        let observers = std::mem::take(&mut slot.observers);
        if callbacks.is_empty() {
            // The common case: settled at once, under one lock.
            self.settled.store(true, Ordering::Release);
            let waker = slot.waker.take();
            drop(slot);
            self.wake(observers, waker);
            return;
        }
        drop(slot);
        self.wake(observers, None);
        if let Some(outcome) = self.outcome.get() {
            for cb in callbacks {
                run_callback(|| cb(outcome));
            }
        }
        let waker = {
            let mut slot = lock(&self.slot);
            self.settled.store(true, Ordering::Release);
            slot.waker.take()
        };
        self.wake(Observers::default(), waker);
    }

    /// Wakes blocked waiters, the boards of `as_completed` / `wait`, and an async
    /// task.
    fn wake(&self, observers: Observers, waker: Option<Waker>) {
        self.latch.notify();
        observers.tell();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Adds `cb`, or hands it back if the cell is already done (the caller runs it).
    fn add_callback(&self, cb: DoneCallback<R>) -> Option<DoneCallback<R>> {
        let mut slot = lock(&self.slot);
        if self.is_done() {
            return Some(cb);
        }
        slot.callbacks.push(cb);
        None
    }

    /// Has `board` told (index `index`) when the cell is done; `true` if it is
    /// already (then nothing is registered).
    pub(crate) fn observe(&self, board: &Arc<Board>, index: usize) -> bool {
        let mut slot = lock(&self.slot);
        if self.is_done() {
            return true;
        }
        slot.observers.push(board, index);
        false
    }

    /// Forgets `board` (its `as_completed` or `wait` ended).
    pub(crate) fn unobserve(&self, board: &Arc<Board>) {
        lock(&self.slot).observers.remove(board);
    }

    /// Waits for the cell to be done; `Err` if `wait` ran out, or if waiting could
    /// never end (on the pool's result-handling thread, which completes it).
    pub(crate) fn wait(&self, wait: Wait) -> Result<(), TaskError> {
        if self.is_done() {
            return Ok(());
        }
        if self.pool.as_ref().is_some_and(|p| p.on_handler_thread()) {
            return Err(TaskError::WouldDeadlock);
        }
        match self.latch.wait_for(wait, || self.is_done().then_some(())) {
            Some(()) => Ok(()),
            None => Err(TaskError::Timeout),
        }
    }

    /// The outcome of a done cell.
    fn outcome(&self) -> Result<&R, &TaskError> {
        match self.outcome.get() {
            Some(o) => o.as_ref(),
            None => Err(&TaskError::AlreadyTaken),
        }
    }
}

/// Runs a user's callback; one that panics is reported (the panic hook prints it)
/// and ignored, as Python logs and ignores an exception in a done-callback.
fn run_callback(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

/// One task's sink is its cell (a pool's single task).
impl<R: DeserializeOwned + Send + Sync + 'static> Sink for FutureCell<R> {
    fn deliver(&self, _base: usize, _count: u32, items: &mut Items<'_>) {
        self.complete(items.next::<R>());
    }

    fn fail(&self, _base: usize, _count: u32, error: &TaskError) {
        self.complete(Err(error.clone()));
    }

    fn start(&self) -> bool {
        FutureCell::start(self)
    }

    fn unstart(&self) {
        FutureCell::unstart(self);
    }

    fn claim_cancel(&self) -> bool {
        FutureCell::claim_cancel(self)
    }

    fn cancelled(&self) {
        self.finish_cancel();
    }

    fn bury(&self) -> bool {
        false
    }
}

/// The sink of one chunk of an executor's `map`: a future of the chunk's results,
/// one per item (an item that failed is an `Err`; the others are kept).
pub(crate) struct ChunkSink<R>(pub(crate) Arc<FutureCell<Vec<Result<R, TaskError>>>>);

impl<R: DeserializeOwned + Send + Sync + 'static> Sink for ChunkSink<R> {
    fn deliver(&self, _base: usize, count: u32, items: &mut Items<'_>) {
        self.0.complete(Ok((0..count).map(|_| items.next::<R>()).collect()));
    }

    fn fail(&self, _base: usize, count: u32, error: &TaskError) {
        self.0.complete(Ok((0..count.max(1)).map(|_| Err(error.clone())).collect()));
    }

    fn start(&self) -> bool {
        self.0.start()
    }

    fn unstart(&self) {
        self.0.unstart();
    }

    fn claim_cancel(&self) -> bool {
        self.0.claim_cancel()
    }

    fn cancelled(&self) {
        self.0.finish_cancel();
    }

    fn bury(&self) -> bool {
        false
    }
}

/// The future of a task submitted to an executor (Python's
/// `concurrent.futures.Future`): ask its state, wait for its result, cancel it
/// while it is pending, add done-callbacks, or `.await` it.
///
/// Named so that it does not clash with [`std::future::Future`], which it also
/// implements: `.await` gives the result, owned, without blocking the runtime's
/// thread (the completer wakes the task's waker).
///
/// Futures compare and hash by identity, so that one can key a map as in Python's
/// `{executor.submit(f, x): x for x in xs}` (Clippy's `mutable_key_type` lint
/// sees the state inside; identity never changes, so allow it there).
///
/// ```
/// use shmproc::{Executor, ProcessPoolExecutor};
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let ex = ProcessPoolExecutor::new(2)?;
/// let f = ex.submit(square, 7)?;
/// assert_eq!(f.result(None)?, &49);
/// assert!(f.done() && !f.cancelled());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a TaskFuture does nothing unless you wait for it (the task runs anyway)"]
pub struct TaskFuture<R> {
    cell: Arc<FutureCell<R>>,
}

impl<R> TaskFuture<R> {
    pub(crate) fn new(cell: Arc<FutureCell<R>>) -> TaskFuture<R> {
        TaskFuture { cell }
    }

    pub(crate) fn cell(&self) -> &Arc<FutureCell<R>> {
        &self.cell
    }

    /// Cancels the task if it has not started (Python's `cancel()`): `true` if it
    /// is cancelled now (also when it already was), `false` if it is running or
    /// done. A cancelled task never runs; its done-callbacks run now.
    pub fn cancel(&self) -> bool {
        self.cell.cancel()
    }

    /// Whether it was cancelled.
    pub fn cancelled(&self) -> bool {
        self.cell.state() == CANCELLED
    }

    /// Whether it is running: handed to a worker (a process executor's task may
    /// wait in that worker's queue, as Python's does in its call queue) and not
    /// done. A running task cannot be cancelled.
    pub fn running(&self) -> bool {
        matches!(self.cell.state(), RUNNING | COMPLETING)
    }

    /// Whether it is done: finished (with a value or an error) or cancelled.
    pub fn done(&self) -> bool {
        self.cell.is_done()
    }

    /// Waits at most `timeout` (`None`: as long as it takes) for the task and
    /// returns its value (Python's `result(timeout)`), as often as asked.
    ///
    /// Errors: the task's own ([`TaskError::Panicked`], [`TaskError::WorkerDied`],
    /// ...), [`TaskError::Cancelled`], or [`TaskError::Timeout`] if it is not done
    /// in time (it goes on; ask again).
    pub fn result(&self, timeout: Option<Duration>) -> Result<&R, TaskError> {
        self.cell.wait(wait_for(timeout))?;
        self.cell.outcome().map_err(Clone::clone)
    }

    /// Waits like [`result`](TaskFuture::result) and returns the task's error, or
    /// `None` if it succeeded (Python's `exception(timeout)`). `Err` if it was
    /// cancelled or is not done in time.
    pub fn exception(&self, timeout: Option<Duration>) -> Result<Option<&TaskError>, TaskError> {
        self.cell.wait(wait_for(timeout))?;
        match self.cell.outcome() {
            Ok(_) => Ok(None),
            Err(TaskError::Cancelled) => Err(TaskError::Cancelled),
            Err(e) => Ok(Some(e)),
        }
    }

    /// Calls `callback` with the outcome when the future is done (Python's
    /// `add_done_callback`): on the thread that completes it (a process
    /// executor's result-handling thread, a thread executor's worker, or the
    /// canceller's), or at once on this thread if it is already done. A callback
    /// that panics is reported and ignored.
    pub fn add_done_callback(&self, callback: impl FnOnce(&Result<R, TaskError>) + Send + 'static) {
        if let Some(cb) = self.cell.add_callback(Box::new(callback)) {
            if let Some(outcome) = self.cell.outcome.get() {
                run_callback(|| cb(outcome));
            }
        }
    }

    /// Waits for the task and returns its outcome, owned (what `.await` gives,
    /// for a caller that is not async). Once the future is done, this also waits
    /// for its callbacks, which borrow the outcome.
    pub fn into_result(mut self) -> Result<R, TaskError> {
        self.cell.wait(Wait::Forever)?;
        self.take()
    }

    /// The outcome of a done future, moved out. A value needs the cell to itself:
    /// its callbacks have run (it is settled) and its completer, which lets go of
    /// it right after, has done so. An error is cloned.
    pub(crate) fn take(&mut self) -> Result<R, TaskError> {
        self.cell.latch.wait_for(Wait::Forever, || self.cell.is_settled().then_some(()));
        if let Err(e) = self.cell.outcome() {
            // (Also a cancel, whose pool entry may linger until the dispatcher reaches it.)
            return Err(e.clone());
        }
        let mut rounds = 0u32;
        loop {
            if let Some(cell) = Arc::get_mut(&mut self.cell) {
                return cell.outcome.take().unwrap_or(Err(TaskError::AlreadyTaken));
            }
            rounds += 1;
            if rounds < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Waits as `wait` allows for the future to be done.
    pub(crate) fn wait(&self, wait: Wait) -> Result<(), TaskError> {
        self.cell.wait(wait)
    }

    /// Whether it finished with an error (not cancelled): what
    /// `ReturnWhen::FirstException` looks for.
    pub(crate) fn failed(&self) -> bool {
        self.cell.state() == FINISHED && self.cell.outcome().is_err()
    }
}

/// How long `timeout` lets a waiter wait.
pub(crate) fn wait_for(timeout: Option<Duration>) -> Wait {
    timeout.map_or(Wait::Forever, Wait::timeout)
}

// Nothing in a TaskFuture is pinned: `poll` moves nothing out of a pinned place.
impl<R> Unpin for TaskFuture<R> {}

impl<R> std::future::Future for TaskFuture<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.get_mut();
        if !me.cell.is_settled() {
            let mut slot = lock(&me.cell.slot);
            // Checked again under the lock: the completer takes the waker under it.
            if !me.cell.is_settled() {
                match &mut slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    w => *w = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        }
        Poll::Ready(me.take())
    }
}

impl<R> PartialEq for TaskFuture<R> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.cell, &other.cell)
    }
}

impl<R> Eq for TaskFuture<R> {}

impl<R> Hash for TaskFuture<R> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.cell), state);
    }
}

impl<R> fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.cell.state() {
            PENDING => "pending",
            RUNNING | COMPLETING => "running",
            FINISHED => "finished",
            _ => "cancelled",
        };
        f.debug_struct("TaskFuture").field("state", &state).finish()
    }
}

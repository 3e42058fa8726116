//! Waiting on many futures at once: [`as_completed`] (an iterator in completion
//! order) and [`wait`] (until the first, the first failure, or all are done).
//!
//! Both register a board with each future not yet done; a future pushes its index
//! there when it completes, so a waiter sleeps until something finished instead of
//! polling. The board is unregistered when the waiter ends, so waiting in a loop on
//! the same long-running futures does not pile up registrations.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use super::future::{wait_for, Board, TaskFuture};
use crate::pool::TaskError;
use crate::sync::wait::Wait;

/// The futures, each once (Python takes a set), in the order given.
fn distinct<'a, R>(futures: impl IntoIterator<Item = &'a TaskFuture<R>>) -> Vec<&'a TaskFuture<R>>
where
    R: 'a,
{
    let futures = futures.into_iter();
    let mut seen: HashSet<usize, BuildHasherDefault<AddressHasher>> =
        HashSet::with_capacity_and_hasher(futures.size_hint().0, Default::default());
    futures.filter(|f| seen.insert(Arc::as_ptr(f.cell()) as usize)).collect()
}

/// Hashes an address (of a future's cell) with one multiplication: addresses are
/// distinct and not chosen by an adversary, and SipHash cost a twentieth of an
/// `as_completed` over 20 000 futures.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Registers `board` with every future; the indices of those already done.
fn observe_all<R>(futures: &[&TaskFuture<R>], board: &Arc<Board>) -> Vec<usize> {
    (0..futures.len()).filter(|&i| futures[i].cell().observe(board, i)).collect()
}

/// The futures as they complete (Python's `as_completed`): those already done
/// first, then each as it finishes. With a `timeout`, an
/// `Err(TaskError::Timeout)` when it runs out before all are done, and then the
/// end.
///
/// ```
/// use shmproc::{as_completed, Executor, ThreadPoolExecutor};
/// let ex = ThreadPoolExecutor::new(2);
/// let futures: Vec<_> = (0..4u64).map(|i| ex.submit(|x: u64| x * 10, i).unwrap()).collect();
/// let mut total = 0;
/// for f in as_completed(&futures, None) {
///     total += f?.result(None)?;
/// }
/// assert_eq!(total, 60);
/// # Ok::<(), shmproc::TaskError>(())
/// ```
pub fn as_completed<'a, R>(
    futures: impl IntoIterator<Item = &'a TaskFuture<R>>,
    timeout: Option<Duration>,
) -> AsCompleted<'a, R>
where
    R: 'a,
{
    let futures = distinct(futures);
    let board = Arc::new(Board::default());
    let done = observe_all(&futures, &board);
    let (yielded, left) = (vec![false; futures.len()], futures.len());
    AsCompleted { futures, board, ready: done.into(), yielded, left, wait: wait_for(timeout), timed_out: false }
}

/// The iterator of [`as_completed`].
///
/// ```
/// use shmproc::{as_completed, ThreadPoolExecutor};
/// use std::time::Duration;
///
/// let ex = ThreadPoolExecutor::new(2);
/// let futures: Vec<_> = (1..=3u32).map(|i| ex.submit(move |x: u32| x * i, 10).unwrap()).collect();
/// let mut seen = Vec::new();
/// // In the order they finish; an `Err(TaskError::Timeout)` ends it if time runs out.
/// for f in as_completed(&futures, Some(Duration::from_secs(10))) {
///     seen.push(*f?.result(None)?);
/// }
/// seen.sort();
/// assert_eq!(seen, [10, 20, 30]);
/// # Ok::<(), shmproc::TaskError>(())
/// ```
pub struct AsCompleted<'a, R> {
    futures: Vec<&'a TaskFuture<R>>,
    board: Arc<Board>,
    /// Done before the iterator began, not yet yielded.
    ready: std::collections::VecDeque<usize>,
    yielded: Vec<bool>,
    left: usize,
    wait: Wait,
    timed_out: bool,
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = Result<&'a TaskFuture<R>, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.timed_out {
            return None;
        }
        loop {
            let index = match self.ready.pop_front() {
                Some(i) => i,
                None => {
                    if !self.board.take(self.wait, &mut self.ready) {
                        self.timed_out = true;
                        return Some(Err(TaskError::Timeout));
                    }
                    continue;
                }
            };
            if index < self.futures.len() && !std::mem::replace(&mut self.yielded[index], true) {
                self.left -= 1;
                return Some(Ok(self.futures[index]));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left + 1))
    }
}

impl<R> Drop for AsCompleted<'_, R> {
    fn drop(&mut self) {
        for (i, f) in self.futures.iter().enumerate() {
            if !self.yielded[i] {
                f.cell().unobserve(&self.board);
            }
        }
    }
}

impl<R> fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted").field("futures", &self.futures.len()).field("left", &self.left).finish()
    }
}

/// When [`wait`] returns (Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`,
/// `ALL_COMPLETED`).
///
/// ```
/// use shmproc::{wait, Event, ReturnWhen, ThreadPoolExecutor};
///
/// let ex = ThreadPoolExecutor::new(2);
/// let gate = Event::new()?;
/// let held = gate.clone();
/// let slow = ex.submit(move |x: u32| { held.wait(); x }, 1).unwrap();
/// let quick = ex.submit(|x: u32| x, 2).unwrap();
/// let (done, not_done) = wait([&slow, &quick], None, ReturnWhen::FirstCompleted);
/// assert_eq!((done.len(), not_done.len()), (1, 1));
/// assert_eq!(*done[0].result(None)?, 2);
/// gate.set(); // or dropping the executor would wait for `slow` forever
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnWhen {
    /// As soon as any future is done (or cancelled).
    FirstCompleted,
    /// As soon as any future finishes with an error; all done if none does.
    FirstException,
    /// When every future is done.
    #[default]
    AllCompleted,
}

/// Waits at most `timeout` (`None`: as long as it takes) until `return_when`
/// holds (Python's `concurrent.futures.wait`); returns the futures `(done,
/// not_done)`, each once, in the order given.
///
/// ```
/// use shmproc::{wait, Executor, ReturnWhen, ThreadPoolExecutor};
/// let ex = ThreadPoolExecutor::new(2);
/// let futures: Vec<_> = (0..4u64).map(|i| ex.submit(|x: u64| x + 1, i).unwrap()).collect();
/// let (done, not_done) = wait(&futures, None, ReturnWhen::AllCompleted);
/// assert_eq!((done.len(), not_done.len()), (4, 0));
/// # Ok::<(), shmproc::TaskError>(())
/// ```
#[allow(clippy::type_complexity)]
pub fn wait<'a, R>(
    futures: impl IntoIterator<Item = &'a TaskFuture<R>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> (Vec<&'a TaskFuture<R>>, Vec<&'a TaskFuture<R>>)
where
    R: 'a,
{
    let futures = distinct(futures);
    let board = Arc::new(Board::default());
    let already = observe_all(&futures, &board);
    let mut done_count = already.len();
    let mut any_failed = already.iter().any(|&i| futures[i].failed());
    let deadline = wait_for(timeout);
    let mut finished = std::collections::VecDeque::new();
    loop {
        let satisfied = match return_when {
            ReturnWhen::FirstCompleted => done_count > 0,
            ReturnWhen::FirstException => any_failed || done_count == futures.len(),
            ReturnWhen::AllCompleted => done_count == futures.len(),
        };
        if satisfied {
            break;
        }
        if !board.take(deadline, &mut finished) {
            break;
        }
        for i in finished.drain(..) {
            done_count += 1;
            any_failed |= futures.get(i).is_some_and(|f| f.failed());
        }
    }
    for f in &futures {
        f.cell().unobserve(&board);
    }
    futures.into_iter().partition(|f| f.done())
}

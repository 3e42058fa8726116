//! The pool's engine in the parent: who has which task, the backlog, and the
//! result-handling thread that reads every reply, refills workers, runs callbacks,
//! and replaces workers that die.
//!
//! ## Who has which task
//! Each worker has a task ring of its own, fed only by the parent, and the parent
//! records, per worker, the ids it put there in order. A worker takes its tasks in
//! that order and replies in that order, so when a worker dies the parent knows
//! exactly what it held: the parent first reads every reply already in the result
//! ring, then takes back the messages still in the dead worker's ring (they never
//! started: they go back to the front of the backlog), and what is left on the
//! worker's list is what it was running (those tasks fail with
//! `TaskError::WorkerDied`). Nothing is guessed, and nothing is run twice.
//!
//! ## How much each worker holds
//! A worker's ring holds at most `cap` chunks: enough that a worker running tiny
//! tasks never waits for the parent (up to [`MAX_AHEAD`]), few enough that a worker
//! running long ones does not hoard work another worker could do (about
//! [`QUEUED_WORK`] of queued work, judged from the time the worker reports for each
//! chunk). The rest waits in the backlog, in the parent's memory, which is why
//! `apply_async` never blocks.
//!
//! ## Merged messages
//! Small chunks of the same function travel several to a message when they would
//! otherwise go one by one: a chunk submitted while others wait joins the last one
//! waiting ([`Dispatch::merge`]), and an `imap` refill is cut into a few messages
//! per worker ([`Dispatch::plan_messages`]), each under about [`MERGE_WORK`] of
//! work. Each chunk stays a part of its own (its sink, its task range, where its
//! arguments start), so a reply's items go back to their own sinks. A worker notes
//! in the pool's board ([`task::Progress`]) the chunk it took and how many of its
//! items have begun: when it dies, the parts that began fail and the rest go back
//! to the backlog as a message of their own, so that a merged message fails no task
//! that had not begun, and runs none twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::{PoolError, TaskError};
use super::result::Sink;
use super::task::{self, Items, Reply, RunnerRef, TagKey};
use super::worker::{Shortage, TAKE_PATIENCE};
use crate::channel::{ChannelFault, Queue, RecvTimeoutError};
use crate::process::{Process, ProcessError};
use crate::shared::RawArray;
use crate::sync::wait::Wait;
use crate::sys;

/// Worker starts that are to fail on purpose, process-wide (see
/// [`crate::testing::fail_worker_starts`]).
static STARTS_TO_FAIL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub(crate) fn fail_worker_starts(n: u32) {
    STARTS_TO_FAIL.store(n, Ordering::Relaxed);
}

/// How often the result-handling thread looks at its workers' exit status.
const CHECK_EVERY: Duration = Duration::from_millis(20);
/// How long a closed pool's result thread waits at a time for workers told to exit.
const EXIT_WAIT: Duration = Duration::from_millis(5);
/// The most chunks queued in one worker's ring.
const MAX_AHEAD: usize = 1024;
/// About how much work (by the workers' own timing) a worker's ring holds.
const QUEUED_WORK: u64 = 200_000; // ns
/// Before the first reply: assume a millisecond a chunk (queue little).
const FIRST_GUESS: u64 = 1_000_000; // ns
/// A worker's task ring; larger messages travel in side segments.
pub(crate) const TASK_RING: usize = 256 << 10;
/// The pool's result ring.
pub(crate) const RESULT_RING: usize = 512 << 10;
/// Workers that die before they are ready, one after another, before the pool
/// gives up starting them (an initializer that crashes the process every time).
const STARTUP_DEATHS: u32 = 3;
/// Sinks waiting for a submitter to free them, at most (then the result-handling
/// thread frees them itself).
const GRAVEYARD_MAX: usize = 1 << 16;
/// Backlog buffers kept for reuse, at most.
const SPARE_MAX: usize = 4096;
/// Rests of merged chunks kept for reuse, at most.
const SPARE_MERGED_MAX: usize = 64;
/// Starts that fail in a row, with no worker left, before the pool gives up...
const START_FAILURES: u32 = 5;
/// ... and for at least this long (a moment out of descriptors or processes, all
/// workers dying at once, must not break the pool).
const START_FAILING_FOR: Duration = Duration::from_secs(1);
/// Workers that die idle with one chunk's message first in their rings (taking a
/// message they cannot open, say) before the parent fails it rather than send it
/// again.
const HEAD_DEATHS: u32 = 3;
/// How long the result-handling thread waits for descriptors or memory to open a
/// large reply before it gives up on the pool (its tasks fail, as with a damaged
/// ring): a shortage that lasts would otherwise leave every `get` waiting.
const REPLY_SHORTAGE_PATIENCE: Duration = Duration::from_secs(10);
/// About how much work (by the workers' timing of a task) waiting chunks merged
/// into one message may hold (see `Dispatch::merge`): small next to
/// [`QUEUED_WORK`], so that workers still share the work out evenly.
const MERGE_WORK: u64 = QUEUED_WORK / 8; // ns
/// The most tasks in one merged message.
const MERGE_TASKS: u64 = 1024;
/// A worker holding fewer chunks than this may run out of work before the
/// result-handling thread refills it: a chunk goes to it at once rather than wait
/// to be merged with the next ones.
const STARVING: usize = 2;
/// The longest merged message: a backlog buffer that [`SPARE_MAX`] keeps for reuse,
/// far below a message that needs a side segment.
const MERGE_BYTES: usize = 4096;

const RUNNING: u8 = 0;
const CLOSED: u8 = 1;
const TERMINATING: u8 = 2;
const DONE: u8 = 3;

/// Starts worker process number `slot` on the given rings.
pub(crate) type Starter = Box<
    dyn Fn(u32, Queue<Vec<u8>>, Queue<Vec<u8>>, TagKey, u64, RawArray<u64>) -> Result<Process, ProcessError> + Send,
>;

/// One chunk in a batch for [`Shared::submit_many`]: its first task's index, its
/// task count, and its message's length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) base: usize,
    pub(crate) count: u32,
    pub(crate) len: usize,
}

/// What the pool's handles and its result-handling thread share.
pub(crate) struct Shared {
    dispatch: Mutex<Dispatch>,
    pub(crate) results: Queue<Vec<u8>>,
    /// Where each worker notes how far into its chunk it is (see [`task::Progress`]).
    board: RawArray<u64>,
    pub(crate) key: TagKey,
    state: AtomicU8,
    deferred: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// Whether `deferred` may hold something (read on every reply, locked rarely).
    has_deferred: std::sync::atomic::AtomicBool,
    runners: Mutex<Vec<(usize, Option<task::TaggedRunner>)>>,
    handler: Mutex<Option<std::thread::JoinHandle<()>>>,
    handler_id: std::sync::OnceLock<std::thread::ThreadId>,
}

struct Dispatch {
    workers: Vec<Option<Worker>>,
    backlog: VecDeque<Queued>,
    /// Pending chunks by id: `pending[id - first_id]`.
    pending: VecDeque<Option<Pending>>,
    first_id: u64,
    avg_chunk_ns: u64,
    /// The estimate of one task's time (a chunk's time over its count).
    avg_task_ns: u64,
    /// Timed replies seen so far (see [`next_estimate`]).
    samples: u32,
    max_tasks: u64,
    /// Why the pool serves no more (every task fails with this), if it is broken.
    broken: Option<TaskError>,
    /// Python's `BrokenProcessPool`: a worker dying abruptly breaks the pool.
    break_on_death: bool,
    /// The first workers are still starting: each holds one chunk at most, so that
    /// tasks wait for a worker to come rather than queue behind another's.
    launching: bool,
    startup_deaths: u32,
    /// The current run of failed starts with no worker serving: how many, and
    /// since when.
    start_failures: Option<(u32, Instant)>,
    /// Chunks no ring would take (a fault, or no file for a large message): failed
    /// by the result-handling thread, outside the lock.
    undeliverable: Vec<(Pending, TaskError)>,
    /// Rings of workers gone, drained (and so their large messages' files
    /// unlinked) when the pool ends.
    dead_rings: Vec<Queue<Vec<u8>>>,
    /// Sinks of finished tasks, dropped by the next submitter rather than by the
    /// result-handling thread. The submitting thread allocated them (a task's
    /// cell, its callback); freed there, they go back to that thread's malloc
    /// arena without a lock that the two threads would fight over (glibc's
    /// arena lock was a fifth of `apply_async`'s time, with futex waits).
    graveyard: Vec<Arc<dyn Sink>>,
    /// Buffers of backlog entries already sent, reused for the next ones: no
    /// allocation by a submitter, no free by the result thread.
    spare: Vec<Vec<u8>>,
    /// Emptied rests of merged chunks, reused for the next ones (for the same
    /// reason, and a list of parts of a kilobyte or more would have glibc
    /// consolidate its fast bins, where the tasks' cells are). The boxes
    /// themselves go round: neither allocated by a submitter nor freed by the
    /// result thread.
    #[allow(clippy::vec_box)]
    spare_merged: Vec<Box<Merged>>,
}

struct Worker {
    process: Process,
    tasks: Queue<Vec<u8>>,
    /// Ids put in its ring, oldest first: the first is the one it runs.
    held: VecDeque<u64>,
    sent: u64,
    ready: bool,
    /// It said its last reply was its last (max_tasks_per_child): send no more.
    retiring: bool,
    closed: bool,
}

/// Where a planned message's bytes are (see [`Dispatch::plan_messages`]): the
/// chunk's own, or a merged buffer.
#[derive(Clone, Copy)]
enum Source {
    Chunk(usize),
    Merged(usize),
}

/// What became of a put into a worker's ring.
enum Sent {
    Yes,
    NoRoom,
    /// The message could not be put at all (its side segment, a damaged ring).
    Failed(String),
    /// Its task was cancelled (or is no longer pending): drop it.
    Cancelled,
}

struct Queued {
    id: u64,
    bytes: Vec<u8>,
}

/// Tasks `base..base + count` of one sink, run as part of a chunk.
struct Part {
    sink: Arc<dyn Sink>,
    base: usize,
    count: u32,
    /// Where its arguments start among the chunk's (a merged chunk's part; a
    /// merged message is at most [`MERGE_BYTES`]).
    at: u32,
}

/// A chunk handed to a worker or waiting to be: its parts in the order of its
/// message's tasks. It has more than one when chunks were merged while they
/// waited (see [`Dispatch::merge`]); their sinks are then all mergeable.
struct Pending {
    first: Part,
    /// The chunk's task count, all parts together (bounded by [`MERGE_TASKS`]).
    count: u32,
    /// A merged chunk's other parts and message, apart: most chunks are not
    /// merged, and a backlog of them is long.
    merged: Option<Box<Merged>>,
    /// Workers that died idle with this chunk's message first in their rings
    /// (taking it, see [`HEAD_DEATHS`]); in the entry's padding.
    head_deaths: u8,
}

/// The rest of a merged chunk.
#[derive(Default)]
struct Merged {
    more: Vec<Part>,
    /// Its message, kept while a worker has it: should the worker die, the parts
    /// it had not begun go back to the backlog (see [`Handler::on_worker_exit`]).
    message: Vec<u8>,
}

impl Pending {
    fn one(sink: Arc<dyn Sink>, base: usize, count: u32) -> Pending {
        Pending::of(Part { sink, base, count, at: 0 })
    }

    fn of(first: Part) -> Pending {
        Pending { count: first.count, first, merged: None, head_deaths: 0 }
    }

    fn more(&self) -> &[Part] {
        self.merged.as_ref().map_or(&[], |m| &m.more)
    }

    fn parts(&self) -> impl Iterator<Item = &Part> {
        std::iter::once(&self.first).chain(self.more())
    }

    fn into_parts(self) -> impl Iterator<Item = Part> {
        std::iter::once(self.first).chain(self.merged.into_iter().flat_map(|m| m.more))
    }

    /// Claims the chunk for a worker (see [`Sink::start`]); merged parts' sinks
    /// always agree, so only the first can refuse.
    fn start(&self) -> bool {
        self.first.sink.start()
    }

    fn unstart(&self) {
        self.first.sink.unstart();
    }

    fn fail(&self, error: &TaskError) {
        for p in self.parts() {
            p.sink.fail(p.base, p.count, error);
        }
    }

    /// Splits a chunk whose first `began` items began (in a worker that died)
    /// into the parts that began, and, for a merged chunk, the parts that did not
    /// with their own message. A part began if its first item did; a chunk that
    /// was not merged began whole.
    fn split_begun(self, began: u64) -> (Pending, Option<(Pending, Vec<u8>)>) {
        let mut items = u64::from(self.first.count);
        let cut = self.more().iter().position(|p| {
            let begun = items < began;
            items += u64::from(p.count);
            !begun
        });
        let Some(cut) = cut else { return (self, None) };
        let Pending { first, merged, .. } = self;
        let Merged { mut more, message } = *merged.expect("a chunk with more parts is merged");
        let mut rest = more.split_off(cut);
        let from = rest[0].at as usize;
        let Some(args) = message.get(task::TASK_HEADER + from..) else {
            // No message kept (it never reached a worker): it began whole.
            more.append(&mut rest);
            return (Pending::with_parts(first, more), None);
        };
        let mut bytes = Vec::with_capacity(task::TASK_HEADER + args.len());
        bytes.extend_from_slice(&message[..task::TASK_HEADER]);
        bytes.extend_from_slice(args);
        for p in &mut rest {
            p.at -= from as u32;
        }
        let mut rest = rest.into_iter();
        let rest_first = rest.next().map(|p| Pending::with_parts(p, rest.collect()));
        let rest = rest_first.map(|p| {
            task::finish_task(&mut bytes, p.count);
            (p, bytes)
        });
        (Pending::with_parts(first, more), rest)
    }

    fn with_parts(first: Part, more: Vec<Part>) -> Pending {
        let count = more.iter().fold(first.count, |n, p| n.saturating_add(p.count));
        let merged = (!more.is_empty()).then(|| Box::new(Merged { more, message: Vec::new() }));
        Pending { first, count, merged, head_deaths: 0 }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatch {
    fn pending_mut(&mut self, id: u64) -> Option<&mut Option<Pending>> {
        let at = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.pending.get_mut(at)
    }

    /// Puts the rest of a chunk that a worker never began (see
    /// [`Pending::split_begun`]) back at the front of the backlog, as a chunk of
    /// its own.
    fn requeue_first(&mut self, rest: Option<(Pending, Vec<u8>)>) {
        if let Some((rest, mut bytes)) = rest {
            let id = self.insert(rest);
            task::set_task_id(&mut bytes, id);
            self.backlog.push_front(Queued { id, bytes });
        }
    }

    fn insert(&mut self, pending: Pending) -> u64 {
        let id = self.first_id + self.pending.len() as u64;
        self.pending.push_back(Some(pending));
        id
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending_mut(id)?.take();
        while matches!(self.pending.front(), Some(None)) {
            self.pending.pop_front();
            self.first_id += 1;
        }
        p
    }

    /// Counts a worker that died idle, taking chunk `id`'s message from its ring:
    /// `Some(id)` when that makes [`HEAD_DEATHS`] for it (it is then failed, not
    /// sent again). Counted per chunk: two such messages taken by two workers in
    /// turn each get their count.
    fn died_taking(&mut self, id: u64) -> Option<u64> {
        let p = self.pending_mut(id)?.as_mut()?;
        p.head_deaths = p.head_deaths.saturating_add(1);
        (u32::from(p.head_deaths) >= HEAD_DEATHS).then_some(id)
    }

    fn has_work(&self) -> bool {
        self.pending.iter().any(Option::is_some)
    }

    /// How many chunks worker `w` may hold now.
    fn cap(&self, w: &Worker) -> usize {
        if w.retiring || w.closed {
            return 0;
        }
        if self.launching {
            return 1;
        }
        let by_time = ahead_by_time(self.avg_chunk_ns);
        if self.max_tasks == 0 {
            return by_time;
        }
        by_time.min(self.max_tasks.saturating_sub(w.sent) as usize)
    }

    /// The worker with the most room, if any has room.
    fn roomiest(&self) -> Option<usize> {
        self.roomiest_within(usize::MAX)
    }

    /// The worker with the most room, if any has room and holds fewer than
    /// `limit` chunks.
    fn roomiest_within(&self, limit: usize) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, w) in self.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            let room = self.cap(w).min(limit).saturating_sub(w.held.len());
            if room > 0 && best.is_none_or(|(_, r)| room > r) {
                best = Some((i, room));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Puts `bytes` (task `id`) into worker `i`'s ring if it fits now.
    fn try_send(&mut self, i: usize, id: u64, bytes: &[u8]) -> Sent {
        let Some(w) = self.workers[i].as_mut() else { return Sent::NoRoom };
        let at = id.checked_sub(self.first_id).and_then(|at| usize::try_from(at).ok());
        let Some(Some(p)) = at.and_then(|at| self.pending.get(at)) else { return Sent::Cancelled };
        // Claimed first, so that a cancel either comes before (and it is not sent) or
        // finds it started.
        if !p.start() {
            return Sent::Cancelled;
        }
        let sent = match w.tasks.put_bytes_with(bytes, Wait::Never) {
            Ok(()) => {
                w.held.push_back(id);
                w.sent += 1;
                return Sent::Yes;
            }
            Err(crate::SendTimeoutError::Timeout(())) | Err(crate::SendTimeoutError::Disconnected(())) => Sent::NoRoom,
            Err(crate::SendTimeoutError::Failed { fault, .. }) => Sent::Failed(fault.to_string()),
        };
        p.unstart();
        sent
    }

    /// Puts as many of `run` (task ids and their messages, in order) into worker
    /// `i`'s ring as it has room for now, under one hold of the ring's lock; how
    /// many, always the first ones. It stops at a chunk that was cancelled (the
    /// chunk-by-chunk path deals with that one).
    fn send_run(&mut self, i: usize, run: &[(u64, &[u8])]) -> Result<usize, String> {
        let Some(w) = self.workers[i].as_ref() else { return Ok(0) };
        let room = self.cap(w).saturating_sub(w.held.len()).min(run.len());
        let mut claimed = 0;
        for &(id, _) in &run[..room] {
            // Claimed first, as in `try_send`.
            match self.pending_mut(id) {
                Some(Some(p)) if p.start() => claimed += 1,
                _ => break,
            }
        }
        let Some(w) = self.workers[i].as_mut().filter(|_| claimed > 0) else { return Ok(0) };
        let put = w.tasks.put_bytes_many_now(run[..claimed].iter().map(|&(_, bytes)| bytes));
        let n = *put.as_ref().unwrap_or(&0);
        w.held.extend(run[..n].iter().map(|&(id, _)| id));
        w.sent += n as u64;
        for &(id, _) in &run[n..claimed] {
            if let Some(Some(p)) = self.pending_mut(id) {
                p.unstart();
            }
        }
        match put {
            Err(crate::SendTimeoutError::Failed { fault, .. }) => Err(fault.to_string()),
            _ => Ok(n),
        }
    }

    /// How many workers could take a chunk now (at least 1, for dividing by).
    fn workers_with_room(&self) -> usize {
        let with_room = |w: &&Worker| w.held.len() < self.cap(w);
        self.workers.iter().flatten().filter(with_room).count().max(1)
    }

    /// Appends a chunk's tasks to the last chunk waiting in the backlog if both
    /// run the same function, their sinks allow it ([`Sink::mergeable`]), and the
    /// whole stays small ([`MERGE_WORK`], [`MERGE_TASKS`], [`MERGE_BYTES`]); gives
    /// the part back otherwise. Tiny tasks submitted faster than the workers
    /// take them (a loop of `apply_async`) then cost the workers and the
    /// result-handling thread one message, one reply and one refill per merged
    /// chunk instead of one per task. Not with `max_tasks_per_child`, which counts
    /// a worker's messages.
    fn merge(&mut self, part: Part, bytes: &[u8]) -> Result<(), Part> {
        let budget = self.merge_budget(&*part.sink);
        if u64::from(part.count) >= budget {
            return Err(part);
        }
        let Some(last) = self.backlog.back_mut() else { return Err(part) };
        let at = last.id.checked_sub(self.first_id).and_then(|at| usize::try_from(at).ok());
        let Some(Some(p)) = at.and_then(|at| self.pending.get_mut(at)) else { return Err(part) };
        let args = bytes.get(task::TASK_HEADER..).unwrap_or_default();
        let count = u64::from(p.count) + u64::from(part.count);
        let fits = p.first.sink.mergeable()
            && count <= budget
            && last.bytes.len() + args.len() <= MERGE_BYTES
            && task::same_runner(&last.bytes, bytes);
        if !fits {
            return Err(part);
        }
        last.bytes.reserve_exact(MERGE_BYTES.saturating_sub(last.bytes.len()));
        let at = last.bytes.len() - task::TASK_HEADER;
        last.bytes.extend_from_slice(args);
        task::finish_task(&mut last.bytes, count as u32);
        p.count = count as u32;
        let merged = p.merged.get_or_insert_with(|| self.spare_merged.pop().unwrap_or_default());
        // Each chunk stays a part of its own (should a worker die in the merged
        // chunk, each part either began or did not), but for a map's next one.
        let tail = merged.more.last_mut().unwrap_or(&mut p.first);
        if Arc::ptr_eq(&tail.sink, &part.sink)
            && tail.sink.all_or_nothing()
            && tail.base + tail.count as usize == part.base
        {
            tail.count += part.count;
        } else {
            merged.more.push(Part { at: at as u32, ..part });
        }
        Ok(())
    }

    /// The messages for a batch of chunks of one sink (their messages in
    /// `slices`, their task ranges in `spans`), each chunk's pending entry
    /// inserted: runs of consecutive small chunks merged into one message each
    /// (as [`merge`](Dispatch::merge) does in the backlog), no more tasks to one
    /// than lets each worker have a couple of the batch's messages. Each message's
    /// id and where its bytes are: a chunk's own, or one of the merged buffers.
    fn plan_messages(
        &mut self,
        sink: &Arc<dyn Sink>,
        spans: &[Span],
        slices: &mut [&mut [u8]],
    ) -> (Vec<(u64, Source)>, Vec<Vec<u8>>) {
        let tasks: u64 = spans.iter().map(|s| u64::from(s.count)).sum();
        let share = tasks / (2 * self.workers.len().max(1) as u64);
        let limit = self.merge_budget(&**sink).min(share);
        let mut plan = Vec::with_capacity(spans.len());
        let mut merged: Vec<Vec<u8>> = Vec::new();
        let mut k = 0;
        while k < spans.len() {
            let (mut end, mut count, mut bytes) = (k + 1, u64::from(spans[k].count), slices[k].len());
            while end < spans.len()
                && count + u64::from(spans[end].count) <= limit
                && bytes + slices[end].len() - task::TASK_HEADER <= MERGE_BYTES
                && spans[end].base == spans[end - 1].base + spans[end - 1].count as usize
                && task::same_runner(slices[k], slices[end])
            {
                count += u64::from(spans[end].count);
                bytes += slices[end].len() - task::TASK_HEADER;
                end += 1;
            }
            if end == k + 1 {
                let id = self.insert(Pending::one(Arc::clone(sink), spans[k].base, spans[k].count));
                task::set_task_id(slices[k], id);
                plan.push((id, Source::Chunk(k)));
                k = end;
                continue;
            }
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(&slices[k][..task::TASK_HEADER]);
            let mut parts = Vec::with_capacity(end - k);
            for (span, slice) in spans[k..end].iter().zip(&slices[k..end]) {
                let at = buf.len() - task::TASK_HEADER;
                parts.push(Part { sink: Arc::clone(sink), base: span.base, count: span.count, at: at as u32 });
                buf.extend_from_slice(&slice[task::TASK_HEADER..]);
            }
            task::finish_task(&mut buf, count as u32);
            let mut parts = parts.into_iter();
            let first = parts.next().expect("a merged run has chunks");
            let id = self.insert(Pending::with_parts(first, parts.collect()));
            task::set_task_id(&mut buf, id);
            plan.push((id, Source::Merged(merged.len())));
            merged.push(buf);
            k = end;
        }
        (plan, merged)
    }

    /// How many tasks a merged chunk of `sink`'s may hold now (none merge below 2).
    fn merge_budget(&self, sink: &dyn Sink) -> u64 {
        if self.max_tasks != 0 || !sink.mergeable() {
            return 0;
        }
        (MERGE_WORK / self.avg_task_ns.max(1)).min(MERGE_TASKS)
    }

    /// Puts task `id` at the back of the backlog (its message copied into a spare buffer).
    fn queue(&mut self, id: u64, bytes: &[u8]) {
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(bytes);
        self.backlog.push_back(Queued { id, bytes: copy });
    }

    /// Keeps a backlog entry's buffer for the next one (see `spare`).
    fn keep_spare(&mut self, bytes: Vec<u8>) {
        if self.spare.len() < SPARE_MAX && bytes.capacity() <= MERGE_BYTES {
            self.spare.push(bytes);
        }
    }

    /// Cancels every backlog chunk whose sink can be cancelled (an executor's
    /// `shutdown(cancel_futures)`); the sinks to complete, outside the lock.
    fn cancel_backlog(&mut self) -> Vec<Arc<dyn Sink>> {
        let mut cancelled = Vec::new();
        let backlog = std::mem::take(&mut self.backlog);
        for q in backlog {
            // A merged chunk's sinks cannot be cancelled (see `Sink::mergeable`).
            let claimed = self
                .pending_mut(q.id)
                .and_then(|p| p.as_ref())
                .is_some_and(|p| p.merged.is_none() && p.first.sink.claim_cancel());
            if claimed {
                cancelled.extend(self.remove(q.id).map(|p| p.first.sink));
            } else {
                self.backlog.push_back(q);
            }
        }
        cancelled
    }

    /// Moves backlog chunks into worker `i`'s ring while it has room.
    fn refill(&mut self, i: usize) {
        loop {
            let Some(w) = self.workers[i].as_ref() else { return };
            if w.held.len() >= self.cap(w) {
                return;
            }
            let Some(q) = self.backlog.pop_front() else { return };
            match self.try_send(i, q.id, &q.bytes) {
                Sent::Yes => match self.pending_mut(q.id) {
                    Some(Some(Pending { merged: Some(m), .. })) => m.message = q.bytes,
                    // Kept for the next backlog entry, not freed here (see `spare`).
                    _ => self.keep_spare(q.bytes),
                },
                Sent::NoRoom => {
                    self.backlog.push_front(q);
                    return;
                }
                Sent::Failed(why) => {
                    if let Some(p) = self.remove(q.id) {
                        self.undeliverable.push((p, TaskError::Send(why)));
                    }
                }
                Sent::Cancelled => {
                    self.remove(q.id);
                }
            }
        }
    }

    /// Every pending chunk, taken out (the pool stops: they all fail).
    fn take_all(&mut self) -> Vec<Pending> {
        self.backlog.clear();
        for w in self.workers.iter_mut().flatten() {
            w.held.clear();
        }
        self.first_id += self.pending.len() as u64;
        self.pending.drain(..).flatten().collect()
    }
}

/// How many chunks a worker's ring may hold when a chunk takes `avg_ns`.
fn ahead_by_time(avg_ns: u64) -> usize {
    (QUEUED_WORK / avg_ns.max(1)).clamp(2, MAX_AHEAD as u64) as usize
}

/// Replies whose timing moves the estimate fast towards shorter chunks (see
/// [`next_estimate`]).
const SETTLING: u32 = 8;

/// The estimate of a chunk's time after a worker reported `sample` ns, the
/// estimate having taken `seen` samples so far. It moves a quarter of the way to
/// each sample, except that over the first [`SETTLING`] samples it falls three
/// quarters of the way to a shorter one: a fresh pool's guess of long chunks (two a
/// ring) then gives way within a few replies of tiny tasks (a quarter of the way
/// took some 25 replies, while the backlog grew by thousands), and later it stays
/// an average rather than leaning towards the short chunks, which would queue
/// more work ahead of a worker than [`QUEUED_WORK`].
fn next_estimate(avg_ns: u64, sample: u64, seen: u32) -> u64 {
    if sample < avg_ns && seen < SETTLING {
        avg_ns.saturating_add(sample.saturating_mul(3)) / 4
    } else {
        avg_ns.saturating_mul(3).saturating_add(sample) / 4
    }
}

/// What a model of merged chunks sets and reads (see `pool::model`).
#[cfg(test)]
impl Shared {
    /// Sets the estimates of a task's time (tiny: waiting chunks merge) and of a
    /// chunk's (a millisecond: each worker holds two chunks, so that neither a
    /// refill nor the periodic look sends a waiting chunk before the model says),
    /// as settled replies would.
    pub(crate) fn assume_tiny_tasks_in_long_chunks(&self) {
        let mut d = lock(&self.dispatch);
        d.avg_task_ns = 100;
        d.avg_chunk_ns = 1_000_000;
        d.samples = SETTLING;
    }

    /// The task count of each chunk waiting in the backlog, in order.
    pub(crate) fn backlog_counts(&self) -> Vec<u32> {
        let mut d = lock(&self.dispatch);
        let ids: Vec<u64> = d.backlog.iter().map(|q| q.id).collect();
        ids.into_iter().filter_map(|id| d.pending_mut(id).and_then(|p| p.as_ref()).map(|p| p.count)).collect()
    }
}

thread_local! {
    /// A submitting thread's emptied graveyard buffer, swapped for the pool's
    /// full one (see [`exhume`]).
    static GRAVES: std::cell::Cell<Vec<Arc<dyn Sink>>> = const { std::cell::Cell::new(Vec::new()) };
    /// The runner [`Shared::runner`] found last on this thread, with the pool's key
    /// and the runner's address it was for.
    static LAST_RUNNER: std::cell::Cell<Option<(TagKey, usize, task::TaggedRunner)>> =
        const { std::cell::Cell::new(None) };
}

/// The graveyard's buffer of the most sinks a submitting thread keeps between
/// submissions.
const GRAVES_KEPT: usize = 1024;

/// Takes the pool's graveyard (see `Dispatch::graveyard`), leaving this thread's
/// empty buffer in its place: buffers go back and forth, neither allocated nor
/// freed (a freed buffer of a kilobyte or more has glibc consolidate its fast
/// bins, where the tasks' cells are).
fn exhume(d: &mut Dispatch) -> Vec<Arc<dyn Sink>> {
    let empty = GRAVES.try_with(std::cell::Cell::take).unwrap_or_default();
    std::mem::replace(&mut d.graveyard, empty)
}

/// Frees the sinks [`exhume`] took, here, and keeps their buffer.
fn rebury(mut graves: Vec<Arc<dyn Sink>>) {
    graves.clear();
    if graves.capacity() <= GRAVES_KEPT {
        let _ = GRAVES.try_with(|g| g.set(graves));
    }
}

fn fail_all(pending: Vec<Pending>, error: &TaskError) {
    for p in pending {
        p.fail(error);
    }
}

impl Shared {
    pub(crate) fn new(
        results: Queue<Vec<u8>>,
        board: RawArray<u64>,
        key: TagKey,
        processes: usize,
        max_tasks: u64,
        break_on_death: bool,
    ) -> Shared {
        Shared {
            dispatch: Mutex::new(Dispatch {
                workers: (0..processes).map(|_| None).collect(),
                backlog: VecDeque::new(),
                pending: VecDeque::new(),
                first_id: 0,
                avg_chunk_ns: FIRST_GUESS,
                avg_task_ns: FIRST_GUESS,
                samples: 0,
                max_tasks,
                broken: None,
                break_on_death,
                launching: true,
                startup_deaths: 0,
                start_failures: None,
                undeliverable: Vec::new(),
                dead_rings: Vec::new(),
                graveyard: Vec::new(),
                spare: Vec::new(),
                spare_merged: Vec::new(),
            }),
            results,
            board,
            key,
            state: AtomicU8::new(RUNNING),
            deferred: Mutex::new(Vec::new()),
            has_deferred: std::sync::atomic::AtomicBool::new(false),
            runners: Mutex::new(Vec::new()),
            handler: Mutex::new(None),
            handler_id: std::sync::OnceLock::new(),
        }
    }

    /// The runner of task type `C` as the workers can find it (cached: finding
    /// out whether a function lies in the executable asks the loader).
    pub(crate) fn runner<C: task::Invoke>(&self) -> Result<task::TaggedRunner, TaskError> {
        let addr = task::runner_address::<C>();
        // A submitting loop asks for the same runner of the same pool each time: the
        // last answer, kept per thread, spares it the lock (a runner's tag depends
        // only on its address and the pool's key).
        let cached = LAST_RUNNER.with(|last| last.get()).filter(|&(key, a, _)| key == self.key && a == addr);
        if let Some((_, _, r)) = cached {
            return Ok(r);
        }
        let found = self.look_up_runner(addr);
        if let Ok(r) = found {
            LAST_RUNNER.with(|last| last.set(Some((self.key, addr, r))));
        }
        found
    }

    fn look_up_runner(&self, addr: usize) -> Result<task::TaggedRunner, TaskError> {
        let mut runners = lock(&self.runners);
        let found = match runners.iter().find(|(a, _)| *a == addr) {
            Some((_, r)) => *r,
            None => {
                let r = RunnerRef::at(addr).map(|r| r.tagged(self.key));
                runners.push((addr, r));
                r
            }
        };
        found.ok_or_else(|| {
            TaskError::Encode(
                "the task is not in the executable (a shared library?); pool workers cannot find it".into(),
            )
        })
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUNNING
    }

    /// `Ok` while the pool takes tasks; else the error a submission gets.
    pub(crate) fn accepting(&self) -> Result<(), TaskError> {
        if !self.is_running() {
            return Err(TaskError::PoolClosed);
        }
        self.refusal(&lock(&self.dispatch)).map_or(Ok(()), Err)
    }

    /// Why a submission is refused now (the pool closed or broken), under the lock.
    fn refusal(&self, d: &Dispatch) -> Option<TaskError> {
        if self.state.load(Ordering::Acquire) != RUNNING {
            return Some(TaskError::PoolClosed);
        }
        d.broken.clone()
    }

    /// Submits a chunk whose message is in `bytes` (the id is filled in here).
    pub(crate) fn submit(
        &self,
        sink: Arc<dyn Sink>,
        base: usize,
        count: u32,
        bytes: &mut [u8],
    ) -> Result<(), TaskError> {
        let mut d = lock(&self.dispatch);
        let graves = exhume(&mut d);
        let out = self.submit_locked(&mut d, sink, base, count, bytes);
        drop(d);
        rebury(graves);
        out
    }

    /// Submits several chunks of one sink under one lock (an imap's refill):
    /// `chunks` holds their messages back to back, `spans` each one's task range
    /// and length. They go to the workers' rings in runs, one hold of a ring's lock
    /// for each run, shared out among the workers with room; what no ring takes now
    /// waits in the backlog. The chunks that failed, with why.
    pub(crate) fn submit_many(
        &self,
        sink: &Arc<dyn Sink>,
        chunks: &mut [u8],
        spans: &[Span],
    ) -> Vec<(Span, TaskError)> {
        let mut d = lock(&self.dispatch);
        let graves = exhume(&mut d);
        if let Some(e) = self.refusal(&d) {
            drop(d);
            rebury(graves);
            return spans.iter().map(|span| (*span, e.clone())).collect();
        }
        let mut slices: Vec<&mut [u8]> = Vec::with_capacity(spans.len());
        let mut rest = chunks;
        for span in spans {
            let n = span.len.min(rest.len());
            let (bytes, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            slices.push(bytes);
        }
        let (plan, mut merged) = d.plan_messages(sink, spans, &mut slices);
        let messages: Vec<(u64, &[u8])> = plan
            .iter()
            .map(|&(id, src)| match src {
                Source::Chunk(k) => (id, &*slices[k]),
                Source::Merged(m) => (id, merged[m].as_slice()),
            })
            .collect();
        let mut failed = Vec::new();
        let mut fail = |d: &mut Dispatch, id: u64, why: String| {
            let e = TaskError::Send(why);
            let parts = d.remove(id).into_iter().flat_map(Pending::into_parts);
            failed.extend(parts.map(|p| (Span { base: p.base, count: p.count, len: 0 }, e.clone())));
        };
        let mut next = 0;
        while next < messages.len() && d.backlog.is_empty() {
            let Some(i) = d.roomiest() else { break };
            let share = (messages.len() - next).div_ceil(d.workers_with_room());
            match d.send_run(i, &messages[next..next + share]) {
                // The first of the run goes chunk by chunk: it may need a side segment
                // (over a quarter of the ring), have been cancelled, or find no room.
                Ok(0) => {
                    let (id, bytes) = messages[next];
                    match d.try_send(i, id, bytes) {
                        Sent::Yes => next += 1,
                        Sent::NoRoom => break,
                        Sent::Failed(why) => {
                            fail(&mut d, id, why);
                            next += 1;
                        }
                        Sent::Cancelled => {
                            d.remove(id);
                            next += 1;
                        }
                    }
                }
                Ok(n) => next += n,
                Err(why) => {
                    fail(&mut d, messages[next].0, why);
                    next += 1;
                }
            }
        }
        for &(id, bytes) in &messages[next..] {
            d.queue(id, bytes);
        }
        drop(messages);
        // A merged message a worker has stays with its chunk (see `Pending::message`).
        for (k, &(id, src)) in plan.iter().enumerate() {
            let Source::Merged(m) = src else { continue };
            let bytes = std::mem::take(&mut merged[m]);
            match d.pending_mut(id) {
                Some(Some(Pending { merged: Some(m), .. })) if k < next => m.message = bytes,
                _ => d.keep_spare(bytes),
            }
        }
        drop(d);
        rebury(graves);
        failed
    }

    fn submit_locked(
        &self,
        d: &mut Dispatch,
        sink: Arc<dyn Sink>,
        base: usize,
        count: u32,
        bytes: &mut [u8],
    ) -> Result<(), TaskError> {
        if let Some(e) = self.refusal(d) {
            return Err(e);
        }
        let Err(part) = d.merge(Part { sink, base, count, at: 0 }, bytes) else { return Ok(()) };
        // A chunk that the next ones could merge into goes straight to a worker only
        // if one is about to run out of work; otherwise it waits in the backlog
        // for them (the result-handling thread refills each worker as it replies).
        let limit = if d.merge_budget(&*part.sink) > u64::from(part.count) { STARVING } else { usize::MAX };
        let id = d.insert(Pending::of(part));
        task::set_task_id(bytes, id);
        if d.backlog.is_empty() {
            if let Some(i) = d.roomiest_within(limit) {
                match d.try_send(i, id, bytes) {
                    Sent::Yes => return Ok(()),
                    Sent::NoRoom => {}
                    Sent::Failed(why) => {
                        d.remove(id);
                        return Err(TaskError::Send(why));
                    }
                    Sent::Cancelled => {
                        d.remove(id);
                        return Ok(());
                    }
                }
            }
        }
        d.queue(id, bytes);
        Ok(())
    }

    /// Runs `f` on the result-handling thread (at once here if that has ended).
    pub(crate) fn defer(&self, f: Box<dyn FnOnce() + Send>) {
        // Checked under the list's lock, which the thread's last look takes after it
        // says DONE (`run_deferred_last`): either it sees the job, or we see DONE.
        let mut jobs = lock(&self.deferred);
        if self.state.load(Ordering::Acquire) == DONE {
            drop(jobs);
            return f();
        }
        jobs.push(f);
        self.has_deferred.store(true, Ordering::Release);
        drop(jobs);
        self.nudge();
    }

    /// The result-handling thread's last look at the deferred jobs, once it has
    /// said DONE: under the lock whatever the flag says (see [`defer`](Shared::defer)).
    fn run_deferred_last(&self) {
        let jobs = std::mem::take(&mut *lock(&self.deferred));
        self.has_deferred.store(false, Ordering::Release);
        for job in jobs {
            job();
        }
    }

    fn run_deferred(&self) {
        if !self.has_deferred.swap(false, Ordering::AcqRel) {
            return;
        }
        let jobs = std::mem::take(&mut *lock(&self.deferred));
        for job in jobs {
            job();
        }
    }

    /// Wakes the result-handling thread (a reply of kind nudge).
    fn nudge(&self) {
        let mut msg = Vec::with_capacity(task::REPLY_HEADER);
        task::begin_reply(&mut msg, 0, 0, task::REPLY_NUDGE);
        let _ = self.results.put_bytes_with(&msg, Wait::Never);
    }

    /// Cancels the tasks not yet handed to a worker whose sinks allow it (the
    /// executors' futures); how many.
    pub(crate) fn cancel_pending(&self) -> usize {
        let cancelled = lock(&self.dispatch).cancel_backlog();
        for sink in &cancelled {
            sink.cancelled();
        }
        cancelled.len()
    }

    pub(crate) fn close(&self) {
        let _ = self.state.compare_exchange(RUNNING, CLOSED, Ordering::AcqRel, Ordering::Acquire);
        self.nudge();
    }

    pub(crate) fn terminate(&self) {
        let stop = |s: u8| (s == RUNNING || s == CLOSED).then_some(TERMINATING);
        let _ = self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, stop);
        self.nudge();
    }

    /// Waits for the result-handling thread to end (all workers gone). From that
    /// thread itself (a callback calling `join`), returns at once.
    pub(crate) fn join_handler(&self) -> Result<(), PoolError> {
        if self.on_handler_thread() {
            return Ok(());
        }
        let handle = lock(&self.handler).take();
        match handle {
            Some(h) => h.join().map_err(|_| PoolError::Thread("it panicked".into())),
            // Another thread is joining it: wait for the end all the same.
            None => {
                while !self.is_done() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            }
        }
    }

    /// Whether the calling thread is this pool's result-handling thread (where a
    /// callback runs): waiting there for a result would wait forever.
    pub(crate) fn on_handler_thread(&self) -> bool {
        self.handler_id.get() == Some(&std::thread::current().id())
    }

    pub(crate) fn worker_pids(&self) -> Vec<i32> {
        lock(&self.dispatch).workers.iter().flatten().filter_map(|w| w.process.pid()).collect()
    }

    /// Starts the result-handling thread, which starts the workers; returns once
    /// the first has started (or failed to): the others start meanwhile.
    pub(crate) fn launch(self: &Arc<Self>, starter: Starter) -> Result<(), PoolError> {
        let (tx, rx) = mpsc::channel();
        let me = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("shmproc-pool".into())
            .spawn(move || {
                Handler { shared: me, starter, retired: std::cell::Cell::new(false), spent: Default::default() }.run(tx)
            })
            .map_err(|e| PoolError::Thread(e.to_string()))?;
        let _ = self.handler_id.set(thread.thread().id());
        *lock(&self.handler) = Some(thread);
        match rx.recv() {
            Ok(r) => r,
            Err(_) => Err(PoolError::Thread("it ended before starting the workers".into())),
        }
    }
}

/// Where closing a pool stands.
enum Closing {
    /// Every worker is gone and no task is left.
    Done,
    /// Every worker was told to exit (its ring closed) and holds no task.
    Exiting,
    /// Some worker still runs tasks, or tasks wait to be sent.
    Busy,
}

/// The result-handling thread's own state.
struct Handler {
    shared: Arc<Shared>,
    starter: Starter,
    /// A worker said its last reply was its last: reap and replace it now rather
    /// than at the next look.
    retired: std::cell::Cell<bool>,
    /// What the last batch of replies left, and its lists.
    spent: std::cell::RefCell<Spent>,
}

/// The result-handling thread's lists for a batch of replies (see
/// [`Handler::on_replies`]), kept from one batch to the next.
#[derive(Default)]
struct Spent {
    /// Settled chunks, and where their replies are in the batch.
    done: Vec<(Pending, usize)>,
    /// Sinks of the last batch, on their way to `Dispatch::graveyard`.
    graves: Vec<Arc<dyn Sink>>,
    /// Emptied rests of merged chunks, on their way to `Dispatch::spare_merged`.
    #[allow(clippy::vec_box)] // see `Dispatch::spare_merged`
    emptied: Vec<Box<Merged>>,
    /// Merged chunks' messages, on their way to `Dispatch::spare`.
    messages: Vec<Vec<u8>>,
    /// Where in `graves` each sink to wake first appears.
    touched: Vec<usize>,
}

impl Handler {
    fn run(self, started: mpsc::Sender<Result<(), PoolError>>) {
        // The first worker starts before `build` returns, so that a start method
        // that cannot work is reported there; the others start meanwhile, while
        // the first tasks already run (a start costs about 0.3 ms, and a pool that
        // runs one task and ends is common: an executor's with-block).
        let n = lock(&self.shared.dispatch).workers.len();
        let first = self.start_worker(0).map_err(PoolError::from);
        let failed = first.is_err();
        let _ = started.send(first);
        if failed {
            self.stop_workers();
            self.shared.state.store(DONE, Ordering::Release);
            return;
        }
        // From here on a panic (a user's initializer arguments whose clone panics, a
        // bug of ours) fails every task rather than leave their waiters waiting.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for i in 1..n {
                // One that fails is tried again at the next look (see `check_workers`).
                self.try_start(i);
            }
            let mut d = lock(&self.shared.dispatch);
            d.launching = false;
            for i in 0..n {
                d.refill(i);
            }
            drop(d);
            self.serve()
        }));
        if served.is_err() {
            // A bug of ours or a user's type that panicked here: stop cleanly rather
            // than leave every waiter waiting for a thread that is gone.
            self.stop_workers();
            let all = lock(&self.shared.dispatch).take_all();
            fail_all(all, &TaskError::Decode("the pool's result-handling thread panicked".into()));
        }
        self.drain_leftovers();
        self.shared.state.store(DONE, Ordering::Release);
        self.shared.run_deferred_last();
    }

    /// The result-handling loop, until the pool is closed and done, or terminated.
    fn serve(&self) {
        let mut batch = Batch::default();
        let mut last_check = sys::coarse_millis();
        let mut shortage = Shortage::new(REPLY_SHORTAGE_PATIENCE);
        loop {
            let mut look_again = CHECK_EVERY;
            match self.shared.state.load(Ordering::Acquire) {
                TERMINATING => {
                    self.stop_workers();
                    let all = lock(&self.shared.dispatch).take_all();
                    fail_all(all, &TaskError::Terminated);
                    break;
                }
                CLOSED => match self.close_idle_workers() {
                    Closing::Done => break,
                    // They exit in a moment, and a joiner waits for that: wait for
                    // their ends themselves (no reply can come from idle workers),
                    // for a while each time, should one take its time.
                    Closing::Exiting => {
                        self.await_exits(Instant::now() + EXIT_WAIT);
                        look_again = Duration::ZERO;
                    }
                    Closing::Busy => {}
                },
                _ => {}
            }
            // A reply waiting costs no clock read; an empty ring is waited on until
            // the next look at the workers.
            let mut got = batch.fill(&self.shared.results, Wait::Never);
            if matches!(got, Err(RecvTimeoutError::Timeout)) {
                got = batch.fill(&self.shared.results, Wait::Until(Instant::now() + look_again));
            }
            if !matches!(got, Err(RecvTimeoutError::Failed(ChannelFault::SideUnavailable(_)))) {
                shortage.ended();
            }
            match got {
                Ok(()) => {
                    self.on_replies(&batch);
                    batch.shrink();
                }
                Err(RecvTimeoutError::Timeout) => {}
                // A large reply this process cannot open for now (out of descriptors
                // or memory): it stays in the ring until it can, for a while.
                Err(RecvTimeoutError::Failed(ChannelFault::SideUnavailable(_))) if shortage.wait_out() => {}
                Err(e) => {
                    // The result ring is damaged (no reply can be trusted to its task),
                    // or a shortage outlasted the patience above.
                    let why = match e {
                        RecvTimeoutError::Failed(ChannelFault::SideUnavailable(_)) => format!(
                            "the pool gave up: a large reply could not be opened for {} s: {e}",
                            REPLY_SHORTAGE_PATIENCE.as_secs()
                        ),
                        _ => format!("the pool's result ring failed: {e}"),
                    };
                    let all = lock(&self.shared.dispatch).take_all();
                    fail_all(all, &TaskError::Decode(why));
                    self.shared.terminate();
                }
            }
            self.shared.run_deferred();
            self.fail_undeliverable();
            let now = sys::coarse_millis();
            if self.retired.take() {
                self.reap_retired();
                self.check_workers();
                last_check = now;
            } else if now.saturating_sub(last_check) >= CHECK_EVERY.as_millis() as u64 {
                self.check_workers();
                last_check = now;
            }
        }
    }

    /// Fails the chunks that could not be put into any ring (see `Dispatch::refill`).
    fn fail_undeliverable(&self) {
        let failed = std::mem::take(&mut lock(&self.shared.dispatch).undeliverable);
        for (p, e) in failed {
            p.fail(&e);
        }
    }

    /// Takes what is left in the rings once the workers are gone: a large message
    /// lives in a file of its own, which taking it unlinks.
    fn drain_leftovers(&self) {
        let mut buf = Vec::new();
        while self.shared.results.get_bytes_into(&mut buf, Wait::Never).is_ok() {}
        let rings: Vec<Queue<Vec<u8>>> = std::mem::take(&mut lock(&self.shared.dispatch).dead_rings);
        for ring in rings {
            while ring.get_bytes_into(&mut buf, Wait::Never).is_ok() {}
        }
    }

    fn start_worker(&self, i: usize) -> Result<(), ProcessError> {
        if STARTS_TO_FAIL.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(ProcessError::Os {
                op: "starting a worker",
                source: std::io::Error::other("made to fail (shmproc::testing::fail_worker_starts)"),
            });
        }
        let tasks = Queue::<Vec<u8>>::builder().capacity(TASK_RING).build().map_err(|e| ProcessError::Os {
            op: "creating a worker's task ring",
            source: std::io::Error::other(e.to_string()),
        })?;
        let max_tasks = lock(&self.shared.dispatch).max_tasks;
        let process = (self.starter)(
            i as u32,
            tasks.clone(),
            self.shared.results.clone(),
            self.shared.key,
            max_tasks,
            self.shared.board.clone(),
        )?;
        let mut d = lock(&self.shared.dispatch);
        d.workers[i] = Some(Worker {
            process,
            tasks,
            held: VecDeque::new(),
            sent: 0,
            ready: false,
            retiring: false,
            closed: false,
        });
        d.refill(i);
        Ok(())
    }

    fn on_reply(&self, msg: &[u8]) {
        let Some(reply) = Reply::parse(msg) else { return };
        match reply.kind {
            task::REPLY_RESULT | task::REPLY_LAST_RESULT => self.on_result(&reply),
            _ => self.on_reply_other(&reply),
        }
    }

    /// A reply that is not a result: a worker ready, an initializer that failed, a nudge.
    fn on_reply_other(&self, reply: &Reply<'_>) {
        match reply.kind {
            task::REPLY_READY => {
                let mut d = lock(&self.shared.dispatch);
                d.startup_deaths = 0;
                if let Some(Some(w)) = usize::try_from(reply.id).ok().and_then(|i| d.workers.get_mut(i)) {
                    w.ready = true;
                }
            }
            task::REPLY_INIT_FAILED => {
                let why = reply.init_failure();
                let all = {
                    let mut d = lock(&self.shared.dispatch);
                    d.broken.get_or_insert(TaskError::Initializer(why.clone()));
                    d.take_all()
                };
                fail_all(all, &TaskError::Initializer(why));
            }
            _ => {}
        }
    }

    /// Handles a batch of replies: the bookkeeping of all its results under one
    /// lock, then their delivery, then one wake-up per sink. Allocates nothing
    /// (its lists are the handler's, reused).
    fn on_replies(&self, batch: &Batch) {
        let is_result = |r: &Reply<'_>| matches!(r.kind, task::REPLY_RESULT | task::REPLY_LAST_RESULT);
        let mut spent = self.spent.borrow_mut();
        let Spent { done, graves, emptied, messages, touched } = &mut *spent;
        let overflow = {
            let mut d = lock(&self.shared.dispatch);
            // The last batch's sinks, for the next submitter to free (see `graveyard`).
            d.graveyard.append(graves);
            // Beyond what is kept, freed here after all (rarely: as many merged
            // chunks at once as the spare list holds).
            let room = SPARE_MERGED_MAX.saturating_sub(d.spare_merged.len());
            d.spare_merged.extend(emptied.drain(..).take(room));
            for m in messages.drain(..) {
                d.keep_spare(m);
            }
            let overflow = (d.graveyard.len() > GRAVEYARD_MAX).then(|| std::mem::take(&mut d.graveyard));
            for (at, reply) in batch.replies().enumerate() {
                let Some(reply) = Reply::parse(reply).filter(is_result) else { continue };
                if let Some(p) = self.settle(&mut d, &reply) {
                    done.push((p, at));
                }
            }
            overflow
        };
        emptied.clear();
        // Nobody submits for a while: freed here after all.
        drop(overflow);
        for reply in batch.replies().filter_map(Reply::parse).filter(|r| !is_result(r)) {
            self.on_reply_other(&reply);
        }
        // Every chunk's reference goes to the graveyard, not only one a sink: the
        // submitting thread took it (an imap's chunks share one sink), and dropping
        // it there keeps the sink's count on that thread's cache line (a drop here
        // made each chunk's submission wait for the line: a third of `submit_many`).
        touched.clear();
        for (mut p, at) in done.drain(..) {
            if let Some(reply) = batch.reply(at).and_then(Reply::parse) {
                Self::deliver(&p, &reply, self.shared.key);
            }
            let mut merged = p.merged.take();
            let more = merged.as_mut().map(|m| m.more.drain(..));
            for part in std::iter::once(p.first).chain(more.into_iter().flatten()) {
                if !part.sink.bury() {
                    // Let go at once (see `Sink::bury`).
                    continue;
                }
                // One wake-up per sink: the chunks of one (an imap's) come together,
                // so the last few sinks touched are enough to look at (a sink
                // notified twice only wakes its waiter twice).
                if !touched.iter().rev().take(4).any(|&t| Arc::ptr_eq(&graves[t], &part.sink)) {
                    touched.push(graves.len());
                }
                graves.push(part.sink);
            }
            // Back to the submitters, emptied (see `Dispatch::spare_merged`, `spare`).
            if let Some(mut m) = merged {
                if m.message.capacity() > 0 {
                    messages.push(std::mem::take(&mut m.message));
                }
                emptied.push(m);
            }
        }
        for &t in touched.iter() {
            graves[t].notify();
        }
    }

    /// Hands a reply's items to the parts of its chunk, in order.
    fn deliver(p: &Pending, reply: &Reply<'_>, key: TagKey) {
        // A reply that stopped short (see `settle`) answers at least the first of
        // its chunk's parts' items.
        if reply.count != p.count && !(reply.count < p.count && reply.unread_checked(key)) {
            let why = TaskError::Decode("a reply's item count does not match its task (damaged message)".into());
            return p.fail(&why);
        }
        let mut items = Items::new(reply.items);
        let mut parts = p.parts();
        for part in parts.by_ref() {
            let run = || part.sink.deliver(part.base, part.count, &mut items);
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                let why = TaskError::Decode("deserializing the result panicked".into());
                part.sink.fail(part.base, part.count, &why);
                // Where that left the reading is unknown: the later parts' items
                // cannot be told apart any more.
                let why = TaskError::Decode("deserializing an earlier result of the chunk panicked".into());
                for later in parts {
                    later.sink.fail(later.base, later.count, &why);
                }
                return;
            }
        }
    }

    fn on_result(&self, reply: &Reply<'_>) {
        let pending = self.settle(&mut lock(&self.shared.dispatch), reply);
        if let Some(p) = pending {
            Self::deliver(&p, reply, self.shared.key);
            for part in p.parts() {
                part.sink.notify();
            }
        }
    }

    /// The bookkeeping of a result: its pending entry out, its worker's list, the
    /// estimate of a chunk's time, a refill of the worker's ring.
    fn settle(&self, d: &mut Dispatch, reply: &Reply<'_>) -> Option<Pending> {
        let last = reply.kind == task::REPLY_LAST_RESULT;
        {
            let mut pending = d.remove(reply.id)?;
            if reply.count < pending.count && reply.unread_checked(self.shared.key) {
                // The worker never read the arguments from `count` on: the parts of a
                // merged chunk that lie wholly there run elsewhere, the rest are
                // answered (their items from there on fail, as a chunk not merged).
                // Said by a reply whose check fails, it is damage: the chunk fails.
                let (begun, rest) = pending.split_begun(u64::from(reply.count));
                d.requeue_first(rest);
                pending = begun;
            }
            if reply.elapsed_ns != 0 {
                // Read from shared memory: clamped (an hour), so no sum overflows.
                let sample = reply.elapsed_ns.min(3_600_000_000_000);
                d.avg_chunk_ns = next_estimate(d.avg_chunk_ns, sample, d.samples);
                d.avg_task_ns = next_estimate(d.avg_task_ns, sample / u64::from(reply.count.max(1)), d.samples);
                d.samples = d.samples.saturating_add(1);
            }
            // Replies come in the order each worker took its tasks: the holder has
            // the id first in its list (anything else is a damaged reply's id).
            let first = |w: &Option<Worker>| w.as_ref().is_some_and(|w| w.held.front() == Some(&reply.id));
            let any = |w: &Option<Worker>| w.as_ref().is_some_and(|w| w.held.contains(&reply.id));
            let holder = d.workers.iter().position(first).or_else(|| d.workers.iter().position(any));
            if let Some(i) = holder {
                if let Some(w) = d.workers[i].as_mut() {
                    if w.held.front() == Some(&reply.id) {
                        w.held.pop_front();
                    } else {
                        w.held.retain(|&id| id != reply.id);
                    }
                    if last {
                        w.retiring = true;
                        self.retired.set(true);
                    }
                }
                d.refill(i);
            }
            Some(pending)
        }
    }

    /// Reads every reply already in the result ring (before judging a dead
    /// worker's tasks: it may have answered some before it died).
    fn drain_replies(&self) {
        let mut buf = Vec::new();
        let mut shortage = Shortage::new(TAKE_PATIENCE);
        loop {
            match self.shared.results.get_bytes_into(&mut buf, Wait::Never) {
                Ok(()) => self.on_reply(&buf),
                // A large reply that cannot be opened this moment: waited for (for a
                // while), or the dead worker would be judged without it.
                Err(RecvTimeoutError::Failed(ChannelFault::SideUnavailable(_))) if shortage.wait_out() => {}
                Err(_) => return,
            }
        }
    }

    /// Waits (briefly) for retiring workers to exit: each does right after its last reply.
    fn reap_retired(&self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let d = lock(&self.shared.dispatch);
            if d.workers.iter().flatten().filter(|w| w.retiring).all(|w| w.process.exitcode().is_some()) {
                return;
            }
            drop(d);
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn check_workers(&self) {
        let ended: Vec<(usize, i32, i32)> = {
            let d = lock(&self.shared.dispatch);
            d.workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    let w = w.as_ref()?;
                    Some((i, w.process.pid()?, w.process.exitcode()?))
                })
                .collect()
        };
        if !ended.is_empty() {
            self.drain_replies();
        }
        for (i, pid, code) in ended {
            self.on_worker_exit(i, pid, code);
        }
        // Slots whose worker could not be started (or was not replaced yet).
        let state = self.shared.state.load(Ordering::Acquire);
        let empty: Vec<usize> = {
            let mut d = lock(&self.shared.dispatch);
            for i in 0..d.workers.len() {
                d.refill(i);
            }
            let wanted = d.broken.is_none() && (state == RUNNING || (state == CLOSED && !d.backlog.is_empty()));
            if wanted {
                d.workers.iter().enumerate().filter(|(_, w)| w.is_none()).map(|(i, _)| i).collect()
            } else {
                Vec::new()
            }
        };
        for i in empty {
            // A failed start is tried again at the next look.
            self.try_start(i);
        }
    }

    /// Worker `i`, process `pid`, has ended with `code`: its unstarted tasks go back
    /// to the backlog, the one it was running fails, and it is replaced.
    fn on_worker_exit(&self, i: usize, pid: i32, code: i32) {
        let mut w = {
            let mut d = lock(&self.shared.dispatch);
            if d.workers[i].as_ref().and_then(|w| w.process.pid()) != Some(pid) {
                return; // already replaced
            }
            let Some(w) = d.workers[i].take() else { return };
            w
        };
        // What is still in its ring never started: back to the front of the backlog
        // (read without the lock: a dead reader's lock may take a moment to recover).
        let mut back = Vec::new();
        let mut buf = Vec::new();
        let mut shortage = Shortage::new(TAKE_PATIENCE);
        while w.tasks.qsize() > 0 {
            match w.tasks.get_bytes_into(&mut buf, Wait::timeout(Duration::from_secs(1))) {
                Ok(()) => {}
                Err(RecvTimeoutError::Failed(ChannelFault::SideUnavailable(_))) if shortage.wait_out() => continue,
                Err(_) => break,
            }
            // Only a chunk it was sent (a damaged id might name one running elsewhere).
            match task::task_id(&buf) {
                Some(id) if w.held.contains(&id) => {
                    w.held.retain(|&h| h != id);
                    back.push(Queued { id, bytes: std::mem::take(&mut buf) });
                }
                _ => {}
            }
        }
        // Idle (it ran nothing), it died taking the first message of its ring.
        let idle = w.ready && !w.retiring && !w.closed && w.held.is_empty();
        let (failed, broken, replace, poison) = {
            let mut d = lock(&self.shared.dispatch);
            let mut poison = None;
            if w.tasks.qsize() > 0 {
                // Left unread (see the shortage above): its large messages' files
                // are unlinked when the pool ends, with the other dead rings'.
                d.dead_rings.push(w.tasks.clone());
            }
            let poisoned = back.first().filter(|_| idle).and_then(|q| d.died_taking(q.id));
            for q in back.into_iter().rev() {
                if Some(q.id) == poisoned {
                    continue;
                }
                d.backlog.push_front(q);
            }
            if !w.ready {
                d.startup_deaths += 1;
                if d.startup_deaths >= STARTUP_DEATHS && d.broken.is_none() {
                    let why = format!("pool workers keep dying while starting (last exit code {code})");
                    d.broken = Some(TaskError::Initializer(why));
                }
            }
            // What it held and was not in its ring: the chunk it was running. Of a
            // merged one, the parts it had not begun (its progress says) run
            // elsewhere, ahead of the rest.
            let progress = task::Progress::read(&self.shared.board, i, self.shared.key);
            let mut failed = Vec::new();
            if let Some(p) = poisoned.and_then(|id| d.remove(id)) {
                let why = format!(
                    "{HEAD_DEATHS} workers died taking it from their rings (the last: pid {pid}, {})",
                    super::error::describe_exit(code)
                );
                poison = Some((p, TaskError::Send(why)));
            }
            for &id in &w.held {
                let Some(p) = d.remove(id) else { continue };
                // Unless it noted this chunk (with a count that passes its check: see
                // `task::Progress`), every part counts as begun (it may have run
                // them: none may run twice). Noted, the first part counts as
                // begun even before its first item: the worker took the message, and
                // a message that kills its worker before the first item (damage the
                // runner could not survive) fails, as one not merged does, rather
                // than kill the next worker too.
                let began = match progress {
                    Some((noted, began)) if noted == id => began.max(1),
                    _ => u64::MAX,
                };
                let (gone, rest) = p.split_begun(began);
                failed.push(gone);
                d.requeue_first(rest);
            }
            // Retiring (max_tasks_per_child) and closing workers end on purpose.
            if d.break_on_death && !w.retiring && !w.closed && d.broken.is_none() {
                let how = TaskError::WorkerDied { pid, exitcode: code };
                d.broken = Some(TaskError::Broken(format!("a worker ended abruptly ({how})")));
            }
            let state = self.shared.state.load(Ordering::Acquire);
            // A worker whose ring was closed (the pool is closing) is not replaced,
            // nor is one once the pool is closed and nothing is left to send.
            let replace = !w.closed && (state == RUNNING || (state == CLOSED && !d.backlog.is_empty()));
            (failed, d.broken.clone(), replace, poison)
        };
        fail_all(failed, &TaskError::WorkerDied { pid, exitcode: code });
        if let Some((p, why)) = poison {
            p.fail(&why);
        }
        if let Some(e) = broken {
            let all = lock(&self.shared.dispatch).take_all();
            fail_all(all, &e);
            return;
        }
        if replace {
            self.try_start(i);
        }
    }

    /// Starts worker `i`; after [`START_FAILURES`] failures in a row over
    /// [`START_FAILING_FOR`] with no worker left, the pool is broken (its tasks
    /// fail) instead of retrying forever.
    fn try_start(&self, i: usize) {
        match self.start_worker(i) {
            Ok(()) => lock(&self.shared.dispatch).start_failures = None,
            Err(e) => {
                let (why, all) = {
                    let mut d = lock(&self.shared.dispatch);
                    if d.workers.iter().any(Option::is_some) {
                        // A worker serves: the run of failures counts from when none does.
                        d.start_failures = None;
                        return;
                    }
                    let (count, since) = d.start_failures.get_or_insert_with(|| (0, Instant::now()));
                    *count += 1;
                    // Tried again at each look at the workers (see `check_workers`).
                    if *count < START_FAILURES || since.elapsed() < START_FAILING_FOR {
                        return;
                    }
                    let why =
                        d.broken.get_or_insert_with(|| TaskError::Initializer(format!("cannot start a worker: {e}")));
                    (why.clone(), d.take_all())
                };
                fail_all(all, &why);
            }
        }
    }

    /// With the pool closed: closes the ring of every worker that holds nothing
    /// once nothing is left to send, so that it exits.
    fn close_idle_workers(&self) -> Closing {
        let mut d = lock(&self.shared.dispatch);
        if !d.backlog.is_empty() {
            return Closing::Busy;
        }
        let (mut all_gone, mut all_idle) = (true, true);
        for w in d.workers.iter_mut().flatten() {
            if w.held.is_empty() && !w.closed {
                w.tasks.close();
                w.closed = true;
            }
            all_idle &= w.held.is_empty();
            match w.process.exitcode() {
                Some(_) if w.held.is_empty() => {}
                _ => all_gone = false,
            }
        }
        if all_gone {
            for w in d.workers.iter_mut() {
                *w = None;
            }
        }
        match (all_gone && !d.has_work(), all_idle) {
            (true, _) => Closing::Done,
            (false, true) => Closing::Exiting,
            (false, false) => Closing::Busy,
        }
    }

    /// Waits until `deadline` at the latest for every worker to end (they were
    /// told to: their rings are closed).
    fn await_exits(&self, deadline: Instant) {
        let watches: Vec<_> =
            lock(&self.shared.dispatch).workers.iter().flatten().filter_map(|w| w.process.end_watch()).collect();
        for w in watches {
            if !w.wait_until(deadline) {
                return;
            }
        }
    }

    /// SIGTERM to every worker, SIGKILL to any still there a second later; all reaped.
    fn stop_workers(&self) {
        let workers: Vec<Worker> = {
            let mut d = lock(&self.shared.dispatch);
            let workers: Vec<Worker> = d.workers.iter_mut().filter_map(Option::take).collect();
            d.dead_rings.extend(workers.iter().map(|w| w.tasks.clone()));
            workers
        };
        for w in &workers {
            let _ = w.process.terminate();
        }
        for w in &workers {
            if !matches!(w.process.join_timeout(Duration::from_secs(1)), Ok(true)) {
                let _ = w.process.kill();
                let _ = w.process.join_timeout(Duration::from_secs(5));
            }
        }
    }
}

/// Replies read in one go (reusing their buffers), handled together.
#[derive(Default)]
struct Batch {
    bufs: Vec<Vec<u8>>,
    len: usize,
}

impl Batch {
    /// The most replies handled under one lock.
    const MAX: usize = 64;

    /// Reads one reply or more (what is there now), waiting for the first per `wait`.
    fn fill(&mut self, ring: &Queue<Vec<u8>>, wait: Wait) -> Result<(), RecvTimeoutError> {
        self.len = 0;
        if self.bufs.is_empty() {
            self.bufs.resize_with(Self::MAX, || Vec::with_capacity(256));
        }
        self.len = ring.get_bytes_many(&mut self.bufs, wait)?;
        Ok(())
    }

    /// Lets go of buffers a large reply grew (a side result comes whole).
    fn shrink(&mut self) {
        for b in &mut self.bufs {
            if b.capacity() > 1 << 20 {
                *b = Vec::with_capacity(256);
            }
        }
    }

    fn replies(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.len].iter().map(Vec::as_slice)
    }

    fn reply(&self, at: usize) -> Option<&[u8]> {
        self.bufs[..self.len].get(at).map(Vec::as_slice)
    }
}

/// A fresh tag key for a pool.
pub(crate) fn new_key() -> Result<TagKey, PoolError> {
    let r = sys::random_u128().map_err(|e| PoolError::Start(ProcessError::Os { op: "getrandom", source: e }))?;
    Ok(TagKey(r as u64, (r >> 64) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_ahead_follows_the_workers_timing_both_ways() {
        let mut avg = FIRST_GUESS;
        assert_eq!(ahead_by_time(avg), 2, "a fresh pool queues little");
        for seen in 0..SETTLING {
            avg = next_estimate(avg, 300, seen);
        }
        assert!(ahead_by_time(avg) >= 300, "tiny tasks: {avg} ns, {} ahead", ahead_by_time(avg));
        avg = next_estimate(avg, 30_000_000, SETTLING);
        assert_eq!(ahead_by_time(avg), 2, "one long chunk: {avg} ns");
        // Settled: short and long chunks in turn average out, not lean to the short.
        let mut avg = 550_000;
        for k in 0..200 {
            avg = next_estimate(avg, if k % 2 == 0 { 100_000 } else { 1_000_000 }, SETTLING + k);
        }
        assert!((400_000..700_000).contains(&avg), "alternating 0.1 and 1 ms: {avg} ns");
        let hour = 3_600_000_000_000;
        assert_eq!(next_estimate(hour, hour, SETTLING), hour, "a steady sample keeps it, the largest too");
    }
}

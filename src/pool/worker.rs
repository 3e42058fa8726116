//! What a pool worker process runs: the initializer, then chunks from its own task
//! ring, each chunk's reply into the pool's result ring, until its ring is closed
//! or it has run `max_tasks_per_child` chunks.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::task::{self, Progress, TagKey, TaskMsg};
use crate::channel::{ChannelFault, Queue, RecvError};
use crate::process::{catch_panic, conjure, PanicCapture};
use crate::shared::RawArray;
use crate::sync::wait::Wait;

/// A worker's start arguments (they travel as a `Process`'s arguments, never
/// through a ring: the tag key stays private to the pool's processes).
#[derive(Serialize, Deserialize)]
#[serde(bound = "IA: Serialize + DeserializeOwned")]
pub(crate) struct WorkerArgs<IA> {
    pub(crate) slot: u32,
    pub(crate) tasks: Queue<Vec<u8>>,
    pub(crate) results: Queue<Vec<u8>>,
    pub(crate) key: TagKey,
    /// Chunks to run before retiring; 0 for no limit.
    pub(crate) max_tasks: u64,
    /// The pool's progress board (see [`Progress`]).
    pub(crate) board: RawArray<u64>,
    pub(crate) init_args: IA,
}

/// Which chunks a worker times for the parent (whose queue-ahead depends on how
/// long chunks take). A clock read costs about 50 ns on this machine, more than a
/// tiny task: short chunks are timed one in [`Timing::SAMPLE`], long ones each time.
#[derive(Default)]
struct Timing {
    timed: u32,
    skipped: u32,
    last: u64,
}

impl Timing {
    const SAMPLE: u32 = 32;
    /// The first chunks are all timed, so that the parent's estimate settles fast.
    const FIRST: u32 = 16;
    /// A chunk this long (ns) or longer is timed every time.
    const LONG: u64 = 20_000;

    fn start(&mut self) -> Option<Instant> {
        if self.timed < Self::FIRST || self.last >= Self::LONG || self.skipped >= Self::SAMPLE {
            self.timed = self.timed.saturating_add(1);
            self.skipped = 0;
            Some(Instant::now())
        } else {
            self.skipped += 1;
            None
        }
    }

    /// The chunk's time in ns, or 0 (not timed: the parent keeps its estimate).
    fn stop(&mut self, start: Option<Instant>) -> u64 {
        let Some(start) = start else { return 0 };
        self.last = (start.elapsed().as_nanos() as u64).max(1);
        self.last
    }
}

/// The initializer of a pool without one.
pub(crate) fn no_initializer(_: ()) {}

/// The worker's body; `I` is the initializer's (zero-sized) function type.
pub(crate) fn worker_main<I, IA>(args: WorkerArgs<IA>)
where
    I: Fn(IA) + Copy + 'static,
    IA: Serialize + DeserializeOwned,
{
    let WorkerArgs { slot, tasks, results, key, max_tasks, board, init_args } = args;
    let progress = Progress::new(&board, slot, key);
    let (tasks, results) = (tasks.spinning(super::SPIN_ROUNDS), results.spinning(super::SPIN_ROUNDS));
    let mut out = Vec::with_capacity(256);
    if let Err((panic, _)) = catch_panic(true, move || conjure::<I>()(init_args)) {
        task::begin_reply(&mut out, u64::from(slot), 0, task::REPLY_INIT_FAILED);
        let _ = task::append(&panic, &mut out);
        let _ = results.put_bytes_with(&out, Wait::Forever);
        return;
    }
    task::begin_reply(&mut out, u64::from(slot), 0, task::REPLY_READY);
    if results.put_bytes_with(&out, Wait::Forever).is_err() {
        return;
    }
    let mut msg = Vec::with_capacity(256);
    let mut verified = None;
    let capture = PanicCapture::begin(true);
    let mut done = 0u64;
    let mut timing = Timing::default();
    let mut shortage = Shortage::new(TAKE_PATIENCE);
    loop {
        // Borrowed, and taken from the ring only once the board says which chunk
        // this worker has: killed before that, the message is still in its ring,
        // and the parent sends it elsewhere whole (were it taken first, the parent,
        // seeing the board name the chunk before, would fail all of it, a merged
        // message's tasks that never began among them). Large messages (in side
        // segments) and ones that wrap round the ring are taken at once.
        let loan = match tasks.get_loan() {
            Ok(loan) => {
                shortage.ended();
                loan
            }
            // Closed: the pool is closing, and everything sent to us has been run.
            Err(RecvError::Disconnected) => return,
            // A large message this process cannot open for now: it stays in the ring.
            Err(RecvError::Failed(ChannelFault::SideUnavailable(_))) if shortage.wait_out() => continue,
            Err(e) => panic!("pool worker {slot}: the task ring failed: {e}"),
        };
        msg.clear();
        msg.extend_from_slice(&loan);
        let Some(chunk) = TaskMsg::parse(&msg) else {
            // No id to answer to: the parent drops it and fails whatever we held
            // when we exit.
            panic!("pool worker {slot}: a task message too short for its header (damaged ring)");
        };
        progress.took(chunk.id);
        dies_at("worker:took");
        drop(loan);
        done += 1;
        let last = max_tasks != 0 && done >= max_tasks;
        let kind = if last { task::REPLY_LAST_RESULT } else { task::REPLY_RESULT };
        task::begin_reply(&mut out, chunk.id, chunk.count, kind);
        let start = timing.start();
        if let Some(begun) = chunk.run(&capture, &progress, key, &mut verified, &mut out) {
            task::set_reply_unread(&mut out, key, chunk.id, begun, kind);
        }
        task::set_reply_elapsed(&mut out, timing.stop(start));
        dies_at("worker:ran");
        if results.put_bytes_with(&out, Wait::Forever).is_err() || last {
            return;
        }
        dies_at("worker:replied");
    }
}

/// A test's simulated `kill -9` of this worker at the point `name` (see
/// [`steps`](crate::steps)).
#[inline(always)]
fn dies_at(name: &'static str) {
    if crate::steps::point(name) == crate::steps::Step::Die {
        crate::sys::kill_self();
    }
}

/// How long a worker waits for descriptors or memory to open a large task message
/// before it gives up and exits (its message then goes to another worker; the
/// parent fails a message that workers keep dying on: see `Handler::on_worker_exit`).
/// The parent waits as long to read a dead worker's large messages back.
pub(super) const TAKE_PATIENCE: Duration = Duration::from_millis(500);

/// A wait for the resources to open a large message (a worker's task, a reply, or
/// a dead worker's leftovers the parent reads back), for up to `patience`.
pub(super) struct Shortage {
    patience: Duration,
    since: Option<Instant>,
    pause: Duration,
}

impl Shortage {
    pub(super) fn new(patience: Duration) -> Shortage {
        Shortage { patience, since: None, pause: Duration::ZERO }
    }

    /// Sleeps a little before the next try (each pause twice the last, up to 50 ms);
    /// `false` once the shortage has lasted its patience.
    pub(super) fn wait_out(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.patience {
            return false;
        }
        self.pause = (self.pause * 2).clamp(Duration::from_millis(1), Duration::from_millis(50));
        std::thread::sleep(self.pause);
        true
    }

    /// The resources came: the next shortage waits its whole patience again.
    pub(super) fn ended(&mut self) {
        *self = Shortage::new(self.patience);
    }
}

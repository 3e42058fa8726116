//! What crosses between the pool and its workers: tasks named by their type, the
//! bytes of a chunk of task arguments and of its results.
//!
//! A task is a zero-sized function type (a fn item or a non-capturing closure), so
//! a worker can call it knowing only its type. The parent sends, with each chunk,
//! the offset of `run_chunk::<C>` (the monomorphized runner for that task type) from
//! an anchor in the executable; a worker (always this same executable, checked when
//! it started) adds its own anchor address. The ring that carries the offset is
//! shared memory that another process could scribble on, so the offset travels
//! with a tag, SipHash-2-4 of it under a key that only the parent and its workers
//! hold (it came to each worker in its start arguments, never through shared
//! memory): a damaged offset fails its tag and the chunk fails with
//! `TaskError::Decode`, instead of sending the worker to an arbitrary address.
//!
//! ## Messages (little-endian)
//! Task, parent to worker: `id: u64 | runner offset: u64 | tag: u64 | count: u32 |
//! count arguments` in our own [wire format](crate::wire) (fixed-width numbers).
//!
//! Reply, worker to parent: `id: u64 | count: u32 | kind: u32 | elapsed ns: u64 |
//! count items`, each item a status byte and its payload (the result, a
//! [`Panic`], or an error message). Kinds besides a result: a worker ready after its
//! initializer, one whose initializer failed (its panic as the payload), a result
//! that is its sender's last (it retires at `max_tasks_per_child`), and a nudge
//! the parent sends itself. A result's kind may carry [`REPLY_UNREAD`]: then its
//! count is the items the worker began, and those after them it never read (an
//! argument's `Deserialize` panicked, so where the next begins is unknown): the
//! parent runs the parts of a merged chunk that lie wholly there elsewhere.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::TaskError;
use crate::process::{code_address, code_offset, conjure, Panic, PanicCapture};
use crate::shared::RawArray;
use crate::wire;

pub(crate) const TASK_HEADER: usize = 28;
pub(crate) const REPLY_HEADER: usize = 24;

/// Reply kinds.
pub(crate) const REPLY_RESULT: u32 = 0;
pub(crate) const REPLY_LAST_RESULT: u32 = 1;
pub(crate) const REPLY_READY: u32 = 2;
pub(crate) const REPLY_INIT_FAILED: u32 = 3;
pub(crate) const REPLY_NUDGE: u32 = 4;
/// Flag on a result's kind: the chunk's items from `count` on were never read.
/// The kind's bits above it carry a check of that count under the pool's key
/// ([`unread_check`]): a reply damaged into saying so (the parent would run again
/// tasks that ran) fails it, and is taken as a whole reply.
pub(crate) const REPLY_UNREAD: u32 = 1 << 16;

/// The check bits of a short reply's kind (see [`REPLY_UNREAD`]): 15 bits of a
/// keyed hash of the chunk's id and the count, so a change anywhere in the count
/// (not only in its low bits) fails it but for a chance of one in 32 768.
fn unread_check(key: TagKey, id: u64, begun: u32) -> u32 {
    let tag = key.tag(id.rotate_left(32) ^ u64::from(begun) ^ 0x756e_7265_6164_0000);
    ((tag >> 49) as u32) << 17
}

/// Item statuses.
const ITEM_OK: u8 = 0;
const ITEM_PANICKED: u8 = 1;
const ITEM_ENCODE_FAILED: u8 = 2;
const ITEM_DECODE_FAILED: u8 = 3;

/// A function of several arguments that `starmap` can call with a tuple: any fn item
/// or non-capturing closure of 1 to 4 arguments (implemented for you).
///
/// ```
/// fn clamp(x: i32, lo: i32, hi: i32) -> i32 {
///     x.clamp(lo, hi)
/// }
/// let pool = shmproc::Pool::new(2)?;
/// // `clamp` is a StarTask of `(i32, i32, i32)`: each tuple is spread into its arguments.
/// assert_eq!(pool.starmap(clamp, [(5, 0, 3), (-2, 0, 3), (1, 0, 3)])?, [3, 0, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait StarTask<Args>: Copy + Send + Sync + 'static {
    /// What the function returns.
    type Output;
    /// Calls the function with the tuple's fields as its arguments.
    #[doc(hidden)]
    fn call_with(self, args: Args) -> Self::Output;
}

macro_rules! star_task {
    ($($a:ident),+) => {
        impl<F, R, $($a),+> StarTask<($($a,)+)> for F
        where
            F: Fn($($a),+) -> R + Copy + Send + Sync + 'static,
        {
            type Output = R;
            #[allow(non_snake_case)]
            fn call_with(self, ($($a,)+): ($($a,)+)) -> R {
                self($($a),+)
            }
        }
    };
}
star_task!(A);
star_task!(A, B);
star_task!(A, B, C);
star_task!(A, B, C, D);

/// A task as a worker calls it: one input, one output, no value needed.
pub(crate) trait Invoke: 'static {
    type In: Serialize + DeserializeOwned;
    type Out: Serialize + DeserializeOwned;
    fn invoke(input: Self::In) -> Self::Out;
}

/// `f(a)` for a task `F: Fn(A) -> R`.
pub(crate) struct Plain<F, A>(PhantomData<fn(A) -> F>);

impl<F, A, R> Invoke for Plain<F, A>
where
    F: Fn(A) -> R + Copy + 'static,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned,
{
    type In = A;
    type Out = R;
    fn invoke(input: A) -> R {
        conjure::<F>()(input)
    }
}

/// `f(a, b, ...)` for a task called with a tuple.
pub(crate) struct Star<F, Args>(PhantomData<fn(Args) -> F>);

impl<F, Args> Invoke for Star<F, Args>
where
    F: StarTask<Args>,
    Args: Serialize + DeserializeOwned + 'static,
    F::Output: Serialize + DeserializeOwned,
{
    type In = Args;
    type Out = F::Output;
    fn invoke(input: Args) -> F::Output {
        conjure::<F>().call_with(input)
    }
}

/// Runs a chunk: `count` arguments in `args`, each item's outcome appended to `out`,
/// panics caught through `capture` (set up once for the worker's life).
/// Returns where the items it never read begin, if it stopped short of `count`
/// that way (see [`REPLY_UNREAD`]).
type Runner =
    fn(capture: &PanicCapture, progress: &Progress<'_>, args: &[u8], count: u32, out: &mut Vec<u8>) -> Option<u32>;

/// Where a worker notes how far into its current chunk it is: the chunk's id when
/// it takes it, then how many of its items have begun. The parent reads it only
/// once the worker is dead, to tell the tasks that began (they fail) from those
/// that never did (they run elsewhere); see `Handler::on_worker_exit`. One cache
/// line of the pool's board per worker slot, written by that worker alone.
///
/// The count travels in one word with a check: its low half the count, its high
/// half the count xor a mask derived from the chunk's id under the pool's key. A
/// count that reads lower than the truth would have the parent run again tasks
/// that ran; a word damaged (by a scribble, or by the dying task's own stray
/// write) fails the check, and the parent then counts every item as begun.
pub(crate) struct Progress<'a> {
    board: Option<&'a RawArray<u64>>,
    at: usize,
    key: TagKey,
    /// The current chunk's mask (see [`Progress::mask`]).
    mask: std::cell::Cell<u32>,
}

impl<'a> Progress<'a> {
    /// The words of the board per worker slot (a cache line).
    pub(crate) const WORDS: usize = 8;

    pub(crate) fn new(board: &'a RawArray<u64>, slot: u32, key: TagKey) -> Progress<'a> {
        Progress { board: Some(board), at: slot as usize * Self::WORDS, key, mask: std::cell::Cell::new(0) }
    }

    /// Notes nothing (a chunk run outside a pool's worker).
    #[cfg(test)]
    pub(crate) fn none() -> Progress<'static> {
        Progress { board: None, at: 0, key: TagKey(0, 0), mask: std::cell::Cell::new(0) }
    }

    /// The check mask of chunk `id`'s counts (a domain of its own: not a runner's tag).
    pub(crate) fn mask(key: TagKey, id: u64) -> u32 {
        (key.tag(id ^ 0x7072_6f67_7265_7373) >> 32) as u32
    }

    /// A count with its check, as one word.
    fn counted(items: u32, mask: u32) -> u64 {
        u64::from(items) | (u64::from(items ^ mask) << 32)
    }

    /// The worker took chunk `id` and has begun none of its items.
    pub(crate) fn took(&self, id: u64) {
        if let Some(b) = self.board {
            let mask = Self::mask(self.key, id);
            self.mask.set(mask);
            // The count first: the parent, reading after a death, never pairs the
            // new id with the last chunk's count (nor would its check pass).
            let _ = b.set(self.at + 1, Self::counted(0, mask));
            let _ = b.set(self.at, id);
        }
    }

    /// `items` of the current chunk have begun (the last of them may be decoding or running).
    #[inline]
    fn began(&self, items: u32) {
        if let Some(b) = self.board {
            let _ = b.set(self.at + 1, Self::counted(items, self.mask.get()));
            // Not moved past the item's work by the compiler: a kill then would
            // find the item not noted, and the parent would run it again.
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        }
        // A test's `kill -9` as the item begins (see `steps`).
        if crate::steps::point("item:began") == crate::steps::Step::Die {
            crate::sys::kill_self();
        }
    }

    /// What worker `slot` last noted: the chunk it took and how many of its items
    /// began, if its count passes its check (the caller checks the id against what
    /// it sent, and the count against the chunk's).
    pub(crate) fn read(board: &RawArray<u64>, slot: usize, key: TagKey) -> Option<(u64, u64)> {
        let at = slot.checked_mul(Self::WORDS)?;
        let (id, word) = (board.get(at)?, board.get(at + 1)?);
        let items = word as u32;
        ((word >> 32) as u32 == items ^ Self::mask(key, id)).then_some((id, u64::from(items)))
    }
}

/// The runner of task type `C`, as the parent names it to its workers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunnerRef {
    offset: u64,
}

/// A runner and its tag under one pool's key, computed once per submission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaggedRunner {
    offset: u64,
    tag: u64,
}

impl RunnerRef {
    pub(crate) fn tagged(self, key: TagKey) -> TaggedRunner {
        TaggedRunner { offset: self.offset, tag: key.tag(self.offset) }
    }
}

/// The address of the runner of task type `C` in this process.
pub(crate) fn runner_address<C: Invoke>() -> usize {
    let runner: Runner = run_chunk::<C>;
    runner as usize
}

impl RunnerRef {
    /// The runner at `addr` (from [`runner_address`]); `None` when it lives in a
    /// shared library (no offset means anything in a re-executed worker).
    pub(crate) fn at(addr: usize) -> Option<RunnerRef> {
        code_offset(addr).map(|offset| RunnerRef { offset })
    }
}

/// The key of the runner tags, made once per pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TagKey(pub(crate) u64, pub(crate) u64);

impl TagKey {
    pub(crate) fn tag(self, offset: u64) -> u64 {
        siphash24(self.0, self.1, offset)
    }
}

/// SipHash-2-4 of one 8-byte message (Aumasson and Bernstein, "SipHash: a fast
/// short-input PRF", 2012): enough to make a tag no scribbler can forge without the key.
fn siphash24(k0: u64, k1: u64, m: u64) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut compress = |word: u64| {
        v[3] ^= word;
        round(&mut v);
        round(&mut v);
        v[0] ^= word;
    };
    compress(m);
    compress(8u64 << 56); // the length byte, no tail
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Appends `value`'s encoding to `out`; on failure `out` is as it was.
pub(crate) use crate::wire::append;

/// Starts a task message at the end of `out`: the header, with the id left for the dispatcher
/// to fill in and the count to be set by [`finish_task`].
pub(crate) fn begin_task(out: &mut Vec<u8>, runner: TaggedRunner) {
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&runner.offset.to_le_bytes());
    out.extend_from_slice(&runner.tag.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

pub(crate) fn finish_task(out: &mut [u8], count: u32) {
    out[24..28].copy_from_slice(&count.to_le_bytes());
}

/// Whether two task messages name the same runner with the same tag (their
/// arguments can then run as one chunk).
pub(crate) fn same_runner(a: &[u8], b: &[u8]) -> bool {
    matches!((a.get(8..24), b.get(8..24)), (Some(x), Some(y)) if x == y)
}

pub(crate) fn set_task_id(out: &mut [u8], id: u64) {
    out[0..8].copy_from_slice(&id.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The id of a task message (the parent reading back one it sent).
pub(crate) fn task_id(msg: &[u8]) -> Option<u64> {
    (msg.len() >= TASK_HEADER).then(|| u64_at(msg, 0)).flatten()
}

/// A worker's view of a task message.
pub(crate) struct TaskMsg<'a> {
    pub(crate) id: u64,
    pub(crate) count: u32,
    offset: u64,
    tag: u64,
    args: &'a [u8],
}

impl<'a> TaskMsg<'a> {
    pub(crate) fn parse(msg: &'a [u8]) -> Option<TaskMsg<'a>> {
        Some(TaskMsg {
            id: u64_at(msg, 0)?,
            offset: u64_at(msg, 8)?,
            tag: u64_at(msg, 16)?,
            count: u32_at(msg, 24)?,
            args: msg.get(TASK_HEADER..)?,
        })
    }

    /// Runs the chunk, appending its items to `out`, if its runner's tag checks out
    /// under `key` (`verified` remembers the last offset that did); otherwise every
    /// item is a decode failure. Where the items it never read begin, if it
    /// stopped short that way (see [`REPLY_UNREAD`]).
    pub(crate) fn run(
        &self,
        capture: &PanicCapture,
        progress: &Progress<'_>,
        key: TagKey,
        verified: &mut Option<u64>,
        out: &mut Vec<u8>,
    ) -> Option<u32> {
        if *verified != Some(self.offset) {
            if key.tag(self.offset) != self.tag {
                // The count is as untrusted as the reference: one item says it (the
                // parent fails the whole chunk on a count that does not match).
                fail_chunk("the task's function reference failed its check (damaged message)", out);
                return None;
            }
            *verified = Some(self.offset);
        }
        let addr = code_address(self.offset);
        // SAFETY: the offset carries a valid tag under a key only our own processes
        // hold, so it was made by `RunnerRef::at` in the parent (`Shared::runner`), which runs this same
        // executable (checked when this worker started): it is the offset of a
        // `run_chunk::<C>`, a `Runner`.
        let runner = unsafe { std::mem::transmute::<usize, Runner>(addr) };
        runner(capture, progress, self.args, self.count, out)
    }
}

/// A chunk that cannot run (damaged): one failed item says why. Its count is as
/// untrusted as the rest of it, so no more are written; the parent fails the
/// chunk's other tasks as missing from the reply.
fn fail_chunk(why: &str, out: &mut Vec<u8>) {
    out.push(ITEM_DECODE_FAILED);
    let _ = append(why, out);
}

/// The runner of task type `C`: calls the task on each argument as it decodes it
/// (see [`call_all`]). A count larger than the chunk's bytes (plus the wire format's
/// allowance for empty values) could hold is damage, refused before anything runs;
/// each argument then has the budget it would have alone.
///
/// Arguments are decoded one at a time, not all before the first call: a decoded
/// argument moved into a list and out again cost a map of pairs a third of its
/// worker time (the tuple comes back from serde through memory, two stores read
/// as one load, which the CPU cannot forward). What that changes when something
/// is wrong:
/// - An argument that cannot be decoded, or bytes left over after the last one,
///   is damage (or a `Deserialize` that refuses what its `Serialize` wrote): the
///   whole chunk fails as it did when nothing ran before decoding, its results
///   withheld (an argument read wrongly shifts every later one), though the tasks
///   before the damage ran.
/// - An argument whose `Deserialize` panics is that item's panic; where its bytes
///   end is then unknown, so the rest of the chunk fails unread, and the items
///   before it keep their results.
fn run_chunk<C: Invoke>(
    capture: &PanicCapture,
    progress: &Progress<'_>,
    args: &[u8],
    count: u32,
    out: &mut Vec<u8>,
) -> Option<u32> {
    if u64::from(count) > wire::element_budget(args.len()) {
        fail_chunk("a chunk that says it holds more tasks than its bytes could (damaged message)", out);
        return None;
    }
    let start = out.len();
    let mut inputs = Arguments::<C::In>::new(args, count);
    call_all::<C>(capture, progress, &mut inputs, out);
    if inputs.reading {
        // The read never returned: the `Deserialize` panicked (that item's panic is
        // in `out`), somewhere inside the argument's bytes.
        inputs.end = ArgumentsEnd::Panicked;
    }
    match inputs.end {
        ArgumentsEnd::Read if !inputs.reader.is_empty() => {
            out.truncate(start);
            fail_chunk("trailing bytes after the chunk's arguments", out);
            None
        }
        ArgumentsEnd::Read => None,
        ArgumentsEnd::Damaged(e) => {
            out.truncate(start);
            fail_chunk(&decode_message::<C::In>(e), out);
            None
        }
        // Unless it was the last, the items after it were never read: the next one
        // fails with why, and the parent runs elsewhere the parts of a merged chunk
        // that lie wholly after it (other tasks of this function, whose arguments
        // are not at fault).
        ArgumentsEnd::Panicked if inputs.left > 0 => {
            fail_chunk(
                "an earlier argument of its chunk panicked as it was read (its `Deserialize`), \
                 so where the next one begins is unknown",
                out,
            );
            Some(count - inputs.left)
        }
        ArgumentsEnd::Panicked => None,
    }
}

/// A chunk's arguments, decoded one at a time as the items begin.
struct Arguments<'a, T> {
    reader: wire::Reader<'a>,
    /// The items not yet begun: an item whose decoding panics has begun.
    left: u32,
    /// An argument is being read: found so by the next one, its `Deserialize`
    /// panicked.
    reading: bool,
    end: ArgumentsEnd,
    of: PhantomData<fn() -> T>,
}

/// How a chunk's arguments ended.
enum ArgumentsEnd {
    /// Every one read (or not all yet).
    Read,
    /// One could not be decoded.
    Damaged(wire::WireError),
    /// One's `Deserialize` panicked: the rest cannot be found.
    Panicked,
}

impl<'a, T: DeserializeOwned> Arguments<'a, T> {
    fn new(args: &'a [u8], count: u32) -> Arguments<'a, T> {
        Arguments {
            reader: wire::Reader::new(args),
            left: count,
            reading: false,
            end: ArgumentsEnd::Read,
            of: PhantomData,
        }
    }

    /// Whether another item is to begin (its argument may still fail).
    fn more(&self) -> bool {
        self.left > 0 && !self.reading && matches!(self.end, ArgumentsEnd::Read)
    }

    /// The next argument, taking its item's place whatever comes of it.
    #[inline]
    fn next(&mut self) -> Option<T> {
        if !self.more() {
            return None;
        }
        self.left -= 1;
        self.reader.renew();
        self.reading = true;
        let read = self.reader.read::<T>();
        self.reading = false;
        match read {
            Ok(input) => Some(input),
            Err(e) => {
                self.end = ArgumentsEnd::Damaged(e);
                None
            }
        }
    }
}

/// The most bytes set aside ahead for a chunk's values (a count comes from shared
/// memory: a damaged one must not make a large argument type reserve gigabytes).
const PREALLOCATED: usize = 1 << 20;

/// How many of `n` values of `T`, each taking `extra` bytes more, to make room for
/// ahead: all of them, up to [`PREALLOCATED`] bytes.
fn preallocated<T>(n: usize, extra: usize) -> usize {
    n.min(PREALLOCATED / (std::mem::size_of::<T>() + extra).max(1))
}

fn decode_message<T>(e: wire::WireError) -> String {
    format!("cannot decode the arguments as `{}`: {e}", crate::names::type_name::<T>())
}

/// Calls the task on each argument in turn, appending each outcome to `out`. One
/// `catch_unwind` covers the run of items up to a panic (not one per item): the
/// panicking item's partial output is cut off, it becomes a panicked item, and the
/// items after it run under a fresh catch. At most `count` items are written.
fn call_all<C: Invoke>(
    capture: &PanicCapture,
    progress: &Progress<'_>,
    inputs: &mut Arguments<'_, C::In>,
    out: &mut Vec<u8>,
) {
    let count = inputs.left;
    out.reserve(preallocated::<C::Out>(count as usize, 1) * (1 + std::mem::size_of::<C::Out>()));
    let mut mark = out.len();
    loop {
        let run = capture.catch(|| {
            while inputs.more() {
                // Before the argument is decoded: decoding runs the user's
                // `Deserialize`, so a panic there is this item's panic, and a death
                // there (an abort, the OOM killer) is this item's, not a later one's
                // to kill the next worker with.
                mark = out.len();
                progress.began(count - inputs.left + 1);
                let Some(input) = inputs.next() else { return };
                let value = C::invoke(input);
                out.push(ITEM_OK);
                if let Err(e) = append(&value, out) {
                    out.pop();
                    out.push(ITEM_ENCODE_FAILED);
                    let _ = append(&format!("cannot serialize the result: {e}"), out);
                }
            }
        });
        match run {
            Ok(()) => return,
            Err((panic, _payload)) => {
                out.truncate(mark);
                out.push(ITEM_PANICKED);
                let _ = append(&panic, out);
            }
        }
    }
}

/// Starts a reply in `out`.
pub(crate) fn begin_reply(out: &mut Vec<u8>, id: u64, count: u32, kind: u32) {
    out.clear();
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
}

/// Marks a reply to chunk `id` whose items from `begun` on were never read (see
/// [`REPLY_UNREAD`]).
pub(crate) fn set_reply_unread(out: &mut [u8], key: TagKey, id: u64, begun: u32, kind: u32) {
    out[8..12].copy_from_slice(&begun.to_le_bytes());
    out[12..16].copy_from_slice(&(kind | REPLY_UNREAD | unread_check(key, id, begun)).to_le_bytes());
}

pub(crate) fn set_reply_elapsed(out: &mut [u8], nanos: u64) {
    out[16..24].copy_from_slice(&nanos.to_le_bytes());
}

/// The parent's view of a reply.
pub(crate) struct Reply<'a> {
    pub(crate) id: u64,
    pub(crate) count: u32,
    /// Without the [`REPLY_UNREAD`] flag and its check.
    pub(crate) kind: u32,
    /// Says the items from `count` on were never read (see [`REPLY_UNREAD`]):
    /// believed only once [`unread_checked`](Reply::unread_checked) says so.
    unread: Option<u32>,
    pub(crate) elapsed_ns: u64,
    pub(crate) items: &'a [u8],
}

impl<'a> Reply<'a> {
    pub(crate) fn parse(msg: &'a [u8]) -> Option<Reply<'a>> {
        let kind = u32_at(msg, 12)?;
        // Only a result's kind carries the flag: on any other the bits stay, and the
        // damaged kind is not one the parent acts on.
        let base = kind & (REPLY_UNREAD - 1);
        let flagged = kind & REPLY_UNREAD != 0 && matches!(base, REPLY_RESULT | REPLY_LAST_RESULT);
        let unread = flagged.then_some(kind & !(REPLY_UNREAD - 1) & !REPLY_UNREAD);
        Some(Reply {
            id: u64_at(msg, 0)?,
            count: u32_at(msg, 8)?,
            kind: if unread.is_some() { base } else { kind },
            unread,
            elapsed_ns: u64_at(msg, 16)?,
            items: msg.get(REPLY_HEADER..)?,
        })
    }

    /// Whether the reply says, with a check that holds under `key`, that the items
    /// from `count` on were never read.
    pub(crate) fn unread_checked(&self, key: TagKey) -> bool {
        // The hash only for a reply that says so (rare): not for every reply.
        self.unread.is_some_and(|check| check == unread_check(key, self.id, self.count))
    }

    /// The panic of an initializer-failed reply.
    pub(crate) fn init_failure(&self) -> String {
        match wire::from_bytes::<Panic>(self.items) {
            Ok(p) => format!("panicked at {}: {}", p.location, p.message),
            Err(_) => "the worker's initializer failed".to_owned(),
        }
    }
}

/// Reads the items of a reply one by one, as the task's result type.
pub(crate) struct Items<'a> {
    reader: wire::Reader<'a>,
}

impl<'a> Items<'a> {
    pub(crate) fn new(items: &'a [u8]) -> Items<'a> {
        Items { reader: wire::Reader::new(items) }
    }

    /// The next item. A damaged one leaves the reader at the end, so every later
    /// item fails too.
    #[inline]
    pub(crate) fn next<R: DeserializeOwned>(&mut self) -> Result<R, TaskError> {
        match self.reader.byte() {
            Some(ITEM_OK) => self.reader.read::<R>().map_err(|e| self.damaged(e, &result_of::<R>())),
            status => Err(self.failure(status)),
        }
    }

    /// Why an item that is not a result failed (or that the reply was damaged).
    #[cold]
    fn failure(&mut self, status: Option<u8>) -> TaskError {
        match status {
            None => TaskError::Decode("a reply holds fewer items than it says".into()),
            Some(ITEM_PANICKED) => match self.reader.read::<Panic>() {
                Ok(p) => TaskError::Panicked { message: p.message, location: p.location },
                Err(e) => self.damaged(e, "a panic"),
            },
            Some(status @ (ITEM_ENCODE_FAILED | ITEM_DECODE_FAILED)) => match self.reader.read::<String>() {
                Ok(why) if status == ITEM_ENCODE_FAILED => TaskError::Encode(why),
                Ok(why) => TaskError::Decode(why),
                Err(e) => self.damaged(e, "an error message"),
            },
            Some(_) => {
                self.reader.abandon();
                TaskError::Decode("a reply item has an unknown status (damaged message)".into())
            }
        }
    }

    #[cold]
    fn damaged(&mut self, e: wire::WireError, what: &str) -> TaskError {
        self.reader.abandon();
        TaskError::Decode(format!("cannot decode {what}: {e}"))
    }
}

#[cold]
fn result_of<R>() -> String {
    format!("the result as `{}`", crate::names::type_name::<R>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner of the task `f`, as a worker would find it.
    fn runner<F, A, R>(_: F) -> Runner
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned,
    {
        run_chunk::<Plain<F, A>>
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // The paper's key 00..0f; message 00..07 (one word) gives this output
        // (the reference implementation's vectors, entry 8).
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let m = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(siphash24(k0, k1, m), u64::from_le_bytes([0x62, 0x24, 0x93, 0x9a, 0x79, 0xf5, 0xf5, 0x93]));
    }

    #[test]
    #[cfg_attr(miri, ignore = "the board is shared memory (memfd), which Miri cannot make")]
    fn the_progress_board_is_believed_only_when_its_check_holds() {
        let key = TagKey(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        let board = RawArray::<u64>::zeroed(2 * Progress::WORDS).unwrap();
        let progress = Progress::new(&board, 1, key);
        progress.took(41);
        assert_eq!(Progress::read(&board, 1, key), Some((41, 0)));
        progress.began(1);
        progress.began(2);
        assert_eq!(Progress::read(&board, 1, key), Some((41, 2)));
        // A count damaged lower (the parent would run again a task that ran): not
        // believed, whatever its value, nor an id damaged, nor another pool's key.
        let word = board.get(Progress::WORDS + 1).unwrap();
        for damaged in [word - 1, word & 0xFFFF_FFFF_0000_0000, 1, 0, word ^ (1 << 40)] {
            board.set(Progress::WORDS + 1, damaged).unwrap();
            assert_eq!(Progress::read(&board, 1, key), None, "{damaged:#x}");
        }
        board.set(Progress::WORDS + 1, word).unwrap();
        board.set(Progress::WORDS, 40).unwrap();
        assert_eq!(Progress::read(&board, 1, key), None, "a count paired with another chunk's id");
        board.set(Progress::WORDS, 41).unwrap();
        assert_eq!(Progress::read(&board, 1, TagKey(1, 2)), None);
        assert_eq!(Progress::read(&board, 1, key), Some((41, 2)));
        // Out of the board: nothing.
        assert_eq!(Progress::read(&board, 2, key), None);
    }

    #[test]
    fn a_short_reply_is_believed_only_with_its_check() {
        let key = TagKey(7, 9);
        let mut out = Vec::new();
        begin_reply(&mut out, 41, 200_000, REPLY_LAST_RESULT);
        set_reply_unread(&mut out, key, 41, 65_538, REPLY_LAST_RESULT);
        let reply = Reply::parse(&out).unwrap();
        assert_eq!((reply.id, reply.count, reply.kind), (41, 65_538, REPLY_LAST_RESULT));
        assert!(reply.unread_checked(key));
        assert!(!reply.unread_checked(TagKey(7, 8)), "another pool's key");
        // Damaged: a count lowered (tasks that ran would run again: in its low or
        // its high bits), an id changed, the flag set on a whole reply: not believed.
        for (at, byte) in [(8, 1u8), (10, 0), (0, 40), (14, 0)] {
            let mut bad = out.clone();
            bad[at] = byte;
            assert!(!Reply::parse(&bad).unwrap().unread_checked(key), "byte {at} = {byte}");
        }
        let mut whole = Vec::new();
        begin_reply(&mut whole, 41, 2, REPLY_RESULT | REPLY_UNREAD);
        assert!(!Reply::parse(&whole).unwrap().unread_checked(key));
        begin_reply(&mut whole, 41, 2, REPLY_RESULT);
        assert!(!Reply::parse(&whole).unwrap().unread_checked(key));
        // The flag on a kind that is not a result's: the kind stays unknown.
        begin_reply(&mut whole, 0, 0, REPLY_READY | REPLY_UNREAD | (5 << 17));
        assert_ne!(Reply::parse(&whole).unwrap().kind, REPLY_READY);
    }

    #[test]
    fn a_damaged_item_fails_that_item_and_the_rest() {
        let mut out = Vec::new();
        out.push(ITEM_OK);
        append(&7u64, &mut out).unwrap();
        out.push(9); // unknown status
        let mut items = Items::new(&out);
        assert_eq!(items.next::<u64>(), Ok(7));
        assert!(matches!(items.next::<u64>(), Err(TaskError::Decode(_))));
        assert!(matches!(items.next::<u64>(), Err(TaskError::Decode(_))));
    }

    #[test]
    fn a_chunk_runs_each_item_and_catches_each_panic() {
        fn halve(x: u64) -> u64 {
            assert!(x.is_multiple_of(2), "odd: {x}");
            x / 2
        }
        let mut args = Vec::new();
        for x in [4u64, 5, 6] {
            append(&x, &mut args).unwrap();
        }
        let mut out = Vec::new();
        let capture = PanicCapture::begin(true);
        runner(halve)(&capture, &Progress::none(), &args, 3, &mut out);
        let mut items = Items::new(&out);
        assert_eq!(items.next::<u64>(), Ok(2));
        assert!(matches!(items.next::<u64>(), Err(TaskError::Panicked { message, .. }) if message == "odd: 5"));
        assert_eq!(items.next::<u64>(), Ok(3));
        // A trailing byte (a damaged length) fails the whole chunk: no result of it
        // is believed, though its tasks ran.
        args.push(0);
        out.clear();
        runner(halve)(&capture, &Progress::none(), &args, 3, &mut out);
        let mut items = Items::new(&out);
        assert!(matches!(items.next::<u64>(), Err(TaskError::Decode(why)) if why.contains("trailing")));
        assert!((0..2).all(|_| matches!(items.next::<u64>(), Err(TaskError::Decode(_)))));
    }

    /// A `u64` argument whose `Deserialize` panics on 13 after reading it, refuses
    /// 14, and panics before reading anything when it is the read `PANIC_ON_READ`
    /// says.
    struct Picky(u64);

    impl<'de> serde::Deserialize<'de> for Picky {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Picky, D::Error> {
            let reads = PICKY_READS.with(|n| {
                n.set(n.get() + 1);
                n.get()
            });
            if PANIC_ON_READ.with(std::cell::Cell::get) == reads {
                PANIC_ON_READ.with(|p| p.set(0));
                panic!("cannot even begin");
            }
            match u64::deserialize(d)? {
                13 => panic!("cannot read 13"),
                14 => Err(serde::de::Error::custom("will not read 14")),
                x => Ok(Picky(x)),
            }
        }
    }

    impl Serialize for Picky {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(self.0)
        }
    }

    thread_local! {
        static PICKY_READS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        /// The read (counting from 1) that panics before it takes a byte; 0: none.
        static PANIC_ON_READ: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// Runs `f`'s chunk of `args` as a worker would; the reply's items, which must be
    /// exactly `count` or fewer (the parent fails the missing ones).
    fn run_items<A: Serialize, F, I, R>(f: F, args: &[A], count: u32) -> Vec<Result<R, TaskError>>
    where
        F: Fn(I) -> R + Copy + 'static,
        I: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned,
    {
        let mut bytes = Vec::new();
        for a in args {
            append(a, &mut bytes).unwrap();
        }
        let capture = PanicCapture::begin(true);
        let mut out = vec![0xAA]; // a reply's header before the items
        PICKY_READS.with(|n| n.set(0));
        runner(f)(&capture, &Progress::none(), &bytes, count, &mut out);
        assert_eq!(out[0], 0xAA, "the runner wrote over what came before its items");
        let mut items = Items::new(&out[1..]);
        let got: Vec<Result<R, TaskError>> = (0..count).map(|_| items.next::<R>()).collect();
        assert!(items.reader.is_empty(), "a reply of more items than the chunk's count");
        got
    }

    fn panicked(r: &Result<u64, TaskError>, what: &str) -> bool {
        matches!(r, Err(TaskError::Panicked { message, .. }) if message == what)
    }

    fn decode_failed(r: &Result<u64, TaskError>) -> bool {
        matches!(r, Err(TaskError::Decode(_)))
    }

    #[test]
    fn an_argument_whose_deserialize_panics_fails_itself_and_the_rest_of_its_chunk() {
        fn double(p: Picky) -> u64 {
            p.0 * 2
        }
        // After reading its bytes: the items before keep their results, the rest
        // cannot be found (no item runs on a misread argument).
        let got = run_items(double, &[1u64, 13, 2, 3], 4);
        assert_eq!(got[0], Ok(2));
        assert!(panicked(&got[1], "cannot read 13"), "{:?}", got[1]);
        assert!(got[2..].iter().all(decode_failed), "{got:?}");
        assert_eq!(PICKY_READS.with(std::cell::Cell::get), 2, "nothing read after the panic");
        // The last item: nothing after it to fail.
        let got = run_items(double, &[1u64, 13], 2);
        assert_eq!(got[0], Ok(2));
        assert!(panicked(&got[1], "cannot read 13"));
        // Before reading a byte (it would read the same bytes again, and panic
        // again, forever, were the item not counted as taken).
        PANIC_ON_READ.with(|p| p.set(2));
        let got = run_items(double, &[1u64, 2, 3], 3);
        assert_eq!(got[0], Ok(2));
        assert!(panicked(&got[1], "cannot even begin"), "{:?}", got[1]);
        assert!(decode_failed(&got[2]));
        // In the middle of a tuple: the next pair is not read from the middle of this one.
        fn first(p: (Picky, u64)) -> u64 {
            p.0 .0 + p.1
        }
        let pairs = [(1u64, 10u64), (13, 20), (2, 30)];
        let got = run_items(first, &pairs, 3);
        assert_eq!(got[0], Ok(11));
        assert!(panicked(&got[1], "cannot read 13"));
        assert!(decode_failed(&got[2]), "{:?}", got[2]);
    }

    #[test]
    fn an_argument_that_cannot_be_decoded_fails_its_whole_chunk() {
        fn double(p: Picky) -> u64 {
            p.0 * 2
        }
        // Refused (or damaged): what comes after may be misread, and what came
        // before may have been, so no result of the chunk is believed.
        let got = run_items(double, &[1u64, 14, 2], 3);
        assert!(matches!(&got[0], Err(TaskError::Decode(why)) if why.contains("will not read 14")), "{got:?}");
        assert!(got.iter().all(decode_failed));
        // A count beyond the bytes: the same.
        let got = run_items(double, &[5u64], 2);
        assert!(got.iter().all(decode_failed), "{got:?}");
    }

    #[test]
    fn a_damaged_count_fails_the_chunk_at_once_whatever_it_says() {
        fn unit(_: ()) -> u8 {
            1
        }
        let capture = PanicCapture::begin(true);
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        // Arguments that take no bytes: a scribbled count of 4 G of them ends at the
        // budget, with one failed item, not 4 G calls or a 40 GB reply.
        runner(unit)(&capture, &Progress::none(), &[], u32::MAX, &mut out);
        let mut items = Items::new(&out);
        assert!(matches!(items.next::<u8>(), Err(TaskError::Decode(why)) if why.contains("more tasks")));
        assert!(matches!(items.next::<u8>(), Err(TaskError::Decode(_))));
        assert!(out.len() < 200);
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
        // A plausible count of them runs.
        out.clear();
        runner(unit)(&capture, &Progress::none(), &[], 3, &mut out);
        let mut items = Items::new(&out);
        assert!((0..3).all(|_| items.next::<u8>() == Ok(1)));
    }

    #[test]
    fn a_result_that_panics_while_it_is_written_is_that_items_panic_alone() {
        /// Writes half of itself, then panics (a `Serialize` impl with a bug).
        #[derive(serde::Deserialize)]
        struct Half(u64);
        impl Serialize for Half {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                assert!(self.0 != 2, "cannot write 2");
                s.serialize_u64(self.0)
            }
        }
        impl Serialize for Pair {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&7u64)?;
                t.serialize_element(&self.0)?;
                t.end()
            }
        }
        #[derive(serde::Deserialize)]
        struct Pair(Half);
        fn wrap(x: u64) -> Pair {
            Pair(Half(x))
        }
        let mut args = Vec::new();
        for x in [1u64, 2, 3] {
            append(&x, &mut args).unwrap();
        }
        let mut out = Vec::new();
        let capture = PanicCapture::begin(true);
        runner(wrap)(&capture, &Progress::none(), &args, 3, &mut out);
        let mut items = Items::new(&out);
        assert_eq!(items.next::<(u64, u64)>(), Ok((7, 1)));
        assert!(
            matches!(items.next::<(u64, u64)>(), Err(TaskError::Panicked { message, .. }) if message == "cannot write 2")
        );
        assert_eq!(items.next::<(u64, u64)>(), Ok((7, 3)));
    }
}

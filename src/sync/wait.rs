//! How shmproc waits: a deadline type, and spin-then-sleep on a futex word.
//!
//! A hand-off between two processes that are both running costs ~30 ns when the
//! waiter spins and ~50 µs when it sleeps in the kernel and must be woken across
//! CPUs. So every blocking operation first spins for a few microseconds (with
//! exponential back-off, so that a spinner does not hammer the cache line), then
//! sleeps on a futex: an idle waiter burns no CPU.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::{self, FutexWait};

/// How long a blocking call may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Do not wait at all (`try_*`).
    Never,
    /// Wait until this instant (`*_timeout`, `*_deadline`).
    Until(Instant),
    /// Wait as long as it takes.
    Forever,
}

impl Wait {
    /// A wait of `d` from now; a timeout too large to represent waits forever.
    pub(crate) fn timeout(d: Duration) -> Wait {
        Instant::now().checked_add(d).map_or(Wait::Forever, Wait::Until)
    }

    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Never => Some(Instant::now()),
            Wait::Until(d) => Some(d),
            Wait::Forever => None,
        }
    }

    pub(crate) fn expired(self) -> bool {
        match self {
            Wait::Never => true,
            Wait::Until(d) => Instant::now() >= d,
            Wait::Forever => false,
        }
    }
}

/// How often a sleeper re-checks its condition even without a wake-up (100 ms).
/// Waking needs counters in shared memory to be right (who sleeps, who was
/// notified); this bounds what a scribbled or crash-damaged counter can cost a
/// sleeper to a delay. Tests of the wake-ups turn it off
/// ([`set_safety_poll`]), since it would hide a lost wake-up as a mere delay.
pub(crate) fn safety_poll() -> Duration {
    #[cfg(test)]
    if let Some(here) = POLL_HERE.with(std::cell::Cell::get) {
        return here;
    }
    Duration::from_nanos(SAFETY_POLL_NS.load(Ordering::Relaxed))
}

#[cfg(test)]
thread_local! {
    static POLL_HERE: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Changes [`safety_poll`] for this thread only (a unit test's model of the
/// wake-ups turns it off without taking the net away from tests running beside it).
#[cfg(test)]
pub(crate) fn set_safety_poll_here(d: Option<Duration>) {
    POLL_HERE.with(|p| p.set(d));
}

static SAFETY_POLL_NS: AtomicU64 = AtomicU64::new(100_000_000);

/// Changes [`safety_poll`] for this process (and the children it forks): test support.
pub(crate) fn set_safety_poll(d: Duration) {
    SAFETY_POLL_NS.store(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
}

/// Rounds of spinning before sleeping: a budget of `2^rounds - 1` pause
/// instructions (see [`spin_rounds`]), so the default whole spin is 511 pauses. How
/// long that is depends on the CPU: one to two microseconds where this was first
/// tuned, 12-17 µs on the AMD EPYC this machine later ran on (a pause there is 23-34
/// ns). Either is long enough to catch a
/// pipe round trip between two processes (~0.4 µs), which 127 short pauses were not
/// (measured: 26 µs median round trip with 7 rounds, 0.55 µs with 9).
pub(crate) const DEFAULT_SPIN_ROUNDS: u32 = 9;

/// The spin budget in force; changed only by benchmarks that measure what spinning buys.
static SPIN_ROUNDS: AtomicU32 = AtomicU32::new(DEFAULT_SPIN_ROUNDS);

pub(crate) fn set_spin_rounds(rounds: u32) {
    SPIN_ROUNDS.store(rounds.min(16), Ordering::Relaxed);
}

/// Calls `attempt` until it succeeds or the spin budget is spent.
#[inline]
pub(crate) fn spin<R>(attempt: impl FnMut() -> Option<R>) -> Option<R> {
    spin_rounds(SPIN_ROUNDS.load(Ordering::Relaxed), attempt)
}

/// Pauses between two looks, at most, until a quarter of the spin so far is more.
const LOOK_EVERY: u32 = 2;

/// [`spin`] with a budget of `rounds` of its own (at most 16): `2^rounds - 1` pauses
/// in all. The pauses between two looks are 1, then 2, until a quarter of the time
/// spun so far is more, then that quarter: a wait is seen at most a quarter late
/// (or two pauses, ~60 ns on this machine's CPU), and a whole default spin looks 25
/// times (24 gaps, and a look after the last).
///
/// History, measured in alternating runs of the benchmark binary: the gaps first
/// doubled all the way (to 256), and a 4 KiB pipe round trip, whose reply comes
/// some 40 pauses in, waited ~0.7 µs more for it; then they doubled to 16 and grew
/// by a quarter after that (4 KiB round trip 2.6-3.3 → 2.0-2.3 µs), but a reply
/// coming 8-30 pauses in (an 8-byte round trip's) was still seen up to 16 pauses
/// late; now 8-byte round trips read 0.38-0.47 µs where they read 0.47-0.67, and
/// 4 KiB ones 1.65-1.84 where they read 2.03-2.04 (six pairs). Streams of small
/// messages, joinable queues, semaphores and the pool's workloads showed no change
/// beyond this machine's noise (a consumer looking more often could pull a
/// streaming producer's lines; the queue's pacing holds such a consumer back).
#[inline]
pub(crate) fn spin_rounds<R>(rounds: u32, mut attempt: impl FnMut() -> Option<R>) -> Option<R> {
    for gap in look_gaps(rounds) {
        if let Some(r) = attempt() {
            return Some(r);
        }
        for _ in 0..gap {
            std::hint::spin_loop();
        }
    }
    attempt()
}

/// The pauses between the looks of a spin of `rounds` (see [`spin_rounds`]),
/// `2^rounds - 1` in all.
#[inline]
fn look_gaps(rounds: u32) -> impl Iterator<Item = u32> {
    let budget = (1u32 << rounds.min(16)) - 1;
    let (mut spent, mut gap) = (0, 1u32);
    std::iter::from_fn(move || {
        if spent >= budget {
            return None;
        }
        let n = gap.min(budget - spent);
        spent += n;
        gap = (gap * 2).min((spent / 4).max(LOOK_EVERY));
        Some(n)
    })
}

/// Sleeps while `*word == expected`, until woken, until `wait`'s deadline, or at
/// most until `poll` from now when given (for callers that must re-check something
/// the futex cannot tell them, such as whether a peer process is still alive).
/// Returns `false` once the deadline has passed.
pub(crate) fn sleep_on(word: &AtomicU32, expected: u32, wait: Wait, poll: Option<Duration>) -> bool {
    let deadline = wait.deadline();
    let slice_end = poll.and_then(|p| Instant::now().checked_add(p));
    let until = match (deadline, slice_end) {
        (Some(d), Some(s)) => Some(d.min(s)),
        (d, s) => d.or(s),
    };
    match sys::futex_wait(word, expected, until) {
        FutexWait::Woken => true,
        FutexWait::TimedOut => !wait.expired(),
    }
}

/// Wakes up to `n` sleepers on `word`; how many it woke.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> u32 {
    sys::futex_wake(word, n)
}

/// How long a waiter whose spin ran out keeps giving its CPU away before it sleeps.
pub(crate) const YIELD_TIME: Duration = Duration::from_micros(100);

/// A yield that kept its thread off the CPU this long lost it to a thread that
/// does not hand it back (a busy program): on an idle machine a yield returns
/// within microseconds, and beside busy loops one in two took 2 to 5 ms here
/// (`sched_yield` timed 2 000 times, with and without 4 busy loops on 2 CPUs).
/// Well above what our own threads keep a CPU for between two looks (a fork, a
/// reply's callbacks): at 200 µs an idle machine was taken for busy now and then.
const LOST_CPU: Duration = Duration::from_millis(1);

/// How long every waiter goes straight from spinning to sleeping once a yield
/// lost the CPU. A yielded thread stays runnable and waits for the running one's
/// time slice to end, milliseconds on a busy machine, when the thing it waits for
/// comes; a sleeper is woken, and its wake-up preempts. After this, one yield
/// looks again (one lost slice per look).
const BUSY_FOR_MS: u64 = 100;

/// Whether a yield lost the CPU lately: until when (on [`sys::coarse_millis`]'s
/// clock) the machine counts as busy, 0 when it does not.
struct BusyMark(AtomicU64);

impl BusyMark {
    fn is_set(&self) -> bool {
        // Until a yield is first lost, no clock is read.
        self.0.load(Ordering::Relaxed) != 0 && self.is_set_at(sys::coarse_millis())
    }

    fn is_set_at(&self, now_ms: u64) -> bool {
        now_ms < self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(sys::coarse_millis() + BUSY_FOR_MS, Ordering::Relaxed);
    }
}

/// The process's mark: a yield lost by one thread makes them all sleep at once.
static BUSY: BusyMark = BusyMark(AtomicU64::new(0));

/// Between spinning and sleeping: yields the CPU while looking for `ready()`, for
/// up to [`YIELD_TIME`]. A waiter sharing a CPU with the process it waits for (more
/// processes than CPUs) thus lets it run, and is not asleep when it delivers: a
/// sleeper, once woken, is often run on the waker's CPU, taking it from the waker.
/// Measured with a producer and two consumers on two CPUs (`joinable_queue`): 1 to
/// 12 M items/s from run to run, the producer preempted up to 2 700 times in a
/// 50 000-item run, without this phase; 11.6 to 12.4 M items/s, no preemption, with.
///
/// On a busy machine it gives up at once (see [`LOST_CPU`]): a yield there
/// hands the CPU to another program for its whole time slice. Measured beside 4
/// busy loops on 2 CPUs, alternating with the same code yielding regardless: pool
/// `map` 12-20 ms → 0.2-0.4 ms, `imap` 116-119 → 2-5 ms, an executor's 20 000
/// submits 92-99 → 42-60 ms.
pub(crate) fn yield_until(wait: Wait, ready: &mut impl FnMut() -> bool) -> bool {
    yield_for(YIELD_TIME, wait, ready)
}

/// [`yield_until`] for up to `time`.
pub(crate) fn yield_for(time: Duration, wait: Wait, ready: &mut impl FnMut() -> bool) -> bool {
    yield_with(&BUSY, time, wait, ready, std::thread::yield_now, Instant::now)
}

/// [`yield_for`], giving the CPU away with `give_way`, timed by `clock`, the lost
/// yields marked in `busy`.
fn yield_with(
    busy: &BusyMark,
    time: Duration,
    wait: Wait,
    ready: &mut impl FnMut() -> bool,
    mut give_way: impl FnMut(),
    mut clock: impl FnMut() -> Instant,
) -> bool {
    if time.is_zero() || busy.is_set() {
        return false;
    }
    let start = clock();
    let end = wait.deadline().map_or(start + time, |d| d.min(start + time));
    let mut before = start;
    while before < end {
        give_way();
        if ready() {
            return true;
        }
        let after = clock();
        if after.duration_since(before) >= LOST_CPU {
            busy.set();
            return false;
        }
        before = after;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves `step` at each reading, from now: a test's time that no
    /// busy test machine can stretch.
    fn ticking(step: Duration) -> impl FnMut() -> Instant {
        let mut now = Instant::now();
        move || {
            now += step;
            now
        }
    }

    /// A yield that kept the thread off its CPU for a time slice marks the machine
    /// busy: the waiter goes to sleep, and so do the next ones, without yielding,
    /// until the mark runs out.
    #[test]
    fn a_yield_that_lost_the_cpu_makes_waiters_sleep_at_once() {
        let busy = BusyMark(AtomicU64::new(0));
        let (mut yields, mut looks) = (0, 0);
        let before = sys::coarse_millis();
        let ready = yield_with(
            &busy,
            YIELD_TIME,
            Wait::Forever,
            &mut || {
                looks += 1;
                false
            },
            || yields += 1,
            ticking(LOST_CPU),
        );
        assert!(!ready);
        assert_eq!((yields, looks), (1, 1), "it gave up after the first lost yield");
        let until = busy.0.load(Ordering::Relaxed);
        assert!(until >= before + BUSY_FOR_MS, "marked busy for BUSY_FOR_MS");
        assert!(busy.is_set_at(until - 1) && !busy.is_set_at(until));
        // A waiter now skips the yields altogether.
        busy.0.store(u64::MAX, Ordering::Relaxed);
        let mut yields = 0;
        let skipped = yield_with(&busy, YIELD_TIME, Wait::Forever, &mut || false, || yields += 1, Instant::now);
        assert!(!skipped);
        assert_eq!(yields, 0);
        // What became ready while the CPU was lost is still taken.
        let fresh = BusyMark(AtomicU64::new(0));
        assert!(yield_with(&fresh, YIELD_TIME, Wait::Forever, &mut || true, || {}, ticking(LOST_CPU)));
    }

    /// Quick yields (the CPU handed back at once) go on until the yield time is up,
    /// and leave the machine unmarked.
    #[test]
    fn quick_yields_last_the_yield_time() {
        let busy = BusyMark(AtomicU64::new(0));
        let mut yields = 0u32;
        let step = Duration::from_micros(10);
        let ready = yield_with(&busy, YIELD_TIME, Wait::Forever, &mut || false, || yields += 1, ticking(step));
        assert!(!ready && !busy.is_set());
        // One reading before the first yield, one after each.
        assert_eq!(yields, YIELD_TIME.as_micros().div_ceil(step.as_micros()) as u32);
    }

    /// The gaps between a spin's looks: 1, then [`LOOK_EVERY`], then never more than
    /// a quarter of what was spun before them; the budget spent exactly.
    #[test]
    fn a_spin_looks_again_within_a_quarter_of_what_it_has_spun() {
        let budget = (1u32 << DEFAULT_SPIN_ROUNDS) - 1;
        let mut spent = 0;
        let gaps: Vec<(u32, u32)> = look_gaps(DEFAULT_SPIN_ROUNDS)
            .map(|n| {
                spent += n;
                (spent - n, n)
            })
            .collect();
        assert_eq!(gaps.iter().map(|&(_, n)| n).sum::<u32>(), budget);
        assert_eq!(
            gaps[..8].iter().map(|&(_, n)| n).collect::<Vec<_>>(),
            [1, 2, 2, 2, 2, 2, 2, 3],
            "a reply some 10 pauses in is seen within two"
        );
        for &(before, n) in &gaps[1..] {
            assert!(n <= (before / 4).max(LOOK_EVERY), "a gap of {n} after {before} pauses");
        }
        // Not a look every pause: a waiter would pull the line it watches as
        // often as its writer writes it.
        assert!(gaps.len() <= 24, "{} gaps between looks in a whole spin", gaps.len());
        // The attempt is made after the budget too, and a success ends the spin.
        let mut calls = 0;
        assert_eq!(
            spin_rounds(0, || {
                calls += 1;
                None::<()>
            }),
            None
        );
        assert_eq!(calls, 1);
        let mut calls = 0;
        assert_eq!(
            spin_rounds(9, || {
                calls += 1;
                (calls == 7).then_some(7)
            }),
            Some(7)
        );
    }
}

//! Models of the ring's protocols, run step by step on real rings (threads in one
//! process: a thread "killed" at a step stops there with its lock held and ends,
//! which the robust lock sees as its owner's death).
//!
//! - Commit: a put or a get killed at every one of its steps leaves each message
//!   whole or absent (none torn, none twice), `JoinableQueue`'s unfinished count
//!   equal to the committed puts not marked done, and the queue usable.
//! - Wake-up: every interleaving of a sleeper's steps (read the sequence, count
//!   itself, ask the lock to report, look once more, sleep) with a waker's (commit,
//!   release, wake) ends with the sleeper awake, with the safety poll off: a lost
//!   wake-up shows as a sleeper still asleep.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::channel::Queue;
use crate::steps::{self, Step};
use crate::sync::wait::{set_safety_poll_here, Wait};

const PATIENCE: Duration = Duration::from_secs(10);

fn queue(joinable: bool) -> Queue<Vec<u8>> {
    let b = Queue::<Vec<u8>>::builder().capacity(4096);
    if joinable {
        (*b.build_joinable().unwrap()).clone()
    } else {
        b.build().unwrap()
    }
}

/// A queue holding `first`, then 20 bytes of 2.
fn holding(joinable: bool, first: &[u8]) -> Queue<Vec<u8>> {
    let q = queue(joinable);
    q.put_bytes_with(first, Wait::timeout(PATIENCE)).unwrap();
    q.put_bytes_with(&[2; 20], Wait::timeout(PATIENCE)).unwrap();
    q
}

/// Everything in `q` now, in order (each call within `PATIENCE`).
fn drain(q: &Queue<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while q.get_bytes_into(&mut buf, Wait::timeout(Duration::from_millis(20))).is_ok() {
        out.push(std::mem::take(&mut buf));
    }
    out
}

/// Puts 40 bytes of 4 into `q`, whose last holder was killed (the put takes the dead
/// holder's lock and succeeds), then takes everything.
fn used_after_a_kill(q: &Queue<Vec<u8>>) -> Vec<Vec<u8>> {
    q.put_bytes_with(&[4; 40], Wait::timeout(PATIENCE)).unwrap();
    drain(q)
}

/// Runs `op` on a thread that dies at the `step`th point named `prefix...`, and
/// ends; whether it died there, and whether `op` succeeded.
fn killed_at(step: u32, prefix: &'static str, op: impl FnOnce() -> bool + Send + 'static) -> (bool, bool) {
    let op = std::thread::spawn(move || {
        let died = steps::die_at(prefix, step);
        let ok = op();
        steps::clear();
        (died.get(), ok)
    });
    join_within(op, prefix)
}

/// `thread`'s result, failing the test if it has not ended within twice
/// `PATIENCE` (every wait inside has a time-out: longer means a hang).
fn join_within<T>(thread: std::thread::JoinHandle<T>, what: &str) -> T {
    let end = Instant::now() + 2 * PATIENCE;
    while !thread.is_finished() {
        assert!(Instant::now() < end, "{what}: the thread did not finish in time");
        std::thread::sleep(Duration::from_millis(1));
    }
    thread.join().unwrap()
}

#[test]
fn a_put_or_a_get_killed_at_any_step_leaves_each_message_whole_or_absent() {
    let mut kills = 0;
    // Small messages travel in the ring, large ones (over a quarter of it) in side segments.
    for (joinable, size) in [(false, 30), (true, 30), (false, 2000), (true, 2000)] {
        let first = vec![1u8; size];
        for step in 0.. {
            let q = holding(joinable, &first);
            let q2 = q.clone();
            let third = vec![3u8; size];
            let (died, ok) =
                killed_at(step, "put:", move || q2.put_bytes_with(&third, Wait::timeout(PATIENCE)).is_ok());
            if !died {
                assert!(ok, "put {size} B: the put failed without a kill");
                break;
            }
            kills += 1;
            let got = used_after_a_kill(&q);
            let committed = got.len() == 4;
            let mut expect = vec![first.clone(), vec![2; 20]];
            if committed {
                expect.push(vec![3; size]);
            }
            expect.push(vec![4; 40]);
            assert_eq!(got, expect, "put of {size} B killed at step {step}: torn or lost");
            if joinable {
                let q = JoinableView(&q);
                assert_eq!(q.unfinished(), expect.len(), "put killed at step {step}: unfinished count");
            }
        }
        for step in 0.. {
            let q = holding(joinable, &first);
            let q2 = q.clone();
            let (died, ok) = killed_at(step, "get:", move || {
                let mut buf = Vec::new();
                q2.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).is_ok() && buf == vec![1u8; size]
            });
            if !died {
                assert!(ok, "get of {size} B: the get failed without a kill");
                break;
            }
            kills += 1;
            let got = used_after_a_kill(&q);
            // A consumer killed after its commit took the message with it (lost to
            // that consumer, as documented); before it, the message is still there.
            let taken = got.len() == 2;
            let mut expect = if taken { vec![] } else { vec![first.clone()] };
            expect.extend([vec![2; 20], vec![4; 40]]);
            assert_eq!(got, expect, "get of {size} B killed at step {step}: torn or delivered twice");
            if joinable {
                let view = JoinableView(&q);
                // Nothing was marked done: every committed put is unfinished.
                assert_eq!(view.unfinished(), 3, "get killed at step {step}: unfinished count");
                for _ in 0..3 {
                    assert!(view.task_done());
                }
                assert!(!view.task_done(), "more task_done than puts");
                assert!(view.join_in_time());
            }
        }
    }
    assert!(kills >= 28, "only {kills} kills");
}

/// `put_bytes_many_now` killed at every step of its run of three messages leaves
/// a prefix of them, each whole (the ones committed before the kill), and a usable
/// queue.
#[test]
fn a_run_of_puts_killed_at_any_step_leaves_a_whole_prefix() {
    let run: Vec<Vec<u8>> = (3u8..6).map(|b| vec![b; 30]).collect();
    let mut kills = 0;
    for joinable in [false, true] {
        for step in 0.. {
            let q = holding(joinable, &[1; 30]);
            let (q2, run2) = (q.clone(), run.clone());
            let (died, ok) = killed_at(step, "put:", move || {
                let messages: Vec<&[u8]> = run2.iter().map(Vec::as_slice).collect();
                matches!(q2.put_bytes_many_now(messages), Ok(3))
            });
            if !died {
                assert!(ok, "the run was not put whole without a kill");
                break;
            }
            kills += 1;
            let got = used_after_a_kill(&q);
            let committed = got.len() - 3;
            let mut expect = vec![vec![1; 30], vec![2; 20]];
            expect.extend(run[..committed].iter().cloned());
            expect.push(vec![4; 40]);
            assert_eq!(got, expect, "a run killed at step {step}: torn, lost or out of order");
            if joinable {
                assert_eq!(JoinableView(&q).unfinished(), expect.len(), "a run killed at step {step}");
            }
        }
    }
    // Three messages, a header, a payload and a commit each, and the lock: 10 steps.
    assert_eq!(kills, 2 * 10);
}

/// A run of puts takes what fits, in order, and stops before a message the ring
/// holds only in a side segment; a closed queue takes none.
#[test]
fn a_run_of_puts_stops_where_the_ring_is_full_or_a_message_is_large() {
    let q = queue(false);
    let small = [7u8; 1000];
    let large = [8u8; 2000];
    let messages: Vec<&[u8]> = vec![&small, &small, &large, &small];
    assert!(matches!(q.put_bytes_many_now(messages), Ok(2)), "stops before the side-segment message");
    let room_for_two = q.put_bytes_many_now([&small[..]; 4]);
    // Frames of 1 008 bytes: four fill the 4 KiB ring.
    assert!(matches!(room_for_two, Ok(2)), "room for two more: {room_for_two:?}");
    assert_eq!(drain(&q), vec![small.to_vec(); 4]);
    q.close();
    assert!(matches!(q.put_bytes_many_now([&small[..]]), Err(crate::SendTimeoutError::Disconnected(()))));
    // A checksummed ring: each message of a run carries its own checksum.
    let q = Queue::<Vec<u8>>::builder().capacity(4096).checksum(true).build().unwrap();
    let run: Vec<Vec<u8>> = (1u8..4).map(|b| vec![b; 100 * usize::from(b)]).collect();
    let messages: Vec<&[u8]> = run.iter().map(Vec::as_slice).collect();
    assert!(matches!(q.put_bytes_many_now(messages), Ok(3)));
    assert_eq!(drain(&q), run);
}

/// A joinable ring's counter, seen through the queue's raw ring.
struct JoinableView<'a>(&'a Queue<Vec<u8>>);

impl JoinableView<'_> {
    fn unfinished(&self) -> usize {
        self.0.raw_ring().unfinished() as usize
    }
    fn task_done(&self) -> bool {
        self.0.raw_ring().task_done()
    }
    fn join_in_time(&self) -> bool {
        self.0.raw_ring().wait_all_done(Wait::timeout(PATIENCE))
    }
}

/// Where a held thread is: at its next point, or done.
enum At {
    Point,
    Done,
}

/// A thread that stops at each point named with one of `names`, tells `at`, and
/// goes on when told (`go`). After `hold` points it stops no more.
struct Held {
    at: mpsc::Receiver<At>,
    go: mpsc::Sender<()>,
    done: bool,
}

impl Held {
    fn start(
        names: &'static [&'static str],
        hold: u32,
        body: impl FnOnce() -> bool + Send + 'static,
    ) -> (Held, std::thread::JoinHandle<bool>) {
        let (at_tx, at) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            // No safety net: a lost wake-up must show as a sleeper that stays asleep.
            set_safety_poll_here(Some(Duration::from_secs(3600)));
            let tell = at_tx.clone();
            let mut n = 0;
            steps::set(move |name| {
                if n < hold && names.iter().any(|p| name.starts_with(p)) {
                    let _ = tell.send(At::Point);
                    n += 1;
                    let _ = go_rx.recv_timeout(PATIENCE);
                }
                Step::Go
            });
            let ok = body();
            steps::clear();
            let _ = at_tx.send(At::Done);
            ok
        });
        (Held { at, go, done: false }, handle)
    }

    /// Waits until the thread is at its next point (`true`) or done.
    fn arrive(&mut self) -> bool {
        if self.done {
            return false;
        }
        match self.at.recv_timeout(PATIENCE) {
            Ok(At::Point) => true,
            Ok(At::Done) | Err(_) => {
                self.done = true;
                false
            }
        }
    }

    fn release(&self) {
        let _ = self.go.send(());
    }
}

/// Every way of placing the waker's `w` steps among the sleeper's `s + 1` gaps:
/// non-decreasing sequences of gap numbers.
fn placements(w: usize, s: u32) -> Vec<Vec<u32>> {
    if w == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for rest in placements(w - 1, s) {
        let from = rest.last().copied().unwrap_or(0);
        for g in from..=s {
            let mut p = rest.clone();
            p.push(g);
            out.push(p);
        }
    }
    out
}

const SLEEPER: &[&str] = &["sleep:"];
/// The sleeper's points in one pass: before reading `seq`, after reading it, after
/// counting itself, after asking the lock, after its last look (then it sleeps).
const SLEEPER_POINTS: u32 = 5;

/// Runs one interleaving: the sleeper is held at each of its points while the
/// waker takes the steps placed there; the sleeper must then wake in time.
fn interleave(
    placement: &[u32],
    waker_points: &'static [&'static str],
    sleeper: impl FnOnce() -> bool + Send + 'static,
    waker: impl FnOnce() -> bool + Send + 'static,
) -> Duration {
    let (mut s, s_handle) = Held::start(SLEEPER, SLEEPER_POINTS, sleeper);
    let (mut w, w_handle) = Held::start(waker_points, placement.len() as u32, waker);
    let mut next = 0;
    let waker_step = |w: &mut Held, next: &mut usize| {
        // The waker is at its point before the step: the step runs up to its next one.
        if w.arrive() {
            w.release();
        }
        *next += 1;
    };
    for gap in 0..=SLEEPER_POINTS {
        let held = gap < SLEEPER_POINTS && s.arrive();
        while next < placement.len() && placement[next] == gap {
            waker_step(&mut w, &mut next);
        }
        if held {
            s.release();
        }
    }
    while next < placement.len() {
        waker_step(&mut w, &mut next);
    }
    // The rest of the waker runs free; the sleeper must be woken by it.
    while w.arrive() {
        w.release();
    }
    let t = Instant::now();
    assert!(join_within(w_handle, "the waker"), "{placement:?}: the waker failed");
    assert!(join_within(s_handle, "the sleeper"), "{placement:?}: the sleeper was not woken (a lost wake-up)");
    t.elapsed()
}

#[test]
fn no_interleaving_of_a_sleeping_consumer_and_a_put_loses_the_wake_up() {
    // The put's steps: commit (from its last point before the tail store), release
    // (from the commit), wake (from the release).
    const PUT: &[&str] = &["put:payload", "put:committed", "release:released"];
    let all = placements(3, SLEEPER_POINTS);
    assert_eq!(all.len(), 56);
    for placement in all {
        let q = queue(false);
        let (qs, qw) = (q.clone(), q.clone());
        let slept = interleave(
            &placement,
            PUT,
            move || {
                let mut buf = Vec::new();
                qs.get_bytes_into(&mut buf, Wait::timeout(Duration::from_secs(5))).is_ok() && buf == [7]
            },
            move || qw.put_bytes_with(&[7], Wait::timeout(PATIENCE)).is_ok(),
        );
        assert!(slept < Duration::from_secs(4), "{placement:?}: woken only by its time-out");
    }
}

#[test]
fn no_interleaving_of_a_sleeping_producer_and_a_get_loses_the_wake_up() {
    // A full ring: the producer sleeps for room; the get's steps free it.
    const GET: &[&str] = &["get:copied", "get:committed", "release:released"];
    for placement in placements(3, SLEEPER_POINTS) {
        let q = Queue::<Vec<u8>>::builder().maxsize(1).capacity(4096).build().unwrap();
        q.put_bytes_with(&[1], Wait::timeout(PATIENCE)).unwrap();
        let (qs, qw) = (q.clone(), q.clone());
        interleave(
            &placement,
            GET,
            move || qs.put_bytes_with(&[2], Wait::timeout(Duration::from_secs(5))).is_ok(),
            move || {
                let mut buf = Vec::new();
                qw.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).is_ok() && buf == [1]
            },
        );
        assert_eq!(drain(&q), vec![vec![2u8]], "{placement:?}");
    }
}

#[test]
fn a_loan_whose_holder_dies_publishes_nothing_or_leaves_the_message() {
    for checksum in [false, true] {
        let q = Queue::<Vec<u8>>::builder().capacity(4096).checksum(checksum).build().unwrap();
        q.put_bytes_with(&[1; 10], Wait::timeout(PATIENCE)).unwrap();
        // A producer dies holding a put loan (while writing), then one dies between
        // the frame header and the commit; a third drops its loan uncommitted.
        let q2 = q.clone();
        let dies_holding = std::thread::spawn(move || {
            let mut loan = q2.put_loan_timeout(100, PATIENCE).unwrap();
            assert!(loan.in_place());
            loan.fill(9);
            std::mem::forget(loan);
        });
        join_within(dies_holding, "a loan holder");
        let q2 = q.clone();
        let (died, ok) = killed_at(0, "loan:header", move || {
            let mut loan = q2.put_loan_timeout(100, PATIENCE).unwrap();
            loan.fill(8);
            loan.commit().is_ok()
        });
        assert!(died && !ok);
        drop({
            let mut loan = q.put_loan_timeout(100, PATIENCE).unwrap();
            loan.fill(7);
            loan
        });
        // Nothing was published; the next loan takes the dead holders' lock.
        let mut loan = q.put_loan_timeout(3, PATIENCE).unwrap();
        loan.copy_from_slice(b"abc");
        loan.commit().unwrap();
        // A consumer dies holding the first message (reading it), then one dies as
        // it releases it: the message is still there, whole, for the next.
        for step in [None, Some(0)] {
            let q2 = q.clone();
            let (died, ok) = killed_at(0, if step.is_some() { "loan:release" } else { "none" }, move || {
                let loan = q2.get_loan_timeout(PATIENCE).unwrap();
                let whole = *loan == [1; 10];
                if step.is_none() {
                    std::mem::forget(loan);
                }
                whole
            });
            assert!(ok && died == step.is_some(), "checksum {checksum}");
        }
        assert_eq!(drain(&q), vec![vec![1u8; 10], b"abc".to_vec()], "checksum {checksum}");
    }
}

#[test]
fn a_loan_asked_again_on_its_own_thread_is_an_error_and_a_close_beats_its_commit() {
    use crate::channel::{ChannelFault, RecvTimeoutError, SendTimeoutError};
    let q = queue(false);
    q.put_bytes_with(b"one", Wait::timeout(PATIENCE)).unwrap();
    let got = q.get_loan_timeout(PATIENCE).unwrap();
    assert!(matches!(q.get_loan_timeout(PATIENCE), Err(RecvTimeoutError::Failed(ChannelFault::LoanHeld))));
    drop(got);
    let mut loan = q.put_loan_timeout(3, PATIENCE).unwrap();
    loan.copy_from_slice(b"two");
    let again = q.put_bytes_with(b"x", Wait::timeout(PATIENCE));
    assert!(matches!(again, Err(SendTimeoutError::Failed { fault: ChannelFault::LoanHeld, .. })), "{again:?}");
    // Closed while this thread holds the loan: the commit publishes nothing.
    q.close();
    assert!(matches!(loan.commit(), Err(SendTimeoutError::Disconnected(()))));
    assert!(matches!(q.get_loan_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
}

/// A 64 KiB queue whose consumer keeps up: each message is taken before the next
/// is put. `checksum` for a checksummed ring.
fn kept_up(joinable: bool, checksum: bool) -> Queue<Vec<u8>> {
    let b = Queue::<Vec<u8>>::builder().capacity(64 << 10).checksum(checksum);
    if joinable {
        (*b.build_joinable().unwrap()).clone()
    } else {
        b.build().unwrap()
    }
}

/// Puts and takes 1000-byte messages numbered from `from` until the producer has
/// rewound (the next frame back near the beginning, after it had passed 16 KiB);
/// the messages put. The consumer keeps `behind` messages unread.
fn until_rewound_behind(q: &Queue<Vec<u8>>, from: u8, behind: u8) -> u8 {
    let mut n = from;
    let mut passed = false;
    let mut buf = Vec::new();
    for k in 0..behind {
        q.put_bytes_with(&[from.wrapping_sub(behind - k); 1000], Wait::timeout(PATIENCE)).unwrap();
    }
    loop {
        q.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).unwrap();
        q.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).unwrap();
        let want = n.wrapping_sub(behind);
        assert!(buf == [want; 1000], "message {want} came back whole, in order");
        n = n.wrapping_add(1);
        let at = q.raw_ring().tail_offset();
        if passed && at < 16 << 10 {
            return n.wrapping_sub(from);
        }
        passed |= at >= 16 << 10;
        assert!(n.wrapping_sub(from) < 200, "the producer never rewound (at {at})");
    }
}

/// A rewind never writes over a message not yet read: not when the unread ones
/// begin before the frame's end at the ring's beginning, nor when they wrap round
/// past it. Every message comes back whole, in order.
#[test]
fn a_rewind_never_writes_over_unread_messages() {
    fn check_in_order(q: &Queue<Vec<u8>>, expect: impl IntoIterator<Item = (u8, usize)>) {
        let mut buf = Vec::new();
        for (n, len) in expect {
            q.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).unwrap();
            assert!(buf.len() == len && buf.iter().all(|&b| b == n), "message {n} whole, in order");
        }
        assert!(q.get_bytes_into(&mut buf, Wait::Never).is_err(), "nothing more");
    }
    let mark = 16u64 << 10;
    // 256 KiB: a quarter (64 KiB) may be unread and the producer still rewinds.
    let ring = || Queue::<Vec<u8>>::builder().capacity(256 << 10).build().unwrap();
    // Unread from the very beginning (or from 1008 bytes in, with a frame of
    // 2008 bytes to place): the beginning is not free.
    for (read, len) in [(0u8, 1000usize), (1, 2000)] {
        let q = ring();
        let mut put = Vec::new();
        let mut n = 0u8;
        while q.raw_ring().tail_offset() < 2 * mark + 4096 {
            q.put_bytes_with(&vec![n; 1000], Wait::timeout(PATIENCE)).unwrap();
            put.push((n, 1000));
            n += 1;
        }
        let mut buf = Vec::new();
        for _ in 0..read {
            q.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).unwrap();
        }
        // Across the next mark, with at most 40 KiB unread in one stretch.
        while q.raw_ring().tail_offset() < 3 * mark {
            q.put_bytes_with(&vec![n; len], Wait::timeout(PATIENCE)).unwrap();
            put.push((n, len));
            n += 1;
        }
        assert!(q.raw_ring().tail_offset() >= 3 * mark, "it went on, not back to the beginning");
        check_in_order(&q, put.into_iter().skip(read as usize));
    }
    // Unread messages that wrap round the end of the ring to its beginning: the
    // ring kept over a quarter full on the way round (no rewind), then 40 KiB
    // unread (under a quarter), still wrapping when the producer crosses 32 KiB.
    let q = ring();
    let mut buf = Vec::new();
    let mut unread = std::collections::VecDeque::new();
    let mut n = 0u8;
    let mut lapped = false;
    let mut last = 0;
    let mut puts = 0;
    while !(lapped && q.raw_ring().tail_offset() >= 2 * mark + 2048) {
        puts += 1;
        assert!(puts < 1000, "never went round the ring");
        q.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).unwrap();
        unread.push_back(n);
        n = n.wrapping_add(1);
        let at = q.raw_ring().tail_offset();
        assert!(!lapped || at > last, "rewound over messages that wrap round");
        lapped |= at < last;
        last = at;
        while unread.len() > if lapped { 40 } else { 70 } {
            q.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).unwrap();
            assert!(buf == [unread.pop_front().unwrap(); 1000]);
        }
    }
    check_in_order(&q, unread.into_iter().map(|n| (n, 1000)));
}

/// A put that would rewind the ring and then does not happen (killed before its
/// commit, or refused: the queue at its `maxsize`) leaves no skip behind. A skip
/// alone counted as no message, so a consumer waiting by the counts never passed
/// it, while its bytes (the rest of the lap) kept a message longer than the
/// lap's start from fitting: the consumer asleep, the producer waiting for room,
/// for ever.
#[test]
fn a_put_that_would_rewind_and_does_not_leaves_nothing_to_wait_behind() {
    let big = vec![7u8; 48 << 10];
    for refused in [false, true] {
        // 256 KiB: messages up to 64 KiB go in the ring itself.
        let b = Queue::<Vec<u8>>::builder().capacity(256 << 10);
        let q = if refused { b.maxsize(1).build().unwrap() } else { b.build().unwrap() };
        let mut buf = Vec::new();
        let mut n = 0u8;
        // Where a 1000-byte message's frame (1008 bytes) makes the producer rewind.
        let rewinds = |q: &Queue<Vec<u8>>| {
            let at = q.raw_ring().tail_offset();
            at >= 16 << 10 && (at + 1008) / (16 << 10) != at / (16 << 10)
        };
        loop {
            if refused {
                q.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).unwrap();
                // Full by its count, where its frame would rewind.
                let at_rewind = rewinds(&q);
                assert!(q.put_bytes_with(&[n; 1000], Wait::Never).is_err());
                q.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).unwrap();
                assert!(buf == [n; 1000]);
                if at_rewind {
                    break;
                }
            } else if rewinds(&q) {
                break;
            } else {
                q.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).unwrap();
                q.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).unwrap();
            }
            n = n.wrapping_add(1);
            assert!(n < 100, "never reached the first rewind");
        }
        // A consumer waits (asleep on the empty ring, by its counts) ...
        let q2 = q.clone();
        let consumer = std::thread::spawn(move || {
            let mut got = Vec::new();
            q2.get_bytes_into(&mut got, Wait::timeout(PATIENCE)).map(|()| got.len())
        });
        std::thread::sleep(Duration::from_millis(20));
        if !refused {
            // ... while a producer is killed where its put rewinds ...
            let q2 = q.clone();
            let (died, _) =
                killed_at(0, "put:rewound", move || q2.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).is_ok());
            assert!(died, "the put did not rewind");
        }
        assert!(q.raw_ring().tail_offset() >= 16 << 10, "refused {refused}: a skip was committed alone");
        // ... and a message longer than the lap's start goes in.
        assert!(q.put_bytes_with(&big, Wait::timeout(PATIENCE)).is_ok(), "refused {refused}: no room behind a skip");
        assert_eq!(join_within(consumer, "the consumer").ok(), Some(48 << 10), "refused {refused}");
    }
}

fn until_rewound(q: &Queue<Vec<u8>>, from: u8) -> u8 {
    until_rewound_behind(q, from, 0)
}

/// A producer finding the ring nearly empty past 16 KiB starts again at its
/// beginning (a skip frame over the rest): the messages stay whole, in order, counted once
/// (`qsize`, a joinable ring's unfinished count), and a get loan passes the skip.
/// A put killed right after writing the skip leaves the ring usable, with neither
/// the skip nor the message; a get killed after passing it too.
#[test]
fn an_empty_ring_rewinds_to_its_beginning_and_kills_around_the_skip_lose_nothing() {
    for (joinable, checksum) in [(false, false), (true, false), (false, true)] {
        let q = kept_up(joinable, checksum);
        let put = until_rewound(&q, 0);
        assert!(put > 16, "rewound only after passing 16 KiB ({put} messages)");
        assert_eq!(q.qsize(), 0);
        // With unread messages before it too, in order, none lost.
        let q2 = kept_up(joinable, checksum);
        let put2 = until_rewound_behind(&q2, 0, 3);
        assert_eq!(q2.qsize(), 3);
        let behind: Vec<Vec<u8>> = (1..=3u8).rev().map(|k| vec![put2.wrapping_sub(k); 1000]).collect();
        assert!(drain(&q2) == behind, "the three unread messages, whole and in order");
        if joinable {
            assert_eq!(JoinableView(&q).unfinished(), put as usize, "every message counted once");
            for _ in 0..put {
                assert!(JoinableView(&q).task_done());
            }
            assert!(JoinableView(&q).join_in_time());
        }
        // Again, the next lap taken through a get loan: it passes the skip.
        let mut n = put;
        let mut passed = false;
        loop {
            q.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).unwrap();
            let loan = q.get_loan_timeout(PATIENCE).unwrap();
            assert!(loan[..] == [n; 1000], "loaned message {n} whole");
            drop(loan);
            n = n.wrapping_add(1);
            let at = q.raw_ring().tail_offset();
            if passed && at < 16 << 10 {
                break;
            }
            passed |= at >= 16 << 10;
            assert!(n.wrapping_sub(put) < 200, "the producer never rewound through loans");
        }
    }
    // A put killed right after committing its skip: no message, the ring usable.
    let q = kept_up(false, false);
    let mut n = 0u8;
    let mut buf = Vec::new();
    let died = loop {
        let q2 = q.clone();
        let (died, ok) =
            killed_at(0, "put:rewound", move || q2.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).is_ok());
        if died {
            break true;
        }
        assert!(ok);
        q.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).unwrap();
        assert!(buf == [n; 1000], "message {n} whole");
        n = n.wrapping_add(1);
        assert!(n < 200, "the producer never rewound");
    };
    assert!(died);
    assert!(q.raw_ring().tail_offset() >= 16 << 10, "the skip was committed without its message");
    assert_eq!(q.qsize(), 0);
    assert!(!q.raw_ring().has_data_or_closed());
    assert!(matches!(q.get_bytes_into(&mut buf, Wait::Never), Err(crate::channel::RecvTimeoutError::Timeout)));
    assert_eq!(used_after_a_kill(&q), vec![vec![4; 40]]);
    // A get killed after passing the skip (its head committed past it), before
    // the message: the message is still there for the next consumer.
    let q = kept_up(false, false);
    until_rewound(&q, 0);
    for n in 0..80u8 {
        q.put_bytes_with(&[n; 1000], Wait::timeout(PATIENCE)).unwrap();
        let q2 = q.clone();
        let (died, _) = killed_at(0, "get:copied", move || {
            let mut buf = Vec::new();
            q2.get_bytes_into(&mut buf, Wait::timeout(PATIENCE)).is_ok()
        });
        assert!(died);
        assert!(drain(&q) == [vec![n; 1000]], "message {n} still there, whole");
    }
}

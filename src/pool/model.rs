//! A model of the pool's task hand-off: a real worker process killed (`kill -9`
//! on itself) at each step of its loop (a task noted as taken but still in its
//! ring, run, replied to), for tasks sent one by one and in chunks. Each task must
//! then end exactly once, as its step says: a task run but not replied to fails
//! with `WorkerDied` (and ran once), a replied one keeps its result, every other
//! task (the one not yet taken from the ring among them) completes on the
//! replacement worker, and none runs twice.

use std::time::{Duration, Instant};

use crate::pool::{Pool, TaskError};
use crate::steps;
use crate::{Array, Value};

const PATIENCE: Duration = Duration::from_secs(30);
/// A worker's points per chunk: took, ran, replied.
const POINTS: u32 = 3;

/// The initializer: the first worker dies at its `n`th point; replacements live.
fn arm((armed, n): (Value<u32>, u32)) {
    let mut first = armed.lock().expect("the flag's lock");
    if *first == 0 {
        *first = 1;
        drop(first);
        // The flag goes with the process: nobody reads it.
        let _ = steps::die_at("worker:", n);
    }
}

/// Counts its own run in shared memory, then returns its index.
fn run_once((runs, i): (Array<u32>, u32)) -> u32 {
    runs.lock().expect("the counts' lock")[i as usize] += 1;
    i
}

/// The initializer of a merged chunk's model: the first worker dies at its `n`th
/// point of the kind `which` (0: a chunk's took, ran, replied; 1: an item began);
/// replacements live.
fn arm_kind((armed, which, n): (Value<u32>, u8, u32)) {
    let mut first = armed.lock().expect("the flag's lock");
    if *first == 0 {
        *first = 1;
        drop(first);
        let _ = steps::die_at(if which == 0 { "worker:" } else { "item:" }, n);
    }
}

/// Holds its worker until the test opens the gate (tasks queue up behind it, where
/// they merge), for a bounded while.
fn wait_gate(gate: Value<u32>) -> u32 {
    let end = Instant::now() + PATIENCE;
    while *gate.lock().expect("the gate's lock") == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_micros(200));
    }
    u32::MAX
}

/// Checks how a task ended: with `want`'s value, or (`None`) failed by its
/// worker's `kill -9`.
fn assert_ended(got: Result<u32, TaskError>, want: Option<u32>, what: impl Fn() -> String) {
    match (got, want) {
        (Ok(got), Some(want)) => assert_eq!(got, want, "{}", what()),
        (Err(TaskError::WorkerDied { exitcode, .. }), None) => assert_eq!(exitcode, -libc::SIGKILL, "{}", what()),
        (got, want) => panic!("{}: ended {got:?}, expected {want:?}", what()),
    }
}

/// Closes and joins `pool`, then checks how many times each task ran.
fn assert_runs(pool: Pool, runs: &Array<u32>, expected: impl Fn(u32) -> u32, what: &str) {
    pool.close();
    assert!(pool.join_timeout(PATIENCE).unwrap());
    for (i, &count) in runs.to_vec().unwrap().iter().enumerate() {
        assert_eq!(count, expected(i as u32), "{what}: task {i}'s runs");
    }
}

fn pool_dying_at(n: u32) -> Pool {
    let armed = Value::new(0u32).unwrap();
    Pool::builder().processes(1).initializer(arm, (armed, n)).build().unwrap()
}

/// What task `i` of chunk `c` (of `size` tasks) must end with, the worker killed
/// at its `n`th point: its result, or `None` for `WorkerDied`; and its run count.
fn expected(n: u32, chunk: u32, i: u32) -> (Option<u32>, u32) {
    let (dying_chunk, step) = (n / POINTS, n % POINTS);
    match (chunk == dying_chunk, step) {
        (true, 1) => (None, 1), // run, reply lost
        // Killed as it noted the chunk, before taking it from its ring: the chunk
        // runs on the replacement.
        _ => (Some(i), 1),
    }
}

#[test]
fn a_worker_killed_at_each_step_fails_exactly_its_own_tasks_and_runs_none_twice() {
    const TASKS: u32 = 3;
    let mut kills = 0;
    for n in 0..TASKS * POINTS {
        let runs = Array::from_slice_named(&[0u32; TASKS as usize]).unwrap();
        let pool = pool_dying_at(n);
        let handles: Vec<_> = (0..TASKS).map(|i| pool.apply_async(run_once, (runs.clone(), i))).collect();
        for (i, h) in handles.iter().enumerate() {
            let i = i as u32;
            assert_ended(h.get_timeout(PATIENCE), expected(n, i, i).0, || format!("killed at point {n}: task {i}"));
        }
        assert_runs(pool, &runs, |i| expected(n, i, i).1, &format!("killed at point {n}"));
        kills += 1;
    }
    // In chunks of two (an imap): the dying chunk's tasks share its fate.
    const ITEMS: u32 = 6;
    for n in 0..(ITEMS / 2) * POINTS {
        let runs = Array::from_slice_named(&[0u32; ITEMS as usize]).unwrap();
        let pool = pool_dying_at(n);
        let mut it = pool.imap_chunked(run_once, (0..ITEMS).map(|i| (runs.clone(), i)), 2);
        let got: Vec<_> = std::iter::from_fn(|| it.next_timeout(PATIENCE))
            .inspect(|r| assert!(!matches!(r, Err(TaskError::Timeout)), "killed at point {n}: an item never came"))
            .collect();
        assert_eq!(got.len(), ITEMS as usize);
        let counts = runs.to_vec().unwrap();
        for (i, r) in got.into_iter().enumerate() {
            let i = i as u32;
            let (want, ran) = expected(n, i / 2, i);
            match (r, want) {
                (Ok(got), Some(want)) => assert_eq!(got, want),
                (Err(TaskError::WorkerDied { .. }), None) => {}
                (got, want) => panic!("killed at point {n}: item {i} ended {got:?}, expected {want:?}"),
            }
            assert_eq!(counts[i as usize], ran, "killed at point {n}: item {i}'s runs");
        }
        pool.close();
        assert!(pool.join_timeout(PATIENCE).unwrap());
        kills += 1;
    }
    assert_eq!(kills, 18);
}

/// A worker killed inside a merged chunk (tasks that waited in the backlog, sent
/// as one message): the tasks that began fail with `WorkerDied` (the one killed as
/// it began never ran; the ones before it ran once, their results lost with the
/// worker), and those that had not begun run on the replacement, once. Killed at
/// each item of the chunk, and at each of its chunk-level steps.
#[test]
fn a_worker_killed_in_a_merged_chunk_fails_the_tasks_that_began_and_runs_the_rest_once() {
    const TASKS: u32 = 6;
    // (kind of point, which one): every item of the tasks, then the merged
    // chunk's took, ran, replied (the warm-up, the gate and the direct tasks have
    // three each before it).
    let mut cases: Vec<(u8, u32)> = (0..TASKS).map(|j| (1, 2 + j)).collect();
    let mut merged_at = None;
    let mut kills = 0;
    let mut i_case = 0;
    while i_case < cases.len() {
        let (which, n) = cases[i_case];
        i_case += 1;
        let runs = Array::from_slice_named(&[0u32; TASKS as usize]).unwrap();
        let (armed, gate) = (Value::new(0u32).unwrap(), Value::new_named(0u32).unwrap());
        let pool = Pool::builder().processes(1).initializer(arm_kind, (armed, which, n)).build().unwrap();
        // Item 0 (points 0-2): the pool is up and past its launch.
        assert_eq!(pool.apply(run_once, (runs.clone(), 0)).unwrap(), 0);
        runs.lock().unwrap()[0] = 0;
        pool.shared().assume_tiny_tasks_in_long_chunks();
        // Item 1 (points 3-5): the gate; then the tasks, items 2.. .
        let held = pool.apply_async(wait_gate, gate.clone());
        let handles: Vec<_> = (0..TASKS).map(|i| pool.apply_async(run_once, (runs.clone(), i))).collect();
        let waiting = pool.shared().backlog_counts();
        assert!(matches!(waiting[..], [m] if m >= 2), "the tasks behind the gate merge into one chunk: {waiting:?}");
        let first_merged = TASKS - waiting[0];
        if merged_at.is_none() {
            merged_at = Some(first_merged);
            let took = 3 * (2 + first_merged);
            cases.extend([(0, took), (0, took + 1), (0, took + 2)]);
        }
        assert_eq!(Some(first_merged), merged_at, "the same tasks merge each time");
        *gate.lock().unwrap() = 1;
        assert_eq!(held.get_timeout(PATIENCE).unwrap(), u32::MAX);
        // Task i's end and its runs, the worker killed at (which, n).
        let expected = |i: u32| -> (bool, u32) {
            if which == 1 {
                let j = n - 2; // the task killed as it began
                let began_with_it = j >= first_merged && (first_merged..j).contains(&i);
                match () {
                    _ if i == j => (false, 0),
                    _ if began_with_it => (false, 1),
                    _ => (true, 1),
                }
            } else {
                let step = n - 3 * (2 + first_merged);
                match (i >= first_merged, step) {
                    // Noted, not yet taken from the ring: the chunk runs elsewhere, whole.
                    (true, 1) => (false, 1), // run, reply lost
                    _ => (true, 1),
                }
            }
        };
        for (i, h) in handles.iter().enumerate() {
            let i = i as u32;
            let want = expected(i).0.then_some(i);
            assert_ended(h.get_timeout(PATIENCE), want, || format!("killed at {which}/{n}: task {i}"));
        }
        assert_runs(pool, &runs, |i| expected(i).1, &format!("killed at {which}/{n}"));
        kills += 1;
    }
    assert_eq!(kills, TASKS + 3);
}

/// An imap's batch of small chunks goes out several to a message: a worker killed
/// as it begins item `j` fails `j` (never run) and the items before it in the same
/// message (run, results lost with the worker); every other item completes, and
/// none runs twice.
#[test]
fn a_worker_killed_in_an_imaps_merged_message_fails_the_items_that_began_and_runs_the_rest_once() {
    const ITEMS: u32 = 8;
    let mut split_a_message = false;
    for j in 0..ITEMS {
        let runs = Array::from_slice_named(&[0u32; ITEMS as usize]).unwrap();
        let armed = Value::new(0u32).unwrap();
        // Item point 0: the warm-up task; the imap's items are 1.. .
        let pool = Pool::builder().processes(1).initializer(arm_kind, (armed, 1, 1 + j)).build().unwrap();
        assert_eq!(pool.apply(run_once, (runs.clone(), 0)).unwrap(), 0);
        runs.lock().unwrap()[0] = 0;
        pool.shared().assume_tiny_tasks_in_long_chunks();
        let mut it = pool.imap(run_once, (0..ITEMS).map(|i| (runs.clone(), i)));
        let got: Vec<_> = std::iter::from_fn(|| it.next_timeout(PATIENCE))
            .inspect(|r| assert!(!matches!(r, Err(TaskError::Timeout)), "killed at item {j}: an item never came"))
            .collect();
        drop(it);
        pool.close();
        assert!(pool.join_timeout(PATIENCE).unwrap());
        let counts = runs.to_vec().unwrap();
        let failed: Vec<u32> = (0..ITEMS).filter(|&i| got[i as usize].is_err()).collect();
        for (i, r) in got.iter().enumerate() {
            let i = i as u32;
            match r {
                Ok(v) => assert_eq!(*v, i),
                Err(TaskError::WorkerDied { exitcode, .. }) => assert_eq!(*exitcode, -libc::SIGKILL),
                Err(e) => panic!("killed at item {j}: item {i} ended {e:?}"),
            }
            let want = if i == j { 0 } else { 1 };
            assert_eq!(counts[i as usize], want, "killed at item {j}: item {i}'s runs");
        }
        // What failed: `j`, and the items before it in its message, together.
        assert_eq!(failed.last(), Some(&j), "killed at item {j}: failed {failed:?}");
        assert!(failed.windows(2).all(|w| w[1] == w[0] + 1), "killed at item {j}: failed {failed:?}");
        assert!(failed.len() <= ITEMS as usize / 2, "killed at item {j}: failed {failed:?}");
        split_a_message |= failed.len() > 1;
    }
    assert!(split_a_message, "no kill fell inside a merged message");
}

fn panics_on_three(x: u32) -> u32 {
    if x == 3 {
        panic!("three");
    }
    x
}

/// A map whose task panics, merged into one message with an `apply_async` and a
/// second map of the same function: the failed map reads all of its items, so
/// the task and the other map behind it each get their own results.
#[test]
fn a_failed_map_merged_with_other_tasks_leaves_them_their_own_results() {
    let pool = Pool::builder().processes(1).build().unwrap();
    assert_eq!(pool.apply(panics_on_three, 0).unwrap(), 0);
    pool.shared().assume_tiny_tasks_in_long_chunks();
    let gate = Value::new_named(0u32).unwrap();
    let held = pool.apply_async(wait_gate, gate.clone());
    let first = pool.map_async_chunked(panics_on_three, 0..6u32, 1);
    let task = pool.apply_async(panics_on_three, 100);
    let second = pool.map_async_chunked(panics_on_three, 10..13u32, 1);
    // The first map's first chunk went to the worker beside the gate; the rest
    // wait as one message.
    assert_eq!(pool.shared().backlog_counts(), vec![5 + 1 + 3]);
    *gate.lock().unwrap() = 1;
    assert_eq!(held.get_timeout(PATIENCE).unwrap(), u32::MAX);
    assert!(matches!(first.get_timeout(PATIENCE), Err(TaskError::Panicked { .. })));
    assert_eq!(task.get_timeout(PATIENCE).unwrap(), 100);
    assert_eq!(second.get_timeout(PATIENCE).unwrap(), vec![10, 11, 12]);
    pool.close();
    assert!(pool.join_timeout(PATIENCE).unwrap());
}

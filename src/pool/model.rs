//! A model of the pool's task hand-off: a real worker process killed (`kill -9`
//! on itself) at each step of its loop (a task taken from its ring, run, replied
//! to), for tasks sent one by one and in chunks. Each task must then end exactly
//! once, as its step says: a task taken or run but not replied to fails with
//! `WorkerDied` (and ran at most once), a replied one keeps its result, every
//! other task completes on the replacement worker, and none runs twice.

use std::time::Duration;

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

fn pool_dying_at(n: u32) -> Pool {
    let armed = Value::new(0u32).unwrap();
    Pool::builder().processes(1).initializer(arm, (armed, n)).build().unwrap()
}

/// What task `i` of chunk `c` (of `size` tasks) must end with, the worker killed
/// at its `n`th point: its result, or `None` for `WorkerDied`; and its run count.
fn expected(n: u32, chunk: u32, i: u32) -> (Option<u32>, u32) {
    let (dying_chunk, step) = (n / POINTS, n % POINTS);
    match (chunk == dying_chunk, step) {
        (true, 0) => (None, 0), // taken, not run
        (true, 1) => (None, 1), // run, reply lost
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
            let (result, _) = expected(n, i, i);
            match (h.get_timeout(PATIENCE), result) {
                (Ok(got), Some(want)) => assert_eq!(got, want),
                (Err(TaskError::WorkerDied { exitcode, .. }), None) => assert_eq!(exitcode, -libc::SIGKILL),
                (got, want) => panic!("killed at point {n}: task {i} ended {got:?}, expected {want:?}"),
            }
        }
        pool.close();
        assert!(pool.join_timeout(PATIENCE).unwrap());
        let counts = runs.to_vec().unwrap();
        for i in 0..TASKS {
            assert_eq!(counts[i as usize], expected(n, i, i).1, "killed at point {n}: task {i}'s runs");
        }
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

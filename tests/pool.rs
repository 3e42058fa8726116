//! `Pool` across real worker processes, under every start method: every method's
//! results checked exactly, callbacks, faults (panics, killed workers, initializers
//! that fail, arguments that do not serialize), and nothing left behind.

shmproc::init_before_main!();

mod common;

/// How long any test here may run in all (see `common::watchdog`).
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(120);

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use shmproc::{Pool, PoolError, StartMethod, TaskError, Value};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn add3(a: u64, b: u64, c: u64) -> u64 {
    a + b + c
}

fn add4(a: u64, b: String, c: u8, d: i32) -> String {
    format!("{a}{b}{c}{d}")
}

fn fails_on_seven(x: u64) -> u64 {
    assert!(x != 7, "seven is not allowed");
    x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pid_of(_: u64) -> i32 {
    std::process::id() as i32
}

fn pool(method: StartMethod, n: usize) -> Pool {
    Pool::builder().processes(n).start_method(method).build().unwrap_or_else(|e| panic!("{method:?}: {e}"))
}

/// Closes and joins `pool` within [`PATIENCE`].
fn finish_pool(pool: Pool) {
    pool.close();
    assert!(pool.join_timeout(PATIENCE).unwrap(), "the pool's workers did not exit");
}

#[test]
fn map_imap_and_apply_async_under_every_start_method() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let pool = pool(method, 2);
        let expect: Vec<u64> = (0..1000).map(|x| x * x).collect();
        assert_eq!(pool.map(square, 0..1000u64).unwrap(), expect, "{method:?} map");
        let got: Vec<u64> = pool.imap(square, 0..1000u64).map(Result::unwrap).collect();
        assert_eq!(got, expect, "{method:?} imap");
        let handles: Vec<_> = (0..100u64).map(|i| pool.apply_async(square, i)).collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.get_timeout(PATIENCE).unwrap(), (i * i) as u64, "{method:?} apply_async");
        }
        finish_pool(pool);
    }
}

/// Tiny tasks submitted faster than the workers take them wait in the backlog,
/// where they travel to a worker several to a message: each still gets its own
/// result, and its callback runs once, with it.
#[test]
fn tiny_tasks_queued_together_each_get_their_own_result_and_callback_once() {
    use std::sync::atomic::AtomicU32;
    let _watchdog = watchdog(WATCHDOG);
    const N: usize = 20_000;
    for method in METHODS {
        let pool = pool(method, 2);
        let calls: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
        let handles: Vec<_> = (0..N as u64)
            .map(|i| {
                let calls = Arc::clone(&calls);
                pool.apply_async(square, i).callback(move |r: &u64| {
                    assert_eq!(*r, i * i, "a callback got another task's result");
                    calls[i as usize].fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.get_timeout(PATIENCE).unwrap(), (i * i) as u64, "{method:?} apply_async {i}");
        }
        // Every result is in: its callback ran before, on the result thread.
        for (i, c) in calls.iter().enumerate() {
            assert_eq!(c.load(Ordering::Relaxed), 1, "{method:?}: task {i}'s callback runs");
        }
        let expect: Vec<u64> = (0..N as u64).map(|x| x * x).collect();
        assert_eq!(pool.map_chunked(square, 0..N as u64, 1).unwrap(), expect, "{method:?} map, chunksize 1");
        // Maps that fail, among tasks of the same function that may share their
        // messages: each task still gets its own value.
        let mut maps = Vec::new();
        let mut tasks = Vec::new();
        for round in 0..200u64 {
            maps.push(pool.map_async_chunked(fails_on_seven, 0..20u64, 1));
            tasks.extend(
                (0..20).map(|k| (1000 + 20 * round + k, pool.apply_async(fails_on_seven, 1000 + 20 * round + k))),
            );
        }
        for (want, t) in tasks {
            assert_eq!(t.get_timeout(PATIENCE).unwrap(), want, "{method:?}: a task among failing maps");
        }
        for m in maps {
            assert!(matches!(m.get_timeout(PATIENCE), Err(TaskError::Panicked { .. })), "{method:?}: the map fails");
        }
        finish_pool(pool);
    }
}

#[test]
fn every_method_gives_exact_results() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let expect: Vec<u64> = (0..500).map(|x| x * x).collect();
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
    assert_eq!(pool.map_chunked(square, 0..500u64, 7).unwrap(), expect);
    assert_eq!(pool.map_async(square, 0..500u64).get_timeout(PATIENCE).unwrap(), expect);
    assert_eq!(pool.map_async_chunked(square, 0..500u64, 3).get_timeout(PATIENCE).unwrap(), expect);
    let chunked: Vec<u64> = pool.imap_chunked(square, 0..500u64, 10).map(Result::unwrap).collect();
    assert_eq!(chunked, expect);
    let mut unordered: Vec<u64> = pool.imap_unordered(square, 0..500u64).map(Result::unwrap).collect();
    unordered.sort_unstable();
    assert_eq!(unordered, expect);
    let mut unordered: Vec<u64> = pool.imap_unordered_chunked(square, 0..500u64, 9).map(Result::unwrap).collect();
    unordered.sort_unstable();
    assert_eq!(unordered, expect);
    let pairs: Vec<(u64, u64)> = (0..300).map(|i| (i, 2 * i)).collect();
    let sums: Vec<u64> = (0..300).map(|i| 3 * i).collect();
    assert_eq!(pool.starmap(add, pairs.clone()).unwrap(), sums);
    assert_eq!(pool.starmap_chunked(add, pairs.clone(), 11).unwrap(), sums);
    assert_eq!(pool.starmap_async(add, pairs).get_timeout(PATIENCE).unwrap(), sums);
    assert_eq!(pool.starmap(add3, vec![(1, 2, 3), (4, 5, 6)]).unwrap(), vec![6, 15]);
    assert_eq!(pool.starmap(add4, vec![(1, "b".to_string(), 3, -4)]).unwrap(), vec!["1b3-4".to_string()]);
    assert_eq!(pool.starmap(|x: u64| x + 1, vec![(1,), (2,)]).unwrap(), vec![2, 3]);
    assert_eq!(pool.map(square, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    assert_eq!(pool.imap(square, Vec::<u64>::new()).count(), 0);
    // A closure that captures nothing is a task too.
    assert_eq!(pool.map(|s: String| s.len(), vec!["ab".to_string(), "cde".to_string()]).unwrap(), vec![2, 3]);
    finish_pool(pool);
}

#[test]
fn async_results_report_ready_and_successful() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let slow = pool.apply_async(sleep_ms, 300);
    assert!(!slow.ready());
    assert_eq!(slow.successful(), None);
    assert_eq!(slow.get_timeout(Duration::from_millis(10)), Err(TaskError::Timeout));
    assert!(slow.wait_timeout(PATIENCE));
    assert!(slow.ready());
    assert_eq!(slow.successful(), Some(true));
    assert_eq!(slow.get_timeout(PATIENCE), Ok(300));
    assert_eq!(slow.get_timeout(PATIENCE), Err(TaskError::AlreadyTaken));
    assert_eq!(slow.successful(), Some(true), "still known once the value was taken");
    let bad = pool.apply_async(fails_on_seven, 7);
    assert!(bad.wait_timeout(PATIENCE));
    assert_eq!(bad.successful(), Some(false));
    let m = pool.map_async(fails_on_seven, 0..20u64);
    assert!(m.wait_timeout(PATIENCE));
    assert_eq!(m.successful(), Some(false));
    finish_pool(pool);
}

#[test]
fn callbacks_run_in_the_parent_on_the_result_thread_in_completion_order() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let me = std::process::id();
    let caller = std::thread::current().id();
    let mut handles = Vec::new();
    for i in 0..200u64 {
        let seen = Arc::clone(&seen);
        let errors = Arc::clone(&errors);
        let h = pool
            .apply_async(fails_on_seven, i)
            .callback(move |v: &u64| {
                assert_eq!(std::process::id(), me, "a callback ran outside the parent");
                assert_ne!(std::thread::current().id(), caller, "a callback ran on the caller's thread");
                assert_eq!(std::thread::current().name(), Some("shmproc-pool"));
                seen.lock().unwrap().push(*v);
            })
            .error_callback(move |e: &TaskError| errors.lock().unwrap().push(e.clone()));
        handles.push(h);
    }
    for h in &handles {
        assert!(h.wait_timeout(PATIENCE));
    }
    // The callbacks ran before the results were released to the waiters.
    let mut seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 199);
    seen.sort_unstable();
    assert_eq!(seen, (0..200).filter(|&i| i != 7).collect::<Vec<u64>>());
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(matches!(&errors[0], TaskError::Panicked { message, .. } if message == "seven is not allowed"));
    // One task in one worker: its callbacks run in the order the tasks completed.
    // The worker is kept busy meanwhile, so that every callback is registered
    // before its task completes (one registered after runs when the result thread
    // gets to it: later than callbacks of tasks that completed after its own).
    let order = Arc::new(Mutex::new(Vec::new()));
    let serial = pool_one_worker();
    let busy = serial.apply_async(sleep_ms, 30);
    let mut last = None;
    for i in 0..50u64 {
        let order = Arc::clone(&order);
        last = Some(serial.apply_async(square, i).callback(move |v: &u64| order.lock().unwrap().push(*v)));
    }
    assert!(last.unwrap().wait_timeout(PATIENCE));
    assert_eq!(busy.get_timeout(PATIENCE), Ok(30));
    assert_eq!(*order.lock().unwrap(), (0..50).map(|i| i * i).collect::<Vec<u64>>());
    // A map's callback gets every value at once.
    let total = Arc::new(AtomicUsize::new(0));
    let t = Arc::clone(&total);
    let m = pool.map_async(square, 0..10u64).callback(move |v: &[u64]| {
        t.store(v.iter().sum::<u64>() as usize, Ordering::SeqCst);
    });
    assert!(m.wait_timeout(PATIENCE));
    assert_eq!(total.load(Ordering::SeqCst), 285);
    finish_pool(serial);
    finish_pool(pool);
}

fn pool_one_worker() -> Pool {
    pool(StartMethod::Fork, 1)
}

#[test]
fn a_callback_registered_after_completion_still_runs_on_the_result_thread() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 1);
    let h = pool.apply_async(square, 3);
    assert!(h.wait_timeout(PATIENCE));
    let (tx, rx) = std::sync::mpsc::channel();
    let h = h.callback(move |v: &u64| tx.send((*v, std::thread::current().name().map(str::to_owned))).unwrap());
    let (v, thread) = rx.recv_timeout(PATIENCE).expect("the late callback never ran");
    assert_eq!((v, thread.as_deref()), (9, Some("shmproc-pool")));
    assert_eq!(h.get(), Ok(9));
    // A handle whose late callback has not run yet is not ready: its wait, and so
    // its value, come after the callback (as an early one's do, and as in Python).
    for i in 0..50u64 {
        let h = pool.apply_async(square, i);
        assert!(h.wait_timeout(PATIENCE), "task {i} never completed");
        // Every other time, the result thread is kept busy (in another task's
        // callback) while the late one is registered and the value polled for.
        let busy = Arc::new(AtomicUsize::new(0));
        let blocker = (i % 2 == 1).then(|| {
            let b = Arc::clone(&busy);
            let blocker = pool.apply_async(square, 0).callback(move |_: &u64| {
                b.store(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            });
            let deadline = Instant::now() + PATIENCE;
            while busy.load(Ordering::SeqCst) == 0 {
                assert!(Instant::now() < deadline, "the busy task's callback never began");
                std::thread::yield_now();
            }
            blocker
        });
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        let e = Arc::clone(&ran);
        let h = h
            .callback(move |_: &u64| {
                std::thread::sleep(Duration::from_millis(1));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .error_callback(move |_: &TaskError| {
                e.fetch_add(100, Ordering::SeqCst);
            });
        if h.ready() {
            assert_eq!(ran.load(Ordering::SeqCst), 1, "ready before its callback ran");
        }
        if blocker.is_none() {
            assert!(h.wait_timeout(PATIENCE));
            assert_eq!(ran.load(Ordering::SeqCst), 1, "waited past a late callback that had not run");
            assert_eq!(h.get_timeout(PATIENCE), Ok(i * i));
        } else {
            // Polled: no value before the callback ran (taking it would have left
            // the callback nothing to run with).
            let deadline = Instant::now() + PATIENCE;
            let got = loop {
                match h.get_timeout(Duration::ZERO) {
                    Err(TaskError::Timeout) if Instant::now() < deadline => std::thread::yield_now(),
                    other => break other,
                }
            };
            assert_eq!(ran.load(Ordering::SeqCst), 1, "a poll took the value before its late callback ran");
            assert_eq!(got, Ok(i * i));
        }
        if let Some(b) = blocker {
            assert_eq!(b.get_timeout(PATIENCE), Ok(0));
        }
    }
    let m = pool.map_async(square, 0..10u64);
    assert!(m.wait_timeout(PATIENCE));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let m = m.callback(move |v: &[u64]| {
        std::thread::sleep(Duration::from_millis(1));
        r.store(v.len(), Ordering::SeqCst);
    });
    assert_eq!(m.get_timeout(PATIENCE).map(|v| v.len()), Ok(10));
    assert_eq!(ran.load(Ordering::SeqCst), 10, "a map's late callback ran before its values came");
    finish_pool(pool);
}

#[test]
fn a_panicking_task_fails_alone_with_its_message_and_location() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let pool = pool(method, 2);
        let err = pool.apply(fails_on_seven, 7).unwrap_err();
        match &err {
            TaskError::Panicked { message, location } => {
                assert_eq!(message, "seven is not allowed");
                assert!(location.contains("tests/pool.rs"), "{location}");
            }
            other => panic!("{method:?}: {other:?}"),
        }
        // In a chunk, only the item that panicked fails.
        let got: Vec<Result<u64, TaskError>> = pool.imap_chunked(fails_on_seven, 0..20u64, 5).collect();
        for (i, r) in got.iter().enumerate() {
            if i == 7 {
                assert!(matches!(r, Err(TaskError::Panicked { .. })), "{method:?}");
            } else {
                assert_eq!(r, &Ok(i as u64), "{method:?}");
            }
        }
        // map reports the first failure, as Python's raises it.
        assert!(matches!(pool.map(fails_on_seven, 0..20u64), Err(TaskError::Panicked { .. })));
        // The workers kept serving.
        assert_eq!(pool.map(square, 0..10u64).unwrap()[9], 81);
        finish_pool(pool);
    }
}

#[test]
fn arguments_that_do_not_serialize_fail_that_task_only() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    // A shared object cannot be a task argument (as in Python): an error on that task.
    let v = Value::<u64>::new(1).unwrap();
    let err = pool.apply(|v: Value<u64>| v.get().unwrap(), v).unwrap_err();
    assert!(matches!(err, TaskError::Encode(_)), "{err:?}");
    let got: Vec<Result<u64, TaskError>> = pool
        .imap(|v: Option<Value<u64>>| v.map_or(5, |v| v.get().unwrap()), vec![None, Some(Value::new(1).unwrap()), None])
        .collect();
    assert_eq!(got[0], Ok(5));
    assert!(matches!(got[1], Err(TaskError::Encode(_))));
    assert_eq!(got[2], Ok(5));
    assert_eq!(pool.apply(square, 4).unwrap(), 16);
    finish_pool(pool);
}

/// Reads a `u64`, panicking on 13: the `Deserialize` of a user's type with a bug.
fn read_but_13<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let x = <u64 as serde::Deserialize>::deserialize(d)?;
    assert!(x != 13, "cannot read 13");
    Ok(x)
}

/// An argument whose `Deserialize` panics on 13 (read in the worker).
#[derive(Debug, serde::Serialize)]
struct FragileArg(u64);

impl<'de> serde::Deserialize<'de> for FragileArg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_but_13(d).map(FragileArg)
    }
}

fn read_fragile(a: FragileArg) -> u64 {
    a.0
}

#[test]
fn an_argument_that_panics_as_the_worker_reads_it_fails_that_task_and_the_rest_of_its_chunk() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let pool = pool(method, 2);
        // Once a task has come back, every worker has started (see `Handler::run`).
        assert_eq!(pool.apply(square, 3), Ok(9));
        let pids = pool.worker_pids();
        assert_eq!(pids.len(), 2, "{method:?}");
        let got: Vec<Result<u64, TaskError>> = pool.imap_chunked(read_fragile, (0..30u64).map(FragileArg), 5).collect();
        for (i, r) in got.iter().enumerate() {
            match i {
                13 => assert!(
                    matches!(r, Err(TaskError::Panicked { message, .. }) if message == "cannot read 13"),
                    "{method:?}: {r:?}"
                ),
                // Where the next argument begins is unknown after a panic inside one.
                14 => assert!(matches!(r, Err(TaskError::Decode(_))), "{method:?}: {r:?}"),
                _ => assert_eq!(r, &Ok(i as u64), "{method:?}"),
            }
        }
        // No worker died of it (a worker that did is replaced, with a new pid).
        assert_eq!(pool.worker_pids(), pids, "{method:?}");
        finish_pool(pool);
    }
}

#[test]
fn an_argument_that_panics_as_it_is_read_fails_no_other_task_merged_with_it() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let pool = pool(method, 2);
        // Tiny tasks by the pool's estimate, then both workers busy: what comes next
        // waits in the backlog, several tasks to a message.
        assert_eq!(pool.map(square, 0..2000u64).unwrap().len(), 2000);
        let busy: Vec<_> = (0..2).map(|_| pool.apply_async(sleep_ms, 50)).collect();
        let tasks: Vec<_> = (0..300u64).map(|i| pool.apply_async(read_fragile, FragileArg(i))).collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.get_timeout(PATIENCE);
            if i == 13 {
                assert!(matches!(&r, Err(TaskError::Panicked { message, .. }) if message == "cannot read 13"), "{r:?}");
            } else {
                assert_eq!(r, Ok(i as u64), "{method:?}: task {i}, another task's argument panicked");
            }
        }
        for b in busy {
            assert_eq!(b.get_timeout(PATIENCE), Ok(50));
        }
        finish_pool(pool);
    }
}

fn bad_result(_: u64) -> Value<u64> {
    Value::new(1).unwrap()
}

#[test]
fn a_result_that_does_not_serialize_fails_that_task_only() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 1);
    let err = pool.apply(bad_result, 0).unwrap_err();
    assert!(matches!(err, TaskError::Encode(_)), "{err:?}");
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
    finish_pool(pool);
}

#[test]
fn arguments_and_results_of_any_size_go_through() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let big = vec![7u8; 100 << 20];
    let n = pool.apply(|v: Vec<u8>| v.iter().map(|&b| u64::from(b)).sum::<u64>(), big).unwrap();
    assert_eq!(n, 700 << 20);
    let back = pool.apply(|n: usize| vec![3u8; n], 10 << 20).unwrap();
    assert_eq!(back.len(), 10 << 20);
    assert!(back.iter().all(|&b| b == 3));
    // imap hands its chunks out in runs: those too large for a ring (each chunk here
    // 200 KiB, over a quarter of a worker's 256 KiB ring) go one by one, among small ones.
    let sizes: Vec<usize> = (0..24).map(|k| if k % 3 == 0 { 200 << 10 } else { k }).collect();
    let sums: Vec<u64> = pool
        .imap(|v: Vec<u8>| v.iter().map(|&b| u64::from(b)).sum::<u64>(), sizes.iter().map(|&n| vec![1u8; n]))
        .map(Result::unwrap)
        .collect();
    assert_eq!(sums, sizes.iter().map(|&n| n as u64).collect::<Vec<_>>());
    finish_pool(pool);
}

#[test]
fn imap_reads_an_endless_input_lazily() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&pulled);
    let input = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::Relaxed);
    });
    let first: Vec<u64> = pool.imap(square, input).take(100).map(Result::unwrap).collect();
    assert_eq!(first, (0..100).map(|x| x * x).collect::<Vec<u64>>());
    let pulled = pulled.load(Ordering::Relaxed);
    assert!(pulled < 10_000, "imap pulled {pulled} items to give 100");
    let mut unordered: Vec<u64> = pool.imap_unordered(square, 0u64..).take(100).map(Result::unwrap).collect();
    unordered.sort_unstable();
    assert_eq!(unordered.len(), 100);
    finish_pool(pool);
}

#[test]
fn apply_async_never_blocks_on_a_full_pool() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let start = Instant::now();
    // A million pending tasks: the backlog is in the parent's memory, no descriptor
    // or segment per task (a peer crate's pool fails at 20 000 with EMFILE).
    let handles: Vec<_> = (0..1_000_000u64).map(|i| pool.apply_async(square, i)).collect();
    let submitting = start.elapsed();
    assert!(submitting < PATIENCE, "submitting took {submitting:?}");
    for (i, h) in handles.into_iter().enumerate().step_by(9973) {
        assert_eq!(h.get_timeout(PATIENCE).unwrap(), (i * i) as u64);
    }
    finish_pool(pool);
}

#[test]
fn max_tasks_per_child_replaces_workers_and_loses_nothing() {
    let _watchdog = watchdog(WATCHDOG);
    for method in [StartMethod::Fork, StartMethod::ForkServer] {
        let pool = Pool::builder().processes(2).max_tasks_per_child(3).start_method(method).build().unwrap();
        let pids: Vec<i32> = pool.map_chunked(pid_of, 0..60u64, 1).unwrap();
        let distinct: HashSet<i32> = pids.iter().copied().collect();
        // 60 tasks at most 3 per worker: at least 20 workers ran them.
        assert!(distinct.len() >= 20, "{method:?}: only {} workers", distinct.len());
        for pid in &distinct {
            assert!(pids.iter().filter(|p| *p == pid).count() <= 3, "{method:?}: a worker ran more than 3");
        }
        finish_pool(pool);
    }
}

fn panicking_initializer(_: ()) {
    panic!("cannot initialize");
}

fn set_flag(v: Value<u64>) {
    v.set(7).unwrap();
    INIT.store(7, Ordering::SeqCst);
}

static INIT: AtomicUsize = AtomicUsize::new(0);

fn read_flag(_: u64) -> usize {
    INIT.load(Ordering::SeqCst)
}

#[test]
fn the_initializer_runs_in_every_worker_and_may_take_shared_objects() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let v = Value::<u64>::new(0).unwrap();
        let pool = Pool::builder().processes(2).initializer(set_flag, v.clone()).start_method(method).build().unwrap();
        assert!(pool.map_chunked(read_flag, 0..50u64, 1).unwrap().iter().all(|&f| f == 7), "{method:?}");
        assert_eq!(v.get().unwrap(), 7);
        finish_pool(pool);
    }
}

#[test]
fn an_initializer_that_panics_is_an_error_not_a_respawn_loop() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = Pool::builder().processes(2).initializer(panicking_initializer, ()).build().unwrap();
    let err = pool.apply_async(square, 3).get_timeout(PATIENCE).unwrap_err();
    assert!(matches!(&err, TaskError::Initializer(m) if m.contains("cannot initialize")), "{err:?}");
    // And every later call says so at once.
    let start = Instant::now();
    assert!(matches!(pool.apply(square, 3), Err(TaskError::Initializer(_))));
    assert!(start.elapsed() < PROMPT);
    // No worker is being restarted.
    std::thread::sleep(Duration::from_millis(100));
    assert!(pool.worker_pids().is_empty(), "workers restarted: {:?}", pool.worker_pids());
    pool.terminate();
}

/// Kills its own worker (SIGKILL) on `x == 13`; otherwise `x`.
fn dies_on_13(x: u64) -> u64 {
    if x == 13 {
        // SAFETY: raise(3) on the calling process; nothing to uphold.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x
}

/// Ends its worker the way `how` says: an abort, a segfault, or an exit.
fn dies_by(how: u8) -> u64 {
    match how {
        0 => std::process::abort(),
        // SAFETY: signal(2) and raise(3) on the calling process: the default action
        // (std installs a handler for stack overflows, which a raised SIGSEGV passes).
        1 => unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
            0
        },
        _ => std::process::exit(7),
    }
}

#[test]
fn a_worker_that_aborts_segfaults_or_exits_fails_its_task_with_how_it_died() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    for (how, expect) in [(0u8, -libc::SIGABRT), (1, -libc::SIGSEGV), (2, 7)] {
        match pool.apply(dies_by, how) {
            Err(TaskError::WorkerDied { exitcode, .. }) => assert_eq!(exitcode, expect, "how {how}"),
            other => panic!("how {how}: {other:?}"),
        }
        assert_eq!(pool.apply(square, 3), Ok(9), "the pool serves on after how {how}");
    }
    finish_pool(pool);
}

#[test]
fn a_killed_worker_fails_exactly_its_task_and_is_replaced() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let pool = pool(method, 2);
        let before = pool.worker_pids();
        // Task 13 kills the worker running it; the tasks queued behind it in that
        // worker's ring never started, so they run elsewhere and succeed.
        let got: Vec<Result<u64, TaskError>> = pool.imap(dies_on_13, 0..200u64).collect();
        for (i, r) in got.iter().enumerate() {
            if i == 13 {
                assert!(
                    matches!(r, Err(TaskError::WorkerDied { exitcode, .. }) if *exitcode == -libc::SIGKILL),
                    "{method:?}: {r:?}"
                );
            } else {
                assert_eq!(r, &Ok(i as u64), "{method:?}");
            }
        }
        let h = pool.apply_async(dies_on_13, 13);
        assert!(matches!(h.get_timeout(PATIENCE), Err(TaskError::WorkerDied { .. })));
        let m = pool.map_chunked(dies_on_13, 0..40u64, 1);
        assert!(matches!(m, Err(TaskError::WorkerDied { .. })), "{method:?}: {m:?}");
        // The pool is whole again and serving.
        assert_eq!(pool.map(square, 0..100u64).unwrap()[99], 99 * 99);
        let after = pool.worker_pids();
        assert_eq!(after.len(), 2, "{method:?}");
        assert_ne!(before, after, "{method:?}: no worker was replaced");
        finish_pool(pool);
    }
}

fn spin_us(x: u64) -> u64 {
    let until = Instant::now() + Duration::from_micros(20 + x % 200);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    x * 3
}

/// Kills a random worker at random moments while `run` drives the pool; returns
/// how many workers it killed.
fn with_random_kills<T>(pool: &Pool, seed: u64, kills: usize, run: impl FnOnce() -> T) -> (T, usize) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed = Arc::new(AtomicUsize::new(0));
    let pids = Arc::new(Mutex::new(pool.worker_pids()));
    std::thread::scope(|s| {
        let (stop2, killed2, pids2) = (Arc::clone(&stop), Arc::clone(&killed), Arc::clone(&pids));
        let killer = s.spawn(move || {
            let mut rng = Rng(seed);
            for _ in 0..kills {
                std::thread::sleep(Duration::from_micros(2_000 + rng.next() % 20_000));
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let alive = pids2.lock().unwrap().clone();
                if alive.is_empty() {
                    continue;
                }
                let victim = alive[(rng.next() % alive.len() as u64) as usize];
                // SAFETY: kill(2) with a pid of our own (a worker, maybe already replaced).
                if unsafe { libc::kill(victim, libc::SIGKILL) } == 0 {
                    killed2.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let refresher = {
            let (stop3, pids3) = (Arc::clone(&stop), Arc::clone(&pids));
            s.spawn(move || {
                while !stop3.load(Ordering::SeqCst) {
                    *pids3.lock().unwrap() = pool.worker_pids();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let out = run();
        stop.store(true, Ordering::SeqCst);
        killer.join().unwrap();
        refresher.join().unwrap();
        (out, killed.load(Ordering::SeqCst))
    })
}

/// Every task returned its value once, or failed once because its worker died.
fn check_each_once(results: &[Result<u64, TaskError>], killed: usize, what: &str) -> usize {
    let mut died = 0;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, 3 * i as u64, "{what}: task {i}"),
            Err(TaskError::WorkerDied { exitcode, .. }) => {
                assert_eq!(*exitcode, -libc::SIGKILL, "{what}");
                died += 1;
            }
            Err(e) => panic!("{what}: task {i}: {e:?}"),
        }
    }
    // A kill fails at most the one task (chunksize 1) its victim was running.
    assert!(died <= killed, "{what}: {died} tasks failed for {killed} kills");
    died
}

#[test]
fn random_kills_during_map_imap_and_apply_async_lose_and_duplicate_nothing() {
    let _watchdog = watchdog(WATCHDOG);
    const N: u64 = 2_000;
    let (mut total_killed, mut total_died) = (0, 0);
    for (round, method) in [StartMethod::Fork, StartMethod::ForkServer, StartMethod::Fork].into_iter().enumerate() {
        let seed = 0x5eed_0000 + round as u64;
        let pool = pool(method, 2);
        let what = format!("{method:?}, seed {seed:#x}");

        let (got, killed) =
            with_random_kills(&pool, seed, 6, || pool.imap(spin_us, 0..N).collect::<Vec<Result<u64, TaskError>>>());
        assert_eq!(got.len(), N as usize, "imap, {what}");
        total_died += check_each_once(&got, killed, &format!("imap, {what}"));
        total_killed += killed;

        let (got, killed) = with_random_kills(&pool, seed + 100, 6, || {
            let handles: Vec<_> = (0..N).map(|i| pool.apply_async(spin_us, i)).collect();
            handles.into_iter().map(|h| h.get_timeout(PATIENCE)).collect::<Vec<_>>()
        });
        total_died += check_each_once(&got, killed, &format!("apply_async, {what}"));
        total_killed += killed;

        let (got, killed) = with_random_kills(&pool, seed + 200, 4, || pool.map_chunked(spin_us, 0..N, 1));
        match got {
            Ok(v) => assert_eq!(v, (0..N).map(|i| 3 * i).collect::<Vec<u64>>(), "map, {what}"),
            Err(TaskError::WorkerDied { .. }) => assert!(killed > 0, "map, {what}"),
            Err(e) => panic!("map, {what}: {e:?}"),
        }
        // Still whole, still serving.
        assert_eq!(pool.map(square, 0..10u64).unwrap()[3], 9, "{what}");
        pool.terminate();
    }
    // The campaign did kill workers mid-task (else it proved nothing).
    eprintln!("{total_killed} workers killed, {total_died} tasks failed with them");
    // The checks above passed: every task returned once or failed once with its worker.
    eprintln!(
        "crash-injection pool-workers: {total_killed} kills, 0 hangs, 0 lost, 0 duplicated, 0 torn, 0 files left"
    );
    // (How many kills land mid-task depends on the machine: a replacement that is
    // still starting holds no task. One is enough to have tested the path.)
    assert!(total_killed >= 10 && total_died >= 1, "{total_killed} kills, {total_died} failed tasks");
}

#[test]
fn terminate_fails_every_pending_result_and_nothing_hangs() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let pending: Vec<_> = (0..10u64).map(|_| pool.apply_async(sleep_ms, 20_000)).collect();
    let m = pool.map_async(sleep_ms, vec![20_000u64; 4]);
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    pool.terminate();
    assert!(start.elapsed() < PROMPT, "terminate took {:?}", start.elapsed());
    for h in pending {
        assert_eq!(h.get_timeout(PROMPT), Err(TaskError::Terminated));
    }
    assert_eq!(m.get_timeout(PROMPT), Err(TaskError::Terminated));
    assert_eq!(pool.apply(square, 1), Err(TaskError::PoolClosed));
    pool.join().unwrap();
}

#[test]
fn a_closed_pool_refuses_tasks_and_finishes_what_it_has() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    let pending: Vec<_> = (0..50u64).map(|i| pool.apply_async(sleep_ms, i % 3)).collect();
    assert!(matches!(pool.join(), Err(PoolError::StillRunning)));
    pool.close();
    assert_eq!(pool.apply_async(square, 1).get_timeout(PATIENCE), Err(TaskError::PoolClosed));
    assert!(matches!(pool.map(square, 0..3u64), Err(TaskError::PoolClosed)));
    assert!(matches!(pool.imap(square, 0..3u64).next(), Some(Err(TaskError::PoolClosed))));
    // An endless input after close: one error, then the end (not errors forever).
    assert_eq!(pool.imap(square, 0u64..).take(10).count(), 1);
    assert!(pool.join_timeout(PATIENCE).unwrap());
    for (i, h) in pending.into_iter().enumerate() {
        assert_eq!(h.get_timeout(PROMPT), Ok(i as u64 % 3));
    }
}

#[test]
fn dropping_a_pool_reaps_its_workers_and_leaves_no_files() {
    let _watchdog = watchdog(WATCHDOG);
    // Alone in a process, and counting only files this process or its workers made:
    // /dev/shm is shared with every other test running meanwhile.
    run_test_alone("pool_files_helper", ("SHMPROC_POOL_FILES", "1"));
}

#[test]
fn pool_files_helper() {
    let _watchdog = watchdog(WATCHDOG);
    if std::env::var("SHMPROC_POOL_FILES").is_err() {
        return;
    }
    let before = shm_files();
    let pids = {
        let pool = pool(StartMethod::Fork, 3);
        assert_eq!(pool.apply(square, 3).unwrap(), 9);
        // A result this large crosses through a side segment the worker creates.
        let _big = pool.apply(|n: usize| vec![1u8; n], 8 << 20).unwrap();
        // All three have started (the first before `build` returned, the others since).
        let deadline = Instant::now() + PATIENCE;
        while pool.worker_pids().len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        pool.worker_pids()
    };
    assert_eq!(pids.len(), 3);
    for &pid in &pids {
        // Reaped: no such process (not even a zombie).
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} is still there");
    }
    let ours: HashSet<u32> = pids.iter().map(|&pid| pid as u32).chain([std::process::id()]).collect();
    let left: Vec<_> = shm_files()
        .difference(&before)
        .filter(|name| creator_pid(name).is_some_and(|pid| ours.contains(&pid)))
        .cloned()
        .collect();
    assert!(left.is_empty(), "files left in /dev/shm: {left:?}");
}

/// The pid a segment's name records as its creator (`shmproc.<ns>.<pid>.<start>.<rand>`,
/// hexadecimal).
fn creator_pid(name: &str) -> Option<u32> {
    u32::from_str_radix(name.split('.').nth(2)?, 16).ok()
}

/// How many descriptors this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn pool_descriptors_helper() {
    let _watchdog = watchdog(WATCHDOG);
    if std::env::var("SHMPROC_POOL_FDS").is_err() {
        return;
    }
    // One pool first: the fork server and the process's lasting state exist after it.
    drop(pool(StartMethod::ForkServer, 1));
    let before = open_fds();
    for method in METHODS {
        let pool = pool(method, 2);
        assert_eq!(pool.map(square, 0..100u64).unwrap()[10], 100);
        let _ = pool.apply(dies_on_13, 13);
        pool.terminate();
    }
    let links = || -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| Some(format!("{:?}", std::fs::read_link(e.ok()?.path()).ok()?)))
            .collect()
    };
    assert_eq!(open_fds(), before, "descriptors left open by pools: {:?}", links());
}

#[test]
fn pools_leave_no_descriptor_open() {
    let _watchdog = watchdog(WATCHDOG);
    // Alone in a process: other tests open and close descriptors meanwhile.
    run_test_alone("pool_descriptors_helper", ("SHMPROC_POOL_FDS", "1"));
}

fn shm_files() -> HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("shmproc"))
        .collect()
}

#[test]
fn processes_must_be_at_least_one() {
    let _watchdog = watchdog(WATCHDOG);
    assert!(matches!(Pool::new(0), Err(PoolError::InvalidArgument(_))));
}

#[test]
fn waiting_on_the_pool_inside_its_callback_is_an_error_not_a_hang() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = Arc::new(pool(StartMethod::Fork, 1));
    let (tx, rx) = std::sync::mpsc::channel();
    let inner = Arc::clone(&pool);
    let h = pool.apply_async(square, 2).callback(move |_: &u64| {
        let apply = inner.apply(square, 3);
        let map = inner.map(square, 0..3u64);
        let imap: Vec<_> = inner.imap(square, 0..2u64).collect();
        tx.send((apply, map, imap)).unwrap();
    });
    let (apply, map, imap) = rx.recv_timeout(PATIENCE).expect("the callback hung waiting on its own pool");
    assert_eq!(apply, Err(TaskError::WouldDeadlock));
    assert_eq!(map, Err(TaskError::WouldDeadlock));
    assert!(imap.iter().all(|r| *r == Err(TaskError::WouldDeadlock)), "{imap:?}");
    assert_eq!(h.get_timeout(PATIENCE), Ok(4));
    // And the pool serves on.
    assert_eq!(pool.apply(square, 5), Ok(25));
}

#[test]
fn a_closed_pool_does_not_restart_its_idle_workers() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    // The workers after the first start in the background: count from when both run.
    let deadline = Instant::now() + PATIENCE;
    while pool.worker_pids().len() < 2 {
        assert!(Instant::now() < deadline, "the second worker never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let before: HashSet<i32> = pool.worker_pids().into_iter().collect();
    let long = pool.apply_async(sleep_ms, 600);
    std::thread::sleep(Duration::from_millis(50));
    pool.close();
    // While the long task runs, the idle worker exits and is not replaced.
    let mut seen = before.clone();
    let until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < until {
        seen.extend(pool.worker_pids());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(seen, before, "workers were started after close");
    assert_eq!(long.get_timeout(PATIENCE), Ok(600));
    assert!(pool.join_timeout(PATIENCE).unwrap());
}

/// Serializes as nothing; deserializing it panics (a user type with a bug).
struct Grumpy;

impl serde::Serialize for Grumpy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for Grumpy {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("Grumpy will not be deserialized");
    }
}

fn grumpy(_: u64) -> Grumpy {
    Grumpy
}

#[test]
fn a_result_whose_deserialize_panics_fails_that_task_and_the_pool_serves_on() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 1);
    assert!(matches!(pool.apply(grumpy, 1), Err(TaskError::Decode(_))));
    assert_eq!(pool.apply(square, 6), Ok(36));
    finish_pool(pool);
}

fn read_value(v: shmproc::Value<u64>) -> u64 {
    v.get().unwrap()
}

/// A shared object as a task's argument: a named one travels by name; an
/// anonymous one fails that task with an error that says why (not postcard's
/// "Serde Serialization Error").
#[test]
fn shared_objects_as_task_arguments_travel_by_name_or_say_why() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 1);
    // (Kept here: the creator's handle dropping would unlink the name before the
    // worker opens it.)
    let named = shmproc::Value::<u64>::new_named(7).unwrap();
    assert_eq!(pool.apply(read_value, named.clone()), Ok(7));
    match pool.apply(read_value, shmproc::Value::<u64>::new(7).unwrap()) {
        Err(TaskError::Encode(why)) => assert!(why.contains("anonymous shared object"), "{why}"),
        other => panic!("{other:?}"),
    }
    finish_pool(pool);
}

/// An iterator whose `size_hint` claims an exact length it does not keep.
struct Liar {
    claims: usize,
    yields: u64,
    next: u64,
}

impl Iterator for Liar {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.yields).then(|| {
            self.next += 1;
            self.next
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claims, Some(self.claims))
    }
}

#[test]
fn a_map_over_an_iterator_that_lies_about_its_length_fails_instead_of_waiting_forever() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    // The input is read as it is encoded when its length is known: one that ends
    // early or runs long is an error, not a map that waits for tasks never sent.
    for (claims, yields) in [(10, 3), (3, 10), (0, 1), (5000, 4999)] {
        let r = pool.map_async(square, Liar { claims, yields, next: 0 }).get_timeout(PATIENCE);
        assert!(matches!(&r, Err(TaskError::Encode(why)) if why.contains("size_hint")), "{claims}/{yields}: {r:?}");
    }
    // One that tells the truth streams as well as a Vec.
    let r = pool.map(square, Liar { claims: 5000, yields: 5000, next: 0 }).unwrap();
    assert_eq!(r, (1..=5000u64).map(|x| x * x).collect::<Vec<_>>());
}

/// A result whose `Deserialize` panics on 13 (a user's type with a bug, run on the
/// pool's result-handling thread).
#[derive(Debug, PartialEq, serde::Serialize)]
struct Fragile(u64);

impl<'de> serde::Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_but_13(d).map(Fragile)
    }
}

fn fragile(x: u64) -> Fragile {
    Fragile(x)
}

#[test]
fn a_result_that_panics_as_it_is_read_fails_its_chunk_once() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = pool(StartMethod::Fork, 2);
    for ordered in [true, false] {
        let mut it = if ordered {
            pool.imap_chunked(fragile, 0..50u64, 5)
        } else {
            pool.imap_unordered_chunked(fragile, 0..50u64, 5)
        };
        let mut ok = Vec::new();
        let mut failed = 0;
        while let Some(r) = it.next_timeout(PATIENCE) {
            match r {
                Ok(Fragile(x)) => ok.push(x),
                Err(TaskError::Decode(_)) => failed += 1,
                Err(e) => panic!("ordered {ordered}: {e:?}"),
            }
        }
        // The chunk holding 13 (10..15) fails whole, once; every other result comes once.
        assert_eq!(failed, 5, "ordered {ordered}");
        ok.sort_unstable();
        assert_eq!(ok, (0..50).filter(|x| !(10..15).contains(x)).collect::<Vec<_>>(), "ordered {ordered}");
    }
}

/// A worker initializer that leaves the worker no descriptor to open anything with.
fn without_descriptors(_: ()) {
    std::mem::forget(exhaust_descriptors());
}

fn byte_count(v: Vec<u8>) -> usize {
    v.len()
}

/// Regression (a review found it): a worker that could not open a large task
/// message (out of descriptors) died, the message went to the front of the backlog,
/// the replacement took it and died in turn, forever, and `get` never returned.
/// Now a worker waits for the shortage to pass for a while, and the third worker
/// that dies taking one message fails it; the pool serves on.
#[test]
fn a_message_that_workers_cannot_open_fails_after_three_deaths_instead_of_forever() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Fork)
        .initializer(without_descriptors, ())
        .build()
        .unwrap();
    let first = pool.worker_pids();
    // Over a quarter of the worker's ring: it travels in a segment of its own.
    let r = pool.apply_async(byte_count, vec![7u8; 200_000]);
    match r.get_timeout(PATIENCE) {
        Err(TaskError::Send(why)) => assert!(why.contains("3 workers died taking it"), "{why}"),
        other => panic!("expected the message to fail after three deaths, got {other:?}"),
    }
    // Small messages need no descriptor: the third replacement serves them.
    assert_eq!(pool.apply(square, 12), Ok(144));
    let now = pool.worker_pids();
    assert_ne!(first, now, "the workers that died were replaced");
    pool.terminate();
    pool.join().unwrap();
}

/// Two workers, two such messages: each dying worker's replacement takes the other
/// message, and counted per message (not "in a row") both still fail.
#[test]
fn two_messages_that_workers_cannot_open_both_fail_with_two_workers() {
    let _watchdog = watchdog(WATCHDOG);
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .initializer(without_descriptors, ())
        .build()
        .unwrap();
    let a = pool.apply_async(byte_count, vec![1u8; 200_000]);
    let b = pool.apply_async(byte_count, vec![2u8; 200_000]);
    for r in [a, b] {
        match r.get_timeout(PATIENCE) {
            Err(TaskError::Send(why)) => assert!(why.contains("3 workers died taking it"), "{why}"),
            other => panic!("expected the message to fail after three deaths, got {other:?}"),
        }
    }
    assert_eq!(pool.apply(square, 12), Ok(144));
    pool.terminate();
    pool.join().unwrap();
}

fn big_reply(n: usize) -> Vec<u8> {
    vec![3u8; n]
}

/// Regression (a review found it): a reply too large for the result ring, which the
/// parent could not open for want of descriptors, was taken for a damaged ring: every
/// task failed and the pool was terminated. Now the reply waits in the ring until
/// the parent can open it.
#[test]
fn a_parent_out_of_descriptors_for_a_moment_gets_its_large_result_afterwards() {
    let child = spawn_child(|| {
        let pool = Pool::builder().processes(1).start_method(StartMethod::Fork).build().unwrap();
        assert_eq!(pool.apply(square, 2), Ok(4), "the worker is up");
        let (taken, old) = exhaust_descriptors();
        let r = pool.apply_async(big_reply, 300_000);
        std::thread::sleep(Duration::from_millis(200));
        let waited = !r.ready();
        restore_descriptors(taken, old);
        let got = r.get_timeout(PATIENCE);
        let served_on = pool.apply(square, 3) == Ok(9);
        pool.terminate();
        match (waited, got, served_on) {
            (true, Ok(v), true) if v.len() == 300_000 && v.iter().all(|&b| b == 3) => 0,
            (false, ..) => 1, // the reply was read although the parent had no descriptor
            (_, Err(e), _) => {
                eprintln!("{e}");
                2
            }
            _ => 3,
        }
    });
    assert_eq!(join(child), Exit::Code(0));
}

/// Regression (a review found it): five failed starts in a row broke the pool, and
/// with every worker killed while starts failed for a moment (out of descriptors or
/// processes) the replacements failed five times within a few milliseconds. Now
/// the failures must also go on for a second.
#[test]
fn workers_that_cannot_be_replaced_for_a_moment_are_replaced_afterwards() {
    let child = spawn_child(|| {
        let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build().unwrap();
        assert_eq!(pool.apply(square, 2), Ok(4), "the workers are up");
        // Both slots are tried again at every look at the workers (every 20 ms).
        shmproc::testing::fail_worker_starts(12);
        let before = pool.worker_pids();
        for &pid in &before {
            // SAFETY: signalling our own worker process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let waiting: Vec<_> = (0..10u64).map(|x| pool.apply_async(square, x)).collect();
        let all = waiting.iter().enumerate().all(|(x, r)| r.get_timeout(PATIENCE) == Ok(x as u64 * x as u64));
        let served_on = pool.apply(square, 3) == Ok(9);
        let replaced = pool.worker_pids().iter().all(|pid| !before.contains(pid));
        pool.terminate();
        match (all, served_on, replaced) {
            (true, true, true) => 0,
            (false, ..) => 1,
            (true, false, _) => 2,
            (true, true, false) => 3,
        }
    });
    assert_eq!(join(child), Exit::Code(0));
}

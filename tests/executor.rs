//! The executors across real worker processes (every start method) and threads:
//! every method, the futures' states and callbacks, `as_completed` and `wait`,
//! cancellation and its races, awaiting from a minimal runtime and from tokio, and
//! the faults (panics, killed workers, broken executors, shutdown).

shmproc::init_before_main!();

mod common;

/// How long any test here may run in all (see `common::watchdog`).
const WATCHDOG: Duration = Duration::from_secs(120);

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use shmproc::{
    as_completed, wait, Executor, MapOptions, ProcessPoolExecutor, ReturnWhen, StartMethod, SubmitError, TaskError,
    TaskFuture, ThreadPoolExecutor, Value,
};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Waits (at most PATIENCE) until the named event is set.
fn after_event(event: shmproc::Event) -> u64 {
    u64::from(event.wait_timeout(PATIENCE))
}

fn fails_on_even(n: u64) -> u64 {
    assert!(n % 2 == 1, "even input {n}");
    n
}

/// Counts, across processes, how many tasks started (set by the initializer).
static RUNS: OnceLock<Value<u64>> = OnceLock::new();

fn keep_counter(v: Value<u64>) {
    let _ = RUNS.set(v);
}

/// Counts itself in `RUNS`, then sleeps `ms`.
fn counted_sleep(ms: u64) -> u64 {
    if let Some(v) = RUNS.get() {
        *v.lock().unwrap() += 1;
    }
    sleep_ms(ms)
}

fn executor(method: StartMethod, n: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder().max_workers(n).start_method(method).build().unwrap()
}

/// An executor of `n` workers whose tasks count their runs in the returned Value.
fn counting_executor(n: usize) -> (ProcessPoolExecutor, Value<u64>) {
    let runs = Value::<u64>::new(0).unwrap();
    let ex = ProcessPoolExecutor::builder().max_workers(n).initializer(keep_counter, runs.clone()).build().unwrap();
    (ex, runs)
}

/// Waits (at most PATIENCE) until `cond` holds.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn submit_map_and_as_completed_under_every_start_method() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let ex = executor(method, 2);
        let futures: Vec<_> = (0..200u64).map(|i| ex.submit(square, i).unwrap()).collect();
        let mut seen = [false; 200];
        for f in as_completed(&futures, Some(PATIENCE)) {
            let v = *f.unwrap().result(None).unwrap();
            let i = (v as f64).sqrt() as usize;
            assert_eq!((i * i) as u64, v);
            assert!(!std::mem::replace(&mut seen[i], true), "{method:?}: {i} twice");
        }
        assert!(seen.iter().all(|&s| s), "{method:?}: a future never came");
        for chunksize in [1, 7, 1000] {
            let got: Vec<u64> = ex
                .map(square, 0..500u64, MapOptions::new().chunksize(chunksize).timeout(PATIENCE))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(got, (0..500u64).map(|x| x * x).collect::<Vec<_>>(), "{method:?} chunksize {chunksize}");
        }
        ex.shutdown(true, false);
        assert!(ex.worker_pids().is_empty(), "{method:?}: workers left after shutdown(wait)");
    }
}

#[test]
fn the_thread_executor_runs_capturing_closures_on_named_threads_within_max_workers() {
    let _watchdog = watchdog(WATCHDOG);
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let ex = ThreadPoolExecutor::builder()
        .max_workers(3)
        .thread_name_prefix("fetcher")
        .initializer(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let futures: Vec<TaskFuture<String>> = (0..30)
        .map(|i| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            ex.submit(
                move |suffix: &str| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    format!("{i}{suffix}:{}", std::thread::current().name().unwrap())
                },
                "!",
            )
            .unwrap()
        })
        .collect();
    for (i, f) in futures.iter().enumerate() {
        let s = f.result(Some(PATIENCE)).unwrap();
        assert!(s.starts_with(&format!("{i}!:fetcher_")), "{s}");
    }
    assert!(most.load(Ordering::SeqCst) <= 3, "more than max_workers at once");
    assert!(most.load(Ordering::SeqCst) >= 2, "tasks never ran in parallel");
    // The initializer ran once per thread, and no more threads than max_workers.
    assert_eq!(started.load(Ordering::SeqCst), 3);
    let data = vec![1u64, 2, 3];
    let offset = 10;
    let got: Vec<u64> =
        ex.map(move |x: u64| x + offset, data, MapOptions::new()).unwrap().map(Result::unwrap).collect();
    assert_eq!(got, vec![11, 12, 13]);
}

#[test]
fn a_future_goes_pending_running_done_and_cancels_only_while_pending() {
    let _watchdog = watchdog(WATCHDOG);
    let (ex, runs) = counting_executor(1);
    let first = ex.submit(counted_sleep, 400).unwrap();
    let rest: Vec<_> = (0..20).map(|_| ex.submit(counted_sleep, 0).unwrap()).collect();
    eventually("the first task runs", || runs.get().unwrap() == 1);
    assert!(first.running() && !first.done() && !first.cancelled());
    assert!(!first.cancel(), "a running task was cancelled");
    let last = rest.last().unwrap();
    assert!(!last.running() && !last.done(), "the last of 21 tasks on one busy worker is not pending");
    let called = Arc::new(Mutex::new(None));
    let c = Arc::clone(&called);
    last.add_done_callback(move |r: &Result<u64, TaskError>| *c.lock().unwrap() = Some(r.clone()));
    assert!(last.cancel());
    assert!(last.cancel(), "cancel() of a cancelled future is true");
    assert!(last.cancelled() && last.done() && !last.running());
    assert_eq!(*called.lock().unwrap(), Some(Err(TaskError::Cancelled)), "the callback runs on cancel");
    assert_eq!(last.result(Some(PROMPT)), Err(TaskError::Cancelled));
    assert_eq!(last.exception(Some(PROMPT)), Err(TaskError::Cancelled));
    assert_eq!(first.result(Some(PATIENCE)), Ok(&400));
    assert_eq!(first.exception(Some(PROMPT)), Ok(None));
    for f in &rest[..19] {
        assert_eq!(f.result(Some(PATIENCE)), Ok(&0));
    }
    ex.shutdown(true, false);
    // The cancelled task never ran.
    assert_eq!(runs.get().unwrap(), 20);
}

#[test]
fn done_callbacks_run_in_the_parent_on_the_result_thread_or_at_once() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = executor(StartMethod::Fork, 2);
    let f = ex.submit(sleep_ms, 100).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx2 = tx.clone();
    f.add_done_callback(|_| panic!("a callback that panics is reported and ignored"));
    f.add_done_callback(move |r: &Result<u64, TaskError>| {
        let thread = std::thread::current().name().map(str::to_owned);
        tx2.send((r.clone(), std::process::id(), thread)).unwrap();
    });
    let (r, pid, thread) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(r, Ok(100));
    assert_eq!(pid, std::process::id(), "the callback ran outside the parent");
    assert_eq!(thread.as_deref(), Some("shmproc-pool"));
    // Already done: called at once, on this thread.
    let me = std::thread::current().id();
    f.add_done_callback(move |r: &Result<u64, TaskError>| {
        assert_eq!(std::thread::current().id(), me);
        tx.send((r.clone(), 0, None)).unwrap();
    });
    assert_eq!(rx.try_recv().unwrap().0, Ok(100));
    // The article's test(n): the callback catches the error of a task that fails.
    let errors = Arc::new(Mutex::new(Vec::new()));
    let futures: Vec<_> = (1..=4u64)
        .map(|n| {
            let f = ex.submit(fails_on_even, n).unwrap();
            let errors = Arc::clone(&errors);
            f.add_done_callback(move |r: &Result<u64, TaskError>| {
                if let Err(e) = r {
                    errors.lock().unwrap().push(e.to_string());
                }
            });
            f
        })
        .collect();
    let (done, not_done) = wait(&futures, Some(PATIENCE), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), not_done.len()), (4, 0));
    eventually("both errors reach their callbacks", || errors.lock().unwrap().len() == 2);
    assert!(errors.lock().unwrap().iter().all(|e| e.contains("even input")), "{:?}", errors.lock().unwrap());
}

#[test]
fn waiting_inside_a_process_executors_callback_is_an_error_not_a_hang() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = executor(StartMethod::Fork, 2);
    let slow = ex.submit(sleep_ms, 1000).unwrap();
    // `first` finishes only once its callback is registered: a callback added to a
    // finished future runs at once on this thread, where waiting is allowed.
    let go = shmproc::Event::new_named().unwrap();
    let first = ex.submit(after_event, go.clone()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    first.add_done_callback(move |_| {
        tx.send(slow.result(None).copied()).unwrap();
    });
    go.set();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Err(TaskError::WouldDeadlock));
}

#[test]
fn as_completed_yields_in_completion_order_and_times_out() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = executor(StartMethod::Fork, 3);
    let futures: Vec<_> = [600u64, 10, 250].iter().map(|&ms| ex.submit(sleep_ms, ms).unwrap()).collect();
    let order: Vec<u64> = as_completed(&futures, Some(PATIENCE)).map(|f| *f.unwrap().result(None).unwrap()).collect();
    assert_eq!(order, vec![10, 250, 600]);
    // Python's pattern: futures as keys of a map. (Clippy sees the futures' inner
    // mutability; they hash by identity, which never changes.)
    #[allow(clippy::mutable_key_type)]
    let by_future: HashMap<TaskFuture<u64>, &str> =
        [(ex.submit(sleep_ms, 5).unwrap(), "five"), (ex.submit(sleep_ms, 50).unwrap(), "fifty")].into_iter().collect();
    let names: Vec<&str> = as_completed(by_future.keys(), Some(PATIENCE)).map(|f| by_future[f.unwrap()]).collect();
    assert_eq!(names, vec!["five", "fifty"]);
    // A timeout: an error when it runs out, then the end.
    let slow = [ex.submit(sleep_ms, 2000).unwrap(), ex.submit(sleep_ms, 0).unwrap()];
    let start = Instant::now();
    let mut it = as_completed(&slow, Some(Duration::from_millis(200)));
    assert_eq!(it.next().map(|r| r.map(|f| *f.result(None).unwrap())), Some(Ok(0)));
    assert_eq!(it.next().map(|r| r.map(|_| ())), Some(Err(TaskError::Timeout)));
    assert!(it.next().is_none());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(200) && waited < PROMPT, "{waited:?}");
    // The same future twice counts once (Python takes a set).
    let one = ex.submit(square, 3).unwrap();
    assert_eq!(as_completed([&one, &one], Some(PATIENCE)).count(), 1);
}

#[test]
fn wait_returns_when_asked() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = executor(StartMethod::Fork, 3);
    // FirstCompleted.
    let fs = [ex.submit(sleep_ms, 1500).unwrap(), ex.submit(sleep_ms, 10).unwrap()];
    let (done, not_done) = wait(&fs, Some(PATIENCE), ReturnWhen::FirstCompleted);
    assert_eq!(done, vec![&fs[1]]);
    assert_eq!(not_done, vec![&fs[0]]);
    // FirstException: returns at the failure, not waiting for the slow one.
    let fs = [ex.submit(sleep_ms, 1500).unwrap(), ex.submit(fails_on_even, 2).unwrap()];
    let start = Instant::now();
    let (done, not_done) = wait(&fs, Some(PATIENCE), ReturnWhen::FirstException);
    assert!(start.elapsed() < Duration::from_millis(1200), "waited for the slow one: {:?}", start.elapsed());
    assert_eq!((done, not_done), (vec![&fs[1]], vec![&fs[0]]));
    // FirstException without a failure: all of them.
    let fs = [ex.submit(square, 2).unwrap(), ex.submit(square, 3).unwrap()];
    let (done, _) = wait(&fs, Some(PATIENCE), ReturnWhen::FirstException);
    assert_eq!(done.len(), 2);
    // AllCompleted, with a timeout too short: what is done so far.
    let fs = [ex.submit(sleep_ms, 0).unwrap(), ex.submit(sleep_ms, 3000).unwrap()];
    let (done, not_done) = wait(&fs, Some(Duration::from_millis(300)), ReturnWhen::AllCompleted);
    assert_eq!((done, not_done), (vec![&fs[0]], vec![&fs[1]]));
    for f in &fs {
        f.cancel();
    }
}

#[test]
fn cancels_racing_with_starts_never_leave_a_future_both_cancelled_and_completed() {
    let _watchdog = watchdog(WATCHDOG);
    // Threads: the run count is exact.
    for round in 0..20 {
        let ex = ThreadPoolExecutor::new(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let futures: Arc<Vec<TaskFuture<usize>>> = Arc::new(
            (0..200)
                .map(|i| {
                    let ran = Arc::clone(&ran);
                    ex.submit(move |()| ran.fetch_add(1, Ordering::SeqCst) + i, ()).unwrap()
                })
                .collect(),
        );
        let canceller = {
            let futures = Arc::clone(&futures);
            std::thread::spawn(move || futures.iter().rev().filter(|f| f.cancel()).count())
        };
        let cancelled = canceller.join().unwrap();
        drop(ex);
        let completed = futures.iter().filter(|f| f.result(Some(PROMPT)).is_ok()).count();
        let flagged = futures.iter().filter(|f| f.cancelled()).count();
        assert_eq!(completed + cancelled, 200, "round {round}");
        assert_eq!(flagged, cancelled, "round {round}");
        assert_eq!(ran.load(Ordering::SeqCst), completed, "round {round}: a cancelled task ran");
    }
    // Processes: the same, counted in shared memory.
    for round in 0..5 {
        let (ex, runs) = counting_executor(2);
        let futures: Arc<Vec<TaskFuture<u64>>> =
            Arc::new((0..300).map(|_| ex.submit(counted_sleep, 0).unwrap()).collect());
        let canceller = {
            let futures = Arc::clone(&futures);
            std::thread::spawn(move || futures.iter().rev().filter(|f| f.cancel()).count())
        };
        let cancelled = canceller.join().unwrap();
        ex.shutdown(true, false);
        let completed = futures.iter().filter(|f| f.result(Some(PROMPT)).is_ok()).count();
        assert_eq!(completed + cancelled, 300, "round {round}");
        assert!(futures.iter().all(|f| f.done()));
        assert_eq!(runs.get().unwrap() as usize, completed, "round {round}: a cancelled task ran");
    }
}

#[test]
fn futures_are_awaited_from_a_minimal_runtime_and_from_tokio_without_blocking_it() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = executor(StartMethod::Fork, 2);
    let f = ex.submit(square, 12).unwrap();
    assert_eq!(pollster::block_on(f), Ok(144));
    let tex = ThreadPoolExecutor::new(2);
    let g = tex.submit(|s: String| s.len(), "four".to_owned()).unwrap();
    assert_eq!(pollster::block_on(g), Ok(4));

    // One runtime thread: if awaiting blocked it, the ticker could not tick.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let ticks = Arc::new(AtomicUsize::new(0));
    let (value, ticked) = rt.block_on(async {
        let t = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            loop {
                t.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let slow = ex.submit(sleep_ms, 300).unwrap();
        let value = tokio::time::timeout(PATIENCE, slow).await.expect("the future never woke its task");
        ticker.abort();
        (value, ticks.load(Ordering::SeqCst))
    });
    assert_eq!(value, Ok(300));
    assert!(ticked >= 10, "the runtime's thread was blocked: {ticked} ticks");
    // Many at once on a multi-threaded runtime.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let futures: Vec<_> = (0..100u64).map(|i| ex.submit(square, i).unwrap()).collect();
    let sum: u64 = rt.block_on(async {
        let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        let mut sum = 0;
        for h in handles {
            sum += tokio::time::timeout(PATIENCE, h).await.unwrap().unwrap().unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..100u64).map(|i| i * i).sum());
}

#[test]
fn a_panicking_task_fails_alone_and_exception_returns_it() {
    let _watchdog = watchdog(WATCHDOG);
    for ex in [Box::new(executor(StartMethod::Fork, 2)) as Box<dyn std::any::Any>, Box::new(ThreadPoolExecutor::new(2))]
    {
        let (bad, good) = if let Some(ex) = ex.downcast_ref::<ProcessPoolExecutor>() {
            (ex.submit(fails_on_even, 4).unwrap(), ex.submit(fails_on_even, 5).unwrap())
        } else {
            let ex = ex.downcast_ref::<ThreadPoolExecutor>().unwrap();
            (Executor::submit(ex, fails_on_even, 4).unwrap(), Executor::submit(ex, fails_on_even, 5).unwrap())
        };
        let err = bad.result(Some(PATIENCE)).unwrap_err();
        assert!(matches!(&err, TaskError::Panicked { message, .. } if message == "even input 4"), "{err:?}");
        assert_eq!(bad.exception(Some(PROMPT)), Ok(Some(&err)));
        assert_eq!(good.result(Some(PATIENCE)), Ok(&5));
    }
}

#[test]
fn a_killed_worker_fails_its_future_and_the_executor_serves_on() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let (ex, runs) = {
            let runs = Value::<u64>::new(0).unwrap();
            let ex = ProcessPoolExecutor::builder()
                .max_workers(1)
                .start_method(method)
                .initializer(keep_counter, runs.clone())
                .build()
                .unwrap();
            (ex, runs)
        };
        let victim = ex.submit(counted_sleep, 20_000).unwrap();
        let after: Vec<_> = (0..5).map(|_| ex.submit(square, 3).unwrap()).collect();
        eventually("the victim runs", || runs.get().unwrap() == 1);
        let pid = ex.worker_pids()[0];
        // SAFETY: signalling our own worker process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let err = victim.result(Some(PATIENCE)).unwrap_err();
        assert_eq!(err, TaskError::WorkerDied { pid, exitcode: -libc::SIGKILL }, "{method:?}");
        assert!(err.to_string().contains("signal 9"), "{err}");
        for f in &after {
            assert_eq!(f.result(Some(PATIENCE)), Ok(&9), "{method:?}");
        }
        assert_eq!(*ex.submit(square, 4).unwrap().result(Some(PATIENCE)).unwrap(), 16);
    }
}

#[test]
fn break_on_worker_death_breaks_the_executor_as_python_does() {
    let _watchdog = watchdog(WATCHDOG);
    let runs = Value::<u64>::new(0).unwrap();
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .break_on_worker_death(true)
        .initializer(keep_counter, runs.clone())
        .build()
        .unwrap();
    let victim = ex.submit(counted_sleep, 20_000).unwrap();
    let pending: Vec<_> = (0..5).map(|_| ex.submit(square, 3).unwrap()).collect();
    eventually("the victim runs", || runs.get().unwrap() == 1);
    // SAFETY: signalling our own worker process.
    unsafe { libc::kill(ex.worker_pids()[0], libc::SIGKILL) };
    assert!(matches!(victim.result(Some(PATIENCE)), Err(TaskError::WorkerDied { .. })));
    for f in &pending {
        let err = f.result(Some(PATIENCE)).unwrap_err();
        assert!(matches!(&err, TaskError::Broken(why) if why.contains("signal 9")), "{err:?}");
    }
    match ex.submit(square, 77) {
        Err(SubmitError::Broken(args, why)) => assert_eq!((args, why.contains("broken")), (77, true)),
        other => panic!("submit to a broken executor: {other:?}"),
    }
    // No worker is restarted.
    std::thread::sleep(Duration::from_millis(100));
    assert!(ex.worker_pids().is_empty());
}

#[test]
fn submit_after_shutdown_is_an_error_that_hands_the_arguments_back() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = executor(StartMethod::Fork, 1);
    ex.shutdown(true, false);
    match ex.submit(square, 5) {
        Err(e @ SubmitError::Shutdown(_)) => {
            assert!(e.to_string().contains("shut down"));
            assert_eq!(e.into_inner(), 5);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ex.map(square, vec![1u64, 2], MapOptions::new()).unwrap_err().into_inner(), vec![1, 2]);
    let tex = ThreadPoolExecutor::new(1);
    tex.shutdown(false, false);
    assert_eq!(tex.submit(|s: String| s, "back".to_owned()).unwrap_err().into_inner(), "back");
    assert_eq!(tex.map(|x: u8| x, vec![9u8], MapOptions::new()).unwrap_err().into_inner(), vec![9]);
}

#[test]
fn shutdown_with_cancel_futures_cancels_what_has_not_started() {
    let _watchdog = watchdog(WATCHDOG);
    let (ex, runs) = counting_executor(1);
    let first = ex.submit(counted_sleep, 300).unwrap();
    let rest: Vec<_> = (0..50).map(|_| ex.submit(counted_sleep, 0).unwrap()).collect();
    eventually("the first task runs", || runs.get().unwrap() == 1);
    let start = Instant::now();
    ex.shutdown(true, true);
    assert!(start.elapsed() < PATIENCE);
    assert_eq!(first.result(Some(PROMPT)), Ok(&300));
    let cancelled = rest.iter().filter(|f| f.cancelled()).count();
    let completed = rest.iter().filter(|f| f.result(Some(PROMPT)).is_ok()).count();
    assert!(rest.iter().all(|f| f.done()));
    assert_eq!(cancelled + completed, 50);
    assert!(cancelled >= 40, "only {cancelled} of the 50 waiting tasks were cancelled");
    assert_eq!(runs.get().unwrap() as usize, 1 + completed, "a cancelled task ran");
    assert!(rest.iter().filter(|f| f.cancelled()).all(|f| f.result(None) == Err(TaskError::Cancelled)));

    // The thread executor likewise.
    // (The gate is a channel with a timeout, so that a cancelled first task fails
    // the test instead of leaving it waiting at a barrier nobody else reaches.)
    let tex = ThreadPoolExecutor::new(1);
    let (gate, opened) = std::sync::mpsc::channel::<()>();
    let running = tex.submit(move |()| opened.recv_timeout(PATIENCE).is_ok(), ()).unwrap();
    eventually("the first thread task runs", || running.running());
    let waiting: Vec<_> = (0..10).map(|i| tex.submit(move |()| i, ()).unwrap()).collect();
    let closer = std::thread::spawn(move || {
        tex.shutdown(true, true);
        tex
    });
    eventually("the waiting tasks are cancelled", || waiting.iter().all(|f| f.cancelled()));
    gate.send(()).unwrap();
    let _tex = closer.join().unwrap();
    assert_eq!(running.result(Some(PROMPT)), Ok(&true), "the running task was not let through its gate");
}

#[test]
fn a_map_dropped_early_cancels_what_has_not_started_and_times_out_as_asked() {
    let _watchdog = watchdog(WATCHDOG);
    let (ex, runs) = counting_executor(1);
    let mut results = ex.map(counted_sleep, vec![50u64; 40], MapOptions::new()).unwrap();
    assert_eq!(results.next(), Some(Ok(50)));
    drop(results);
    ex.shutdown(true, false);
    let ran = runs.get().unwrap();
    assert!(ran < 10, "{ran} of 40 ran after the map was dropped");

    let ex = executor(StartMethod::Fork, 2);
    let start = Instant::now();
    let mut results =
        ex.map(sleep_ms, vec![0u64, 5000, 0], MapOptions::new().timeout(Duration::from_millis(300))).unwrap();
    assert_eq!(results.next(), Some(Ok(0)));
    assert_eq!(results.next(), Some(Err(TaskError::Timeout)));
    assert_eq!(results.next(), None);
    assert!(start.elapsed() < PROMPT, "{:?}", start.elapsed());
    // A task that fails is an error in its place; the rest carry on.
    let got: Vec<_> = ex.map(fails_on_even, 1..=4u64, MapOptions::new().chunksize(2)).unwrap().collect();
    assert_eq!(got[0], Ok(1));
    assert!(matches!(got[1], Err(TaskError::Panicked { .. })));
    assert_eq!(got[2], Ok(3));
}

#[test]
fn an_initializer_that_panics_breaks_the_thread_executor() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = ThreadPoolExecutor::builder().max_workers(2).initializer(|| panic!("no database")).build();
    let f = ex.submit(|x: u32| x, 1).unwrap();
    let err = f.result(Some(PATIENCE)).unwrap_err();
    assert!(matches!(&err, TaskError::Broken(why) if why.contains("no database")), "{err:?}");
    assert!(matches!(ex.submit(|x: u32| x, 2), Err(SubmitError::Broken(2, _))));
}

#[test]
fn dropping_an_executor_waits_for_its_tasks_and_reaps_its_workers() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = executor(StartMethod::Fork, 2);
    let futures: Vec<_> = (0..6).map(|_| ex.submit(sleep_ms, 50).unwrap()).collect();
    let pids = ex.worker_pids();
    drop(ex);
    for f in &futures {
        assert!(f.done(), "a task was still running after the executor was dropped");
        assert_eq!(f.result(None), Ok(&50));
    }
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} is still there");
    }
}

fn pid_of(_: u64) -> u32 {
    std::process::id()
}

#[test]
fn max_tasks_per_child_replaces_the_executors_workers() {
    let _watchdog = watchdog(WATCHDOG);
    let ex = ProcessPoolExecutor::builder().max_workers(2).max_tasks_per_child(3).build().unwrap();
    let futures: Vec<_> = (0..30).map(|i| ex.submit(pid_of, i).unwrap()).collect();
    let pids: Vec<u32> = futures.iter().map(|f| *f.result(Some(PATIENCE)).unwrap()).collect();
    let distinct: std::collections::HashSet<_> = pids.iter().collect();
    assert!(distinct.len() >= 10, "30 tasks, 3 a worker: only {} workers", distinct.len());
    for pid in &distinct {
        assert!(pids.iter().filter(|p| p == pid).count() <= 3, "a worker ran more than 3 tasks");
    }
}

#[test]
fn executors_shut_down_through_a_dyn_executor() {
    let _watchdog = watchdog(WATCHDOG);
    let executors: Vec<Box<dyn Executor>> =
        vec![Box::new(executor(StartMethod::Fork, 1)), Box::new(ThreadPoolExecutor::new(1))];
    for ex in &executors {
        assert_eq!(ex.max_workers(), 1);
        ex.shutdown(true, false);
    }
    let ex = ThreadPoolExecutor::new(1);
    Executor::shutdown(&ex, true, false);
    assert!(matches!(ex.submit(|x: u8| x, 1), Err(SubmitError::Shutdown(1))));
}

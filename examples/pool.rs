//! The reference article's section 1.2 (`multiprocessing.Pool`) and its example 3.1,
//! in shmproc: one function per section.
//!
//! ```python
//! def callback(result):
//!     with open("result.txt", "a+", encoding="utf-8") as f:
//!         f.write(str(result) + "\n")
//!
//! def run(num):
//!     return num * num
//!
//! if __name__ == '__main__':
//!     pool = multiprocessing.Pool(6)
//!     for i in range(1000):
//!         pool.apply_async(run, args=(i,), callback=callback)
//!     pool.close()
//!     pool.join()
//! ```
//!
//! - 1.2: `Pool(processes, initializer, initargs, maxtasksperchild, context)`
//! - 1.2.2: `apply_async` with a callback and an error callback (and 1.2.1's `apply`)
//! - 1.2.4: `map_async` against 20 000 `apply_async` calls, both timed
//! - 1.2.5: `imap` with a progress bar over a long input, and `imap_unordered`
//! - 1.2.6: `starmap` and `starmap_async`
//! - 3.1: many workers' results written to one file through the callback
//! - and `spawn`, which Python lacks: one child, one value back, as `std::thread::spawn`
//!
//! Tasks are `fn` items (or non-capturing closures), so that a worker can find them
//! under every start method; callbacks run in this process and may capture.
//!
//! Run it with `cargo run --release --example pool`.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use shmproc::{AsyncResult, JoinError, Pool, StartMethod, TaskError};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The article's task.
fn run(num: u64) -> u64 {
    num * num
}

fn fails(num: u64) -> u64 {
    panic!("no square for {num} today");
}

/// Set in each worker by the pool's initializer.
static FACTOR: OnceLock<u64> = OnceLock::new();

/// The initializer: runs once in every worker, before its first task.
fn set_factor(factor: u64) {
    let _ = FACTOR.set(factor);
}

/// A task that uses what the initializer left, and says which worker ran it.
fn scale(x: u64) -> (u64, u32) {
    (x * FACTOR.get().expect("set by the initializer"), std::process::id())
}

/// 1.2: the pool's parameters. A worker leaves after `max_tasks_per_child` tasks and a
/// fresh one, initialized again, takes its place.
fn pool_parameters() -> Result {
    println!("== 1.2 Pool(processes=2, initializer=set_factor, initargs=(10,), maxtasksperchild=5), spawn context");
    let pool = Pool::builder()
        .processes(2)
        .initializer(set_factor, 10)
        .max_tasks_per_child(5)
        .start_method(StartMethod::Spawn)
        .build()?;
    let out = pool.map_chunked(scale, 0..20u64, 1)?; // chunks of one: 20 tasks
    pool.close();
    pool.join()?;
    assert!(out.iter().zip(0u64..).all(|(&(v, _), i)| v == 10 * i));
    let workers: HashSet<u32> = out.iter().map(|&(_, pid)| pid).collect();
    assert!(workers.len() >= 4, "5 tasks a worker, 20 tasks: at least 4 workers");
    println!("  20 tasks, each scaled by the initializer's factor, ran in {} worker processes", workers.len());
    Ok(())
}

/// 1.2.2: `apply_async` returns at once; each result goes to its callback, in this
/// process, as soon as a worker hands it back.
fn apply_async_with_callbacks() -> Result {
    println!("\n== 1.2.2 apply_async with a callback (and 1.2.1's apply)");
    let pool = Pool::new(6)?;
    println!("  apply(run, 12) = {} (blocks until it is done)", pool.apply(run, 12)?);

    // The article's callback appends to result.txt: section 3.1 below does that.
    let results = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<AsyncResult<u64>> = (0..1000u64)
        .map(|i| {
            let results = Arc::clone(&results);
            pool.apply_async(run, i).callback(move |r: &u64| results.lock().unwrap().push(*r))
        })
        .collect();
    // A task that panics fails alone: its error goes to the error callback.
    let failing = pool.apply_async(fails, 7).error_callback(|e: &TaskError| println!("  error_callback: {e}"));
    pool.close();
    pool.join()?;

    let mut got = std::mem::take(&mut *results.lock().unwrap());
    got.sort_unstable();
    assert_eq!(got, (0..1000).map(|i| i * i).collect::<Vec<u64>>());
    assert!(handles.iter().all(|h| h.successful() == Some(true)));
    assert_eq!(failing.successful(), Some(false));
    assert!(matches!(failing.get(), Err(TaskError::Panicked { .. })));
    println!("  1000 callbacks ran; the panicking task failed alone");
    Ok(())
}

/// 1.2.4: `map_async` against one `apply_async` per item, each timed from the pool's
/// creation to its `join`, as in the article.
fn map_async_against_apply_async() -> Result {
    println!("\n== 1.2.4 map_async against apply_async: 20 000 squares, 6 processes");
    let expected: Vec<u64> = (0..20_000).map(|i| i * i).collect();

    let st = Instant::now();
    let pool = Pool::new(6)?;
    let future = pool.map_async(run, 0..20_000u64);
    let squares = future.get()?;
    pool.close();
    pool.join()?;
    let map_async_time = st.elapsed();
    println!("  {:?} ...", &squares[..10]);
    assert_eq!(squares, expected);

    let st = Instant::now();
    let pool = Pool::new(6)?;
    let data = Arc::new(Mutex::new(Vec::with_capacity(20_000)));
    let handles: Vec<AsyncResult<u64>> = (0..20_000u64)
        .map(|i| {
            let data = Arc::clone(&data);
            pool.apply_async(run, i).callback(move |r: &u64| data.lock().unwrap().push(*r))
        })
        .collect();
    pool.close();
    pool.join()?;
    let apply_async_time = st.elapsed();
    assert!(handles.iter().all(|h| h.ready()));
    let mut got = std::mem::take(&mut *data.lock().unwrap());
    got.sort_unstable(); // callbacks run in the order the tasks finish
    assert_eq!(got, expected);

    println!("  map_async:   total time {map_async_time:?} (the article's Python: 0.45 s)");
    println!("  apply_async: total time {apply_async_time:?} (the article's Python: 3.02 s)");
    println!(
        "  map_async sends the items in chunks, apply_async one task each: {:.1}× faster here",
        apply_async_time.as_secs_f64() / map_async_time.as_secs_f64()
    );
    Ok(())
}

/// 1.2.5: `imap` hands results back one at a time, in order, while it still reads the
/// input; `imap_unordered` in the order they finish.
fn imap_with_a_progress_bar() -> Result {
    const N: u64 = 200_000;
    println!("\n== 1.2.5 imap and imap_unordered");
    let pool = Pool::new(6)?;

    // The article's call: chunksize 1 (Python took 4.17 s).
    let st = Instant::now();
    for (i, r) in (0u64..).zip(pool.imap(run, 0..20_000u64)) {
        assert_eq!(r?, i * i);
    }
    println!("  imap, chunksize 1: 20 000 results in order, total time {:?}", st.elapsed());

    // A long input, in chunks of 1000, with a progress bar as the results come.
    let bar = ProgressBar::new(N);
    bar.set_style(
        ProgressStyle::with_template("  {bar:40} {pos}/{len} squares, {per_sec}, {elapsed}").expect("a valid template"),
    );
    let mut sum = 0u64;
    for r in pool.imap_chunked(run, 0..N, 1000) {
        sum += r?;
        bar.inc(1);
    }
    bar.finish();
    assert_eq!(sum, (0..N).map(|i| i * i).sum::<u64>());

    let mut unordered = pool.imap_unordered(run, 0..20_000u64).collect::<std::result::Result<Vec<_>, _>>()?;
    unordered.sort_unstable();
    assert_eq!(unordered, (0..20_000).map(|i| i * i).collect::<Vec<u64>>());
    println!("  imap_unordered: 20 000 results, in the order they finished");
    pool.close();
    pool.join()?;
    Ok(())
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn mul_add(a: u64, b: u64, c: u64) -> u64 {
    a * b + c
}

/// 1.2.6: `starmap` unpacks each tuple into the task's arguments (up to four).
fn several_arguments() -> Result {
    println!("\n== 1.2.6 starmap and starmap_async: tasks with several arguments");
    let pool = Pool::new(6)?;
    let sums = pool.starmap(add, vec![(1u64, 2u64), (3, 4)])?;
    println!("  starmap(add, [(1, 2), (3, 4)]) = {sums:?}");
    assert_eq!(sums, [3, 7]);

    // pool.starmap_async(f, ((a0, b0), (a1, b1), ...)).get()
    let pairs: Vec<(u64, u64)> = (0..1000).map(|i| (i, 2 * i)).collect();
    let sums = pool.starmap_async(add, pairs).get()?;
    assert!(sums.iter().zip(0u64..).all(|(&s, i)| s == 3 * i));

    let v = pool.starmap(mul_add, vec![(2u64, 3u64, 1u64), (4, 5, 6)])?;
    println!("  starmap(mul_add, [(2, 3, 1), (4, 5, 6)]) = {v:?}");
    assert_eq!(v, [7, 26]);
    pool.close();
    pool.join()?;
    Ok(())
}

/// 3.1: six workers, one file. Only the callbacks write to it, and they all run in
/// this process, one at a time, so the lines never interleave.
fn results_into_one_file() -> Result {
    println!("\n== 3.1 many workers' results written to one file through the callback");
    let path = std::env::temp_dir().join(format!("shmproc-pool-result-{}.txt", std::process::id()));
    // Callbacks run on the pool's result-handling thread: the lock is never contended,
    // it only lets every callback hold the file.
    let file = Arc::new(Mutex::new(File::create(&path)?));
    let pool = Pool::new(6)?;
    let handles: Vec<AsyncResult<u64>> = (0..1000u64)
        .map(|i| {
            let file = Arc::clone(&file);
            pool.apply_async(run, i).callback(move |r: &u64| {
                if let Err(e) = writeln!(file.lock().unwrap(), "{r}") {
                    eprintln!("cannot write {r}: {e}");
                }
            })
        })
        .collect();
    pool.close();
    pool.join()?;
    assert!(handles.iter().all(|h| h.successful() == Some(true)));

    let text = std::fs::read_to_string(&path);
    std::fs::remove_file(&path)?; // before checking, so that nothing is left behind
    let mut lines = text?.lines().map(str::parse::<u64>).collect::<std::result::Result<Vec<_>, _>>()?;
    lines.sort_unstable(); // written in the order the tasks finished
    assert_eq!(lines, (0..1000).map(|i| i * i).collect::<Vec<u64>>());
    println!("  1000 lines in {}, one per result, none torn (file removed)", path.display());
    Ok(())
}

/// Beyond Python: `spawn` runs one task in a child and joins it for the value.
fn spawn_and_join() -> Result {
    println!("\n== spawn and JoinHandle: one task in a child, its value back");
    let v = shmproc::spawn(run, 7)?.join()?;
    println!("  spawn(run, 7).join() = {v}");
    assert_eq!(v, 49);

    // The child prints its panic on stderr, as a panicking thread does; join reports it.
    let h = shmproc::spawn(fails, 7)?;
    match h.join() {
        Err(e @ JoinError::Panicked { .. }) => println!("  spawn(fails, 7).join() = Err({e})"),
        other => return Err(format!("expected the child's panic, got {other:?}").into()),
    }
    Ok(())
}

fn main() -> Result {
    // Python's `if __name__ == '__main__':` guard: a re-executed worker (spawn,
    // forkserver) runs its tasks here and never reaches the rest of main.
    shmproc::init();
    pool_parameters()?;
    apply_async_with_callbacks()?;
    map_async_against_apply_async()?;
    imap_with_a_progress_bar()?;
    several_arguments()?;
    results_into_one_file()?;
    spawn_and_join()?;
    println!("\ndone: every pool closed and joined, every child joined, the file removed");
    Ok(())
}

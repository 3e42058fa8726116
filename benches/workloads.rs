//! shmproc's side of `../shared/BENCHMARKS.md`: one `name<TAB>value<TAB>unit` line per
//! workload, the median of several repetitions after a warm-up, every result checked.
//!
//! Run with `cargo bench --bench workloads -- [PREFIX ...]`; compare with Python's
//! using `../shared/bench/compare`.

use std::time::{Duration, Instant};

use shmproc::testing::{fork, set_spin_rounds, Child, Exit};
use shmproc::{Barrier, Lock, Process, RawArray, Semaphore, StartMethod, Value};

const PATIENCE: Duration = Duration::from_secs(60);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn emit(name: &str, value: f64, unit: &str) {
    println!("{name}\t{value:.4}\t{unit}");
}

fn join(mut c: Child) {
    let exit = c.wait_timeout(PATIENCE).expect("waitpid").expect("child overstayed");
    assert_eq!(exit, Exit::Code(0), "a benchmark child failed");
}

/// 2 child processes × 200 000 `+= 1` under the value's lock, timed from a barrier
/// to the last join, as Python's side does.
fn value_lock_increment() {
    const N: u64 = 200_000;
    let mut rates = Vec::new();
    for _ in 0..8 {
        let v = Value::<u64>::new(0).unwrap();
        let start = Barrier::new(3).unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                let (v, start) = (v.clone(), start.clone());
                fork(move || {
                    if start.wait_timeout(PATIENCE).is_err() {
                        return 1;
                    }
                    for _ in 0..N {
                        *v.lock().unwrap() += 1;
                    }
                    0
                })
                .unwrap()
            })
            .collect();
        start.wait_timeout(PATIENCE).unwrap();
        let t = Instant::now();
        children.into_iter().for_each(join);
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(v.get().unwrap(), 2 * N, "lost updates");
        rates.push(2.0 * N as f64 / dt);
    }
    rates.remove(0); // warm-up
    emit("value_lock_increment", median(rates), "incr/s");
}

fn value_lock_increment_1proc() {
    const N: u64 = 200_000;
    let mut rates = Vec::new();
    for _ in 0..8 {
        let v = Value::<u64>::new(0).unwrap();
        let t = Instant::now();
        for _ in 0..N {
            *v.lock().unwrap() += 1;
        }
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(v.get().unwrap(), N);
        rates.push(N as f64 / dt);
    }
    rates.remove(0);
    emit("value_lock_increment_1proc", median(rates), "incr/s");
}

fn lock_uncontended() {
    const N: u32 = 2_000_000;
    let lock = Lock::new().unwrap();
    let mut times = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        for _ in 0..N {
            drop(std::hint::black_box(lock.acquire().unwrap()));
        }
        times.push(t.elapsed().as_nanos() as f64 / f64::from(N));
    }
    times.remove(0);
    emit("lock_uncontended", median(times), "ns");
}

/// A child fills a 1 M-element f64 array (no lock); the parent sums every element.
fn array_sum_1m() {
    const N: usize = 1_000_000;
    let a = RawArray::<f64>::zeroed(N).unwrap();
    let child = {
        let a = a.clone();
        fork(move || {
            // SAFETY: the child is single-threaded and nothing else in it touches `a`.
            for (i, x) in unsafe { a.as_mut_slice() }.iter_mut().enumerate() {
                *x = i as f64;
            }
            0
        })
        .unwrap()
    };
    join(child);
    let expect = (N * (N - 1) / 2) as f64;
    let mut times = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        // SAFETY: no thread of this process writes `a` while the slice lives.
        let sum: f64 = unsafe { a.as_slice() }.iter().sum();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(sum, expect);
    }
    times.remove(0);
    emit("array_sum_1M", median(times), "ms");
}

/// Not in BENCHMARKS.md: what spinning before sleeping buys. A semaphore ping-pong
/// between two processes, median round trip, with the default spin and with none.
fn semaphore_pingpong() {
    for (name, rounds) in [("semaphore_pingpong", 7), ("semaphore_pingpong_nospin", 0)] {
        set_spin_rounds(rounds);
        const N: usize = 20_000;
        let (ping, pong) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
        let child = {
            let (ping, pong) = (ping.clone(), pong.clone());
            fork(move || {
                for _ in 0..N {
                    if !ping.acquire_timeout(PATIENCE) {
                        return 1;
                    }
                    pong.release().unwrap();
                }
                0
            })
            .unwrap()
        };
        let mut rtts = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            ping.release().unwrap();
            assert!(pong.acquire_timeout(PATIENCE));
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
        join(child);
        emit(name, median(rtts), "us/roundtrip(median)");
    }
    set_spin_rounds(7);
}

fn noop(_: ()) {}

/// Start and join a process with a trivial target, per start method; the fork
/// server is started (by a warm-up run) outside the timing, as on Python's side.
fn process_start_join() {
    for (name, method, reps) in [
        ("process_start_join_fork", StartMethod::Fork, 50),
        ("process_start_join_spawn", StartMethod::Spawn, 20),
        ("process_start_join_forkserver", StartMethod::ForkServer, 50),
    ] {
        let ctx = shmproc::context(method);
        let run = || {
            let mut p: Process = ctx.process(noop, ());
            p.start().unwrap();
            assert!(p.join_timeout(PATIENCE).unwrap(), "{name}: the child overstayed");
            assert_eq!(p.exitcode(), Some(0), "{name}: the child failed");
        };
        run();
        let times = (0..reps)
            .map(|_| {
                let t = Instant::now();
                run();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        emit(name, median(times), "ms");
    }
}

fn main() {
    shmproc::init();
    let prefixes: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let workloads: [(&str, fn()); 6] = [
        ("value_lock_increment", value_lock_increment),
        ("value_lock_increment_1proc", value_lock_increment_1proc),
        ("lock_uncontended", lock_uncontended),
        ("array_sum_1M", array_sum_1m),
        ("semaphore_pingpong", semaphore_pingpong),
        ("process_start_join", process_start_join),
    ];
    for (name, run) in workloads {
        // A prefix selects a group ("value_") or a single line ("process_start_join_fork").
        if prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()) || p.starts_with(name)) {
            run();
        }
    }
}

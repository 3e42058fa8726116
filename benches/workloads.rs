//! shmproc's side of `../shared/BENCHMARKS.md`: one `name<TAB>value<TAB>unit` line per
//! workload, the median of several repetitions after a warm-up, every result checked.
//!
//! Run with `cargo bench --bench workloads -- [PREFIX ...]`; compare with Python's
//! using `../shared/bench/compare`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shmproc::testing::{fork, set_spin_rounds, Child, Exit, DEFAULT_SPIN_ROUNDS};
use shmproc::{
    as_completed, Barrier, Condition, Connection, Dict, Event, Executor, JoinableQueue, Lock, Manager, MapOptions,
    Pipe, Pool, Process, ProcessPoolExecutor, Queue, RawArray, RawValue, Semaphore, StartMethod, ThreadPoolExecutor,
    Value,
};

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
    for (name, rounds) in [("semaphore_pingpong", DEFAULT_SPIN_ROUNDS), ("semaphore_pingpong_nospin", 0)] {
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
    set_spin_rounds(DEFAULT_SPIN_ROUNDS);
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

fn finish(p: &Process) {
    assert!(p.join_timeout(PATIENCE).unwrap(), "{} overstayed", p.name());
    assert_eq!(p.exitcode(), Some(0), "{} failed", p.name());
}

#[derive(Serialize, Deserialize)]
struct QueueRun {
    q: Queue<u64>,
    start: Barrier,
    n: u64,
    size: usize,
    /// Through the loan API: written and read in place.
    in_place: bool,
    done: Event,
    total: Value<u64>,
}

fn queue_producer(r: QueueRun) {
    r.start.wait_timeout(PATIENCE).unwrap();
    if r.in_place {
        for _ in 0..r.n {
            let mut loan = r.q.put_loan(r.size).unwrap();
            loan.fill(0x78);
            loan.commit().unwrap();
        }
    } else if r.size == 0 {
        for i in 0..r.n {
            r.q.put(i).unwrap();
        }
    } else {
        let payload = vec![0x78u8; r.size];
        for _ in 0..r.n {
            r.q.put_bytes(&payload).unwrap();
        }
    }
}

fn queue_consumer(r: QueueRun) {
    r.start.wait_timeout(PATIENCE).unwrap();
    let mut total = 0u64;
    for _ in 0..r.n {
        total += if r.in_place {
            // Summed where it lies, a word at a time: every byte read, none copied.
            let loan = r.q.get_loan().unwrap();
            let sum = loan.chunks_exact(8).fold(0u64, |s, w| s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap())));
            let filled = (loan.len() as u64 / 8).wrapping_mul(u64::from_le_bytes([0x78; 8]));
            if sum == filled {
                loan.len() as u64
            } else {
                0
            }
        } else if r.size == 0 {
            r.q.get().unwrap()
        } else {
            r.q.get_bytes().unwrap().len() as u64
        };
    }
    r.total.set(total).unwrap();
    r.done.set();
}

/// One producer process, one consumer process, a queue of maxsize 1024; timed from
/// the start barrier until the consumer has taken everything. Seconds.
fn run_queue(n: u64, size: usize, in_place: bool) -> f64 {
    let q = Queue::<u64>::new(1024).unwrap();
    let (start, done, total) = (Barrier::new(3).unwrap(), Event::new().unwrap(), Value::new(0u64).unwrap());
    let run =
        || QueueRun { q: q.clone(), start: start.clone(), n, size, in_place, done: done.clone(), total: total.clone() };
    let mut producer = Process::new(queue_producer, run());
    let mut consumer = Process::new(queue_consumer, run());
    producer.start().unwrap();
    consumer.start().unwrap();
    start.wait_timeout(PATIENCE).unwrap();
    let t = Instant::now();
    assert!(done.wait_timeout(PATIENCE), "queue bench timed out");
    let dt = t.elapsed().as_secs_f64();
    finish(&producer);
    finish(&consumer);
    let expect = if size == 0 { n * (n - 1) / 2 } else { n * size as u64 };
    assert_eq!(total.get().unwrap(), expect, "queue bench lost or damaged messages");
    dt
}

fn queue_throughput() {
    let small: Vec<f64> = (0..4).map(|_| 200_000.0 / run_queue(200_000, 0, false)).skip(1).collect();
    emit("queue_throughput_small", median(small), "msg/s");
    let big: Vec<f64> = (0..4).map(|_| 5000.0 * 65536.0 / run_queue(5000, 65536, false) / 1e6).skip(1).collect();
    emit("queue_throughput_64KiB", median(big), "MB/s");
    let in_place: Vec<f64> = (0..4).map(|_| 5000.0 * 65536.0 / run_queue(5000, 65536, true) / 1e6).skip(1).collect();
    emit("queue_throughput_64KiB_inplace", median(in_place), "MB/s");
}

fn joinable_consumer(args: (JoinableQueue<Option<u64>>, Barrier, Value<u64>)) {
    let (q, start, count) = args;
    start.wait_timeout(PATIENCE).unwrap();
    let mut n = 0;
    while let Some(_item) = q.get().unwrap() {
        q.task_done().unwrap();
        n += 1;
    }
    q.task_done().unwrap();
    *count.lock().unwrap() += n;
}

/// The parent puts 50 000 items; 2 consumer processes get and mark each done; timed
/// until `join()` returns.
fn joinable_queue() {
    const N: u64 = 50_000;
    let mut rates = Vec::new();
    for _ in 0..4 {
        let q = JoinableQueue::<Option<u64>>::new(0).unwrap();
        let start = Barrier::new(3).unwrap();
        let count = Value::new(0u64).unwrap();
        let consumers: Vec<Process> = (0..2)
            .map(|_| Process::builder(joinable_consumer, (q.clone(), start.clone(), count.clone())).start().unwrap())
            .collect();
        start.wait_timeout(PATIENCE).unwrap();
        let t = Instant::now();
        for i in 0..N {
            q.put(Some(i)).unwrap();
        }
        assert!(q.join_timeout(PATIENCE), "joinable bench timed out");
        rates.push(N as f64 / t.elapsed().as_secs_f64());
        q.put(None).unwrap();
        q.put(None).unwrap();
        consumers.iter().for_each(finish);
        assert_eq!(count.get().unwrap(), N);
    }
    rates.remove(0);
    emit("joinable_queue", median(rates), "items/s");
}

fn pipe_echo(args: (Connection<u64>, u64)) {
    let (conn, n) = args;
    for _ in 0..n {
        let x = conn.recv().unwrap();
        conn.send(&x).unwrap();
    }
}

/// A child echoes a small integer; 20 000 round trips; the median.
fn pipe_roundtrip() {
    const N: u64 = 20_000;
    let (a, b) = Pipe::duplex::<u64>().unwrap();
    let p = Process::builder(pipe_echo, (b, N + 100)).start().unwrap();
    for i in 0..100 {
        a.send(&i).unwrap();
        assert_eq!(a.recv().unwrap(), i);
    }
    let mut rtts = Vec::with_capacity(N as usize);
    for i in 0..N {
        let t = Instant::now();
        a.send(&i).unwrap();
        assert_eq!(a.recv().unwrap(), i);
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    finish(&p);
    emit("pipe_roundtrip", median(rtts), "us/roundtrip(median)");
}

fn pipe_echo_bytes(args: (Connection<()>, u64)) {
    let (conn, n) = args;
    for _ in 0..n {
        let m = conn.recv_bytes().unwrap();
        conn.send_bytes(&m).unwrap();
    }
}

/// A child echoes 4 KiB byte messages; 10 000 round trips; the median (of three runs'
/// medians), as Python's side does.
fn pipe_roundtrip_bytes() {
    const N: u64 = 10_000;
    let buf: Vec<u8> = (0..4096).map(|i| i as u8).collect();
    let mut medians = Vec::new();
    for _ in 0..3 {
        let (a, b) = Pipe::duplex::<()>().unwrap();
        let p = Process::builder(pipe_echo_bytes, (b, N + 100)).start().unwrap();
        for _ in 0..100 {
            a.send_bytes(&buf).unwrap();
            a.recv_bytes().unwrap();
        }
        let mut rtts = Vec::with_capacity(N as usize);
        for _ in 0..N {
            let t = Instant::now();
            a.send_bytes(&buf).unwrap();
            let got = a.recv_bytes().unwrap();
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(got.len(), 4096);
        }
        finish(&p);
        medians.push(median(rtts));
    }
    emit("pipe_roundtrip_bytes_4KiB", median(medians), "us/roundtrip(median)");
}

fn condition_partner(args: (Condition, RawValue<i32>, u32)) {
    let (cond, turn, n) = args;
    for _ in 0..n {
        let mut g = cond.acquire().unwrap();
        assert!(g.wait_for(|| turn.get() == 1, Some(PATIENCE)).unwrap());
        turn.set(0);
        cond.notify_all();
    }
}

/// Two processes take turns under one Condition: `wait_for(my turn)`, flip the turn,
/// `notify_all`; 20 000 hand-offs; time per hand-off (median of three runs).
fn condition_handoff() {
    const N: u32 = 20_000;
    let mut per = Vec::new();
    for _ in 0..3 {
        let cond = Condition::new().unwrap();
        let turn = RawValue::<i32>::new(0).unwrap();
        let p = Process::builder(condition_partner, (cond.clone(), turn.clone(), N)).start().unwrap();
        let t = Instant::now();
        for _ in 0..N {
            let mut g = cond.acquire().unwrap();
            turn.set(1);
            cond.notify_all();
            assert!(g.wait_for(|| turn.get() == 0, Some(PATIENCE)).unwrap());
        }
        per.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(N));
        finish(&p);
    }
    emit("condition_handoff", median(per), "us/handoff");
}

fn pipe_sink(args: (Connection<u64>, u64)) {
    let (conn, n) = args;
    let mut got = 0u64;
    for _ in 0..n {
        got += conn.recv_bytes().unwrap().len() as u64;
    }
    conn.send(&got).unwrap();
}

/// 500 × 1 MiB `send_bytes` to a child that `recv_bytes` them all.
fn pipe_send_bytes() {
    const N: u64 = 500;
    const SIZE: usize = 1 << 20;
    let buf = vec![0xabu8; SIZE];
    let mut rates = Vec::new();
    for _ in 0..4 {
        let (a, b) = Pipe::duplex::<u64>().unwrap();
        let p = Process::builder(pipe_sink, (b, N)).start().unwrap();
        a.send_bytes(b"ping").unwrap(); // the child counts this one too
        let t = Instant::now();
        for _ in 0..N - 1 {
            a.send_bytes(&buf).unwrap();
        }
        let got = a.recv_timeout(PATIENCE).unwrap();
        let dt = t.elapsed().as_secs_f64();
        finish(&p);
        assert_eq!(got, 4 + (N - 1) * SIZE as u64);
        rates.push((N - 1) as f64 * SIZE as f64 / dt / 1e6);
    }
    rates.remove(0);
    emit("pipe_send_bytes_1MiB", median(rates), "MB/s");
}

// ---------------------------------------------------------------- pools

const N_POOL: u64 = 20_000;

fn square(x: u64) -> u64 {
    x * x
}

fn star_add(a: u64, b: u64) -> u64 {
    a + b
}

/// Times `run` 5 times after a warm-up, in milliseconds, checking each result.
fn timed_ms<T>(mut run: impl FnMut() -> T, check: impl Fn(&T)) -> f64 {
    check(&run());
    let times = (0..5)
        .map(|_| {
            let t = Instant::now();
            let out = run();
            let dt = t.elapsed().as_secs_f64() * 1e3;
            check(&out);
            dt
        })
        .collect();
    median(times)
}

/// The map family on one started, warmed 2-worker pool, as Python's side does.
fn pool_family(prefixes: &[String]) {
    let wanted = |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()));
    let pool = Pool::new(2).unwrap();
    pool.map(square, 0..1000u64).unwrap();
    let expect: Vec<u64> = (0..N_POOL).map(|x| x * x).collect();
    let same = |v: &Vec<u64>| assert!(*v == expect, "wrong results");
    let same_sorted = |v: &Vec<u64>| {
        let mut v = v.clone();
        v.sort_unstable();
        assert!(v == expect, "wrong results");
    };
    if wanted("pool_map_20000") {
        emit("pool_map_20000", timed_ms(|| pool.map(square, 0..N_POOL).unwrap(), same), "ms");
    }
    if wanted("pool_map_async_20000") {
        let t = timed_ms(|| pool.map_async(square, 0..N_POOL).get_timeout(PATIENCE).unwrap(), same);
        emit("pool_map_async_20000", t, "ms");
    }
    if wanted("pool_imap_20000") {
        let t = timed_ms(|| pool.imap(square, 0..N_POOL).map(Result::unwrap).collect::<Vec<u64>>(), same);
        emit("pool_imap_20000", t, "ms");
    }
    if wanted("pool_imap_unordered_20000") {
        let t =
            timed_ms(|| pool.imap_unordered(square, 0..N_POOL).map(Result::unwrap).collect::<Vec<u64>>(), same_sorted);
        emit("pool_imap_unordered_20000", t, "ms");
    }
    if wanted("pool_starmap_20000") {
        // Built once and read in place each time, as Python's side passes its list
        // (a clone inside the timing copied 320 KB that Python's side does not).
        let args: Vec<(u64, u64)> = (0..N_POOL).map(|i| (i, i)).collect();
        let t = timed_ms(
            || pool.starmap(star_add, args.iter().copied()).unwrap(),
            |v: &Vec<u64>| assert_eq!(v[N_POOL as usize - 1], 2 * (N_POOL - 1)),
        );
        emit("pool_starmap_20000", t, "ms");
    }
    if wanted("pool_apply_sync_2000") {
        let t = timed_ms(
            || (0..2000u64).map(|i| pool.apply(square, i).unwrap()).sum::<u64>(),
            |s: &u64| assert_eq!(*s, (0..2000u64).map(|i| i * i).sum::<u64>()),
        );
        emit("pool_apply_sync_2000", t * 1e3 / 2000.0, "us/call");
    }
    pool.terminate();
}

/// The executor workloads on one started, warmed 2-worker process executor, as
/// Python's side does.
fn executor_family(prefixes: &[String]) {
    let wanted = |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()));
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let _ = ex.map(square, 0..100u64, MapOptions::new()).unwrap().count();
    let expect_sum: u64 = (0..N_POOL).map(|x| x * x).sum();
    if wanted("executor_submit_20000") {
        let t = timed_ms(|| submit_all_as_completed(&ex), |s: &u64| assert_eq!(*s, expect_sum));
        emit("executor_submit_20000", t, "ms");
    }
    for chunksize in [1, 1000] {
        let name = format!("executor_map_20000_chunksize{chunksize}");
        if wanted(&name) {
            let options = MapOptions::new().chunksize(chunksize).timeout(PATIENCE);
            let t = timed_ms(
                || ex.map(square, 0..N_POOL, options).unwrap().map(Result::unwrap).sum::<u64>(),
                |s: &u64| assert_eq!(*s, expect_sum),
            );
            emit(&name, t, "ms");
        }
    }
}

/// `submit(square, i)` for every i, then the results summed through `as_completed`.
fn submit_all_as_completed(ex: &impl Executor) -> u64 {
    let futures: Vec<_> = (0..N_POOL).map(|i| ex.submit(square, i).unwrap()).collect();
    as_completed(&futures, Some(PATIENCE)).map(|f| *f.unwrap().result(None).unwrap()).sum()
}

/// Create a 2-worker process executor, run one task, shut down (waiting).
fn executor_startup() {
    let times = (0..6)
        .map(|_| {
            let t = Instant::now();
            let ex = ProcessPoolExecutor::new(2).unwrap();
            assert_eq!(ex.submit(square, 3).unwrap().result(Some(PATIENCE)), Ok(&9));
            drop(ex);
            t.elapsed().as_secs_f64() * 1e3
        })
        .skip(1)
        .collect();
    emit("executor_startup", median(times), "ms");
}

/// 20 000 trivial submits to a 2-thread executor, collected through `as_completed`.
fn thread_executor_submit() {
    let ex = ThreadPoolExecutor::new(2);
    let _ = ex.map(square, 0..100u64, MapOptions::new()).unwrap().count();
    let expect_sum: u64 = (0..N_POOL).map(|x| x * x).sum();
    let t = timed_ms(|| submit_all_as_completed(&ex), |s: &u64| assert_eq!(*s, expect_sum));
    emit("thread_executor_submit_20000", t, "ms");
}

/// A fresh pool each repetition; 20 000 `apply_async` with a callback, until every
/// callback ran.
fn pool_apply_async() {
    let mut times = Vec::new();
    for _ in 0..4 {
        let pool = Pool::new(2).unwrap();
        pool.apply(square, 0).unwrap();
        let got = Arc::new(AtomicU64::new(0));
        let sum = Arc::new(AtomicU64::new(0));
        let done = Event::new().unwrap();
        let t = Instant::now();
        for i in 0..N_POOL {
            let (got, sum, done) = (Arc::clone(&got), Arc::clone(&sum), done.clone());
            let _ = pool.apply_async(square, i).callback(move |r: &u64| {
                sum.fetch_add(*r, Ordering::Relaxed);
                if got.fetch_add(1, Ordering::AcqRel) + 1 == N_POOL {
                    done.set();
                }
            });
        }
        assert!(done.wait_timeout(PATIENCE), "apply_async timed out");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(sum.load(Ordering::Relaxed), (0..N_POOL).map(|x| x * x).sum::<u64>());
        pool.close();
        pool.join().unwrap();
    }
    times.remove(0);
    emit("pool_apply_async_20000", median(times), "ms");
}

/// Create a 2-worker pool, run one task, terminate and join.
fn pool_startup() {
    let times = (0..6)
        .map(|_| {
            let t = Instant::now();
            let pool = Pool::new(2).unwrap();
            assert_eq!(pool.apply(square, 3).unwrap(), 9);
            pool.terminate();
            pool.join().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .skip(1)
        .collect();
    emit("pool_startup", median(times), "ms");
}

const MANAGER_KEYS: u64 = 20_000;

/// Now on the system-wide monotonic clock, in nanoseconds: comparable between
/// processes, unlike an `Instant`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `work(prepared, k)` in 2 forked children (k = 0, 1) released together by a
/// barrier, each having first made `prepare(k)` (a connection, say: `None` fails the
/// child); returns MANAGER_KEYS operations over the time from the first child's
/// start to the last child's end. Each child reads the clock itself: the work takes about a
/// millisecond, as long as waking the parent from the barrier can, so the parent's
/// own clock (Python's side uses it, for work that takes half a second) would start
/// late and overstate the rate.
fn manager_rate<P>(
    prepare: impl Fn(u64) -> Option<P> + Clone + Send + 'static,
    work: impl Fn(&P, u64) -> bool + Clone + Send + 'static,
) -> f64 {
    let start = Barrier::new(3).unwrap();
    let times = RawArray::<u64>::zeroed(4).unwrap();
    let children: Vec<_> = (0..2)
        .map(|k| {
            let (start, prepare, work, times) = (start.clone(), prepare.clone(), work.clone(), times.clone());
            fork(move || {
                let Some(prepared) = prepare(k) else { return 3 };
                if start.wait_timeout(PATIENCE).is_err() {
                    return 1;
                }
                times.set(2 * k as usize, monotonic_ns()).unwrap();
                let ok = work(&prepared, k);
                times.set(2 * k as usize + 1, monotonic_ns()).unwrap();
                if ok {
                    0
                } else {
                    2
                }
            })
            .unwrap()
        })
        .collect();
    start.wait_timeout(PATIENCE).unwrap();
    children.into_iter().for_each(join);
    let t = times.to_vec();
    let elapsed = t[1].max(t[3]) - t[0].min(t[2]);
    MANAGER_KEYS as f64 / (elapsed as f64 * 1e-9)
}

/// The keys child `k` of 2 works on.
fn manager_share(k: u64) -> std::ops::Range<u64> {
    k * MANAGER_KEYS / 2..(k + 1) * MANAGER_KEYS / 2
}

fn set_all(d: &Dict<u64, u64>, k: u64) -> bool {
    manager_share(k).all(|i| d.insert(i, i).is_ok())
}

fn get_all(d: &Dict<u64, u64>, k: u64) -> bool {
    let expected: u64 = manager_share(k).sum();
    manager_share(k).map(|i| d.get(&i).ok().flatten().unwrap_or(u64::MAX)).sum::<u64>() == expected
}

/// 2 processes set 10 000 distinct keys each in a fresh manager dict; then 2
/// processes get 10 000 keys each from a filled one.
fn manager_dict() {
    let m = Manager::start().unwrap();
    let mut rates = Vec::new();
    for _ in 0..6 {
        let d = m.dict::<u64, u64>().unwrap();
        let dc = d.clone();
        rates.push(manager_rate(move |_| Some(dc.clone()), set_all));
        assert_eq!(d.len().unwrap() as u64, MANAGER_KEYS, "lost writes");
        d.clear().unwrap();
    }
    rates.remove(0); // warm-up
    emit("manager_dict_set", median(rates), "ops/s");

    let d = m.dict::<u64, u64>().unwrap();
    for i in 0..MANAGER_KEYS {
        d.insert(i, i).unwrap();
    }
    let mut rates = Vec::new();
    for _ in 0..6 {
        let d = d.clone();
        rates.push(manager_rate(move |_| Some(d.clone()), get_all));
    }
    rates.remove(0);
    emit("manager_dict_get", median(rates), "ops/s");
}

/// As manager_dict_set, each child connected over loopback TCP with an authkey.
fn manager_dict_set_tcp() {
    let m = Manager::start().unwrap();
    let server = m.serve("127.0.0.1:0", b"shmproc-bench").unwrap();
    let addr = server.local_addr();
    let mut rates = Vec::new();
    for rep in 0..4 {
        let name = format!("tcp-{rep}");
        let d = m.dict_named::<u64, u64>(&name).unwrap();
        let connect = move |_| {
            let remote = Manager::connect(addr, b"shmproc-bench").ok()?;
            remote.dict_named::<u64, u64>(&name).ok()
        };
        rates.push(manager_rate(connect, set_all));
        assert_eq!(d.len().unwrap() as u64, MANAGER_KEYS, "lost writes");
    }
    rates.remove(0);
    emit("manager_dict_set_tcp", median(rates), "ops/s");
}

fn main() {
    shmproc::init();
    let prefixes: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let workloads: [(&str, fn()); 13] = [
        ("value_lock_increment", value_lock_increment),
        ("value_lock_increment_1proc", value_lock_increment_1proc),
        ("lock_uncontended", lock_uncontended),
        ("array_sum_1M", array_sum_1m),
        ("semaphore_pingpong", semaphore_pingpong),
        ("queue_throughput", queue_throughput),
        ("joinable_queue", joinable_queue),
        ("pipe_roundtrip", pipe_roundtrip),
        ("pipe_send_bytes_1MiB", pipe_send_bytes),
        ("pipe_roundtrip_bytes_4KiB", pipe_roundtrip_bytes),
        ("condition_handoff", condition_handoff),
        ("manager_dict_set_tcp", manager_dict_set_tcp),
        ("manager_dict", manager_dict),
    ];
    let pool_family_names = [
        "pool_map_20000",
        "pool_map_async_20000",
        "pool_imap_20000",
        "pool_imap_unordered_20000",
        "pool_starmap_20000",
        "pool_apply_sync_2000",
    ];
    let selected = |name: &str| {
        prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()) || p.starts_with(name))
    };
    // The start-up workloads first, while this process is as small as a program
    // that starts a pool early: a fork copies the parent's page tables, and after
    // the 20 000-task workloads (their heap, each pool thread's malloc arena) a
    // start measured here took up to twice as long.
    if selected("process_start_join") {
        process_start_join();
    }
    if selected("pool_startup") {
        pool_startup();
    }
    if selected("executor_startup") {
        executor_startup();
    }
    let family: Vec<String> = pool_family_names.iter().filter(|n| selected(n)).map(|n| n.to_string()).collect();
    if !family.is_empty() {
        pool_family(&family);
    }
    if selected("pool_apply_async_20000") {
        pool_apply_async();
    }
    let executor_family_names =
        ["executor_submit_20000", "executor_map_20000_chunksize1", "executor_map_20000_chunksize1000"];
    let family: Vec<String> = executor_family_names.iter().filter(|n| selected(n)).map(|n| n.to_string()).collect();
    if !family.is_empty() {
        executor_family(&family);
    }
    if selected("thread_executor_submit_20000") {
        thread_executor_submit();
    }
    for (name, run) in workloads {
        // A prefix selects a group ("value_") or a single line ("process_start_join_fork").
        if prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()) || p.starts_with(name)) {
            run();
        }
    }
}

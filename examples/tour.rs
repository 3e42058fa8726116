//! A tour of what shmproc does today, across real processes.
//!
//! Run it with `cargo run --release --example tour`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shmproc::{
    Array, Barrier, Condition, Connection, Event, LockError, Pipe, Process, Queue, RawArray, RawValue, Semaphore,
    StartMethod, Value,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const PATIENCE: Duration = Duration::from_secs(30);

fn section(title: &str) {
    println!("\n== {title}");
}

/// Joins with a deadline, so that the tour can never hang.
fn finish(p: &Process) -> Result<Option<i32>> {
    if !p.join_timeout(PATIENCE)? {
        p.kill()?;
        return Err(format!("{} overstayed", p.name()).into());
    }
    Ok(p.exitcode())
}

fn hello(method: String) {
    let me = shmproc::current_process();
    let parent = shmproc::parent_process().map(|p| p.name).unwrap_or_default();
    println!("  {} (pid {}), child of {parent}, started by {method}", me.name, me.pid);
}

fn boom(_: ()) {
    panic!("a target that panics");
}

fn nap(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

/// Python: `Process(target=f, args=(...))` under each start method, and exit codes.
fn processes() -> Result {
    section("Process: one child per start method; exit codes as in Python");
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let ctx = shmproc::context(method);
        let mut p = ctx.process(hello, format!("{method:?}"));
        let t = Instant::now();
        p.start()?;
        finish(&p)?;
        println!("  {method:?}: started and joined in {:?}, exitcode {:?}", t.elapsed(), p.exitcode());
    }
    let panicking = Process::builder(boom, ()).name("panicker").start()?;
    println!("  a panicking target exits with {:?} (its panic is printed above, with its name)", finish(&panicking)?);
    let sleeper = Process::builder(nap, 60).start()?;
    sleeper.kill()?;
    println!("  a killed child exits with {:?}", finish(&sleeper)?);
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Count {
    counter: Value<u64>,
    times: u64,
}

fn increment(c: Count) {
    for _ in 0..c.times {
        *c.counter.lock().unwrap() += 1;
    }
}

/// Python: `Value('i', 0)` and `with v.get_lock(): v.value += 1` in two processes.
fn value_under_a_lock() -> Result {
    section("Value: two processes, 200 000 increments each, under the value's lock");
    let counter = Value::<u64>::new(0)?;
    let start = Instant::now();
    let ps = (0..2)
        .map(|_| Process::builder(increment, Count { counter: counter.clone(), times: 200_000 }).start())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for p in &ps {
        finish(p)?;
    }
    let ms = start.elapsed().as_secs_f64() * 1e3;
    println!("  final value {} (expected 400000), processes started and joined in {ms:.1} ms", counter.get()?);
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Transfer {
    account: Value<[i64; 2]>,
    holding: Event,
}

fn transfer_then_hang(t: Transfer) {
    let mut g = t.account.lock().unwrap();
    g[0] -= 30; // debit done, credit not yet...
    t.holding.set();
    std::thread::sleep(Duration::from_secs(60));
}

/// Python hangs here forever; shmproc hands the lock on, poisoned.
fn a_lock_holder_killed() -> Result {
    section("Lock: the holder is killed with SIGKILL while holding it");
    let account = Value::<[i64; 2]>::new([100, 0])?;
    let holding = Event::new()?;
    let p = Process::builder(transfer_then_hang, Transfer { account: account.clone(), holding: holding.clone() })
        .name("transfer")
        .start()?;
    if !holding.wait_timeout(PATIENCE) {
        return Err("the child never took the lock".into());
    }
    p.kill()?;
    println!("  {} killed: exitcode {:?}", p.name(), finish(&p)?);
    let start = Instant::now();
    match account.lock_timeout(PATIENCE) {
        Err(LockError::Poisoned(poisoned)) => {
            let mut g = poisoned.into_inner();
            println!(
                "  lock recovered in {:?}, poisoned; the half-done transfer is visible: {:?}",
                start.elapsed(),
                *g
            );
            g[1] += 30; // repair: finish the credit
            println!("  repaired to {:?}", *g);
        }
        Ok(_) => println!("  unexpected: the lock was not poisoned"),
        Err(e) => return Err(e.to_string().into()),
    }
    account.get_lock().clear_poison();
    println!("  poison cleared; get() = {:?}", account.get()?);
    Ok(())
}

fn fill(a: RawArray<f64>) {
    // SAFETY: nothing else touches `a` while this child fills it; the parent reads
    // only after joining.
    for (i, x) in unsafe { a.as_mut_slice() }.iter_mut().enumerate() {
        *x = i as f64;
    }
}

fn scale(a: Array<f64>) {
    for x in a.lock().unwrap().iter_mut() {
        *x *= 10.0;
    }
}

/// Python: `Array('d', n, lock=False)` filled by a child, summed by the parent.
fn a_child_fills_an_array() -> Result {
    section("RawArray: a spawned child fills 1 000 000 f64, the parent sums them");
    let a = RawArray::<f64>::zeroed(1_000_000)?;
    let p = Process::builder(fill, a.clone()).start_method(StartMethod::Spawn).start()?;
    finish(&p)?;
    let start = Instant::now();
    // SAFETY: the only writer has exited; no thread of this process writes `a`.
    let sum: f64 = unsafe { a.as_slice() }.iter().sum();
    println!("  sum = {sum} in {:.2} ms", start.elapsed().as_secs_f64() * 1e3);

    let locked = Array::from_slice(&[1.0f64, 2.0, 3.0])?;
    let p = Process::builder(scale, locked.clone()).start_method(StartMethod::ForkServer).start()?;
    finish(&p)?;
    println!("  Array with its lock, scaled by a fork-server child: {:?}", locked.to_vec()?);
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct PingPong {
    ping: Semaphore,
    pong: Semaphore,
    rounds: u32,
}

fn ponger(p: PingPong) {
    for _ in 0..p.rounds {
        if !p.ping.acquire_timeout(PATIENCE) {
            return;
        }
        let _ = p.pong.release();
    }
}

/// Two semaphores bounce a token between processes.
fn semaphore_ping_pong() -> Result {
    section("Semaphore: 10 000 ping-pongs between two processes");
    let (ping, pong) = (Semaphore::new(0)?, Semaphore::new(0)?);
    let p = Process::builder(ponger, PingPong { ping: ping.clone(), pong: pong.clone(), rounds: 10_100 }).start()?;
    // Measured as the benchmark does: after 100 warm-up rounds (the child is still
    // starting during the first), each round timed, the median reported.
    let mut rtts = Vec::with_capacity(10_000);
    for round in 0..10_100 {
        let t = Instant::now();
        ping.release()?;
        if !pong.acquire_timeout(PATIENCE) {
            return Err("no pong".into());
        }
        if round >= 100 {
            rtts.push(t.elapsed());
        }
    }
    finish(&p)?;
    println!("  round trip {:?} (median; spin, then sleep on a futex)", median(rtts));
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Consumer {
    cond: Condition,
    item: RawValue<u64>,
}

fn consume(c: Consumer) {
    let mut g = c.cond.acquire().unwrap();
    let got = g.wait_for(|| c.item.get() != 0, Some(PATIENCE)).unwrap_or(false);
    println!("  consumer {}: woke with item {} ({got})", shmproc::current_process().name, c.item.get());
}

#[derive(Serialize, Deserialize)]
struct Party {
    go: Event,
    barrier: Barrier,
}

fn party(p: Party) {
    if !p.go.wait_timeout(PATIENCE) {
        return;
    }
    if let Ok(i) = p.barrier.wait_timeout(PATIENCE) {
        println!("  {} passed the barrier with index {i}", shmproc::current_process().name);
    }
}

/// Producer and consumer meet under a Condition; an Event and a Barrier line up a crowd.
fn conditions_events_barriers() -> Result {
    section("Condition, Event, Barrier");
    let cond = Condition::new()?;
    let item = RawValue::<u64>::new(0)?;
    let consumer = Process::builder(consume, Consumer { cond: cond.clone(), item: item.clone() }).start()?;
    std::thread::sleep(Duration::from_millis(20));
    {
        let _g = cond.acquire().map_err(|e| e.to_string())?;
        item.set(42);
        cond.notify(1);
    }
    println!("  producer: put 42 and notified; consumer exited with {:?}", finish(&consumer)?);

    let go = Event::new()?;
    let barrier = Barrier::new(3)?;
    let parties = (0..2)
        .map(|_| Process::builder(party, Party { go: go.clone(), barrier: barrier.clone() }).start())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    go.set();
    let mine = barrier.wait_timeout(PATIENCE)?;
    println!("  MainProcess passed the barrier with index {mine}");
    for p in &parties {
        finish(p)?;
    }
    Ok(())
}

fn produce((q, go): (Queue<u64>, Barrier)) {
    // Both sides running before the clock starts, as in the benchmark.
    if go.wait_timeout(PATIENCE).is_err() {
        return;
    }
    for i in 0..200_000 {
        if q.put(i).is_err() {
            return;
        }
    }
    q.close();
}

/// Sends 2 000 messages of 64 KiB, written in place (loans) or copied in.
fn produce_big((q, go, in_place): (Queue<u64>, Barrier, bool)) {
    if go.wait_timeout(PATIENCE).is_err() {
        return;
    }
    let copy = vec![0x78u8; 64 << 10];
    for _ in 0..2_000 {
        let sent = if in_place {
            q.put_loan(64 << 10).map_err(drop).and_then(|mut loan| {
                loan.fill(0x78);
                loan.commit().map_err(drop)
            })
        } else {
            q.put_bytes(&copy).map_err(drop)
        };
        if sent.is_err() {
            return;
        }
    }
}

/// MB/s of 64 KiB messages from a child, read in place (loans) or copied out;
/// every byte is summed either way.
fn big_messages(in_place: bool) -> Result<f64> {
    let q = Queue::<u64>::new(0)?;
    let go = Barrier::new(2)?;
    let producer = Process::builder(produce_big, (q.clone(), go.clone(), in_place)).start()?;
    go.wait_timeout(PATIENCE)?;
    let start = Instant::now();
    let mut bytes = 0u64;
    for _ in 0..2_000 {
        let sum =
            |b: &[u8]| b.chunks_exact(8).fold(0u64, |s, w| s.wrapping_add(u64::from_le_bytes(w.try_into().unwrap())));
        let got = if in_place {
            let loan = q.get_loan_timeout(PATIENCE)?;
            (sum(&loan), loan.len())
        } else {
            let copy = q.get_bytes_timeout(PATIENCE)?;
            (sum(&copy), copy.len())
        };
        assert_eq!(got.0, (got.1 as u64 / 8).wrapping_mul(u64::from_le_bytes([0x78; 8])));
        bytes += got.1 as u64;
    }
    let rate = bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
    finish(&producer)?;
    Ok(rate)
}

fn echo(conn: Connection<u64>) {
    while let Ok(x) = conn.recv_timeout(PATIENCE) {
        if conn.send(&x).is_err() {
            return;
        }
    }
}

/// Python: `Queue`, `Pipe`: messages between processes.
fn channels() -> Result {
    section("Queue and Pipe: messages between processes");
    let mut runs = Vec::new();
    let mut sum = 0u64;
    for _ in 0..3 {
        let q = Queue::<u64>::new(1024)?;
        let go = Barrier::new(2)?;
        let producer = Process::builder(produce, (q.clone(), go.clone())).start()?;
        go.wait_timeout(PATIENCE)?;
        let start = Instant::now();
        sum = 0;
        while let Ok(x) = q.get_timeout(PATIENCE) {
            sum += x;
        }
        runs.push(start.elapsed());
        finish(&producer)?;
    }
    let dt = median(runs);
    println!(
        "  200 000 integers through a Queue(maxsize=1024) in {dt:?} ({:.1} M msg/s, median of 3 runs), sum {sum}",
        0.2 / dt.as_secs_f64()
    );

    let (here, there) = Pipe::duplex::<u64>()?;
    let child = Process::builder(echo, there).start()?;
    let mut rtts = Vec::with_capacity(10_000);
    for i in 0..10_100 {
        let t = Instant::now();
        here.send(&i)?;
        here.recv_timeout(PATIENCE)?;
        if i >= 100 {
            rtts.push(t.elapsed());
        }
    }
    here.close();
    finish(&child)?;
    println!("  10 000 round trips through a Pipe: {:?} each (median, after 100 to warm up)", median(rtts));

    // Beyond Python: large messages written and read in place (loans), no copies.
    let copied = big_messages(false)?;
    let lent = big_messages(true)?;
    println!("  2 000 × 64 KiB, every byte summed: {copied:.0} MB/s copied in and out, {lent:.0} MB/s through loans");
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

fn unlucky(x: u64) -> u64 {
    if x == 13 {
        panic!("13 is unlucky");
    }
    x * x
}

/// Dies in the middle of its task, as a worker killed by the OOM killer would.
fn killed_mid_task(_: ()) -> u64 {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    unreachable!("SIGKILL cannot be caught")
}

/// Each worker's handle to the tally, left there by the pool's initializer.
static TALLY: std::sync::OnceLock<Value<u64>> = std::sync::OnceLock::new();

fn remember_tally(tally: Value<u64>) {
    let _ = TALLY.set(tally);
}

fn count_me(_: u64) -> u32 {
    *TALLY.get().expect("set by the initializer").lock().unwrap() += 1;
    std::process::id()
}

fn refuse_to_start(_: ()) {
    panic!("this worker refuses to start");
}

/// Python: `Pool(2)`, `map`, `apply_async`, `initializer`, `maxtasksperchild`; and a
/// worker killed mid-task, where Python's pool hangs forever.
fn pool_section() -> Result {
    section("Pool: map, a task that panics, a worker killed mid-task, initializer and maxtasksperchild");
    let pool = shmproc::Pool::new(2)?;
    let start = Instant::now();
    let squares = pool.map(square, 0..20_000u64)?;
    let dt = start.elapsed();
    assert_eq!(squares[19_999], 19_999 * 19_999);
    println!("  map(square, range(20000)) on 2 workers in {dt:?}");

    // A task that panics fails alone: the one beside it returns, the worker carries on.
    let fine = pool.apply_async(square, 12);
    match pool.apply_async(unlucky, 13).get_timeout(PATIENCE) {
        Err(e @ shmproc::TaskError::Panicked { .. }) => println!("  a task that panics fails alone: {e}"),
        other => return Err(format!("expected the task's panic, got {other:?}").into()),
    }
    assert_eq!(fine.get()?, 144);

    // Python's Pool waits forever for this task (gh-96062, bpo-22393).
    let start = Instant::now();
    match pool.apply_async(killed_mid_task, ()).get_timeout(PATIENCE) {
        Err(e @ shmproc::TaskError::WorkerDied { .. }) => {
            println!("  a worker killed mid-task fails that task only, in {:?}: {e}", start.elapsed())
        }
        other => return Err(format!("expected WorkerDied, got {other:?}").into()),
    }
    assert_eq!(pool.map(square, 0..1000u64)?.len(), 1000);
    println!("  a fresh worker took its place; the pool serves on");
    pool.close();
    pool.join()?;

    // Shared objects reach the workers through the initializer, as in Python; each
    // worker leaves after 10 tasks and a fresh one, initialized again, takes its place.
    let tally = Value::<u64>::new(0)?;
    let pool = shmproc::Pool::builder()
        .processes(2)
        .initializer(remember_tally, tally.clone())
        .max_tasks_per_child(10)
        .build()?;
    let pids = pool.map_chunked(count_me, 0..100u64, 1)?;
    pool.close();
    pool.join()?;
    let workers: std::collections::HashSet<u32> = pids.into_iter().collect();
    assert_eq!(tally.get()?, 100);
    assert!(workers.len() >= 10, "10 tasks a worker, 100 tasks: at least 10 workers");
    println!("  100 tasks counted in a Value the initializer handed to {} workers in turn", workers.len());

    // An initializer that panics breaks the pool: no task runs (Python's pool respawns
    // the failing worker forever, gh-87472). Dropping the pool terminates it.
    match shmproc::Pool::builder().processes(1).initializer(refuse_to_start, ()).build() {
        Err(e) => println!("  an initializer that panics: build() fails: {e}"),
        Ok(pool) => match pool.apply(square, 2) {
            Err(e @ shmproc::TaskError::Initializer(_)) => println!("  an initializer that panics: {e}"),
            other => return Err(format!("expected the initializer's failure, got {other:?}").into()),
        },
    }
    Ok(())
}

fn fib(n: u64) -> u64 {
    if n <= 2 {
        1
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// Python: `concurrent.futures`: submit, as_completed, map, add_done_callback; a
/// worker killed mid-task (Python breaks the whole pool); a future awaited.
fn executor_section() -> Result {
    use shmproc::{as_completed, Executor, MapOptions, ProcessPoolExecutor, ThreadPoolExecutor};
    section("Executors: futures, as_completed, a worker killed mid-task, await");
    let ex = ProcessPoolExecutor::new(2)?;
    let futures: Vec<_> = (25..31u64).map(|n| ex.submit(fib, n)).collect::<std::result::Result<_, _>>()?;
    let done: Vec<String> = as_completed(&futures, Some(PATIENCE))
        .map(|f| Ok(f?.result(None)?.to_string()))
        .collect::<std::result::Result<_, shmproc::TaskError>>()?;
    println!("  fib(25..31) as they completed: {}", done.join(", "));
    let start = Instant::now();
    let squares: u64 = ex.map(square, 0..20_000u64, MapOptions::new().chunksize(1000))?.map(|r| r.unwrap()).sum();
    println!("  map(square, range(20000), chunksize=1000): sum {squares} in {:?}", start.elapsed());

    let victim = ex.submit(killed_mid_task, ())?;
    match victim.result(Some(PATIENCE)) {
        Err(e @ shmproc::TaskError::WorkerDied { .. }) => {
            println!("  a worker killed mid-task fails its future only: {e}")
        }
        other => return Err(format!("expected WorkerDied, got {other:?}").into()),
    }
    let (tx, rx) = std::sync::mpsc::channel();
    ex.submit(unlucky, 13)?.add_done_callback(move |r: &std::result::Result<u64, shmproc::TaskError>| {
        let _ = tx.send(r.as_ref().map_err(ToString::to_string).copied());
    });
    println!("  the executor serves on; a done-callback got: {:?}", rx.recv_timeout(PATIENCE)?);
    let awaited = pollster::block_on(ex.submit(fib, 20)?)?;
    println!("  fib(20) awaited (a TaskFuture is a std Future too): {awaited}");
    drop(ex); // shutdown(wait=True), as leaving Python's with-block

    let prefix = String::from("thread says");
    let tex = ThreadPoolExecutor::new(2);
    let f = tex.submit(move |n: u32| format!("{prefix} {n}"), 42)?;
    println!("  ThreadPoolExecutor, a capturing closure: {}", f.result(Some(PATIENCE))?);
    Ok(())
}

fn count_words((words, text): (shmproc::Dict<String, u64>, String)) {
    for w in text.split_whitespace() {
        words.update(w.to_owned(), |n| n.unwrap_or(0) + 1).expect("the manager is running");
    }
}

fn killed_mid_update(d: shmproc::Dict<String, u64>) {
    let _ = d.update("total".into(), |_| -> u64 {
        // Holding the manager's lock, halfway through a read-modify-write.
        std::process::abort()
    });
}

/// Python: `multiprocessing.Manager()`: a dict updated by several processes, a
/// holder killed mid-update, the same dict over authenticated TCP.
fn manager_section() -> Result {
    use shmproc::Manager;
    section("Manager: shared dict, atomic updates, a holder killed mid-update, TCP with an authkey");
    let m = Manager::start()?;
    let words = m.dict::<String, u64>()?;
    let texts = ["the cat sat on the mat", "the dog sat on the cat", "a cat and a dog"];
    let mut ps: Vec<Process> =
        texts.iter().map(|t| Process::new(count_words, (words.clone(), t.to_string()))).collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &ps {
        finish(p)?;
    }
    let mut counts = words.items()?;
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("  3 processes counted words with update() (Python's d[k] += 1 loses updates): {:?}", &counts[..4]);

    words.insert("total".into(), 100)?;
    let mut p = Process::new(killed_mid_update, words.clone());
    p.start()?;
    finish(&p)?;
    let start = Instant::now();
    // The first write takes the dead holder's lock over and rolls its log back.
    words.insert("after".into(), 1)?;
    let recovered = start.elapsed();
    println!(
        "  a process that died inside update(): total is still {:?}; the next write went through after {recovered:?}",
        words.get(&"total".into())?,
    );

    let server = m.serve("127.0.0.1:0", b"tour key")?;
    let remote = Manager::connect(server.local_addr(), b"tour key")?;
    let shared = remote.dict_named::<String, u64>("scores")?;
    shared.insert("over tcp".into(), 1)?;
    println!(
        "  a client on {} wrote a named dict the server's process reads locally: {:?}",
        server.local_addr(),
        m.dict_named::<String, u64>("scores")?.get(&"over tcp".into())?
    );
    match Manager::connect(server.local_addr(), b"wrong key") {
        Err(e) => println!("  a wrong key: {e}"),
        Ok(_) => println!("  unexpected: a wrong key was let in"),
    }
    let local = m.dict::<u64, u64>()?;
    let t = Instant::now();
    for i in 0..100_000 {
        local.insert(i, i)?;
    }
    let per_set = t.elapsed() / 100_000;
    let t = Instant::now();
    for i in 0..100_000 {
        local.get(&i)?;
    }
    println!(
        "  one process, 100 000 sets then gets: {per_set:?} a set, {:?} a get (Python: 25-50 µs each)",
        t.elapsed() / 100_000
    );
    Ok(())
}

fn multiply_by_name(name: String) {
    if let Ok(v) = Value::<u64>::open(&name) {
        *v.lock().unwrap() *= 6;
    }
}

/// Named segments are opened by name, from any process of the same user.
fn named_segments() -> Result {
    section("Named segments: open by name from another process");
    let v = Value::<u64>::new_named(7)?;
    let name = v.name().unwrap_or_default().to_owned();
    println!("  created {name} (in /dev/shm until this handle drops)");
    let p = Process::builder(multiply_by_name, name.clone()).start_method(StartMethod::Spawn).start()?;
    finish(&p)?;
    println!("  a spawned child opened it by name and multiplied: {}", v.get()?);
    match Value::<f64>::open(&name) {
        Err(e) => println!("  opening it as Value<f64> fails: {e}"),
        Ok(_) => println!("  unexpected: opened with the wrong type"),
    }
    Ok(())
}

fn main() -> Result {
    // A re-executed child (spawn, forkserver) runs its target here instead.
    shmproc::init();
    println!("shmproc tour: every object below lives in shared memory, shared by real processes");
    processes()?;
    value_under_a_lock()?;
    a_lock_holder_killed()?;
    a_child_fills_an_array()?;
    semaphore_ping_pong()?;
    conditions_events_barriers()?;
    channels()?;
    pool_section()?;
    executor_section()?;
    manager_section()?;
    named_segments()?;
    println!("\ndone: every child joined, every segment unmapped (named ones unlinked)");
    Ok(())
}

/// The middle of `v`: what the benchmarks report, so that the tour tells the same story.
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

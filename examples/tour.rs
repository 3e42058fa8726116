//! A tour of what shmproc does today, across real processes.
//!
//! Run it with `cargo run --release --example tour`.
//!
//! Children are made with `shmproc::testing::fork` (run a closure in a forked child,
//! reap it with a deadline) until `Process` lands; everything they share lives in
//! shared memory made by shmproc.

use std::time::{Duration, Instant};

use shmproc::testing::{fork, Child, Exit};
use shmproc::{Array, Barrier, Condition, Event, LockError, RawArray, RawValue, Semaphore, Value};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const PATIENCE: Duration = Duration::from_secs(30);

fn join(mut child: Child) -> Result<Exit> {
    child.wait_timeout(PATIENCE)?.ok_or_else(|| "a child overstayed".into())
}

fn section(title: &str) {
    println!("\n== {title}");
}

/// Python: `Value('i', 0)` and `with v.get_lock(): v.value += 1` in two processes.
fn value_under_a_lock() -> Result {
    section("Value: two processes, 200 000 increments each, under the value's lock");
    let counter = Value::<u64>::new(0)?;
    let start = Instant::now();
    let children = (0..2)
        .map(|_| {
            let counter = counter.clone();
            fork(move || {
                for _ in 0..200_000 {
                    *counter.lock().unwrap() += 1;
                }
                0
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    for c in children {
        join(c)?;
    }
    let dt = start.elapsed();
    println!("final value {} (expected 400000) in {:.1} ms", counter.get()?, dt.as_secs_f64() * 1e3);
    Ok(())
}

/// Python hangs here forever; shmproc hands the lock on, poisoned.
fn a_lock_holder_killed() -> Result {
    section("Lock: the holder is killed with SIGKILL while holding it");
    let account = Value::<[i64; 2]>::new([100, 0])?;
    let holding = Event::new()?;
    let child = {
        let (account, holding) = (account.clone(), holding.clone());
        fork(move || {
            let mut g = account.lock().unwrap();
            g[0] -= 30; // debit done, credit not yet...
            holding.set();
            std::thread::sleep(Duration::from_secs(60));
            0
        })?
    };
    if !holding.wait_timeout(PATIENCE) {
        return Err("the child never took the lock".into());
    }
    child.signal(libc::SIGKILL)?;
    println!("child {} killed: {:?}", child.pid(), join(child)?);
    let start = Instant::now();
    match account.lock_timeout(PATIENCE) {
        Err(LockError::Poisoned(p)) => {
            let mut g = p.into_inner();
            println!("lock recovered in {:?}, poisoned; the half-done transfer is visible: {:?}", start.elapsed(), *g);
            g[1] += 30; // repair: finish the credit
            println!("repaired to {:?}", *g);
        }
        Ok(_) => println!("unexpected: the lock was not poisoned"),
        Err(e) => return Err(e.to_string().into()),
    }
    account.get_lock().clear_poison();
    println!("poison cleared; get() = {:?}", account.get()?);
    Ok(())
}

/// Python: `Array('d', n, lock=False)` filled by a child, summed by the parent.
fn a_child_fills_an_array() -> Result {
    section("RawArray: a child fills 1 000 000 f64, the parent sums them");
    let a = RawArray::<f64>::zeroed(1_000_000)?;
    let child = {
        let a = a.clone();
        fork(move || {
            // SAFETY: the child is single-threaded; nothing else in it touches `a`.
            for (i, x) in unsafe { a.as_mut_slice() }.iter_mut().enumerate() {
                *x = i as f64;
            }
            0
        })?
    };
    join(child)?;
    let start = Instant::now();
    // SAFETY: no thread of this process writes `a` while the slice lives.
    let sum: f64 = unsafe { a.as_slice() }.iter().sum();
    println!("sum = {sum} in {:.2} ms", start.elapsed().as_secs_f64() * 1e3);

    let locked = Array::from_slice(&[1.0f64, 2.0, 3.0])?;
    let child = {
        let locked = locked.clone();
        fork(move || {
            for x in locked.lock().unwrap().iter_mut() {
                *x *= 10.0;
            }
            0
        })?
    };
    join(child)?;
    println!("Array with its lock, scaled by a child: {:?}", locked.to_vec()?);
    Ok(())
}

/// Two semaphores bounce a token between processes.
fn semaphore_ping_pong() -> Result {
    section("Semaphore: 10 000 ping-pongs between two processes");
    let (ping, pong) = (Semaphore::new(0)?, Semaphore::new(0)?);
    let child = {
        let (ping, pong) = (ping.clone(), pong.clone());
        fork(move || {
            for _ in 0..10_000 {
                if !ping.acquire_timeout(PATIENCE) {
                    return 1;
                }
                let _ = pong.release();
            }
            0
        })?
    };
    let start = Instant::now();
    for _ in 0..10_000 {
        ping.release()?;
        if !pong.acquire_timeout(PATIENCE) {
            return Err("no pong".into());
        }
    }
    let per = start.elapsed() / 10_000;
    join(child)?;
    println!("round trip {per:?} on average (spin, then sleep on a futex)");
    Ok(())
}

/// Producer and consumer meet under a Condition; an Event and a Barrier line up a crowd.
fn conditions_events_barriers() -> Result {
    section("Condition, Event, Barrier");
    let cond = Condition::new()?;
    let item = RawValue::<u64>::new(0)?;
    let consumer = {
        let (cond, item) = (cond.clone(), item.clone());
        fork(move || {
            let mut g = cond.acquire().unwrap();
            let got = g.wait_for(|| item.get() != 0, Some(PATIENCE)).unwrap_or(false);
            println!("  consumer {}: woke with item {}", std::process::id(), item.get());
            i32::from(!got)
        })?
    };
    std::thread::sleep(Duration::from_millis(20));
    {
        let _g = cond.acquire().map_err(|e| e.to_string())?;
        item.set(42);
        cond.notify(1);
    }
    println!("producer: put 42 and notified; consumer exited {:?}", join(consumer)?);

    let go = Event::new()?;
    let barrier = Barrier::new(3)?;
    let children = (0..2)
        .map(|_| {
            let (go, barrier) = (go.clone(), barrier.clone());
            fork(move || {
                if !go.wait_timeout(PATIENCE) {
                    return 1;
                }
                match barrier.wait_timeout(PATIENCE) {
                    Ok(i) => {
                        println!("  child {} passed the barrier with index {i}", std::process::id());
                        0
                    }
                    Err(_) => 2,
                }
            })
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    go.set();
    let mine = barrier.wait_timeout(PATIENCE)?;
    println!("  parent passed the barrier with index {mine}");
    for c in children {
        join(c)?;
    }
    Ok(())
}

/// Named segments are opened by name, from any process of the same user.
fn named_segments() -> Result {
    section("Named segments: open by name from another process");
    let v = Value::<u64>::new_named(7)?;
    let name = v.name().unwrap_or_default().to_owned();
    println!("created {name} (in /dev/shm until this handle drops)");
    let child = fork(move || match Value::<u64>::open(&name) {
        Ok(v) => {
            *v.lock().unwrap() *= 6;
            0
        }
        Err(_) => 1,
    })?;
    join(child)?;
    println!("the child opened it by name and multiplied: {}", v.get()?);
    match Value::<f64>::open(v.name().unwrap_or_default()) {
        Err(e) => println!("opening it as Value<f64> fails: {e}"),
        Ok(_) => println!("unexpected: opened with the wrong type"),
    }
    Ok(())
}

fn main() -> Result {
    println!("shmproc tour: every object below lives in shared memory, shared by real processes");
    value_under_a_lock()?;
    a_lock_holder_killed()?;
    a_child_fills_an_array()?;
    semaphore_ping_pong()?;
    conditions_events_barriers()?;
    named_segments()?;
    println!("\ndone: every child reaped, every segment unmapped (named ones unlinked)");
    Ok(())
}

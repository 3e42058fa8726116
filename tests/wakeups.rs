//! Wake-ups across real processes, with the sleepers' safety poll turned off: a
//! lost wake-up then leaves its sleeper asleep until its own time-out, and the time
//! bounds here fail, instead of passing 100 ms late.

shmproc::init_before_main!();

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::{Connection, Pipe, Process, Queue, RecvTimeoutError};

/// No safety net: every test here calls this first.
fn no_safety_poll() {
    shmproc::testing::set_safety_poll(Duration::from_secs(3600));
}

fn put_after(q: Queue<u64>) {
    std::thread::sleep(Duration::from_millis(100));
    q.put(7).unwrap();
}

#[test]
fn a_blocked_get_is_woken_by_another_process() {
    no_safety_poll();
    let q = Queue::<u64>::new(0).unwrap();
    let p = Process::builder(put_after, q.clone()).start().unwrap();
    assert_eq!(quickly(|| q.get_timeout(PATIENCE)), Some(Ok(7)));
    assert_eq!(finish(&p), Some(0));
}

/// Puts one item every 5 ms, each once the last was taken (`acks`).
fn put_slowly((q, acks): (Queue<u64>, Queue<()>)) {
    for i in 0..WAKE_ROUNDS {
        std::thread::sleep(Duration::from_millis(5));
        q.put(i).unwrap();
        acks.get_timeout(PATIENCE).unwrap();
    }
}

fn get_slowly(q: Queue<u64>) {
    for i in 0..WAKE_ROUNDS {
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(q.get_timeout(PATIENCE), Ok(i));
    }
}

/// Wake-ups, each after the waiter has gone to sleep. A lost one leaves the waiter
/// asleep until its time-out (the safety poll is off).
const WAKE_ROUNDS: u64 = 20;
const NO_LOST_WAKE_UPS: Duration = Duration::from_secs(1);

#[test]
fn sleeping_consumers_and_producers_are_woken_not_polled() {
    no_safety_poll();
    // Consumers asleep on an empty queue.
    let (q, acks) = (Queue::<u64>::new(0).unwrap(), Queue::<()>::new(0).unwrap());
    let p = Process::builder(put_slowly, (q.clone(), acks.clone())).start().unwrap();
    let t = Instant::now();
    for i in 0..WAKE_ROUNDS {
        assert_eq!(q.get_timeout(PATIENCE), Ok(i));
        acks.put(()).unwrap();
    }
    assert!(t.elapsed() < NO_LOST_WAKE_UPS, "gets took {:?}", t.elapsed());
    assert_eq!(finish(&p), Some(0));
    // A producer asleep on a full one.
    let q = Queue::<u64>::new(1).unwrap();
    q.put(0).unwrap();
    let p = Process::builder(get_slowly, q.clone()).start().unwrap();
    let t = Instant::now();
    for i in 1..WAKE_ROUNDS {
        q.put_timeout(i, PATIENCE).unwrap();
    }
    assert!(t.elapsed() < NO_LOST_WAKE_UPS, "puts took {:?}", t.elapsed());
    assert_eq!(finish(&p), Some(0));
}

fn close_after(q: Queue<u64>) {
    std::thread::sleep(Duration::from_millis(50));
    q.close();
}

#[test]
fn close_wakes_sleeping_producers_and_consumers() {
    no_safety_poll();
    let q = Queue::<u64>::new(0).unwrap();
    let p = Process::builder(close_after, q.clone()).start().unwrap();
    let t = Instant::now();
    assert_eq!(q.get_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected));
    assert!(t.elapsed() < Duration::from_millis(50) + NO_LOST_WAKE_UPS / 20, "woken after {:?}", t.elapsed());
    assert_eq!(finish(&p), Some(0));
    let q = Queue::<u64>::new(1).unwrap();
    q.put(0).unwrap();
    let p = Process::builder(close_after, q.clone()).start().unwrap();
    assert!(matches!(q.put_timeout(1, PATIENCE), Err(shmproc::SendTimeoutError::Disconnected(1))));
    assert_eq!(finish(&p), Some(0));
}

/// Sends one number every 5 ms, each once the last was echoed back.
fn send_slowly(conn: Connection<u64>) {
    for i in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        conn.send(&i).unwrap();
        assert_eq!(conn.recv_timeout(PATIENCE), Ok(i));
    }
}

/// A receiver asleep is woken by the send. A lost wake-up would still be noticed by
/// the receiver's peer check (every 50 ms): twenty of them would cost a second.
#[test]
fn a_sleeping_receiver_is_woken_not_polled() {
    no_safety_poll();
    let (a, b) = Pipe::duplex::<u64>().unwrap();
    let p = Process::builder(send_slowly, b).start().unwrap();
    let t = Instant::now();
    for i in 0..20 {
        assert_eq!(a.recv_timeout(PATIENCE), Ok(i));
        a.send(&i).unwrap();
    }
    assert!(t.elapsed() < Duration::from_millis(600), "20 receives took {:?}", t.elapsed());
    assert_eq!(finish(&p), Some(0));
}

/// Flips the turn to 1 every 5 ms (after the parent has gone to sleep waiting for
/// it), then waits for the parent to flip it back.
fn flip_slowly((cond, turn): (shmproc::Condition, shmproc::RawValue<u32>)) {
    for _ in 0..WAKE_ROUNDS {
        std::thread::sleep(Duration::from_millis(5));
        let mut g = cond.acquire().unwrap();
        turn.set(1);
        cond.notify_all();
        assert!(g.wait_for(|| turn.get() == 0, Some(NO_LOST_WAKE_UPS)).unwrap(), "a wake-up was lost");
    }
}

/// A Condition's waiter that went to sleep (past its spin and yield) is woken by a
/// notify from another process, even though a notify makes no system call when it
/// sees no sleeper: the sleeper count and the token are fenced against each other.
#[test]
fn a_sleeping_condition_waiter_is_woken_not_polled() {
    no_safety_poll();
    let cond = shmproc::Condition::new().unwrap();
    let turn = shmproc::RawValue::<u32>::new(0).unwrap();
    let p = Process::builder(flip_slowly, (cond.clone(), turn.clone())).start().unwrap();
    let t = Instant::now();
    for _ in 0..WAKE_ROUNDS {
        let mut g = cond.acquire().unwrap();
        assert!(g.wait_for(|| turn.get() == 1, Some(NO_LOST_WAKE_UPS)).unwrap(), "a wake-up was lost");
        turn.set(0);
        cond.notify_all();
    }
    assert_eq!(finish(&p), Some(0));
    // 20 rounds of 5 ms sleeps: about 100 ms; a lost wake-up would cost an hour.
    assert!(t.elapsed() < NO_LOST_WAKE_UPS, "took {:?}", t.elapsed());
}

//! `Event` across real processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::Event;

#[test]
fn set_wakes_every_waiting_process() {
    let e = Event::new().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            let e = e.clone();
            spawn_child(move || i32::from(!e.wait_timeout(PATIENCE)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    e.set();
    for c in children {
        join_ok(c);
    }
}

#[test]
fn wait_timeout_fails_while_clear_and_clear_resets() {
    let e = Event::new().unwrap();
    let start = Instant::now();
    assert!(!e.wait_timeout(Duration::from_millis(30)));
    assert!(start.elapsed() >= Duration::from_millis(30));
    e.set();
    assert!(e.is_set() && e.wait_timeout(Duration::ZERO));
    e.clear();
    assert!(!e.is_set());
    let child = {
        let e = e.clone();
        spawn_child(move || i32::from(e.wait_timeout(Duration::from_millis(20))))
    };
    join_ok(child);
}

#[test]
fn an_idle_waiter_burns_no_cpu() {
    let e = Event::new().unwrap();
    let child = {
        let e = e.clone();
        spawn_child(move || {
            let before = cpu_time();
            let set = e.wait_timeout(PATIENCE);
            i32::from(!set) + 2 * i32::from(cpu_time() - before > Duration::from_millis(30))
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    e.set();
    join_ok(child);
}

#[test]
fn named_event_opened_elsewhere() {
    let e = Event::new_named().unwrap();
    let name = e.name().unwrap().to_owned();
    let child = spawn_child(move || {
        Event::open(&name).unwrap().set();
        0
    });
    join_ok(child);
    assert!(e.is_set());
}

/// Regression: a `set` followed at once by `clear` still releases the waiters that
/// were waiting (as Python's Event does), instead of leaving them asleep.
#[test]
fn set_then_clear_still_releases_waiters() {
    let e = Event::new().unwrap();
    let waiting = Event::new().unwrap();
    let child = {
        let (e, waiting) = (e.clone(), waiting.clone());
        spawn_child(move || {
            waiting.set();
            i32::from(quickly(|| e.wait_timeout(PATIENCE)) != Some(true))
        })
    };
    assert!(waiting.wait_timeout(PATIENCE));
    std::thread::sleep(Duration::from_millis(50)); // let it fall asleep
    e.set();
    e.clear();
    join_ok(child);
    assert!(!e.is_set());
}

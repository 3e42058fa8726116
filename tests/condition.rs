//! `Condition` across real processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::{Condition, Event, Lock, LockError, RawValue};

#[test]
fn a_consumer_waits_for_a_producer_in_another_process() {
    let cond = Condition::new().unwrap();
    let item = RawValue::<u64>::new(0).unwrap();
    let child = {
        let (cond, item) = (cond.clone(), item.clone());
        spawn_child(move || {
            let mut g = cond.acquire().unwrap();
            let ok = quickly(|| g.wait_for(|| item.get() != 0, Some(PATIENCE)).unwrap());
            i32::from(!(ok == Some(true) && item.get() == 42))
        })
    };
    std::thread::sleep(Duration::from_millis(30));
    {
        let _g = cond.acquire().unwrap();
        item.set(42);
        cond.notify(1);
    }
    join_ok(child);
}

#[test]
fn wait_timeout_returns_false_and_holds_the_lock_again() {
    let cond = Condition::new().unwrap();
    let mut g = cond.acquire().unwrap();
    let start = Instant::now();
    assert!(!g.wait_timeout(Duration::from_millis(30)).unwrap());
    assert!(start.elapsed() >= Duration::from_millis(30));
    // Still held: another process cannot take it.
    let child = {
        let cond = cond.clone();
        spawn_child(move || i32::from(cond.try_acquire().is_ok()))
    };
    join_ok(child);
    assert!(!g.wait_for(|| false, Some(Duration::from_millis(10))).unwrap());
}

/// Three children wait; `notify(1)` must release exactly one, `notify_all` the rest.
#[test]
fn notify_n_wakes_n_and_notify_all_wakes_the_rest() {
    let cond = Condition::new().unwrap();
    let woken = shmproc::Value::<u32>::new(0).unwrap();
    let ready = shmproc::Semaphore::new(0).unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            let (cond, woken, ready) = (cond.clone(), woken.clone(), ready.clone());
            spawn_child(move || {
                let mut g = cond.acquire().unwrap();
                ready.release().unwrap();
                let notified = g.wait_timeout(PATIENCE).unwrap();
                drop(g);
                *woken.lock().unwrap() += 1;
                i32::from(!notified)
            })
        })
        .collect();
    for _ in 0..3 {
        assert!(ready.acquire_timeout(PATIENCE));
    }
    // Every child released `ready` while holding the lock and then waited, which
    // releases it: once we hold it, all three are registered as waiters.
    drop(cond.acquire().unwrap());
    cond.notify(1);
    let deadline = Instant::now() + PATIENCE;
    while woken.get().unwrap() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(woken.get().unwrap(), 1, "notify(1) woke more than one waiter");
    cond.notify_all();
    for c in children {
        join_ok(c);
    }
    assert_eq!(woken.get().unwrap(), 3);
}

#[test]
fn condition_lock_holder_killed_recovers_within_100ms() {
    let cond = Condition::new().unwrap();
    let held = cond.clone();
    kill_while_holding(move || std::mem::forget(held.acquire().unwrap()));
    let start = Instant::now();
    let r = cond.acquire_timeout(PATIENCE);
    assert!(start.elapsed() < Duration::from_millis(100));
    let mut g = match r {
        Err(LockError::Poisoned(p)) => p.into_inner(),
        other => panic!("expected Poisoned, got {other:?}"),
    };
    // The condition still works after recovery.
    cond.get_lock().clear_poison();
    assert!(!g.wait_timeout(Duration::from_millis(5)).unwrap());
}

#[test]
fn a_waiter_whose_lock_holder_dies_gets_the_lock_back_poisoned() {
    let cond = Condition::new().unwrap();
    let waiting = Event::new().unwrap();
    let mut g = cond.acquire().unwrap();
    let child = {
        let (cond, waiting) = (cond.clone(), waiting.clone());
        spawn_child(move || {
            // Take the lock while the parent waits, then die holding it.
            waiting.wait();
            std::mem::forget(cond.acquire().unwrap());
            cond.notify_all();
            std::thread::sleep(Duration::from_secs(30));
            0
        })
    };
    waiting.set();
    let start = Instant::now();
    let killer = std::thread::spawn({
        let pid = child.pid();
        move || {
            std::thread::sleep(Duration::from_millis(100));
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
        }
    });
    let r = g.wait_timeout(PATIENCE);
    assert!(matches!(r, Err(LockError::Poisoned(_))), "{r:?}");
    assert!(start.elapsed() < PATIENCE);
    killer.join().unwrap();
    assert_eq!(join(child), Exit::Signal(libc::SIGKILL));
}

#[test]
fn a_condition_on_a_shared_lock_excludes_its_users() {
    let lock = Lock::new().unwrap();
    let cond = Condition::with_lock(&lock).unwrap();
    let g = cond.acquire().unwrap();
    let child = {
        let lock = lock.clone();
        spawn_child(move || i32::from(lock.try_acquire().is_ok()))
    };
    join_ok(child);
    drop(g);
    assert!(lock.try_acquire().is_ok());
}

#[test]
fn named_condition_opened_elsewhere() {
    let cond = Condition::new_named().unwrap();
    let name = cond.name().unwrap().to_owned();
    let flag = RawValue::<u32>::new(0).unwrap();
    let child = {
        let flag = flag.clone();
        spawn_child(move || {
            let cond = Condition::open(&name).unwrap();
            let mut g = cond.acquire().unwrap();
            i32::from(quickly(|| g.wait_for(|| flag.get() == 1, Some(PATIENCE)).unwrap()) != Some(true))
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let _g = cond.acquire().unwrap();
    flag.set(1);
    cond.notify_all();
    drop(_g);
    join_ok(child);
}

/// Regression: a waiter that arrives after `notify(1)` must not take the
/// notification from the waiter it was meant for (which would then sleep forever).
#[test]
fn a_latecomer_cannot_steal_an_earlier_waiters_notification() {
    let cond = Condition::new().unwrap();
    let ready = Event::new().unwrap();
    let first = {
        let (cond, ready) = (cond.clone(), ready.clone());
        spawn_child(move || {
            let mut g = cond.acquire().unwrap();
            ready.set();
            i32::from(!g.wait_timeout(PATIENCE).unwrap())
        })
    };
    assert!(ready.wait_timeout(PATIENCE));
    // Holding the lock proves `first` has registered and released it in `wait`.
    let g = cond.acquire().unwrap();
    // Freeze `first` so that it cannot claim its notification before the latecomer runs.
    first.signal(libc::SIGSTOP).unwrap();
    cond.notify(1);
    drop(g);
    let late = {
        let cond = cond.clone();
        spawn_child(move || {
            let mut g = cond.acquire().unwrap();
            // Not notified: no notify came after it started waiting.
            i32::from(g.wait_timeout(Duration::from_millis(300)).unwrap())
        })
    };
    join_ok(late);
    first.signal(libc::SIGCONT).unwrap();
    join_ok(first);
}

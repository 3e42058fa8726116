//! `Lock` and `RLock` across real processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::{Event, Lock, LockError, RLock, ReleaseError, Semaphore};

/// A read-modify-write split by a yield, on memory with no lock of its own: any
/// break in mutual exclusion loses updates, which the final count shows.
#[test]
fn lock_excludes_across_processes() {
    const N: u64 = 5_000;
    let lock = Lock::new().unwrap();
    let counter = shmproc::RawValue::<u64>::new(0).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let (lock, counter) = (lock.clone(), counter.clone());
            spawn_child(move || {
                for i in 0..N {
                    let _g = lock.acquire().unwrap();
                    let seen = counter.get();
                    if i % 64 == 0 {
                        std::thread::yield_now(); // invite the other process in
                    }
                    counter.set(seen + 1);
                }
                0
            })
        })
        .collect();
    for c in children {
        join_ok(c);
    }
    assert_eq!(counter.get(), 2 * N);
}

#[test]
fn lock_holder_killed_recovers_within_100ms_and_clears() {
    let lock = Lock::new().unwrap();
    let l = lock.clone();
    kill_while_holding(move || std::mem::forget(l.acquire().unwrap()));
    let start = Instant::now();
    let r = lock.acquire_timeout(PATIENCE);
    assert!(start.elapsed() < Duration::from_millis(100), "took {:?}", start.elapsed());
    let guard = match r {
        Err(LockError::Poisoned(p)) => p.into_inner(),
        other => panic!("expected Poisoned, got {:?}", other.map(drop)),
    };
    drop(guard);
    assert!(lock.is_poisoned());
    lock.clear_poison();
    assert!(!lock.is_poisoned());
    assert!(lock.try_acquire().is_ok());
}

#[test]
fn named_lock_excludes_an_opener_in_another_process() {
    let lock = Lock::new_named().unwrap();
    let name = lock.name().unwrap().to_owned();
    let g = lock.acquire().unwrap();
    let child = spawn_child(move || {
        let l = Lock::open(&name).unwrap();
        let blocked = matches!(l.try_acquire(), Err(LockError::WouldBlock));
        let timed_out = matches!(l.acquire_timeout(Duration::from_millis(20)), Err(LockError::Timeout));
        i32::from(!(blocked && timed_out))
    });
    join_ok(child);
    drop(g);
}

#[test]
fn a_process_blocked_on_a_lock_gets_it_when_released_and_burns_no_cpu() {
    let lock = Lock::new().unwrap();
    let waiting = Event::new().unwrap();
    let g = lock.acquire().unwrap();
    let child = {
        let (lock, waiting) = (lock.clone(), waiting.clone());
        spawn_child(move || {
            let before = cpu_time();
            let start = Instant::now();
            waiting.set();
            let got = lock.acquire_timeout(PATIENCE).is_ok();
            let waited = start.elapsed();
            let cpu = cpu_time() - before;
            // It waited ~300 ms; an idle waiter must not spin through it.
            if !got || waited < Duration::from_millis(250) {
                return 1;
            }
            i32::from(cpu > Duration::from_millis(30)) * 2
        })
    };
    assert!(waiting.wait_timeout(PATIENCE));
    std::thread::sleep(Duration::from_millis(300));
    drop(g);
    join_ok(child);
}

#[test]
fn rlock_counts_reentry_per_thread() {
    let r = RLock::new().unwrap();
    let g1 = r.acquire().unwrap();
    let g2 = r.acquire().unwrap();
    let g3 = r.try_acquire().unwrap();
    let probe = |expect_free: bool| {
        let r = r.clone();
        let child = spawn_child(move || i32::from(r.try_acquire().is_ok() != expect_free));
        join_ok(child);
    };
    probe(false);
    drop(g3);
    drop(g2);
    probe(false); // one level still held
    drop(g1);
    probe(true);
}

#[test]
fn rlock_release_by_a_non_owner_is_an_error() {
    let r = RLock::new().unwrap();
    r.acquire().unwrap().detach();
    // Another thread of this process.
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(r.release(), Err(ReleaseError::NotOwner)));
    });
    // Another process.
    let child = {
        let r = r.clone();
        spawn_child(move || i32::from(r.release() != Err(ReleaseError::NotOwner)))
    };
    join_ok(child);
    assert_eq!(r.release(), Ok(()));
    assert_eq!(r.release(), Err(ReleaseError::NotOwner));
}

#[test]
fn rlock_holder_killed_recovers_within_100ms() {
    let r = RLock::new().unwrap();
    let r2 = r.clone();
    kill_while_holding(move || {
        r2.acquire().unwrap().detach();
        r2.acquire().unwrap().detach(); // held twice
    });
    let start = Instant::now();
    let res = r.acquire_timeout(PATIENCE);
    assert!(start.elapsed() < Duration::from_millis(100));
    assert!(matches!(res, Err(LockError::Poisoned(_))));
    drop(res);
    r.clear_poison();
    // Fully released: another process can take it.
    let child = {
        let r = r.clone();
        spawn_child(move || i32::from(r.try_acquire().is_err()))
    };
    join_ok(child);
}

#[test]
fn semaphore_signals_between_processes() {
    let ping = Semaphore::new(0).unwrap();
    let pong = Semaphore::new(0).unwrap();
    let child = {
        let (ping, pong) = (ping.clone(), pong.clone());
        spawn_child(move || {
            for _ in 0..1000 {
                if !ping.acquire_timeout(PATIENCE) {
                    return 1;
                }
                pong.release().unwrap();
            }
            0
        })
    };
    for _ in 0..1000 {
        ping.release().unwrap();
        assert!(pong.acquire_timeout(PATIENCE));
    }
    join_ok(child);
}

/// Run alone in a fresh process by `the_fork_handler_is_registered_before_main`.
#[test]
fn helper_fork_handler_registered() {
    if std::env::var_os("SHMPROC_CHECK_FORK_HANDLER").is_some() {
        assert!(shmproc::testing::fork_handler_registered());
    }
}

/// Regression: registering the handler lazily, under a `Once`, raced with forks
/// from other threads and left children waiting forever on the `Once`.
#[test]
fn the_fork_handler_is_registered_before_main() {
    run_test_alone("helper_fork_handler_registered", ("SHMPROC_CHECK_FORK_HANDLER", "1"));
}

#[test]
fn a_forked_child_is_not_mistaken_for_its_parent_thread() {
    let lock = Lock::new().unwrap();
    let g = lock.acquire().unwrap(); // this thread's identity is now cached
    let child = {
        let lock = lock.clone();
        // The child is a copy of this thread: if it kept the cached identity it
        // would see the lock as its own (Deadlock) instead of busy.
        spawn_child(move || i32::from(!matches!(lock.try_acquire(), Err(LockError::WouldBlock))))
    };
    join_ok(child);
    drop(g);
}

#[test]
fn rlock_timeouts_across_processes() {
    let r = RLock::new().unwrap();
    let (holding, release) = (Event::new().unwrap(), Event::new().unwrap());
    let child = {
        let (r, holding, release) = (r.clone(), holding.clone(), release.clone());
        spawn_child(move || {
            let _a = r.acquire().unwrap();
            let _b = r.acquire().unwrap();
            holding.set();
            i32::from(!release.wait_timeout(PATIENCE))
        })
    };
    assert!(holding.wait_timeout(PATIENCE));
    assert!(matches!(r.try_acquire(), Err(LockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(r.acquire_timeout(Duration::from_millis(40)), Err(LockError::Timeout)));
    assert!(start.elapsed() >= Duration::from_millis(40));
    release.set();
    join_ok(child);
    assert!(r.acquire_timeout(PATIENCE).is_ok());
}

/// `locked()` (Python 3.13's `Lock.locked`, #13) sees a holder in another process,
/// alive or dead, and a free lock once released or taken over.
#[test]
fn locked_sees_a_holder_in_another_process_alive_or_dead() {
    let lock = Lock::new().unwrap();
    let (holding, release) = (Event::new().unwrap(), Event::new().unwrap());
    let child = {
        let (lock, holding, release) = (lock.clone(), holding.clone(), release.clone());
        spawn_child(move || {
            let _guard = lock.acquire().unwrap();
            holding.set();
            i32::from(!release.wait_timeout(PATIENCE))
        })
    };
    assert!(holding.wait_timeout(PATIENCE));
    assert!(lock.locked());
    release.set();
    join_ok(child);
    assert!(!lock.locked());

    let l = lock.clone();
    kill_while_holding(move || std::mem::forget(l.acquire().unwrap()));
    assert!(lock.locked(), "a dead holder still holds the lock until it is taken over");
    drop(lock.acquire_timeout(PATIENCE));
    assert!(!lock.locked());
}

//! `Barrier` across real processes.

shmproc::init_before_main!();

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::{Barrier, BarrierError, RawArray, SegmentCreateError};

#[test]
fn three_processes_pass_together_with_distinct_indices() {
    let b = Barrier::new(3).unwrap();
    let indices = RawArray::<u32>::from_slice(&[u32::MAX; 3]).unwrap();
    let children: Vec<_> = (0..2)
        .map(|slot| {
            let (b, indices) = (b.clone(), indices.clone());
            spawn_child(move || match quickly(|| b.wait_timeout(PATIENCE)).unwrap_or(Err(BarrierError::Broken)) {
                Ok(i) => {
                    indices.set(slot, i).unwrap();
                    0
                }
                Err(_) => 1,
            })
        })
        .collect();
    let mine = b.wait_timeout(PATIENCE).unwrap();
    indices.set(2, mine).unwrap();
    for c in children {
        join_ok(c);
    }
    let mut got = indices.to_vec();
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
    // Reusable: a second round works too.
    let child = {
        let b = b.clone();
        spawn_child(move || i32::from(!matches!(quickly(|| b.wait_timeout(PATIENCE)), Some(Ok(_)))))
    };
    let child2 = {
        let b = b.clone();
        spawn_child(move || i32::from(!matches!(quickly(|| b.wait_timeout(PATIENCE)), Some(Ok(_)))))
    };
    assert!(b.wait_timeout(PATIENCE).is_ok());
    join_ok(child);
    join_ok(child2);
}

#[test]
fn a_party_timing_out_breaks_the_barrier_for_everyone() {
    let b = Barrier::new(3).unwrap();
    let child = {
        let b = b.clone();
        spawn_child(move || i32::from(quickly(|| b.wait_timeout(PATIENCE)) != Some(Err(BarrierError::Broken))))
    };
    let start = Instant::now();
    assert_eq!(b.wait_timeout(Duration::from_millis(50)), Err(BarrierError::Broken));
    assert!(start.elapsed() >= Duration::from_millis(50));
    join_ok(child);
    assert!(b.broken());
    assert_eq!(b.wait_timeout(PATIENCE), Err(BarrierError::Broken), "stays broken");
    b.reset().unwrap();
    assert!(!b.broken());
}

#[test]
fn a_party_dying_while_waiting_breaks_the_barrier() {
    let b = Barrier::new(3).unwrap();
    let doomed = {
        let b = b.clone();
        spawn_child(move || {
            let _ = b.wait();
            0
        })
    };
    let deadline = Instant::now() + PATIENCE;
    while b.n_waiting() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    doomed.signal(libc::SIGKILL).unwrap();
    assert_eq!(join(doomed), Exit::Signal(libc::SIGKILL));
    let start = Instant::now();
    assert_eq!(b.wait_timeout(PATIENCE), Err(BarrierError::Broken));
    assert!(start.elapsed() < Duration::from_secs(1), "noticed after {:?}", start.elapsed());
}

#[test]
fn abort_and_reset_release_waiters_with_broken() {
    let b = Barrier::new(2).unwrap();
    let child = {
        let b = b.clone();
        spawn_child(move || i32::from(quickly(|| b.wait_timeout(PATIENCE)) != Some(Err(BarrierError::Broken))))
    };
    let deadline = Instant::now() + PATIENCE;
    while b.n_waiting() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    b.reset().unwrap(); // a waiting party gets Broken; the barrier is clean again
    join_ok(child);
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);

    let child = {
        let b = b.clone();
        spawn_child(move || i32::from(quickly(|| b.wait_timeout(PATIENCE)) != Some(Err(BarrierError::Broken))))
    };
    while b.n_waiting() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    b.abort();
    join_ok(child);
    assert!(b.broken());
}

#[test]
fn named_barrier_and_bad_arguments() {
    assert!(matches!(Barrier::new(0), Err(SegmentCreateError::InvalidArgument(_))));
    let b = Barrier::new_named(2).unwrap();
    let name = b.name().unwrap().to_owned();
    let child = spawn_child(move || {
        let b = Barrier::open(&name).unwrap();
        i32::from(!(b.parties() == 2 && matches!(quickly(|| b.wait_timeout(PATIENCE)), Some(Ok(_)))))
    });
    assert!(b.wait_timeout(PATIENCE).is_ok());
    join_ok(child);
}

/// #13: Python's `Barrier(parties, timeout=t)`: the default timeout, set in one
/// process, bounds a plain `wait` in another.
#[test]
fn a_default_timeout_set_here_bounds_a_wait_in_another_process() {
    let b = Barrier::new(2).unwrap();
    assert_eq!(b.timeout(), None);
    b.set_timeout(Some(Duration::from_millis(50)));
    let child = {
        let b = b.clone();
        spawn_child(move || {
            let start = Instant::now();
            let r = b.wait();
            let quick = start.elapsed() < PROMPT;
            i32::from(!(r == Err(BarrierError::Broken) && quick))
        })
    };
    join_ok(child);
    assert!(b.broken());
}

const ACTION_VALUE: &str = "SHMPROC_TEST_BARRIER_ACTION";

/// The action: counts itself in the value named by the environment (an action is a
/// function, not a closure: it runs in whichever process arrives last).
fn count_action() {
    let v = shmproc::Value::<u64>::open(&std::env::var(ACTION_VALUE).unwrap()).unwrap();
    *v.lock().unwrap() += 1;
}

fn three_rounds(b: Barrier) {
    for _ in 0..3 {
        b.wait_timeout(PATIENCE).unwrap();
    }
}

fn boom() {
    panic!("the action failed");
}

/// #13: Python's `Barrier(n, action=f)`: the action runs once per round, in the
/// last party to arrive, whichever process that is (the parent, a forked or a
/// spawned child); an action that panics breaks the barrier for every party.
#[test]
fn an_action_runs_once_a_round_in_the_last_party_to_arrive() {
    let name = format!("/shmproc_test_barrier_action_{}", std::process::id());
    let counter = shmproc::Value::<u64>::new_named_as(&name, 0).unwrap();
    std::env::set_var(ACTION_VALUE, &name);
    let b = Barrier::with_action(3, count_action).unwrap();
    let children: Vec<_> = [shmproc::StartMethod::Fork, shmproc::StartMethod::Spawn]
        .into_iter()
        .map(|m| shmproc::Process::builder(three_rounds, b.clone()).start_method(m).start().unwrap())
        .collect();
    three_rounds(b);
    for p in &children {
        assert!(p.join_timeout(PATIENCE).unwrap());
        assert_eq!(p.exitcode(), Some(0));
    }
    assert_eq!(counter.get().unwrap(), 3, "the action must run exactly once a round");

    let b = Barrier::with_action(1, boom).unwrap();
    quiet_panics();
    assert_eq!(b.wait(), Err(BarrierError::Broken));
    assert!(b.broken());
}

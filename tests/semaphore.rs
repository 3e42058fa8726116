//! `Semaphore` and `BoundedSemaphore` across real processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::{BoundedSemaphore, ObjectKind, ReleaseError, SegmentOpenError, Semaphore};

#[test]
fn permits_are_counted_across_processes() {
    let s = Semaphore::new(3).unwrap();
    let child = {
        let s = s.clone();
        spawn_child(move || {
            let taken = (0..5).filter(|_| s.try_acquire()).count();
            i32::from(taken != 3)
        })
    };
    join_ok(child);
    assert_eq!(s.get_value(), 0);
    assert!(!s.try_acquire());
    s.release().unwrap();
    assert_eq!(s.get_value(), 1);
}

#[test]
fn acquire_timeout_waits_the_full_time_and_fails() {
    let s = Semaphore::new(0).unwrap();
    let start = Instant::now();
    assert!(!s.acquire_timeout(Duration::from_millis(40)));
    assert!(start.elapsed() >= Duration::from_millis(40));
}

#[test]
fn a_sleeping_acquirer_is_woken_by_another_process_and_burns_no_cpu() {
    let s = Semaphore::new(0).unwrap();
    let child = {
        let s = s.clone();
        spawn_child(move || {
            let before = cpu_time();
            if !s.acquire_timeout(PATIENCE) {
                return 1;
            }
            i32::from(cpu_time() - before > Duration::from_millis(30)) * 2
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    s.release().unwrap();
    join_ok(child);
}

#[test]
fn bounded_semaphore_refuses_release_above_its_initial_value() {
    let s = BoundedSemaphore::new(2).unwrap();
    assert_eq!(s.release(), Err(ReleaseError::TooManyReleases { max: 2 }));
    s.acquire();
    let child = {
        let s = s.clone();
        spawn_child(move || {
            let first = s.release();
            let second = s.release();
            i32::from(!(first.is_ok() && second == Err(ReleaseError::TooManyReleases { max: 2 })))
        })
    };
    join_ok(child);
    assert_eq!(s.get_value(), 2);
    assert_eq!(s.max_value(), 2);
}

#[test]
fn named_semaphores_open_by_kind() {
    let s = BoundedSemaphore::new_named(1).unwrap();
    let name = s.name().unwrap().to_owned();
    assert!(matches!(
        Semaphore::open(&name),
        Err(SegmentOpenError::WrongKind { found: ObjectKind::BoundedSemaphore, .. })
    ));
    let child = spawn_child(move || {
        let s = BoundedSemaphore::open(&name).unwrap();
        i32::from(!(s.try_acquire() && s.max_value() == 1))
    });
    join_ok(child);
    assert_eq!(s.get_value(), 0);
}

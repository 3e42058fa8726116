//! `spawn` / `JoinHandle` under every start method: values, panics, signals and
//! exits come back from real child processes.

shmproc::init_before_main!();

mod common;

/// How long any test here may run in all (see `common::watchdog`).
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(120);

use std::time::Duration;

use common::*;
use shmproc::{JoinError, StartMethod};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

fn square(x: u64) -> u64 {
    x * x
}

fn fails(x: u64) -> u64 {
    panic!("no square for {x}");
}

fn killed(_: ()) -> u64 {
    // SAFETY: raise(3) on the calling process; nothing to uphold.
    unsafe { libc::raise(libc::SIGKILL) };
    0
}

fn exits(code: i32) -> u64 {
    std::process::exit(code)
}

fn big(n: usize) -> Vec<u8> {
    vec![9; n]
}

/// Joins `h` within [`PATIENCE`].
fn join<R: serde::Serialize + serde::de::DeserializeOwned>(h: shmproc::JoinHandle<R>) -> Result<R, JoinError> {
    assert!(h.join_timeout(PATIENCE).unwrap(), "the child overstayed");
    h.join()
}

#[test]
fn values_come_back_under_every_start_method() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let ctx = shmproc::context(method);
        assert_eq!(join(ctx.spawn(square, 7).unwrap()), Ok(49), "{method:?}");
        let s = join(ctx.spawn(|(a, b): (String, u32)| format!("{a}{b}"), ("x".to_string(), 5)).unwrap());
        assert_eq!(s.as_deref(), Ok("x5"), "{method:?}");
        // Larger than the outcome ring's inline limit: it travels in a side segment.
        let v = join(ctx.spawn(big, 3 << 20).unwrap()).unwrap();
        assert_eq!(v.len(), 3 << 20);
        assert!(v.iter().all(|&b| b == 9));
    }
}

#[test]
fn a_panic_comes_back_with_its_message_and_location() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let h = shmproc::context(method).spawn(fails, 3).unwrap();
        match join(h) {
            Err(JoinError::Panicked { message, location }) => {
                assert_eq!(message, "no square for 3", "{method:?}");
                assert!(location.starts_with("tests/spawn.rs:"), "{method:?}: {location}");
            }
            other => panic!("{method:?}: {other:?}"),
        }
    }
}

#[test]
fn a_killed_or_exiting_child_says_how_it_ended() {
    let _watchdog = watchdog(WATCHDOG);
    for method in METHODS {
        let ctx = shmproc::context(method);
        assert_eq!(
            join(ctx.spawn(killed, ()).unwrap()),
            Err(JoinError::Killed { signal: libc::SIGKILL }),
            "{method:?}"
        );
        assert_eq!(join(ctx.spawn(exits, 3).unwrap()), Err(JoinError::Exited { code: 3 }), "{method:?}");
    }
}

#[test]
fn the_handle_reports_finishing_and_the_process() {
    let _watchdog = watchdog(WATCHDOG);
    let h = shmproc::spawn(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), 200).unwrap();
    assert!(!h.is_finished());
    assert!(h.process().pid().is_some());
    assert!(h.join_timeout(PATIENCE).unwrap());
    assert!(h.is_finished());
    assert_eq!(h.process().exitcode(), Some(0));
    assert_eq!(h.join(), Ok(()));
}

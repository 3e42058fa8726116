//! Running out: a full `/dev/shm`, 64 descriptors, no process to spare. Each case
//! runs in a child of the test (whose limits and mounts it may change) and checks
//! that every failure is a clear error, that no message is lost and no file left,
//! and that things work again once there is room.
//!
//! The `/dev/shm` case mounts a 2 MiB tmpfs over `/dev/shm` in a mount namespace of
//! its own, and the process case becomes user `nobody`: both need root, and say
//! SKIPPED (passing) where the machine does not allow them.

shmproc::init_before_main!();

mod common;

use std::time::Duration;

use common::*;
use shmproc::{Lock, Manager, Pipe, Pool, Process, Queue, StartMethod, Value};

/// The exit code of a child that could not set its case up.
const SKIP: i32 = 77;

fn run_case(name: &str, case: impl FnOnce() -> i32 + 'static) {
    match join(spawn_child(case)) {
        Exit::Code(0) => {}
        Exit::Code(SKIP) => eprintln!("{name}: SKIPPED (this machine does not allow setting it up)"),
        other => panic!("{name}: the child ended {other:?} (see its stderr for the step)"),
    }
}

/// Fails the child with `code` and a message when `ok` is false.
fn check(ok: bool, code: i32, what: &str) -> Result<(), i32> {
    if ok {
        Ok(())
    } else {
        eprintln!("step {code} failed: {what}");
        Err(code)
    }
}

fn shm_files() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

/// A private 2 MiB /dev/shm for this process; false if the machine refuses.
fn small_dev_shm() -> bool {
    // SAFETY: unshare and mount with valid C strings; this process is a test child
    // whose mounts nobody else sees once unshared.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let none = c"none";
        if libc::mount(
            none.as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return false;
        }
        libc::mount(c"tmpfs".as_ptr(), c"/dev/shm".as_ptr(), c"tmpfs".as_ptr(), 0, c"size=2m".as_ptr().cast()) == 0
    }
}

#[test]
fn a_full_dev_shm_gives_clear_errors_loses_no_message_and_leaves_no_file() {
    run_case("full /dev/shm", || {
        if !small_dev_shm() {
            return SKIP;
        }
        let steps = || -> Result<(), i32> {
            // Larger than the whole tmpfs: refused at start, not a SIGBUS later.
            let m = Manager::builder().capacity(4 << 20).start();
            let why = m.as_ref().err().map(ToString::to_string).unwrap_or_default();
            check(why.contains("No space") || why.contains("fallocate"), 1, &format!("a manager too big: {why:?}"))?;
            check(shm_files().is_empty(), 2, "the failed manager left a file")?;

            let q = Queue::<Vec<u8>>::builder().named(true).capacity(64 << 10).build().map_err(|_| 3)?;
            q.put(vec![1; 100]).map_err(|_| 4)?;
            // Fill what is left, but for a little.
            let filler = "/dev/shm/filler";
            let free = nix_free_bytes("/dev/shm");
            std::fs::write(filler, vec![0u8; free.saturating_sub(32 << 10) as usize]).map_err(|_| 5)?;
            let before = shm_files();
            // A message for a side segment that cannot be made: the value comes back.
            let big = vec![7u8; 600 << 10];
            let err = q.put(big.clone()).err();
            check(err.is_some(), 6, "a large put into a full /dev/shm succeeded")?;
            let back = err.map(|e| e.into_inner()).unwrap_or_default();
            check(back == big, 7, "the failed put did not hand the message back")?;
            check(shm_files() == before, 8, "the failed put left a file")?;
            // Named objects fail clearly; anonymous ones (memfd) need no /dev/shm.
            check(Value::new_named(1u64).is_ok() || shm_files() == before, 9, "a failed named value left a file")?;
            check(Lock::new().is_ok() && Value::new(5u64).is_ok(), 10, "anonymous objects failed")?;
            // What was in the queue is intact, and with room again the large one goes.
            check(q.get_timeout(PATIENCE).ok() == Some(vec![1; 100]), 11, "the earlier message was lost")?;
            std::fs::remove_file(filler).map_err(|_| 12)?;
            q.put(big.clone()).map_err(|_| 13)?;
            check(q.get_timeout(PATIENCE).ok() == Some(big), 14, "the large message after the retry")?;
            drop(q);
            check(shm_files().is_empty(), 15, &format!("files left: {:?}", shm_files()))?;
            Ok(())
        };
        steps().err().unwrap_or(0)
    });
}

/// Free bytes of the filesystem at `path`.
fn nix_free_bytes(path: &str) -> u64 {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: statvfs with a valid path and a zeroed out-parameter.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bavail * st.f_frsize
    }
}

fn noop(_: ()) {}

#[test]
fn sixty_four_descriptors_give_clear_errors_and_lose_nothing() {
    run_case("RLIMIT_NOFILE 64", || {
        let steps = || -> Result<(), i32> {
            let low = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            // SAFETY: setrlimit with a valid struct, in this test child.
            check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) } == 0, 1, "setrlimit")?;
            let q = Queue::<Vec<u8>>::builder().capacity(4096).build().map_err(|_| 2)?;
            q.put(vec![3; 10]).map_err(|_| 3)?;
            // Take descriptors with shared objects until the limit says no.
            let mut kept = Vec::new();
            let why = loop {
                match Value::new(0u64) {
                    Ok(v) => kept.push(v),
                    Err(e) => break e.to_string(),
                }
                check(kept.len() < 100, 4, "the limit never bit")?;
            };
            check(why.contains("Too many open files"), 5, &format!("the error: {why:?}"))?;
            // Every kind of object and operation fails clearly, and hands values back.
            check(Pipe::duplex::<u8>().is_err(), 6, "a pipe without descriptors")?;
            check(Manager::builder().anonymous().start().is_err(), 7, "a manager without descriptors")?;
            let big = vec![9u8; 100_000]; // larger than the ring: needs a side segment
            let back = q.put(big.clone()).err().map(|e| e.into_inner());
            check(back.as_ref() == Some(&big), 8, "a large put did not fail with its value back")?;
            let start = Process::builder(noop, ()).start_method(StartMethod::Spawn).start();
            check(start.is_err(), 9, "a spawn without descriptors")?;
            // Room again: everything works, nothing was lost.
            kept.truncate(kept.len() / 2);
            check(q.get_timeout(PATIENCE).ok() == Some(vec![3; 10]), 10, "the queued message")?;
            q.put(big.clone()).map_err(|_| 11)?;
            check(q.get_timeout(PATIENCE).ok() == Some(big), 12, "the large message")?;
            let p = Process::builder(noop, ()).start_method(StartMethod::Spawn).start().map_err(|_| 13)?;
            check(p.join_timeout(PATIENCE).ok() == Some(true), 14, "the spawned child")?;
            check(Manager::builder().anonymous().start().is_ok(), 15, "a manager with room")?;
            Ok(())
        };
        steps().err().unwrap_or(0)
    });
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn no_process_to_spare_gives_clear_errors_and_no_hang() {
    run_case("RLIMIT_NPROC", || {
        // Root ignores RLIMIT_NPROC: become nobody (65534) first.
        // SAFETY: setgid/setuid/setrlimit with plain values, in this test child.
        let ready = unsafe {
            libc::setgid(65534) == 0
                && libc::setuid(65534) == 0
                && libc::setrlimit(libc::RLIMIT_NPROC, &libc::rlimit { rlim_cur: 1, rlim_max: 1 }) == 0
        };
        if !ready {
            return SKIP;
        }
        let steps = || -> Result<(), i32> {
            // This process is nobody's only one: no fork can succeed.
            // SAFETY: fork in a single-threaded child; the grandchild exits at once.
            let probe = unsafe { libc::fork() };
            if probe == 0 {
                // SAFETY: leaving the grandchild without running anything else.
                unsafe { libc::_exit(0) };
            }
            if probe > 0 {
                eprintln!("RLIMIT_NPROC did not stop a fork here");
                return Err(SKIP);
            }
            for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
                let r = Process::builder(noop, ()).start_method(method).start();
                let why = r.err().map(|e| e.to_string()).unwrap_or_default();
                check(!why.is_empty(), 1, &format!("{method:?}: a start succeeded"))?;
                eprintln!("{method:?}: {why}");
            }
            let t = std::time::Instant::now();
            let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build();
            match pool {
                Err(e) => eprintln!("Pool: {e}"),
                Ok(pool) => {
                    // Workers that cannot start: tasks fail, nothing hangs.
                    let r = pool.apply_async(square, 3).get_timeout(Duration::from_secs(5));
                    check(r.is_err(), 2, "a task ran without a worker")?;
                    eprintln!("Pool task: {:?}", r.err());
                    pool.terminate();
                }
            }
            check(t.elapsed() < PATIENCE, 3, "the pool took too long to fail")?;
            Ok(())
        };
        steps().err().unwrap_or(0)
    });
}

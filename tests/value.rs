//! `Value` and `RawValue` across real processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::{Event, LockError, ObjectKind, RawValue, SegmentCreateError, SegmentOpenError, Value};

#[test]
fn two_processes_incrementing_under_the_lock_lose_no_update() {
    const N: u64 = 200_000;
    let v = Value::<u64>::new(0).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let v = v.clone();
            spawn_child(move || {
                for _ in 0..N {
                    *v.lock().unwrap() += 1;
                }
                0
            })
        })
        .collect();
    for c in children {
        join_ok(c);
    }
    assert_eq!(v.get().unwrap(), 2 * N);
}

#[test]
fn holder_killed_mid_update_poisons_and_the_next_lock_recovers_fast() {
    let v = Value::<[u64; 2]>::new([7, 7]).unwrap();
    let held = v.clone();
    kill_while_holding(move || {
        let mut g = held.lock().unwrap();
        g[0] = 8; // half an update: the invariant g[0] == g[1] is broken
        std::mem::forget(g);
    });

    let start = Instant::now();
    let poisoned = v.lock_timeout(PATIENCE);
    let took = start.elapsed();
    assert!(took < Duration::from_millis(100), "recovery took {took:?}");
    let mut g = match poisoned {
        Err(LockError::Poisoned(p)) => p.into_inner(),
        other => panic!("expected a poisoned lock, got {:?}", other.map(|_| ())),
    };
    assert_eq!(*g, [8, 7], "the data the holder left is intact");
    g[1] = 8; // repair
    drop(g);
    assert!(v.get_lock().is_poisoned(), "poison is sticky until cleared");
    assert!(matches!(v.get(), Err(LockError::Poisoned(_))));
    v.get_lock().clear_poison();
    assert_eq!(v.get().unwrap(), [8, 8]);
}

#[test]
fn panic_while_holding_poisons_across_processes() {
    let v = Value::<u32>::new(1).unwrap();
    let child = {
        let v = v.clone();
        spawn_child(move || {
            quiet_panics();
            let _g = v.lock().unwrap();
            panic!("boom");
        })
    };
    assert_eq!(join(child), Exit::Code(PANICKED));
    match v.get() {
        Err(LockError::Poisoned(p)) => assert_eq!(p.into_inner(), 1),
        other => panic!("expected poison, got {other:?}"),
    }
}

#[test]
fn values_can_share_one_lock() {
    let a = Value::<i32>::new(1).unwrap();
    let b = Value::with_lock(2i32, a.get_lock()).unwrap();
    let held = a.lock().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert!(matches!(b.try_lock(), Err(LockError::WouldBlock))));
    });
    assert!(matches!(b.try_lock(), Err(LockError::Deadlock)), "same thread: would deadlock");
    drop(held);
    assert_eq!(b.get().unwrap(), 2);
}

#[test]
fn lock_timeout_waits_then_reports_timeout() {
    let v = Value::<u8>::new(0).unwrap();
    let (holding, release) = (Event::new().unwrap(), Event::new().unwrap());
    let child = {
        let (v, holding, release) = (v.clone(), holding.clone(), release.clone());
        spawn_child(move || {
            let _g = v.lock().unwrap();
            holding.set();
            i32::from(!release.wait_timeout(PATIENCE))
        })
    };
    assert!(holding.wait_timeout(PATIENCE));
    assert!(matches!(v.try_lock(), Err(LockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(v.lock_timeout(Duration::from_millis(50)), Err(LockError::Timeout)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    release.set();
    join_ok(child);
    assert!(v.lock_timeout(PATIENCE).is_ok());
}

#[test]
fn relocking_from_the_holding_thread_is_an_error_not_a_hang() {
    let v = Value::<u8>::new(0).unwrap();
    let _g = v.lock().unwrap();
    assert!(matches!(v.lock(), Err(LockError::Deadlock)));
}

#[test]
fn raw_value_is_shared_with_a_child() {
    let v = RawValue::<f64>::new(0.5).unwrap();
    let child = {
        let v = v.clone();
        spawn_child(move || {
            v.set(v.get() * 4.0);
            0
        })
    };
    join_ok(child);
    assert_eq!(v.get(), 2.0);
}

#[test]
fn named_value_opened_from_a_forked_process() {
    let v = Value::<u64>::new_named(5).unwrap();
    let name = v.name().unwrap().to_owned();
    let child = spawn_child(move || {
        // Drop what was inherited: open by name as an unrelated process would.
        let v = Value::<u64>::open(&name).unwrap();
        *v.lock().unwrap() += 10;
        0
    });
    join_ok(child);
    assert_eq!(v.get().unwrap(), 15);
}

/// Run as a separate program by `named_value_opened_from_an_unrelated_process`.
#[test]
fn helper_unrelated_opener() {
    let Ok(name) = std::env::var("SHMPROC_OPEN_VALUE") else { return };
    let v = Value::<u64>::open(&name).unwrap();
    *v.lock().unwrap() *= 3;
}

#[test]
fn named_value_opened_from_an_unrelated_process() {
    let v = Value::<u64>::new_named(14).unwrap();
    run_test_alone("helper_unrelated_opener", ("SHMPROC_OPEN_VALUE", v.name().unwrap()));
    assert_eq!(v.get().unwrap(), 42);
}

#[test]
fn the_creator_unlinks_on_drop_but_a_forked_copy_never_does() {
    let v = Value::<u32>::new_named(1).unwrap();
    let name = v.name().unwrap().to_owned();
    assert!(shm_path(&name).exists());
    let child = {
        let v = v.clone();
        spawn_child(move || {
            drop(v); // the child's copy: must not unlink
            0
        })
    };
    join_ok(child);
    assert!(shm_path(&name).exists(), "a forked copy unlinked the segment");
    let opened = Value::<u32>::open(&name).unwrap();
    drop(opened); // an opener never unlinks either
    assert!(shm_path(&name).exists());
    drop(v);
    assert!(!shm_path(&name).exists(), "the creator must unlink on drop");
}

#[test]
fn opening_the_wrong_thing_is_a_typed_error() {
    assert!(matches!(Value::<u64>::open("/shmproc.does-not-exist"), Err(SegmentOpenError::NotFound(_))));
    assert!(matches!(Value::<u64>::open("no-slash"), Err(SegmentOpenError::InvalidName(_))));
    let v = Value::<u64>::new_named(0).unwrap();
    let name = v.name().unwrap();
    assert!(matches!(Value::<f64>::open(name), Err(SegmentOpenError::WrongType { .. })));
    assert!(matches!(Value::<u32>::open(name), Err(SegmentOpenError::WrongType { .. })));
    assert!(matches!(
        shmproc::Lock::open(name),
        Err(SegmentOpenError::WrongKind { found: ObjectKind::Value, expected: ObjectKind::Lock })
    ));
    assert!(matches!(RawValue::<u64>::open(name), Err(SegmentOpenError::WrongKind { .. })));
}

/// Makes a named value, lets `damage` change its file, and returns what `open` says.
fn open_after(damage: impl FnOnce(&std::fs::File)) -> SegmentOpenError {
    let v = Value::<u64>::new_named(9).unwrap();
    let name = v.name().unwrap().to_owned();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(shm_path(&name)).unwrap();
    damage(&file);
    Value::<u64>::open(&name).expect_err("a damaged segment must not open")
}

fn write_at(file: &std::fs::File, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn truncated_segment_is_an_error() {
    let e = open_after(|f| f.set_len(70).unwrap());
    assert!(matches!(e, SegmentOpenError::Truncated { len: 70, .. }), "{e}");
    let e = open_after(|f| f.set_len(10).unwrap());
    assert!(matches!(e, SegmentOpenError::Truncated { len: 10, .. }), "{e}");
}

#[test]
fn foreign_or_damaged_headers_are_errors() {
    assert!(matches!(open_after(|f| write_at(f, 0, b"NOTOURS!")), SegmentOpenError::NotShmproc));
    assert!(matches!(open_after(|f| write_at(f, 12, &[0; 4])), SegmentOpenError::Uninitialised));
    assert!(matches!(
        open_after(|f| write_at(f, 8, &99u32.to_ne_bytes())),
        SegmentOpenError::VersionMismatch { found: 99, .. }
    ));
    assert!(matches!(open_after(|f| write_at(f, 16, &77u32.to_ne_bytes())), SegmentOpenError::Corrupted(_)));
    // A body length that disagrees with the element count.
    assert!(matches!(open_after(|f| write_at(f, 48, &8u64.to_ne_bytes())), SegmentOpenError::Corrupted(_)));
    // A huge body length: the file is shorter than claimed.
    assert!(matches!(
        open_after(|f| write_at(f, 48, &u64::MAX.to_ne_bytes())),
        SegmentOpenError::Corrupted(_) | SegmentOpenError::Truncated { .. }
    ));
}

#[test]
fn a_scribbled_lock_word_is_an_error_not_a_hang() {
    let v = Value::<u64>::new_named(1).unwrap();
    let name = v.name().unwrap().to_owned();
    let file = std::fs::OpenOptions::new().write(true).open(shm_path(&name)).unwrap();
    // The lock word starts the body (offset 64). Make it name a thread id above any
    // pid_max: a holder that cannot be alive.
    write_at(&file, 64, &0x3fff_fffeu32.to_ne_bytes());
    let opened = Value::<u64>::open(&name).unwrap();
    let start = Instant::now();
    match opened.lock_timeout(PATIENCE) {
        Err(LockError::Poisoned(p)) => assert_eq!(*p.into_inner(), 1),
        other => panic!("expected Poisoned, got {:?}", other.map(|g| *g)),
    };
    assert!(start.elapsed() < Duration::from_millis(100));
    // A try sees through it as well.
    write_at(&file, 64, &0x3fff_fffeu32.to_ne_bytes());
    assert!(matches!(opened.try_lock(), Err(LockError::Poisoned(_))));
}

#[test]
fn zero_sized_types_are_refused() {
    assert!(matches!(Value::new(()), Err(SegmentCreateError::ZeroSizedType(_))));
}

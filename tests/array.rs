//! `Array` and `RawArray` across real processes.

mod common;

use common::*;
use shmproc::{Array, ArrayError, LockError, RawArray, SegmentCreateError, SegmentOpenError};

#[test]
fn a_child_fills_a_raw_array_the_parent_sums() {
    const N: usize = 1_000_000;
    let a = RawArray::<f64>::zeroed(N).unwrap();
    let child = {
        let a = a.clone();
        spawn_child(move || {
            // SAFETY: no other thread of this (child) process touches the array.
            let s = unsafe { a.as_mut_slice() };
            for (i, x) in s.iter_mut().enumerate() {
                *x = i as f64;
            }
            0
        })
    };
    join_ok(child);
    let sum: f64 = a.to_vec().iter().sum();
    assert_eq!(sum, (N * (N - 1) / 2) as f64);
}

#[test]
fn locked_array_updates_from_two_processes_are_not_lost() {
    let a = Array::<u32>::zeroed(4).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            let a = a.clone();
            spawn_child(move || {
                for _ in 0..10_000 {
                    let mut g = a.lock().unwrap();
                    for x in g.iter_mut() {
                        *x += 1;
                    }
                }
                0
            })
        })
        .collect();
    for c in children {
        join_ok(c);
    }
    assert_eq!(a.to_vec().unwrap(), vec![20_000; 4]);
}

#[test]
fn copy_in_and_out_with_checked_lengths() {
    let a = Array::from_slice(&[1i64, 2, 3]).unwrap();
    assert_eq!(a.len(), 3);
    a.copy_from_slice(&[4, 5, 6]).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![4, 5, 6]);
    assert!(matches!(a.copy_from_slice(&[1]), Err(ArrayError::LengthMismatch { len: 3, src_len: 1 })));

    let r = RawArray::from_slice(&[1u8, 2]).unwrap();
    assert!(matches!(r.set(2, 0), Err(ArrayError::OutOfBounds { index: 2, len: 2 })));
    assert_eq!(r.get(usize::MAX), None);
    assert!(r.copy_from_slice(&[9, 9, 9]).is_err());
    assert_eq!(r.to_vec(), vec![1, 2]);
}

#[test]
fn bad_sizes_are_clear_errors() {
    assert!(matches!(Array::<f64>::zeroed(0), Err(SegmentCreateError::ZeroLength)));
    assert!(matches!(RawArray::<u8>::from_slice(&[]), Err(SegmentCreateError::ZeroLength)));
    assert!(matches!(RawArray::<()>::zeroed(4), Err(SegmentCreateError::ZeroSizedType(_))));
    assert!(matches!(RawArray::<u64>::zeroed(usize::MAX / 4), Err(SegmentCreateError::TooLarge(_))));
    assert!(matches!(Array::<u64>::zeroed(usize::MAX), Err(SegmentCreateError::TooLarge(_))));
}

#[test]
fn named_array_opened_in_another_process_with_type_checks() {
    let a = Array::from_slice_named(&[1.5f32, 2.5]).unwrap();
    let name = a.name().unwrap().to_owned();
    assert!(matches!(Array::<u32>::open(&name), Err(SegmentOpenError::WrongType { .. })));
    assert!(matches!(RawArray::<f32>::open(&name), Err(SegmentOpenError::WrongKind { .. })));
    let child = spawn_child(move || {
        let a = Array::<f32>::open(&name).unwrap();
        if a.len() != 2 {
            return 1;
        }
        a.lock().unwrap()[0] = 9.0;
        0
    });
    join_ok(child);
    assert_eq!(a.to_vec().unwrap(), vec![9.0, 2.5]);
}

#[test]
fn a_child_panicking_under_the_array_lock_poisons_it() {
    let a = Array::<u8>::zeroed(2).unwrap();
    let child = {
        let a = a.clone();
        spawn_child(move || {
            quiet_panics();
            let mut g = a.lock().unwrap();
            g[0] = 1;
            panic!("mid-update");
        })
    };
    assert_eq!(join(child), Exit::Code(PANICKED));
    match a.to_vec() {
        Err(LockError::Poisoned(p)) => assert_eq!(p.into_inner(), vec![1, 0]),
        other => panic!("expected poison, got {other:?}"),
    }
}

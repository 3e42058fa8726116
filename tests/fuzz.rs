//! A mutation fuzzer for everything that parses shared memory, run as a test.
//!
//! The seed corpus is real segments: a queue with small and large messages in it, a
//! joinable queue, a value, an array, a lock and a manager with a dict and a list,
//! all named, their files' bytes read back from `/dev/shm`. Each input is a seed with
//! a few mutations (a bit flipped, a word set to 0, all ones, a small or a huge
//! number, a word copied from elsewhere, the file cut short or made longer). It is
//! written to a fresh file in `/dev/shm`, opened as the seed's type (header
//! validation), and used: gets, puts, reads and writes with short time-outs. Every
//! call must return, in a child process that must not crash. (A manager's lock word
//! is left as it was: manager calls have no time-out, and a lock word naming a live
//! thread makes them wait for it, as README says.)
//!
//! `SHMPROC_FUZZ_ITERS=200000 cargo test --release --test fuzz -- --nocapture` runs
//! longer (the default is 3 000 inputs); `SHMPROC_FUZZ_SEED` replays one run.

mod common;

use std::time::Duration;

use common::*;
use shmproc::{Array, JoinableQueue, Lock, Manager, Queue, RawArray, Value};

const WAIT: Duration = Duration::from_millis(1);

/// Which type a seed is opened as.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Queue,
    Joinable,
    Value,
    Array,
    Lock,
    Manager,
}

/// The seed corpus: (kind, the bytes of a real segment of that kind).
fn corpus() -> Vec<(Kind, Vec<u8>)> {
    let read = |name: Option<&str>| std::fs::read(shm_path(name.expect("named"))).unwrap();
    let q = Queue::<Vec<u8>>::builder().named(true).capacity(4096).build().unwrap();
    q.put(vec![1; 10]).unwrap();
    q.put(vec![2; 300]).unwrap();
    q.put(vec![3; 9000]).unwrap(); // through a side segment
    let j = JoinableQueue::<u64>::builder().named(true).build_joinable().unwrap();
    j.put(5).unwrap();
    let v = Value::<[u64; 3]>::new_named([1, 2, 3]).unwrap();
    let a = Array::<f64>::from_slice_named(&[0.5; 64]).unwrap();
    let l = Lock::new_named().unwrap();
    let m = Manager::builder().capacity(64 * 1024).start().unwrap();
    let d = m.dict_named::<u64, String>("d").unwrap();
    for i in 0..20 {
        d.insert(i, format!("value {i}")).unwrap();
    }
    m.list_named::<u64>("l").unwrap().extend(0..30).unwrap();
    vec![
        (Kind::Queue, read(q.name())),
        (Kind::Joinable, read(j.name())),
        (Kind::Value, read(v.name())),
        (Kind::Array, read(a.name())),
        (Kind::Lock, read(l.name())),
        (Kind::Manager, read(m.name())),
    ]
}

/// Applies 1 to 4 mutations to `bytes`.
fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..1 + rng.below(4) {
        let words = (bytes.len() / 8).max(1) as u64;
        let at = 8 * rng.below(words) as usize;
        let word = |b: &Vec<u8>, at: usize| b.get(at..at + 8).map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap()));
        let new = match rng.below(9) {
            0 => word(bytes, at) ^ (1 << rng.below(64)),
            1 => 0,
            2 => u64::MAX,
            3 => rng.below(4096),
            4 => 1 << rng.below(64),
            5 => word(bytes, 8 * rng.below(words) as usize),
            6 => rng.next(),
            7 => {
                bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
                continue;
            }
            _ => {
                bytes.extend(std::iter::repeat_n(0u8, rng.below(8192) as usize));
                continue;
            }
        };
        if let Some(w) = bytes.get_mut(at..at + 8) {
            w.copy_from_slice(&new.to_le_bytes());
        }
    }
}

/// Restores the 24 bytes of the lock at the start of the body (after the 64-byte
/// header), where `bytes` still has them.
fn keep_lock_word(bytes: &mut [u8], seed: &[u8]) {
    let end = (64 + 24).min(bytes.len());
    if end > 64 {
        bytes[64..end].copy_from_slice(&seed[64..end]);
    }
}

/// Opens `name` as `kind` and uses it; (whether it opened, calls that returned a value).
fn exercise(kind: Kind, name: &str) -> (bool, u32) {
    let mut ok = 0u32;
    let mut count = |r: bool| ok += u32::from(r);
    match kind {
        Kind::Queue => {
            let Ok(q) = Queue::<Vec<u8>>::open(name) else { return (false, 0) };
            for _ in 0..4 {
                count(q.get_timeout(WAIT).is_ok());
            }
            count(q.put_timeout(vec![9; 100], WAIT).is_ok());
            count(q.put_timeout(vec![9; 5000], WAIT).is_ok());
            count(q.get_timeout(WAIT).is_ok());
            let _ = (q.qsize(), q.empty(), q.full());
        }
        Kind::Joinable => {
            let Ok(q) = JoinableQueue::<u64>::open(name) else { return (false, 0) };
            count(q.get_timeout(WAIT).is_ok());
            count(q.task_done().is_ok());
            count(q.put_timeout(1, WAIT).is_ok());
            count(q.join_timeout(WAIT));
        }
        Kind::Value => {
            let Ok(v) = Value::<[u64; 3]>::open(name) else { return (false, 0) };
            count(v.lock_timeout(WAIT).map(|mut g| g[0] = 7).is_ok());
            count(v.lock_timeout(WAIT).map(|g| *g).is_ok());
        }
        Kind::Array => {
            let Ok(a) = Array::<f64>::open(name) else { return (false, 0) };
            count(a.lock_timeout(WAIT).map(|g| g.iter().sum::<f64>()).is_ok());
            count(a.lock_timeout(WAIT).map(|mut g| g[0] = 1.0).is_ok());
        }
        Kind::Lock => {
            let Ok(l) = Lock::open(name) else { return (false, 0) };
            count(l.acquire_timeout(WAIT).is_ok());
            let _ = l.locked();
        }
        Kind::Manager => {
            let Ok(m) = Manager::open(name) else { return (false, 0) };
            if let Ok(d) = m.dict_named::<u64, String>("d") {
                count(d.get(&3).is_ok());
                count(d.insert(50, "x".into()).is_ok());
                count(d.items().is_ok());
                count(d.remove(&4).is_ok());
            }
            if let Ok(l) = m.list_named::<u64>("l") {
                count(l.to_vec().is_ok());
                count(l.push(1).is_ok());
                count(l.pop().is_ok());
            }
        }
    }
    (true, ok)
}

#[test]
fn mutated_segments_give_errors_or_values_never_a_crash_or_a_hang() {
    let iters: u64 = std::env::var("SHMPROC_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(3_000);
    let seed = seed_from("SHMPROC_FUZZ_SEED", "fuzz");
    let seeds = corpus();
    let tally = RawArray::<u64>::zeroed(3).unwrap();
    let mut child = {
        let tally = tally.clone();
        spawn_child(move || {
            let mut rng = Rng(seed);
            let (mut opened, mut refused, mut values) = (0, 0, 0);
            for i in 0..iters {
                let (kind, seed_bytes) = &seeds[rng.below(seeds.len() as u64) as usize];
                let mut bytes = seed_bytes.clone();
                mutate(&mut bytes, &mut rng);
                if let Kind::Manager = kind {
                    // A manager's calls wait for its lock without a deadline (as
                    // documented): a lock word naming a live thread would hold them
                    // forever. Everything else in its segment is fair game.
                    keep_lock_word(&mut bytes, seed_bytes);
                }
                let name = format!("/fuzz-{}-{i}", std::process::id());
                let path = shm_path(&name);
                if std::fs::write(&path, &bytes).is_err() {
                    return 3;
                }
                let (was_opened, ok) = exercise(*kind, &name);
                let _ = std::fs::remove_file(&path);
                if was_opened {
                    opened += 1;
                } else {
                    refused += 1;
                }
                values += u64::from(ok);
                let _ = (tally.set(0, opened), tally.set(1, refused), tally.set(2, values));
            }
            0
        })
    };
    // A hang is an input that makes no progress for PATIENCE (a run may be long).
    let (mut done, mut last_change) = (0, std::time::Instant::now());
    let exit = loop {
        if let Some(exit) = child.wait_timeout(Duration::from_millis(200)).expect("waitpid") {
            break exit;
        }
        let now = tally.get(0).unwrap_or(0) + tally.get(1).unwrap_or(0);
        if now != done {
            (done, last_change) = (now, std::time::Instant::now());
        }
        if last_change.elapsed() > PATIENCE {
            let _ = child.signal(libc::SIGKILL);
            panic!("the fuzzer hung on input {done} (seed {seed})");
        }
    };
    let t = tally.to_vec();
    eprintln!(
        "fuzz: {iters} inputs, {} opened and used ({} calls returned a value), {} refused at open",
        t[0], t[2], t[1]
    );
    assert_eq!(exit, Exit::Code(0), "the fuzzer's child crashed (seed {seed}; the last input is /dev/shm/fuzz-*)");
    assert_eq!(t[0] + t[1], iters);
}

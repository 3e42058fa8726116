//! A hostile process scribbles on live shared objects while their users work.
//!
//! Each case runs in a child of the test (the *host*), which makes one object, notes
//! which shared mappings are new (that object's segments), and forks a *scribbler*
//! that writes adversarial words into those mappings at random places: random bits,
//! all ones, huge and small numbers, a word with one bit flipped, a position moved
//! back. Meanwhile the host's threads use the object with time-outs. Every call must
//! return (a value or an error) within its time-out plus slack; the host must not
//! crash or panic. Each case prints its trials and outcomes. (A manager's calls
//! have no time-out, so its lock word is spared: see `a_manager_under_scribbles`.)

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use shmproc::{
    Array, Connection, Dict, List, LockError, Manager, Pipe, Queue, RawArray, RecvTimeoutError, SendTimeoutError, Value,
};

/// How long each use of the object may wait.
const WAIT: Duration = Duration::from_millis(20);
/// How late beyond its time-out a call may return on a loaded machine.
const SLACK: Duration = Duration::from_millis(500);
const SCRIBBLES: u64 = 2_000;

/// The address ranges of this process's shmproc memfd mappings.
fn memfd_mappings() -> HashSet<(usize, usize)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:shmproc") && l.split_whitespace().nth(1).is_some_and(|p| p.starts_with("rw")))
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((usize::from_str_radix(a, 16).ok()?, usize::from_str_radix(b, 16).ok()?))
        })
        .collect()
}

/// The segment header, whose checks run at attach time only: not scribbled.
const HEADER: usize = 64;

/// Writes `SCRIBBLES` adversarial words into `targets` (skipping each mapping's
/// first `skip` bytes), a few microseconds apart.
fn scribble(targets: &[(usize, usize)], skip: usize, seed: u64) {
    let mut rng = Rng(seed);
    for _ in 0..SCRIBBLES {
        let (start, end) = targets[rng.below(targets.len() as u64) as usize];
        let words = (end - start - skip) / 8;
        let at = (start + skip + 8 * rng.below(words as u64) as usize) as *mut u64;
        // SAFETY: `at` is an aligned word inside a read-write mapping of this process
        // (from /proc/self/maps, inherited from the host); other processes use it
        // at the same time, which is the point: volatile, so that each write happens.
        unsafe {
            let old = at.read_volatile();
            let new = match rng.below(6) {
                0 => rng.next(),
                1 => u64::MAX,
                2 => rng.below(1 << 20),
                3 => old ^ (1 << rng.below(64)),
                4 => old.wrapping_sub(1 + rng.below(64)),
                _ => 0,
            };
            at.write_volatile(new);
        }
        std::thread::sleep(Duration::from_micros(20 + rng.below(200)));
    }
}

/// What the host's calls came to, kept in a small shared array for the parent.
#[derive(Default)]
struct Outcomes {
    ok: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    late: AtomicU64,
    slowest_us: AtomicU64,
}

impl Outcomes {
    /// Records one call that took `took` and came to `outcome` (0 ok, 1 error, 2 timeout).
    fn record(&self, took: Duration, outcome: u8) {
        match outcome {
            0 => &self.ok,
            1 => &self.errors,
            _ => &self.timeouts,
        }
        .fetch_add(1, Ordering::Relaxed);
        if took > WAIT + SLACK {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        self.slowest_us.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn to_array(&self, out: &RawArray<u64>) {
        for (i, v) in [&self.ok, &self.errors, &self.timeouts, &self.late, &self.slowest_us].iter().enumerate() {
            let _ = out.set(i, v.load(Ordering::Relaxed));
        }
    }
}

/// Runs `case` in a host child: `make` builds the object, `users` are threads that
/// use it until told to stop, recording outcomes; a forked scribbler writes into the
/// object's mappings meanwhile. Prints and checks the outcomes.
fn host<O: Clone + Send + 'static>(name: &str, make: impl FnOnce() -> O + 'static, users: Vec<fn(&O, &Outcomes)>) {
    host_skipping(name, HEADER, make, users);
}

/// [`host`], the scribbler sparing each mapping's first `skip` bytes.
fn host_skipping<O: Clone + Send + 'static>(
    name: &str,
    skip: usize,
    make: impl FnOnce() -> O + 'static,
    users: Vec<fn(&O, &Outcomes)>,
) {
    let report = RawArray::<u64>::zeroed(5).unwrap();
    let seed = seed_from("SHMPROC_SCRIBBLE_SEED", "scribble");
    let mut child = {
        let report = report.clone();
        spawn_child(move || {
            let before = memfd_mappings();
            let object = make();
            let targets: Vec<_> = memfd_mappings().difference(&before).copied().collect();
            if targets.is_empty() {
                return 3;
            }
            let outcomes = Arc::new(Outcomes::default());
            let stop = Arc::new(AtomicBool::new(false));
            let threads: Vec<_> = users
                .into_iter()
                .map(|user| {
                    let (object, outcomes, stop) = (object.clone(), Arc::clone(&outcomes), Arc::clone(&stop));
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            user(&object, &outcomes);
                        }
                    })
                })
                .collect();
            let mut scribbler = fork(move || {
                scribble(&targets, skip, seed);
                0
            })
            .unwrap();
            let done = scribbler.wait_timeout(PATIENCE * 6).ok().flatten();
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                if t.join().is_err() {
                    return 2; // a user panicked
                }
            }
            outcomes.to_array(&report);
            if done == Some(Exit::Code(0)) {
                0
            } else {
                4
            }
        })
    };
    let exit = child.wait_timeout(PATIENCE * 8).expect("waitpid").expect("the host hung");
    let r = report.to_vec();
    eprintln!(
        "scribble {name}: {SCRIBBLES} scribbles (seed {seed}), {} calls returned a value, {} an error, {} timed out, \
         {} late (slowest {} µs)",
        r[0], r[1], r[2], r[3], r[4]
    );
    assert_eq!(exit, Exit::Code(0), "scribble {name}: the host crashed, panicked or hung (seed {seed})");
    assert_eq!(r[3], 0, "scribble {name}: a call outlived its time-out by more than {SLACK:?}");
    assert!(r[0] + r[1] + r[2] > 0, "scribble {name}: nothing was tried");
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

fn send_outcome<T>(r: &Result<(), SendTimeoutError<T>>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(SendTimeoutError::Timeout(_)) => 2,
        Err(_) => 1,
    }
}

fn recv_outcome<T>(r: &Result<T, RecvTimeoutError>) -> u8 {
    match r {
        Ok(_) => 0,
        Err(RecvTimeoutError::Timeout) => 2,
        Err(_) => 1,
    }
}

fn lock_outcome<T, G>(r: Result<T, LockError<G>>) -> u8 {
    match r {
        Ok(_) => 0,
        Err(LockError::Timeout) => 2,
        Err(_) => 1,
    }
}

type Q = Queue<Vec<u8>>;
type P = Arc<(Connection<Vec<u8>>, Connection<Vec<u8>>)>;

fn queue_put_small(q: &Q, o: &Outcomes) {
    let (r, took) = timed(|| q.put_timeout(vec![5; 100], WAIT));
    o.record(took, send_outcome(&r));
}

fn queue_put_large(q: &Q, o: &Outcomes) {
    let (r, took) = timed(|| q.put_timeout(vec![6; 5000], WAIT));
    o.record(took, send_outcome(&r));
}

fn queue_get(q: &Q, o: &Outcomes) {
    let (r, took) = timed(|| q.get_timeout(WAIT));
    o.record(took, recv_outcome(&r));
}

fn pipe_send(p: &P, o: &Outcomes) {
    let (r, took) = timed(|| p.0.send_timeout(&vec![1; 300], WAIT));
    o.record(took, send_outcome(&r));
}

fn pipe_recv(p: &P, o: &Outcomes) {
    let (r, took) = timed(|| p.1.recv_timeout(WAIT));
    o.record(took, recv_outcome(&r));
}

fn value_increment(v: &Value<[u64; 4]>, o: &Outcomes) {
    let (r, took) = timed(|| v.lock_timeout(WAIT).map(|mut g| g[0] = g[0].wrapping_add(1)));
    o.record(took, lock_outcome(r));
}

fn array_sum(a: &Array<f64>, o: &Outcomes) {
    let (r, took) = timed(|| a.lock_timeout(WAIT).map(|g| g.iter().sum::<f64>()));
    o.record(took, lock_outcome(r));
}

fn array_store(a: &Array<f64>, o: &Outcomes) {
    let (r, took) = timed(|| a.lock_timeout(WAIT).map(|mut g| g[7] = 1.5));
    o.record(took, lock_outcome(r));
}

#[test]
fn a_queue_under_scribbles() {
    host::<Q>(
        "queue",
        || Queue::builder().capacity(8 << 10).build().unwrap(),
        vec![queue_put_small, queue_get, queue_put_large],
    );
}

#[test]
fn a_pipe_under_scribbles() {
    host::<P>("pipe", || Arc::new(Pipe::duplex().unwrap()), vec![pipe_send, pipe_recv]);
}

#[test]
fn a_value_and_an_array_under_scribbles() {
    host("value", || Value::<[u64; 4]>::new([0; 4]).unwrap(), vec![value_increment]);
    host("array", || Array::<f64>::zeroed(512).unwrap(), vec![array_sum, array_store]);
}

type M = Arc<(Manager, Dict<u64, Vec<u8>>, List<u64>)>;

fn manager_outcome<T, E>(r: &Result<T, E>) -> u8 {
    u8::from(r.is_err())
}

fn manager_dict(m: &M, o: &Outcomes) {
    let key = Instant::now().elapsed().subsec_nanos() as u64 % 64;
    let (r, took) = timed(|| m.1.insert(key, vec![7; (key as usize) * 3]));
    o.record(took, manager_outcome(&r));
    let (r, took) = timed(|| m.1.get(&key));
    o.record(took, manager_outcome(&r));
    let (r, took) = timed(|| m.1.items());
    o.record(took, manager_outcome(&r));
}

fn manager_list(m: &M, o: &Outcomes) {
    let (r, took) = timed(|| m.2.push(5));
    o.record(took, manager_outcome(&r));
    let (r, took) = timed(|| m.2.pop());
    o.record(took, manager_outcome(&r));
    let (r, took) = timed(|| m.2.to_vec());
    o.record(took, manager_outcome(&r));
}

#[test]
fn a_manager_under_scribbles() {
    // Its lock's three words (right after the header) are spared: manager calls have
    // no time-out, and a forged live owner there makes them wait (the documented
    // limit of every untimed lock). Everything else is fair game, the words every
    // transaction writes and the undo log included.
    host_skipping(
        "manager",
        HEADER + 24,
        || {
            let m = Manager::builder().capacity(64 << 10).anonymous().start().unwrap();
            let (d, l) = (m.dict().unwrap(), m.list().unwrap());
            Arc::new((m, d, l))
        },
        vec![manager_dict, manager_list],
    );
}

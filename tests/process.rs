//! `Process` under every start method, across real processes.

shmproc::init_before_main!();

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde::{Deserialize, Serialize};
use shmproc::{Event, Lock, Process, ProcessError, RawValue, StartMethod, Value};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

fn start(method: StartMethod, p: shmproc::ProcessBuilder) -> Process {
    p.start_method(method).start().unwrap_or_else(|e| panic!("{method:?}: {e}"))
}

fn returns(_: ()) {}

fn panics(_: ()) {
    panic!("deliberately");
}

fn sleeps(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[test]
fn exit_codes_for_return_panic_sigterm_and_sigkill() {
    for m in METHODS {
        let ok = start(m, Process::builder(returns, ()));
        let bad = start(m, Process::builder(panics, ()));
        let term = start(m, Process::builder(sleeps, 30));
        let kill = start(m, Process::builder(sleeps, 30));
        term.terminate().unwrap();
        kill.kill().unwrap();
        assert_eq!(finish(&ok), Some(0), "{m:?}");
        assert_eq!(finish(&bad), Some(1), "{m:?}");
        assert_eq!(finish(&term), Some(-libc::SIGTERM), "{m:?}");
        assert_eq!(finish(&kill), Some(-libc::SIGKILL), "{m:?}");
        assert!(!ok.is_alive());
    }
}

#[test]
fn join_timeout_on_a_sleeping_child() {
    for m in METHODS {
        let p = start(m, Process::builder(sleeps, 30));
        assert!(p.is_alive());
        assert_eq!(p.exitcode(), None);
        let t = Instant::now();
        assert!(!p.join_timeout(Duration::from_millis(100)).unwrap(), "{m:?}");
        assert!(t.elapsed() >= Duration::from_millis(100));
        p.kill().unwrap();
        assert_eq!(finish(&p), Some(-libc::SIGKILL));
    }
}

#[derive(Serialize, Deserialize)]
struct Counting {
    value: Value<u64>,
    lock: Lock,
    rounds: u64,
}

fn count_under_the_lock(c: Counting) {
    for _ in 0..c.rounds {
        let _g = c.lock.acquire().unwrap();
        *c.value.lock().unwrap() += 1;
    }
}

#[test]
fn a_value_and_a_lock_pass_as_arguments_under_every_method() {
    for m in METHODS {
        let value = Value::<u64>::new(0).unwrap();
        let lock = Lock::new().unwrap();
        let args = || Counting { value: value.clone(), lock: lock.clone(), rounds: 10_000 };
        let a = start(m, Process::builder(count_under_the_lock, args()));
        let b = start(m, Process::builder(count_under_the_lock, args()));
        assert_eq!(finish(&a), Some(0), "{m:?}");
        assert_eq!(finish(&b), Some(0), "{m:?}");
        assert_eq!(value.get().unwrap(), 20_000, "{m:?}");
    }
}

#[derive(Serialize, Deserialize)]
struct Everything {
    value: Value<i32>,
    shared_lock_value: Value<i32>,
    array: shmproc::Array<f64>,
    raw: shmproc::RawArray<u8>,
    rlock: shmproc::RLock,
    sem: shmproc::Semaphore,
    bounded: shmproc::BoundedSemaphore,
    cond: shmproc::Condition,
    event: Event,
    barrier: shmproc::Barrier,
}

fn touch_everything(e: Everything) {
    *e.value.lock().unwrap() += 1;
    *e.shared_lock_value.lock().unwrap() += 1; // its lock is `value`'s
    e.array.lock().unwrap()[0] = 2.5;
    e.raw.set(1, 9).unwrap();
    drop(e.rlock.acquire().unwrap());
    e.sem.release().unwrap();
    assert!(e.bounded.try_acquire());
    e.cond.notify_all();
    e.event.set();
    e.barrier.wait_timeout(PATIENCE).unwrap();
}

#[test]
fn every_shared_object_passes_under_every_method() {
    for m in METHODS {
        let value = Value::new(1).unwrap();
        let e = Everything {
            shared_lock_value: Value::with_lock(10, value.get_lock()).unwrap(),
            value: value.clone(),
            array: shmproc::Array::zeroed(2).unwrap(),
            raw: shmproc::RawArray::zeroed(2).unwrap(),
            rlock: shmproc::RLock::new().unwrap(),
            sem: shmproc::Semaphore::new(0).unwrap(),
            bounded: shmproc::BoundedSemaphore::new(1).unwrap(),
            cond: shmproc::Condition::new().unwrap(),
            event: Event::new().unwrap(),
            barrier: shmproc::Barrier::new(2).unwrap(),
        };
        let keep = (e.shared_lock_value.clone(), e.array.clone(), e.raw.clone(), e.sem.clone(), e.bounded.clone());
        let (event, barrier) = (e.event.clone(), e.barrier.clone());
        let p = start(m, Process::builder(touch_everything, e));
        assert!(barrier.wait_timeout(PATIENCE).is_ok(), "{m:?}");
        assert_eq!(finish(&p), Some(0), "{m:?}");
        assert_eq!(value.get().unwrap(), 2);
        assert_eq!(keep.0.get().unwrap(), 11);
        assert_eq!(keep.1.to_vec().unwrap(), vec![2.5, 0.0]);
        assert_eq!(keep.2.to_vec(), vec![0, 9]);
        assert_eq!(keep.3.get_value(), 1);
        assert_eq!(keep.4.get_value(), 0);
        assert!(event.is_set());
    }
}

fn report_name(out: RawValue<[u8; 32]>) {
    let me = shmproc::current_process();
    let parent = shmproc::parent_process().expect("a child has a parent");
    let text = format!("{}|{}", me.name, parent.name);
    let mut buf = [0u8; 32];
    buf[..text.len()].copy_from_slice(text.as_bytes());
    out.set(buf);
    assert_eq!(me.pid, std::process::id() as i32);
}

#[test]
fn names_current_and_parent_process_under_every_method() {
    for m in METHODS {
        let out = RawValue::new([0u8; 32]).unwrap();
        let p = start(m, Process::builder(report_name, out.clone()).name("worker"));
        assert_eq!(p.name(), "worker");
        assert_eq!(finish(&p), Some(0), "{m:?}");
        let text = String::from_utf8(out.get().iter().copied().take_while(|b| *b != 0).collect()).unwrap();
        assert_eq!(text, "worker|MainProcess", "{m:?}");
    }
    let mut unnamed = Process::new(returns, ());
    unnamed.start().unwrap();
    assert!(unnamed.name().starts_with("Process-"), "{}", unnamed.name());
    assert_eq!(finish(&unnamed), Some(0));
    assert!(shmproc::cpu_count() >= 1);
    assert_eq!(shmproc::current_process().name, "MainProcess");
    assert!(shmproc::parent_process().is_none());
}

#[test]
fn misuse_is_a_typed_error() {
    let mut p = Process::new(sleeps, 30);
    assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.terminate(), Err(ProcessError::NotStarted)));
    assert_eq!(p.exitcode(), None);
    p.start().unwrap();
    assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted)));
    assert!(matches!(p.close(), Err(ProcessError::StillRunning)));
    p.kill().unwrap();
    assert_eq!(finish(&p), Some(-libc::SIGKILL));
    p.close().unwrap();
    assert!(matches!(p.join(), Err(ProcessError::Closed)));
    assert!(matches!(p.start(), Err(ProcessError::Closed)));
}

struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this type refuses"))
    }
}

impl<'de> Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unserializable)
    }
}

fn takes_unserializable(_: Unserializable) {}

#[test]
fn arguments_that_fail_to_serialize_fail_in_the_parent() {
    for m in METHODS {
        let r = Process::builder(takes_unserializable, Unserializable).start_method(m).start();
        match r {
            Err(ProcessError::Arguments(why)) => assert!(why.contains("Unserializable"), "{why}"),
            other => panic!("{m:?}: expected an Arguments error, got {other:?}"),
        }
    }
}

fn say_hi(n: u32) {
    println!("child {n} says hi");
}

/// Several threads print (holding stdout's lock at random moments) and start
/// processes at once, with every method: no child may hang on a lock it inherited,
/// and no descriptor meant for one child (a spawn's error pipe) may keep another's
/// start waiting.
#[test]
fn starting_from_a_multi_threaded_parent_under_every_method() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let printer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut out = std::io::stdout().lock();
                use std::io::Write;
                let _ = writeln!(out, "{:?}", vec![1u8; 16]);
            }
        })
    };
    let starters: Vec<_> = METHODS
        .into_iter()
        .enumerate()
        .map(|(k, m)| {
            std::thread::spawn(move || {
                for n in 0..5 {
                    let p = Process::builder(say_hi, (k * 10 + n) as u32).start_method(m).start().unwrap();
                    assert!(quickly(|| p.join_timeout(PATIENCE).unwrap()) == Some(true), "{m:?}: a child hung");
                    assert_eq!(p.exitcode(), Some(0), "{m:?}");
                }
            })
        })
        .collect();
    for t in starters {
        t.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    printer.join().unwrap();
}

#[derive(Serialize, Deserialize)]
struct Middle {
    method: u8,
    grandchild_pid: RawValue<i32>,
}

fn grandchild(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

fn middle(m: Middle) {
    let method = METHODS[m.method as usize];
    let g = Process::builder(grandchild, ()).daemon(true).start_method(method).start().unwrap();
    m.grandchild_pid.set(g.pid().unwrap());
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_daemon_child_dies_when_its_parent_is_killed() {
    for (i, m) in METHODS.iter().enumerate() {
        let pid = RawValue::new(0i32).unwrap();
        let parent =
            start(StartMethod::Fork, Process::builder(middle, Middle { method: i as u8, grandchild_pid: pid.clone() }));
        let deadline = Instant::now() + PATIENCE;
        while pid.get() == 0 {
            assert!(Instant::now() < deadline, "{m:?}: the grandchild never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        let g = pid.get();
        assert!(alive(g));
        parent.kill().unwrap();
        assert_eq!(finish(&parent), Some(-libc::SIGKILL));
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(g) {
            assert!(Instant::now() < deadline, "{m:?}: daemon grandchild {g} outlived its parent");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn dropping_a_daemon_handle_kills_it_and_a_plain_one_is_reaped() {
    for m in METHODS {
        let p = start(m, Process::builder(sleeps, 60).daemon(true));
        let pid = p.pid().unwrap();
        drop(p);
        assert!(!alive(pid), "{m:?}: a dropped daemon must be gone");

        let p = start(m, Process::builder(sleeps, 0));
        let pid = p.pid().unwrap();
        drop(p); // neither killed nor left a zombie: the reaper collects it
        let deadline = Instant::now() + PATIENCE;
        while alive(pid) || (m != StartMethod::ForkServer && std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            assert!(Instant::now() < deadline, "{m:?}: dropped child {pid} was never reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Exits 0 if every descriptor above 2 is one of shmproc's segments (or the
/// directory being listed), 2 otherwise (naming the strays on stderr).
fn check_fds(_: RawValue<u8>) {
    let strays: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
            let ok = fd <= 2 || target.starts_with("/memfd:shmproc") || target.starts_with("/proc/");
            (!ok).then(|| format!("{fd} -> {target}"))
        })
        .collect();
    if !strays.is_empty() {
        eprintln!("stray descriptors: {strays:?}");
        std::process::exit(2);
    }
}

#[test]
fn a_spawned_child_inherits_only_what_it_was_given() {
    // A descriptor without close-on-exec, which a careless exec would pass on.
    let stray = nix::unistd::dup(std::io::stdin()).unwrap();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let given = RawValue::new(0u8).unwrap();
        let p = start(m, Process::builder(check_fds, given));
        assert_eq!(finish(&p), Some(0), "{m:?}: the child had descriptors it was not given");
    }
    drop(stray);
}

#[test]
fn active_children_lists_running_children_and_forgets_ended_ones() {
    let p = start(StartMethod::Fork, Process::builder(sleeps, 30).name("lister"));
    let pid = p.pid().unwrap();
    assert!(shmproc::active_children().iter().any(|c| c.pid == pid && c.name == "lister"));
    p.kill().unwrap();
    assert_eq!(finish(&p), Some(-libc::SIGKILL));
    assert!(shmproc::active_children().iter().all(|c| c.pid != pid));
}

/// Panics once told to (so that the parent can look before).
fn panics_when_told(told: Event) {
    assert!(told.wait_timeout(PATIENCE), "never told");
    panic!("deliberately");
}

#[test]
fn a_panicking_child_gives_its_parent_the_panic_message_and_location() {
    for method in METHODS {
        let told = Event::new().unwrap();
        let mut p = start(method, Process::builder(panics_when_told, told.clone()));
        assert_eq!(p.panic_message(), None, "{method:?}: nothing while it still runs");
        told.set();
        assert_eq!(finish(&p), Some(1), "{method:?}");
        assert_eq!(p.panic_message().as_deref(), Some("deliberately"), "{method:?}");
        assert!(p.panic_location().unwrap().starts_with("tests/process.rs:"), "{method:?}");
        let mut ok = start(method, Process::builder(returns, ()));
        assert_eq!(finish(&ok), Some(0));
        assert_eq!(ok.panic_message(), None, "{method:?}");
    }
}

/// The helper of the test below: a child that outlives `main` unless `main` waits.
fn write_after(args: (u64, String)) {
    std::thread::sleep(Duration::from_millis(args.0));
    std::fs::write(&args.1, b"done").unwrap();
}

#[test]
fn at_exit_helper() {
    let Ok(dir) = std::env::var("SHMPROC_AT_EXIT_DIR") else { return };
    let marker = format!("{dir}/non-daemon");
    let p = Process::builder(write_after, (300, marker)).start().unwrap();
    let d = Process::builder(sleeps, 30).daemon(true).start().unwrap();
    std::fs::write(format!("{dir}/daemon-pid"), d.pid().unwrap().to_string()).unwrap();
    // Both handles are forgotten: only the exit handling can deal with the children.
    std::mem::forget(p);
    std::mem::forget(d);
}

#[test]
fn when_main_returns_non_daemon_children_are_joined_and_daemons_terminated() {
    let dir = std::env::temp_dir().join(format!("shmproc-at-exit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "at_exit_helper", "--test-threads=1"])
        .env("SHMPROC_AT_EXIT_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = helper.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the helper overstayed");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(status.success());
    // The moment the helper process has exited, its non-daemon child has finished...
    assert_eq!(std::fs::read(dir.join("non-daemon")).ok().as_deref(), Some(&b"done"[..]));
    // ... and its daemon child was terminated, not left running for 30 s.
    let pid: i32 = std::fs::read_to_string(dir.join("daemon-pid")).unwrap().parse().unwrap();
    let deadline = Instant::now() + PROMPT;
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        assert!(Instant::now() < deadline, "the daemon child {pid} outlived the program");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records the start method this process sees, then adds `1 << level` to the value.
fn nested(args: (Value<u64>, u32, u32)) {
    let (v, level, method) = args;
    let methods = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];
    assert_eq!(shmproc::get_start_method(), methods[method as usize], "level {level}");
    *v.lock().unwrap() += 1 << level;
    if level < 2 {
        // A child of a spawned or fork-server child may use any start method too.
        for (m, method) in methods.iter().enumerate() {
            let p = Process::builder(nested, (v.clone(), level + 1, m as u32))
                .start_method(*method)
                .start()
                .unwrap_or_else(|e| panic!("level {level}, {method:?}: {e}"));
            assert_eq!(finish(&p), Some(0), "level {level}, {method:?}");
        }
    }
}

#[test]
fn children_of_any_start_method_start_children_of_any_start_method() {
    for (m, method) in METHODS.iter().enumerate() {
        let v = Value::<u64>::new(0).unwrap();
        let p = start(*method, Process::builder(nested, (v.clone(), 1, m as u32)));
        assert_eq!(finish(&p), Some(0), "{method:?}");
        // Level 1 adds 2, each of its three children (level 2) adds 4.
        assert_eq!(v.get().unwrap(), 2 + 3 * 4, "{method:?}");
    }
}

#[test]
fn join_without_a_descriptor_to_spare_still_reaps_the_child() {
    // In a child of the test, whose descriptor limit we may lower.
    let outer = spawn_child(|| {
        let p = Process::builder(write_after, (100, "/dev/null".to_string())).start().unwrap();
        let (taken, old) = exhaust_descriptors();
        let joined = p.join_timeout(PATIENCE);
        let code = p.exitcode();
        restore_descriptors(taken, old);
        match (joined, code) {
            (Ok(true), Some(0)) => 0,
            (Err(_), _) => 1,
            _ => 2,
        }
    });
    assert_eq!(join(outer), Exit::Code(0));
}

#[test]
fn fork_server_death_helper() {
    if std::env::var("SHMPROC_FORK_SERVER_DEATH").is_err() {
        return;
    }
    // Orphans of the fork server come to this process, which reaps them: nothing
    // is left as a zombie of an init that may not reap.
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let p = start(StartMethod::ForkServer, Process::builder(sleeps, 30));
    let child = p.pid().unwrap();
    let server = parent_of(child);
    assert_ne!(server, std::process::id() as i32);
    // SAFETY: kill and waitpid on our own child, the fork server.
    unsafe {
        libc::kill(server, libc::SIGKILL);
        libc::waitpid(server, std::ptr::null_mut(), 0);
    }
    assert!(p.is_alive(), "its child still runs after the server died");
    p.kill().unwrap();
    assert!(p.join_timeout(PATIENCE).unwrap(), "join did not see the end");
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(shmproc::EXITCODE_UNKNOWN));
    // SAFETY: reaping the orphan that came to us.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    // The next fork-server start starts a new server.
    let q = start(StartMethod::ForkServer, Process::builder(returns, ()));
    assert_eq!(finish(&q), Some(0));
}

#[test]
fn a_fork_server_killed_under_a_running_child_leaves_its_end_known_not_alive() {
    run_test_alone("fork_server_death_helper", ("SHMPROC_FORK_SERVER_DEATH", "1"));
}

fn report_self(q: shmproc::Queue<(bool, bool, i32, bool)>) {
    let me = shmproc::current_process();
    let parent = shmproc::parent_process().expect("a child has a parent");
    let parent_waits = !parent.join_timeout(Duration::from_millis(20));
    q.put((me.daemon, parent.is_alive(), parent.pid, parent_waits)).unwrap();
}

/// #13: `current_process().daemon`, and the parent as a handle with `is_alive` and
/// `join_timeout`, under every start method.
#[test]
fn a_child_knows_whether_it_is_a_daemon_and_sees_its_parent_alive() {
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        for daemon in [false, true] {
            let q = shmproc::Queue::new(0).unwrap();
            let p = Process::builder(report_self, q.clone()).start_method(method).daemon(daemon).start().unwrap();
            let got = q.get_timeout(PATIENCE).expect("the child's report");
            assert_eq!(got, (daemon, true, std::process::id() as i32, true), "{method:?} daemon={daemon}");
            assert_eq!(finish(&p), Some(0));
        }
    }
    assert!(!shmproc::current_process().daemon);
}

fn sleep_long(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

/// #13: `interrupt()` sends SIGINT.
#[test]
fn interrupt_ends_a_child_as_ctrl_c_would() {
    let p = Process::builder(sleep_long, ()).start_method(StartMethod::Fork).start().unwrap();
    p.interrupt().unwrap();
    assert_eq!(finish(&p), Some(-libc::SIGINT));
}

/// Regression: a forked child whose target panicked could wait forever in the
/// default panic hook, on std's backtrace lock, which a thread of the parent held
/// at the fork while it printed a panic of its own. The child now prints its panic
/// itself; here a parent thread panics (caught) all along while children are forked
/// and panic.
#[test]
fn a_forked_child_that_panics_while_a_parent_thread_prints_a_panic_ends() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noisy = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::panic::catch_unwind(|| panic!("a parent thread's own panic, printed"));
            }
        })
    };
    let mut hung = 0;
    for _ in 0..30 {
        let p = start(StartMethod::Fork, Process::builder(panics, ()));
        if !p.join_timeout(Duration::from_secs(3)).unwrap() {
            hung += 1;
            let _ = p.kill();
            let _ = p.join_timeout(PATIENCE);
        } else {
            assert_eq!(p.exitcode(), Some(1), "it ended as a panicked target does");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noisy.join().unwrap();
    assert_eq!(hung, 0, "forked children hung in their panic hook");
}

fn put_one(q: shmproc::Queue<u64>) {
    q.put(7).unwrap();
}

/// Regression: a forked child attaching a ring it was given took a process-wide
/// lock (the registry of rings the orphan sweep asks) that another thread of the
/// parent, creating a queue, may have held at the fork: the child waited forever (a
/// pipe test hung one run in about twenty-five). Here a parent thread creates queues
/// all along while children are forked with a queue to put into.
#[test]
fn a_forked_child_attaching_a_queue_while_a_parent_thread_makes_queues_runs() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let maker = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            // Many live rings: each new one walks the registry under its lock.
            let live: Vec<_> = (0..200).map(|_| shmproc::Queue::<u64>::new(4).unwrap()).collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drop(shmproc::Queue::<u64>::new(4).unwrap());
            }
            drop(live);
        })
    };
    let mut hung = 0;
    for _ in 0..500 {
        let q = shmproc::Queue::<u64>::new(4).unwrap();
        let p = start(StartMethod::Fork, Process::builder(put_one, q.clone()));
        if q.get_timeout(Duration::from_secs(3)).is_err() {
            hung += 1;
            let _ = p.kill();
        }
        let _ = p.join_timeout(PATIENCE);
        if hung > 0 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    maker.join().unwrap();
    assert_eq!(hung, 0, "forked children hung attaching their queue");
}

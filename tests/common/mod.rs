//! Helpers shared by the cross-process tests: forking with a deadline, and looking
//! at /dev/shm. Every wait here is bounded, so a broken feature fails a test instead
//! of hanging it.
#![allow(dead_code, unused_imports, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

pub use shmproc::testing::{fork, Child, Exit, PANICKED};

/// How long any test waits for anything that should be quick.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How soon a wake-up that must come does come, at the latest, on a loaded machine.
/// Waits are given [`PATIENCE`] and then checked against this, so that a lost
/// wake-up fails the test instead of passing slowly when its own time-out fires.
pub const PROMPT: Duration = Duration::from_secs(2);

/// Joins `p` with a deadline (failing the test if it overstays); its exit code.
pub fn finish(p: &shmproc::Process) -> Option<i32> {
    assert!(p.join_timeout(PATIENCE).unwrap(), "{} overstayed", p.name());
    p.exitcode()
}

/// Forks a child that runs `acquire` (taking some lock), says so, and is then
/// killed by SIGKILL while it holds what it took.
pub fn kill_while_holding(acquire: impl FnOnce() + 'static) {
    let holding = shmproc::Event::new().unwrap();
    let child = {
        let holding = holding.clone();
        spawn_child(move || {
            acquire();
            holding.set();
            std::thread::sleep(Duration::from_secs(30));
            0
        })
    };
    assert!(holding.wait_timeout(PATIENCE), "child never took the lock");
    child.signal(libc::SIGKILL).unwrap();
    assert_eq!(join(child), Exit::Signal(libc::SIGKILL));
}

/// Runs `f`; `None` if it took longer than [`PROMPT`].
pub fn quickly<T>(f: impl FnOnce() -> T) -> Option<T> {
    let start = std::time::Instant::now();
    let out = f();
    (start.elapsed() <= PROMPT).then_some(out)
}

/// Forks a child running `f`; its return value is its exit code.
pub fn spawn_child(f: impl FnOnce() -> i32 + 'static) -> Child {
    fork(f).expect("fork")
}

/// Waits (at most [`PATIENCE`]) for the child and returns how it ended.
pub fn join(mut child: Child) -> Exit {
    child.wait_timeout(PATIENCE).expect("waitpid").expect("child overstayed its deadline")
}

/// Asserts that the child exits with code 0.
pub fn join_ok(child: Child) {
    assert_eq!(join(child), Exit::Code(0));
}

/// The file behind a named segment.
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a writable rusage; getrusage fills it.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Silences panics on this thread (and in children it forks): a forked child's
/// stderr lock may have been held by another test thread at the moment of the
/// fork, and a test that panics on purpose need not print. Other threads' panics
/// still print: a hook that silenced the whole test binary hid the assertion
/// messages of tests running beside it (a failure then printed nothing).
pub fn quiet_panics() {
    thread_local! {
        static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    QUIET.with(|q| q.set(true));
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
}

/// Runs the test `name` of this test binary alone, in a fresh process (an unrelated
/// one: not forked from this), with `env` set; panics unless it ran and passed within
/// [`PATIENCE`]. The test should do nothing unless `env` is set.
pub fn run_test_alone(name: &str, env: (&str, &str)) {
    use std::io::Read;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the helper test {name} overstayed");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "the helper test {name} failed:\n{out}");
    assert!(out.contains("1 passed"), "the helper test {name} did not run");
}

/// Fills every free descriptor slot below the soft limit (set just above the
/// highest open descriptor), so that the next open fails with EMFILE; returns the
/// descriptors taken, and the old limit.
pub fn exhaust_descriptors() -> (Vec<i32>, libc::rlimit) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit/dup on plain values and our own descriptor 0.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut old);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let low = libc::rlimit { rlim_cur: highest + 2, rlim_max: old.rlim_max };
        libc::setrlimit(libc::RLIMIT_NOFILE, &low);
        let mut taken = Vec::new();
        loop {
            let fd = libc::dup(0);
            if fd < 0 {
                break;
            }
            taken.push(fd);
        }
        (taken, old)
    }
}

/// Closes what [`exhaust_descriptors`] took and restores the limit.
pub fn restore_descriptors(taken: Vec<i32>, old: libc::rlimit) {
    for fd in taken {
        // SAFETY: closing descriptors `exhaust_descriptors` opened.
        unsafe { libc::close(fd) };
    }
    // SAFETY: restoring the limit read by `exhaust_descriptors`.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
}

/// Bounds a whole test whose blocking calls have no time-out of their own (a
/// pool's `map`, `apply`, an imap iterator): if the test is still running after
/// `limit`, the watchdog says so and aborts the test binary, which then fails
/// instead of hanging. Dropped at the end of the test, it is disarmed.
pub fn watchdog(limit: Duration) -> Watchdog {
    let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let name = std::thread::current().name().unwrap_or("a test").to_owned();
    let flag = std::sync::Arc::clone(&armed);
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if !flag.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if flag.load(std::sync::atomic::Ordering::Acquire) {
            eprintln!("{name} overstayed {limit:?}: aborting the test binary");
            std::process::abort();
        }
    });
    Watchdog { armed }
}

/// Disarms its watchdog when dropped.
pub struct Watchdog {
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.armed.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// The shmproc files in /dev/shm whose generated name says `pid` created them
/// (`shmproc.<pid namespace>.<pid>.<start time>.<random>`, hex).
pub fn shm_files_of(pid: i32) -> std::collections::HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with("shmproc.") && n.split('.').nth(2).and_then(|p| i32::from_str_radix(p, 16).ok()) == Some(pid)
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), so that a failing run can be
/// repeated from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 for `n` 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A seed for a randomised test: `var`'s value if set (to replay a run), else the
/// clock's. Printed (past the harness's capture) with how to replay it.
pub fn seed_from(var: &str, what: &str) -> u64 {
    let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{what} seed: {seed} ({var}={seed} replays it)");
    seed
}

/// Whether `pid` runs (a zombie does not), from /proc.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// The parent pid of `pid`, from /proc (0 if it is gone).
pub fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

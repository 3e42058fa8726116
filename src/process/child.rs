//! What a child process does, whichever start method made it: become the named
//! child, run the target, and leave with Python's exit codes.
//!
//! Also the entry of a re-executed child: [`init`], the one line at the top of
//! `main` that the spawn and fork-server start methods need.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::entry::{BinaryCheck, Entry, EntryOffsets};
use super::registry::{self, ProcessInfo};
use crate::segment::transfer::Incoming;
use crate::sys;

/// The environment variable that tells a re-executed binary what it is for.
pub(crate) const ROLE_ENV: &str = "SHMPROC_ROLE";
pub(crate) const ROLE_CHILD: &str = "child";
pub(crate) const ROLE_FORKSERVER: &str = "forkserver";

/// The largest task a child accepts (arguments included).
pub(crate) const MAX_TASK: u64 = 1 << 30;

static INITIALIZED: AtomicBool = AtomicBool::new(false);
/// How many threads ran when [`init`] was called too late (0: it was not).
static CALLED_LATE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Who the child is to be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Setup {
    pub(crate) name: String,
    pub(crate) identity: Vec<u32>,
    pub(crate) parent: (String, i32),
    pub(crate) daemon: bool,
    /// The start method that made this child (`StartMethod::to_u8`).
    pub(crate) method: u8,
}

/// Everything a re-executed or fork-server child needs, apart from descriptors.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Task {
    pub(crate) binary: BinaryCheck,
    pub(crate) entry: EntryOffsets,
    pub(crate) setup: Setup,
    pub(crate) args: Vec<u8>,
    /// How many segment descriptors come with the task.
    pub(crate) segments: u32,
}

/// Runs `body` as the child described by `setup`, then leaves the process: exit
/// code 0 when the target returned, 1 when it panicked (the panic printed with the
/// process's name, as Python prints a traceback) or could not be started.
///
/// `watch_parent` is the pid of the process a daemon child must die with, when that
/// is still to be arranged (fork, fork server; a spawned child has it from `exec`).
pub(crate) fn run(setup: Setup, watch_parent: Option<i32>, body: impl FnOnce() -> Result<(), String>) -> ! {
    if let (true, Some(parent)) = (setup.daemon, watch_parent) {
        // Then check the parent did not die before the request took effect.
        if sys::die_with_parent().is_err() || sys::getppid() != parent {
            sys::exit_now(1);
        }
    }
    let parent = ProcessInfo::new(setup.parent.0.clone(), setup.parent.1, false);
    registry::become_child(setup.name.clone(), setup.identity.clone(), parent, setup.daemon);
    super::context::inherit_start_method(setup.method);
    // Already done before a fork (see there); a re-executed child is single-threaded.
    install_panic_hook();
    let name = setup.name;
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(why)) => {
            let _ = writeln!(std::io::stderr(), "Process {name} (pid {}): {why}", sys::getpid());
            1
        }
        Err(_) => 1,
    };
    let _ = std::io::stdout().flush();
    sys::exit_now(code)
}

/// Runs a task received as bytes with its segment descriptors; never returns.
pub(crate) fn run_task(blob: &[u8], fds: Vec<OwnedFd>, watch_parent: Option<i32>) -> ! {
    let task: Task = match postcard::from_bytes(blob) {
        Ok(t) => t,
        Err(e) => fail(&format!("cannot decode the task from the parent: {e}")),
    };
    match BinaryCheck::this_binary() {
        Ok(me) if me == task.binary => {}
        Ok(_) => fail("the parent runs a different executable; refusing its function offsets"),
        Err(e) => fail(&format!("cannot identify this executable: {e}")),
    }
    if fds.len() != task.segments as usize {
        fail("the task's descriptors did not all arrive");
    }
    // SAFETY: the offsets come from a parent running this same executable (checked
    // just above against the file's device, inode, size and mtime).
    let entry = unsafe { Entry::from_offsets(task.entry) };
    let args = task.args;
    run(task.setup, watch_parent, move || entry.run(&args, Incoming::Received(fds)))
}

/// Makes panics in a child name the process first, as Python's tracebacks do:
/// `Process worker (pid 4242):` followed by the usual panic message.
///
/// Installed once, by the parent before its first fork (so that a forked child
/// never needs the hook's lock, which another thread may have held at the fork), or
/// by a re-executed child at start.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|n| n.set(n.get().wrapping_add(1)));
            let quiet = CAPTURED.with(|c| match c.try_borrow_mut() {
                Ok(mut c) => c.as_mut().map(|slot| {
                    *slot = Some(Panic::from_hook(info));
                    QUIET.with(Cell::get)
                }),
                Err(_) => None,
            });
            if quiet == Some(true) {
                return;
            }
            let me = registry::current();
            if FORKED.load(Ordering::Relaxed) {
                // The default hook takes std's backtrace lock, which another thread
                // of the parent may have held at the fork (printing its own panic):
                // a forked worker whose task panicked then waited on it forever. Its
                // lines, written here without a lock (stderr's may be held too: a
                // test's fork does not hold it across), and without a backtrace.
                print_panic(me, info);
                return;
            }
            if let Some(line) = process_line(me) {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            previous(info);
        }));
    });
}

/// Set in a child forked from its parent (not re-executed): see [`install_panic_hook`].
static FORKED: AtomicBool = AtomicBool::new(false);

/// Called in a forked child first thing.
pub(crate) fn mark_forked() {
    FORKED.store(true, Ordering::Relaxed);
}

/// The line naming a child process before its panic, as Python's tracebacks do
/// (none in the main process).
fn process_line(me: &registry::Current) -> Option<String> {
    me.parent.is_some().then(|| format!("Process {} (pid {}):\n", me.name, sys::getpid()))
}

/// What the default panic hook prints (after the process's name), but its
/// backtrace, in one `write(2)`.
fn print_panic(me: &registry::Current, info: &std::panic::PanicHookInfo<'_>) {
    let panic = Panic::from_hook(info);
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let mut text = process_line(me).unwrap_or_default();
    text += &format!("thread '{name}' panicked at {}:\n{}\n", panic.location, panic.message);
    sys::write_stderr_raw(text.as_bytes());
}

/// A panic caught in a child, as it crosses back to the parent: its message and
/// where it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Panic {
    pub(crate) message: String,
    pub(crate) location: String,
}

impl Panic {
    fn from_hook(info: &std::panic::PanicHookInfo<'_>) -> Panic {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        let location =
            info.location().map_or_else(String::new, |l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
        Panic { message, location }
    }
}

thread_local! {
    /// `Some` while [`catch_panic`] runs on this thread: where the hook puts the panic.
    static CAPTURED: RefCell<Option<Option<Panic>>> = const { RefCell::new(None) };
    /// Whether the hook should also stay silent (pool tasks: the error goes to the caller).
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// Panics the hook has seen on this thread: tells [`PanicCapture::catch`] whether
    /// what `CAPTURED` holds is the panic it caught (cheaper than clearing it per task).
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f`, catching a panic as a [`Panic`] (message and location, recorded by the
/// panic hook). With `quiet`, the panic is not printed to stderr either.
pub(crate) fn catch_panic<R>(quiet: bool, f: impl FnOnce() -> R) -> Result<R, (Panic, Box<dyn std::any::Any + Send>)> {
    PanicCapture::begin(quiet).catch(f)
}

/// While it lives, panics on this thread are recorded for [`PanicCapture::catch`]
/// (set up once for a whole chunk of pool tasks, or a worker's life, not once per
/// task). Not `Send`: it is about this thread.
pub(crate) struct PanicCapture {
    outer: Option<Option<Panic>>,
    quiet: bool,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl PanicCapture {
    /// With `quiet`, a panic inside [`catch`](PanicCapture::catch) is not printed.
    pub(crate) fn begin(quiet: bool) -> PanicCapture {
        install_panic_hook();
        let outer = CAPTURED.with(|c| c.replace(Some(None)));
        PanicCapture { outer, quiet, _thread_bound: std::marker::PhantomData }
    }

    /// Runs `f`, catching a panic with what the hook recorded of it.
    pub(crate) fn catch<R>(&self, f: impl FnOnce() -> R) -> Result<R, (Panic, Box<dyn std::any::Any + Send>)> {
        let panics_before = PANICS.with(Cell::get);
        let was_quiet = QUIET.with(|q| q.replace(self.quiet));
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        QUIET.with(|q| q.set(was_quiet));
        out.map_err(|payload| {
            // What the hook recorded, if it ran for a panic during `f` (a panic
            // resumed with `resume_unwind` does not run it: then only the payload says
            // what happened, and an older record must not pass for it).
            let during = PANICS.with(Cell::get) != panics_before;
            let captured = CAPTURED.with(|c| c.replace(Some(None))).flatten().filter(|_| during);
            // A panic whose hook did not run (resume_unwind) still has a payload to read.
            let panic = captured.unwrap_or_else(|| Panic {
                message: payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "Box<dyn Any>".to_owned()),
                location: String::new(),
            });
            (panic, payload)
        })
    }
}

impl Drop for PanicCapture {
    fn drop(&mut self) {
        CAPTURED.with(|c| c.replace(self.outer.take()));
    }
}

fn fail(why: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "shmproc child (pid {}): {why}", sys::getpid());
    sys::exit_now(1)
}

/// The one line the `Spawn` and `ForkServer` start methods need at the top of
/// `main` (Python's `if __name__ == '__main__':`).
///
/// In the program itself it only records that it ran, which is how `start()` knows
/// re-executing this binary is safe; it must run while the program still has a
/// single thread (a call from a later point does not count, and spawn then reports
/// [`ProcessError::InitTooLate`](crate::ProcessError::InitTooLate); with no call at
/// all, [`ProcessError::NotInitialized`](crate::ProcessError::NotInitialized)). In a copy of the program re-executed as a child,
/// it runs the child's target and exits: the rest of `main` never runs there.
///
/// ```no_run
/// # #![allow(clippy::needless_doctest_main)]
/// fn main() {
///     shmproc::init(); // first thing: a re-executed child stops here
///     // ... the program ...
/// }
/// ```
///
/// For a test harness, whose `main` is not yours, put
/// [`init_before_main!()`](crate::init_before_main) at the top of the test file.
pub fn init() {
    let role = std::env::var(ROLE_ENV);
    if role.is_err() {
        // Only at the top of `main`: called later, when threads already run, a
        // re-executed child would run whatever came before it again.
        match sys::thread_count() {
            1 => INITIALIZED.store(true, Ordering::Release),
            threads => CALLED_LATE.store(threads, Ordering::Release),
        }
        return;
    }
    if sys::is_privileged() {
        fail("refusing SHMPROC_ROLE in a setuid or privileged program");
    }
    // Our own children get the variable from us again; nothing else should see it.
    std::env::remove_var(ROLE_ENV);
    // This process runs this binary, which reached `init` first thing in `main`
    // (that is how it got here): re-executing it again for a child of its own is as
    // safe as it was for its parent, so it may start spawn and fork-server children.
    INITIALIZED.store(true, Ordering::Release);
    match role.as_deref() {
        Ok(ROLE_CHILD) => spawned_child_main(),
        Ok(ROLE_FORKSERVER) => super::forkserver::server_main(),
        _ => fail("unknown SHMPROC_ROLE"),
    }
}

/// Whether [`init`] has run in this process.
pub(crate) fn initialized() -> bool {
    INITIALIZED.load(Ordering::Acquire)
}

/// Why spawn and forkserver cannot start here: [`init`] never called, or called
/// when threads already ran.
pub(crate) fn not_initialized() -> super::ProcessError {
    match CALLED_LATE.load(Ordering::Acquire) {
        0 => super::ProcessError::NotInitialized,
        threads => super::ProcessError::InitTooLate { threads },
    }
}

/// Runs [`shmproc::init`](crate::init) before `main`, from the program's
/// initialisers: for test harnesses and other programs whose `main` you do not write.
///
/// Put it once at the top of the file (in a test file, outside every `#[test]`); the
/// tests may then use every start method.
///
/// ```
/// shmproc::init_before_main!();
///
/// fn work(n: u32) {
///     assert_eq!(n, 7);
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A test's body: here with the default start method, fork.
/// let mut p = shmproc::Process::new(work, 7);
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok(())
/// # }
/// ```
#[macro_export]
macro_rules! init_before_main {
    () => {
        #[used]
        #[link_section = ".init_array"]
        static __SHMPROC_INIT_BEFORE_MAIN: extern "C" fn() = {
            extern "C" fn __shmproc_init_before_main() {
                $crate::init()
            }
            __shmproc_init_before_main
        };
    };
}

/// A re-executed child: the task is at descriptor 3, its segments at 4, 5, ...
fn spawned_child_main() -> ! {
    if !sys::fd_is_open(3) {
        fail("started as a child but no task descriptor was handed over");
    }
    // SAFETY: the parent placed the task memfd at 3 for us (spawn_exec), and nothing
    // else in this fresh process owns it.
    let blob_fd = unsafe { sys::adopt_fd(3) };
    let blob = match sys::read_all(blob_fd, MAX_TASK) {
        Ok(b) => b,
        Err(e) => fail(&format!("cannot read the task: {e}")),
    };
    let count = match postcard::from_bytes::<Task>(&blob) {
        Ok(t) => t.segments as i32,
        Err(e) => fail(&format!("cannot decode the task from the parent: {e}")),
    };
    let fds = (0..count)
        .map(|i| {
            if !sys::fd_is_open(4 + i) {
                fail("a segment descriptor is missing");
            }
            // SAFETY: the parent placed segment i at 4 + i; nobody else owns it.
            unsafe { sys::adopt_fd(4 + i) }
        })
        .collect();
    run_task(&blob, fds, None)
}

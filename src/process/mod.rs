//! Processes: Python's `multiprocessing.Process`, its start methods and contexts.
//!
//! A [`Process`] runs a target, a `fn(A)` item or non-capturing closure, with
//! arguments `A` that serialize with serde, in a child process made by one of three
//! start methods ([`StartMethod`]):
//!
//! - **Fork** (the default on Linux): `fork`, then the target. Fastest; the child is a
//!   copy of the parent, so in a multi-threaded parent it inherits locks that other
//!   threads held at that instant (a `println!` in flight, an allocator lock in some
//!   libraries), and may wait on them forever. Use `ForkServer` or `Spawn` there.
//! - **Spawn**: re-executes this binary, which reaches [`init`] at the top of `main`
//!   and runs the target instead of the rest of `main`. Safe from any parent.
//! - **ForkServer**: a single-threaded copy of this binary, started once by spawn,
//!   forks the children: as safe as spawn, nearly as fast as fork.
//!
//! The same code runs under every method: arguments always travel serialized, and
//! every shared object (`Value`, `Array`, the sync primitives) passes as a handle to
//! its segment, whose descriptor is handed over deliberately (inherited at a known
//! number across `exec`, or by `SCM_RIGHTS` to the fork server). A spawned child
//! inherits no other descriptor.
//!
//! ## What a child's end looks like
//! [`Process::exitcode`]: `None` while it runs, `Some(0)` when the target returned,
//! `Some(1)` when it panicked (the panic is printed to stderr with the process's
//! name, as Python prints a traceback), `Some(-signal)` when a signal killed it.
//!
//! ## Dropping a handle
//! Dropping the handle of a running **daemon** child kills and reaps it. Dropping the
//! handle of a running non-daemon child neither kills nor waits for it: it runs on,
//! and a background thread reaps it when it ends, so it never lingers as a zombie.

mod child;
mod context;
mod entry;
mod forkserver;
mod join;
mod registry;
mod status;

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use child::init;
pub(crate) use child::{catch_panic, install_panic_hook, mark_forked, Panic, PanicCapture};
pub use context::{
    context, get_all_start_methods, get_start_method, set_start_method, set_start_method_forced, Context, StartMethod,
};
pub(crate) use entry::{code_address, code_offset, conjure};
pub use join::{spawn, JoinError, JoinHandle};
pub use registry::ProcessInfo;

use child::{Setup, Task};
use entry::{BinaryCheck, Entry, PanicSlot};
use forkserver::ServerClient;
use registry::{ChildRecord, Watch};
use status::StatusSlot;

use crate::segment::transfer::{self, Incoming};
use crate::segment::Segment;
use crate::sync::wait::Wait;
use crate::sys::{self, ExecImage, Forked};

/// The [`Process::exitcode`] of a child that has ended but whose exit status is
/// unknowable: a fork-server child whose server was killed before it (Python would
/// hang; shmproc reports the end).
///
/// ```
/// use shmproc::{Process, EXITCODE_UNKNOWN};
///
/// fn work(_: ()) {}
/// let mut p = Process::new(work, ());
/// p.start()?;
/// p.join()?;
/// match p.exitcode() {
///     Some(0) => {} // the target returned
///     Some(EXITCODE_UNKNOWN) => eprintln!("it ended, but its fork server died first"),
///     Some(code) if code < 0 => eprintln!("killed by signal {}", -code),
///     other => panic!("unexpected end: {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const EXITCODE_UNKNOWN: i32 = i32::MIN;

/// Starting or managing a [`Process`] failed.
///
/// ```
/// use shmproc::{Process, ProcessError};
///
/// fn work(_: ()) {}
/// let mut p = Process::new(work, ());
/// assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
/// p.start()?;
/// match p.start() {
///     Err(ProcessError::AlreadyStarted) => {} // one handle, one child
///     other => panic!("{other:?}"),
/// }
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `start` on a process that was already started (Python's AssertionError).
    #[error("process already started")]
    AlreadyStarted,
    /// `join`, `terminate`, ... on a process that was never started.
    #[error("process not started")]
    NotStarted,
    /// Any use after `close` (Python's ValueError).
    #[error("process object is closed")]
    Closed,
    /// `close` on a process that still runs (Python's ValueError).
    #[error("cannot close a process that is still running")]
    StillRunning,
    /// The arguments could not be serialized; nothing was started.
    #[error("cannot serialize the process arguments: {0}")]
    Arguments(String),
    /// `Spawn` or `ForkServer` was asked for, but this program never called
    /// [`init`] (at the top of `main`) or [`init_before_main!`](crate::init_before_main):
    /// a re-executed copy would run `main` again instead of the target.
    #[error(
        "the spawn and forkserver start methods need `shmproc::init()` as the first line of main \
         (or `shmproc::init_before_main!()` in a test file)"
    )]
    NotInitialized,
    /// [`init`] was called, but not first in `main`: `threads` threads already
    /// ran, and a re-executed copy would run whatever came before it again.
    #[error(
        "`shmproc::init()` was called when {threads} threads already ran: it must be the first line of \
         main, before anything starts a thread (or use `shmproc::init_before_main!()`)"
    )]
    InitTooLate {
        /// How many threads the process had when `init` was called.
        threads: usize,
    },
    /// `Spawn` and `ForkServer` find the target again in a re-executed copy of the
    /// executable; this target lives in a shared library instead. Use `Fork`.
    #[error("the target function is not in the executable (a shared library?): use StartMethod::Fork")]
    TargetNotInExecutable,
    /// The arguments hold more shared objects than one start can hand over.
    #[error("{count} shared objects in the arguments; at most {max} can be handed to a child")]
    TooManySharedObjects {
        /// How many the arguments hold.
        count: usize,
        /// The most one start can pass.
        max: usize,
    },
    /// [`set_start_method`] after the default was already set (Python's
    /// RuntimeError "context has already been set").
    #[error("the start method was already set (to {current:?})")]
    StartMethodAlreadySet {
        /// The start method in force.
        current: StartMethod,
    },
    /// The operating system refused a step (`op` names it).
    #[error("{op} failed: {source}")]
    Os {
        /// What was being done: `fork`, `exec`, `waitpid`, `kill`, ...
        op: &'static str,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Taken for writing around a fork (start method `Fork`), and for reading while a
/// descriptor meant for one child only is open in this process (spawn's exec, the
/// fork server's requests): so a forked child never inherits another child's
/// descriptors.
static FORK_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> ProcessError {
    move |source| ProcessError::Os { op, source }
}

/// Serializes a process's arguments on demand (at `start`, inside the transfer scope).
trait EncodeArgs: Send {
    /// The arguments, after the slot where a panic of the child goes.
    fn encode(&self, slot: &PanicSlot) -> Result<Vec<u8>, String>;
}

impl<A: Serialize + Send> EncodeArgs for A {
    fn encode(&self, slot: &PanicSlot) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(&(slot, self)).map_err(crate::segment::transfer::encode_failure::<A>)
    }
}

/// A child process running a target function (Python's `multiprocessing.Process`).
///
/// ```
/// use shmproc::{Process, Value};
///
/// fn add_ten(v: Value<u64>) {
///     *v.lock().unwrap() += 10;
/// }
///
/// let v = Value::new(1u64)?;
/// let mut p = Process::new(add_ten, v.clone());
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(v.get()?, 11);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Process {
    entry: Entry,
    args: Box<dyn EncodeArgs>,
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    state: State,
    panic: PanicState,
}

/// What the parent knows of a child's panic.
enum PanicState {
    NotStarted,
    /// Not read yet: the child may still write it.
    Pending(PanicSlot),
    /// Read once the child ended (`None`: it did not panic).
    Known(Option<Panic>),
}

enum State {
    New,
    Started(Arc<ChildRecord>),
    Closed,
}

/// Configures a [`Process`] before it starts: `name`, `daemon`, start method.
///
/// ```
/// use shmproc::{Process, StartMethod};
///
/// fn work(_: ()) {
///     assert_eq!(shmproc::current_process().name, "cruncher");
/// }
/// let mut p = Process::builder(work, ()).name("cruncher").daemon(true).start_method(StartMethod::Fork).build();
/// assert!(p.is_daemon());
/// p.start()?; // `.start()` on the builder does both steps
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `start` or `build`"]
pub struct ProcessBuilder {
    process: Process,
}

impl Process {
    /// A process that will run `target(args)`; start it with [`start`](Process::start).
    pub fn new<A>(target: fn(A), args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        Process {
            entry: Entry::new(target),
            args: Box::new(args),
            name: None,
            daemon: false,
            method: None,
            state: State::New,
            panic: PanicState::NotStarted,
        }
    }

    /// A builder for a process with a name, daemon flag or start method of its own.
    ///
    /// ```
    /// fn hello(who: String) {
    ///     assert_eq!(shmproc::current_process().name, "worker");
    ///     println!("hello, {who}");
    /// }
    /// let mut p = shmproc::Process::builder(hello, "world".to_string()).name("worker").start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder<A>(target: fn(A), args: A) -> ProcessBuilder
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        ProcessBuilder { process: Process::new(target, args) }
    }

    /// Starts the child (Python's `start()`).
    pub fn start(&mut self) -> Result<(), ProcessError> {
        match self.state {
            State::New => {}
            State::Started(_) => return Err(ProcessError::AlreadyStarted),
            State::Closed => return Err(ProcessError::Closed),
        }
        let method = self.method.unwrap_or_else(get_start_method);
        if method != StartMethod::Fork && !child::initialized() {
            return Err(child::not_initialized());
        }
        let slot = PanicSlot::new().map_err(|e| ProcessError::Os {
            op: "creating the panic slot",
            source: std::io::Error::other(e.to_string()),
        })?;
        let (args, segments, handovers) = transfer::collecting(|| self.args.encode(&slot));
        let args = args.map_err(ProcessError::Arguments)?;
        if segments.len() > sys::MAX_FDS_PER_MESSAGE - 2 {
            return Err(ProcessError::TooManySharedObjects {
                count: segments.len(),
                max: sys::MAX_FDS_PER_MESSAGE - 2,
            });
        }
        let me = registry::current();
        let (identity, default_name) = me.next_child();
        let name = self.name.clone().unwrap_or(default_name);
        let setup = Setup {
            name: name.clone(),
            identity,
            parent: (me.name.clone(), sys::getpid()),
            daemon: self.daemon,
            method: method.to_u8(),
        };
        let record = match method {
            StartMethod::Fork => self.fork(setup, args, segments)?,
            StartMethod::Spawn => spawn_exec(self.entry, setup, args, &segments)?,
            StartMethod::ForkServer => via_fork_server(self.entry, setup, args, &segments)?,
        };
        // The child exists: what was handed to it is its own from now on (a pipe
        // end it never got to claim is still known to be its: its death shows).
        for handover in handovers {
            handover(record.pid);
        }
        let record = Arc::new(record);
        me.register(Arc::clone(&record));
        self.state = State::Started(record);
        self.panic = PanicState::Pending(slot);
        Ok(())
    }

    fn fork(&self, setup: Setup, args: Vec<u8>, segments: Vec<Arc<Segment>>) -> Result<ChildRecord, ProcessError> {
        child::install_panic_hook();
        // No descriptor another thread has in flight (a spawn's error pipe, a fork
        // server's socket) may leak into this child: wait for those to settle.
        let gate = FORK_GATE.write().unwrap_or_else(|p| p.into_inner());
        // Hold stdout and stderr across the fork: the child's copies of their locks are
        // then held by its own (re-entrant) thread, never by a thread that does not
        // exist there, so printing in the child cannot hang. Flush first, or the
        // child's copy of a half-full buffer is printed twice.
        let mut out = std::io::stdout().lock();
        let err = std::io::stderr().lock();
        let _ = out.flush();
        // Likewise the registry of rings, which the child takes as it attaches the
        // rings it is given.
        let rings = crate::channel::hold_ring_registry();
        let name = setup.name.clone();
        let parent = setup.parent.1;
        let entry = self.entry;
        // SAFETY: the child runs the target and leaves with `_exit`; the hazards of
        // forking a multi-threaded parent are documented on `StartMethod::Fork`.
        let forked = unsafe { sys::fork() };
        match forked.map_err(os("fork"))? {
            Forked::Child => {
                child::mark_forked();
                // This thread holds them in the child's copy: let them go, or a thread
                // the target starts could never print.
                drop((out, err, rings, gate));
                child::run(setup, Some(parent), move || entry.run(&args, Incoming::Inherited(segments)))
            }
            Forked::Parent(pid) => {
                drop((out, err, rings, gate));
                Ok(ChildRecord::new(pid, name, self.daemon, Watch::Reaped))
            }
        }
    }

    fn record(&self) -> Result<&Arc<ChildRecord>, ProcessError> {
        match &self.state {
            State::New => Err(ProcessError::NotStarted),
            State::Started(r) => Ok(r),
            State::Closed => Err(ProcessError::Closed),
        }
    }

    /// A descriptor that becomes readable when the child ends (Python's
    /// `sentinel`): for [`connection::wait`](crate::connection::wait), or for your own
    /// `poll`/`epoll` loop through `AsFd`. A pidfd, or, for a child that has ended
    /// already, a descriptor that is readable at once.
    ///
    /// ```
    /// use std::os::fd::AsFd;
    /// fn work(_: ()) {}
    /// let mut p = shmproc::Process::new(work, ());
    /// p.start()?;
    /// let sentinel = p.sentinel()?;
    /// let _fd = sentinel.as_fd();
    /// assert_eq!(shmproc::connection::wait(&[&sentinel], Some(std::time::Duration::from_secs(10))), [0]);
    /// p.join()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sentinel(&self) -> Result<Sentinel, ProcessError> {
        let record = Arc::clone(self.record()?);
        let fd = match sys::pidfd_open(record.pid) {
            Ok(fd) if record.poll().is_none() => fd,
            // Ended (and perhaps reaped: then its pid may be another process's now).
            _ => sys::readable_fd().map_err(os("eventfd"))?,
        };
        Ok(Sentinel { record, fd })
    }

    /// Something to wait on for the child's end without borrowing this `Process`
    /// (a pool's result thread waits on several, outside its lock).
    pub(crate) fn end_watch(&self) -> Option<EndWatch> {
        self.record().ok().map(|r| EndWatch(Arc::clone(r)))
    }

    /// Waits for the child to end (Python's `join()`).
    pub fn join(&self) -> Result<(), ProcessError> {
        self.join_with(Wait::Forever).map(drop)
    }

    /// Waits at most `timeout`; `true` if the child has ended.
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, ProcessError> {
        self.join_with(Wait::timeout(timeout))
    }

    /// Waits until `deadline` at the latest; `true` if the child has ended.
    pub fn join_deadline(&self, deadline: Instant) -> Result<bool, ProcessError> {
        self.join_with(Wait::Until(deadline))
    }

    fn join_with(&self, wait: Wait) -> Result<bool, ProcessError> {
        Ok(self.record()?.wait(wait).map_err(os("waitpid"))?.is_some())
    }

    /// Whether the child has started and not yet ended.
    pub fn is_alive(&self) -> bool {
        self.record().is_ok_and(|r| r.poll().is_none())
    }

    /// The child's process id, once started.
    pub fn pid(&self) -> Option<i32> {
        self.record().ok().map(|r| r.pid)
    }

    /// `None` while running (or not started), else the exit code: 0 on return, 1 on
    /// panic, `-signal` when killed.
    pub fn exitcode(&self) -> Option<i32> {
        self.record().ok().and_then(|r| r.poll())
    }

    /// The process's name: the one given, or `Process-N` (given at start).
    pub fn name(&self) -> &str {
        match (&self.state, &self.name) {
            (_, Some(n)) => n,
            (State::Started(r), None) => &r.name,
            _ => "",
        }
    }

    /// The message of the panic that ended the child, once it has ended (Python's
    /// traceback text, in short): `None` while it runs or if it did not panic.
    ///
    /// ```
    /// fn fails(x: u32) {
    ///     panic!("no {x} today");
    /// }
    /// let mut p = shmproc::Process::new(fails, 7);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(1));
    /// assert_eq!(p.panic_message().as_deref(), Some("no 7 today"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn panic_message(&mut self) -> Option<String> {
        self.panic().map(|p| p.message.clone())
    }

    /// Where the child panicked (`file:line:column`), once it has ended.
    pub fn panic_location(&mut self) -> Option<String> {
        self.panic().map(|p| p.location.clone())
    }

    fn panic(&mut self) -> Option<&Panic> {
        if let PanicState::Pending(slot) = &self.panic {
            self.exitcode()?;
            self.panic = PanicState::Known(slot.take());
        }
        match &self.panic {
            PanicState::Known(p) => p.as_ref(),
            _ => None,
        }
    }

    /// Whether the child dies with its parent.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Sends SIGTERM (Python's `terminate()`). A child that already ended is left alone.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.record()?.signal(libc::SIGTERM).map_err(os("kill"))
    }

    /// Sends SIGINT (Python's `interrupt()`, 3.14): a child that does not handle it
    /// ends as if by Ctrl-C.
    pub fn interrupt(&self) -> Result<(), ProcessError> {
        self.record()?.signal(libc::SIGINT).map_err(os("kill"))
    }

    /// Sends SIGKILL (Python's `kill()`).
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.record()?.signal(libc::SIGKILL).map_err(os("kill"))
    }

    /// Releases the handle's resources (Python's `close()`); later calls fail with
    /// [`ProcessError::Closed`]. Fails with `StillRunning` while the child runs.
    pub fn close(&mut self) -> Result<(), ProcessError> {
        if let State::Started(r) = &self.state {
            if r.poll().is_none() {
                return Err(ProcessError::StillRunning);
            }
        }
        self.state = State::Closed;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let State::Started(record) = std::mem::replace(&mut self.state, State::Closed) else { return };
        if record.poll().is_none() {
            if self.daemon {
                let _ = record.signal(libc::SIGKILL);
                let _ = record.wait(Wait::timeout(Duration::from_secs(5)));
            } else if record.is_ours() {
                let record = Arc::clone(&record);
                // Reaped when it ends, so that it never lingers as a zombie.
                let _ = std::thread::Builder::new().name("shmproc-reaper".into()).spawn(move || {
                    let _ = record.wait(Wait::Forever);
                });
            }
        }
        drop(record);
        // The registry's copy of an ended child holds its status slot's descriptor:
        // let it go now rather than at the next start.
        registry::current().forget_ended();
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name())
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("exitcode", &self.exitcode())
            .finish_non_exhaustive()
    }
}

impl ProcessBuilder {
    /// The process's name (default `Process-N`), seen by the child in
    /// [`current_process`](crate::current_process).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.process.name = Some(name.into());
        self
    }

    /// Whether the child dies with its parent (default `false`).
    ///
    /// A daemon child gets `PR_SET_PDEATHSIG`: Linux kills it when the *thread* that
    /// started it ends, so start daemons from a thread that lives as long as the
    /// process (`main`, usually). Dropping a daemon's handle also kills it.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.process.daemon = daemon;
        self
    }

    /// The start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.process.method = Some(method);
        self
    }

    /// The configured process, not yet started.
    pub fn build(self) -> Process {
        self.process
    }

    /// Starts the configured process and returns it.
    pub fn start(self) -> Result<Process, ProcessError> {
        let mut p = self.process;
        p.start()?;
        Ok(p)
    }
}

impl fmt::Debug for ProcessBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessBuilder").field("process", &self.process).finish()
    }
}

/// The task a re-executed or fork-server child runs, in a sealed memfd.
fn task_memfd(
    entry: Entry,
    setup: Setup,
    args: Vec<u8>,
    segments: usize,
) -> Result<std::os::fd::OwnedFd, ProcessError> {
    let task = Task {
        binary: BinaryCheck::this_binary().map_err(os("reading /proc/self/exe"))?,
        entry: entry.offsets().ok_or(ProcessError::TargetNotInExecutable)?,
        setup,
        args,
        segments: segments as u32,
    };
    let bytes = postcard::to_stdvec(&task).map_err(|e| ProcessError::Arguments(e.to_string()))?;
    sys::memfd_with(&bytes).map_err(os("memfd_create"))
}

fn spawn_exec(
    entry: Entry,
    setup: Setup,
    args: Vec<u8>,
    segments: &[Arc<Segment>],
) -> Result<ChildRecord, ProcessError> {
    use std::os::fd::AsFd;
    let name = setup.name.clone();
    let daemon = setup.daemon;
    let task = task_memfd(entry, setup, args, segments.len())?;
    let mut fds = vec![task.as_fd()];
    fds.extend(segments.iter().map(|s| s.fd().as_fd()));
    let image = ExecImage::this_program(&[(child::ROLE_ENV, child::ROLE_CHILD.to_owned())]).map_err(os("exec"))?;
    let _gate = FORK_GATE.read().unwrap_or_else(|p| p.into_inner());
    let pid = sys::spawn_exec(&image, &fds, daemon).map_err(os("fork and exec"))?;
    Ok(ChildRecord::new(pid, name, daemon, Watch::Reaped))
}

fn via_fork_server(
    entry: Entry,
    setup: Setup,
    args: Vec<u8>,
    segments: &[Arc<Segment>],
) -> Result<ChildRecord, ProcessError> {
    let name = setup.name.clone();
    let daemon = setup.daemon;
    let task = task_memfd(entry, setup, args, segments.len())?;
    let me = registry::current();
    let mut server = me.forkserver.lock().unwrap_or_else(|p| p.into_inner());
    let _gate = FORK_GATE.read().unwrap_or_else(|p| p.into_inner());
    // One retry: a server that died since the last request is replaced.
    for attempt in 0..2 {
        if server.as_ref().is_none_or(|s| !s.alive()) {
            *server = Some(ServerClient::start().map_err(os("starting the fork server"))?);
        }
        let Some(client) = server.as_ref() else { continue };
        let slot = StatusSlot::new(client.identity()).map_err(|e| ProcessError::Os {
            op: "creating a status slot",
            source: std::io::Error::other(e.to_string()),
        })?;
        match client.request(&task, &slot, segments) {
            Ok(pid) => return Ok(ChildRecord::new(pid, name, daemon, Watch::Slot(slot, sys::ProcessId::of(pid)))),
            // Only a request that never reached the server is retried: one that did
            // may have started the child already.
            Err(forkserver::RequestError::NotSent(_)) if attempt == 0 => *server = None,
            Err(e) => return Err(os("fork server request")(e.into())),
        }
    }
    Err(os("fork server request")(std::io::Error::other("the fork server keeps dying")))
}

/// This process, as Python's `current_process()` describes it.
///
/// ```
/// let me = shmproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id() as i32);
///
/// fn child(_: ()) {
///     let me = shmproc::current_process();
///     assert!(me.name.starts_with("Process-"));
///     assert_eq!(me.pid, std::process::id() as i32);
/// }
/// let mut p = shmproc::Process::new(child, ());
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0)); // 1 if an assertion in the child failed
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn current_process() -> ProcessInfo {
    registry::current().info()
}

/// The process that started this one, or `None` in the main process.
///
/// ```
/// assert!(shmproc::parent_process().is_none());
///
/// fn child(parent_pid: i32) {
///     let parent = shmproc::parent_process().expect("a child has a parent");
///     assert_eq!((parent.name.as_str(), parent.pid), ("MainProcess", parent_pid));
///     // A worker can stop once its parent is gone.
///     assert!(parent.is_alive());
/// }
/// let mut p = shmproc::Process::new(child, std::process::id() as i32);
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    registry::current().parent.clone()
}

/// The children this process started that are still running (reaping those that
/// have ended, as Python's `active_children()` does).
///
/// ```
/// use shmproc::{Event, Process};
///
/// fn wait_for(go: Event) {
///     go.wait();
/// }
/// let go = Event::new()?;
/// let p = Process::builder(wait_for, go.clone()).name("waiter").start()?;
/// // It waits for `go`, so it is surely still running here.
/// let names: Vec<String> = shmproc::active_children().into_iter().map(|c| c.name).collect();
/// assert_eq!(names, ["waiter"]);
/// go.set();
/// p.join()?;
/// assert!(shmproc::active_children().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    registry::current().active_children()
}

/// The number of CPUs online (Python's `cpu_count()`).
///
/// ```
/// let cpus = shmproc::cpu_count();
/// assert!(cpus >= 1);
/// // A worker per CPU is the default size of a pool; capped here to keep the example light.
/// let pool = shmproc::Pool::new(cpus.min(4))?;
/// assert_eq!(pool.processes(), cpus.min(4));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn cpu_count() -> usize {
    sys::cpu_count()
}

/// A child process's end, to wait on (see [`Process::sentinel`]).
///
/// ```
/// use shmproc::{connection, Event, Process};
/// use std::time::Duration;
///
/// fn quick(_: Event) {}
/// fn held(go: Event) {
///     go.wait();
/// }
/// let go = Event::new()?;
/// let mut a = Process::new(quick, go.clone());
/// let mut b = Process::new(held, go.clone());
/// a.start()?;
/// b.start()?;
/// let (end_a, end_b) = (a.sentinel()?, b.sentinel()?);
/// // Only `a` can end before `go` is set.
/// assert_eq!(connection::wait(&[&end_a, &end_b], Some(Duration::from_secs(10))), [0]);
/// go.set();
/// b.join()?;
/// a.join()?;
/// assert!(end_a.ended() && end_b.ended());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sentinel {
    record: Arc<ChildRecord>,
    fd: std::os::fd::OwnedFd,
}

impl Sentinel {
    /// Whether the child has ended (reaping it if it is this process's own).
    pub fn ended(&self) -> bool {
        self.record.poll().is_some()
    }
}

impl std::os::fd::AsFd for Sentinel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinel").field("pid", &self.record.pid).finish()
    }
}

/// A started child's end, to wait for (see [`Process::end_watch`]).
pub(crate) struct EndWatch(Arc<ChildRecord>);

impl EndWatch {
    /// Waits until `deadline` at the latest; whether the child has ended.
    pub(crate) fn wait_until(&self, deadline: Instant) -> bool {
        matches!(self.0.wait(Wait::Until(deadline)), Ok(Some(_)))
    }
}

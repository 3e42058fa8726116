//! Start methods and contexts (Python's `get_context` / `set_start_method`).

use std::sync::atomic::{AtomicU8, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Process, ProcessBuilder, ProcessError};

/// How a child process is made. See the [`process`](crate::Process) docs.
///
/// ```
/// use shmproc::{get_start_method, Process, StartMethod};
///
/// fn work(_: ()) {}
/// // Fork unless the program chose another; Spawn and ForkServer need
/// // `shmproc::init()` as the first line of `main`.
/// assert_eq!(get_start_method(), StartMethod::Fork);
/// let p = Process::builder(work, ()).start_method(StartMethod::Fork).start()?;
/// p.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// `fork()`: fastest. The default on Linux, as in Python before 3.14.
    ///
    /// The child is a copy of the parent at the instant of the fork. In a
    /// multi-threaded parent, a lock another thread held at that instant stays held
    /// in the child forever (stdout's, an allocator's in some libraries), so the child
    /// must not need them: prefer `ForkServer` or `Spawn` there.
    Fork,
    /// Re-executes this binary, which must call [`init`](crate::init) first thing in
    /// `main`. Safe from any parent; slowest.
    Spawn,
    /// Asks a single-threaded fork server (started once, by spawn) to fork the child.
    /// Safe from any parent and nearly as fast as fork; needs [`init`](crate::init)
    /// like `Spawn`.
    ForkServer,
}

impl StartMethod {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            StartMethod::Fork => 1,
            StartMethod::Spawn => 2,
            StartMethod::ForkServer => 3,
        }
    }

    fn from_u8(v: u8) -> Option<StartMethod> {
        [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer].into_iter().find(|m| m.to_u8() == v)
    }
}

/// 0 while unset: `Fork` then.
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// In a child: the start method it was started with becomes its own default (as
/// in Python, where a child's `get_start_method()` is its parent's choice for it).
pub(crate) fn inherit_start_method(method: u8) {
    if StartMethod::from_u8(method).is_some() {
        DEFAULT.store(method, Ordering::Release);
    }
}

/// The start method used when none is given (in a child: the one that started it).
///
/// ```
/// use shmproc::{get_start_method, Process, StartMethod};
///
/// assert_eq!(get_start_method(), StartMethod::Fork); // until `set_start_method`
/// fn child(_: ()) {
///     assert_eq!(shmproc::get_start_method(), StartMethod::Fork);
/// }
/// let p = Process::builder(child, ()).start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn get_start_method() -> StartMethod {
    StartMethod::from_u8(DEFAULT.load(Ordering::Acquire)).unwrap_or(StartMethod::Fork)
}

/// Sets the default start method, once (Python's `set_start_method`): setting it
/// again is [`ProcessError::StartMethodAlreadySet`], naming the method in force.
///
/// ```
/// use shmproc::{get_start_method, set_start_method, ProcessError, StartMethod};
/// set_start_method(StartMethod::Spawn)?;
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// assert!(matches!(
///     set_start_method(StartMethod::Fork),
///     Err(ProcessError::StartMethodAlreadySet { current: StartMethod::Spawn })
/// ));
/// # Ok::<(), ProcessError>(())
/// ```
pub fn set_start_method(method: StartMethod) -> Result<(), ProcessError> {
    DEFAULT.compare_exchange(0, method.to_u8(), Ordering::AcqRel, Ordering::Acquire).map(drop).map_err(|v| {
        ProcessError::StartMethodAlreadySet { current: StartMethod::from_u8(v).unwrap_or(StartMethod::Fork) }
    })
}

/// Sets the default start method even if one was set already (Python's
/// `set_start_method(m, force=True)`). Processes already started keep theirs.
///
/// ```
/// use shmproc::{get_start_method, set_start_method_forced, StartMethod};
/// set_start_method_forced(StartMethod::ForkServer);
/// set_start_method_forced(StartMethod::Fork);
/// assert_eq!(get_start_method(), StartMethod::Fork);
/// ```
pub fn set_start_method_forced(method: StartMethod) {
    DEFAULT.store(method.to_u8(), Ordering::Release);
}

/// Every start method this platform has, the default (see [`get_start_method`])
/// first (Python's `get_all_start_methods`).
///
/// ```
/// use shmproc::{get_all_start_methods, get_start_method, StartMethod};
/// let all = get_all_start_methods();
/// assert_eq!(all[0], get_start_method());
/// assert_eq!(all.len(), 3);
/// assert!(all.contains(&StartMethod::ForkServer));
/// ```
pub fn get_all_start_methods() -> Vec<StartMethod> {
    let default = get_start_method();
    let mut all = vec![default];
    all.extend([StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer].into_iter().filter(|m| *m != default));
    all
}

/// A way of starting processes (Python's `get_context(method)`): its constructors
/// make objects that use that start method.
///
/// ```
/// use shmproc::{context, StartMethod};
/// fn work(n: u32) { assert_eq!(n, 7); }
/// let ctx = context(StartMethod::Fork);
/// let mut p = ctx.process(work, 7);
/// p.start()?;
/// p.join()?;
/// assert_eq!(p.exitcode(), Some(0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

/// A context for `method` (Python's `get_context`).
///
/// ```
/// use shmproc::{context, StartMethod};
///
/// fn work(_: ()) {}
/// let ctx = context(StartMethod::Fork); // Python's get_context('fork')
/// let p = ctx.builder(work, ()).name("from-ctx").start()?;
/// p.join()?;
/// // Everything made through `ctx` uses its method, whatever the default.
/// assert_eq!(ctx.spawn(|x: u32| x + 1, 41)?.join()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn context(method: StartMethod) -> Context {
    Context { method }
}

impl Context {
    /// This context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Changes this context's start method (Python's `ctx.set_start_method`): the
    /// objects it makes from now on use `method`; the process-wide default is
    /// left alone.
    ///
    /// ```
    /// use shmproc::{context, StartMethod};
    /// let mut ctx = context(StartMethod::Fork);
    /// ctx.set_start_method(StartMethod::Spawn);
    /// assert_eq!(ctx.start_method(), StartMethod::Spawn);
    /// ```
    pub fn set_start_method(&mut self, method: StartMethod) {
        self.method = method;
    }

    /// A process started with this context's method (Python's `ctx.Process`).
    pub fn process<A>(&self, target: fn(A), args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        self.builder(target, args).build()
    }

    /// [`spawn`](crate::spawn) with this context's start method.
    pub fn spawn<F, A, R>(&self, f: F, args: A) -> Result<super::JoinHandle<R>, ProcessError>
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        super::join::spawn_with(Some(self.method), f, args)
    }

    /// A builder for a process started with this context's method.
    pub fn builder<A>(&self, target: fn(A), args: A) -> ProcessBuilder
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        Process::builder(target, args).start_method(self.method)
    }
}

impl From<ProcessError> for std::io::Error {
    fn from(e: ProcessError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

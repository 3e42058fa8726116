//! `spawn`: a child process that returns a value, shaped like `std::thread::spawn`.
//!
//! The child runs the task and puts its outcome (the value, or the panic's message
//! and location) into a small queue made for it; `join` waits for the child to end,
//! then reads the outcome. A child that ended without one was killed, exited early,
//! or its status was lost: the error says which.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::child::{catch_panic, Panic};
use super::entry::conjure;
use super::{Process, ProcessError, StartMethod};
use crate::channel::Queue;

/// Why a [`JoinHandle`] has no value to give.
///
/// ```
/// use shmproc::JoinError;
///
/// fn parse(text: String) -> u32 {
///     text.parse().expect("a number")
/// }
/// match shmproc::spawn(parse, "seven".to_string())?.join() {
///     Ok(n) => println!("got {n}"),
///     Err(JoinError::Panicked { message, location }) => {
///         assert!(message.starts_with("a number"), "{message} at {location}");
///     }
///     Err(e) => return Err(e.into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The task panicked in the child.
    #[error("the child panicked at {location}: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
        /// Where it panicked (`file:line:column`).
        location: String,
    },
    /// A signal ended the child before it returned (SIGKILL, SIGSEGV, an OOM kill...).
    #[error("the child was killed by signal {signal}")]
    Killed {
        /// The signal's number.
        signal: i32,
    },
    /// The child exited (`std::process::exit`, an abort handler) without returning.
    #[error("the child exited with code {code} without returning a value")]
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The child ended, but how is unknowable (its fork server died before it).
    #[error("the child's exit status is lost: {0}")]
    Lost(String),
    /// The value could not cross: it failed to serialize in the child, or to
    /// deserialize here.
    #[error("the child's value could not be passed back: {0}")]
    Value(String),
}

/// What a child puts into its outcome queue.
#[derive(Serialize, Deserialize)]
#[serde(bound = "R: Serialize + DeserializeOwned")]
enum Outcome<R> {
    Returned(R),
    Panicked(Panic),
}

/// The arguments of [`spawned`]: the task's arguments and where its outcome goes.
#[derive(Serialize, Deserialize)]
#[serde(bound = "A: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned")]
struct Spawned<A, R> {
    args: A,
    outcome: Queue<Outcome<R>>,
}

/// The ring of an outcome queue: values up to a quarter of it travel inline.
const OUTCOME_CAPACITY: usize = 1 << 20;

/// What every spawned child runs: the task, then its outcome into the queue.
fn spawned<F, A, R>(job: Spawned<A, R>)
where
    F: Fn(A) -> R + Copy,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let f = conjure::<F>();
    let Spawned { args, outcome } = job;
    match catch_panic(false, move || f(args)) {
        Ok(value) => {
            if let Err(e) = outcome.put(Outcome::Returned(value)) {
                // Printed as a failed child; `join` reports it as `Exited { code: 1 }`.
                panic!("cannot pass the value back: {e}");
            }
        }
        Err((panic, payload)) => {
            let _ = outcome.put(Outcome::Panicked(panic));
            // Exit code 1, as for any child that panicked (already printed).
            std::panic::resume_unwind(payload);
        }
    }
}

/// A child process running a task that returns a value (see [`spawn`]).
///
/// ```
/// use std::time::Duration;
///
/// fn count_words(text: String) -> usize {
///     text.split_whitespace().count()
/// }
/// let h = shmproc::spawn(count_words, "one two three".to_string())?;
/// assert!(h.process().pid().is_some());
/// // Waiting is bounded if you like; `join` then returns at once.
/// assert!(h.join_timeout(Duration::from_secs(10))?);
/// assert!(h.is_finished());
/// assert_eq!(h.join()?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinHandle<R> {
    process: Process,
    outcome: Queue<Outcome<R>>,
}

/// Runs `f(args)` in a child process and returns a handle to join it for the value,
/// as `std::thread::spawn` does for a thread *(beyond Python)*.
///
/// `f` is a fn item or a non-capturing closure (checked at compile time), so that the
/// same code runs under every start method; the default start method is used (see
/// [`Context::spawn`](crate::Context::spawn) for another).
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let h = shmproc::spawn(square, 7)?;
/// assert_eq!(h.join()?, 49);
///
/// let h = shmproc::spawn(|x: u64| -> u64 { panic!("no {x} today") }, 7)?;
/// let err = h.join().unwrap_err();
/// assert!(matches!(err, shmproc::JoinError::Panicked { ref message, .. } if message == "no 7 today"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn<F, A, R>(f: F, args: A) -> Result<JoinHandle<R>, ProcessError>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    spawn_with(None, f, args)
}

pub(crate) fn spawn_with<F, A, R>(method: Option<StartMethod>, _task: F, args: A) -> Result<JoinHandle<R>, ProcessError>
where
    F: Fn(A) -> R + Copy + Send + Sync + 'static,
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    let outcome = Queue::<Outcome<R>>::builder().capacity(OUTCOME_CAPACITY).maxsize(1).build().map_err(|e| {
        ProcessError::Os { op: "creating the outcome queue", source: std::io::Error::other(e.to_string()) }
    })?;
    let job = Spawned { args, outcome: outcome.clone() };
    let mut builder = Process::builder(spawned::<F, A, R>, job);
    if let Some(m) = method {
        builder = builder.start_method(m);
    }
    Ok(JoinHandle { process: builder.start()?, outcome })
}

impl<R: Serialize + DeserializeOwned> JoinHandle<R> {
    /// Waits for the child to end and returns its value, or why there is none.
    pub fn join(self) -> Result<R, JoinError> {
        match self.process.join() {
            Ok(()) => self.outcome(),
            // The status is lost, but the value may have come.
            Err(e) => match self.outcome.try_get() {
                Ok(Outcome::Returned(value)) => Ok(value),
                Ok(Outcome::Panicked(Panic { message, location })) => Err(JoinError::Panicked { message, location }),
                _ => Err(JoinError::Lost(e.to_string())),
            },
        }
    }

    /// Waits at most `timeout` for the child to end; `true` if it has (then
    /// [`join`](JoinHandle::join) returns at once).
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, JoinError> {
        self.process.join_timeout(timeout).map_err(|e| JoinError::Lost(e.to_string()))
    }

    /// Whether the child has ended.
    pub fn is_finished(&self) -> bool {
        self.process.exitcode().is_some()
    }

    /// The child's process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    fn outcome(&self) -> Result<R, JoinError> {
        match self.outcome.try_get() {
            Ok(Outcome::Returned(value)) => Ok(value),
            Ok(Outcome::Panicked(Panic { message, location })) => Err(JoinError::Panicked { message, location }),
            Err(crate::TryRecvError::Failed(fault)) => Err(JoinError::Value(fault.to_string())),
            Err(_) => Err(match self.process.exitcode() {
                Some(super::EXITCODE_UNKNOWN) => JoinError::Lost("its fork server died before it".into()),
                Some(code) if code < 0 => JoinError::Killed { signal: -code },
                Some(code) => JoinError::Exited { code },
                None => JoinError::Lost("the child has not ended".into()),
            }),
        }
    }
}

impl<R> Drop for JoinHandle<R> {
    /// A value never joined for is taken and dropped if it is there: a large one
    /// lives in a file of its own, which taking it removes.
    fn drop(&mut self) {
        if self.process.exitcode().is_some() {
            let mut scratch = Vec::new();
            while self.outcome.get_bytes_into(&mut scratch, crate::sync::wait::Wait::Never).is_ok() {}
        }
    }
}

impl<R> fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("process", &self.process).finish_non_exhaustive()
    }
}

//! Support for shmproc's own tests and benchmarks; not part of the public API.
//!
//! [`fork`] runs a *capturing* closure in a forked child (which `Process`, whose
//! targets must be found again in re-executed children, deliberately cannot), leaves
//! with `_exit` (no destructors, no atexit handlers, no double-flushed stdio), and
//! reaps the child with a deadline, killing it if it overstays, so a test can never
//! hang on a child and never leaves a zombie. The rest are knobs that benchmarks
//! turn to measure what a design choice buys.

use std::time::{Duration, Instant};

use crate::sys::{self, ChildExit, Forked};

/// Exit status of a child whose closure panicked.
pub const PANICKED: i32 = 101;

/// A forked child process; killed and reaped on drop if still running.
#[derive(Debug)]
pub struct Child {
    pid: i32,
    exit: Option<ChildExit>,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `_exit(code)`: the closure's return value, or [`PANICKED`].
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

/// Forks; the child runs `f` and exits with its return value (or [`PANICKED`]).
///
/// The child must not rely on locks other threads of the parent held at the time
/// of the fork (stdout's lock included): write with `libc::write` or not at all in
/// heavily threaded parents such as the test harness.
pub fn fork<F: FnOnce() -> i32 + 'static>(f: F) -> std::io::Result<Child> {
    // A failed assertion in the child prints as a forked worker's panic does (see
    // `child::install_panic_hook`): written without a lock, none of which a
    // parent thread may have held at the fork.
    crate::process::install_panic_hook();
    // SAFETY: the child only runs `f` and `_exit`s; see the function's docs for what
    // `f` must avoid.
    match unsafe { sys::fork()? } {
        Forked::Parent(pid) => Ok(Child { pid, exit: None }),
        Forked::Child => {
            crate::process::mark_forked();
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(PANICKED);
            sys::exit_now(code)
        }
    }
}

impl Child {
    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits at most `timeout` for the child to end; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<Exit>> {
        if self.exit.is_none() && !sys::wait_child_exit(self.pid, Instant::now() + timeout)? {
            return Ok(None);
        }
        self.poll()
    }

    /// Reaps the child if it has ended.
    pub fn poll(&mut self) -> std::io::Result<Option<Exit>> {
        if self.exit.is_none() {
            self.exit = sys::try_reap(self.pid)?;
        }
        Ok(self.exit.map(|e| match e {
            ChildExit::Exited(c) => Exit::Code(c),
            ChildExit::Signaled(s) => Exit::Signal(s),
        }))
    }

    /// Sends `signal` (a `libc::SIG*` number) to the child.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        sys::send_signal(self.pid, signal)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait_timeout(Duration::from_secs(5));
        }
    }
}

/// Sets how long blocking calls spin before sleeping, in rounds of doubling pauses
/// (`0` sleeps at once; the default is 9, ~511 pauses). For benchmarks that measure
/// what the spin buys; process-wide, inherited by forked children.
pub fn set_spin_rounds(rounds: u32) {
    crate::sync::wait::set_spin_rounds(rounds);
}

/// Whether the fork handler that keeps lock ownership right in forked children is
/// registered (it should be from load time, before `main`).
pub fn fork_handler_registered() -> bool {
    crate::sys::fork_handler_registered()
}

/// The default number of spin rounds (see [`set_spin_rounds`]).
pub const DEFAULT_SPIN_ROUNDS: u32 = crate::sync::wait::DEFAULT_SPIN_ROUNDS;

/// Sets how often sleepers re-check without a wake-up (100 ms by default) for this
/// process and the children it forks. Tests of the wake-ups set it to an hour: with
/// it, a lost wake-up would only be a delay their time bounds might not catch.
pub fn set_safety_poll(every: Duration) {
    crate::sync::wait::set_safety_poll(every);
}

/// Makes the next `n` starts of pool workers in this process fail, as when it is
/// out of descriptors or processes for a moment (`0`: none), so that a test can
/// watch a pool recover. Inherited by forked children (a test sets it in one).
pub fn fail_worker_starts(n: u32) {
    crate::pool::fail_worker_starts(n);
}

pub use crate::channel::SideStall;

/// Makes this process stop for good at `at` of every large message's hand-off
/// (`None`: never), setting `reached` first, so that a test can kill it there.
pub fn stall_side_handoff(at: Option<SideStall>, reached: crate::Event) {
    crate::channel::set_side_stall(at.map(|at| (at, reached)));
}

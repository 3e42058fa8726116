//! Who this process is, and the children it started.
//!
//! The state lives in one leaked `Current` per process, reached through an atomic
//! pointer. A child made by `fork` installs a fresh one before running anything else:
//! it never touches a lock that another thread of its parent might have held at the
//! moment of the fork.

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::forkserver::ServerClient;
use super::status::StatusSlot;
use crate::sync::wait::{safety_poll, Wait};
use crate::sys::{self, ChildExit};

/// A process as [`current_process`](crate::current_process) and friends describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its name: `MainProcess`, `Process-1`, `Process-1:2`, or one given by the builder.
    pub name: String,
    /// Its process id.
    pub pid: i32,
    /// Whether it was started as a daemon (terminated when its parent leaves). False
    /// for the main process, and for a parent (its own parent knows, not its child).
    pub daemon: bool,
    /// Its pid and start time (`sys::ProcessId`), so that a recycled pid never passes
    /// for it.
    id: u64,
}

impl ProcessInfo {
    pub(crate) fn new(name: String, pid: i32, daemon: bool) -> ProcessInfo {
        ProcessInfo { name, pid, daemon, id: sys::ProcessId::of(pid).to_bits() }
    }

    /// Whether the process still runs (not gone, not a zombie, its pid not taken by
    /// a later process). Python's `parent_process().is_alive()`.
    pub fn is_alive(&self) -> bool {
        sys::ProcessId::from_bits(self.id).is_alive()
    }

    /// Waits up to `timeout` for the process to end; whether it did. For a process
    /// that is not this one's child (its parent, say), which cannot be waited for,
    /// it looks every 5 ms. Python's `parent_process().join(timeout)`.
    ///
    /// ```
    /// let me = shmproc::current_process();
    /// assert!(me.is_alive());
    /// assert!(!me.join_timeout(std::time::Duration::from_millis(10)));
    /// ```
    pub fn join_timeout(&self, timeout: std::time::Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(5)));
        }
    }
}

pub(crate) struct Current {
    pub(crate) name: String,
    daemon: bool,
    identity: Vec<u32>,
    pub(crate) parent: Option<ProcessInfo>,
    next_child: AtomicU32,
    children: Mutex<Vec<Arc<ChildRecord>>>,
    pub(crate) forkserver: Mutex<Option<ServerClient>>,
}

static CURRENT: AtomicPtr<Current> = AtomicPtr::new(std::ptr::null_mut());

fn install(c: Current) -> &'static Current {
    let fresh: &'static mut Current = Box::leak(Box::new(c));
    CURRENT.store(fresh, Ordering::Release);
    fresh
}

/// This process's state (made on first use in the main process).
pub(crate) fn current() -> &'static Current {
    let p = CURRENT.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: a non-null CURRENT always comes from `Box::leak` and is never freed.
        return unsafe { &*p };
    }
    let main = Current::new("MainProcess".into(), Vec::new(), None, false);
    let fresh = Box::into_raw(Box::new(main));
    match CURRENT.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: we just published our own leaked box.
        Ok(_) => unsafe { &*fresh },
        Err(other) => {
            // SAFETY: we lost the race; `fresh` was never shared, so we may free it,
            // and `other` is a leaked box like ours.
            unsafe {
                drop(Box::from_raw(fresh));
                &*other
            }
        }
    }
}

/// Makes this (new) process the child described, forgetting the parent's state.
pub(crate) fn become_child(name: String, identity: Vec<u32>, parent: ProcessInfo, daemon: bool) {
    let inherited = CURRENT.load(Ordering::Acquire);
    if !inherited.is_null() {
        // SAFETY: a non-null CURRENT is a leaked box, never freed.
        let inherited = unsafe { &*inherited };
        // A forked child must not keep its parent's fork server alive (or talk to
        // it). `try_lock`: another thread of the parent may have held it at the fork.
        if let Ok(mut server) = inherited.forkserver.try_lock() {
            drop(server.take());
        }
    }
    install(Current::new(name, identity, Some(parent), daemon));
}

impl Current {
    fn new(name: String, identity: Vec<u32>, parent: Option<ProcessInfo>, daemon: bool) -> Current {
        Current {
            name,
            daemon,
            identity,
            parent,
            next_child: AtomicU32::new(0),
            children: Mutex::new(Vec::new()),
            forkserver: Mutex::new(None),
        }
    }

    /// The identity and default name of the next child (Python's `Process-1:2`).
    pub(crate) fn next_child(&self) -> (Vec<u32>, String) {
        let n = self.next_child.fetch_add(1, Ordering::Relaxed) + 1;
        let mut identity = self.identity.clone();
        identity.push(n);
        let digits: Vec<String> = identity.iter().map(u32::to_string).collect();
        let name = format!("Process-{}", digits.join(":"));
        (identity, name)
    }

    pub(crate) fn info(&self) -> ProcessInfo {
        ProcessInfo::new(self.name.clone(), sys::getpid(), self.daemon)
    }

    pub(crate) fn register(&self, child: Arc<ChildRecord>) {
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        // SAFETY: `at_exit` is an `extern "C" fn()` that never unwinds (it catches).
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(at_exit);
        });
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|c| Arc::strong_count(c) > 1 || c.poll().is_none());
        children.push(child);
    }

    /// Drops the records of ended children nobody else holds.
    pub(crate) fn forget_ended(&self) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|c| Arc::strong_count(c) > 1 || c.poll().is_none());
    }

    pub(crate) fn active_children(&self) -> Vec<ProcessInfo> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|c| c.poll().is_none());
        children.iter().map(|c| ProcessInfo::new(c.name.clone(), c.pid, c.daemon)).collect()
    }
}

/// When the program leaves `main` (or calls `exit`), as Python does at exit: daemon
/// children are terminated (SIGTERM, then SIGKILL after a second) and reaped,
/// non-daemon children are waited for. A child process leaves with `_exit`, so this
/// runs only where `exit` runs.
extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let me = current();
        let children: Vec<Arc<ChildRecord>> = match me.children.try_lock() {
            Ok(c) => c.clone(),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().clone(),
            // Another thread holds it (and may never let go): leave the children be.
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        for c in children.iter().filter(|c| c.daemon && c.poll().is_none()) {
            let _ = c.signal(libc::SIGTERM);
        }
        for c in children.iter().filter(|c| c.daemon) {
            if !matches!(c.wait(Wait::timeout(std::time::Duration::from_secs(1))), Ok(Some(_))) {
                let _ = c.signal(libc::SIGKILL);
                let _ = c.wait(Wait::timeout(std::time::Duration::from_secs(1)));
            }
        }
        for c in children.iter().filter(|c| !c.daemon) {
            let _ = c.wait(Wait::Forever);
        }
    });
}

/// How a child's end is observed.
pub(crate) enum Watch {
    /// Our own child: reaped with `waitpid`.
    Reaped,
    /// A fork server's child: the server reaps it and writes the status here. The
    /// child as it can be recognised, for when the server dies first.
    Slot(StatusSlot, sys::ProcessId),
}

/// A started child: its pid, and how it ended once known.
pub(crate) struct ChildRecord {
    pub(crate) pid: i32,
    pub(crate) name: String,
    /// Terminated, not waited for, when the program exits.
    pub(crate) daemon: bool,
    watch: Watch,
    /// The exit code once known: the code, or `-signal`. Reaping and signalling
    /// happen under this lock, so a signal never reaches a recycled pid.
    exit: Mutex<Option<i32>>,
}

impl ChildRecord {
    pub(crate) fn new(pid: i32, name: String, daemon: bool, watch: Watch) -> ChildRecord {
        ChildRecord { pid, name, daemon, watch, exit: Mutex::new(None) }
    }

    pub(crate) fn is_ours(&self) -> bool {
        matches!(self.watch, Watch::Reaped)
    }

    /// The exit code, if the child has ended (reaping it if it is ours).
    pub(crate) fn poll(&self) -> Option<i32> {
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if exit.is_none() {
            *exit = match &self.watch {
                Watch::Reaped => match sys::try_reap(self.pid) {
                    Ok(exit) => exit.map(ChildExit::code),
                    // ECHILD: someone else reaped it (waitpid(-1) elsewhere); the code
                    // is lost, and the child is certainly gone.
                    Err(_) => Some(-libc::SIGKILL),
                },
                Watch::Slot(slot, child) => slot.exit_code().or_else(|| {
                    // The server died first, and the child is gone too: it ended, how
                    // is unknowable. Never "alive" for a process that is not.
                    (!slot.server_alive() && slot.exit_code().is_none() && !child.is_alive())
                        .then_some(super::EXITCODE_UNKNOWN)
                }),
            };
        }
        *exit
    }

    /// Waits for the child to end, as long as `wait` allows; its exit code, if it
    /// ended. Looks again every [`safety_poll`](crate::sync::wait::safety_poll) however it waits.
    pub(crate) fn wait(&self, wait: Wait) -> std::io::Result<Option<i32>> {
        let deadline = wait.deadline();
        loop {
            if let Some(code) = self.poll() {
                return Ok(Some(code));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let until = deadline.map_or(now + safety_poll(), |d| d.min(now + safety_poll()));
            match &self.watch {
                Watch::Reaped => {
                    sys::wait_child_exit(self.pid, until)?;
                }
                Watch::Slot(slot, _) => {
                    // A server that died leaves no status: `poll` then reports the
                    // child's end as unknown, once it is gone.
                    slot.wait_until(until);
                }
            }
        }
    }

    /// Sends `signal`, unless the child has already ended.
    pub(crate) fn signal(&self, signal: i32) -> std::io::Result<()> {
        let mut exit = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if let (None, Watch::Slot(slot, _)) = (*exit, &self.watch) {
            // The fork server publishes a status before it reaps, so a child whose
            // slot is still empty has not been reaped: its pid cannot be recycled.
            *exit = slot.exit_code();
        }
        if exit.is_some() {
            return Ok(());
        }
        sys::send_signal(self.pid, signal)
    }
}

//! Who is who: process and thread ids, their start times (which tell a recycled id
//! apart), whether one still lives, and facts about this process.

use std::io;

pub(crate) fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// This process's pid namespace, as the low 32 bits of its inode; 0 if unknown.
pub(crate) fn pid_namespace() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino() as u32)
}

/// A thread as the lock layer names it: its kernel thread id, plus the low 32 bits
/// of its start time (clock ticks since boot), which tells a thread from a later one
/// that was given the same recycled id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ThreadIdentity {
    pub(crate) tid: u32,
    pub(crate) start: u32,
}

/// What `/proc` says about a thread id now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadState {
    /// No such thread, or a zombie: it holds nothing and never will again.
    Gone,
    /// A live thread that started at `start` (low 32 bits of its start time; 0 when
    /// unreadable, which callers treat as "unknown").
    Alive { start: u32 },
    /// `/proc` could not tell (not mounted, out of descriptors, no permission):
    /// callers must assume the thread lives.
    Unknown,
}

thread_local! {
    static CURRENT: std::cell::Cell<Option<ThreadIdentity>> = const { std::cell::Cell::new(None) };
}

extern "C" fn forget_identity_in_child() {
    // After fork the child's only thread is a copy of the forking one, under a new id.
    CURRENT.with(|c| c.set(None));
}

static FORK_HANDLER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn register_fork_handler() {
    if !FORK_HANDLER.swap(true, std::sync::atomic::Ordering::AcqRel) {
        // SAFETY: registers a handler that only writes this crate's thread-local,
        // which is safe in the child of fork.
        unsafe { libc::pthread_atfork(None, None, Some(forget_identity_in_child)) };
    }
}

// Registered while the program loads, before `main` and before any thread exists:
// registering later, under a lock, would race with a fork in another thread and
// could leave a child waiting forever on a registration that never completes in it.
#[used]
#[link_section = ".init_array"]
static REGISTER_FORK_HANDLER: extern "C" fn() = register_fork_handler;

/// The calling thread's identity; one `gettid` and one `/proc` read per thread, then
/// cached (and forgotten in a forked child, which has a new id).
#[inline]
pub(crate) fn current_thread() -> ThreadIdentity {
    match CURRENT.with(|c| c.get()) {
        Some(me) => me,
        None => identify_current_thread(),
    }
}

#[cold]
fn identify_current_thread() -> ThreadIdentity {
    // Normally done at load time; this covers a linker that dropped the constructor.
    register_fork_handler();
    let tid = nix::unistd::gettid().as_raw() as u32;
    let start = match thread_state(tid) {
        ThreadState::Alive { start } => start,
        // Unreadable: 0 means "unknown", and owners are then judged by id alone.
        ThreadState::Gone | ThreadState::Unknown => 0,
    };
    let me = ThreadIdentity { tid, start };
    CURRENT.with(|c| c.set(Some(me)));
    me
}

pub(crate) fn fork_handler_registered() -> bool {
    FORK_HANDLER.load(std::sync::atomic::Ordering::Acquire)
}

/// Looks `tid` up in `/proc` (any thread of any process in our pid namespace).
pub(crate) fn thread_state(tid: u32) -> ThreadState {
    let stat = match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        Ok(stat) => stat,
        // Only "no such thread" means gone; any other failure says nothing.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return ThreadState::Gone
        }
        Err(_) => return ThreadState::Unknown,
    };
    // Fields after the command name, which is in parentheses and may itself contain
    // spaces or parentheses: state is the first, starttime the twentieth.
    let mut rest = match stat.rfind(')') {
        Some(i) => stat[i + 1..].split_ascii_whitespace(),
        None => return ThreadState::Unknown,
    };
    match rest.next() {
        Some("Z") | Some("X") | Some("x") => ThreadState::Gone,
        None => ThreadState::Unknown,
        Some(_) => {
            let start = rest.nth(18).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            ThreadState::Alive { start: start as u32 }
        }
    }
}

pub(crate) fn getppid() -> i32 {
    nix::unistd::getppid().as_raw()
}

/// The number of CPUs online.
pub(crate) fn cpu_count() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

/// Whether this process runs with elevated privileges (setuid, setgid, file
/// capabilities): then the environment must not steer it.
pub(crate) fn is_privileged() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The number of threads in this process, from /proc (1 if unreadable).
pub(crate) fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Threads:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(1)
}

/// What identifies the running executable file: device, inode, size, mtime.
pub(crate) fn exe_identity() -> io::Result<[u64; 4]> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/exe")?;
    Ok([m.dev(), m.ino(), m.size(), m.mtime() as u64 ^ ((m.mtime_nsec() as u64) << 32)])
}

/// Whether the functions at `a` and `b` lie in the same loaded object (the
/// executable, or one shared library).
pub(crate) fn same_object(a: usize, b: usize) -> bool {
    let base = |addr: usize| {
        // SAFETY: Dl_info is plain pointers, for which all-zero is valid; dladdr only
        // reads the loader's tables and fills it.
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            (libc::dladdr(addr as *const libc::c_void, &mut info) != 0).then_some(info.dli_fbase as usize)
        }
    };
    matches!((base(a), base(b)), (Some(x), Some(y)) if x == y)
}

/// A process as it can be recognised later: its pid and its start time (clock
/// ticks since boot, low 32 bits; 0 when unknown), packed in one word so that it
/// can live in shared memory. A pid recycled by a later process comes with another
/// start time, so the later process never passes for the first: the one answer to
/// "is that process gone" for pipe peers, barrier parties and fork servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessId(u64);

impl ProcessId {
    /// Nobody: never alive.
    pub(crate) const NONE: ProcessId = ProcessId(0);

    /// The process `pid` as it is now (its start time unknown if it is already gone).
    pub(crate) fn of(pid: i32) -> ProcessId {
        let start = match u32::try_from(pid).map(thread_state) {
            Ok(ThreadState::Alive { start }) => start,
            _ => 0,
        };
        ProcessId::from_parts(pid, start)
    }

    /// This process (cached; a forked child finds its own).
    pub(crate) fn me() -> ProcessId {
        static ME: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let cached = ProcessId(ME.load(std::sync::atomic::Ordering::Relaxed));
        let pid = getpid();
        if cached.pid() == pid && cached != ProcessId::NONE {
            return cached;
        }
        let me = ProcessId::of(pid);
        ME.store(me.0, std::sync::atomic::Ordering::Relaxed);
        me
    }

    fn from_parts(pid: i32, start: u32) -> ProcessId {
        ProcessId((u64::from(start) << 32) | u64::from(pid as u32))
    }

    pub(crate) fn pid(self) -> i32 {
        self.0 as u32 as i32
    }

    fn start(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The packed word, for shared memory.
    pub(crate) fn to_bits(self) -> u64 {
        self.0
    }

    /// A word read from shared memory (any value is some process, or nobody).
    pub(crate) fn from_bits(bits: u64) -> ProcessId {
        ProcessId(bits)
    }

    /// Whether it still runs: not gone, not a zombie, and its pid not taken by a
    /// later process. `/proc` failing to answer counts as alive.
    pub(crate) fn is_alive(self) -> bool {
        let pid = self.pid();
        if pid <= 0 {
            return false;
        }
        match thread_state(pid as u32) {
            ThreadState::Gone => false,
            ThreadState::Unknown => true,
            // Compared only when both start times are known.
            ThreadState::Alive { start } => self.start() == 0 || start == 0 || start == self.start(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_id_tells_a_recycled_pid_apart() {
        let me = ProcessId::me();
        assert_eq!(me.pid(), getpid());
        assert!(me.is_alive());
        assert_eq!(ProcessId::from_bits(me.to_bits()), me);
        // Same pid, another start time: a later process that reused the pid.
        let impostor = ProcessId::from_parts(me.pid(), me.start().wrapping_add(1));
        assert!(!impostor.is_alive());
        // Start time unknown: judged by the pid alone.
        assert!(ProcessId::from_parts(me.pid(), 0).is_alive());
        assert!(!ProcessId::NONE.is_alive());
    }
}

//! Linux: memfd and POSIX shm, the futex, thread identities from /proc,
//! randomness, and the few process calls the layers above need.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::memfd::{memfd_create as nix_memfd_create, MFdFlags};
use nix::sys::mman::{shm_open, shm_unlink as nix_shm_unlink};
use nix::sys::stat::{fstat, Mode};

fn nix_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

// ---------------------------------------------------------------- memory objects

/// An anonymous shared-memory file. Close-on-exec: a start method that wants a
/// child to have it hands it over on purpose.
pub(crate) fn memfd_create(debug_name: &str) -> io::Result<OwnedFd> {
    nix_memfd_create(debug_name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(nix_err)
}

/// Forbids any later change of a memfd's size. A mapping of a file that shrinks
/// under it faults (SIGBUS) on access; sealing rules that out for anonymous
/// segments. Named POSIX shm objects cannot be sealed: see `segment`'s docs.
pub(crate) fn seal_size(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).map(drop).map_err(nix_err)
}

/// Creates the named POSIX shm object `name`, failing if it exists; mode 0600.
pub(crate) fn shm_create_exclusive(name: &str) -> io::Result<OwnedFd> {
    // glibc's shm_open always sets FD_CLOEXEC.
    shm_open(name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR, Mode::S_IRUSR | Mode::S_IWUSR).map_err(nix_err)
}

/// Opens the existing named POSIX shm object `name` for reading and writing.
pub(crate) fn shm_open_existing(name: &str) -> io::Result<OwnedFd> {
    shm_open(name, OFlag::O_RDWR, Mode::empty()).map_err(nix_err)
}

pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    nix_shm_unlink(name).map_err(nix_err)
}

/// The names (with their leading '/') of the POSIX shm objects whose names start
/// with `prefix`. On Linux they are the files of /dev/shm.
pub(crate) fn shm_names_with_prefix(prefix: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        if let Some(name) = entry?.file_name().to_str().filter(|n| n.starts_with(prefix)) {
            names.push(format!("/{name}"));
        }
    }
    Ok(names)
}

/// Reads the first `N` bytes of a file without mapping it (and closes it).
pub(crate) fn read_prefix<const N: usize>(fd: OwnedFd) -> io::Result<[u8; N]> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd);
    let mut buf = [0u8; N];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

pub(crate) fn set_len(fd: &OwnedFd, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    nix::unistd::ftruncate(fd.as_fd(), len).map_err(nix_err)
}

/// Reserves `len` bytes of backing store for the file, so that later page faults
/// cannot fail for want of space.
pub(crate) fn allocate(fd: &OwnedFd, len: usize) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    nix::fcntl::posix_fallocate(fd.as_fd(), 0, len).map_err(nix_err)
}

pub(crate) fn file_len(fd: &OwnedFd) -> io::Result<u64> {
    let st = fstat(fd.as_fd()).map_err(nix_err)?;
    Ok(u64::try_from(st.st_size).unwrap_or(0))
}

/// 128 bits from the kernel's CSPRNG, for names nobody can guess.
pub(crate) fn random_u128() -> io::Result<u128> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which
        // lives for the whole call.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(u128::from_ne_bytes(buf))
}

// ---------------------------------------------------------------- processes

pub(crate) fn getpid() -> i32 {
    nix::unistd::getpid().as_raw()
}

/// This process's pid namespace, as the low 32 bits of its inode; 0 if unknown.
pub(crate) fn pid_namespace() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino() as u32)
}

/// Whether `pid` names a process that still runs. A zombie (exited, not yet reaped)
/// counts as dead: it holds no lock and will never arrive anywhere.
pub(crate) fn process_alive(pid: i32) -> bool {
    pid > 0 && thread_state(pid as u32) != ThreadState::Gone
}

// ---------------------------------------------------------------- futex

/// How a futex wait ended. Spurious wake-ups are folded into `Woken`: callers
/// always re-check their condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken, interrupted, or the word no longer held `expected`.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or until `deadline`.
///
/// Not `FUTEX_PRIVATE_FLAG`: the word lives in memory shared between processes,
/// and a private futex is keyed by the address in one process only.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> FutexWait {
    let timeout = match deadline {
        None => None,
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Some(duration_to_timespec(left)),
            _ => return FutexWait::TimedOut,
        },
    };
    let ts_ptr = timeout.as_ref().map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
    // SAFETY: `word` is a live, aligned AtomicU32 for the duration of the call; the
    // kernel only reads it. `ts_ptr` is null or points to a timespec on our stack.
    let rc = unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, ts_ptr, std::ptr::null::<u32>(), 0u32)
    };
    if rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        FutexWait::TimedOut
    } else {
        FutexWait::Woken
    }
}

/// Wakes up to `n` threads asleep on `word`; how many it woke (0 on an error).
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    // SAFETY: FUTEX_WAKE only uses the address as a key; `word` is live and aligned.
    let woken = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    u32::try_from(woken).unwrap_or(0)
}

fn duration_to_timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

// ---------------------------------------------------------------- thread identity

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

// ---------------------------------------------------------------- fork (test support)

/// The outcome of `fork` as seen by the caller.
#[derive(Debug)]
pub(crate) enum Forked {
    Parent(i32),
    Child,
}

/// # Safety
/// As `fork(2)` in a possibly multi-threaded process: the child may only call
/// async-signal-safe functions until it execs or exits, in the strict reading;
/// glibc makes malloc usable after fork, and the child must not touch locks that
/// other (now vanished) threads might have held.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: forwarded to the caller.
    match unsafe { nix::unistd::fork() }.map_err(nix_err)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Leaves the process at once with `code`: no destructors, no atexit handlers, no
/// flushing of stdio buffers inherited from the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    Exited(i32),
    Signaled(i32),
}

impl ChildExit {
    /// Python's `exitcode`: the exit status, or minus the signal.
    pub(crate) fn code(self) -> i32 {
        match self {
            ChildExit::Exited(code) => code,
            ChildExit::Signaled(sig) => -sig,
        }
    }
}

/// How a child ended, if `status` says it has.
fn child_exit(status: nix::sys::wait::WaitStatus) -> Option<ChildExit> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some(ChildExit::Exited(code)),
        WaitStatus::Signaled(_, sig, _) => Some(ChildExit::Signaled(sig as i32)),
        _ => None,
    }
}

/// Reaps `pid` if it has ended, without blocking.
pub(crate) fn try_reap(pid: i32) -> io::Result<Option<ChildExit>> {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).map(child_exit).map_err(nix_err)
}

/// Sleeps until the child `pid` ends or `deadline` passes, without reaping it;
/// `false` if the deadline passed. Uses a pidfd (Linux 5.3+), so the wake-up is
/// immediate; where there is no pidfd to be had (an old kernel, or no descriptor
/// left: EMFILE, ENFILE) it polls, every 100 µs at first, backing off to 5 ms.
pub(crate) fn wait_child_exit(pid: i32, deadline: Instant) -> io::Result<bool> {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        // Already reaped (by another thread): it has ended.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(true),
        Err(_) => {
            let mut pause = Duration::from_micros(100);
            while Instant::now() < deadline {
                if peek_exit(pid)?.is_some() {
                    return Ok(true);
                }
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            return Ok(false);
        }
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so that a sub-millisecond remainder still waits.
        let ms = i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&fd), events: libc::POLLIN, revents: 0 };
        // SAFETY: `pfd` is one valid pollfd on our stack.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            1.. => return Ok(true),
            0 if Instant::now() >= deadline => return Ok(false),
            0 => continue,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn send_signal(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

// ---------------------------------------------------------------- starting processes

pub(crate) fn getppid() -> i32 {
    nix::unistd::getppid().as_raw()
}

/// Asks the kernel to SIGKILL the calling process when the thread that created it
/// exits (Linux ties the signal to the parent *thread*).
pub(crate) fn die_with_parent() -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(nix_err)
}

/// The number of CPUs online.
pub(crate) fn cpu_count() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(1)
}

/// What identifies the running executable file: device, inode, size, mtime.
pub(crate) fn exe_identity() -> io::Result<[u64; 4]> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/exe")?;
    Ok([m.dev(), m.ino(), m.size(), m.mtime() as u64 ^ ((m.mtime_nsec() as u64) << 32)])
}

/// A memfd holding `bytes`, positioned at 0, sealed against any change.
pub(crate) fn memfd_with(bytes: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Write;
    let fd = memfd_create("shmproc-task")?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    let fd = OwnedFd::from(file);
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(nix_err)?;
    Ok(fd)
}

/// Reads a whole file from offset 0, at most `limit` bytes (and closes it).
pub(crate) fn read_all(fd: OwnedFd, limit: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd);
    let len = file.metadata()?.len();
    if len > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file larger than its limit"));
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Takes ownership of descriptor `n`, inherited across exec.
///
/// # Safety
/// `n` must be an open descriptor that nothing else in this process owns.
pub(crate) unsafe fn adopt_fd(n: i32) -> OwnedFd {
    // SAFETY: forwarded to the caller.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) }
}

/// Whether descriptor `n` is open.
pub(crate) fn fd_is_open(n: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(n, libc::F_GETFD) != -1 }
}

/// Everything `execve` needs, built before `fork` so that the child allocates nothing.
#[derive(Debug)]
pub(crate) struct ExecImage {
    path: std::ffi::CString,
    argv: Vec<std::ffi::CString>,
    envp: Vec<std::ffi::CString>,
}

impl ExecImage {
    /// This very executable, with this process's arguments and environment plus `extra_env`.
    pub(crate) fn this_program(extra_env: &[(&str, String)]) -> io::Result<ExecImage> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |b: &[u8]| CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let argv = std::env::args_os().map(|a| c(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os() {
            if extra_env.iter().any(|(name, _)| k.as_bytes() == name.as_bytes()) {
                continue;
            }
            envp.push(c(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
        for (k, v) in extra_env {
            envp.push(c(format!("{k}={v}").as_bytes())?);
        }
        Ok(ExecImage { path: c(b"/proc/self/exe")?, argv, envp })
    }
}

/// Forks and executes `image` in the child with exactly `fds` open at 3, 4, ... (and
/// 0, 1, 2 as they are): every other descriptor is closed, close-on-exec or not.
/// Returns the child's pid once `execve` has succeeded, or why it failed.
pub(crate) fn spawn_exec(
    image: &ExecImage,
    fds: &[std::os::fd::BorrowedFd<'_>],
    death_signal: bool,
) -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    let parent = getpid();
    // For kernels without close_range: the highest descriptor number to close.
    let fd_limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(4096, |(soft, _)| soft.min(1 << 20)) as i32;
    let n = fds.len() as i32;
    // Move every descriptor above the numbers they will take, so that placing them
    // at 3.. in the child can never overwrite one that is still to be placed.
    let floor = 3 + n + 1;
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor)).map_err(nix_err))
        .map(|r| r.map(unsafe_adopt))
        .collect::<io::Result<_>>()?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_err)?;
    let err_w_high = nix::fcntl::fcntl(&err_w, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor)).map_err(nix_err)?;
    let err_w_high = unsafe_adopt(err_w_high);
    drop(err_w);
    let argv: Vec<*const libc::c_char> =
        image.argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const libc::c_char> =
        image.envp.iter().map(|e| e.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let raw_high: Vec<i32> = high.iter().map(|f| f.as_raw_fd()).collect();
    let err_fd = err_w_high.as_raw_fd();
    // SAFETY: between fork and execve the child calls only async-signal-safe
    // functions (dup2, fcntl, close_range, prctl, execve, write, _exit) on data
    // prepared above; it allocates nothing and takes no lock.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this block never returns.
        unsafe {
            exec_child(
                &raw_high,
                err_fd,
                n,
                death_signal.then_some(parent),
                fd_limit,
                image.path.as_ptr(),
                &argv,
                &envp,
            )
        }
    }
    drop(high);
    drop(err_w_high);
    let mut errno = [0u8; 4];
    let mut got = 0;
    let mut file = std::fs::File::from(err_r);
    loop {
        use std::io::Read;
        match file.read(&mut errno[got..]) {
            Ok(0) => break,
            Ok(k) => {
                got += k;
                if got == 4 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(pid); // the pipe closed on exec: the child runs the new image
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

fn unsafe_adopt(raw: i32) -> OwnedFd {
    // SAFETY: `raw` was just returned by F_DUPFD_CLOEXEC and is owned by nobody else.
    unsafe { adopt_fd(raw) }
}

/// The child half of [`spawn_exec`].
///
/// # Safety
/// Called only in a freshly forked child; everything it touches was prepared before
/// the fork.
#[allow(clippy::too_many_arguments)]
unsafe fn exec_child(
    high: &[i32],
    err_fd: i32,
    n: i32,
    die_with: Option<i32>,
    fd_limit: i32,
    path: *const libc::c_char,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: async-signal-safe calls on valid descriptors and pointers (see caller).
    unsafe {
        let fail = |fd: i32| -> ! {
            let e = *libc::__errno_location();
            libc::write(fd, (&e as *const i32).cast(), 4);
            libc::_exit(127)
        };
        for (i, fd) in high.iter().enumerate() {
            if libc::dup2(*fd, 3 + i as i32) < 0 {
                fail(err_fd);
            }
        }
        let err_at = 3 + n;
        if libc::dup2(err_fd, err_at) < 0 || libc::fcntl(err_at, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            fail(err_fd);
        }
        // Close everything above: a child inherits no descriptor it was not given.
        if libc::syscall(libc::SYS_close_range, (err_at + 1) as u32, u32::MAX, 0u32) != 0 {
            for fd in err_at + 1..fd_limit {
                libc::close(fd);
            }
        }
        // Start the new image with default signal state: a blocked SIGTERM would make
        // terminate() useless, an ignored SIGCHLD would lose every exit status.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        if let Some(parent) = die_with {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                fail(err_at);
            }
            if libc::getppid() != parent {
                libc::_exit(1); // the parent died before the request took effect
            }
        }
        libc::execve(path, argv.as_ptr(), envp.as_ptr());
        fail(err_at)
    }
}

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets: message boundaries
/// kept, descriptors passable.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(nix_err)
}

/// Sends one message carrying `bytes` and the descriptors `fds`.
pub(crate) fn send_with_fds(sock: &OwnedFd, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raw)] };
    sendmsg::<()>(sock.as_raw_fd(), &[io::IoSlice::new(bytes)], &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map(drop)
        .map_err(nix_err)
}

/// The most descriptors one message may carry (the kernel's SCM_MAX_FD is 253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 250;

/// Receives one message into `buf`; its length (0 at end of stream) and descriptors.
pub(crate) fn recv_with_fds(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!([i32; MAX_FDS_PER_MESSAGE]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(nix_err)?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(nix_err)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(raw.into_iter().map(|r| unsafe { adopt_fd(r) }));
        }
    }
    Ok((msg.bytes, fds))
}

/// A pidfd for `pid`: readable once the process has ended (any process, not just
/// our children).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { adopt_fd(fd as i32) })
}

/// Waits until one of `fds` is readable (or hung up); which are (none if a signal
/// interrupted the wait).
pub(crate) fn poll_readable(fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<Vec<bool>> {
    use std::os::fd::AsRawFd;
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|f| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `pfds` is a valid array of pollfd for the call's duration.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// How `pid` (a child that has ended) ended, without reaping it yet.
pub(crate) fn peek_exit(pid: i32) -> io::Result<Option<ChildExit>> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags).map(child_exit).map_err(nix_err)
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

/// Milliseconds on a coarse monotonic clock (a few ms resolution): always a vDSO
/// read, even on machines whose precise clock needs a system call.
pub(crate) fn coarse_millis() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Sets a signal's disposition to "ignore" or back to the default.
pub(crate) fn ignore_signal(signal: i32, ignore: bool) {
    // SAFETY: SIG_IGN and SIG_DFL are valid dispositions for any catchable signal.
    unsafe { libc::signal(signal, if ignore { libc::SIG_IGN } else { libc::SIG_DFL }) };
}

/// Reaps `pid`, waiting for it to end.
pub(crate) fn reap_blocking(pid: i32) -> io::Result<ChildExit> {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(status) => match child_exit(status) {
                Some(exit) => return Ok(exit),
                None => continue,
            },
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(nix_err(e)),
        }
    }
}

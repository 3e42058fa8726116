//! Re-executing this program as a child (the spawn start method), with chosen
//! descriptors at known numbers.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::OFlag;

use super::*;

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

//! The futex, and clocks.

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

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

/// Milliseconds on a coarse monotonic clock (a few ms resolution): always a vDSO
/// read, even on machines whose precise clock needs a system call.
pub(crate) fn coarse_millis() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

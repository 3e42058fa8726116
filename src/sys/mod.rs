//! The platform layer: every call into the operating system that shmproc makes.
//!
//! Everything above this module is portable Rust over plain shared memory; everything
//! here is one small file per operating system. Linux is the only one so far. A port
//! (macOS, say) adds a file beside `linux.rs` with the same functions; macOS has no
//! futex (`os_sync_wait_on_address` takes its place), no memfd (a named segment
//! unlinked at once), and no `/proc` (`proc_pidinfo` for owner checks).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::*;

#[cfg(not(target_os = "linux"))]
compile_error!("shmproc supports Linux only for now; see src/sys/mod.rs for what a port needs");

//! Linux: memfd and POSIX shm, the futex, thread identities from /proc,
//! randomness, and the few process calls the layers above need, one file per topic.

mod children;
mod exec;
mod fds;
mod futex;
mod identity;
mod memory;

pub(crate) use children::*;
pub(crate) use exec::*;
pub(crate) use fds::*;
pub(crate) use futex::*;
pub(crate) use identity::*;
pub(crate) use memory::*;

fn nix_err(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

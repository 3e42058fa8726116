//! The reference article's first example (section 1.1), in shmproc:
//!
//! ```python
//! def run(a):
//!     time.sleep(5)
//!     print(a)
//!     return a * a
//!
//! if __name__ == '__main__':
//!     p = multiprocessing.Process(target=run, args=(123456,))
//!     p.start()   # start the child
//!     p.join()    # block the parent until the child ends
//!     print(123)
//! ```
//!
//! Run it with `cargo run --release --example process [fork|spawn|forkserver]`.
//! (The child sleeps one second rather than five.)

use std::time::Duration;

use shmproc::{Process, StartMethod};

fn run(a: u64) {
    std::thread::sleep(Duration::from_secs(1));
    println!("{a}");
    // Python's target returns a * a, which nobody can see; a Rust target returns ().
    let _square = a * a;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Python's `if __name__ == '__main__':` guard: a re-executed child (spawn,
    // forkserver) runs its target here and never reaches the rest of main.
    shmproc::init();
    let method = match std::env::args().nth(1).as_deref() {
        Some("spawn") => StartMethod::Spawn,
        Some("forkserver") => StartMethod::ForkServer,
        _ => StartMethod::Fork,
    };
    let mut p = Process::builder(run, 123456).start_method(method).build();
    p.start()?; // start the child
    p.join()?; // block the parent until the child ends
    println!("123");
    println!("(child {} exited with {:?}, started by {method:?})", p.name(), p.exitcode());
    Ok(())
}

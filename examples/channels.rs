//! The reference article's section 1.4 (and the queue example of 1.3), in shmproc:
//! passing data between processes with a `Queue`, a `JoinableQueue` and a `Pipe`.
//!
//! ```python
//! def write(name, que):
//!     que.put("%d is done" % name)
//!
//! def read(que):
//!     while not que.empty():
//!         print('read===>: ', que.get(True))
//! ```
//!
//! Run it with `cargo run --release --example channels`.

use std::time::Duration;

use shmproc::{Connection, JoinableQueue, Pipe, Process, Queue};

const PATIENCE: Duration = Duration::from_secs(30);

fn write(args: (u32, Queue<String>)) {
    let (name, que) = args;
    que.put(format!("{name} is done")).expect("the queue is open");
    println!("{name} write done!");
}

fn read(que: Queue<String>) {
    // Unlike the article's `while not que.empty()`, which can stop before late
    // writers are done, read until the queue is closed and drained.
    while let Ok(val) = que.get_timeout(PATIENCE) {
        println!("read===>:  {val}");
    }
}

fn worker(q: JoinableQueue<Option<u64>>) {
    while let Ok(Some(n)) = q.get_timeout(PATIENCE) {
        println!("  {} squared {n} -> {}", shmproc::current_process().name, n * n);
        let _ = q.task_done();
    }
    let _ = q.task_done(); // for the None that stopped us
}

fn pong(conn: Connection<String>) {
    while let Ok(msg) = conn.recv_timeout(PATIENCE) {
        let _ = conn.send(&format!("pong to {msg}"));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmproc::init();

    println!("== Queue: 5 writer processes, 1 reader process");
    let q = Queue::<String>::new(0)?;
    let writers = (0..5).map(|i| Process::builder(write, (i, q.clone())).start()).collect::<Result<Vec<_>, _>>()?;
    let reader = Process::builder(read, q.clone()).start()?;
    for w in &writers {
        w.join_timeout(PATIENCE)?;
    }
    q.close(); // every writer is done: the reader drains what is left and stops
    reader.join_timeout(PATIENCE)?;

    println!("\n== JoinableQueue: the parent waits until every item is processed");
    let jq = JoinableQueue::<Option<u64>>::new(0)?;
    let workers = (0..2).map(|_| Process::builder(worker, jq.clone()).start()).collect::<Result<Vec<_>, _>>()?;
    for n in 1..=6 {
        jq.put(Some(n))?;
    }
    if jq.join_timeout(PATIENCE) {
        println!("  all 6 items done");
    }
    for _ in &workers {
        jq.put(None)?;
    }
    for w in &workers {
        w.join_timeout(PATIENCE)?;
    }

    println!("\n== Pipe: two processes talk");
    let (here, there) = Pipe::duplex::<String>()?;
    let child = Process::builder(pong, there).start()?;
    for word in ["ping", "hello", "bye"] {
        here.send(&word.to_string())?;
        println!("  sent {word:?}, got {:?}", here.recv_timeout(PATIENCE)?);
    }
    here.close(); // the child's recv reports Disconnected and it returns
    child.join_timeout(PATIENCE)?;
    println!("  child exited with {:?}", child.exitcode());
    Ok(())
}

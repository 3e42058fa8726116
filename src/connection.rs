//! Waiting on several connections, queues and processes at once (Python's
//! `multiprocessing.connection.wait`), so that a parent can serve many children
//! from one thread.
//!
//! Pipes and queues wait on futexes, not descriptors, so [`wait`] looks at each
//! object in turn: at once, then after pauses that grow from 20 µs to 1 ms. An
//! object that becomes ready is seen within about a millisecond, and a long wait
//! costs a thousand short looks a second. A process's end is also a descriptor
//! ([`Process::sentinel`](crate::Process::sentinel)) for a `poll` loop of your own.
//!
//! Serving a child's messages until it ends, from one thread:
//!
//! ```
//! use shmproc::{connection, Process, Queue};
//! use std::time::Duration;
//!
//! fn produce(q: Queue<u32>) {
//!     for i in 0..3 {
//!         q.put(i).unwrap();
//!     }
//! }
//! let q = Queue::new(0)?;
//! let mut p = Process::new(produce, q.clone());
//! p.start()?;
//! let end = p.sentinel()?;
//! let mut got = Vec::new();
//! loop {
//!     let ready = connection::wait(&[&q, &end], Some(Duration::from_secs(10)));
//!     // Messages first: the child put them all before it ended.
//!     if ready.contains(&0) {
//!         got.push(q.get()?);
//!     } else if ready.contains(&1) {
//!         break;
//!     }
//! }
//! p.join()?;
//! assert_eq!(got, [0, 1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::channel::Connection;
use crate::channel::{JoinableQueue, Queue, SimpleQueue};
use crate::process::Sentinel;

/// Something [`wait`] can wait on: whether it is ready now.
///
/// Implemented for connections, queues and sentinels; implement it for your own
/// type to wait on it beside them.
///
/// ```
/// use shmproc::connection::{self, Ready};
/// use shmproc::{Event, Queue};
///
/// struct Stop(Event);
/// impl Ready for Stop {
///     fn ready(&self) -> bool {
///         self.0.is_set()
///     }
/// }
/// let q = Queue::<u32>::new(0)?;
/// let stop = Stop(Event::new()?);
/// assert!(!q.ready() && !stop.ready());
/// stop.0.set();
/// assert_eq!(connection::wait(&[&q, &stop], None), [1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Ready {
    /// Whether a wait on it would return at once: a message (or the news that the
    /// other side is gone) to receive, an ended process.
    fn ready(&self) -> bool;
}

impl<T> Ready for Connection<T> {
    fn ready(&self) -> bool {
        self.ready_now()
    }
}

impl<T: Serialize + DeserializeOwned> Ready for Queue<T> {
    fn ready(&self) -> bool {
        !self.empty() || self.is_closed()
    }
}

impl<T: Serialize + DeserializeOwned> Ready for JoinableQueue<T> {
    fn ready(&self) -> bool {
        !self.empty() || self.is_closed()
    }
}

impl<T: Serialize + DeserializeOwned> Ready for SimpleQueue<T> {
    fn ready(&self) -> bool {
        !self.empty()
    }
}

impl Ready for Sentinel {
    fn ready(&self) -> bool {
        self.ended()
    }
}

/// The pause between looks grows to this.
const LONGEST_PAUSE: Duration = Duration::from_millis(1);

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`:
/// forever); the indices of those ready, in order (empty on a timeout).
///
/// ```
/// use shmproc::{connection, Pipe, Queue};
/// use std::time::Duration;
/// let (a, b) = Pipe::duplex::<u32>()?;
/// let q = Queue::<u32>::new(0)?;
/// assert!(connection::wait(&[&b, &q], Some(Duration::from_millis(5))).is_empty());
/// q.put(1)?;
/// a.send(&2)?;
/// assert_eq!(connection::wait(&[&b, &q], None), [0, 1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait(objects: &[&dyn Ready], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pause = Duration::from_micros(20);
    loop {
        let ready: Vec<usize> = objects.iter().enumerate().filter(|(_, o)| o.ready()).map(|(i, _)| i).collect();
        if !ready.is_empty() || objects.is_empty() && timeout.is_none() {
            return ready;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return ready;
        }
        let left = deadline.map_or(pause, |d| d - now);
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

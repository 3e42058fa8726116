//! The manager: shared dicts, lists and namespaces that any child process or pool
//! worker can use (Python's `multiprocessing.Manager()`), in this machine's shared
//! memory and over TCP.
//!
//! ## Design: containers in shared memory, a server only for the network
//! Python's manager is a server process; every proxy call is a socket round trip and
//! two pickles (16–33 k dict writes a second, two processes together, on this
//! machine). Ours keeps the containers themselves in one shared segment, the
//! [arena], behind one robust lock: a proxy call is a hash-table operation in the
//! caller's own process, no other process scheduled. A server process answering over
//! our own channels was the other candidate; its floor is one pipe round trip per call
//! (0.74 µs median on this machine, more with two clients and the server sharing two
//! CPUs), where the arena takes 0.27 µs a set and 0.15 µs a get in one process, and
//! two processes together make 3.4 M sets and 8.9 M gets a second (151× and 274×
//! Python's, one run of `compare`). Reads take no lock (a seqlock: see [arena]).
//!
//! For the network, [`Manager::serve`] runs a server thread beside the arena, which
//! executes the same operations ([`op`]) for authenticated clients; proxies from
//! [`Manager::connect`] send them over the connection. A proxy does not know which
//! kind it is: the same `Dict<K, V>` either way.
//!
//! ## What it promises
//! - Every method is one atomic operation; [`Dict::update`] is an atomic
//!   read-modify-write (Python has none: `d[k] += 1` loses updates).
//! - A process killed in the middle of any operation leaves every container as it was
//!   before that operation (the arena's undo log), and the manager usable.
//! - A shut-down manager answers [`ManagerError::ShutDown`] to every proxy, in every
//!   process; a dead server, a [`ManagerError::Connection`] error, never a hang.
//! - Memory is bounded by the capacity chosen at start (default
//!   [`DEFAULT_CAPACITY`]); a full manager is [`ManagerError::Full`], and nothing is
//!   half done. Removed entries' memory is reused. A container's own few words are
//!   reclaimed with the whole manager, not when its proxies drop.

mod arena;
mod error;
mod net;
mod op;
mod proxy;
mod table;

use std::fmt;
use std::net::ToSocketAddrs;
use std::sync::Arc;

use bytemuck::Pod;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::ManagerError;
pub use net::{ServeOptions, Server};
pub use proxy::{Dict, List, Namespace};

use crate::segment::{Backing, Segment};
use crate::{
    Array, Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, Queue, RLock, SegmentCreateError,
    Semaphore, Value,
};
use arena::Arena;
use proxy::Backend;

/// A manager's capacity unless [`ManagerBuilder::capacity`] says otherwise: 16 MiB
/// (262 080 `u64 -> u64` dict entries).
pub const DEFAULT_CAPACITY: usize = 16 << 20;

/// Shared containers for processes (Python's `multiprocessing.Manager()`): dicts,
/// lists and namespaces of serde types, and the crate's queues, locks and values.
///
/// ```
/// use shmproc::{Manager, Process};
///
/// fn fill((d, i): (shmproc::Dict<u64, u64>, u64)) {
///     d.insert(i, i * i).unwrap();
/// }
///
/// let m = Manager::start()?;
/// let d = m.dict::<u64, u64>()?;
/// let mut children: Vec<Process> = (0..4).map(|i| Process::new(fill, (d.clone(), i))).collect();
/// for p in &mut children {
///     p.start()?;
/// }
/// for p in &mut children {
///     p.join()?;
/// }
/// let mut squares = d.items()?;
/// squares.sort();
/// assert_eq!(squares, [(0, 0), (1, 1), (2, 4), (3, 9)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The manager made by [`start`](Manager::start) shuts down when dropped (Python's
/// `with Manager() as m:`): its proxies, in every process, then answer
/// [`ManagerError::ShutDown`]. One made by [`open`](Manager::open) or
/// [`connect`](Manager::connect) is a way in, and dropping it shuts nothing down.
pub struct Manager {
    backend: Backend,
    owner: bool,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager").field("backend", &self.backend).field("owner", &self.owner).finish()
    }
}

/// Choices for a new [`Manager`]: its capacity and whether it has a name.
///
/// ```
/// let m = shmproc::Manager::builder().capacity(1 << 20).anonymous().start()?;
/// assert_eq!(m.capacity(), Some(1 << 20));
/// assert!(m.name().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManagerBuilder {
    capacity: usize,
    naming: Naming,
}

#[derive(Debug, Clone)]
enum Naming {
    Random,
    Anonymous,
    Chosen(String),
}

impl ManagerBuilder {
    /// The bytes the manager may hold, headers and free space included (default
    /// [`DEFAULT_CAPACITY`], at least 64 KiB). A named manager reserves them in
    /// `/dev/shm` at start, so that a full `/dev/shm` is an error then, never a
    /// crash later; an anonymous one takes memory only as it fills.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Keeps the manager nameless (a memfd). Its proxies then travel to children only
    /// as process arguments, not inside `Queue` or `Pipe` messages or pool tasks, and
    /// no unrelated process can [`open`](Manager::open) it.
    pub fn anonymous(mut self) -> Self {
        self.naming = Naming::Anonymous;
        self
    }

    /// Names the manager `name` (`/` then up to 254 characters), so that unrelated
    /// programs can [`open`](Manager::open) it.
    pub fn name(mut self, name: &str) -> Self {
        self.naming = Naming::Chosen(name.to_owned());
        self
    }

    /// Starts the manager (Python's `Manager()` / `manager.start()`).
    pub fn start(self) -> Result<Manager, SegmentCreateError> {
        let backing = match &self.naming {
            Naming::Random => Backing::Named,
            Naming::Anonymous => Backing::Anonymous,
            Naming::Chosen(name) => Backing::NamedAs(name),
        };
        let arena = Arena::create(self.capacity, backing)?;
        Ok(Manager { backend: Backend::Local(arena), owner: true })
    }
}

impl Manager {
    /// Starts a manager with the default choices: a name (so that its proxies travel
    /// anywhere a shared object can) and [`DEFAULT_CAPACITY`] bytes.
    pub fn start() -> Result<Manager, SegmentCreateError> {
        Manager::builder().start()
    }

    /// Choices for a new manager.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder { capacity: DEFAULT_CAPACITY, naming: Naming::Random }
    }

    /// Attaches to the manager named `name`, started by another process.
    ///
    /// ```
    /// let m = shmproc::Manager::start()?;
    /// m.list_named::<u8>("log")?.push(1)?;
    /// let other = shmproc::Manager::open(m.name().unwrap())?;
    /// assert_eq!(other.list_named::<u8>("log")?.to_vec()?, [1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(name: &str) -> Result<Manager, crate::SegmentOpenError> {
        let seg = Segment::open_unchecked(name)?;
        let arena = Arena::from_segment(Arc::new(seg))?;
        Ok(Manager { backend: Backend::Local(arena), owner: false })
    }

    /// Connects to a manager served at `addr` with [`serve`](Manager::serve), proving
    /// that this process holds `authkey` and checking that the server does
    /// (Python's `BaseManager(address, authkey).connect()`). Its proxies behave as a
    /// local manager's, over one connection shared by all of them: a connection
    /// that fails (the server gone, a reply later than a minute) stays failed, and
    /// every proxy made through it answers [`ManagerError::Connection`]; connect
    /// again for a new one.
    pub fn connect(addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<Manager, ManagerError> {
        let client = net::Client::connect(addr, authkey)?;
        Ok(Manager { backend: Backend::Remote(Arc::new(client)), owner: false })
    }

    /// Serves this manager over TCP at `addr` to clients holding `authkey`, from a
    /// thread of this process, with the default [`ServeOptions`]. Bind to a loopback
    /// address (`"127.0.0.1:0"` picks a free port) unless other machines must reach
    /// it: the traffic is authenticated, not encrypted (see the README).
    pub fn serve(&self, addr: impl ToSocketAddrs, authkey: &[u8]) -> Result<Server, ManagerError> {
        self.serve_with(addr, authkey, ServeOptions::default())
    }

    /// [`serve`](Manager::serve) with other limits and timeouts.
    pub fn serve_with(
        &self,
        addr: impl ToSocketAddrs,
        authkey: &[u8],
        options: ServeOptions,
    ) -> Result<Server, ManagerError> {
        let arena = self.local("serve")?;
        Server::start(arena.clone(), addr, authkey, options)
    }

    fn local(&self, what: &str) -> Result<&Arena, ManagerError> {
        match &self.backend {
            Backend::Local(arena) => Ok(arena),
            Backend::Remote(_) => Err(ManagerError::Unsupported(format!(
                "`{what}` needs this machine's shared memory; a manager reached over the network offers \
                 dicts, lists and namespaces"
            ))),
        }
    }

    /// The name other processes [`open`](Manager::open) it by; `None` for an
    /// anonymous or remote manager.
    pub fn name(&self) -> Option<&str> {
        match &self.backend {
            Backend::Local(arena) => arena.segment().name(),
            Backend::Remote(_) => None,
        }
    }

    /// The capacity in bytes; `None` for a remote manager.
    pub fn capacity(&self) -> Option<usize> {
        self.local("capacity").ok().map(Arena::capacity)
    }

    /// The bytes handed out so far (freed ones are reused before this grows);
    /// `None` for a remote manager.
    pub fn used(&self) -> Option<usize> {
        self.local("used").ok().map(Arena::used)
    }

    /// Shuts the manager down: every proxy, in every process, then answers
    /// [`ManagerError::ShutDown`] (Python's `manager.shutdown()`). On a remote
    /// manager, closes this process's connection only: its proxies then answer
    /// [`ManagerError::Connection`], and the server serves on.
    pub fn shutdown(&self) {
        match &self.backend {
            Backend::Local(arena) => arena.shut_down(),
            Backend::Remote(client) => client.close(),
        }
    }

    /// Whether the manager was shut down.
    pub fn is_shut_down(&self) -> bool {
        matches!(&self.backend, Backend::Local(a) if a.is_shut_down())
    }

    /// A new, empty shared dict (Python's `manager.dict()`).
    pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
    ) -> Result<Dict<K, V>, ManagerError> {
        Dict::open(self.backend.clone(), None)
    }

    /// The dict named `name` in this manager, made empty on first use: how processes
    /// that share no proxy (a client over the network, an unrelated program) meet at
    /// one dict. Its key and value types must be `K` and `V`
    /// ([`ManagerError::WrongType`] otherwise).
    pub fn dict_named<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Dict<K, V>, ManagerError> {
        Dict::open(self.backend.clone(), Some(name))
    }

    /// A new, empty shared list (Python's `manager.list()`).
    pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<List<T>, ManagerError> {
        List::open(self.backend.clone(), None)
    }

    /// The list named `name`, made empty on first use (see [`dict_named`](Manager::dict_named)).
    pub fn list_named<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<List<T>, ManagerError> {
        List::open(self.backend.clone(), Some(name))
    }

    /// A new namespace (Python's `manager.Namespace()`).
    pub fn namespace(&self) -> Result<Namespace, ManagerError> {
        Namespace::open(self.backend.clone(), None)
    }

    /// The namespace named `name`, made empty on first use.
    pub fn namespace_named(&self, name: &str) -> Result<Namespace, ManagerError> {
        Namespace::open(self.backend.clone(), Some(name))
    }

    /// Whether objects this manager makes get names (so that they travel in messages).
    fn named(&self) -> Result<bool, ManagerError> {
        Ok(self.local("the crate's queues and locks")?.segment().name().is_some())
    }

    /// A [`Queue`] of at most `maxsize` items (0: the ring's capacity), named when the
    /// manager is (Python's `manager.Queue(maxsize)`). A crate `Queue` needs no
    /// manager; this is here so that code written for Python's reads the same.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, maxsize: u32) -> Result<Queue<T>, ManagerError> {
        let named = self.named()?;
        Ok(Queue::builder().maxsize(maxsize).named(named).build()?)
    }

    /// A [`JoinableQueue`] (Python's `manager.JoinableQueue(maxsize)`).
    pub fn joinable_queue<T: Serialize + DeserializeOwned>(
        &self,
        maxsize: u32,
    ) -> Result<JoinableQueue<T>, ManagerError> {
        let named = self.named()?;
        Ok(Queue::builder().maxsize(maxsize).named(named).build_joinable()?)
    }

    /// A [`Lock`] (Python's `manager.Lock()`).
    pub fn lock(&self) -> Result<Lock, ManagerError> {
        Ok(if self.named()? { Lock::new_named()? } else { Lock::new()? })
    }

    /// An [`RLock`] (Python's `manager.RLock()`).
    pub fn rlock(&self) -> Result<RLock, ManagerError> {
        Ok(if self.named()? { RLock::new_named()? } else { RLock::new()? })
    }

    /// A [`Semaphore`] (Python's `manager.Semaphore(value)`).
    pub fn semaphore(&self, value: u32) -> Result<Semaphore, ManagerError> {
        Ok(if self.named()? { Semaphore::new_named(value)? } else { Semaphore::new(value)? })
    }

    /// A [`BoundedSemaphore`] (Python's `manager.BoundedSemaphore(value)`).
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore, ManagerError> {
        Ok(if self.named()? { BoundedSemaphore::new_named(value)? } else { BoundedSemaphore::new(value)? })
    }

    /// A [`Condition`] with its own lock (Python's `manager.Condition()`).
    pub fn condition(&self) -> Result<Condition, ManagerError> {
        Ok(if self.named()? { Condition::new_named()? } else { Condition::new()? })
    }

    /// An [`Event`] (Python's `manager.Event()`).
    pub fn event(&self) -> Result<Event, ManagerError> {
        Ok(if self.named()? { Event::new_named()? } else { Event::new()? })
    }

    /// A [`Barrier`] for `parties` (Python's `manager.Barrier(parties)`).
    pub fn barrier(&self, parties: u32) -> Result<Barrier, ManagerError> {
        Ok(if self.named()? { Barrier::new_named(parties)? } else { Barrier::new(parties)? })
    }

    /// A [`Value`] (Python's `manager.Value(typecode, value)`).
    pub fn value<T: Pod>(&self, value: T) -> Result<Value<T>, ManagerError> {
        Ok(if self.named()? { Value::new_named(value)? } else { Value::new(value)? })
    }

    /// An [`Array`] holding a copy of `items` (Python's `manager.Array(typecode, sequence)`).
    pub fn array<T: Pod>(&self, items: &[T]) -> Result<Array<T>, ManagerError> {
        Ok(if self.named()? { Array::from_slice_named(items)? } else { Array::from_slice(items)? })
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.owner {
            self.shutdown();
        }
    }
}

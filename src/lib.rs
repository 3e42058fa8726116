//! # shmproc
//!
//! Python's `multiprocessing` for Rust, on shared memory: the objects a Python user
//! knows, shared between real processes, one to two orders of magnitude faster, and
//! robust where Python hangs (a lock holder that dies, a corrupted segment).
//!
//! A pool of worker processes, as Python's `multiprocessing.Pool(2).map(square, range(10))`:
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = shmproc::Pool::new(2)?;
//! let squares = pool.map(square, 0..10u64)?;
//! assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! pool.close();
//! pool.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Shared data, as Python's `multiprocessing.Value`:
//!
//! ```
//! use shmproc::Value;
//!
//! let counter = Value::<u64>::new(0)?;
//! // A forked child (or any process that opened it by name) sees the same value.
//! for _ in 0..10 {
//!     *counter.lock().unwrap() += 1;
//! }
//! assert_eq!(counter.get()?, 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## What is here, bottom up
//! Every item is at the crate root; each layer is built on the ones above it.
//!
//! | layer | what you use |
//! |---|---|
//! | shared memory | anonymous (memfd) segments by default, named (POSIX shm) ones with `new_named` / `open`; [`remove_orphaned_segments`] |
//! | locks and signals | [`Lock`], [`RLock`], [`Semaphore`], [`BoundedSemaphore`], [`Condition`], [`Event`], [`Barrier`]: robust when a holder dies |
//! | shared data | [`Value`], [`Array`], [`RawValue`], [`RawArray`] of any `T: bytemuck::Pod` |
//! | channels | [`Queue`], [`JoinableQueue`], [`Pipe`] and its [`Connection`]s, of any serde type |
//! | processes | [`Process`] with the [`StartMethod`]s fork, spawn and forkserver; [`spawn`] and its [`JoinHandle`] |
//! | pools | [`Pool`]: `apply`, `map`, `imap`, `starmap` and their async forms |
//! | executors | [`ProcessPoolExecutor`], [`ThreadPoolExecutor`], [`TaskFuture`], [`as_completed`], [`wait`] |
//! | manager | [`Manager`] and its [`Dict`], [`List`] and [`Namespace`] proxies, also over TCP ([`Server`]) |
//!
//! ## Sharing with a child process
//! Every object here lives in a `MAP_SHARED` mapping. Pass it to a [`Process`] as
//! (part of) its arguments and the child gets a handle to the same memory, under
//! every start method. Objects made with `new_named` (or `from_slice_named`) can
//! also be opened by name from an unrelated process with `open`, and travel inside
//! a `Queue` or `Pipe` message (the receiver opens them by name); an anonymous one
//! in a message is an error that says so.
//!
//! ```
//! use shmproc::{Process, Value};
//!
//! fn double(v: Value<u64>) {
//!     *v.lock().unwrap() *= 2;
//! }
//!
//! let v = Value::new(21u64)?;
//! let mut p = Process::new(double, v.clone());
//! p.start()?;
//! p.join()?;
//! assert_eq!(v.get()?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A target takes one argument: a tuple carries several objects. Here a queue, one
//! end of a pipe and a lock go to one child:
//!
//! ```
//! use shmproc::{Connection, Lock, Pipe, Process, Queue};
//! use std::time::Duration;
//!
//! fn worker((jobs, reply, lock): (Queue<u32>, Connection<String>, Lock)) {
//!     let n = jobs.get().unwrap();
//!     let _held = lock.acquire().unwrap();
//!     reply.send(&format!("{n} squared is {}", n * n)).unwrap();
//! }
//!
//! let jobs = Queue::new(0)?;
//! let (mine, theirs) = Pipe::duplex::<String>()?;
//! let lock = Lock::new()?;
//! let mut p = Process::new(worker, (jobs.clone(), theirs, lock.clone()));
//! let guard = lock.acquire().unwrap();
//! p.start()?;
//! jobs.put(7)?;
//! // The child waits for the lock we hold, so no reply can come yet.
//! assert!(mine.recv_timeout(Duration::from_millis(20)).is_err());
//! drop(guard);
//! assert_eq!(mine.recv()?, "7 squared is 49");
//! p.join()?;
//! assert_eq!(p.exitcode(), Some(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod channel;
pub mod connection;
mod executor;
mod manager;
mod names;
mod pool;
mod process;
mod segment;
mod shared;
mod steps;
mod sync;
mod sys;
mod wire;

#[doc(hidden)]
pub mod testing;

/// The README's examples, run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use channel::{
    BufferTooShort, ChannelFault, Connection, GetLoan, JoinableQueue, Pipe, PutLoan, Queue, QueueBuilder, RecvError,
    RecvIntoError, RecvTimeoutError, SendError, SendTimeoutError, SimpleQueue, TaskDoneError, TryRecvError,
    TrySendError, DEFAULT_CAPACITY,
};
pub use executor::{
    as_completed, wait, AsCompleted, Executor, ExecutorMap, MapOptions, ProcessPoolExecutor,
    ProcessPoolExecutorBuilder, ReturnWhen, SubmitError, TaskFuture, ThreadPoolExecutor, ThreadPoolExecutorBuilder,
};
pub use manager::{
    Dict, List, Manager, ManagerBuilder, ManagerError, Namespace, ServeOptions, Server,
    DEFAULT_CAPACITY as MANAGER_DEFAULT_CAPACITY,
};
pub use pool::{AsyncResult, IMap, MapResult, Pool, PoolBuilder, PoolError, StarTask, TaskError};
pub use process::{
    active_children, context, cpu_count, current_process, get_all_start_methods, get_start_method, init,
    parent_process, set_start_method, set_start_method_forced, spawn, Context, JoinError, JoinHandle, Process,
    ProcessBuilder, ProcessError, ProcessInfo, Sentinel, StartMethod, EXITCODE_UNKNOWN,
};
pub use segment::{remove_orphaned_segments, ObjectKind, SegmentCreateError, SegmentOpenError};
pub use shared::{Array, ArrayError, ArrayGuard, RawArray, RawValue, Value, ValueGuard};
pub use sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockError, LockGuard, LockResult,
    RLock, RLockGuard, ReleaseError, Semaphore,
};

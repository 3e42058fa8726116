//! The server: a thread accepting connections, and one thread per authenticated
//! client running its requests on the manager's arena.

use std::collections::HashMap;
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{auth, FrameError, Framed, MAX_FRAME};
use crate::manager::arena::Arena;
use crate::manager::op::{self, Op, Reply};
use crate::manager::ManagerError;

/// How a [`Server`] treats its clients: limits and timeouts that keep one slow,
/// silent or hostile client from hurting the others.
///
/// ```
/// use std::time::Duration;
///
/// let options = shmproc::ServeOptions::default()
///     .idle_timeout(Duration::from_secs(60))
///     .max_connections(16);
/// let m = shmproc::Manager::start()?;
/// let server = m.serve_with("127.0.0.1:0", b"secret", options)?;
/// assert!(server.local_addr().ip().is_loopback());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServeOptions {
    handshake_timeout: Duration,
    frame_timeout: Duration,
    idle_timeout: Option<Duration>,
    max_frame: usize,
    max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            max_frame: MAX_FRAME,
            max_connections: 256,
        }
    }
}

impl ServeOptions {
    /// How long a new connection has to authenticate (default 5 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }

    /// How long a request may take to arrive once its first byte has (default 10 s);
    /// also the bound on sending one reply.
    pub fn frame_timeout(mut self, d: Duration) -> Self {
        self.frame_timeout = d;
        self
    }

    /// How long a client may stay silent between requests (default 10 minutes;
    /// `None`: forever).
    pub fn idle_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = d.into();
        self
    }

    /// The largest request, in bytes (default 64 MiB).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Clients served at once (default 256); more are closed as they arrive.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
}

/// A manager served over TCP (Python's `manager.get_server().serve_forever()` in a
/// thread). Stops serving when dropped or [`shutdown`](Server::shutdown).
///
/// ```
/// use shmproc::Manager;
///
/// let m = Manager::start()?;
/// let server = m.serve("127.0.0.1:0", b"secret")?;
/// let remote = Manager::connect(server.local_addr(), b"secret")?;
/// remote.dict_named::<String, u32>("scores")?.insert("ann".into(), 7)?;
/// assert_eq!(m.dict_named::<String, u32>("scores")?.get(&"ann".into())?, Some(7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepter: Option<thread::JoinHandle<()>>,
}

struct Shared {
    stop: AtomicBool,
    /// The open connections, so that shutting down can close them.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Server {
    pub(crate) fn start(
        arena: Arena,
        addr: impl ToSocketAddrs,
        key: &[u8],
        options: ServeOptions,
    ) -> Result<Server, ManagerError> {
        if key.is_empty() {
            return Err(ManagerError::Authentication("an empty authkey"));
        }
        let listener = TcpListener::bind(addr).map_err(ManagerError::Connection)?;
        let addr = listener.local_addr().map_err(ManagerError::Connection)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections: Mutex::default(),
            next_id: AtomicU64::new(0),
        });
        let key = key.to_vec();
        let accepter = thread::Builder::new()
            .name("shmproc-manager-server".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(listener, arena, key, options, shared)
            })
            .map_err(ManagerError::Connection)?;
        Ok(Server { addr, shared, accepter: Some(accepter) })
    }

    /// The address the server listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The number of clients connected now.
    pub fn connections(&self) -> usize {
        self.shared.connections.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Stops accepting, closes every connection and waits (up to 5 s) for their
    /// threads to finish. The manager itself keeps serving local proxies.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(a) = self.accepter.take() {
            let _ = a.join();
        }
        if let Ok(conns) = self.shared.connections.lock() {
            for s in conns.values() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.connections() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.accepter.is_some() {
            self.stop();
        }
    }
}

fn accept_loop(listener: TcpListener, arena: Arena, key: Vec<u8>, options: ServeOptions, shared: Arc<Shared>) {
    let key: Arc<[u8]> = key.into();
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of descriptors, say: let the others finish before trying again.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let Ok(mut conns) = shared.connections.lock() else { return };
            let Ok(clone) = stream.try_clone() else { continue };
            if conns.len() >= options.max_connections {
                continue; // dropping `stream` closes it
            }
            conns.insert(id, clone);
        }
        let (arena, key, options, shared) = (arena.clone(), Arc::clone(&key), options.clone(), Arc::clone(&shared));
        let spawned = thread::Builder::new().name("shmproc-manager-client".into()).spawn({
            let shared = Arc::clone(&shared);
            move || {
                let _ = serve_client(stream, &arena, &key, &options);
                if let Ok(mut c) = shared.connections.lock() {
                    c.remove(&id);
                }
            }
        });
        if spawned.is_err() {
            if let Ok(mut c) = shared.connections.lock() {
                c.remove(&id);
            }
        }
    }
}

/// Authenticates one client and runs its requests until it leaves, breaks the
/// protocol, or stays silent past the idle timeout.
fn serve_client(stream: TcpStream, arena: &Arena, key: &[u8], options: &ServeOptions) -> Result<(), ManagerError> {
    stream.set_write_timeout(Some(options.frame_timeout)).map_err(ManagerError::Connection)?;
    let mut stream = Framed::new(stream).map_err(ManagerError::Connection)?;
    auth::server(&mut stream, key, options.handshake_timeout)?;
    loop {
        let frame = match stream.read_frame(options.max_frame, options.idle_timeout, options.frame_timeout) {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // Bytes that are no request end this connection, and only this one.
        let op: Op = postcard::from_bytes(&frame).map_err(|e| ManagerError::Protocol(e.to_string()))?;
        let reply = op::execute(arena, op).unwrap_or_else(|e| Reply::Failed(e.into()));
        let bytes = postcard::to_allocvec(&reply).map_err(|e| ManagerError::Protocol(e.to_string()))?;
        stream.write_frame(&bytes).map_err(ManagerError::Connection)?;
    }
}

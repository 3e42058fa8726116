//! The server: a thread accepting connections, and one thread per authenticated
//! client running its requests on the manager's arena.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{auth, FrameError, Framed, MAX_FRAME};
use crate::manager::arena::Arena;
use crate::manager::op::{self, Op, Reply, WireError};
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
    max_handshakes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(5),
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            max_frame: MAX_FRAME,
            max_connections: 256,
            max_handshakes: 32,
        }
    }
}

/// Time-outs are kept between a millisecond (a zero time-out is no time-out to a
/// socket) and a year (a deadline must fit in an `Instant`).
fn sane(d: Duration) -> Duration {
    d.clamp(Duration::from_millis(1), Duration::from_secs(365 * 24 * 3600))
}

impl ServeOptions {
    /// How long a new connection has to authenticate, in all (default 5 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = sane(d);
        self
    }

    /// How long a request may take to arrive once its first byte has (default 10 s);
    /// also the bound on sending one reply.
    pub fn frame_timeout(mut self, d: Duration) -> Self {
        self.frame_timeout = sane(d);
        self
    }

    /// How long a client may stay silent between requests (default 10 minutes;
    /// `None`: forever).
    pub fn idle_timeout(mut self, d: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = d.into().map(sane);
        self
    }

    /// Connections still authenticating at once (default 32); more are closed as
    /// they arrive, so that peers without the key cannot take every slot.
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
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
    /// Connections that have not authenticated yet.
    handshakes: std::sync::atomic::AtomicUsize,
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
            handshakes: std::sync::atomic::AtomicUsize::new(0),
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
            if conns.len() >= options.max_connections
                || shared.handshakes.load(Ordering::SeqCst) >= options.max_handshakes
            {
                continue; // dropping `stream` closes it
            }
            conns.insert(id, clone);
            shared.handshakes.fetch_add(1, Ordering::SeqCst);
        }
        // Leaves the registry (and the handshake count) however the thread ends, a
        // panic included, so that no slot is lost.
        let registered = Registered { shared: Arc::clone(&shared), id, authenticating: true };
        let (arena, key, options) = (arena.clone(), Arc::clone(&key), options.clone());
        let _ = thread::Builder::new().name("shmproc-manager-client".into()).spawn(move || {
            let mut registered = registered;
            let _ = serve_client(stream, &arena, &key, &options, &mut registered);
        });
        // A thread that could not start dropped its `Registered` with the closure.
    }
}

/// A connection's place in the server's registry, given up when dropped.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
    authenticating: bool,
}

impl Registered {
    fn authenticated(&mut self) {
        if std::mem::replace(&mut self.authenticating, false) {
            self.shared.handshakes.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.authenticated();
        if let Ok(mut c) = self.shared.connections.lock() {
            c.remove(&self.id);
        }
    }
}

/// Authenticates one client and runs its requests until it leaves, breaks the
/// protocol, or stays silent past the idle timeout.
fn serve_client(
    stream: TcpStream,
    arena: &Arena,
    key: &[u8],
    options: &ServeOptions,
    registered: &mut Registered,
) -> Result<(), ManagerError> {
    stream.set_write_timeout(Some(options.frame_timeout)).map_err(ManagerError::Connection)?;
    let mut stream = Framed::new(stream).map_err(ManagerError::Connection)?;
    auth::server(&mut stream, key, options.handshake_timeout)?;
    registered.authenticated();
    // The containers this client opened: the only ids it may name. Another id could
    // point anywhere in the arena (bytes a client stored can look like a container).
    let mut opened = HashSet::new();
    loop {
        let frame = match stream.read_frame(options.max_frame, options.idle_timeout, options.frame_timeout, None) {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // Bytes that are no request end this connection, and only this one.
        let op: Op = postcard::from_bytes(&frame).map_err(|e| ManagerError::Protocol(e.to_string()))?;
        let reply = match op.target() {
            Some(id) if !opened.contains(&id) => {
                Reply::Failed(WireError::Other(format!("container {id} was not opened on this connection")))
            }
            _ => op::execute(arena, op).unwrap_or_else(|e| Reply::Failed(e.into())),
        };
        if let Reply::Id(id) = reply {
            opened.insert(id);
        }
        let bytes = postcard::to_allocvec(&reply).map_err(|e| ManagerError::Protocol(e.to_string()))?;
        stream.write_frame(&bytes).map_err(ManagerError::Connection)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::net::Client;
    use crate::manager::op::Kind;
    use crate::segment::Backing;

    fn served() -> (Arena, Server) {
        let arena = Arena::create(1 << 20, Backing::Anonymous).unwrap();
        let server = Server::start(arena.clone(), "127.0.0.1:0", b"k", ServeOptions::default()).unwrap();
        (arena, server)
    }

    /// Review finding: a client could name any id, and bytes it stored could be
    /// made to look like a container anywhere in the arena. Only ids its own
    /// connection opened are served.
    #[test]
    fn a_client_may_only_name_containers_its_connection_opened() {
        let (arena, server) = served();
        let local =
            op::execute(&arena, Op::Open { kind: Kind::Dict, name: None, types: [1, 2] }).unwrap().id().unwrap();
        let client = Client::connect(server.local_addr(), b"k").unwrap();
        let foreign = client.call(Op::Len { id: local, kind: Kind::Dict }).unwrap();
        assert!(
            matches!(foreign, Reply::Failed(WireError::Other(ref why)) if why.contains("not opened")),
            "{foreign:?}"
        );
        let mine = client.call(Op::Open { kind: Kind::Dict, name: None, types: [1, 2] }).unwrap().id().unwrap();
        assert_eq!(client.call(Op::Len { id: mine, kind: Kind::Dict }).unwrap().len().unwrap(), 0);
        // Opened by name on this connection: allowed, as the name is the handle.
        let named = Op::Open { kind: Kind::List, name: Some("l".into()), types: [3, 0] };
        let id = client.call(named).unwrap().id().unwrap();
        assert!(client.call(Op::ListPop { id }).unwrap().maybe().unwrap().is_none());
    }

    /// Review finding: peers that never authenticate could take every slot. Beyond
    /// `max_handshakes` a new connection is closed at once; authenticated clients
    /// are served meanwhile.
    #[test]
    fn silent_peers_cannot_take_every_slot() {
        use std::io::Read;
        let arena = Arena::create(1 << 20, Backing::Anonymous).unwrap();
        let options = ServeOptions::default().max_handshakes(2).handshake_timeout(Duration::from_secs(3));
        let server = Server::start(arena, "127.0.0.1:0", b"k", options).unwrap();
        let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(server.local_addr()).unwrap()).collect();
        // Let the server count them.
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.shared.handshakes.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let mut third = TcpStream::connect(server.local_addr()).unwrap();
        third.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(third.read(&mut buf), Ok(0) | Err(_)), "a third silent peer was let in");
        drop(silent);
        // Once they have gone, a real client gets in.
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.shared.handshakes.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let client = Client::connect(server.local_addr(), b"k").unwrap();
        assert!(client.call(Op::Open { kind: Kind::Dict, name: None, types: [0, 0] }).is_ok());
    }

    #[test]
    fn time_outs_are_kept_sane() {
        let o = ServeOptions::default().idle_timeout(Duration::ZERO).frame_timeout(Duration::MAX);
        assert_eq!(o.idle_timeout, Some(Duration::from_millis(1)));
        assert!(o.frame_timeout <= Duration::from_secs(365 * 24 * 3600));
    }
}

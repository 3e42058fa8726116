//! A manager shared over the network (the article: a Manager "can even be shared
//! over the network among multiple clients"): a server and two clients in one
//! program, on loopback.
//!
//! ```python
//! from multiprocessing.managers import SyncManager
//! server = SyncManager(address=("127.0.0.1", 50000), authkey=b"secret")
//! server.start()
//! client = SyncManager(address=("127.0.0.1", 50000), authkey=b"secret")
//! client.connect()
//! ```
//!
//! Both sides prove they hold the authkey before any request (HMAC-SHA256 over fresh
//! nonces). The traffic is authenticated, not encrypted: keep it on loopback or a
//! private network, or tunnel it (TLS, SSH) across networks that are not yours.
//!
//! Run it with `cargo run --release --example manager_network`.

use std::time::Instant;

use shmproc::{Manager, ManagerError, Process};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const AUTHKEY: &[u8] = b"secret";

/// A client in another process: connects, finds the shared dict by name, counts.
fn client((addr, id): (std::net::SocketAddr, u32)) {
    let remote = Manager::connect(addr, AUTHKEY).expect("the server is up and the key is right");
    let words = remote.dict_named::<String, u64>("word counts").expect("a dict of String to u64");
    for word in ["spam", "eggs", "spam", "ham", "spam"] {
        words.update(word.into(), |n| n.unwrap_or(0) + 1).expect("the server answers");
    }
    remote.list_named::<String>("log").and_then(|l| l.push(format!("client {id} done"))).expect("logged");
}

fn main() -> Result {
    shmproc::init();
    let manager = Manager::start()?;
    let server = manager.serve("127.0.0.1:0", AUTHKEY)?;
    let addr = server.local_addr();
    println!("serving on {addr}");

    let mut clients: Vec<Process> = (0..2).map(|id| Process::new(client, (addr, id))).collect();
    for c in &mut clients {
        c.start()?;
    }
    for c in &mut clients {
        c.join()?;
    }

    // The server's own process sees the same containers, without the network.
    let mut counts = manager.dict_named::<String, u64>("word counts")?.items()?;
    counts.sort();
    println!("word counts: {counts:?}");
    println!("log: {:?}", manager.list_named::<String>("log")?.to_vec()?);
    assert_eq!(counts, [("eggs".into(), 2), ("ham".into(), 2), ("spam".into(), 6)]);

    // A wrong key is refused before any request is served.
    match Manager::connect(addr, b"guess") {
        Err(ManagerError::Authentication(why)) => println!("a wrong key: {why}"),
        other => println!("a wrong key was not refused: {other:?}"),
    }

    // One client round trip, timed.
    let remote = Manager::connect(addr, AUTHKEY)?;
    let d = remote.dict::<u64, u64>()?;
    let t = Instant::now();
    for i in 0..2000 {
        d.insert(i, i)?;
    }
    println!("2000 inserts over loopback: {:.1} µs each", t.elapsed().as_secs_f64() * 1e6 / 2000.0);
    server.shutdown();
    Ok(())
}

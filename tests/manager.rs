//! `Manager` across real processes: every container method, proxies under every
//! start method, through queues and pool workers, concurrent updates that lose
//! nothing, shutdown, holders killed mid-operation, scribbled memory, and the TCP
//! server's authentication and its defences against hostile clients.

shmproc::init_before_main!();

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use shmproc::{Dict, List, Manager, ManagerError, Namespace, Pool, Process, Queue, RawValue, StartMethod};

const METHODS: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

#[test]
fn every_dict_method_does_what_its_python_name_says() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, Vec<u32>>().unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.insert("a".into(), vec![1]).unwrap(), None);
    assert_eq!(d.insert("a".into(), vec![1, 2]).unwrap(), Some(vec![1]));
    assert_eq!(d.insert("b".into(), vec![]).unwrap(), None);
    assert_eq!(d.get(&"a".into()).unwrap(), Some(vec![1, 2]));
    assert_eq!(d.get(&"zz".into()).unwrap(), None);
    assert!(d.contains_key(&"b".into()).unwrap());
    assert!(!d.contains_key(&"c".into()).unwrap());
    assert_eq!(d.len().unwrap(), 2);
    let mut keys = d.keys().unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    let mut values = d.values().unwrap();
    values.sort();
    assert_eq!(values, [vec![], vec![1, 2]]);
    let expected: HashMap<String, Vec<u32>> = [("a".into(), vec![1, 2]), ("b".into(), vec![])].into();
    assert_eq!(d.to_hashmap().unwrap(), expected);
    assert_eq!(d.items().unwrap().len(), 2);
    // The famous trap of Python's proxies, made explicit: update changes it in place.
    assert_eq!(
        d.update("a".into(), |v| {
            let mut v = v.unwrap();
            v.push(3);
            v
        })
        .unwrap(),
        vec![1, 2, 3]
    );
    assert_eq!(d.get(&"a".into()).unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(d.setdefault("c".into(), vec![9]).unwrap(), vec![9]);
    assert_eq!(d.setdefault("c".into(), vec![0]).unwrap(), vec![9]);
    assert_eq!(d.remove(&"b".into()).unwrap(), Some(vec![]));
    assert_eq!(d.remove(&"b".into()).unwrap(), None);
    d.clear().unwrap();
    assert_eq!(d.len().unwrap(), 0);
    assert_eq!(d.get(&"a".into()).unwrap(), None);
}

#[test]
fn every_list_and_namespace_method_works() {
    let m = Manager::start().unwrap();
    let l = m.list::<u64>().unwrap();
    assert_eq!(l.pop().unwrap(), None);
    l.extend(0..100).unwrap();
    l.push(100).unwrap();
    assert_eq!(l.len().unwrap(), 101);
    assert_eq!(l.get(50).unwrap(), 50);
    assert_eq!(l.set(50, 5000).unwrap(), 50);
    assert_eq!(l.get(50).unwrap(), 5000);
    assert!(matches!(l.get(101), Err(ManagerError::IndexOutOfRange { index: 101, len: 101 })));
    assert!(matches!(l.set(200, 1), Err(ManagerError::IndexOutOfRange { .. })));
    assert_eq!(l.pop().unwrap(), Some(100));
    let v = l.to_vec().unwrap();
    assert_eq!(v.len(), 100);
    assert_eq!(v[49..52], [49, 5000, 51]);
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());

    let ns = m.namespace().unwrap();
    ns.set("x", &1.5f64).unwrap();
    ns.set("name", &"worker".to_string()).unwrap();
    assert_eq!(ns.get::<f64>("x").unwrap(), Some(1.5));
    assert!(matches!(ns.get::<u64>("x"), Err(ManagerError::WrongType)));
    let mut names = ns.names().unwrap();
    names.sort();
    assert_eq!(names, ["name", "x"]);
    assert!(ns.remove("x").unwrap());
    assert!(!ns.remove("x").unwrap());
    assert_eq!(ns.get::<f64>("x").unwrap(), None);
}

#[test]
fn named_containers_are_shared_by_name_and_type_checked() {
    let m = Manager::start().unwrap();
    m.dict_named::<u32, String>("results").unwrap().insert(1, "one".into()).unwrap();
    let again = Manager::open(m.name().unwrap()).unwrap();
    assert_eq!(again.dict_named::<u32, String>("results").unwrap().get(&1).unwrap().as_deref(), Some("one"));
    assert!(matches!(again.dict_named::<u32, u32>("results"), Err(ManagerError::WrongType)));
    assert!(matches!(again.list_named::<u32>("results"), Err(ManagerError::WrongKind)));
    drop(again); // not the owner: shuts nothing down
    assert!(!m.is_shut_down());
}

fn increment_many((d, n): (Dict<String, u64>, u64)) {
    for _ in 0..n {
        d.update("count".into(), |v| v.unwrap_or(0) + 1).unwrap();
    }
}

#[test]
fn concurrent_updates_from_processes_lose_no_increment_under_every_start_method() {
    let m = Manager::start().unwrap();
    for method in METHODS {
        let d = m.dict::<String, u64>().unwrap();
        let workers: Vec<_> = (0..3)
            .map(|_| Process::builder(increment_many, (d.clone(), 2000)).start_method(method).start().unwrap())
            .collect();
        increment_many((d.clone(), 2000));
        for w in &workers {
            assert_eq!(finish(w), Some(0), "{method:?}");
        }
        assert_eq!(d.get(&"count".into()).unwrap(), Some(8000), "{method:?}: lost increments");
    }
}

fn fill_all((d, l, ns, from): (Dict<u64, u64>, List<u64>, Namespace, u64)) {
    for i in from..from + 50 {
        d.insert(i, i * i).unwrap();
        l.push(i).unwrap();
    }
    ns.set(&format!("done{from}"), &true).unwrap();
}

#[test]
fn proxies_pass_to_children_under_every_start_method() {
    for method in METHODS {
        let m = Manager::start().unwrap();
        let (d, l, ns) = (m.dict().unwrap(), m.list().unwrap(), m.namespace().unwrap());
        let children: Vec<_> = (0..2)
            .map(|k| {
                let args = (d.clone(), l.clone(), ns.clone(), k * 50);
                Process::builder(fill_all, args).start_method(method).start().unwrap()
            })
            .collect();
        for c in &children {
            assert_eq!(finish(c), Some(0), "{method:?}");
        }
        let mut items = d.items().unwrap();
        items.sort();
        assert_eq!(items, (0..100).map(|i| (i, i * i)).collect::<Vec<_>>(), "{method:?}");
        let mut pushed = l.to_vec().unwrap();
        pushed.sort();
        assert_eq!(pushed, (0..100).collect::<Vec<_>>());
        assert_eq!(ns.get::<bool>("done0").unwrap(), Some(true));
        assert_eq!(ns.get::<bool>("done50").unwrap(), Some(true));
    }
}

fn square_into((d, i): (Dict<u64, u64>, u64)) -> u64 {
    d.insert(i, i * i).unwrap();
    i
}

#[test]
fn pool_workers_fill_a_shared_dict_as_in_the_article() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    for method in METHODS {
        d.clear().unwrap();
        let pool = Pool::builder().processes(2).start_method(method).build().unwrap();
        let done = pool.map(square_into, (0..20).map(|i| (d.clone(), i))).unwrap();
        assert_eq!(done, (0..20).collect::<Vec<_>>());
        pool.close();
        pool.join().unwrap();
        assert_eq!(d.to_hashmap().unwrap(), (0..20).map(|i| (i, i * i)).collect(), "{method:?}");
    }
}

fn read_from_queue(q: Queue<Dict<u64, u64>>) {
    let d = q.get_timeout(PATIENCE).unwrap();
    d.insert(7, 49).unwrap();
}

#[test]
fn a_proxy_travels_through_a_queue_and_an_anonymous_one_says_why_not() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let q = Queue::<Dict<u64, u64>>::new(2).unwrap();
    let p = Process::builder(read_from_queue, q.clone()).start_method(StartMethod::Spawn).start().unwrap();
    q.put(d.clone()).unwrap();
    assert_eq!(finish(&p), Some(0));
    assert_eq!(d.get(&7).unwrap(), Some(49));

    let anon = Manager::builder().anonymous().start().unwrap();
    let err = q.put(anon.dict().unwrap()).unwrap_err();
    assert!(err.to_string().contains("anonymous"), "{err}");
}

fn reply_through_pipe(conn: shmproc::Connection<List<String>>) {
    let l = conn.recv_timeout(PATIENCE).unwrap();
    l.push("from the child".into()).unwrap();
    conn.send(&l).unwrap();
}

#[test]
fn a_proxy_travels_through_a_pipe_both_ways() {
    let m = Manager::start().unwrap();
    let l = m.list::<String>().unwrap();
    let (mine, theirs) = shmproc::Pipe::duplex::<List<String>>().unwrap();
    let p = Process::builder(reply_through_pipe, theirs).start_method(StartMethod::ForkServer).start().unwrap();
    mine.send(&l).unwrap();
    let back = mine.recv_timeout(PATIENCE).unwrap();
    assert_eq!(back.to_vec().unwrap(), ["from the child"]);
    assert_eq!(finish(&p), Some(0));
}

fn use_after_shutdown(d: Dict<u64, u64>) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match d.insert(1, 1) {
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(ManagerError::ShutDown) => std::process::exit(0),
            Err(e) => panic!("{e}"),
        }
    }
    std::process::exit(3);
}

#[test]
fn a_shut_down_manager_answers_shut_down_in_every_process() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let mut p = Process::new(use_after_shutdown, d.clone());
    p.start().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(m); // the owner's drop shuts it down, as Python's with-block does
    assert_eq!(finish(&p), Some(0));
    assert!(d.get(&1).unwrap_err().is_shut_down());
}

#[test]
fn a_holder_killed_inside_update_leaves_the_dict_unchanged_and_usable() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    d.insert(1, 10).unwrap();
    let holding = shmproc::Event::new().unwrap();
    let child = {
        let (d, holding) = (d.clone(), holding.clone());
        spawn_child(move || {
            // `update` holds the manager's lock while its closure runs.
            let _ = d.update(1, |v| {
                holding.set();
                std::thread::sleep(Duration::from_secs(30));
                v.unwrap() + 1
            });
            0
        })
    };
    assert!(holding.wait_timeout(PATIENCE), "the child never ran its update");
    child.signal(libc::SIGKILL).unwrap();
    assert_eq!(join(child), Exit::Signal(libc::SIGKILL));
    let t = Instant::now();
    assert_eq!(d.get(&1).unwrap(), Some(10));
    d.insert(2, 20).unwrap();
    assert!(t.elapsed() < PROMPT, "recovery took {:?}", t.elapsed());
    assert_eq!(d.len().unwrap(), 2);
}

/// Random bytes written over a live manager's containers (all but its lock word):
/// every operation then returns a value or an error; the process never panics,
/// crashes or hangs.
#[test]
fn scribbled_memory_gives_errors_never_a_crash_or_a_hang() {
    let seed = seed_from("SHMPROC_SCRIBBLE_SEED", "scribbled manager");
    let mut outcomes = (0u32, 0u32); // (operations that succeeded, that failed)
    for trial in 0..40u64 {
        // A fresh manager each trial: the last one's memory is garbage by now.
        let m = Manager::builder().capacity(1 << 20).start().unwrap();
        let path = shm_path(m.name().unwrap());
        let d = m.dict::<u64, Vec<u8>>().unwrap();
        let l = m.list::<String>().unwrap();
        for i in 0..200 {
            d.insert(i, vec![i as u8; (i % 17) as usize]).unwrap();
            l.push(format!("item {i}")).unwrap();
        }
        let report = RawValue::<[u32; 2]>::new([0, 0]).unwrap();
        let child = {
            let (d, l, path, report) = (d.clone(), l.clone(), path.clone(), report.clone());
            spawn_child(move || {
                use std::os::unix::fs::FileExt;
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                let len = file.metadata().unwrap().len();
                let mut rng = Rng(seed ^ (trial + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                // Past the segment's header and the lock's 24 bytes.
                let first = 64 + 24;
                let used = (first + 120_000).min(len);
                let (mut ok, mut failed) = (0u32, 0u32);
                for _ in 0..20 {
                    let at = first + rng.below(used - first - 8);
                    let bytes = match rng.below(4) {
                        0 => rng.next().to_le_bytes(),
                        1 => u64::MAX.to_le_bytes(),
                        2 => (rng.below(1 << 20)).to_le_bytes(),
                        _ => [rng.next() as u8; 8],
                    };
                    file.write_at(&bytes, at).unwrap();
                    let results = [
                        d.get(&rng.below(200)).map(drop),
                        d.insert(rng.below(400), vec![1, 2, 3]).map(drop),
                        d.remove(&rng.below(200)).map(drop),
                        d.items().map(drop),
                        d.update(5, |v| v.unwrap_or_default()).map(drop),
                        l.get(rng.below(250) as usize).map(drop),
                        l.push("x".into()),
                        l.pop().map(drop),
                        l.to_vec().map(drop),
                    ];
                    for r in results {
                        match r {
                            Ok(()) => ok += 1,
                            Err(_) => failed += 1,
                        }
                    }
                }
                report.set([ok, failed]);
                0
            })
        };
        assert_eq!(join(child), Exit::Code(0), "trial {trial} (seed {seed}): the child crashed or panicked");
        let [ok, failed] = report.get();
        outcomes = (outcomes.0 + ok, outcomes.1 + failed);
    }
    eprintln!(
        "scribbled manager: 40 trials × 20 scribbles, {} operations succeeded, {} failed",
        outcomes.0, outcomes.1
    );
    assert!(outcomes.0 + outcomes.1 == 40 * 20 * 9);
}

#[test]
fn a_full_manager_says_so_and_keeps_what_it_had() {
    let m = Manager::builder().capacity(256 * 1024).anonymous().start().unwrap();
    let d = m.dict::<u64, Vec<u8>>().unwrap();
    let mut stored = 0;
    let err = loop {
        match d.insert(stored, vec![7; 1000]) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, ManagerError::Full { capacity } if capacity == 256 * 1024), "{err:?}");
    assert!(stored > 100);
    assert_eq!(d.len().unwrap() as u64, stored);
    d.remove(&0).unwrap();
    d.insert(stored, vec![7; 1000]).unwrap(); // the freed entry's memory is reused
}

#[test]
fn a_named_manager_leaves_no_file_behind() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    d.insert(1, 1).unwrap();
    let name = m.name().unwrap().to_owned();
    assert!(shm_path(&name).exists());
    drop(m);
    drop(d);
    assert!(!shm_path(&name).exists());
}

// ---------------------------------------------------------------- over TCP

const AUTHKEY: &[u8] = b"the right key";

#[test]
fn a_remote_manager_behaves_as_a_local_one() {
    let m = Manager::start().unwrap();
    let server = m.serve("127.0.0.1:0", AUTHKEY).unwrap();
    let remote = Manager::connect(server.local_addr(), AUTHKEY).unwrap();
    let d = remote.dict_named::<String, u64>("shared").unwrap();
    assert_eq!(d.insert("a".into(), 1).unwrap(), None);
    assert_eq!(d.update("a".into(), |v| v.unwrap() + 41).unwrap(), 42);
    assert_eq!(d.setdefault("b".into(), 2).unwrap(), 2);
    assert!(d.contains_key(&"b".into()).unwrap());
    assert_eq!(m.dict_named::<String, u64>("shared").unwrap().get(&"a".into()).unwrap(), Some(42));
    let l = remote.list::<u8>().unwrap();
    l.extend([1, 2, 3]).unwrap();
    assert!(matches!(l.get(9), Err(ManagerError::IndexOutOfRange { index: 9, len: 3 })));
    let ns = remote.namespace_named("ns").unwrap();
    ns.set("x", &5i32).unwrap();
    assert_eq!(m.namespace_named("ns").unwrap().get::<i32>("x").unwrap(), Some(5));
    // What lives only in this machine's memory is refused, and says why.
    assert!(matches!(remote.queue::<u8>(1), Err(ManagerError::Unsupported(_))));
    let q = Queue::<Dict<String, u64>>::new(1).unwrap();
    assert!(q.put(d.clone()).unwrap_err().to_string().contains("network"));
    assert_eq!(remote.name(), None);
}

fn remote_increments((addr, n): (std::net::SocketAddr, u64)) {
    let remote = Manager::connect(addr, AUTHKEY).unwrap();
    let d = remote.dict_named::<String, u64>("counter").unwrap();
    for _ in 0..n {
        d.update("n".into(), |v| v.unwrap_or(0) + 1).unwrap();
    }
}

#[test]
fn clients_in_other_processes_update_without_losing_increments() {
    let m = Manager::start().unwrap();
    let server = m.serve("127.0.0.1:0", AUTHKEY).unwrap();
    let addr = server.local_addr();
    let workers: Vec<_> = (0..3)
        .map(|_| Process::builder(remote_increments, (addr, 300)).start_method(StartMethod::Spawn).start().unwrap())
        .collect();
    // Local updates race the remote ones.
    let local = m.dict_named::<String, u64>("counter").unwrap();
    for _ in 0..300 {
        local.update("n".into(), |v| v.unwrap_or(0) + 1).unwrap();
    }
    for w in &workers {
        assert_eq!(finish(w), Some(0));
    }
    assert_eq!(local.get(&"n".into()).unwrap(), Some(1200));
}

#[test]
fn many_concurrent_clients_are_served() {
    let m = Manager::start().unwrap();
    let server = m.serve("127.0.0.1:0", AUTHKEY).unwrap();
    let addr = server.local_addr();
    let threads: Vec<_> = (0..24u64)
        .map(|t| {
            std::thread::spawn(move || {
                let remote = Manager::connect(addr, AUTHKEY).unwrap();
                let d = remote.dict_named::<u64, u64>("many").unwrap();
                for i in 0..50 {
                    d.insert(t * 1000 + i, i).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.dict_named::<u64, u64>("many").unwrap().len().unwrap(), 24 * 50);
}

#[test]
fn a_wrong_key_is_refused_before_any_request() {
    let m = Manager::start().unwrap();
    let server = m.serve("127.0.0.1:0", AUTHKEY).unwrap();
    match Manager::connect(server.local_addr(), b"a wrong key") {
        Err(ManagerError::Authentication(why)) => assert!(why.contains("refused"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(Manager::connect(server.local_addr(), b""), Err(ManagerError::Authentication(_))));
    // The right key still works afterwards.
    Manager::connect(server.local_addr(), AUTHKEY).unwrap().dict::<u8, u8>().unwrap();
}

/// A server that greets like a manager but does not hold the key: it answers the
/// client's challenge with what it can make up.
#[test]
fn a_client_is_not_fooled_by_a_server_without_the_key() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let impostor = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = 40u32.to_le_bytes().to_vec();
        hello.extend_from_slice(b"SHMPROC1");
        hello.extend_from_slice(&[7u8; 32]);
        s.write_all(&hello).unwrap();
        let mut answer = [0u8; 4 + 64];
        s.read_exact(&mut answer).unwrap();
        // Replays the client's own proof as its own: the labels make that fail.
        let mut proof = 32u32.to_le_bytes().to_vec();
        proof.extend_from_slice(&answer[4..36]);
        s.write_all(&proof).unwrap();
        // The client must send no request; reading sees its close.
        let mut rest = Vec::new();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    match Manager::connect(addr, AUTHKEY) {
        Err(ManagerError::Authentication(why)) => assert!(why.contains("does not hold"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(impostor.join().unwrap().is_empty(), "the client sent a request to an impostor");
}

/// Connects and reads the server's greeting.
fn raw_client(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = [0u8; 44];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(&hello[4..12], b"SHMPROC1");
    s
}

/// Whether the server closed `s` (a read sees the end, or a reset) within PATIENCE;
/// false if it was still open then (the read timed out).
fn closed_by_server(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn garbage_oversized_and_silent_connections_are_closed_and_others_served() {
    let m = Manager::start().unwrap();
    let options = shmproc::ServeOptions::default().handshake_timeout(Duration::from_millis(300)).max_frame(1 << 16);
    let server = m.serve_with("127.0.0.1:0", AUTHKEY, options).unwrap();
    let addr = server.local_addr();
    let good = Manager::connect(addr, AUTHKEY).unwrap();
    let d = good.dict_named::<u8, u8>("d").unwrap();

    // Garbage instead of an answer to the challenge.
    let mut garbage = raw_client(addr);
    garbage.write_all(&[0xff; 100]).unwrap();
    assert!(closed_by_server(garbage));
    // A frame announcing 4 GiB.
    let mut huge = raw_client(addr);
    huge.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(closed_by_server(huge));
    // Silent after connecting: closed at the handshake time-out.
    let silent = raw_client(addr);
    let t = Instant::now();
    assert!(closed_by_server(silent));
    assert!(t.elapsed() < PROMPT, "a silent client held on for {:?}", t.elapsed());
    // Half a frame, then nothing.
    let mut half = raw_client(addr);
    half.write_all(&[40, 0]).unwrap();
    assert!(closed_by_server(half));

    d.insert(1, 2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
}

/// A client that passes the handshake by hand, as a hostile program holding the
/// key could.
fn authenticated_raw_client(addr: std::net::SocketAddr) -> TcpStream {
    use hmac::{Hmac, Mac};
    let mut s = raw_client_keeping_hello(addr);
    let server_nonce = s.1;
    let client_nonce = [3u8; 32];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(AUTHKEY).unwrap();
    mac.update(b"client");
    mac.update(&server_nonce);
    mac.update(&client_nonce);
    let mut answer = 64u32.to_le_bytes().to_vec();
    answer.extend_from_slice(&mac.finalize().into_bytes());
    answer.extend_from_slice(&client_nonce);
    s.0.write_all(&answer).unwrap();
    let mut proof = [0u8; 36];
    s.0.read_exact(&mut proof).unwrap();
    assert_eq!(&proof[..4], &32u32.to_le_bytes());
    s.0
}

fn raw_client_keeping_hello(addr: std::net::SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut hello = [0u8; 44];
    s.read_exact(&mut hello).unwrap();
    (s, hello[12..].to_vec())
}

#[test]
fn garbage_and_oversized_requests_after_authenticating_close_only_that_connection() {
    let m = Manager::start().unwrap();
    let options = shmproc::ServeOptions::default().max_frame(1 << 16);
    let server = m.serve_with("127.0.0.1:0", AUTHKEY, options).unwrap();
    let addr = server.local_addr();
    let good = Manager::connect(addr, AUTHKEY).unwrap();
    let d = good.dict_named::<u8, u8>("x").unwrap();
    d.insert(1, 1).unwrap();

    let mut garbage = authenticated_raw_client(addr);
    let mut frame = 16u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0xee; 16]);
    garbage.write_all(&frame).unwrap();
    assert!(closed_by_server(garbage));

    let mut oversized = authenticated_raw_client(addr);
    oversized.write_all(&(1u32 << 20).to_le_bytes()).unwrap();
    assert!(closed_by_server(oversized));

    // A request naming a container id that is none: an error reply, and the
    // connection stays usable for the rest.
    assert_eq!(d.get(&1).unwrap(), Some(1));
    assert_eq!(server.connections(), 1);
}

#[test]
fn idle_and_trickling_clients_are_cut_off_after_authenticating() {
    let m = Manager::start().unwrap();
    let options = shmproc::ServeOptions::default()
        .idle_timeout(Duration::from_millis(200))
        .frame_timeout(Duration::from_millis(200));
    let server = m.serve_with("127.0.0.1:0", AUTHKEY, options).unwrap();
    let addr = server.local_addr();

    let idle = authenticated_raw_client(addr);
    let t = Instant::now();
    assert!(closed_by_server(idle));
    assert!(t.elapsed() >= Duration::from_millis(150) && t.elapsed() < PROMPT, "{:?}", t.elapsed());

    // A frame announced, then one byte every 50 ms: cut off at the frame time-out,
    // not kept alive by its trickle.
    let mut slow = authenticated_raw_client(addr);
    slow.write_all(&100u32.to_le_bytes()).unwrap();
    let t = Instant::now();
    let cut = loop {
        std::thread::sleep(Duration::from_millis(50));
        if slow.write_all(&[0]).is_err() || t.elapsed() > PROMPT {
            break t.elapsed();
        }
    };
    assert!(cut < PROMPT, "a trickling client was served for {cut:?}");
    assert!(closed_by_server(slow));
    // Others are served throughout.
    let d = Manager::connect(addr, AUTHKEY).unwrap().dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
}

fn serve_until_killed((name, ready): (String, shmproc::Queue<u16>)) {
    let m = Manager::open(&name).unwrap();
    let server = m.serve("127.0.0.1:0", AUTHKEY).unwrap();
    ready.put(server.local_addr().port()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_dead_server_gives_connection_errors_not_hangs() {
    let m = Manager::start().unwrap();
    let ready = Queue::<u16>::new(1).unwrap();
    let mut p = Process::new(serve_until_killed, (m.name().unwrap().to_owned(), ready.clone()));
    p.start().unwrap();
    let port = ready.get_timeout(PATIENCE).unwrap();
    let remote = Manager::connect(("127.0.0.1", port), AUTHKEY).unwrap();
    let d = remote.dict_named::<u8, u8>("d").unwrap();
    d.insert(1, 1).unwrap();
    p.kill().unwrap();
    finish(&p);
    let t = Instant::now();
    assert!(matches!(d.insert(2, 2), Err(ManagerError::Connection(_))));
    assert!(matches!(d.get(&1), Err(ManagerError::Connection(_))), "a broken connection stays broken");
    assert!(t.elapsed() < PROMPT);
    // The data lives on in the shared memory the server served.
    assert_eq!(m.dict_named::<u8, u8>("d").unwrap().get(&1).unwrap(), Some(1));
    assert!(Manager::connect(("127.0.0.1", port), AUTHKEY).is_err());
}

//! `Pipe` and `Connection` across real processes.

shmproc::init_before_main!();

mod common;

use std::time::{Duration, Instant};

use common::*;
use shmproc::{
    ChannelFault, Connection, Pipe, Process, RecvError, RecvIntoError, RecvTimeoutError, SendError, SendTimeoutError,
    StartMethod,
};

fn echo(conn: Connection<u64>) {
    while let Ok(x) = conn.recv_timeout(PATIENCE) {
        if conn.send(&x).is_err() {
            return;
        }
    }
}

#[test]
fn round_trips_with_an_echoing_child_under_every_method() {
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let (a, b) = Pipe::duplex::<u64>().unwrap();
        let p = Process::builder(echo, b).start_method(m).start().unwrap();
        for i in 0..2_000 {
            a.send(&i).unwrap();
            assert_eq!(a.recv_timeout(PATIENCE), Ok(i), "{m:?}");
        }
        a.close(); // the child's recv reports Disconnected and it returns
        assert_eq!(finish(&p), Some(0), "{m:?}");
    }
}

fn die_holding(conn: Connection<u64>) {
    conn.send(&1).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn the_death_of_the_peer_process_is_noticed_within_200ms() {
    let (a, b) = Pipe::duplex::<u64>().unwrap();
    let p = Process::builder(die_holding, b).start().unwrap();
    assert_eq!(a.recv_timeout(PATIENCE), Ok(1));
    p.kill().unwrap();
    assert_eq!(finish(&p), Some(-libc::SIGKILL));
    let t = Instant::now();
    assert_eq!(a.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected));
    assert!(t.elapsed() < Duration::from_millis(200), "noticed after {:?}", t.elapsed());
    assert!(matches!(a.send(&2), Err(SendError::Disconnected(()))));
    assert!(a.poll(Some(Duration::ZERO)), "poll reports the end of the stream");
}

fn send_then_close(conn: Connection<String>) {
    conn.send(&"last words".to_string()).unwrap();
    conn.close();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_closed_end_drains_then_disconnects() {
    let (a, b) = Pipe::duplex::<String>().unwrap();
    let p = Process::builder(send_then_close, b).start().unwrap();
    assert_eq!(a.recv_timeout(PATIENCE).unwrap(), "last words");
    let t = Instant::now();
    assert_eq!(a.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected));
    assert!(t.elapsed() < Duration::from_millis(200));
    p.kill().unwrap();
    finish(&p);
}

#[test]
fn recv_bytes_into_a_short_buffer_hands_the_message_back() {
    let (a, b) = Pipe::duplex::<()>().unwrap();
    a.send_bytes(b"0123456789").unwrap();
    let mut small = [0u8; 4];
    assert!(b.poll(Some(PATIENCE)));
    match b.recv_bytes_into(&mut small) {
        Err(RecvIntoError::BufferTooShort(e)) => assert_eq!(e.message, b"0123456789"),
        other => panic!("{other:?}"),
    }
    a.send_bytes(b"abc").unwrap();
    let mut buf = [0u8; 8];
    assert!(b.poll(Some(PATIENCE)));
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
}

#[test]
fn poll_and_timeouts() {
    let (a, b) = Pipe::duplex::<u8>().unwrap();
    let t = Instant::now();
    assert!(!b.poll(Some(Duration::from_millis(30))));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(b.recv_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout));
    a.send(&9).unwrap();
    assert!(b.poll(Some(Duration::ZERO)));
    assert_eq!(b.recv_timeout(PATIENCE), Ok(9));
    assert_eq!(b.recv_bytes_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout));
    // A reader that does not read: the 4 MiB ring fills, then a send times out and
    // hands its value back.
    let chunk = vec![1u8; 1 << 20];
    let mut sent = 0;
    while a.send_bytes_timeout(&chunk, Duration::from_millis(10)).is_ok() {
        sent += 1;
        assert!(sent <= 8, "a 4 MiB pipe took {sent} MiB");
    }
    let t = Instant::now();
    assert!(matches!(a.send_timeout(&7, Duration::from_millis(30)), Ok(()) | Err(SendTimeoutError::Timeout(()))));
    assert!(matches!(a.send_bytes_timeout(&chunk, Duration::from_millis(30)), Err(SendTimeoutError::Timeout(()))));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(b.recv_bytes_timeout(PATIENCE).map(|m| m.len()), Ok(1 << 20), "the first chunk, whole");
}

#[test]
fn a_simplex_pipe_goes_one_way() {
    let (rx, tx) = Pipe::simplex::<u8>().unwrap();
    tx.send(&1).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE), Ok(1));
    assert!(matches!(rx.send(&2), Err(SendError::Failed { fault: ChannelFault::WrongDirection(_), .. })));
    assert!(matches!(tx.recv(), Err(RecvError::Failed(ChannelFault::WrongDirection(_)))));
}

fn sink(args: (Connection<()>, usize)) {
    let (conn, n) = args;
    let mut total = 0usize;
    for _ in 0..n {
        total += conn.recv_bytes_timeout(PATIENCE).unwrap().len();
    }
    conn.send_bytes(&total.to_le_bytes()).unwrap();
}

#[test]
fn large_messages_stream_through_a_pipe() {
    let (a, b) = Pipe::duplex::<()>().unwrap();
    let p = Process::builder(sink, (b, 3)).start().unwrap();
    let big = vec![7u8; 16 << 20]; // larger than the pipe's 4 MiB ring
    a.send_bytes(&big).unwrap();
    a.send_bytes(&[1u8; 1 << 20]).unwrap();
    a.send_bytes(b"x").unwrap();
    assert!(a.poll(Some(PATIENCE)), "the sink never answered");
    let total = a.recv_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(usize::from_le_bytes(total.try_into().unwrap()), (16 << 20) + (1 << 20) + 1);
    assert_eq!(finish(&p), Some(0));
}

fn echo_strings(conn: Connection<String>) {
    while let Ok(x) = conn.recv_timeout(PATIENCE) {
        if conn.send(&x).is_err() {
            return;
        }
    }
}

/// Python's idiom: start the child with one end, then close the parent's copy of it.
/// That closes only the copy: the child's end stays open.
#[test]
fn closing_the_parents_copy_of_a_handed_over_end_leaves_the_child_working() {
    let (a, b) = Pipe::duplex::<String>().unwrap();
    let mut p = Process::new(echo_strings, b);
    p.start().unwrap();
    a.send(&"one".into()).unwrap();
    assert_eq!(a.recv_timeout(PATIENCE).unwrap(), "one");
    a.close();
    assert_eq!(finish(&p), Some(0));
}

fn sleep_with(conn: Connection<u64>) {
    let _keep = conn;
    std::thread::sleep(Duration::from_secs(60));
}

/// Regression: a receiver polling with timeouts shorter than the peer check still
/// learns that the peer died.
#[test]
fn short_timeouts_still_notice_a_dead_peer() {
    let (a, b) = Pipe::duplex::<u64>().unwrap();
    let p = Process::builder(sleep_with, b).start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    p.kill().unwrap();
    assert_eq!(finish(&p), Some(-libc::SIGKILL));
    let t = Instant::now();
    loop {
        match a.recv_timeout(Duration::from_millis(10)) {
            Err(RecvTimeoutError::Timeout) => assert!(t.elapsed() < PATIENCE, "never noticed"),
            Err(RecvTimeoutError::Disconnected) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(t.elapsed() < Duration::from_millis(300), "noticed after {:?}", t.elapsed());
}

#[test]
fn using_an_end_after_closing_it_is_its_own_error() {
    let (a, b) = Pipe::duplex::<u64>().unwrap();
    b.send(&1).unwrap();
    a.close();
    // Not `Disconnected` (that is the peer going away): this process's own mistake.
    assert!(matches!(a.recv_timeout(PATIENCE), Err(RecvTimeoutError::Failed(ChannelFault::UseAfterClose))));
    assert!(matches!(a.send(&2), Err(SendError::Failed { fault: ChannelFault::UseAfterClose, .. })));
    // The peer sees its peer gone.
    assert!(matches!(b.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
}

fn claim_and_wait(conn: Connection<u64>) {
    let _ = conn.recv_timeout(Duration::from_secs(30));
}

#[test]
fn a_peer_killed_before_it_claimed_its_end_is_seen_gone() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer, StartMethod::Fork] {
        let (a, b) = Pipe::duplex::<u64>().unwrap();
        let p = Process::builder(claim_and_wait, b).start_method(m).start().unwrap();
        // At once: a spawned child is still on its way to `main`.
        p.kill().unwrap();
        let start = std::time::Instant::now();
        assert!(matches!(a.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)), "{m:?}");
        assert!(start.elapsed() < PROMPT, "{m:?}: took {:?}", start.elapsed());
        assert!(a.send(&1).is_err(), "{m:?}: a send to a dead peer succeeded");
        p.join().unwrap();
    }
}

fn claim_with_values(args: (Connection<u64>, Vec<shmproc::Value<u8>>)) {
    claim_and_wait(args.0);
}

#[test]
fn an_end_whose_hand_over_failed_still_closes() {
    let (a, b) = Pipe::duplex::<u64>().unwrap();
    // More shared objects than one start can hand over: the start fails after the
    // pipe end was serialized, and the failed process (with its arguments) is
    // dropped. The end was never handed over: dropping it closes it for the peer.
    let many: Vec<shmproc::Value<u8>> = (0..300).map(|_| shmproc::Value::new(0).unwrap()).collect();
    let err = Process::builder(claim_with_values, (b, many)).start().unwrap_err();
    assert!(matches!(err, shmproc::ProcessError::TooManySharedObjects { .. }), "{err:?}");
    let start = std::time::Instant::now();
    assert!(matches!(a.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
    assert!(start.elapsed() < PROMPT);
}

const METHOD_NAMES: [StartMethod; 3] = [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer];

/// One level of a recursion that passes the same write end down: each level hands a
/// clone to its child, waits for it, and sends only then (its child has closed its
/// holding and exited by that time).
fn descend(args: (Connection<u32>, u32, usize)) {
    let (conn, depth, method) = args;
    if depth > 0 {
        let clone = conn.try_clone().expect("try_clone");
        let child = Process::builder(descend, (clone, depth - 1, method))
            .start_method(METHOD_NAMES[method])
            .start()
            .expect("start");
        assert_eq!(finish(&child), Some(0), "level {} failed", depth - 1);
    }
    conn.send(&depth).expect("the end closed while this level still held it");
}

/// Regression (#8): an end held by several processes closed for the reader when the
/// first holder exited; it closes when the last does, as Python's does.
#[test]
fn an_end_passed_down_a_recursion_stays_open_until_its_last_holder_closes() {
    for (m, method) in METHOD_NAMES.iter().enumerate() {
        let (rx, tx) = Pipe::simplex::<u32>().unwrap();
        let top = Process::builder(descend, (tx, 3, m)).start_method(*method).start().unwrap();
        let mut got = Vec::new();
        loop {
            match rx.recv_timeout(PATIENCE) {
                Ok(depth) => got.push(depth),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("{method:?}: {e:?} after {got:?}"),
            }
        }
        assert_eq!(got, vec![0, 1, 2, 3], "{method:?}: the reader saw the end close early");
        assert_eq!(finish(&top), Some(0), "{method:?}");
    }
}

fn report(args: (Connection<usize>, usize)) {
    args.0.send(&args.1).unwrap();
}

fn report_then_hang(args: (Connection<usize>, usize)) {
    args.0.send(&args.1).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Regression (#8): many children report through clones of one end; the reader sees
/// every report, and `Disconnected` only once every holder is gone, a killed one
/// included (counted out by its death, not by a close it never made).
#[test]
fn an_end_cloned_to_many_children_closes_when_every_holder_is_gone() {
    let (rx, tx) = Pipe::simplex::<usize>().unwrap();
    let mut children = Vec::new();
    for i in 0..12 {
        let method = METHOD_NAMES[i % 3];
        let target = if i == 5 { report_then_hang } else { report };
        let clone = tx.try_clone().unwrap();
        // The hanging one is a daemon: if the test fails, exit terminates it.
        let builder = Process::builder(target, (clone, i)).start_method(method).daemon(i == 5);
        children.push(builder.start().unwrap());
    }
    drop(tx);
    let mut got: Vec<usize> = (0..12).map(|_| rx.recv_timeout(PATIENCE).expect("a report")).collect();
    got.sort_unstable();
    assert_eq!(got, (0..12).collect::<Vec<_>>());
    for (i, p) in children.iter().enumerate() {
        if i != 5 {
            assert_eq!(finish(p), Some(0));
        }
    }
    // Every other holder has exited; the hanging one still holds the end.
    assert!(matches!(rx.recv_timeout(Duration::from_millis(300)), Err(RecvTimeoutError::Timeout)));
    children[5].kill().unwrap();
    let start = Instant::now();
    assert!(matches!(rx.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
    assert!(start.elapsed() < PROMPT, "took {:?}", start.elapsed());
    assert_eq!(finish(&children[5]), Some(-libc::SIGKILL));
}

/// An end has at most `MAX_HOLDERS` (1 024) holders; one more is a typed error, and
/// giving some back makes room again.
#[test]
fn an_end_refuses_holders_beyond_its_table() {
    let (a, b) = Pipe::duplex::<u8>().unwrap();
    let clones: Vec<_> = (0..1023).map(|_| b.try_clone().unwrap()).collect();
    assert!(matches!(b.try_clone(), Err(ChannelFault::TooManyHolders)));
    drop(clones);
    let again = b.try_clone().unwrap();
    drop(b);
    again.send(&1).unwrap();
    assert_eq!(a.recv_timeout(PATIENCE), Ok(1));
    drop(again);
    assert!(matches!(a.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
}

fn send_sizes(conn: Connection<()>) {
    conn.send_bytes(&[7u8; 100]).unwrap();
    conn.send_bytes(&[8u8; 3]).unwrap();
}

/// #13: `recv_bytes(maxlength)` and `readable()` / `writable()`. A message over the
/// maximum comes back whole in the error, and the connection goes on (Python's
/// leaves it unusable).
#[test]
fn recv_bytes_max_refuses_a_long_message_without_losing_it() {
    let (rx, tx) = Pipe::simplex::<()>().unwrap();
    assert!(rx.readable() && !rx.writable());
    assert!(tx.writable() && !tx.readable());
    let p = Process::builder(send_sizes, tx).start_method(StartMethod::Spawn).start().unwrap();
    assert!(rx.poll(Some(PATIENCE)));
    match rx.recv_bytes_max(10) {
        Err(RecvIntoError::BufferTooShort(e)) => assert_eq!(e.message, vec![7u8; 100]),
        other => panic!("{other:?}"),
    }
    assert!(rx.poll(Some(PATIENCE)));
    assert_eq!(rx.recv_bytes_max(10).unwrap(), vec![8u8; 3]);
    assert_eq!(finish(&p), Some(0));
    let (a, _b) = Pipe::duplex::<u8>().unwrap();
    assert!(a.readable() && a.writable());
}

fn reply_after(args: (Connection<u64>, u64)) {
    std::thread::sleep(Duration::from_millis(args.1));
    args.0.send(&args.1).unwrap();
    // Holds its end until the parent has read (its exit would also make the end ready).
    let _ = args.0.recv_timeout(PATIENCE);
}

fn exit_after(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// #13: `connection::wait` over pipes, a queue and process sentinels from children
/// under every start method: it returns what is ready, as it becomes ready, and
/// nothing on a timeout.
#[test]
fn connection_wait_multiplexes_pipes_queues_and_sentinels() {
    let mut ends = Vec::new();
    let mut children = Vec::new();
    for (i, method) in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer].into_iter().enumerate() {
        let (mine, theirs) = Pipe::duplex::<u64>().unwrap();
        let delay = 100 + 150 * i as u64;
        children.push(Process::builder(reply_after, (theirs, delay)).start_method(method).start().unwrap());
        ends.push(mine);
    }
    let quitter = Process::builder(exit_after, 50).start_method(StartMethod::Spawn).start().unwrap();
    let sentinel = quitter.sentinel().unwrap();
    let q = shmproc::Queue::<u8>::new(0).unwrap();
    let objects: Vec<&dyn shmproc::connection::Ready> = vec![&ends[0], &ends[1], &ends[2], &sentinel, &q];
    assert!(shmproc::connection::wait(&objects, Some(Duration::from_millis(10))).is_empty());
    // The quitter ends first, then each pipe speaks in turn.
    assert_eq!(shmproc::connection::wait(&objects, Some(PATIENCE)), [3]);
    assert_eq!(finish(&quitter), Some(0));
    // (A served child then exits, and its end stays ready, as at EOF in Python: wait
    // only on those not served yet.)
    let mut order: Vec<usize> = Vec::new();
    while order.len() < 3 {
        let pending: Vec<usize> = (0..3).filter(|i| !order.contains(i)).collect();
        let waiting: Vec<&dyn shmproc::connection::Ready> = pending.iter().map(|&i| objects[i]).collect();
        let ready = shmproc::connection::wait(&waiting, Some(PATIENCE));
        assert!(!ready.is_empty(), "timed out after {order:?}");
        for k in ready {
            let i = pending[k];
            assert_eq!(ends[i].recv_timeout(PATIENCE).unwrap(), 100 + 150 * i as u64);
            ends[i].send(&0).unwrap();
            order.push(i);
        }
    }
    assert_eq!(order, [0, 1, 2]);
    q.put(1).unwrap();
    assert!(shmproc::connection::wait(&objects, Some(PATIENCE)).contains(&4));
    for p in &children {
        assert_eq!(finish(p), Some(0));
    }
    // An ended process's sentinel, asked for late, is ready at once and readable.
    let late = quitter.sentinel().unwrap();
    assert!(shmproc::connection::wait(&[&late], Some(Duration::ZERO)) == [0]);
}

// ---------------------------------------------------------------- loans

/// Echoes each message through loans: read in place, written in place.
fn echo_loans(conn: Connection<()>) {
    while let Ok(got) = conn.recv_loan_timeout(PATIENCE) {
        let Ok(mut reply) = conn.send_loan_timeout(got.len(), PATIENCE) else { return };
        reply.copy_from_slice(&got);
        drop(got);
        if reply.commit().is_err() {
            return;
        }
    }
}

#[test]
fn loans_echo_through_a_pipe_between_processes() {
    // The pipe's rings hold 4 MiB: messages in place, wrapping, and over a quarter
    // of a ring (side segments).
    let sizes = [1usize, 100, 70_000, 300_000, 1_100_000];
    for m in [StartMethod::Fork, StartMethod::Spawn] {
        let (a, b) = Pipe::duplex::<()>().unwrap();
        let p = Process::builder(echo_loans, b).start_method(m).start().unwrap();
        let mut in_place = 0;
        for i in 0..60u32 {
            let len = sizes[i as usize % sizes.len()];
            let mut loan = a.send_loan_timeout(len, PATIENCE).unwrap();
            for (k, byte) in loan.iter_mut().enumerate() {
                *byte = (k as u32 ^ i) as u8;
            }
            loan.commit().unwrap();
            let back = a.recv_loan_timeout(PATIENCE).unwrap();
            assert_eq!(back.len(), len, "{m:?}: message {i}");
            assert!(back.iter().enumerate().all(|(k, byte)| *byte == (k as u32 ^ i) as u8), "{m:?}: {i} torn");
            in_place += u32::from(back.in_place());
        }
        a.close();
        assert_eq!(finish(&p), Some(0), "{m:?}");
        assert!(in_place > 24 && in_place < 60, "{m:?}: {in_place} of 60 read in place");
    }
}

/// Takes a send loan, half-writes it, says so, and waits to be killed.
fn hold_a_send_loan((conn, holding): (Connection<()>, shmproc::Event)) {
    let mut loan = conn.send_loan_timeout(1000, PATIENCE).unwrap();
    loan[..500].fill(7);
    holding.set();
    std::thread::sleep(Duration::from_secs(60));
    drop(loan);
}

#[test]
fn a_sender_killed_holding_a_loan_sends_nothing() {
    let (a, b) = Pipe::duplex::<()>().unwrap();
    let holding = shmproc::Event::new().unwrap();
    let p = Process::builder(hold_a_send_loan, (b, holding.clone())).start().unwrap();
    assert!(holding.wait_timeout(PATIENCE), "the child never took its loan");
    p.kill().unwrap();
    assert!(p.join_timeout(PATIENCE).unwrap());
    // Nothing half-written arrives: the peer is gone, and said nothing.
    assert!(matches!(a.recv_loan_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
    // And this end's own loans towards a gone peer are refused, as its sends are.
    assert!(matches!(a.send_loan_timeout(10, PATIENCE), Err(SendTimeoutError::Disconnected(()))));
}

#[test]
fn a_loan_commits_only_where_a_send_would_go() {
    let (a, b) = Pipe::duplex::<()>().unwrap();
    let a2 = a.try_clone().unwrap();
    // Any timeout is a timeout, however long (no overflow of the deadline).
    let mut loan = a.send_loan_timeout(4, Duration::MAX).unwrap();
    loan.copy_from_slice(b"data");
    // This handle is closed while it holds the loan (the end stays open through a2):
    // the commit fails as a send from it would, and nothing arrives.
    a.close();
    assert!(matches!(loan.commit(), Err(SendTimeoutError::Failed { fault: ChannelFault::UseAfterClose, .. })));
    assert!(matches!(b.recv_loan_timeout(Duration::from_millis(20)), Err(RecvTimeoutError::Timeout)));
    a2.send_bytes(b"from a2").unwrap();
    assert_eq!(&*b.recv_loan_timeout(Duration::MAX).unwrap(), b"from a2");
}

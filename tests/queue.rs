//! `Queue` and `JoinableQueue` across real processes.

shmproc::init_before_main!();

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde::{Deserialize, Serialize};
use shmproc::{
    ChannelFault, Event, JoinableQueue, ObjectKind, Process, Queue, RawValue, RecvError, RecvTimeoutError,
    SegmentOpenError, SendError, SendTimeoutError, StartMethod, TryRecvError, TrySendError, Value,
};

#[derive(Serialize, Deserialize)]
struct Produce {
    q: Queue<(u32, u64)>,
    id: u32,
    n: u64,
}

fn produce(p: Produce) {
    for i in 0..p.n {
        p.q.put_timeout((p.id, i), PATIENCE).unwrap();
    }
}

#[derive(Serialize, Deserialize)]
struct Consume {
    q: Queue<(u32, u64)>,
    seen: shmproc::Array<u8>,
    count: Value<u64>,
}

/// Takes messages until the queue is closed and drained; marks each (producer, i)
/// seen, failing on a duplicate or on a producer's messages out of order.
fn consume(c: Consume) {
    let mut last = [None::<u64>; 2];
    loop {
        match c.q.get_timeout(PATIENCE) {
            Ok((id, i)) => {
                let slot = id as usize * 100_000 + i as usize;
                let mut seen = c.seen.lock().unwrap();
                assert_eq!(seen[slot], 0, "message {id}/{i} delivered twice");
                seen[slot] = 1;
                drop(seen);
                assert!(last[id as usize].is_none_or(|l| l < i), "producer {id}'s messages out of order");
                last[id as usize] = Some(i);
                *c.count.lock().unwrap() += 1;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn two_producers_two_consumers_every_message_once_in_order_per_producer() {
    for m in [StartMethod::Fork, StartMethod::Spawn] {
        const N: u64 = 20_000;
        let q = Queue::<(u32, u64)>::new(64).unwrap();
        let seen = shmproc::Array::<u8>::zeroed(200_000).unwrap();
        let count = Value::new(0u64).unwrap();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let args = Consume { q: q.clone(), seen: seen.clone(), count: count.clone() };
                Process::builder(consume, args).start_method(m).start().unwrap()
            })
            .collect();
        let producers: Vec<_> = (0..2)
            .map(|id| Process::builder(produce, Produce { q: q.clone(), id, n: N }).start_method(m).start().unwrap())
            .collect();
        for p in &producers {
            assert_eq!(finish(p), Some(0));
        }
        q.close();
        for c in &consumers {
            assert_eq!(finish(c), Some(0), "{m:?}: a consumer failed");
        }
        assert_eq!(count.get().unwrap(), 2 * N, "{m:?}");
        let seen = seen.to_vec().unwrap();
        assert!(seen[..N as usize].iter().chain(&seen[100_000..100_000 + N as usize]).all(|s| *s == 1));
    }
}

#[test]
fn timeouts_full_and_empty() {
    let q = Queue::<u8>::new(2).unwrap();
    let t = Instant::now();
    assert_eq!(q.get_timeout(Duration::from_millis(30)), Err(RecvTimeoutError::Timeout));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert!(matches!(q.try_get(), Err(TryRecvError::Empty)));
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert!(q.full());
    assert!(matches!(q.try_put(3), Err(TrySendError::Full(3))));
    let t = Instant::now();
    let e = q.put_timeout(4, Duration::from_millis(30)).unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(e.into_inner(), 4, "the value comes back");
    assert_eq!(q.qsize(), 2);
    let t = Instant::now();
    assert!(matches!(q.put_bytes_timeout(&[1], Duration::from_millis(30)), Err(SendTimeoutError::Timeout(()))));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(q.get_timeout(PATIENCE).unwrap(), 1);
}

/// Counts how often it is serialized.
struct Counted(Vec<u64>);

static SERIALIZED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALIZED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d).map(Counted)
    }
}

#[test]
fn typed_messages_of_any_size_are_encoded_once_and_arrive_whole() {
    let q = Queue::<Counted>::new(0).unwrap();
    for len in [0usize, 1, 15, 16, 17, 100, 1_000, 100_000] {
        let v: Vec<u64> = (0..len as u64).map(|i| i * 0x0101_0101_0101).collect();
        let before = SERIALIZED.load(std::sync::atomic::Ordering::SeqCst);
        q.put(Counted(v.clone())).unwrap();
        assert_eq!(SERIALIZED.load(std::sync::atomic::Ordering::SeqCst), before + 1, "{len} elements");
        assert_eq!(q.get_timeout(PATIENCE).map(|c| c.0), Ok(v), "{len} elements");
    }
}

#[test]
fn close_hands_items_back_and_drains() {
    let q = Queue::<String>::new(0).unwrap();
    q.put("a".into()).unwrap();
    q.put("b".into()).unwrap();
    q.close();
    match q.put("c".into()) {
        Err(SendError::Disconnected(v)) => assert_eq!(v, "c"),
        other => panic!("{other:?}"),
    }
    assert_eq!(q.get_timeout(PATIENCE).unwrap(), "a");
    assert_eq!(q.get_timeout(PATIENCE).unwrap(), "b");
    assert_eq!(q.get(), Err(RecvError::Disconnected));
    assert_eq!(q.get_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Disconnected));
}

fn send_big(q: Queue<Vec<u8>>) {
    let big: Vec<u8> = (0..64 << 20).map(|i: u32| (i % 251) as u8).collect();
    q.put_bytes(&big).unwrap();
}

#[test]
fn a_64_mib_message_through_a_1_mib_queue() {
    let q = Queue::<Vec<u8>>::builder().capacity(1 << 20).build().unwrap();
    let p = Process::builder(send_big, q.clone()).start().unwrap();
    let got = q.get_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(finish(&p), Some(0));
    assert_eq!(got.len(), 64 << 20);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i as u32 % 251) as u8), "the message arrived damaged");
}

#[derive(Serialize, Deserialize)]
struct Flood {
    q: Queue<Vec<u8>>,
    committed: RawValue<u64>,
}

/// Puts numbered 4 KiB messages as fast as it can, recording each one committed.
fn flood(f: Flood) {
    let mut msg = vec![0u8; 4096];
    for i in 1.. {
        msg[..8].copy_from_slice(&u64::to_le_bytes(i));
        f.q.put_bytes(&msg).unwrap();
        f.committed.set(i);
    }
}

#[test]
fn a_producer_killed_mid_put_loses_no_committed_message() {
    for round in 0..10u64 {
        let q = Queue::<Vec<u8>>::builder().capacity(64 << 20).build().unwrap();
        let committed = RawValue::new(0u64).unwrap();
        let p = Process::builder(flood, Flood { q: q.clone(), committed: committed.clone() }).start().unwrap();
        let deadline = Instant::now() + PATIENCE;
        while committed.get() == 0 {
            assert!(Instant::now() < deadline, "the producer never committed a message");
            std::thread::sleep(Duration::from_micros(100));
        }
        // A different moment each round.
        std::thread::sleep(Duration::from_micros(200 + round * 397 % 3000));
        p.kill().unwrap();
        assert_eq!(finish(&p), Some(-libc::SIGKILL));
        let last = committed.get();
        let mut expect = 1u64;
        while let Ok(msg) = q.get_bytes_timeout(Duration::from_millis(10)) {
            assert_eq!(msg.len(), 4096, "a partial message was delivered");
            assert_eq!(u64::from_le_bytes(msg[..8].try_into().unwrap()), expect, "a message lost or repeated");
            expect += 1;
        }
        let delivered = expect - 1;
        assert!(delivered == last || delivered == last + 1, "committed {last}, delivered {delivered}");
        // Still usable, whatever lock the producer died holding.
        q.put_bytes(b"after").unwrap();
        assert_eq!(q.get_bytes_timeout(PATIENCE).unwrap(), b"after");
    }
}

fn wait_idle(args: (Queue<u8>, Event)) {
    let (q, waiting) = args;
    let before = cpu_time();
    waiting.set();
    let got = q.get_timeout(PATIENCE);
    let cpu = cpu_time() - before;
    assert_eq!(got, Ok(1));
    assert!(cpu < Duration::from_millis(30), "an idle consumer used {cpu:?} of CPU");
}

#[test]
fn an_idle_consumer_burns_no_cpu() {
    let q = Queue::<u8>::new(0).unwrap();
    let waiting = Event::new().unwrap();
    let p = Process::builder(wait_idle, (q.clone(), waiting.clone())).start().unwrap();
    assert!(waiting.wait_timeout(PATIENCE));
    std::thread::sleep(Duration::from_millis(500));
    q.put(1).unwrap();
    assert_eq!(finish(&p), Some(0));
}

#[test]
fn opening_with_another_type_is_a_typed_error() {
    let q = Queue::<u64>::builder().named(true).build().unwrap();
    let name = q.name().unwrap();
    assert!(matches!(Queue::<String>::open(name), Err(SegmentOpenError::WrongType { .. })));
    assert!(matches!(
        JoinableQueue::<u64>::open(name),
        Err(SegmentOpenError::WrongKind { found: ObjectKind::Queue, expected: ObjectKind::JoinableQueue })
    ));
    let same = Queue::<u64>::open(name).unwrap();
    same.put(5).unwrap();
    assert_eq!(q.get_timeout(PATIENCE).unwrap(), 5);
}

fn write_at(name: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(shm_path(name)).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// The segment: header (64 bytes), then the ring header (nine 64-byte lines: the
/// producers' lock, `tail`, the consumers' lock, `head`, three signals, `done`, the
/// fixed words), then the data.
const TAIL_AT: u64 = 64 + 64;
const HEAD_AT: u64 = 64 + 3 * 64;
const DATA_AT: u64 = 64 + 9 * 64;

#[test]
fn corrupted_bytes_give_errors_not_ub_or_hangs() {
    let fault =
        |r: Result<u64, RecvTimeoutError>| matches!(r, Err(RecvTimeoutError::Failed(ChannelFault::Corrupted(_))));
    // A damaged frame header.
    let q = Queue::<u64>::builder().named(true).build().unwrap();
    q.put(1).unwrap();
    write_at(q.name().unwrap(), DATA_AT, &[0xff; 8]);
    assert!(fault(q.get_timeout(PATIENCE)));
    // A tail claiming more than the ring holds.
    let q = Queue::<u64>::builder().named(true).build().unwrap();
    write_at(q.name().unwrap(), TAIL_AT, &u64::MAX.to_le_bytes());
    assert!(fault(q.get_timeout(PATIENCE)));
    assert!(matches!(q.try_put(1), Err(TrySendError::Failed { .. })));
    // Positions that agree with each other but are not frame boundaries (a header
    // there would be read and written misaligned, past the end of the data area).
    for pos in [3u64, (1 << 22) - 3] {
        let q = Queue::<u64>::builder().named(true).build().unwrap();
        write_at(q.name().unwrap(), TAIL_AT, &pos.to_le_bytes());
        write_at(q.name().unwrap(), HEAD_AT, &pos.to_le_bytes());
        assert!(fault(q.get_timeout(PATIENCE)));
        assert!(matches!(q.try_put(1), Err(TrySendError::Failed { .. })));
    }
    // A frame whose length runs past the committed data.
    let q = Queue::<u64>::builder().named(true).build().unwrap();
    q.put(1).unwrap();
    let header = 4096u64 | (1 << 32) | (0xA5 << 40);
    write_at(q.name().unwrap(), DATA_AT, &header.to_le_bytes());
    assert!(fault(q.get_timeout(PATIENCE)));
    // A message's kind damaged (one bit), or made a skip's: an error, not a message
    // passed over in silence.
    for kind in [3u8, 0xF0] {
        let q = Queue::<u64>::builder().named(true).build().unwrap();
        q.put(1).unwrap();
        write_at(q.name().unwrap(), DATA_AT + 4, &[kind]);
        assert!(fault(q.get_timeout(PATIENCE)), "kind {kind:#x}");
    }
    // An empty ring whose counts say it holds messages (a scribbled count): an error
    // at once, not a consumer trying a get that finds nothing, round and round; and
    // a producer is told too, rather than wait for room the count says is taken.
    let q = Queue::<u64>::builder().named(true).maxsize(4).build().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get_timeout(PATIENCE), Ok(1));
    let tail = 16u64 | (5 << 40); // one 16-byte frame in, five messages counted
    write_at(q.name().unwrap(), TAIL_AT, &tail.to_le_bytes());
    write_at(q.name().unwrap(), HEAD_AT, &16u64.to_le_bytes());
    let t = Instant::now();
    assert!(fault(q.get_timeout(PATIENCE)));
    assert!(matches!(q.try_put(1), Err(TrySendError::Failed { .. })));
    assert!(t.elapsed() < PATIENCE / 2, "the damage took {:?} to report", t.elapsed());
    // Garbage payload: a decode error naming the type.
    let q = Queue::<String>::builder().named(true).build().unwrap();
    q.put_bytes(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap();
    assert!(matches!(q.get(), Err(RecvError::Failed(ChannelFault::Decode { .. }))));
}

#[test]
fn joinable_queue_counts_task_done_under_concurrent_consumers() {
    // Option<u32> messages: Some(item), then None to stop.
    let q = JoinableQueue::<Option<u32>>::new(0).unwrap();
    let done = Value::new(0u32).unwrap();
    let workers: Vec<_> =
        (0..2).map(|_| Process::builder(work_opt, (q.clone(), done.clone())).start().unwrap()).collect();
    for i in 0..5_000 {
        q.put(Some(i)).unwrap();
    }
    assert!(q.join_timeout(PATIENCE), "join did not return: {} unfinished", q.unfinished());
    assert_eq!(done.get().unwrap(), 5_000);
    q.put(None).unwrap();
    q.put(None).unwrap();
    for w in &workers {
        assert_eq!(finish(w), Some(0));
    }
    assert!(q.join_timeout(PATIENCE));
    assert!(q.task_done().is_err(), "more task_done than items is an error");
}

fn work_opt(args: (JoinableQueue<Option<u32>>, Value<u32>)) {
    let (q, done) = args;
    while let Ok(Some(_)) = q.get_timeout(PATIENCE) {
        *done.lock().unwrap() += 1;
        q.task_done().unwrap();
    }
    q.task_done().unwrap(); // for the None that stopped us
}

fn put_big_and_exit(q: Queue<Vec<u8>>) {
    q.put_bytes(&vec![5u8; 3 << 20]).unwrap();
}

/// Regression: a large message waits in a side segment whose producer has exited;
/// the orphan sweep that every named creation runs must not take it.
#[test]
fn a_large_message_outlives_its_producer() {
    let q = Queue::<Vec<u8>>::builder().capacity(1 << 20).build().unwrap();
    let p = Process::builder(put_big_and_exit, q.clone()).start().unwrap();
    assert_eq!(finish(&p), Some(0));
    // Any named creation sweeps orphans.
    drop(shmproc::Value::<u8>::new_named(0).unwrap());
    shmproc::remove_orphaned_segments().unwrap();
    let got = q.get_bytes_timeout(PATIENCE).unwrap();
    assert_eq!(got.len(), 3 << 20);
    assert!(got.iter().all(|b| *b == 5));
}

#[test]
fn any_capacity_is_rounded_to_a_power_of_two_and_works() {
    let q = Queue::<u64>::builder().capacity(1000).build().unwrap();
    for round in 0..2_000u64 {
        q.put(round).unwrap();
        assert_eq!(q.get_timeout(PATIENCE).unwrap(), round);
    }
    assert!(Queue::<u64>::builder().capacity(usize::MAX).build().is_err());
}

#[test]
fn bytes_left_over_after_a_message_are_a_decode_error() {
    let q = Queue::<u64>::new(0).unwrap();
    // A (u64, u64) where a u64 is expected: the first field alone would decode.
    q.put_bytes(&[7, 9]).unwrap();
    match q.get_timeout(PATIENCE) {
        Err(RecvTimeoutError::Failed(ChannelFault::Decode { reason, .. })) => assert!(reason.contains("left over")),
        other => panic!("{other:?}"),
    }
    q.put_bytes(&[7]).unwrap();
    assert_eq!(q.get_timeout(PATIENCE), Ok(7));
}

#[test]
fn a_get_out_of_descriptors_leaves_a_large_message_in_the_queue() {
    let q = Queue::<Vec<u8>>::builder().capacity(4096).build().unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    q.put(big.clone()).unwrap();
    // In a child, whose descriptor limit we may lower.
    let child = spawn_child(move || {
        let (taken, old) = exhaust_descriptors();
        let failed = q.try_get().is_err();
        let still_there = q.qsize() == 1;
        restore_descriptors(taken, old);
        let whole = q.try_get().is_ok_and(|m| m == big);
        match (failed, still_there, whole, q.qsize()) {
            (true, true, true, 0) => 0,
            (false, ..) => 1,    // the get did not run out of descriptors: the test proves nothing
            (_, false, ..) => 2, // the message was consumed by the failed get
            _ => 3,
        }
    });
    assert_eq!(join(child), Exit::Code(0));
}

fn stalled_producer(args: (Queue<Vec<u8>>, Event)) {
    shmproc::testing::stall_side_handoff(Some(shmproc::testing::SideStall::BeforeCommit), args.1);
    let _ = args.0.put_bytes(&vec![7u8; 100_000]);
}

fn stalled_consumer(args: (Queue<Vec<u8>>, Event)) {
    shmproc::testing::stall_side_handoff(Some(shmproc::testing::SideStall::BeforeUnlink), args.1);
    let _ = args.0.get_bytes_timeout(PATIENCE);
}

/// Regression (#8): a producer killed between disowning a large message's file and
/// committing its frame, or a consumer killed between committing the frame and
/// unlinking the file, left the file in /dev/shm for as long as the queue lived.
/// The sweep now asks the queue (under its locks) whether a frame still names it.
#[test]
fn side_segments_of_hand_offs_killed_midway_are_swept_while_the_queue_lives() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        for (who, target) in [("producer", stalled_producer as fn(_)), ("consumer", stalled_consumer)] {
            let q = Queue::<Vec<u8>>::builder().capacity(4096).build().unwrap();
            let before = shm_files_of(std::process::id() as i32);
            if who == "consumer" {
                q.put_bytes(&vec![9u8; 100_000]).unwrap();
            }
            let queued: Vec<String> = shm_files_of(std::process::id() as i32).difference(&before).cloned().collect();
            let reached = Event::new().unwrap();
            let child = Process::builder(target, (q.clone(), reached.clone()))
                .start_method(method)
                .daemon(true)
                .start()
                .unwrap();
            assert!(reached.wait_timeout(PATIENCE), "{method:?} {who}: never reached the stall");
            let pid = child.pid().unwrap();
            let files: Vec<String> = if who == "producer" { shm_files_of(pid).into_iter().collect() } else { queued };
            assert_eq!(files.len(), 1, "{method:?} {who}: {files:?}");
            child.kill().unwrap();
            assert_eq!(finish(&child), Some(-libc::SIGKILL));
            assert!(shm_path(&files[0]).exists(), "{method:?} {who}: gone before any sweep");
            assert!(shmproc::remove_orphaned_segments().unwrap() >= 1);
            assert!(!shm_path(&files[0]).exists(), "{method:?} {who}: the file outlived its hand-off");
            // Nothing half-delivered: the producer's message never was, the consumer's was taken.
            assert!(matches!(q.get_bytes_timeout(Duration::from_millis(50)), Err(RecvTimeoutError::Timeout)));
            // And the queue goes on, large messages included; a queued one is never swept.
            q.put_bytes(&vec![3u8; 100_000]).unwrap();
            shmproc::remove_orphaned_segments().unwrap();
            assert_eq!(q.get_bytes_timeout(PATIENCE).unwrap(), vec![3u8; 100_000]);
        }
    }
}

fn bump_from_message(q: Queue<Value<u64>>) {
    let v = q.get_timeout(PATIENCE).expect("the value's message");
    *v.lock().unwrap() += 41;
}

/// #13: a named shared object travels inside a message (the receiver opens it by
/// name); an anonymous one (and a pipe end) is refused with an error that says why
/// and what to do, instead of "Serde Serialization Error".
#[test]
fn named_shared_objects_travel_in_messages_and_anonymous_ones_say_why() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let q = Queue::<Value<u64>>::new(0).unwrap();
        let p = Process::builder(bump_from_message, q.clone()).start_method(method).start().unwrap();
        let v = Value::<u64>::new_named(1).unwrap();
        q.put(v.clone()).unwrap();
        assert_eq!(finish(&p), Some(0), "{method:?}");
        assert_eq!(v.get().unwrap(), 42, "{method:?}: the child's update went elsewhere");
    }
    let q = Queue::<Value<u64>>::new(0).unwrap();
    let err = q.put(Value::<u64>::new(1).unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`Value<u64>` is an anonymous shared object") && msg.contains("new_named"), "{msg}");
    let SendError::Failed { value, .. } = err else { panic!("{msg}") };
    assert_eq!(value.get().unwrap(), 1, "the refused value is handed back");

    let pipes = Queue::<shmproc::Connection<u8>>::new(0).unwrap();
    let (a, b) = shmproc::Pipe::duplex::<u8>().unwrap();
    let msg = pipes.put(a).unwrap_err().to_string();
    assert!(msg.contains("`Connection` is an anonymous shared object"), "{msg}");
    // The refused end was handed back whole: dropping it closes it for its peer.
    assert!(matches!(b.recv_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
}

fn drain_until_shut(args: (Queue<u32>, shmproc::SimpleQueue<Vec<u32>>)) {
    let (q, report) = args;
    let mut got = Vec::new();
    loop {
        match q.get_timeout(PATIENCE) {
            Ok(x) => got.push(x),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    report.put(got).unwrap();
}

/// #13: Python 3.13's `shutdown(immediate)`, seen by a consumer in another process:
/// it drains what was queued, or nothing when immediate, and then learns the queue is
/// shut (`Disconnected`, Python's `ShutDown`); a joinable queue's `join` returns
/// after an immediate shutdown. `SimpleQueue` carries the report back.
#[test]
fn shutdown_ends_a_consumer_in_another_process_with_or_without_the_rest() {
    for immediate in [false, true] {
        let q = Queue::<u32>::new(0).unwrap();
        for i in 0..5 {
            q.put(i).unwrap();
        }
        assert_eq!(q.shutdown(immediate), if immediate { 5 } else { 0 });
        assert!(matches!(q.put(9), Err(SendError::Disconnected(9))));
        let report = shmproc::SimpleQueue::new().unwrap();
        let p = Process::builder(drain_until_shut, (q.clone(), report.clone()))
            .start_method(StartMethod::Spawn)
            .start()
            .unwrap();
        let got = report.get_timeout(PATIENCE).expect("the consumer's report");
        assert_eq!(got, if immediate { vec![] } else { vec![0, 1, 2, 3, 4] });
        assert_eq!(finish(&p), Some(0));
        assert!(report.empty());
    }
    let jq = JoinableQueue::<u32>::new(0).unwrap();
    jq.put(1).unwrap();
    jq.put(2).unwrap();
    assert!(!jq.join_timeout(Duration::from_millis(10)));
    assert_eq!(jq.shutdown(true), 2);
    assert!(jq.join_timeout(PATIENCE), "join waits for items the shutdown discarded");
}

/// Private resident memory of `pid` in KiB, from /proc (its heap and stacks; not
/// the ring, which is shared memory and touched as far as the ring has been used).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("RssAnon in /proc/PID/status")
}

/// 5 000 000 messages through one queue, from a producer process to this one: the
/// sum is exact and neither side's private resident memory grows between the first
/// million and the last (nothing accumulates per message).
#[test]
fn five_million_messages_keep_memory_flat() {
    const N: u64 = 5_000_000;
    let q = Queue::<u64>::new(1024).unwrap();
    let producer = {
        let q = q.clone();
        spawn_child(move || {
            for i in 0..N {
                if q.put_timeout(i, PATIENCE).is_err() {
                    return 1;
                }
            }
            0
        })
    };
    let (mut sum, mut early, mut late) = (0u64, (0, 0), (0, 0));
    for i in 0..N {
        sum += q.get_timeout(PATIENCE).unwrap();
        // The producer is at most a ring ahead: alive at both looks.
        if i == 1_000_000 || i == N - 10_000 {
            let now = (rss_kib(std::process::id() as i32), rss_kib(producer.pid()));
            *if i == 1_000_000 { &mut early } else { &mut late } = now;
        }
    }
    join_ok(producer);
    assert_eq!(sum, N * (N - 1) / 2);
    eprintln!("5 000 000 messages: consumer RSS {} → {} KiB, producer {} → {} KiB", early.0, late.0, early.1, late.1);
    // Other tests in this process allocate meanwhile: allow them a few MiB.
    assert!(late.0 < early.0 + 8 * 1024, "the consumer grew from {} to {} KiB", early.0, late.0);
    assert!(late.1 <= early.1 + 1024, "the producer grew from {} to {} KiB", early.1, late.1);
}

// ---------------------------------------------------------------- loans

const LOANS: u32 = 700;

/// Loan sizes around a 16 KiB ring: in place, wrapping its end now and then, over
/// its side threshold (4 KiB), and over the whole ring.
fn loan_len(i: u32) -> usize {
    [1, 7, 100, 1000, 3000, 5000, 20000][i as usize % 7]
}

fn pattern(i: u32, k: usize) -> u8 {
    (i as usize * 31 + k) as u8
}

fn loan_producer(q: Queue<Vec<u8>>) {
    for i in 0..LOANS {
        if i % 10 == 0 {
            // Dropped uncommitted: publishes nothing.
            q.put_loan_timeout(loan_len(i), PATIENCE).unwrap().fill(0xEE);
        }
        let mut loan = q.put_loan_timeout(loan_len(i), PATIENCE).unwrap();
        for (k, b) in loan.iter_mut().enumerate() {
            *b = pattern(i, k);
        }
        loan.commit().unwrap();
    }
}

#[test]
fn loans_carry_messages_written_and_read_in_place_between_processes() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let q = Queue::<Vec<u8>>::builder().capacity(16 << 10).build().unwrap();
        let p = Process::builder(loan_producer, q.clone()).start_method(method).start().unwrap();
        let mut in_place = 0;
        for i in 0..LOANS {
            let loan = q.get_loan_timeout(PATIENCE).unwrap();
            assert_eq!(loan.len(), loan_len(i), "{method:?}: message {i}");
            assert!(loan.iter().enumerate().all(|(k, b)| *b == pattern(i, k)), "{method:?}: message {i} torn");
            in_place += u32::from(loan.in_place());
        }
        assert_eq!(finish(&p), Some(0));
        assert!(q.empty());
        // Most small messages are read in place; the large ones cannot be.
        assert!(in_place > LOANS / 2 && in_place < LOANS, "{method:?}: {in_place} of {LOANS} in place");
    }
}

#[test]
fn a_process_killed_holding_a_loan_publishes_nothing_or_leaves_its_message() {
    let q = Queue::<Vec<u8>>::builder().capacity(16 << 10).build().unwrap();
    q.put_bytes(b"first").unwrap();
    let producer = q.clone();
    kill_while_holding(move || {
        let mut loan = producer.put_loan(100).unwrap();
        loan.fill(9);
        std::mem::forget(loan);
    });
    let consumer = q.clone();
    kill_while_holding(move || {
        let loan = consumer.get_loan().unwrap();
        assert_eq!(&*loan, b"first");
        std::mem::forget(loan);
    });
    // The dead consumer's message is still there, whole; the dead producer's never was.
    let loan = quickly(|| q.get_loan_timeout(PATIENCE)).expect("the dead holder's lock").unwrap();
    assert_eq!(&*loan, b"first");
    drop(loan);
    let mut loan = quickly(|| q.put_loan_timeout(5, PATIENCE)).expect("the dead holder's lock").unwrap();
    loan.copy_from_slice(b"after");
    loan.commit().unwrap();
    assert_eq!(q.get_bytes_timeout(PATIENCE).unwrap(), b"after");
    assert!(q.empty());
    // A loan on a closed queue is refused, and one on an empty queue times out.
    assert!(matches!(q.get_loan_timeout(Duration::from_millis(10)), Err(RecvTimeoutError::Timeout)));
    q.close();
    assert!(matches!(q.put_loan_timeout(5, PATIENCE), Err(SendTimeoutError::Disconnected(()))));
    assert!(matches!(q.get_loan_timeout(PATIENCE), Err(RecvTimeoutError::Disconnected)));
}

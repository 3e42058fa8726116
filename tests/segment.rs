//! Segment lifetimes across real processes: nothing left in /dev/shm, nothing leaked.

mod common;

use std::time::Duration;

use common::*;
use shmproc::{RawArray, Value};

/// A child makes a named segment and is killed before it can drop it: the name is
/// left behind, and the orphan sweep removes it.
#[test]
fn a_killed_creators_named_segment_is_reclaimed() {
    let name_out = RawArray::<u8>::zeroed(128).unwrap();
    let child = {
        let name_out = name_out.clone();
        spawn_child(move || {
            let v = Value::<u64>::new_named(1).unwrap();
            let name = v.name().unwrap().as_bytes();
            name_out.copy_from_slice(&[name, &vec![0; 128 - name.len()]].concat()).unwrap();
            std::thread::sleep(Duration::from_secs(30));
            0
        })
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    let name = loop {
        let bytes: Vec<u8> = name_out.to_vec().into_iter().take_while(|b| *b != 0).collect();
        if !bytes.is_empty() {
            break String::from_utf8(bytes).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "child never made its segment");
        std::thread::sleep(Duration::from_millis(1));
    };
    // While the creator lives, the sweep leaves its segment alone.
    shmproc::remove_orphaned_segments().unwrap();
    assert!(shm_path(&name).exists());
    child.signal(libc::SIGKILL).unwrap();
    assert_eq!(join(child), Exit::Signal(libc::SIGKILL));
    // (A named creation in a parallel test may sweep it first: either way it goes.)
    shmproc::remove_orphaned_segments().unwrap();
    assert!(!shm_path(&name).exists(), "the dead creator's segment was not reclaimed");
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn objects_release_their_descriptors_and_children_inherit_none_by_exec() {
    // Other tests run in parallel threads and open descriptors of their own, so look
    // for a leak proportional to the work, not for an exact count.
    let before = open_descriptors();
    for _ in 0..200 {
        let v = Value::<u64>::new(1).unwrap();
        let n = Value::<u64>::new_named(2).unwrap();
        drop((v, n));
    }
    let after = open_descriptors();
    assert!(after < before + 50, "descriptors leaked: {before} before, {after} after 400 segments");
}

#[test]
fn segment_descriptors_are_close_on_exec() {
    let v = Value::<u64>::new(1).unwrap();
    let n = Value::<u64>::new_named(1).unwrap();
    let ours: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let t = target.to_string_lossy();
            (t.contains("memfd:shmproc") || t.contains("shmproc.")).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect();
    assert!(ours.len() >= 2);
    for fd in ours {
        let flags = nix::fcntl::fcntl(
            // SAFETY: only borrowed for the fcntl call; the segment owns it.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        );
        // A descriptor closed by a parallel test between listing and checking is fine.
        if let Ok(flags) = flags {
            assert!(flags & libc::FD_CLOEXEC != 0, "fd {fd} would leak into an exec'd child");
        }
    }
    drop((v, n));
}

/// A file as a creator killed between `shm_open` and its header leaves it: named
/// by pid `pid`, full-size, all zeroes.
fn half_made_file(pid: i32) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino() as u32;
    let path = shm_path(&format!("/shmproc.{ns:x}.{pid:x}.0.{:032x}", 0xdead_0000_u64 + pid as u64));
    std::fs::write(&path, vec![0u8; 1 << 16]).unwrap();
    path
}

#[test]
fn a_dead_creators_header_less_file_is_swept_and_a_live_ones_is_not() {
    // A process that has exited (and been reaped): its pid names nobody now.
    let dead = spawn_child(|| 0);
    let dead_pid = dead.pid();
    join_ok(dead);
    let orphan = half_made_file(dead_pid);
    let in_progress = half_made_file(std::process::id() as i32);
    shmproc::remove_orphaned_segments().unwrap();
    assert!(!orphan.exists(), "a dead creator's half-made file was left in /dev/shm");
    assert!(in_progress.exists(), "a live creator's file was swept before its header was written");
    std::fs::remove_file(in_progress).unwrap();
}

fn shm_names() -> std::collections::HashSet<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("shmproc."))
        .collect()
}

#[test]
fn side_segment_helper() {
    if std::env::var("SHMPROC_SIDE_SEGMENT").is_err() {
        return;
    }
    let before = shm_names();
    let q = shmproc::Queue::<Vec<u8>>::builder().capacity(4096).build().unwrap();
    q.put(vec![5u8; 100_000]).unwrap();
    // Ours: the name carries its creator's pid (other tests make files too).
    let mine = format!(".{:x}.", std::process::id());
    let side: Vec<String> = shm_names().difference(&before).filter(|n| n.contains(&mine)).cloned().collect();
    assert_eq!(side.len(), 1, "the large message's file: {side:?}");
    // While a process maps the queue, its message's file stays.
    shmproc::remove_orphaned_segments().unwrap();
    assert!(shm_path(&side[0]).exists(), "a live queue's message was swept");
    // The queue dropped with the message in it: no queue can take it any more.
    drop(q);
    assert!(shm_path(&side[0]).exists());
    shmproc::remove_orphaned_segments().unwrap();
    assert!(!shm_path(&side[0]).exists(), "the dropped queue's message file was left in /dev/shm");
}

#[test]
fn a_large_message_left_in_a_dropped_queue_is_swept() {
    // Alone in a process: a child forked by another test would map the queue too.
    run_test_alone("side_segment_helper", ("SHMPROC_SIDE_SEGMENT", "1"));
}

/// The threat model's line on truncation (#8): an anonymous segment is sealed, so no
/// process can shrink it under others; a named one cannot be (POSIX shm has no
/// seals), and a process with write access that truncates it makes the processes
/// that map it die of SIGBUS at their next access, as README states.
#[test]
fn anonymous_segments_cannot_be_shrunk_and_a_truncated_named_one_is_sigbus() {
    let child = shmproc::testing::fork(|| {
        // In a child with one thread: every shmproc memfd here is this test's.
        let v = Value::<u64>::new(7).unwrap();
        let mut sealed = 0;
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let link = std::fs::read_link(entry.path()).unwrap_or_default();
            if !link.to_string_lossy().starts_with("/memfd:shmproc") {
                continue;
            }
            let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
            // SAFETY: `fd` is an open memfd of this process; a failing ftruncate changes nothing.
            let r = unsafe { libc::ftruncate(fd, 0) };
            if r != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                return 1; // shrunk, or refused for another reason
            }
            sealed += 1;
        }
        if sealed == 0 || v.get().unwrap() != 7 {
            return 2;
        }
        0
    })
    .unwrap();
    assert_eq!(join(child), shmproc::testing::Exit::Code(0), "an anonymous segment could be shrunk");

    let v = Value::<u64>::new_named(7).unwrap();
    let path = shm_path(v.name().unwrap());
    let theirs = v.clone();
    let reader = shmproc::testing::fork(move || {
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        let _ = theirs.get();
        0
    })
    .unwrap();
    assert_eq!(join(reader), shmproc::testing::Exit::Signal(libc::SIGBUS));
    // (This process must not touch `v` now: dropping it unmaps and unlinks only.)
    drop(v);
}

/// Messages meant for users (#13): articles right, no private module paths.
#[test]
fn error_messages_read_as_plain_english_without_private_paths() {
    let v = Value::<u64>::new_named(1).unwrap();
    let wrong_kind = shmproc::Array::<u64>::open(v.name().unwrap()).unwrap_err().to_string();
    assert_eq!(wrong_kind, "segment holds a Value, not an Array");
    let wrong_type = Value::<f64>::open(v.name().unwrap()).unwrap_err().to_string();
    assert_eq!(wrong_type, "segment's element type is not `f64`");
    let q = shmproc::Queue::<Vec<String>>::new(0).unwrap();
    q.put_bytes(&[0xff; 12]).unwrap();
    let decode = q.get_timeout(PATIENCE).unwrap_err().to_string();
    assert!(decode.starts_with("cannot decode the message as `Vec<String>`"), "{decode}");
}

/// #13: a name the user chooses (Python's `SharedMemory(name=...)`): another
/// process opens it by that name; a name in use, or one that cannot be a name, is a
/// clear error; a creator killed while it holds the name leaves a file the sweep
/// reclaims, like a generated name's.
#[test]
fn a_chosen_name_is_met_by_another_process_checked_and_reclaimed() {
    let name = format!("/shmproc_test_chosen_{}", std::process::id());
    let v = Value::<u64>::new_named_as(&name, 5).unwrap();
    assert_eq!(v.name(), Some(name.as_str()));
    let opener = {
        let name = name.clone();
        shmproc::testing::fork(move || {
            let v = Value::<u64>::open(&name).unwrap();
            *v.lock().unwrap() += 37;
            0
        })
        .unwrap()
    };
    join_ok(opener);
    assert_eq!(v.get().unwrap(), 42);
    assert!(matches!(
        shmproc::Lock::new_named_as(&name),
        Err(shmproc::SegmentCreateError::AlreadyExists(n)) if n == name
    ));
    for bad in ["no_slash", "/a/b", "/shmproc.mine", "/", &format!("/{}", "x".repeat(255))] {
        assert!(
            matches!(shmproc::Event::new_named_as(bad), Err(shmproc::SegmentCreateError::InvalidName { .. })),
            "{bad:?} was taken as a name"
        );
    }
    drop(v);
    assert!(!shm_path(&name).exists(), "the creator's drop leaves its chosen name behind");

    // The creator killed: the sweep tells its file by the header it published.
    let holder = {
        let name = name.clone();
        shmproc::testing::fork(move || {
            let _q = shmproc::Queue::<u8>::builder().name(&name).build().unwrap();
            std::thread::sleep(std::time::Duration::from_secs(60));
            0
        })
        .unwrap()
    };
    let deadline = std::time::Instant::now() + PATIENCE;
    while !shm_path(&name).exists() {
        assert!(std::time::Instant::now() < deadline, "the child never made its queue");
        std::thread::sleep(Duration::from_millis(2));
    }
    holder.signal(libc::SIGKILL).unwrap();
    assert_eq!(join(holder), shmproc::testing::Exit::Signal(libc::SIGKILL));
    assert!(shm_path(&name).exists());
    shmproc::remove_orphaned_segments().unwrap();
    assert!(!shm_path(&name).exists(), "a dead creator's chosen name was not reclaimed");
}

fn open_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

/// #14: every shared object type made and dropped 10 000 times leaves the
/// process's descriptors and mappings where they were (run alone: other tests'
/// objects would move the counts).
#[test]
fn making_and_dropping_every_object_leaks_no_descriptor_or_mapping_helper() {
    if std::env::var("SHMPROC_LEAK_CYCLES").is_err() {
        return;
    }
    let cycle = || {
        drop(shmproc::Lock::new().unwrap());
        drop(shmproc::RLock::new().unwrap());
        drop(shmproc::Semaphore::new(1).unwrap());
        drop(shmproc::BoundedSemaphore::new(1).unwrap());
        drop(shmproc::Condition::new().unwrap());
        drop(shmproc::Event::new().unwrap());
        drop(shmproc::Barrier::new(2).unwrap());
        drop(Value::<u64>::new(1).unwrap());
        drop(shmproc::Array::<u32>::zeroed(8).unwrap());
        drop(shmproc::RawValue::<u8>::new(1).unwrap());
        drop(RawArray::<u8>::zeroed(8).unwrap());
        drop(shmproc::Queue::<u8>::builder().capacity(4096).build().unwrap());
        drop(shmproc::JoinableQueue::<u8>::builder().capacity(4096).build_joinable().unwrap());
        drop(shmproc::Pipe::duplex::<u8>().unwrap());
        drop(Value::<u64>::new_named(1).unwrap());
    };
    cycle(); // first-use allocations (registries, thread-locals) happen here
    let (fds, maps) = (open_descriptors(), open_mappings());
    for _ in 0..10_000 {
        cycle();
    }
    assert_eq!(open_descriptors(), fds, "descriptors leaked");
    assert_eq!(open_mappings(), maps, "mappings leaked");
}

#[test]
fn making_and_dropping_every_object_leaks_no_descriptor_or_mapping() {
    run_test_alone(
        "making_and_dropping_every_object_leaks_no_descriptor_or_mapping_helper",
        ("SHMPROC_LEAK_CYCLES", "1"),
    );
}

/// #14: what is at a segment's name is checked, not trusted: a FIFO, a symlink, or
/// a foreign file there is refused with an error (never a hang, never followed), and
/// the sweep neither hangs on them nor removes them.
#[test]
fn a_fifo_a_symlink_or_a_foreign_file_at_a_name_is_refused() {
    let _watchdog = watchdog(Duration::from_secs(60));
    let base = format!("shmproc_test_hostile_{}", std::process::id());
    let fifo = format!("/dev/shm/{base}_fifo");
    let link = format!("/dev/shm/{base}_link");
    let foreign = format!("/dev/shm/{base}_foreign");
    let c = std::ffi::CString::new(fifo.clone()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let target = Value::<u64>::new_named(5).unwrap();
    std::os::unix::fs::symlink(shm_path(target.name().unwrap()), &link).unwrap();
    std::fs::write(&foreign, vec![0x5a; 4096]).unwrap();
    for path in [&fifo, &link, &foreign] {
        let name = format!("/{}", path.trim_start_matches("/dev/shm/"));
        let r = quickly(|| shmproc::Lock::open(&name).map(drop));
        assert!(matches!(r, Some(Err(_))), "{name}: {r:?}");
        let r = quickly(|| Value::<u64>::open(&name).map(drop));
        assert!(matches!(r, Some(Err(_))), "{name}: the symlink was followed, or worse: {r:?}");
    }
    assert!(quickly(shmproc::remove_orphaned_segments).is_some(), "the sweep hung");
    for path in [&fifo, &link, &foreign] {
        assert!(std::fs::symlink_metadata(path).is_ok(), "the sweep removed {path}, which is not shmproc's");
        std::fs::remove_file(path).unwrap();
    }
    assert_eq!(target.get().unwrap(), 5);
}

//! Starting and joining processes leaks no descriptor and leaves no zombie. One test
//! alone in its binary, so that no parallel test disturbs the counts.

shmproc::init_before_main!();

use std::time::Duration;

use shmproc::{Process, StartMethod, Value};

fn bump(v: Value<u64>) {
    *v.lock().unwrap() += 1;
}

fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            Some(format!("{} -> {:?}", e.file_name().to_string_lossy(), std::fs::read_link(e.path()).ok()?))
        })
        .collect();
    fds.sort();
    fds
}

/// Our children that have ended but were not reaped.
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
                    && s.lines().any(|l| l.starts_with("PPid:") && l.split_whitespace().nth(1) == Some(&me))
            })
        })
        .collect()
}

fn run_all(v: &Value<u64>) {
    for m in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let p = Process::builder(bump, v.clone()).start_method(m).start().unwrap();
        assert!(p.join_timeout(Duration::from_secs(10)).unwrap());
        assert_eq!(p.exitcode(), Some(0));
    }
}

#[test]
fn starting_and_joining_leaks_no_descriptor_and_no_zombie() {
    let v = Value::<u64>::new(0).unwrap();
    run_all(&v); // warm up: the fork server and its connection now exist
    let before = open_fds();
    for _ in 0..10 {
        run_all(&v);
    }
    assert_eq!(v.get().unwrap(), 33);
    let after = open_fds();
    assert_eq!(before, after, "descriptors leaked");
    assert!(zombie_children().is_empty(), "unreaped children: {:?}", zombie_children());
}

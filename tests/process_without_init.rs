//! A program that never calls `shmproc::init()`: spawn and forkserver must refuse at
//! `start()`, never hang or run `main` again; fork still works.

use shmproc::{Process, ProcessError, StartMethod};

fn nothing(_: ()) {}

#[test]
fn forgetting_init_is_a_clear_error_at_start() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let r = Process::builder(nothing, ()).start_method(m).start();
        assert!(matches!(r, Err(ProcessError::NotInitialized)), "{m:?}: {r:?}");
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("shmproc::init()"), "{msg}");
    }
    let p = Process::builder(nothing, ()).start_method(StartMethod::Fork).start().unwrap();
    assert!(p.join_timeout(std::time::Duration::from_secs(10)).unwrap());
    assert_eq!(p.exitcode(), Some(0));

    // Called at last, but here, where the test harness's threads run: a late call
    // is told apart from none at all (#13).
    let _other_thread = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(500)));
    shmproc::init();
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let r = Process::builder(nothing, ()).start_method(m).start();
        assert!(matches!(r, Err(ProcessError::InitTooLate { threads }) if threads >= 2), "{m:?}: {r:?}");
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("threads already ran") && msg.contains("first line of main"), "{msg}");
    }
}

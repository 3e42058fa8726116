//! The reference article's section 1.3 (`multiprocessing.Manager()`), in shmproc.
//!
//! ```python
//! def run(d, k, v):
//!     d[k] = v
//!
//! if __name__ == '__main__':
//!     pool = multiprocessing.Pool(6)
//!     manager = multiprocessing.Manager()
//!     dd = manager.dict()
//!     for i in range(20):
//!         future = pool.apply_async(run, args=(dd, i, i * i))
//!     pool.close()
//!     pool.join()
//!     print(dict(dd))
//! ```
//!
//! - 1.3 (1): pool workers fill a shared dict with `i -> i * i`
//! - 1.3 (2): a managed queue written by pool workers and read by another process
//! - the article's warning (`dic['k'].append(x)` changes nothing): `update` does it
//! - a namespace, and the crate's own shared objects from the manager
//!
//! Run it with `cargo run --release --example manager`.

use std::time::Duration;

use shmproc::{Dict, Manager, Pool, Process, Queue};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The article's `run(d, k, v)`: `d[k] = v`.
fn run((d, k, v): (Dict<u64, u64>, u64, u64)) {
    d.insert(k, v).expect("the manager is running");
}

/// The article's `write(name, que)`.
fn write((name, q): (u64, Queue<String>)) {
    q.put(format!("{name} is done")).expect("the queue is open");
    println!("{name} write done!");
}

/// The article's `read(que)`, which stops when the queue stays empty for a moment
/// (the article's `while not que.empty()` stops at the first empty look, which
/// races the writers).
fn read(q: Queue<String>) {
    while let Ok(val) = q.get_timeout(Duration::from_millis(200)) {
        println!("read===>: {val}");
    }
}

fn shared_dict() -> Result {
    println!("== 1.3 (1): a shared dict filled by pool workers");
    let pool = Pool::new(6)?;
    let manager = Manager::start()?;
    let dd = manager.dict::<u64, u64>()?;
    // Python drops the futures; here each is asked whether its task ran, so that a
    // failure shows.
    let futures: Vec<_> = (0..20).map(|i| pool.apply_async(run, (dd.clone(), i, i * i))).collect();
    for future in futures {
        future.get()?;
    }
    pool.close();
    pool.join()?;
    let mut items = dd.items()?;
    items.sort();
    println!("{items:?}");
    assert_eq!(items, (0..20).map(|i| (i, i * i)).collect::<Vec<_>>());
    Ok(())
}

fn managed_queue() -> Result {
    println!("== 1.3 (2): a managed queue, written by pool workers, read by another process");
    let pool = Pool::new(3)?;
    let m = Manager::start()?;
    let q = m.queue::<String>(0)?;
    let futures: Vec<_> = (0..20).map(|i| pool.apply_async(write, (i, q.clone()))).collect();
    let mut p1 = Process::new(read, q.clone());
    p1.start()?;
    p1.join()?;
    for future in futures {
        future.get()?;
    }
    pool.close();
    pool.join()?;
    Ok(())
}

fn the_trap_made_explicit() -> Result {
    println!("== the article's warning: dic['k'].append(x) changes nothing in Python");
    let m = Manager::start()?;
    let dic = m.dict::<String, Vec<u32>>()?;
    dic.insert("k".into(), vec![])?;
    // A `get` is a copy, as in Python; changing the copy changes nothing shared...
    let mut copy = dic.get(&"k".into())?.unwrap_or_default();
    copy.push(1);
    assert_eq!(dic.get(&"k".into())?, Some(vec![]));
    // ...so the change is written back explicitly, in one atomic step.
    dic.update("k".into(), |v| {
        let mut v = v.unwrap_or_default();
        v.push(1);
        v
    })?;
    println!("dic['k'] = {:?}", dic.get(&"k".into())?.unwrap_or_default());

    let ns = m.namespace()?;
    ns.set("x", &10)?;
    ns.set("y", &"hello".to_string())?;
    println!("namespace: x = {:?}, y = {:?}", ns.get::<i32>("x")?, ns.get::<String>("y")?);

    // Python's manager also hands out locks, events and values: here they are the
    // crate's own process-shared objects.
    let lock = m.lock()?;
    let counter = m.value(0u64)?;
    {
        let _held = lock.acquire().map_err(|e| e.to_string())?;
        counter.set(counter.get()? + 1)?;
    }
    println!("a manager's lock and value: {}", counter.get()?);
    Ok(())
}

fn main() -> Result {
    shmproc::init();
    shared_dict()?;
    managed_queue()?;
    the_trap_made_explicit()?;
    Ok(())
}

//! Awaiting process-pool futures from async code: a `TaskFuture` is also a
//! `std::future::Future`, woken by the pool's result thread, so awaiting it never
//! blocks a runtime thread (here tokio's; any runtime works).
//!
//! Run it with `cargo run --release --example executor_async`.

use std::time::{Duration, Instant};

use shmproc::{Executor, ProcessPoolExecutor};

fn fib(n: u64) -> u64 {
    if n <= 2 {
        return 1;
    }
    fib(n - 1) + fib(n - 2)
}

async fn async_main() -> Result<(), Box<dyn std::error::Error>> {
    let executor = ProcessPoolExecutor::new(2)?;
    // Meanwhile the runtime's one thread stays free: this ticker keeps ticking.
    let ticker = tokio::spawn(async {
        let mut ticks = 0u32;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            ticks += 1;
            if ticks.is_multiple_of(25) {
                println!("  tick {ticks} (the runtime's thread is free)");
            }
        }
    });
    let start = Instant::now();
    let futures: Vec<_> = (36..41u64).map(|n| executor.submit(fib, n)).collect::<Result<_, _>>()?;
    for (n, future) in (36..41u64).zip(futures) {
        println!("fib({n}) = {} after {:?}", future.await?, start.elapsed());
    }
    // Or all at once, with a deadline, as tokio tasks.
    let handles: Vec<_> = (20..30u64).map(|n| tokio::spawn(executor.submit(fib, n).unwrap())).collect();
    let mut total = 0;
    for h in handles {
        total += tokio::time::timeout(Duration::from_secs(10), h).await??.map_err(Box::new)?;
    }
    println!("sum of fib(20..30) = {total}");
    ticker.abort();
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // First, before the runtime starts its threads (needed by spawn and forkserver).
    shmproc::init();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    runtime.block_on(async_main())
}

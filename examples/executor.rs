//! The reference article's section 2 (`concurrent.futures`) in shmproc: one
//! function per section.
//!
//! - 2.2: `ThreadPoolExecutor` fetching 12 pages with `submit` + `as_completed` and
//!   with `map`. The article fetches httpbin.org; this example starts its own small
//!   HTTP server on 127.0.0.1, so that it runs offline.
//! - 2.3: `ProcessPoolExecutor` computing `fib` with `map`, then with
//!   `{executor.submit(fib, i): i}` and `as_completed`.
//! - 2.4: the `Future` methods, and `add_done_callback` catching the error of the
//!   article's `test(n)`, which fails for even inputs.
//!
//! Run it with `cargo run --release --example executor`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use shmproc::{as_completed, Executor, MapOptions, ProcessPoolExecutor, TaskError, TaskFuture, ThreadPoolExecutor};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A tiny HTTP server answering `GET /get?a=N` with `{"args": {"a": "N"}}` after
/// 50 ms, as httpbin.org's `/get` would (each connection on a thread of its own).
fn start_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    Ok(addr)
}

fn serve(mut stream: TcpStream) {
    // The request line and headers, up to the blank line that ends them.
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
        request.push(byte[0]);
    }
    let request = String::from_utf8_lossy(&request);
    let a = request.split("a=").nth(1).and_then(|rest| rest.split([' ', '&']).next()).unwrap_or("");
    std::thread::sleep(Duration::from_millis(50));
    let body = format!("{{\"args\": {{\"a\": \"{a}\"}}}}");
    let response =
        format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let _ = stream.write_all(response.as_bytes());
}

/// The article's `fetch(url)`: `requests.get(url).json()['args']['a']`.
fn fetch(url: String) -> std::io::Result<String> {
    let rest = url.strip_prefix("http://").unwrap_or(&url);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host)?;
    stream.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    // {"args": {"a": "N"}}: the value between the last pair of quotes.
    let value = body.rsplit('"').nth(1).unwrap_or("");
    Ok(value.to_owned())
}

/// 2.2: ThreadPoolExecutor + HTTP, with `submit` + `as_completed`, then `map`.
fn thread_pool_executor() -> Result {
    println!("2.2 ThreadPoolExecutor: 12 pages from a local server, 3 threads");
    let addr = start_server()?;
    let url = |n: u32| format!("http://{addr}/get?a={n}");
    let start = Instant::now();
    {
        let executor = ThreadPoolExecutor::new(3);
        let task_list: Vec<TaskFuture<std::io::Result<String>>> =
            (0..12).map(|n| executor.submit(fetch, url(n))).collect::<std::result::Result<_, _>>()?;
        let mut order = Vec::new();
        for future in as_completed(&task_list, Some(Duration::from_secs(10))) {
            match future?.result(None)? {
                Ok(a) => order.push(a.clone()),
                Err(e) => println!("  a fetch failed: {e}"),
            }
        }
        println!("  submit + as_completed, in completion order: {}", order.join(" "));
    } // leaving the block shuts the executor down and waits, as Python's with-block
    println!("  12 fetches of 50 ms on 3 threads took {:?} (about 4 x 50 ms)", start.elapsed());

    let executor = ThreadPoolExecutor::new(3);
    let results = executor.map(fetch, (0..12).map(url), MapOptions::new())?;
    let pages: Vec<String> = results.map(|r| r.map_err(Box::from).and_then(|page| Ok(page?))).collect::<Result<_>>()?;
    println!("  map, in input order: {}", pages.join(" "));
    Ok(())
}

fn fib(n: u64) -> u64 {
    if n <= 2 {
        return 1;
    }
    fib(n - 1) + fib(n - 2)
}

/// 2.3: ProcessPoolExecutor with `map`, then `submit` + `as_completed`.
fn process_pool_executor() -> Result {
    println!("2.3 ProcessPoolExecutor: fib(0..30) on 3 worker processes");
    let executor = ProcessPoolExecutor::new(3)?;
    let numbers = 0..30u64;
    for (num, result) in numbers.clone().zip(executor.map(fib, numbers.clone(), MapOptions::new().chunksize(4))?) {
        if num >= 27 {
            println!("  map: {num} ====> {}", result?);
        }
    }
    // Python's {executor.submit(fib, i): i}: a future keys a map (by identity).
    #[allow(clippy::mutable_key_type)]
    let work_dict: HashMap<TaskFuture<u64>, u64> =
        numbers.map(|i| Ok((executor.submit(fib, i)?, i))).collect::<Result<_>>()?;
    let mut last = Vec::new();
    for future in as_completed(work_dict.keys(), None) {
        let future = future?;
        let num = work_dict[future];
        match future.result(None) {
            Ok(data) => last.push(format!("fib({num}) = {data}")),
            Err(e) => println!("  {e}"),
        }
    }
    println!("  submit + as_completed: the last three done: {}", last[last.len() - 3..].join(", "));
    Ok(())
}

/// The article's `test(n)`: fails for even `n` (Python divides by zero).
fn test(n: u64) -> u64 {
    if n.is_multiple_of(2) {
        panic!("division by zero (n = {n})");
    }
    n * 2
}

/// 2.4: the future's methods, and errors caught through `add_done_callback`.
fn futures() -> Result {
    println!("2.4 Future: cancel, running, done, result(timeout), exception, add_done_callback");
    let executor = ProcessPoolExecutor::new(1)?;
    let busy = executor.submit(fib, 32)?;
    // The worker holds a task or two beyond the one it runs (Python's call queue
    // holds one): those count as running. The last of these has not started.
    let waiting: Vec<_> = (0..4).map(|_| executor.submit(fib, 10)).collect::<std::result::Result<_, _>>()?;
    let last = &waiting[3];
    while !busy.running() {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("  busy.running() = {}, last.running() = {}", busy.running(), last.running());
    println!("  busy.cancel() = {} (it runs); last.cancel() = {} (it had not started)", busy.cancel(), last.cancel());
    println!(
        "  last.cancelled() = {}, last.done() = {}, last.result() = {:?}",
        last.cancelled(),
        last.done(),
        last.result(None)
    );
    match busy.result(Some(Duration::from_millis(1))) {
        Err(TaskError::Timeout) => println!("  busy.result(1 ms): TaskError::Timeout (it goes on)"),
        other => println!("  busy.result(1 ms): {other:?}"),
    }
    println!("  busy.result(None) = {}, busy.exception(None) = {:?}", busy.result(None)?, busy.exception(None)?);

    // The article's call_back(future): errors and values reach the callback, which
    // runs in this process.
    let executor = ProcessPoolExecutor::new(3)?;
    for i in 0..6u64 {
        executor.submit(test, i)?.add_done_callback(
            move |outcome: &std::result::Result<u64, TaskError>| match outcome {
                Err(e) => println!("  test({i}): {e}"),
                Ok(v) => println!("  test({i}) = {v}"),
            },
        );
    }
    drop(executor); // waits for every task, and so for every callback
    Ok(())
}

fn main() -> Result {
    // A re-executed child (spawn, forkserver) runs its task here instead.
    shmproc::init();
    thread_pool_executor()?;
    process_pool_executor()?;
    futures()?;
    Ok(())
}

//! `access_load`: a small closed-loop HTTP/1.1 load generator for `POST /v1/access`,
//! used for the figure in docs/BENCHMARKS.md. It keeps `CONNS` keep-alive connections
//! busy for `SECONDS` (one request in flight per connection, a different device id on
//! every request) on a single-threaded runtime, and prints requests/s and the non-200
//! count. Hand-written HTTP so that the load tool costs far less CPU per request than
//! the server it measures.
//!
//! ```text
//! cargo run --release -p longconn-control --example access_load -- 127.0.0.1:7190 64 10
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7190".into());
    let conns: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(addr, conns, Duration::from_secs(seconds)));
}

async fn run(addr: String, conns: usize, duration: Duration) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    // Warm-up: connect everything first, then count.
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        let stream = TcpStream::connect(&addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        streams.push(stream);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (c, stream) in streams.into_iter().enumerate() {
        let (ok, bad) = (ok.clone(), bad.clone());
        tasks.push(tokio::spawn(async move {
            one_connection(stream, c, deadline, &ok, &bad).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    let bad = bad.load(Ordering::Relaxed);
    println!(
        "{conns} connections, {elapsed:.1} s: {ok} answers 200, {bad} other; {:.0} requests/s",
        ok as f64 / elapsed
    );
}

async fn one_connection(
    mut stream: TcpStream,
    c: usize,
    deadline: Instant,
    ok: &AtomicU64,
    bad: &AtomicU64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let body = format!(
            "{{\"app\":\"demo\",\"device\":\"load-{c}-{i}\",\"platform\":\"android\",\
             \"app_version\":\"2.3.1\",\"sdk_version\":\"0.1.0\",\"network\":\"wifi\"}}"
        );
        let request = format!(
            "POST /v1/access HTTP/1.1\r\nhost: control\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            bad.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Read the head, then the body by content-length.
        let mut filled = 0;
        let (head_end, content_length) = loop {
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(n) => filled += n,
            }
            if let Some(end) = find(&buf[..filled], b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while filled < head_end + content_length {
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(n) => filled += n,
            }
        }
        if buf.starts_with(b"HTTP/1.1 200") {
            ok.fetch_add(1, Ordering::Relaxed);
        } else {
            bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

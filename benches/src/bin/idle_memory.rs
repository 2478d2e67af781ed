//! `idle-memory`: user-space memory per idle, logged-in connection of the reference
//! gateway, as (gateway RSS with N connections - RSS before) / N from /proc.
//!
//! ```text
//! cargo build --release -p longconn-examples --bin gateway
//! cargo run --release -p longconn-benches --bin idle-memory -- --conns 15000
//! ```
//!
//! It starts the gateway binary itself (a separate process, so the clients' memory is
//! not counted), opens the connections from several loopback source addresses, logs each
//! in, waits for the gateway to settle and reads its RSS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::{Frame, Metadata, TokenKey, TokenKeys, Transmit};
use longconn_transport::tcp::TcpConnection;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    /// Connections to hold.
    #[arg(long, default_value_t = 15_000)]
    conns: usize,
    /// Loopback source addresses to spread over (127.0.0.2 and up).
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
}

const SECRET: &str = "idle-memory-bench-secret";

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = std::env::temp_dir().join(format!("idle-memory-{}.toml", std::process::id()));
    // Timers long enough that nothing fires while the connections are measured.
    std::fs::write(
        &config,
        "[session]\nheartbeat_interval_ms = 300000\nidle_timeout_ms = 900000\n",
    )
    .unwrap();
    let mut gateway = Command::new(&args.gateway)
        .args([
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "off",
            "--token-secret",
            SECRET,
        ])
        .arg("--config")
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway (build it with --release first)");
    let pid = gateway.id();
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("gateway exited").unwrap();
        if line.contains("tcp listening") {
            let start = line.find("addr=").unwrap() + 5;
            break line[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_bytes(pid);
    let keys = TokenKeys::new(TokenKey::new("k1", SECRET.as_bytes()).unwrap());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let source: SocketAddr = format!("127.0.0.{}:0", 2 + (i % args.sources as usize))
            .parse()
            .unwrap();
        let token = Bytes::from(keys.mint("bench", &format!("d{i}"), exp));
        tasks.push(tokio::spawn(async move {
            let conn = TcpConnection::connect_from(source, addr, 65_536)
                .await
                .unwrap();
            let (mut reader, mut writer) = conn.split();
            writer
                .send(Transmit::Frame(Frame::Login {
                    id: 1,
                    app: "bench".into(),
                    device: format!("d{i}").into(),
                    token,
                    meta: Metadata::new(),
                }))
                .unwrap();
            writer.flush().await.unwrap();
            match reader.recv().await {
                Ok(Some(Frame::LoginAck { .. })) => {}
                other => panic!("login {i}: {other:?}"),
            }
            drop(permit);
            (reader, writer)
        }));
    }
    let mut held = Vec::with_capacity(args.conns);
    for task in tasks {
        held.push(task.await.unwrap());
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_bytes(pid);
    let per_conn = (after.saturating_sub(before)) as f64 / args.conns as f64;
    println!(
        "transport=tcp conns={} rss_before={} rss_after={} per_conn_bytes={:.0} connect_and_login_s={:.1}",
        args.conns,
        before,
        after,
        per_conn,
        connect_time.as_secs_f64()
    );
    drop(held);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = gateway.wait();
    let _ = std::fs::remove_file(&config);
}

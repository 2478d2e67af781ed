//! `idle-memory`: user-space memory per idle, logged-in connection of the reference
//! gateway, as (gateway RSS with N connections - RSS before) / N from /proc.
//!
//! ```text
//! cargo build --release -p longconn-gateway --bin gateway
//! cargo run --release -p longconn-benches --bin idle-memory -- --transport tcp --conns 15000
//! ```
//!
//! `--transport` is `tcp`, `ws` or `quic` (QUIC trusts the gateway's generated
//! development certificate from the file it writes).
//!
//! It starts the gateway binary itself (a separate process, so the clients' memory is
//! not counted), opens the connections from several loopback source addresses, logs each
//! in, waits for the gateway to settle and reads its RSS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use longconn_core::client_session::login_answer;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::{ClientSession, Metadata, TokenKey, TokenKeys, Transmit};
use longconn_transport::cert::Trust;
use longconn_transport::dial::{DialOptions, Dialed, Dialer, Endpoint};
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
    /// tcp, ws or quic.
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// Extra lines for the gateway's `[transport]` table, e.g.
    /// `--transport-config 'quic_stream_window = 65536'` (A/B of the memory settings).
    #[arg(long)]
    transport_config: Vec<String>,
    /// Seconds to wait after the last login before reading the gateway's RSS. Memory
    /// freed after the logins (their buffers and checks) goes back to the system over
    /// this time: jemalloc returns unused pages after its decay time (10 s by default).
    #[arg(long, default_value_t = 3)]
    settle_s: u64,
}

/// A logged-in connection's halves, kept open.
type Held = Box<dyn std::any::Any + Send>;

async fn log_in<C: Connection>(conn: C, device: &str, token: Bytes) -> Result<Held, String> {
    let (mut reader, mut writer) = conn.split();
    let login = ClientSession::login_frame("bench", device, token, Metadata::new());
    writer
        .send(Transmit::Frame(login))
        .map_err(|e| e.to_string())?;
    writer.flush().await.map_err(|e| e.to_string())?;
    match reader.recv().await {
        Ok(Some(answer)) if login_answer(&answer).is_ok() => {}
        other => return Err(format!("login {device}: {other:?}")),
    }
    Ok(Box::new((reader, writer)))
}

async fn log_in_dialed(conn: Dialed, device: &str, token: Bytes) -> Result<Held, String> {
    match conn {
        Dialed::Tcp(c) => log_in(c, device, token).await,
        Dialed::Tls(c) => log_in(c, device, token).await,
        Dialed::Ws(c) => log_in(*c, device, token).await,
        Dialed::Quic(c) => log_in(c, device, token).await,
        other => panic!("no login for {:?}", other.kind()),
    }
}

const SECRET: &str = "idle-memory-bench-secret";
/// Tries per connection (connect and log in) before the run fails.
const CONNECT_ATTEMPTS: usize = 3;

/// Kills the gateway when `main` ends, by a panic or not (a no-op once it has exited).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

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
    let mut toml = String::from(
        "[session]\nheartbeat_interval_ms = 300000\nidle_timeout_ms = 900000\n\
         [transport]\nquic_idle_timeout_ms = 900000\n",
    );
    for line in &args.transport_config {
        toml.push_str(line);
        toml.push('\n');
    }
    std::fs::write(&config, toml).unwrap();
    let cert_dir = std::env::temp_dir().join(format!("idle-memory-cert-{}", std::process::id()));
    let mut gateway = Command::new(&args.gateway)
        .args([
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--quic",
            "127.0.0.1:0",
        ])
        .args(["--http", "off", "--token-secret", SECRET])
        // Connections are opened as fast as they are accepted: no accept rate limit.
        .args(["--max-accept-rate", "off"])
        .arg("--dev-cert-dir")
        .arg(&cert_dir)
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
    // A failed run (a panic) must not leave the gateway running: it would hold the
    // caller's `flock /work/bench.lock` and every port it bound.
    let mut stop = KillOnDrop(Some(pid));
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let wanted = format!("{} listening", args.transport);
    let addr: SocketAddr = loop {
        let line = lines.next().expect("gateway exited").unwrap();
        if line.contains(&wanted) {
            let start = line.find("addr=").unwrap() + 5;
            break line[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
    };
    // The gateway's warnings and errors stay visible (a refused or closed connection
    // says why there); the rest of its log is drained unread.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                eprintln!("gateway: {line}");
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_bytes(pid);
    let keys = TokenKeys::new(TokenKey::new("k1", SECRET.as_bytes()).unwrap());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let limit = Arc::new(Semaphore::new(args.concurrency));
    // One dialer per source address: for QUIC that is one client endpoint (UDP socket)
    // each, made on first use and shared by every connection from that address.
    let url = match args.transport.as_str() {
        "tcp" => format!("tcp://{addr}"),
        "ws" => format!("ws://{addr}/ws"),
        "quic" => format!("quic://{addr}"),
        other => panic!("unknown transport {other}"),
    };
    let endpoint = Endpoint::parse(&url).unwrap();
    let trust = if args.transport == "quic" {
        Trust::from_pem_file(&cert_dir.join("cert.pem")).unwrap()
    } else {
        Trust::System
    };
    let dialers: Vec<Dialer> = (0..args.sources)
        .map(|s| {
            Dialer::new(DialOptions {
                max_frame_size: 65_536,
                local_ip: Some(format!("127.0.0.{}", 2 + s).parse().unwrap()),
                trust: trust.clone(),
                server_name: Some("localhost".into()),
                connect_timeout: Duration::from_secs(30),
                // Raw connections without the SDK's dead-peer probes, as before.
                dead_peer_timeout: None,
            })
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.conns);
    let retries = Arc::new(AtomicU64::new(0));
    for i in 0..args.conns {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let token = Bytes::from(keys.mint("bench", &format!("d{i}"), exp));
        let device = format!("d{i}");
        let dialer = dialers[i % args.sources as usize].clone();
        let endpoint = endpoint.clone();
        let retries = retries.clone();
        tasks.push(tokio::spawn(async move {
            // A connection the gateway gave up on (a QUIC handshake past its login
            // timeout under a burst of handshakes) is made again; the retries are
            // reported, and the measure still covers `conns` logged-in connections.
            let mut last_error = String::new();
            for _ in 0..CONNECT_ATTEMPTS {
                let attempt = match dialer.connect(&endpoint).await {
                    Ok(conn) => log_in_dialed(conn, &device, token.clone()).await,
                    Err(err) => Err(format!("connect {device}: {err}")),
                };
                match attempt {
                    Ok(held) => {
                        drop(permit);
                        return held;
                    }
                    Err(err) => {
                        retries.fetch_add(1, Ordering::Relaxed);
                        last_error = err;
                    }
                }
            }
            panic!("{CONNECT_ATTEMPTS} attempts failed, the last: {last_error}");
        }));
    }
    let mut held = Vec::with_capacity(args.conns);
    for task in tasks {
        held.push(task.await.unwrap());
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let after = rss_bytes(pid);
    let per_conn = (after.saturating_sub(before)) as f64 / args.conns as f64;
    println!(
        "transport={} conns={} rss_before={} rss_after={} per_conn_bytes={:.0} connect_and_login_s={:.1} retries={} settle_s={}",
        args.transport,
        args.conns,
        before,
        after,
        per_conn,
        connect_time.as_secs_f64(),
        retries.load(Ordering::Relaxed),
        args.settle_s
    );
    drop(held);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = gateway.wait();
    stop.0 = None;
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&cert_dir);
}

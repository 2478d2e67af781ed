//! `restart-recovery`: how long SDK clients on TCP, WebSocket and QUIC take to be logged
//! in again after the gateway is killed with SIGKILL and restarted on the same ports
//! (issue 16 item 1: everyone back within 15 s of the restart).
//!
//! ```text
//! cargo build --release -p longconn-gateway --bin gateway -p longconn-benches --bin restart-recovery
//! flock /work/bench.lock unshare -n bash -c 'ip link set lo up; \
//!     target/release/restart-recovery --tcp 500 --ws 300 --quic 200'
//! ```
//!
//! It starts the gateway binary itself on fixed loopback ports (7100 TCP, 7101 WS, 7102
//! QUIC; run it in its own network namespace as above), with a certificate it generates
//! once so the restarted process presents the same one. Clients use the SDK's defaults
//! (10 s dead-peer timeout, backoff 0.5 s to 10 s with full jitter). Prints one line per
//! transport: clients back, and the time from the restart (the new process listening)
//! until the last of them logged in again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use longconn_client::{Client, ClientConfig, ConnState, StaticToken};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};
use longconn_transport::cert::{TlsIdentity, Trust};

#[derive(Debug, Parser)]
struct Args {
    /// The gateway binary.
    #[arg(long, default_value = "target/release/gateway")]
    gateway: PathBuf,
    /// TCP clients.
    #[arg(long, default_value_t = 500)]
    tcp: usize,
    /// WebSocket clients.
    #[arg(long, default_value_t = 300)]
    ws: usize,
    /// QUIC clients.
    #[arg(long, default_value_t = 200)]
    quic: usize,
    /// How long the gateway stays down, milliseconds.
    #[arg(long, default_value_t = 1000)]
    down_ms: u64,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 60)]
    limit_s: u64,
}

const PORTS: [u16; 3] = [7100, 7101, 7102];

fn start(gateway: &Path, dir: &Path) -> Child {
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let mut child = Command::new(gateway)
        .args(["--tcp", &addr(PORTS[0]), "--ws", &addr(PORTS[1])])
        .args(["--quic", &addr(PORTS[2]), "--http", "off"])
        .args(["--tls-cert", dir.join("cert.pem").to_str().unwrap()])
        .args(["--tls-key", dir.join("key.pem").to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway binary starts (build it with --release first)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = 0;
    while seen < 3 {
        let line = lines
            .next()
            .expect("gateway exited before listening")
            .unwrap();
        if line.contains(" listening") {
            seen += 1;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

fn logged_in_again(client: &Client) -> bool {
    matches!(*client.state().borrow(), ConnState::Connected { .. })
        && client.quality().connect_successes >= 2
}

fn main() {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("lc-restart-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    TlsIdentity::self_signed(&["localhost", "127.0.0.1"])
        .unwrap()
        .write_pem_files(&dir.join("cert.pem"), &dir.join("key.pem"))
        .unwrap();
    let trust = Trust::from_pem_file(&dir.join("cert.pem")).unwrap();
    let mut gateway = start(&args.gateway, &dir);
    let keys =
        TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fleets = [
            ("tcp", format!("tcp://127.0.0.1:{}", PORTS[0]), args.tcp),
            ("ws", format!("ws://127.0.0.1:{}/ws", PORTS[1]), args.ws),
            ("quic", format!("quic://localhost:{}", PORTS[2]), args.quic),
        ];
        let mut clients: Vec<(&str, Vec<Client>)> = Vec::new();
        for (name, url, n) in &fleets {
            let mut list = Vec::new();
            for i in 0..*n {
                let device = format!("{name}-{i}");
                let token = Bytes::from(keys.mint("demo", &device, exp));
                let mut config =
                    ClientConfig::new(url, "demo", &device, Arc::new(StaticToken(token))).unwrap();
                config.trust = trust.clone();
                list.push(Client::connect(config));
            }
            clients.push((name, list));
        }
        let started = Instant::now();
        while !clients.iter().all(|(_, list)| {
            list.iter()
                .all(|c| matches!(*c.state().borrow(), ConnState::Connected { .. }))
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(args.limit_s),
                "not every client logged in"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "connected: {} clients in {:.2?}",
            args.tcp + args.ws + args.quic,
            started.elapsed()
        );
        gateway.kill().unwrap();
        gateway.wait().unwrap();
        let killed = Instant::now();
        tokio::time::sleep(Duration::from_millis(args.down_ms)).await;
        let (gw, d) = (args.gateway.clone(), dir.clone());
        let mut restarted = tokio::task::spawn_blocking(move || start(&gw, &d))
            .await
            .unwrap();
        let restarted_at = Instant::now();
        println!(
            "killed with SIGKILL, restarted after {:.2?}",
            restarted_at - killed
        );
        let mut done: Vec<Option<Duration>> = vec![None; clients.len()];
        while done.iter().any(Option::is_none)
            && restarted_at.elapsed() < Duration::from_secs(args.limit_s)
        {
            for (i, (_, list)) in clients.iter().enumerate() {
                if done[i].is_none() && list.iter().all(logged_in_again) {
                    done[i] = Some(restarted_at.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for ((name, list), took) in clients.iter().zip(&done) {
            let back = list.iter().filter(|c| logged_in_again(c)).count();
            match took {
                Some(t) => println!(
                    "{name}: {back}/{} back, all within {:.2} s of the restart",
                    list.len(),
                    t.as_secs_f64()
                ),
                None => println!(
                    "{name}: {back}/{} back after {} s: NOT ALL BACK",
                    list.len(),
                    args.limit_s
                ),
            }
        }
        for (_, list) in &clients {
            for c in list {
                c.close().await;
            }
        }
        let _ = restarted.kill();
        let _ = restarted.wait();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

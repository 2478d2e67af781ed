//! Crash and restart: SDK clients on TCP, WebSocket and QUIC are connected to the real
//! gateway binary, the gateway is killed with SIGKILL (no `GoAway`, no `Close`, no QUIC
//! `CONNECTION_CLOSE`) and restarted on the same ports. Every client must notice and be
//! logged in again within 15 s of the restart (issue 16 item 1).
//!
//! A second QUIC fleet uses a 20 s dead-peer timeout (keep-alive every 6.7 s, idle
//! timeout 20 s): it is back within 15 s only because the restarted node derives the
//! same stateless-reset key and resets the old connections at their next keep-alive;
//! with a random key per process (quinn's default) they wait for the 20 s idle timeout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_client::{Client, ClientConfig, ConnState, StaticToken};
use longconn_core::{TokenKey, TokenKeys};
use longconn_gateway::config::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_transport::cert::{TlsIdentity, Trust};

/// Clients per transport.
const PER_TRANSPORT: usize = 30;
/// The bound of issue 16: everyone back within this long after the restart.
const ALL_BACK: Duration = Duration::from_secs(15);
/// The dead-peer timeout of the second QUIC fleet, longer than [`ALL_BACK`].
const LONG_DEAD_PEER: Duration = Duration::from_secs(20);

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // A port free for both TCP and UDP on 127.0.0.1.
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts the gateway on fixed ports and waits until its TCP, WebSocket and QUIC
/// listeners are up.
fn start(ports: [u16; 3], dir: &Path) -> Gateway {
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--tcp", &addr(ports[0]), "--ws", &addr(ports[1])])
        .args(["--quic", &addr(ports[2]), "--http", "off"])
        .args(["--tls-cert", dir.join("cert.pem").to_str().unwrap()])
        .args(["--tls-key", dir.join("key.pem").to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway binary starts");
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
    Gateway(child)
}

fn token(device: &str) -> Bytes {
    let keys =
        TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    Bytes::from(keys.mint("demo", device, exp))
}

/// Waits until `pred` holds for every client; how long it took, or `None` past `limit`.
async fn all(
    clients: &[Client],
    limit: Duration,
    pred: impl Fn(&Client) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if clients.iter().all(&pred) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn logged_in_again(client: &Client) -> bool {
    matches!(*client.state().borrow(), ConnState::Connected { .. })
        && client.quality().connect_successes >= 2
}

#[test]
fn clients_on_every_transport_are_back_within_15_s_of_a_sigkill_restart() {
    let dir = std::env::temp_dir().join(format!("lc-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One certificate for both processes, so the clients trust the restarted one.
    TlsIdentity::self_signed(&["localhost", "127.0.0.1"])
        .unwrap()
        .write_pem_files(&dir.join("cert.pem"), &dir.join("key.pem"))
        .unwrap();
    let trust = Trust::from_pem_file(&dir.join("cert.pem")).unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let mut gateway = start(ports, &dir);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let urls = [
            ("tcp", format!("tcp://127.0.0.1:{}", ports[0])),
            ("ws", format!("ws://127.0.0.1:{}/ws", ports[1])),
            ("quic", format!("quic://localhost:{}", ports[2])),
            ("quic-reset", format!("quic://localhost:{}", ports[2])),
        ];
        let mut fleets: Vec<(&str, Vec<Client>)> = Vec::new();
        for (name, url) in &urls {
            let mut clients = Vec::new();
            for i in 0..PER_TRANSPORT {
                let device = format!("{name}-{i}");
                let tokens = Arc::new(StaticToken(token(&device)));
                let mut config = ClientConfig::new(url, "demo", &device, tokens).unwrap();
                config.trust = trust.clone();
                if *name == "quic-reset" {
                    config.dead_peer_timeout = Some(LONG_DEAD_PEER);
                }
                clients.push(Client::connect(config));
            }
            fleets.push((name, clients));
        }
        for (name, clients) in &fleets {
            let took = all(clients, Duration::from_secs(30), |c| {
                matches!(*c.state().borrow(), ConnState::Connected { .. })
            })
            .await;
            assert!(took.is_some(), "{name}: not every client logged in");
        }

        // SIGKILL: the process gets no chance to say goodbye.
        gateway.0.kill().unwrap();
        gateway.0.wait().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cert_dir = dir.clone();
        let restarted = std::thread::spawn(move || start(ports, &cert_dir))
            .join()
            .unwrap();
        let restarted_at = Instant::now();

        let mut report = Vec::new();
        for (name, clients) in &fleets {
            let left = ALL_BACK.saturating_sub(restarted_at.elapsed());
            let took = all(clients, left, logged_in_again).await;
            let back = clients.iter().filter(|c| logged_in_again(c)).count();
            let took = took.map(|_| restarted_at.elapsed());
            report.push(format!("{name}: {back}/{} back, {took:?}", clients.len()));
            assert!(
                took.is_some(),
                "{name}: {back}/{} back within {ALL_BACK:?} of the restart; {report:?}",
                clients.len()
            );
        }
        eprintln!("time to all back after the restart: {report:?}");
        for (_, clients) in &fleets {
            for client in clients {
                client.close().await;
            }
        }
        drop(restarted);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

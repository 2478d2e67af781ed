//! A client bootstrapped from a control layer follows what the control layer says
//! beyond the endpoint list: a 429's `Retry-After`, the reconnect policy of every
//! answer (not only the first), and it reaches the control layer over `https://`.
//!
//! The control layer here is a scripted HTTP/1.1 server (so each answer can differ)
//! or the real one behind a TLS terminator.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use longconn_client::{Client, ClientConfig, ConnState, Trust};
use longconn_control::{AccessRequest, Control, ControlConfig, DEFAULT_CONFIG_TOML};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};
use longconn_server::{Listener, Router, Server, ServerConfig};
use longconn_transport::cert::TlsIdentity;
use longconn_transport::tcp::TcpAcceptor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap())
}

/// A gateway (echo backend, development key) on a free port: its `host:port`.
fn gateway() -> (Server, String) {
    let server = Server::new(
        ServerConfig::default(),
        Arc::new(keys()),
        Arc::new(Router::echo()),
    );
    let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false).unwrap();
    let addr = acceptor.local_addr().unwrap().to_string();
    server.serve(acceptor);
    (server, addr)
}

fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// An access answer body for `device` with one tcp endpoint and this policy.
fn answer(device: &str, endpoint: &str, base_ms: u64, cap_ms: u64, reaccess: u32) -> Value {
    let expires = unix_now() + 3_600;
    json!({
        "endpoints": [{"url": format!("tcp://{endpoint}"), "transport": "tcp", "priority": 0, "node": 1}],
        "token": keys().mint("demo", device, expires),
        "expires_at_unix_s": expires,
        "heartbeat_ms": 30_000,
        "reconnect": {"base_ms": base_ms, "cap_ms": cap_ms, "jitter": "full"},
        "reaccess_after_failures": reaccess,
        "bucket": "default",
        "flags": {}
    })
}

/// One scripted answer: status, extra headers, JSON body.
type Reply = (u16, Vec<(&'static str, String)>, Value);

/// Serves HTTP/1.1 on a free port; the n-th request (from 0) gets `script(n)`. Returns
/// the URL and the arrival time of every request.
async fn scripted<F>(script: F) -> (String, Arc<Mutex<Vec<Instant>>>)
where
    F: Fn(usize) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            let script = script.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(Instant::now());
                    log.len() - 1
                };
                let (status, headers, body) = script(n);
                let body = body.to_string();
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                head.push_str(&body);
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, seen)
}

/// Reads one request (head and `content-length` body); `None` at end of stream.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[end + 4..end + 4 + len].to_vec());
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The first `/v1/access` answers 429 with `Retry-After: 1`: the client's own backoff
/// (10 ms) would ask again at once; it waits the second instead, then connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honours_retry_after_of_a_429() {
    let (_server, live) = gateway();
    let (url, seen) = scripted(move |n| match n {
        0 => (
            429,
            vec![("retry-after", "1".to_owned())],
            json!({"error": {"code": "rate_limited", "message": "slow down"}}),
        ),
        _ => (200, vec![], answer("phone-429", &live, 20, 100, 3)),
    })
    .await;
    let mut config = ClientConfig::from_control(&url, "demo", "phone-429").unwrap();
    config.backoff.base = Duration::from_millis(10);
    config.backoff.cap = Duration::from_millis(10);
    let client = Client::connect(config);
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    let gap = seen[1] - seen[0];
    assert!(
        gap >= Duration::from_millis(950),
        "asked again after {gap:?}, before the 1 s Retry-After"
    );
    client.close().await;
}

/// The first answer offers a dead endpoint with 20-50 ms reconnect windows and asks
/// for a new answer after 2 failures; the second answer (still a dead endpoint) says
/// 60 s windows. The client must draw its later delays from the second answer's
/// windows: a delay above 50 ms appears once the second answer is in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_the_policy_of_every_answer() {
    let dead = closed_port();
    let (url, seen) = scripted(move |n| match n {
        0 => (200, vec![], answer("phone-p", &dead, 20, 50, 2)),
        _ => (200, vec![], answer("phone-p", &dead, 60_000, 60_000, 2)),
    })
    .await;
    let mut config = ClientConfig::from_control(&url, "demo", "phone-p").unwrap();
    config.connect_timeout = Duration::from_secs(2);
    let client = Client::connect(config);
    let mut state = client.state();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut early = Vec::new();
    let long = loop {
        let delay = match &*state.borrow_and_update() {
            ConnState::Reconnecting { delay, .. } => Some(*delay),
            _ => None,
        };
        if let Some(delay) = delay {
            if seen.lock().unwrap().len() >= 2 && delay > Duration::from_millis(50) {
                break delay;
            }
            if seen.lock().unwrap().len() < 2 {
                early.push(delay);
            }
        }
        tokio::time::timeout_at(deadline, state.changed())
            .await
            .expect("no delay from the second answer's windows")
            .unwrap();
    };
    assert!(long <= Duration::from_secs(60), "{long:?}");
    assert!(
        early.iter().all(|d| *d <= Duration::from_millis(50)),
        "first answer's windows not used: {early:?}"
    );
    client.close().await;
}

/// Control config: the embedded defaults with one tcp node.
fn control_config(tcp: &str) -> String {
    let start = DEFAULT_CONFIG_TOML.find("[[nodes]]").unwrap();
    let end = DEFAULT_CONFIG_TOML
        .find("# The answer for every device")
        .unwrap();
    let mut text = DEFAULT_CONFIG_TOML[..start].to_owned();
    text.push_str(&format!(
        "[[nodes]]\nid = 1\naddrs = {{ tcp = \"{tcp}\" }}\n"
    ));
    text.push_str(&DEFAULT_CONFIG_TOML[end..]);
    text.replace(
        "transports = [\"tcp\", \"ws\", \"quic\"]",
        "transports = [\"tcp\"]",
    )
}

/// `https://` control URL: the real control layer behind a TLS terminator with a
/// self-signed certificate for `localhost`, trusted through the client's `trust`.
/// Without that trust the client cannot bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstraps_over_https_with_a_self_signed_certificate() {
    let (_server, live) = gateway();
    let control = Control::new(ControlConfig::load(&control_config(&live), 1, "test").unwrap());
    // Sanity: the in-process control layer answers this device.
    let req = AccessRequest {
        app: "demo".into(),
        device: "phone-tls".into(),
        platform: std::env::consts::OS.into(),
        app_version: "0.0.0".into(),
        sdk_version: env!("CARGO_PKG_VERSION").into(),
        network: Default::default(),
        quality: Default::default(),
    };
    control.access(&req, unix_now()).unwrap();
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    tokio::spawn(async move { control.serve(plain, std::future::pending()).await });

    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let tls = Arc::new(identity.server_config(&[b"http/1.1"], false).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = front.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = front.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut upstream = TcpStream::connect(plain_addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    let url = format!("https://localhost:{port}");

    // Not trusted: the system roots do not know the certificate.
    let mut config = ClientConfig::from_control(&url, "demo", "phone-tls").unwrap();
    config.backoff.max_attempts = Some(1);
    let refused = Client::connect(config);
    assert!(
        refused
            .wait_connected(Duration::from_secs(10))
            .await
            .is_err(),
        "connected through an untrusted certificate"
    );

    let mut config = ClientConfig::from_control(&url, "demo", "phone-tls").unwrap();
    config.trust = Trust::Roots(vec![identity.leaf().clone()]);
    let client = Client::connect(config);
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let answer = client.access_answer().expect("bootstrapped over https");
    assert_eq!(answer.endpoints[0].url, format!("tcp://{live}"));
    client.close().await;
}

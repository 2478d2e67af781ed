//! A client bootstrapped from a control layer (longconn-control, in process) against
//! an in-process gateway: the first endpoint is down, the client falls back to the
//! second; a control layer that only offers dead endpoints is asked again after
//! repeated failures and the client follows its new answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use longconn_client::{Client, ClientConfig, ClientError, ConnState};
use longconn_control::{AccessRequest, Control, ControlConfig, DEFAULT_CONFIG_TOML};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};
use longconn_server::{Listener, Router, Server, ServerConfig};
use longconn_transport::tcp::TcpAcceptor;
use tokio::sync::oneshot;

/// A gateway (echo backend, development key) on a free port: its `host:port`.
fn gateway() -> (Server, String) {
    let keys =
        TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap());
    let server = Server::new(
        ServerConfig::default(),
        Arc::new(keys),
        Arc::new(Router::echo()),
    );
    let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false).unwrap();
    let addr = acceptor.local_addr().unwrap().to_string();
    server.serve(acceptor);
    (server, addr)
}

/// A loopback port nobody listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// Control config text: the embedded defaults with these `[[nodes]]` and fast
/// reconnects.
fn config(nodes: &[(u16, &str)]) -> String {
    let start = DEFAULT_CONFIG_TOML.find("[[nodes]]").unwrap();
    let end = DEFAULT_CONFIG_TOML
        .find("# The answer for every device")
        .unwrap();
    let mut text = DEFAULT_CONFIG_TOML[..start].to_owned();
    for (id, tcp) in nodes {
        text.push_str(&format!(
            "[[nodes]]\nid = {id}\naddrs = {{ tcp = \"{tcp}\" }}\n"
        ));
    }
    text.push_str(&DEFAULT_CONFIG_TOML[end..]);
    text.replace("reconnect_base_ms = 1000", "reconnect_base_ms = 20")
        .replace("reconnect_cap_ms = 10000", "reconnect_cap_ms = 100")
        .replace(
            "transports = [\"tcp\", \"ws\", \"quic\"]",
            "transports = [\"tcp\"]",
        )
}

/// Serves `control` on a free port until the sender is used or dropped.
async fn serve_control(control: &Control) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let control = control.clone();
    tokio::spawn(async move {
        control
            .serve(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    (url, stop)
}

/// A device id whose access answer lists `first` first (the order is per device).
fn device_with_first(control: &Control, first: &str) -> String {
    (0..1_000)
        .map(|i| format!("phone-{i}"))
        .find(|device| {
            let req = AccessRequest {
                app: "demo".into(),
                device: device.clone(),
                platform: std::env::consts::OS.into(),
                app_version: "0.0.0".into(),
                sdk_version: env!("CARGO_PKG_VERSION").into(),
                network: Default::default(),
                quality: Default::default(),
            };
            control.access(&req, 1).unwrap().endpoints[0].address == first
        })
        .expect("some device ranks the node first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_the_first_endpoint_being_down() {
    let (_server, live) = gateway();
    let dead = closed_port();
    let control =
        Control::new(ControlConfig::load(&config(&[(1, &dead), (2, &live)]), 1, "test").unwrap());
    let device = device_with_first(&control, &dead);
    let (url, stop) = serve_control(&control).await;

    let client = Client::connect(ClientConfig::from_control(&url, "demo", &device).unwrap());
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let answer = client.access_answer().expect("bootstrapped");
    assert_eq!(
        answer.endpoints[0].url,
        format!("tcp://{dead}"),
        "first endpoint was the dead one"
    );
    assert_eq!(answer.endpoints[1].url, format!("tcp://{live}"));
    assert_eq!(answer.bucket, "default");
    let echoed = client
        .request(1, Bytes::from_static(b"via control"))
        .await
        .unwrap();
    assert_eq!(echoed.payload, "via control");
    let quality = client.quality();
    assert!(
        quality.connect_attempts >= 1 && quality.connect_successes == 1,
        "{quality:?}"
    );
    client.close().await;
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_the_control_layer_again_after_repeated_failures() {
    let (_server, live) = gateway();
    let dead = closed_port();
    let control = Control::new(ControlConfig::load(&config(&[(1, &dead)]), 1, "test").unwrap());
    let (url, stop) = serve_control(&control).await;
    let client = Client::connect(ClientConfig::from_control(&url, "demo", "phone-x").unwrap());
    // Let it fail against the dead-only answer for a while.
    let mut state = client.state();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(
            *state.borrow_and_update(),
            ConnState::Reconnecting { attempt: 3.., .. }
        ) {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the client retries");
    assert!(!matches!(
        *client.state().borrow(),
        ConnState::Connected { .. }
    ));
    // Operations move the device to the live node; the client finds out by asking again.
    control
        .reload_text(&config(&[(2, &live)]), "moved")
        .unwrap();
    client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let answer = client.access_answer().unwrap();
    assert_eq!(answer.endpoints[0].url, format!("tcp://{live}"));
    client.close().await;
    let _ = stop.send(());
}

#[tokio::test]
async fn an_unreachable_control_layer_is_a_typed_error_once_attempts_run_out() {
    let mut config =
        ClientConfig::from_control(&format!("http://{}", closed_port()), "demo", "d").unwrap();
    config.backoff.base = Duration::from_millis(5);
    config.backoff.max_attempts = Some(2);
    let client = Client::connect(config);
    let mut state = client.state();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(*state.borrow_and_update(), ConnState::Disconnected { .. }) {
            state.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(client.stop_error(), Some(ClientError::Control(_))),
        "{:?}",
        client.stop_error()
    );
    assert!(matches!(
        ClientConfig::from_control("tcp://x:1", "a", "d"),
        Err(ClientError::BadEndpoint { .. })
    ));
}

/// A stand-in control layer with 3-second tokens (the real one's shortest lifetime is a
/// minute): answers `/v1/access` with `endpoint` and `/v1/token/refresh` with a fresh
/// token, over hand-written HTTP/1.1 keep-alive.
async fn short_token_control(endpoint: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
                    buf.drain(..head_end + length);
                    let keys = TokenKeys::new(
                        TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap(),
                    );
                    let exp = unix_now() + 3;
                    let answer = if head.starts_with("post /v1/access") {
                        let device = body["device"].as_str().unwrap();
                        serde_json::json!({
                            "endpoints": [{"url": endpoint, "address": "", "transport": "tcp",
                                           "priority": 0, "node": 1}],
                            "token": keys.mint_in_bucket("demo", device, exp, "short").unwrap(),
                            "expires_at_unix_s": exp, "heartbeat_ms": 30_000,
                            "reconnect": {"base_ms": 20, "cap_ms": 100, "jitter": "full"},
                            "reaccess_after_failures": 3, "bucket": "short", "flags": {},
                            "rules_version": 1
                        })
                    } else {
                        let old = body["token"].as_str().unwrap();
                        let claims = keys.verify(old.as_bytes(), unix_now()).unwrap();
                        serde_json::json!({
                            "token": keys.mint_in_bucket("demo", &claims.device, exp, "short").unwrap(),
                            "expires_at_unix_s": exp
                        })
                    };
                    let answer = answer.to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What the gateway was asked to check, and when.
#[derive(Debug, Default)]
struct Checks(std::sync::Mutex<Vec<(std::time::SystemTime, Bytes, u64)>>);

/// The development key, recording every login and refresh it checks.
struct RecordingAuth {
    keys: TokenKeys,
    checks: Arc<Checks>,
}

#[async_trait::async_trait]
impl longconn_server::Authenticator for RecordingAuth {
    async fn authenticate(
        &self,
        login: &longconn_server::LoginRequest,
        now_unix_s: u64,
    ) -> Result<longconn_server::AuthGrant, longconn_core::Code> {
        let grant =
            longconn_server::Authenticator::authenticate(&self.keys, login, now_unix_s).await;
        if let Ok(grant) = &grant {
            self.checks.0.lock().unwrap().push((
                std::time::SystemTime::now(),
                login.token.clone(),
                grant.expires_unix_s.unwrap_or_default(),
            ));
        }
        grant
    }
}

/// The token is renewed through the control layer and handed to the gateway in band
/// before it expires: the gateway checks a second, different token while the first is
/// still valid, and the session carries on past the first token's expiry on the same
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_its_token_in_band_before_expiry() {
    let checks = Arc::new(Checks::default());
    let keys =
        TokenKeys::new(TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes()).unwrap());
    let auth = RecordingAuth {
        keys,
        checks: checks.clone(),
    };
    let server = Server::new(
        ServerConfig::default(),
        Arc::new(auth),
        Arc::new(Router::echo()),
    );
    let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false).unwrap();
    let live = format!("tcp://{}", acceptor.local_addr().unwrap());
    server.serve(acceptor);
    let url = short_token_control(live).await;

    let client = Client::connect(ClientConfig::from_control(&url, "demo", "phone-r").unwrap());
    let conn_id = client
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let first_expiry = checks.0.lock().unwrap()[0].2;
    // Past the first token's expiry.
    while unix_now() <= first_expiry {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = checks.0.lock().unwrap().clone();
    assert!(seen.len() >= 2, "no refresh reached the gateway: {seen:?}");
    let (_, login_token, _) = &seen[0];
    let (refresh_at, refresh_token, new_expiry) = &seen[1];
    assert_ne!(login_token, refresh_token, "a new token");
    assert!(*new_expiry > first_expiry);
    // Before the expiry itself, so not in answer to the gateway's TokenExpiring (sent
    // at the expiry).
    let expired_at = std::time::UNIX_EPOCH + Duration::from_secs(first_expiry);
    assert!(
        *refresh_at < expired_at,
        "refreshed at {refresh_at:?}, not before the token expired at {expired_at:?}"
    );
    assert_eq!(
        *client.state().borrow(),
        ConnState::Connected { conn_id },
        "same connection"
    );
    let echoed = client
        .request(1, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(echoed.payload, "still here");
    client.close().await;
}

//! Failed connection attempts carry a typed cause (issue 16 item 6): a refused port, a
//! TLS certificate that is not trusted, a WebSocket path the gateway answers 404 —
//! reported at once through `last_connect_error`, by `wait_connected` as
//! `Unreachable`, and only the permanent ones stop the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use longconn_client::{
    Backoff, Client, ClientConfig, ClientError, ConnState, ConnectFailure, StaticToken, Trust,
};
use longconn_core::{SessionConfig, TokenKey, TokenKeys};
use longconn_server::{
    Backend, BackendError, BackendLimits, BackendReply, BackendRequest, Router, Server,
    ServerConfig,
};
use longconn_transport::cert::TlsIdentity;

const APP: &str = "sdk-test";

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"sdk-test-secret-0123456").unwrap())
}

fn token(device: &str) -> Arc<StaticToken> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Arc::new(StaticToken(Bytes::from(keys().mint(APP, device, exp))))
}

struct Echo;

#[async_trait]
impl Backend for Echo {
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        Ok(BackendReply {
            meta: request.meta,
            payload: request.payload,
        })
    }
}

fn server() -> Server {
    let session = SessionConfig::builder()
        .heartbeat_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let config = ServerConfig::builder().session(session).build().unwrap();
    let router = Router::builder()
        .backend("echo", Echo, BackendLimits::default())
        .default_route("echo")
        .build()
        .unwrap();
    Server::new(config, Arc::new(keys()), Arc::new(router))
}

/// A gateway serving `scheme` on `addr`; its bound address.
fn gateway(scheme: &str, identity: &TlsIdentity, addr: SocketAddr) -> (Server, SocketAddr) {
    use longconn_transport::{quic, tcp, tls, ws};
    let server = server();
    let tls = || Arc::new(identity.server_config(&[], false).unwrap());
    let bound = match scheme {
        "tcp" => {
            let a = tcp::TcpAcceptor::bind(addr, 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        "tls" => {
            let a = tls::TlsAcceptor::bind(addr, tls(), 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        "ws" => {
            let a = ws::WsAcceptor::bind(addr, 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        "wss" => {
            let a = ws::WsAcceptor::bind_tls(addr, tls(), 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        "quic" => {
            let a = quic::QuicAcceptor::bind(addr, identity, 65_536).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        other => panic!("{other}"),
    };
    (server, bound)
}

/// A client of `url` with a 10 s connect timeout and a short backoff.
fn client(url: &str, trust: Trust, device: &str) -> Client {
    let mut config = ClientConfig::new(url, APP, device, token(device)).unwrap();
    config.trust = trust;
    config.connect_timeout = Duration::from_secs(10);
    config.backoff = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        max_attempts: None,
    };
    Client::connect(config)
}

/// The first recorded failure, waited for at most `within`.
async fn first_failure(client: &Client, within: Duration) -> ConnectFailure {
    let deadline = Instant::now() + within;
    loop {
        if let Some(failure) = client.last_connect_error() {
            return failure;
        }
        assert!(Instant::now() < deadline, "no failure within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_refused_at_once_and_retried_until_the_gateway_is_up() {
    let port = closed_port();
    let started = Instant::now();
    let c = client(&format!("tcp://127.0.0.1:{port}"), Trust::System, "dev-1");
    assert_eq!(
        first_failure(&c, Duration::from_secs(2)).await,
        ConnectFailure::Refused
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "well before the 10 s connect timeout"
    );
    // `wait_connected` names the cause instead of a bare timeout.
    match c.wait_connected(Duration::from_millis(500)).await {
        Err(ClientError::Unreachable { last, attempts }) => {
            assert_eq!(last, ConnectFailure::Refused);
            assert!(attempts >= 2, "retried meanwhile: {attempts}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Transient: a gateway that comes up on the port is found.
    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let (_server, _) = gateway("tcp", &identity, SocketAddr::from(([127, 0, 0, 1], port)));
    c.wait_connected(Duration::from_secs(5)).await.unwrap();
    assert_eq!(c.last_connect_error(), None, "cleared by the login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_attempts_stops_with_the_last_cause() {
    let port = closed_port();
    let mut config = ClientConfig::new(
        &format!("tcp://127.0.0.1:{port}"),
        APP,
        "dev-1",
        token("dev-1"),
    )
    .unwrap();
    config.backoff = Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(20),
        max_attempts: Some(2),
    };
    let c = Client::connect(config);
    match c.wait_connected(Duration::from_secs(5)).await {
        Err(ClientError::Unreachable { last, attempts }) => {
            // The first dial and `max_attempts` retries.
            assert_eq!((last, attempts), (ConnectFailure::Refused, 3));
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(matches!(
        c.stop_error(),
        Some(ClientError::Unreachable {
            last: ConnectFailure::Refused,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_websocket_path_is_a_permanent_404() {
    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let (_server, addr) = gateway("ws", &identity, "127.0.0.1:0".parse().unwrap());
    let url = format!("ws://localhost:{}/wrong", addr.port());
    let started = Instant::now();
    let c = client(&url, Trust::System, "dev-1");
    match c.wait_connected(Duration::from_secs(5)).await {
        Err(ClientError::Unreachable { last, attempts }) => {
            assert_eq!(last, ConnectFailure::WsRejected { status: 404 });
            assert!(last.is_permanent());
            assert_eq!(attempts, 1, "not retried");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        &*c.state().borrow(),
        ConnState::Disconnected { reason } if reason.contains("404")
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.quality().connect_attempts, 1, "stopped for good");

    // Opted in: the same failure is retried.
    let mut config = ClientConfig::new(&url, APP, "dev-2", token("dev-2")).unwrap();
    config.retry_permanent_failures = true;
    config.backoff = Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(20),
        max_attempts: None,
    };
    let c = Client::connect(config);
    match c.wait_connected(Duration::from_millis(500)).await {
        Err(ClientError::Unreachable { last, attempts }) => {
            assert_eq!(last, ConnectFailure::WsRejected { status: 404 });
            assert!(attempts >= 2, "{attempts}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(c.stop_error().is_none(), "still retrying");

    // The right path logs in.
    let good = client(
        &format!("ws://localhost:{}/ws", addr.port()),
        Trust::System,
        "dev-3",
    );
    good.wait_connected(Duration::from_secs(5)).await.unwrap();
}

/// A certificate from another CA: `Tls` (or `Quic` for QUIC, whose handshake is its
/// own) at once, retried (transient by decision: certificates get fixed and rotated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_tls_failure_on_every_tls_transport() {
    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let other_ca = TlsIdentity::self_signed(&["localhost"]).unwrap();
    for scheme in ["tls", "wss", "quic"] {
        let (_server, addr) = gateway(scheme, &identity, "127.0.0.1:0".parse().unwrap());
        let path = if scheme == "wss" { "/ws" } else { "" };
        let url = format!("{scheme}://localhost:{}{path}", addr.port());
        let wrong = Trust::Roots(vec![other_ca.leaf().clone()]);
        let started = Instant::now();
        let c = client(&url, wrong, "dev-1");
        let failure = first_failure(&c, Duration::from_secs(3)).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{scheme}");
        match (scheme, &failure) {
            ("quic", ConnectFailure::Quic(message)) | (_, ConnectFailure::Tls(message)) => {
                assert!(
                    message.to_lowercase().contains("certificate")
                        || message.to_lowercase().contains("issuer"),
                    "{scheme}: {message}"
                );
            }
            other => panic!("{scheme}: expected a TLS failure, got {other:?}"),
        }
        assert!(!failure.is_permanent());
        match c.wait_connected(Duration::from_millis(300)).await {
            Err(ClientError::Unreachable { last, .. }) => assert_eq!(last, failure, "{scheme}"),
            other => panic!("{scheme}: {other:?}"),
        }
        assert!(c.stop_error().is_none(), "{scheme}: still retrying");
        // The right CA logs in.
        let good = client(&url, Trust::Roots(vec![identity.leaf().clone()]), "dev-2");
        good.wait_connected(Duration::from_secs(5)).await.unwrap();
        c.close().await;
        good.close().await;
    }
}

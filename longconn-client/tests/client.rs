//! The SDK against the real gateway runtime, over every transport.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use longconn_client::{Backoff, Client, ClientConfig, ClientError, ConnState, StaticToken, Trust};
use longconn_core::{Code, Frame, Metadata, SessionConfig, TokenKey, TokenKeys, Transmit};
use longconn_server::{
    Backend, BackendError, BackendLimits, BackendReply, BackendRequest, Router, Server,
    ServerConfig, node_of,
};
use longconn_transport::cert::TlsIdentity;

const APP: &str = "sdk-test";
const STEP: Duration = Duration::from_secs(5);

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

/// Echo on business 1; business 2 never answers in time (for timeouts).
struct TestBackend;

#[async_trait]
impl Backend for TestBackend {
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        if request.business == 2 {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        Ok(BackendReply {
            meta: request.meta,
            payload: request.payload,
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
    Quic,
}

/// A gateway on fixed ports (so a restart binds the same ones).
struct Gateway {
    server: Server,
    addr: SocketAddr,
}

fn start(transport: Transport, identity: &TlsIdentity, addr: SocketAddr, node_id: u16) -> Gateway {
    start_full(
        transport,
        identity,
        addr,
        node_id,
        Duration::from_millis(200),
        Arc::new(keys()),
    )
}

fn start_full(
    transport: Transport,
    identity: &TlsIdentity,
    addr: SocketAddr,
    node_id: u16,
    retry_after: Duration,
    authenticator: Arc<dyn longconn_server::Authenticator>,
) -> Gateway {
    use longconn_transport::{quic, tcp, tls, ws};
    let server = memory_gateway(Duration::from_secs(1), retry_after, node_id, authenticator);
    let tcp_tls = || Arc::new(identity.server_config(&[], false).unwrap());
    let bound = match transport {
        Transport::Tcp => {
            let a = tcp::TcpAcceptor::bind(addr, 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        Transport::Tls => {
            let a = tls::TlsAcceptor::bind(addr, tcp_tls(), 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        Transport::Ws => {
            let a = ws::WsAcceptor::bind(addr, 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        Transport::Wss => {
            let a = ws::WsAcceptor::bind_tls(addr, tcp_tls(), 65_536, false).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
        Transport::Quic => {
            let a = quic::QuicAcceptor::bind(addr, identity, 65_536).unwrap();
            let bound = longconn_server::Listener::local_addr(&a).unwrap();
            server.serve(a);
            bound
        }
    };
    Gateway {
        server,
        addr: bound,
    }
}

fn client(transport: Transport, identity: &TlsIdentity, addr: SocketAddr, device: &str) -> Client {
    let url = match transport {
        Transport::Tcp => format!("tcp://localhost:{}", addr.port()),
        Transport::Tls => format!("tls://localhost:{}", addr.port()),
        Transport::Ws => format!("ws://localhost:{}/ws", addr.port()),
        Transport::Wss => format!("wss://localhost:{}/ws", addr.port()),
        Transport::Quic => format!("quic://localhost:{}", addr.port()),
    };
    let mut config = ClientConfig::new(&url, APP, device, token(device)).unwrap();
    config.trust = Trust::Roots(vec![identity.leaf().clone()]);
    config.backoff = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(400),
        max_attempts: None,
    };
    Client::connect(config)
}

fn setup(transport: Transport) -> (TlsIdentity, Gateway) {
    let identity = TlsIdentity::self_signed(&["localhost"]).unwrap();
    let gateway = start(transport, &identity, "127.0.0.1:0".parse().unwrap(), 1);
    (identity, gateway)
}

async fn login_and_requests(transport: Transport) {
    let (identity, gw) = setup(transport);
    let c = client(transport, &identity, gw.addr, "dev-1");
    let conn_id = c.wait_connected(STEP).await.unwrap();
    assert!(gw.server.hub().get(conn_id).is_some());
    // Many requests in flight on one connection, answered by id.
    let calls = (0..20u32).map(|i| c.request(1, Bytes::from(format!("call {i}"))));
    let answers = futures_join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().payload, format!("call {i}"));
    }
    // A call the backend does not answer in time.
    let slow = c
        .request_with(2, Metadata::new(), Bytes::new(), Duration::from_millis(200))
        .await;
    assert!(matches!(slow, Err(ClientError::Timeout)), "{slow:?}");
    // Groups are not served until the group layer exists: the refusal is typed.
    match c.join("room-1").await {
        Err(ClientError::Failed { code, .. }) => assert_eq!(code, Code::GroupForbidden),
        other => panic!("expected a refused join, got {other:?}"),
    }
    c.close().await;
    assert!(matches!(
        &*c.state().borrow(),
        ConnState::Disconnected { .. }
    ));
    let quality = c.quality();
    assert_eq!(quality.connect_successes, 1);
    assert!(quality.last_connect_latency.is_some());
}

async fn futures_join_all<F: std::future::Future>(
    calls: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = calls.map(Box::pin).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

async fn pushes_and_heartbeats(transport: Transport) {
    let (identity, gw) = setup(transport);
    let c = client(transport, &identity, gw.addr, "dev-1");
    let mut pushes = c.pushes().unwrap();
    c.wait_connected(STEP).await.unwrap();
    let handle = gw.server.hub().find_device(APP, "dev-1").unwrap();
    handle.push(Transmit::Frame(Frame::Push {
        id: 9,
        ack_required: true,
        business: 7,
        group: None,
        seq: Some(1),
        epoch: None,
        meta: Metadata::new(),
        payload: Bytes::from_static(b"hello"),
    }));
    let push = tokio::time::timeout(STEP, pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (push.business, push.payload.as_ref()),
        (7, b"hello".as_ref())
    );
    // A listener for business 8 takes its pushes; others still reach the stream.
    let mut eights = c.subscribe(8);
    for (id, business) in [(10, 8), (11, 7)] {
        handle.push(Transmit::Frame(Frame::Push {
            id,
            ack_required: false,
            business,
            group: Some("room".into()),
            seq: Some(u64::from(id)),
            epoch: None,
            meta: Metadata::new(),
            payload: Bytes::from(format!("to {business}")),
        }));
    }
    let eight = tokio::time::timeout(STEP, eights.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((eight.business, eight.group.as_deref()), (8, Some("room")));
    let seven = tokio::time::timeout(STEP, pushes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((seven.business, seven.seq), (7, Some(11)));
    // A heartbeat round trip over this transport (the interval is the advertised
    // 300 ms). Keeping an idle session alive for many intervals is checked on a paused
    // clock in `heartbeats_keep_an_idle_session_alive`.
    eventually("a pong", || c.quality().pongs_received >= 1).await;
    assert!(c.quality().last_rtt.is_some());
    assert!(matches!(&*c.state().borrow(), ConnState::Connected { .. }));
}

/// Polls `check` until it holds, for up to [`STEP`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn reconnects_after_a_restart_with_go_away(transport: Transport) {
    let (identity, gw) = setup(transport);
    let addr = gw.addr;
    let c = client(transport, &identity, addr, "dev-1");
    let first = c.wait_connected(STEP).await.unwrap();
    let report = gw.server.shutdown(STEP).await;
    assert_eq!(report.connections, 1);
    // The gateway comes back on the same port (a QUIC endpoint lets go of its UDP port
    // once its closed connections have drained); the client returns after the hint.
    let deadline = tokio::time::Instant::now() + STEP;
    while std::net::UdpSocket::bind(addr).is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted gateway is node 2, so its connection ids differ from the first's.
    let gw2 = start(transport, &identity, addr, 2);
    let mut state = c.state();
    let second = tokio::time::timeout(STEP, async {
        loop {
            if let ConnState::Connected { conn_id } = &*state.borrow_and_update()
                && node_of(*conn_id) == 2
            {
                return *conn_id;
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("reconnected");
    assert_eq!(node_of(first), 1);
    assert!(gw2.server.hub().get(second).is_some());
    assert_eq!(
        c.request(1, Bytes::from_static(b"again"))
            .await
            .unwrap()
            .payload,
        "again"
    );
}

async fn replaced_kick_does_not_loop(transport: Transport) {
    let (identity, gw) = setup(transport);
    let a = client(transport, &identity, gw.addr, "dev-1");
    a.wait_connected(STEP).await.unwrap();
    let b = client(transport, &identity, gw.addr, "dev-1");
    let b_id = b.wait_connected(STEP).await.unwrap();
    let mut state = a.state();
    tokio::time::timeout(STEP, async {
        while !matches!(&*state.borrow_and_update(), ConnState::Disconnected { .. }) {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the replaced client stops");
    match &*a.state().borrow() {
        ConnState::Disconnected { reason } => assert!(reason.contains("replaced"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // It stopped, and the newer session keeps the device (that it stays stopped is
    // checked over a minute of paused clock in `a_replaced_client_stays_stopped`).
    assert_eq!(a.quality().connect_attempts, 1, "no reconnect");
    assert_eq!(
        gw.server.hub().find_device(APP, "dev-1").unwrap().id(),
        b_id
    );
    assert!(matches!(
        a.request(1, Bytes::new()).await,
        Err(ClientError::Closed(_))
    ));
}

macro_rules! sdk_suite {
    ($name:ident, $transport:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn login_and_requests() {
                super::login_and_requests($transport).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pushes_and_heartbeats() {
                super::pushes_and_heartbeats($transport).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reconnects_after_a_restart_with_go_away() {
                super::reconnects_after_a_restart_with_go_away($transport).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replaced_kick_does_not_loop() {
                super::replaced_kick_does_not_loop($transport).await;
            }
        }
    };
}

sdk_suite!(tcp, Transport::Tcp);
sdk_suite!(tls, Transport::Tls);
sdk_suite!(ws, Transport::Ws);
sdk_suite!(wss, Transport::Wss);
sdk_suite!(quic, Transport::Quic);

/// Mints a token that expires `ttl` seconds from each call, and counts the calls. Every
/// call but the first (the login) takes `delay`.
struct ShortLivedTokens {
    device: String,
    ttl: u64,
    delay: Duration,
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl longconn_client::TokenProvider for ShortLivedTokens {
    async fn token(&self) -> Result<Bytes, ClientError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            tokio::time::sleep(self.delay).await;
        }
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + self.ttl;
        Ok(Bytes::from(keys().mint(APP, &self.device, exp)))
    }
}

/// Checks tokens with the test keys and records when each login arrived.
struct ArrivalLog {
    keys: TokenKeys,
    arrivals: std::sync::Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait]
impl longconn_server::Authenticator for ArrivalLog {
    async fn authenticate(
        &self,
        login: &longconn_server::LoginRequest,
        now_unix_s: u64,
    ) -> Result<longconn_server::AuthGrant, Code> {
        self.arrivals
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        self.keys.authenticate(login, now_unix_s).await
    }
}

/// A scripted gateway that accepts logins and joins, so rejoining can be checked before
/// the group layer exists: after a lost connection the client joins its groups again
/// on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_joined_again_after_a_reconnect() {
    use longconn_core::connection::{Connection, FrameReader, FrameWriter};
    use longconn_server::Listener;
    use longconn_transport::tcp::TcpAcceptor;

    let mut acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false).unwrap();
    let addr = acceptor.local_addr().unwrap();
    let (joins_tx, mut joins) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
    tokio::spawn(async move {
        for session in 1..=2u64 {
            let conn = acceptor.accept().await.unwrap().await.unwrap();
            let (mut reader, mut writer) = conn.split();
            let mut joined = 0;
            loop {
                let reply = match reader.recv().await {
                    Ok(Some(Frame::Login { id, .. })) => Frame::LoginAck {
                        id,
                        conn_id: session,
                        heartbeat_ms: 30_000,
                        expires_at_ms: None,
                    },
                    Ok(Some(Frame::JoinGroup { id, group, .. })) => {
                        joins_tx.send((session, group.as_str().to_owned())).unwrap();
                        joined += 1;
                        Frame::JoinAck {
                            id,
                            group,
                            position: None,
                            recovered: None,
                        }
                    }
                    Ok(Some(_)) => continue,
                    _ => break,
                };
                writer.send(Transmit::Frame(reply)).unwrap();
                writer.flush().await.unwrap();
                // The first session is lost after its two joins.
                if session == 1 && joined == 2 {
                    break;
                }
            }
        }
    });
    let url = format!("tcp://127.0.0.1:{}", addr.port());
    let mut config = ClientConfig::new(&url, APP, "dev-1", token("dev-1")).unwrap();
    config.backoff = Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
        max_attempts: None,
    };
    let c = Client::connect(config);
    c.wait_connected(STEP).await.unwrap();
    c.join("room-2").await.unwrap();
    c.join("room-1").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            tokio::time::timeout(STEP, joins.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(
        seen,
        [
            (1, "room-2".to_owned()),
            (1, "room-1".to_owned()),
            (2, "room-1".to_owned()),
            (2, "room-2".to_owned()),
        ],
        "both groups joined again on the second session, without the application asking"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_handler_takes_every_push_inline() {
    let (identity, gw) = setup(Transport::Tcp);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let url = format!("tcp://localhost:{}", gw.addr.port());
    let mut config = ClientConfig::new(&url, APP, "handled", token("handled")).unwrap();
    config.trust = Trust::Roots(vec![identity.leaf().clone()]);
    config.on_push = Some(Arc::new(move |push| {
        let _ = tx.send(push);
    }));
    let c = Client::connect(config);
    let conn_id = c.wait_connected(STEP).await.unwrap();
    let mut stream = c.pushes().unwrap();
    let handle = gw.server.hub().get(conn_id).unwrap();
    for seq in 1..=3 {
        handle.push(Transmit::Frame(Frame::Push {
            id: 0,
            ack_required: false,
            business: 5,
            group: Some("g".into()),
            seq: Some(seq),
            epoch: None,
            meta: Metadata::new(),
            payload: Bytes::from_static(b"p"),
        }));
    }
    for seq in 1..=3 {
        let push = tokio::time::timeout(STEP, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((push.group.as_deref(), push.seq), (Some("g"), Some(seq)));
    }
    assert!(stream.try_recv().is_err(), "the handler took them all");
    c.close().await;
}

// ----- On a paused clock, over in-memory connections -----
//
// Tokio's paused clock jumps to the next timer whenever every task waits, so these
// tests cover seconds and minutes of heartbeats, token lifetimes and reconnect delays
// in milliseconds of wall time. The connections are in-memory pairs served by the real
// runtime (`Server::serve_connection`): no socket waits, which the paused clock would
// otherwise turn into timeouts.

/// The test gateway's server (also behind the socket listeners of `start_full`):
/// heartbeat 300 ms, idle timeout 2 s, token grace `grace`, GoAway hint `retry_after`.
fn memory_gateway(
    grace: Duration,
    retry_after: Duration,
    node_id: u16,
    authenticator: Arc<dyn longconn_server::Authenticator>,
) -> Server {
    let session = SessionConfig::builder()
        .heartbeat_interval(Duration::from_millis(300))
        .idle_timeout(Duration::from_secs(2))
        .token_refresh_grace(grace)
        .build()
        .unwrap();
    let config = ServerConfig::builder()
        .node_id(node_id)
        .session(session)
        .shutdown_retry_after(retry_after)
        .build()
        .unwrap();
    let router = Router::builder()
        .backend("test", TestBackend, BackendLimits::default())
        .default_route("test")
        .build()
        .unwrap();
    Server::new(config, authenticator, Arc::new(router))
}

/// The gateway in-memory clients dial: swapped for a restarted one in the storm test.
type GatewaySlot = Arc<std::sync::Mutex<Server>>;

fn memory_client(
    gateway: &GatewaySlot,
    device: &str,
    tokens: Arc<dyn longconn_client::TokenProvider>,
) -> Client {
    let mut config = ClientConfig::new("tcp://in-memory:1", APP, device, tokens).unwrap();
    config.backoff = Backoff {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(400),
        max_attempts: None,
    };
    let gateway = gateway.clone();
    Client::connect_in_memory(config, move || {
        let server = gateway.lock().unwrap().clone();
        async move {
            let (client_side, server_side) = longconn_core::connection::memory::pair(64, 65_536);
            if server.serve_connection(server_side) {
                Ok(client_side)
            } else {
                Err(ClientError::Transport(
                    "gateway refused the connection".into(),
                ))
            }
        }
    })
}

fn slot(server: Server) -> GatewaySlot {
    Arc::new(std::sync::Mutex::new(server))
}

/// Heartbeats at the advertised 300 ms keep the gateway's 2 s idle timeout away for as
/// long as the session is idle (20 s here).
#[tokio::test(start_paused = true)]
async fn heartbeats_keep_an_idle_session_alive() {
    let gw = slot(memory_gateway(
        Duration::from_secs(1),
        Duration::from_millis(200),
        1,
        Arc::new(keys()),
    ));
    let c = memory_client(&gw, "dev-1", token("dev-1"));
    let conn_id = c.wait_connected(STEP).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(*c.state().borrow(), ConnState::Connected { conn_id });
    let q = c.quality();
    assert!(q.pongs_received >= 60, "{q:?}");
    assert!(q.pings_sent - q.pongs_received <= 1, "{q:?}");
    assert_eq!(q.connect_attempts, 1, "no reconnect");
}

/// The gateway asks for a fresh token when the old one expires; the SDK answers through
/// its provider and the session goes on without a reconnect.
#[tokio::test(start_paused = true)]
async fn expiring_tokens_are_refreshed_through_the_provider() {
    let gw = slot(memory_gateway(
        Duration::from_secs(1),
        Duration::from_millis(200),
        1,
        Arc::new(keys()),
    ));
    let tokens = Arc::new(ShortLivedTokens {
        device: "dev-1".into(),
        ttl: 2,
        delay: Duration::ZERO,
        calls: Default::default(),
    });
    let c = memory_client(&gw, "dev-1", tokens.clone());
    let conn_id = c.wait_connected(STEP).await.unwrap();
    // Past several token lifetimes (2 s) plus the gateway's 1 s grace, the session
    // would have been closed with token_expired had the refreshes not been accepted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(*c.state().borrow(), ConnState::Connected { conn_id });
    assert!(
        tokens.calls.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the provider was asked again for each refresh"
    );
    assert_eq!(c.quality().connect_attempts, 1, "no reconnect");
}

/// A token provider that takes longer than the gateway's idle timeout does not stall
/// the session: heartbeats, pushes and calls go on while the token is fetched.
#[tokio::test(start_paused = true)]
async fn a_slow_token_provider_does_not_stall_heartbeats() {
    let gw = slot(memory_gateway(
        Duration::from_secs(30),
        Duration::from_millis(200),
        1,
        Arc::new(keys()),
    ));
    let tokens = Arc::new(ShortLivedTokens {
        device: "dev-1".into(),
        ttl: 2,
        delay: Duration::from_secs(5),
        calls: Default::default(),
    });
    let c = memory_client(&gw, "dev-1", tokens.clone());
    let conn_id = c.wait_connected(Duration::from_secs(30)).await.unwrap();
    // The token expires after about 2 s; the refresh then takes 5 s, more than the
    // gateway's 2 s idle timeout. A request in the middle of the fetch is answered.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(tokens.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    let answer = c
        .request(1, Bytes::from_static(b"meanwhile"))
        .await
        .unwrap();
    assert_eq!(answer.payload, "meanwhile");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(*c.state().borrow(), ConnState::Connected { conn_id });
    assert_eq!(c.quality().connect_attempts, 1, "no reconnect");
}

/// A login refused for good is not retried: `wait_connected` says why at once, and the
/// state carries the reason.
#[tokio::test(start_paused = true)]
async fn a_refused_login_stops_with_auth_rejected() {
    let gw = slot(memory_gateway(
        Duration::from_secs(1),
        Duration::from_millis(200),
        1,
        Arc::new(keys()),
    ));
    let bad = Arc::new(StaticToken(Bytes::from_static(b"not-a-token")));
    let c = memory_client(&gw, "dev-1", bad);
    match c.wait_connected(STEP).await {
        Err(ClientError::AuthRejected(code)) => assert_eq!(code, Code::InvalidToken),
        other => panic!("expected AuthRejected, got {other:?}"),
    }
    match &*c.state().borrow() {
        ConnState::Disconnected { reason } => {
            assert!(reason.contains("invalid_token"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(c.quality().connect_attempts, 1, "never retried");
    assert!(matches!(
        c.stop_error(),
        Some(ClientError::AuthRejected(Code::InvalidToken))
    ));
    // A token for another device is `forbidden`: the same.
    let other = memory_client(&gw, "dev-2", token("dev-1"));
    assert!(matches!(
        other.wait_connected(STEP).await,
        Err(ClientError::AuthRejected(Code::Forbidden))
    ));
}

/// A client replaced by a newer login of the same device stays stopped (a minute of
/// paused clock: no reconnect loop).
#[tokio::test(start_paused = true)]
async fn a_replaced_client_stays_stopped() {
    let gw = slot(memory_gateway(
        Duration::from_secs(1),
        Duration::from_millis(200),
        1,
        Arc::new(keys()),
    ));
    let a = memory_client(&gw, "dev-1", token("dev-1"));
    a.wait_connected(STEP).await.unwrap();
    let b = memory_client(&gw, "dev-1", token("dev-1"));
    let b_id = b.wait_connected(STEP).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    match &*a.state().borrow() {
        ConnState::Disconnected { reason } => assert!(reason.contains("replaced"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.quality().connect_attempts, 1, "no reconnect loop");
    let server = gw.lock().unwrap().clone();
    assert_eq!(server.hub().find_device(APP, "dev-1").unwrap().id(), b_id);
    assert_eq!(*b.state().borrow(), ConnState::Connected { conn_id: b_id });
}

/// Many clients lose the gateway at the same moment (a drain with a 1 s hint): they
/// come back spread over the jitter window (hint .. 1.5 x hint), not in lockstep.
#[tokio::test(start_paused = true)]
async fn simultaneous_reconnects_come_back_spread_out() {
    const CLIENTS: usize = 200;
    let hint = Duration::from_secs(1);
    let first = memory_gateway(Duration::from_secs(1), hint, 1, Arc::new(keys()));
    let gw = slot(first.clone());
    let clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let device = format!("storm-{i}");
            memory_client(&gw, &device, token(&device))
        })
        .collect();
    for c in &clients {
        c.wait_connected(STEP).await.unwrap();
    }
    let log = Arc::new(ArrivalLog {
        keys: keys(),
        arrivals: Default::default(),
    });
    let second = memory_gateway(Duration::from_secs(1), hint, 2, log.clone());
    *gw.lock().unwrap() = second.clone();
    let lost_at = tokio::time::Instant::now();
    first.shutdown(STEP).await;
    tokio::time::timeout(STEP, async {
        while second.hub().len() < CLIENTS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every client comes back");

    let mut after: Vec<Duration> = log
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.duration_since(lost_at))
        .collect();
    after.sort_unstable();
    assert_eq!(after.len(), CLIENTS);
    assert!(after[0] >= hint, "nobody before the hint: {:?}", after[0]);
    assert!(
        after[CLIENTS - 1] <= hint + hint / 2 + Duration::from_millis(50),
        "everyone within the window: {:?}",
        after[CLIENTS - 1]
    );
    // The jitter window is hint/2 = 500 ms wide. Uniform arrivals have an interquartile
    // range of half of it; lockstep would have none.
    let iqr = after[CLIENTS * 3 / 4] - after[CLIENTS / 4];
    assert!(
        iqr >= Duration::from_millis(150),
        "arrivals bunched: IQR {iqr:?}"
    );
    // No 100 ms slice of the window takes more than 40 % of the clients (uniform: 20 %).
    let mut buckets = [0usize; 5];
    for a in &after {
        let offset = a.saturating_sub(hint).as_millis() as usize;
        buckets[(offset / 100).min(4)] += 1;
    }
    assert!(
        buckets.iter().all(|&n| n < CLIENTS * 2 / 5),
        "arrivals per 100 ms: {buckets:?}"
    );
}

/// Quality reports (opt-in): the SDK counts its connect and heartbeats per transport and
/// the gateway's board receives them under that transport, with the network type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_reports_reach_the_gateways_board() {
    for transport in [Transport::Tcp, Transport::Ws] {
        let (identity, gateway) = setup(transport);
        let url = match transport {
            Transport::Tcp => format!("tcp://localhost:{}", gateway.addr.port()),
            _ => format!("ws://localhost:{}/ws", gateway.addr.port()),
        };
        let mut config = ClientConfig::new(&url, APP, "q", token("q")).unwrap();
        config.trust = Trust::Roots(vec![identity.leaf().clone()]);
        config.quality_report_interval = Some(Duration::from_millis(2_500));
        config.network = 1;
        let client = Client::connect(config);
        client.wait_connected(STEP).await.unwrap();
        let name = match transport {
            Transport::Tcp => "tcp",
            _ => "ws",
        };
        let board = gateway.server.quality().clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let summary = board.summary();
            let cell = summary
                .cells
                .iter()
                .find(|c| c.transport.name() == name && c.pings >= 1);
            if let Some(cell) = cell {
                assert_eq!((cell.connect_attempts, cell.connect_successes), (1, 1));
                assert_eq!(summary.reports[0].network, 1);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {name} report with a ping: {summary:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.close().await;
    }
}

//! `Gateway::builder()` embedded in a test: custom parts plugged in, the one frame limit
//! reaching every listener, the group layer and the push API, and the defaults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::{Code, Frame, Metadata, SessionConfig, Transmit};
use longconn_gateway::{Gateway, GatewayError, ListenerKind};
use longconn_group::GroupConfig;
use longconn_server::{
    AuthGrant, Authenticator, BackendReply, DeviceKey, FnBackend, GroupLog, GroupLogError,
    GroupMessage, GroupPosition, KickRequest, LoginRequest, MemoryRouteStore, PushMessage, Relay,
    RelayBatch, RelayResult, RemoteGroupReport, Route, RouteStore, Router, ServerConfig,
};
use longconn_transport::TransportConfig;
use longconn_transport::tcp::TcpConnection;
use longconn_transport::ws::WsConnection;

const WAIT: Duration = Duration::from_secs(5);

/// Lets a device in when its token is its own name reversed.
struct Reversed;

#[async_trait]
impl Authenticator for Reversed {
    async fn authenticate(&self, login: &LoginRequest, _now: u64) -> Result<AuthGrant, Code> {
        let expected: String = login.device.as_str().chars().rev().collect();
        if login.token == expected.as_bytes() {
            Ok(AuthGrant {
                expires_unix_s: None,
            })
        } else {
            Err(Code::InvalidToken)
        }
    }
}

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Peer<C: Connection> {
    reader: C::Reader,
    writer: C::Writer,
}

impl<C: Connection> Peer<C> {
    fn new(conn: C) -> Self {
        let (reader, writer) = conn.split();
        Peer { reader, writer }
    }

    async fn send(&mut self, frame: Frame) {
        self.writer.send(Transmit::Frame(frame)).unwrap();
        self.writer.flush().await.unwrap();
    }

    /// The next frame; `None` at the end of the connection (or on a transport error
    /// after the server closed it).
    async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, self.reader.recv())
            .await
            .expect("a frame within 5 s")
            .unwrap_or(None)
    }

    async fn login(&mut self, device: &str, token: &str) -> Option<Frame> {
        self.send(Frame::Login {
            id: 1,
            app: "app".into(),
            device: device.into(),
            token: Bytes::copy_from_slice(token.as_bytes()),
            meta: Metadata::new(),
        })
        .await;
        self.recv().await
    }

    async fn request(&mut self, id: u32, business: u32, payload: Vec<u8>) -> Option<Frame> {
        self.send(Frame::Request {
            id,
            business,
            meta: Metadata::new(),
            payload: payload.into(),
        })
        .await;
        self.recv().await
    }

    async fn join(&mut self, id: u32, group: &str) -> Option<Frame> {
        self.send(Frame::JoinGroup {
            id,
            group: group.into(),
            since: None,
        })
        .await;
        self.recv().await
    }
}

async fn tcp(addr: SocketAddr) -> Peer<TcpConnection> {
    Peer::new(TcpConnection::connect(addr, 1 << 20).await.unwrap())
}

async fn ws(addr: SocketAddr) -> Peer<WsConnection> {
    Peer::new(
        WsConnection::connect(addr, &format!("ws://{addr}/ws"), 1 << 20)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_custom_backend_and_authenticator_serve_a_client() {
    let gateway = Gateway::builder()
        .tcp(any())
        .authenticator(Reversed)
        .backend(
            7,
            FnBackend::new(|request| async move {
                let mut payload = request.payload.to_vec();
                payload.reverse();
                Ok(BackendReply {
                    meta: request.meta,
                    payload: payload.into(),
                })
            }),
        )
        .start()
        .await
        .unwrap();
    let addr = gateway.local_addr(ListenerKind::Tcp).unwrap();
    assert_eq!(gateway.bound, vec![("tcp", addr)]);
    assert_eq!(gateway.local_addr(ListenerKind::Ws), None);

    // The development key no longer opens the door: the authenticator decides.
    let mut refused = tcp(addr).await;
    assert!(matches!(
        refused.login("phone", "not it").await,
        Some(Frame::Close {
            code: Code::InvalidToken,
            ..
        })
    ));

    let mut client = tcp(addr).await;
    assert!(matches!(
        client.login("phone", "enohp").await,
        Some(Frame::LoginAck { id: 1, .. })
    ));
    match client.request(2, 7, b"abc".to_vec()).await {
        Some(Frame::Response { id: 2, payload, .. }) => assert_eq!(payload, "cba"),
        other => panic!("business 7: {other:?}"),
    }
    // Business 1 keeps the echo backend; nothing else is routed.
    match client.request(3, 1, b"abc".to_vec()).await {
        Some(Frame::Response { id: 3, payload, .. }) => assert_eq!(payload, "abc"),
        other => panic!("business 1: {other:?}"),
    }
    assert!(matches!(
        client.request(4, 8, Vec::new()).await,
        Some(Frame::Error {
            id: 4,
            code: Code::UnknownBusiness,
            ..
        })
    ));
    assert_eq!(gateway.server().hub().len(), 1);
    let report = gateway.shutdown().await;
    assert_eq!(report.connections, 1);
    assert_eq!(report.forced, 0);
}

#[tokio::test]
async fn the_session_frame_limit_reaches_every_part() {
    const LIMIT: usize = 4096;
    let session = SessionConfig::builder()
        .max_frame_size(LIMIT)
        .build()
        .unwrap();
    let gateway = Gateway::builder()
        .server_config(ServerConfig::builder().session(session).build().unwrap())
        // A transport config and a group config of their own: their frame limits are
        // replaced by the session's, the rest is kept.
        .transport(
            TransportConfig::builder()
                .listen_backlog(64)
                .build()
                .unwrap(),
        )
        .groups(
            GroupConfig::builder()
                .max_groups_per_connection(3)
                .build()
                .unwrap(),
        )
        .authenticator(Reversed)
        .tcp(any())
        .ws(any())
        .http(any())
        .start()
        .await
        .unwrap();
    assert_eq!(gateway.transport_config().max_frame_size(), LIMIT);
    assert_eq!(gateway.transport_config().listen_backlog(), 64);
    assert_eq!(gateway.groups().config().max_frame_size(), LIMIT);
    assert_eq!(gateway.groups().config().max_groups_per_connection(), 3);
    // The order listeners were added in, HTTP last.
    let labels: Vec<_> = gateway.bound.iter().map(|(label, _)| *label).collect();
    assert_eq!(labels, ["tcp", "ws", "http"]);

    let small = vec![1u8; LIMIT - 512];
    let large = vec![1u8; LIMIT + 1];
    let mut over_tcp = tcp(gateway.local_addr(ListenerKind::Tcp).unwrap()).await;
    assert!(matches!(
        over_tcp.login("t", "t").await,
        Some(Frame::LoginAck { .. })
    ));
    assert!(matches!(
        over_tcp.request(2, 1, small.clone()).await,
        Some(Frame::Response { id: 2, .. })
    ));
    assert!(matches!(
        over_tcp.request(3, 1, large.clone()).await,
        Some(Frame::Close {
            code: Code::FrameTooLarge,
            ..
        })
    ));
    assert!(over_tcp.recv().await.is_none(), "closed after the refusal");

    let mut over_ws = ws(gateway.local_addr(ListenerKind::Ws).unwrap()).await;
    assert!(matches!(
        over_ws.login("w", "w").await,
        Some(Frame::LoginAck { .. })
    ));
    assert!(matches!(
        over_ws.request(2, 1, small).await,
        Some(Frame::Response { id: 2, .. })
    ));
    assert!(matches!(
        over_ws.request(3, 1, large).await,
        Some(Frame::Close {
            code: Code::FrameTooLarge,
            ..
        })
    ));

    // The push API: a payload that fits a frame of the limit, and one that does not.
    let http = gateway.local_addr(ListenerKind::Http).unwrap();
    let push = |len: usize| {
        let payload = "A".repeat(len / 3 * 4); // base64 of `len` bytes
        format!(r#"{{"app":"app","business":9,"devices":["nobody"],"payload_b64":"{payload}"}}"#)
    };
    let limit = LIMIT - longconn_gateway::PUSH_FRAME_OVERHEAD;
    assert_eq!(
        http_post(http, "/v1/push/devices", &push(limit / 3 * 3)).await,
        200
    );
    assert_eq!(
        http_post(http, "/v1/push/devices", &push(limit + 3)).await,
        413
    );
    gateway.shutdown().await;
}

/// POSTs `body` as JSON; returns the status.
async fn http_post(addr: SocketAddr, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    response[9..12].parse().unwrap()
}

#[tokio::test]
async fn defaults_are_the_libraries_defaults() {
    let gateway = Gateway::builder().start().await.unwrap();
    assert!(gateway.bound.is_empty(), "nothing listens unless asked");
    let config = gateway.server().config();
    let defaults = ServerConfig::default();
    assert_eq!(config.node_id(), defaults.node_id());
    assert_eq!(config.max_connections(), defaults.max_connections());
    assert_eq!(config.close_linger(), defaults.close_linger());
    assert_eq!(
        config.shutdown_retry_after(),
        defaults.shutdown_retry_after()
    );
    assert_eq!(**config.session(), SessionConfig::default());
    assert_eq!(gateway.transport_config(), &TransportConfig::default());
    assert_eq!(gateway.groups().config(), &GroupConfig::default());
    gateway.shutdown().await;
}

/// Numbers every publish in epoch 42.
#[derive(Debug, Default)]
struct FixedEpoch(AtomicU64);

#[async_trait]
impl GroupLog for FixedEpoch {
    async fn next_position(&self, _group: &str) -> Result<GroupPosition, GroupLogError> {
        Ok(GroupPosition {
            epoch: 42,
            offset: self.0.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}

#[tokio::test]
async fn route_store_group_log_and_join_authorizer_plug_in() {
    let store = Arc::new(MemoryRouteStore::new());
    let gateway = Gateway::builder()
        .tcp(any())
        .authenticator(Reversed)
        .route_store(store.clone())
        .group_log(Arc::new(FixedEpoch::default()))
        .join_authorizer(|_: &DeviceKey, group: &str| group != "secret")
        .start()
        .await
        .unwrap();
    let mut client = tcp(gateway.local_addr(ListenerKind::Tcp).unwrap()).await;
    assert!(matches!(
        client.login("abc", "cba").await,
        Some(Frame::LoginAck { .. })
    ));
    assert!(matches!(
        client.join(2, "room").await,
        Some(Frame::JoinAck { id: 2, .. })
    ));
    assert!(matches!(
        client.join(3, "secret").await,
        Some(Frame::Error {
            id: 3,
            code: Code::GroupForbidden,
            ..
        })
    ));

    let report = gateway
        .groups()
        .publish("room", &PushMessage::new(9, "hi"))
        .await
        .unwrap();
    assert_eq!((report.members, report.epoch, report.seq), (1, 42, 1));
    assert!(matches!(client.recv().await, Some(Frame::Push { .. })));

    // The login reached the store given to the builder.
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "route registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.shutdown().await;
    assert!(store.is_empty(), "the route is removed at close");
}

#[tokio::test]
async fn inconsistent_settings_are_refused_before_anything_listens() {
    // A TLS-based listener without an identity.
    let err = Gateway::builder()
        .tcp(any())
        .quic(any())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Config(m) if m.contains("TLS identity")),
        "{err}"
    );
    // A QUIC idle timeout that would drop sessions between heartbeats (30 s).
    let err = Gateway::builder()
        .quic(any())
        .tls_identity(longconn_transport::cert::TlsIdentity::self_signed(&["localhost"]).unwrap())
        .transport(
            TransportConfig::builder()
                .quic_idle_timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Config(m) if m.contains("quic_idle_timeout")),
        "{err}"
    );
    // Both a router and backends.
    let err = Gateway::builder()
        .router(Router::echo())
        .backend(7, longconn_server::EchoBackend)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Config(_)), "{err}");
    // Two backends for one business.
    let err = Gateway::builder()
        .backend(7, longconn_server::EchoBackend)
        .backend(7, longconn_server::EchoBackend)
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("business 7"), "{err}");

    // A listener that cannot bind: the one bound before it is closed again.
    let taken = std::net::TcpListener::bind(any()).unwrap();
    let err = Gateway::builder()
        .tcp(any())
        .tcp(taken.local_addr().unwrap())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Transport(_)), "{err}");
}

/// Answers every relayed push as queued and records what crossed "nodes".
#[derive(Debug, Default)]
struct RecordingRelay {
    batches: std::sync::Mutex<Vec<(u16, Vec<String>)>>,
    active_groups: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Relay for RecordingRelay {
    async fn push_batch(&self, node: u16, batch: &RelayBatch) -> Vec<RelayResult> {
        let devices = batch.targets.iter().map(|t| t.device.clone()).collect();
        self.batches.lock().unwrap().push((node, devices));
        vec![RelayResult::Queued; batch.targets.len()]
    }

    async fn publish_group(&self, _message: &GroupMessage) -> RemoteGroupReport {
        RemoteGroupReport::default()
    }

    async fn kick(&self, _node: u16, _request: &KickRequest) -> RelayResult {
        RelayResult::Offline
    }

    fn group_active(&self, group: &str) {
        self.active_groups.lock().unwrap().push(group.to_owned());
    }
}

#[tokio::test]
async fn a_relay_reaches_both_the_server_and_the_group_layer() {
    let store = Arc::new(MemoryRouteStore::new());
    // A device logged in on node 9, as a shared store would say.
    store
        .register(&[(
            DeviceKey::new("demo", "far"),
            Route {
                conn_id: (9 << 48) | 1,
                node: 9,
            },
        )])
        .await
        .unwrap();
    let relay = Arc::new(RecordingRelay::default());
    let gateway = Gateway::builder()
        .tcp(any())
        .authenticator(Reversed)
        .route_store(store)
        .relay(relay.clone())
        .start()
        .await
        .unwrap();

    let report = gateway
        .server()
        .pusher()
        .push_devices("demo", &["far", "nowhere"], &PushMessage::new(9, "hi"))
        .await
        .unwrap();
    assert_eq!(report.queued, 1, "{report:?}");
    assert_eq!(report.offline, vec!["nowhere".to_owned()]);
    assert_eq!(
        *relay.batches.lock().unwrap(),
        vec![(9, vec!["far".to_owned()])],
        "one relay message for node 9"
    );

    let mut client = tcp(gateway.local_addr(ListenerKind::Tcp).unwrap()).await;
    assert!(matches!(
        client.login("abc", "cba").await,
        Some(Frame::LoginAck { .. })
    ));
    assert!(matches!(
        client.join(2, "room").await,
        Some(Frame::JoinAck { id: 2, .. })
    ));
    assert_eq!(
        *relay.active_groups.lock().unwrap(),
        vec!["room".to_owned()],
        "the group layer tells the same relay"
    );
    gateway.shutdown().await;
}

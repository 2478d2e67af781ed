//! Task ownership: a connection's request tasks end with the connection, shutdown waits
//! for the route store to hear every close, and no task of the server is alive once
//! shutdown returns.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use longconn_core::connection::memory::{MemoryClient, MemoryConnection, pair};
use longconn_core::connection::{Listener, TransportKind};
use longconn_core::{Code, ConnectionError, Frame, Metadata, TokenKey, TokenKeys};
use longconn_server::{
    AuthGrant, Authenticator, Backend, BackendError, BackendLimits, BackendReply, BackendRequest,
    ConnectionEvent, FnBackend, LoginRequest, MemoryRouteStore, RouteStore, Router, Server,
    ServerConfig,
};
use tokio::sync::mpsc;

const APP: &str = "tasks-test";
const SLOW: u32 = 40;
const STEP: Duration = Duration::from_secs(10);

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"tasks-test-secret-0123").unwrap())
}

fn token(device: &str) -> Bytes {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Bytes::from(keys().mint(APP, device, exp))
}

async fn login(server: &Server, device: &str) -> MemoryClient {
    let (client, served) = pair(16, 65_536);
    assert!(server.serve_connection(served));
    let mut client = MemoryClient::new(client);
    client
        .login(APP, device, token(device))
        .await
        .unwrap()
        .unwrap();
    client
}

fn request(id: u32) -> Frame {
    Frame::Request {
        id,
        business: SLOW,
        meta: Metadata::default(),
        payload: Bytes::from_static(b"x"),
    }
}

/// Sends a signal when dropped: the backend call it lives in was cancelled or ended.
struct DropSignal(mpsc::UnboundedSender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

#[tokio::test(start_paused = true)]
async fn a_departed_clients_request_is_cancelled_and_frees_its_permit() {
    let (events, mut seen) = mpsc::unbounded_channel();
    // One call at a time, and a timeout far beyond the test: only cancellation can free
    // the permit in time.
    let backend = FnBackend::new(move |req: longconn_server::BackendRequest| {
        let events = events.clone();
        async move {
            let _guard = DropSignal(events.clone());
            let _ = events.send("started");
            if req.device.device() == "stuck" {
                std::future::pending::<()>().await;
            }
            Ok(BackendReply {
                meta: Metadata::default(),
                payload: Bytes::from_static(b"served"),
            })
        }
    });
    let limits = BackendLimits {
        timeout: Duration::from_secs(3600),
        max_concurrency: 1,
    };
    let router = Router::builder()
        .backend("slow", backend, limits)
        .route(SLOW, "slow")
        .build()
        .unwrap();
    let config = ServerConfig::builder().build().unwrap();
    let server = Server::builder(config, Arc::new(keys()))
        .router(Arc::new(router))
        .build();

    let mut stuck = login(&server, "stuck").await;
    stuck.send(request(1)).await.unwrap();
    assert_eq!(recv(&mut seen).await, "started");
    drop(stuck);
    assert_eq!(
        recv(&mut seen).await,
        "dropped",
        "the backend call of a departed client is cancelled"
    );

    let mut next = login(&server, "next").await;
    next.send(request(2)).await.unwrap();
    let answer = tokio::time::timeout(STEP, next.recv())
        .await
        .expect("an answer in time")
        .unwrap()
        .expect("open");
    match answer {
        Frame::Response { id: 2, payload, .. } => assert_eq!(&payload[..], b"served"),
        other => panic!("expected the backend's response (the permit was freed), got {other:?}"),
    }
    server.shutdown(Duration::from_secs(1)).await;
}

async fn recv(seen: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    tokio::time::timeout(STEP, seen.recv())
        .await
        .expect("a backend event in time")
        .expect("backend alive")
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_every_route_unregister() {
    let store = Arc::new(MemoryRouteStore::new());
    let config = ServerConfig::builder().node_id(3).build().unwrap();
    let server = Server::builder(config, Arc::new(keys()))
        .route_store(store.clone())
        .build();
    let devices: Vec<String> = (0..50).map(|i| format!("d{i}")).collect();
    let mut clients = Vec::new();
    for device in &devices {
        clients.push(login(&server, device).await);
    }
    let keys: Vec<&str> = devices.iter().map(String::as_str).collect();
    // Registers are applied in the background; wait until the store has them all.
    tokio::time::timeout(STEP, async {
        while store
            .lookup(APP, &keys)
            .await
            .unwrap()
            .iter()
            .any(Option::is_none)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every route registered");

    let report = server.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.connections, 50);
    assert_eq!(report.route_changes_dropped, 0);
    assert!(
        report.route_changes_flushed >= 50,
        "50 unregisters were applied before shutdown returned: {report:?}"
    );
    let after = store.lookup(APP, &keys).await.unwrap();
    assert!(
        after.iter().all(Option::is_none),
        "no route survives the shutdown: {after:?}"
    );
}

/// A listener fed through a channel: each item is one peer's handshake.
struct ChannelListener(mpsc::UnboundedReceiver<Handshake>);

type Handshake = Pin<Box<dyn Future<Output = Result<MemoryConnection, ConnectionError>> + Send>>;

impl Listener for ChannelListener {
    type Conn = MemoryConnection;
    type Handshake = Handshake;

    async fn accept(&mut self) -> std::io::Result<Handshake> {
        match self.0.recv().await {
            Some(handshake) => Ok(handshake),
            None => std::future::pending().await,
        }
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Memory
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

/// Never answers a request and never finishes taking a connection event.
struct Stuck;

#[async_trait]
impl Backend for Stuck {
    async fn call(&self, _: BackendRequest) -> Result<BackendReply, BackendError> {
        std::future::pending().await
    }

    async fn connection_event(&self, _: ConnectionEvent) {
        std::future::pending().await
    }
}

/// Checks tokens, except that device `late`'s check never finishes.
struct SlowFor(TokenKeys);

#[async_trait]
impl Authenticator for SlowFor {
    async fn authenticate(&self, login: &LoginRequest, now: u64) -> Result<AuthGrant, Code> {
        if login.device.as_str() == "late" {
            std::future::pending::<()>().await;
        }
        self.0.authenticate(login, now).await
    }
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(start_paused = true)]
async fn no_task_of_the_server_outlives_shutdown() {
    assert_eq!(alive_tasks(), 0);
    let limits = BackendLimits {
        timeout: Duration::from_secs(3600),
        max_concurrency: 8,
    };
    let router = Router::builder()
        .backend("stuck", Stuck, limits)
        .route(SLOW, "stuck")
        .subscribe("stuck")
        .build()
        .unwrap();
    let config = ServerConfig::builder()
        .close_linger(Duration::from_millis(200))
        .build()
        .unwrap();
    let server = Server::builder(config, Arc::new(SlowFor(keys())))
        .router(Arc::new(router))
        .build();
    // Every kind of task: an accept loop, drivers (through the listener and directly),
    // a handshake that never completes, auth, requests that never finish, the route
    // sync task and an event subscriber that never finishes an event.
    let (peers, incoming) = mpsc::unbounded_channel();
    server.serve(ChannelListener(incoming));
    let (client, served) = pair(16, 65_536);
    peers.send(Box::pin(async move { Ok(served) })).unwrap();
    peers.send(Box::pin(std::future::pending())).unwrap();
    let mut via_listener = MemoryClient::new(client);
    via_listener
        .login(APP, "listened", token("listened"))
        .await
        .unwrap()
        .unwrap();
    let mut direct = login(&server, "direct").await;
    for (i, client) in [&mut via_listener, &mut direct].into_iter().enumerate() {
        client.send(request(i as u32 + 1)).await.unwrap();
    }
    // A client whose login check is still running at shutdown.
    let (pending_login, served) = pair(16, 65_536);
    assert!(server.serve_connection(served));
    let mut pending_login = MemoryClient::new(pending_login);
    pending_login
        .send(Frame::Login {
            id: 1,
            app: APP.into(),
            device: "late".into(),
            token: token("late"),
            meta: Metadata::default(),
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert!(alive_tasks() >= 5, "{} tasks", alive_tasks());

    let report = server.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.connections, 3);
    assert_eq!(alive_tasks(), 0, "tasks alive after shutdown: {report:?}");
}

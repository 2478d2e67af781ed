//! Task ownership: a connection's request tasks end with the connection, and shutdown
//! waits for the route store to hear every close.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_core::connection::memory::{MemoryClient, pair};
use longconn_core::{Frame, Metadata, TokenKey, TokenKeys};
use longconn_server::{
    BackendLimits, BackendReply, FnBackend, MemoryRouteStore, RouteStore, Router, Server,
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

#[tokio::test]
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

#[tokio::test]
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

//! The in-process push API against a running server with in-memory clients: single,
//! acked and batched pushes, and what each result means. No real I/O, so every test
//! runs on tokio's paused clock: timeouts cost no wall time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use longconn_core::connection::memory::{MemoryClient, pair};
use longconn_core::{Frame, SessionConfig, SlowConsumerPolicy, TokenKey, TokenKeys};
use longconn_server::{
    BatchReport, DeviceKey, MemoryRouteStore, PushMessage, PushResult, Route, RouteStore,
    RouteStoreError, Server, ServerConfig, Target,
};

const APP: &str = "push-test";
const STEP: Duration = Duration::from_secs(10);

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"push-test-secret-01234").unwrap())
}

fn token(device: &str) -> Bytes {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Bytes::from(keys().mint(APP, device, exp))
}

fn server_with(store: Arc<dyn RouteStore>) -> Server {
    let session = SessionConfig::builder()
        .max_queued_pushes(4)
        .slow_consumer_policy(SlowConsumerPolicy::DropNewest)
        .build()
        .unwrap();
    let config = ServerConfig::builder().session(session).build().unwrap();
    Server::builder(config, Arc::new(keys()))
        .route_store(store)
        .build()
}

async fn login(server: &Server, device: &str, capacity: usize) -> (MemoryClient, u64) {
    let (client, served) = pair(capacity, 65_536);
    assert!(server.serve_connection(served));
    let mut client = MemoryClient::new(client);
    let conn_id = client
        .login(APP, device, token(device))
        .await
        .unwrap()
        .unwrap();
    (client, conn_id)
}

async fn next(client: &mut MemoryClient) -> Frame {
    tokio::time::timeout(STEP, client.recv())
        .await
        .expect("a frame in time")
        .unwrap()
        .expect("open")
}

#[tokio::test(start_paused = true)]
async fn single_pushes_by_connection_and_device() {
    let server = server_with(Arc::new(MemoryRouteStore::new()));
    let pusher = server.pusher();
    let (mut client, conn_id) = login(&server, "d1", 16).await;
    let message = PushMessage::new(4, &b"hi"[..]);
    assert_eq!(
        pusher.push(Target::Conn(conn_id), &message),
        PushResult::Queued
    );
    let by_device = Target::Device {
        app: APP,
        device: "d1",
    };
    assert_eq!(pusher.push(by_device, &message), PushResult::Queued);
    for _ in 0..2 {
        assert!(matches!(
            next(&mut client).await,
            Frame::Push {
                business: 4,
                ack_required: false,
                ..
            }
        ));
    }
    assert_eq!(
        pusher.push(Target::Conn(conn_id + 1000), &message),
        PushResult::Offline
    );
    let other_app = Target::Device {
        app: "other",
        device: "d1",
    };
    assert_eq!(pusher.push(other_app, &message), PushResult::Offline);
}

#[tokio::test(start_paused = true)]
async fn acked_pushes_report_delivery_or_timeout() {
    let server = server_with(Arc::new(MemoryRouteStore::new()));
    let pusher = server.pusher();
    let (mut client, conn_id) = login(&server, "d1", 16).await;
    let message = PushMessage::new(4, &b"confirm me"[..]);

    let acking = async {
        let Frame::Push {
            id,
            ack_required: true,
            ..
        } = next(&mut client).await
        else {
            panic!("an acked push");
        };
        client.send(Frame::PushAck { id }).await.unwrap();
    };
    let (result, ()) = tokio::join!(
        pusher.push_acked(Target::Conn(conn_id), &message, STEP),
        acking
    );
    assert_eq!(result, PushResult::Delivered);

    // The client reads it but never acks.
    let (result, frame) = tokio::join!(
        pusher.push_acked(Target::Conn(conn_id), &message, Duration::from_millis(200)),
        next(&mut client)
    );
    assert!(matches!(
        frame,
        Frame::Push {
            ack_required: true,
            ..
        }
    ));
    assert_eq!(result, PushResult::TimedOut);

    // The client reads it and hangs up without acking: the caller learns at once, not
    // at the timeout.
    let started = tokio::time::Instant::now();
    let (result, frame) = tokio::join!(
        pusher.push_acked(Target::Conn(conn_id), &message, Duration::from_secs(30)),
        async {
            let frame = next(&mut client).await;
            drop(client);
            frame
        }
    );
    assert!(matches!(
        frame,
        Frame::Push {
            ack_required: true,
            ..
        }
    ));
    assert_eq!(result, PushResult::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let missing = Target::Device {
        app: APP,
        device: "nobody",
    };
    assert_eq!(
        pusher.push_acked(missing, &message, STEP).await,
        PushResult::Offline
    );
}

#[tokio::test(start_paused = true)]
async fn batches_report_queued_offline_and_dropped_per_device() {
    let server = server_with(Arc::new(MemoryRouteStore::new()));
    let pusher = server.pusher();
    let (mut fast, _) = login(&server, "fast", 64).await;
    // `slow` never reads: 1 frame fits its pipe, 4 its session queue, 4 its inbox.
    let (_slow, _) = login(&server, "slow", 1).await;
    let devices = ["fast", "slow", "gone"];
    let mut total = BatchReport::default();
    for n in 0..12u8 {
        let message = PushMessage::new(2, vec![n]);
        let report = pusher.push_devices(APP, &devices, &message).await.unwrap();
        assert_eq!(report.offline, ["gone"]);
        total.queued += report.queued;
        total.dropped.extend(report.dropped);
        // Let the drivers move what they can (on the paused clock: until they idle).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !total.dropped.is_empty(),
        "the slow device's queue never filled"
    );
    assert!(
        total.dropped.iter().all(|d| d == "slow"),
        "{:?}",
        total.dropped
    );
    assert_eq!(total.queued + total.dropped.len(), 24);
    for n in 0..12u8 {
        let Frame::Push { payload, .. } = next(&mut fast).await else {
            panic!("a push");
        };
        assert_eq!(&payload[..], &[n]);
    }

    let each = [
        ("fast", PushMessage::new(3, &b"a"[..])),
        ("gone", PushMessage::new(3, &b"b"[..])),
    ];
    let report = pusher.push_each(APP, &each).await.unwrap();
    assert_eq!(
        (report.queued, report.offline.as_slice()),
        (1, &["gone".to_owned()][..])
    );
    let too_big = [("fast", PushMessage::new(3, vec![0u8; 70_000]))];
    assert!(pusher.push_each(APP, &too_big).await.is_err());
}

/// A store that knows one route this node's hub does not: batches must consult it.
#[derive(Debug)]
struct FixedStore(Route);

#[async_trait]
impl RouteStore for FixedStore {
    async fn register(&self, _: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        Ok(())
    }
    async fn unregister(&self, _: &[(DeviceKey, u64)]) -> Result<(), RouteStoreError> {
        Ok(())
    }
    async fn refresh(&self, _: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        Ok(())
    }
    async fn lookup(
        &self,
        _app: &str,
        devices: &[&str],
    ) -> Result<Vec<Option<Route>>, RouteStoreError> {
        Ok(devices
            .iter()
            .map(|d| (*d == "elsewhere").then_some(self.0))
            .collect())
    }
}

#[tokio::test(start_paused = true)]
async fn devices_missing_from_the_hub_are_looked_up_in_the_route_store() {
    // A route to another node is not deliverable from here yet: offline.
    let remote = Route {
        conn_id: 7,
        node: 9,
    };
    let server = server_with(Arc::new(FixedStore(remote)));
    let report = server
        .pusher()
        .push_devices(
            APP,
            &["elsewhere", "nowhere"],
            &PushMessage::new(1, &b"x"[..]),
        )
        .await
        .unwrap();
    assert_eq!(report.offline, ["elsewhere", "nowhere"]);

    // A route the hub does not know (an alias registered by someone else) to a live
    // local connection is delivered.
    let store = Arc::new(MemoryRouteStore::new());
    let server = server_with(store.clone());
    let (mut client, conn_id) = login(&server, "d1", 16).await;
    let local = Route {
        conn_id,
        node: server.hub().node_id(),
    };
    store
        .register(&[(DeviceKey::new(APP, "alias"), local)])
        .await
        .unwrap();
    let report = server
        .pusher()
        .push_devices(APP, &["alias"], &PushMessage::new(1, &b"y"[..]))
        .await
        .unwrap();
    assert_eq!((report.queued, report.offline.len()), (1, 0));
    assert!(matches!(next(&mut client).await, Frame::Push { .. }));
    // The server registered the real device's route itself, in the background.
    let deadline = tokio::time::Instant::now() + STEP;
    while store.lookup(APP, &["d1"]).await.unwrap() != vec![Some(local)] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "d1's route registered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    while store.lookup(APP, &["d1"]).await.unwrap() != vec![None] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "d1's route removed at close"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

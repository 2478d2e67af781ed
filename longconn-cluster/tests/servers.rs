//! Two `longconn_server::Server`s (nodes 1 and 2) on one `RedisRouteStore`, with
//! in-memory clients: node 1 finds a device on node 2 through Redis, and a second login
//! of that device on node 1 has its route on node 2 replaced and kicked through the
//! relay. The relay is a recorder (the Redis relay is not built yet): it answers
//! `Offline` and keeps what it was asked.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use longconn_cluster::RedisRouteStore;
use longconn_core::Code;
use longconn_core::connection::memory::MemoryClient;
use longconn_server::{
    GroupMessage, KickRequest, KickTarget, PushMessage, Relay, RelayBatch, RelayResult,
    RemoteGroupReport, Route, RouteStore, Server, ServerConfig,
};
use support::{RedisServer, until};

const APP: &str = "cluster-redis";

/// Keeps every relay call; no node is reachable through it.
#[derive(Debug, Default)]
struct RecordingRelay {
    batches: Mutex<Vec<(u16, RelayBatch)>>,
    kicks: Mutex<Vec<(u16, KickRequest)>>,
}

#[async_trait]
impl Relay for RecordingRelay {
    async fn push_batch(&self, node: u16, batch: &RelayBatch) -> Vec<RelayResult> {
        self.batches.lock().unwrap().push((node, batch.clone()));
        vec![RelayResult::Offline; batch.targets.len()]
    }

    async fn publish_group(&self, _message: &GroupMessage) -> RemoteGroupReport {
        RemoteGroupReport::default()
    }

    async fn kick(&self, node: u16, request: &KickRequest) -> RelayResult {
        self.kicks.lock().unwrap().push((node, request.clone()));
        RelayResult::Offline
    }
}

struct Node {
    server: Server,
    relay: Arc<RecordingRelay>,
    store: Arc<RedisRouteStore>,
}

/// A node with its own Redis connection.
async fn node(redis: &RedisServer, id: u16) -> Node {
    let store = Arc::new(RedisRouteStore::new(redis.connect().await));
    let relay = Arc::new(RecordingRelay::default());
    let config = ServerConfig::builder()
        .node_id(id)
        .relay_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let server = Server::builder(config, Arc::new(support::keys()))
        .route_store(store.clone())
        .relay(relay.clone())
        .build();
    Node {
        server,
        relay,
        store,
    }
}

async fn login(node: &Node, device: &str) -> (MemoryClient, u64) {
    support::login(&node.server, APP, device).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_routes_and_a_second_login_replaces_the_first() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one = node(&redis, 1).await;
    let two = node(&redis, 2).await;

    // The device logs in on node 2; node 1 sees its route through Redis.
    let (older, older_id) = login(&two, "phone").await;
    let on_two = Route {
        conn_id: older_id,
        node: 2,
    };
    until("node 2's route in Redis", async || {
        one.store.lookup(APP, &["phone"]).await.unwrap() == [Some(on_two)]
    })
    .await;

    // Node 1's batched push routes it to node 2: one batch for node 2, naming the
    // connection from the route. (The recorder answers Offline: no relay yet.)
    let report = one
        .server
        .pusher()
        .push_devices(APP, &["phone", "ghost"], &PushMessage::new(1, &b"hi"[..]))
        .await
        .unwrap();
    assert_eq!(report.queued, 0);
    assert_eq!(report.offline, ["phone", "ghost"]);
    let batches = one.relay.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 1, "{batches:?}");
    let (to, batch) = &batches[0];
    assert_eq!(*to, 2);
    assert_eq!(batch.app, APP);
    assert_eq!(batch.targets.len(), 1);
    assert_eq!(batch.targets[0].device, "phone");
    assert_eq!(batch.targets[0].conn_id, older_id);

    // A second login of the device on node 1: its registration replaces node 2's route
    // in the same round trip, and node 1 asks the relay to kick that connection.
    let (_newer, newer_id) = login(&one, "phone").await;
    let on_one = Route {
        conn_id: newer_id,
        node: 1,
    };
    until("the kick for node 2", async || {
        !one.relay.kicks.lock().unwrap().is_empty()
    })
    .await;
    let kicks = one.relay.kicks.lock().unwrap().clone();
    assert_eq!(kicks.len(), 1, "{kicks:?}");
    assert_eq!(kicks[0].0, 2);
    assert_eq!(kicks[0].1.target, KickTarget::Conn(older_id));
    assert_eq!(kicks[0].1.code, Code::Replaced);
    assert_eq!(
        two.store.lookup(APP, &["phone"]).await.unwrap(),
        [Some(on_one)]
    );
    assert!(two.relay.kicks.lock().unwrap().is_empty());

    // With no relay the older session lives on until it closes; its late removal on
    // node 2 (compare-and-delete) leaves node 1's route in place. Node 2's shutdown
    // waits until that removal reached Redis.
    drop(older);
    until("node 2 to drop the older session", async || {
        two.server.hub().find_device(APP, "phone").is_none()
    })
    .await;
    let report = two.server.shutdown(Duration::from_secs(1)).await;
    assert_eq!(report.route_changes_dropped, 0, "{report:?}");
    assert_eq!(
        report.route_changes_flushed, 2,
        "login and close: {report:?}"
    );
    assert_eq!(
        one.store.lookup(APP, &["phone"]).await.unwrap(),
        [Some(on_one)]
    );
    one.server.shutdown(Duration::from_secs(1)).await;
    assert_eq!(one.store.lookup(APP, &["phone"]).await.unwrap(), [None]);
}

//! Everything on a 3-master Redis Cluster: the route store's batches across slots (one
//! request per shard), group positions shared by two nodes, the node registry, and the
//! relay between nodes over sharded pub/sub (push batch, group publish, kick), with
//! `INFO commandstats` on the shards showing `SPUBLISH` only, one per node per group
//! publish; and an inbox whose slot moves to another shard.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use longconn_cluster::redis;
use longconn_cluster::{
    NodeAnnouncement, NodeRegistry, RedisClusterConnection, RedisGroupLog, RedisRelay,
    RedisRouteStore, RelayConfig,
};
use longconn_core::connection::memory::MemoryClient;
use longconn_core::{Code, Frame};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_server::{
    DeviceKey, GroupLog, PushMessage, RelayResult, Route, RouteStore, Server, ServerConfig, Target,
};
use support::cluster::RedisCluster;
use support::{STEP, until};

const APP: &str = "cluster-test";

fn route(node: u16, n: u64) -> Route {
    Route {
        conn_id: (u64::from(node) << 48) | n,
        node,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_batches_span_slots_in_one_request_per_shard() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let conn = cluster.connect().await;
    assert_eq!(conn.shards(), 3);
    let store = RedisRouteStore::new(conn.clone());
    let devices: Vec<String> = (0..300).map(|i| format!("device-{i}")).collect();
    let routes: Vec<(DeviceKey, Route)> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (DeviceKey::new(APP, d), route(1, i as u64)))
        .collect();
    // Loads the scripts on every shard, so no NOSCRIPT retry skews the counts below.
    store
        .unregister(&[(DeviceKey::new(APP, "x"), 1)])
        .await
        .unwrap();
    store
        .refresh(&[(DeviceKey::new(APP, "x"), route(1, 1))])
        .await
        .unwrap();

    let requests = |conn: &RedisClusterConnection, before: &mut u64| {
        let now = conn.requests_sent();
        let delta = now - *before;
        *before = now;
        delta
    };
    let mut before = conn.requests_sent();
    store.register(&routes).await.unwrap();
    assert_eq!(requests(&conn, &mut before), 3, "register: one per shard");
    // The keys really are spread over the three masters.
    for node in 0..3 {
        let keys: u64 = cluster.node_cmd(node, &["DBSIZE"]).await;
        assert!(keys > 50, "master {node} holds {keys} keys");
    }
    let names: Vec<&str> = devices.iter().map(String::as_str).collect();
    let found = store.lookup(APP, &names).await.unwrap();
    assert_eq!(requests(&conn, &mut before), 3, "lookup: one per shard");
    let expected: Vec<Option<Route>> = routes.iter().map(|(_, r)| Some(*r)).collect();
    assert_eq!(found, expected, "answers in the order asked");

    // A newer login on node 2 for every even device, then node 1's late close of all.
    let newer: Vec<(DeviceKey, Route)> = routes
        .iter()
        .step_by(2)
        .enumerate()
        .map(|(i, (d, _))| (d.clone(), route(2, i as u64)))
        .collect();
    let replaced = store.register_replacing(&newer).await.unwrap();
    assert_eq!(requests(&conn, &mut before), 3, "register_replacing");
    assert!(
        replaced
            .iter()
            .zip(routes.iter().step_by(2))
            .all(|(old, (_, r))| *old == Some(*r))
    );
    let closes: Vec<(DeviceKey, u64)> =
        routes.iter().map(|(d, r)| (d.clone(), r.conn_id)).collect();
    store.unregister(&closes).await.unwrap();
    assert_eq!(requests(&conn, &mut before), 3, "unregister");
    let found = store.lookup(APP, &names).await.unwrap();
    for (i, value) in found.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(
                *value,
                Some(route(2, (i / 2) as u64)),
                "device {i}: newer route kept"
            );
        } else {
            assert_eq!(*value, None, "device {i}: removed");
        }
    }
    store.refresh(&newer).await.unwrap();
    before = conn.requests_sent();
    store.refresh(&newer).await.unwrap();
    assert_eq!(requests(&conn, &mut before), 3, "refresh");
    // A batch on one slot is one request.
    store.register(&routes[..1]).await.unwrap();
    assert_eq!(requests(&conn, &mut before), 1);

    // Why the split is ours: redis-rs 1.2's cluster connection refuses a pipeline whose
    // keys lie in two slots (it would send it whole to one node).
    let raw_client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut raw = raw_client.get_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg("{a}1").cmd("GET").arg("{b}2");
    let refused = pipe
        .query_async::<Vec<Option<String>>>(&mut raw)
        .await
        .unwrap_err();
    assert_eq!(
        refused.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
        "{refused}"
    );
    let mut ours = conn.clone();
    let both: Vec<Option<String>> = pipe.query_async(&mut ours).await.unwrap();
    assert_eq!(both, [None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_positions_and_the_node_registry_work_on_a_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    // Two nodes, each with its own connection, number one group's publishes together.
    let one = RedisGroupLog::new(cluster.connect().await);
    let two = RedisGroupLog::new(cluster.connect().await);
    let mut positions = Vec::new();
    for i in 0..10 {
        let log = if i % 2 == 0 { &one } else { &two };
        positions.push(log.next_position("room").await.unwrap());
    }
    let epochs: BTreeSet<u64> = positions.iter().map(|p| p.epoch).collect();
    assert_eq!(epochs.len(), 1, "{positions:?}");
    let offsets: Vec<u64> = positions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, (1..=10).collect::<Vec<_>>());
    // Groups on other slots have their own counters.
    for group in ["a", "b", "c", "d"] {
        assert_eq!(one.next_position(group).await.unwrap().offset, 1);
    }

    let registry = NodeRegistry::new(cluster.connect().await);
    let addrs = |id: u16| BTreeMap::from([("tcp".to_owned(), format!("10.0.0.{id}:7100"))]);
    let lease1 = registry
        .register(NodeAnnouncement {
            id: 1,
            addrs: addrs(1),
        })
        .await
        .unwrap();
    let lease2 = registry
        .register(NodeAnnouncement {
            id: 2,
            addrs: addrs(2),
        })
        .await
        .unwrap();
    let other = NodeRegistry::new(cluster.connect().await);
    let taken = other
        .register(NodeAnnouncement {
            id: 1,
            addrs: addrs(1),
        })
        .await
        .unwrap_err();
    assert!(
        taken.to_string().contains("node id 1 is already live"),
        "{taken}"
    );
    assert_eq!(other.list().await.unwrap(), [lease1.info(), lease2.info()]);
    lease1.set_draining(true).await.unwrap();
    assert!(other.list().await.unwrap()[0].draining);
    lease1.deregister().await.unwrap();
    assert_eq!(other.list().await.unwrap(), [lease2.info()]);
    lease2.deregister().await.unwrap();
    assert!(other.list().await.unwrap().is_empty());
}

struct Node {
    server: Server,
    groups: Arc<GroupRegistry>,
    relay: Arc<RedisRelay>,
    store: Arc<RedisRouteStore<RedisClusterConnection>>,
    conn: RedisClusterConnection,
}

async fn node(cluster: &RedisCluster, id: u16) -> Node {
    let conn = cluster.connect().await;
    let config = RelayConfig {
        timeout: Duration::from_millis(500),
        ..RelayConfig::default()
    };
    let relay = Arc::new(
        RedisRelay::start_cluster_with(conn.clone(), id, config)
            .await
            .unwrap(),
    );
    let store = Arc::new(RedisRouteStore::new(conn.clone()));
    let log = Arc::new(RedisGroupLog::new(conn.clone()));
    let group_config = GroupConfig::builder().relay_timeout(STEP).build().unwrap();
    let groups = Arc::new(
        GroupRegistry::new(group_config)
            .with_group_log(log)
            .with_relay(relay.clone()),
    );
    let config = ServerConfig::builder()
        .node_id(id)
        .relay_timeout(STEP)
        .build()
        .unwrap();
    let server = Server::builder(config, Arc::new(support::keys()))
        .groups(groups.clone())
        .route_store(store.clone())
        .relay(relay.clone())
        .build();
    relay.attach(server.relay_inbox());
    Node {
        server,
        groups,
        relay,
        store,
        conn,
    }
}

async fn login(node: &Node, device: &str) -> (MemoryClient, u64) {
    let (client, conn_id) = support::login(&node.server, APP, device).await;
    let expected = Route {
        conn_id,
        node: node.server.hub().node_id(),
    };
    until("the route in Redis", async || {
        node.store.lookup(APP, &[device]).await.unwrap() == [Some(expected)]
    })
    .await;
    (client, conn_id)
}

async fn next(client: &mut MemoryClient) -> Frame {
    tokio::time::timeout(STEP, client.recv())
        .await
        .expect("a frame in time")
        .unwrap()
        .expect("open")
}

async fn next_payload(client: &mut MemoryClient) -> Bytes {
    match next(client).await {
        Frame::Push { payload, .. } => payload,
        other => panic!("expected a push, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_uses_sharded_pub_sub_between_nodes_on_a_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let nodes = [
        node(&cluster, 1).await,
        node(&cluster, 2).await,
        node(&cluster, 3).await,
    ];
    let (mut a1, _) = login(&nodes[0], "a1").await;
    let (mut b1, _) = login(&nodes[1], "b1").await;
    let (mut c1, _) = login(&nodes[2], "c1").await;

    // Batched unicast from node 1 to devices on all three nodes.
    cluster.reset_stats().await;
    let pusher = nodes[0].server.pusher();
    let report = pusher
        .push_devices(
            APP,
            &["a1", "b1", "c1", "ghost"],
            &PushMessage::new(1, &b"hi"[..]),
        )
        .await
        .unwrap();
    assert_eq!(report.queued, 3, "{report:?}");
    assert_eq!(report.offline, ["ghost"]);
    for client in [&mut a1, &mut b1, &mut c1] {
        assert_eq!(&next_payload(client).await[..], b"hi");
    }
    // Two requests (to nodes 2 and 3) and their two answers, all SPUBLISH.
    let spublish: u64 = cluster.calls("spublish").await.iter().sum();
    let publish: u64 = cluster.calls("publish").await.iter().sum();
    assert_eq!((spublish, publish), (4, 0));

    // A group with members on every node: one SPUBLISH per other node, one position.
    for (node, device) in nodes.iter().zip(["a1", "b1", "c1"]) {
        node.groups
            .join_device(node.server.hub(), APP, device, "room")
            .unwrap();
    }
    until("three nodes in the room's set", async || {
        let members: BTreeSet<u16> = cluster_smembers(&nodes[0], "lc:gn:room").await;
        members == BTreeSet::from([1, 2, 3])
    })
    .await;
    cluster.reset_stats().await;
    let report = nodes[0]
        .groups
        .publish("room", &PushMessage::new(7, &b"all"[..]))
        .await
        .unwrap();
    assert_eq!(
        (report.members, report.queued, report.remote_nodes),
        (3, 3, 2),
        "{report:?}"
    );
    let per_shard = cluster.calls("spublish").await;
    assert_eq!(
        per_shard.iter().sum::<u64>(),
        4,
        "2 requests + 2 answers: {per_shard:?}"
    );
    assert_eq!(cluster.calls("publish").await.iter().sum::<u64>(), 0);
    for client in [&mut a1, &mut b1, &mut c1] {
        match next(client).await {
            Frame::Push {
                seq,
                epoch,
                payload,
                ..
            } => {
                assert_eq!((seq, epoch), (Some(report.seq), Some(report.epoch)));
                assert_eq!(&payload[..], b"all");
            }
            other => panic!("expected a group push, got {other:?}"),
        }
    }

    // A kick from node 1 reaches node 3's session.
    let kicked = pusher
        .kick(
            Target::Device {
                app: APP,
                device: "c1",
            },
            Code::Kicked,
            "operator",
        )
        .await
        .unwrap();
    assert_eq!(kicked, RelayResult::Queued);
    match next(&mut c1).await {
        Frame::Kick { code, .. } => assert_eq!(code, Code::Kicked),
        other => panic!("expected a kick, got {other:?}"),
    }
    for node in &nodes {
        assert_eq!(node.relay.lag().dropped_requests, 0);
        node.relay.shutdown().await;
    }
}

async fn cluster_smembers(node: &Node, key: &str) -> BTreeSet<u16> {
    // Through the node's own cluster connection: routed by the key.
    let mut conn = node.conn.clone();
    redis::cmd("SMEMBERS")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_whose_slot_moves_is_subscribed_again_on_the_new_shard() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let one = node(&cluster, 1).await;
    let two = node(&cluster, 2).await;
    let (mut b1, _) = login(&two, "b1").await;

    // Move the slot of node 2's inbox (`lc:relay:{2}`, the slot of "2") to another master.
    let slot: i64 = cluster
        .node_cmd(0, &["CLUSTER", "KEYSLOT", "lc:relay:{2}"])
        .await;
    let slot = slot.to_string();
    let mut owner = None;
    for node in 0..3 {
        let count: i64 = cluster
            .node_cmd(node, &["CLUSTER", "COUNTKEYSINSLOT", &slot])
            .await;
        assert_eq!(count, 0);
        let shards: String = {
            let nodes: String = cluster.node_cmd(node, &["CLUSTER", "NODES"]).await;
            nodes
        };
        if owner.is_none() {
            owner = shards.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let myself = fields.get(2)?.contains("myself");
                let owns = fields[8..].iter().any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    let (lo, hi) = (lo.parse::<i64>().ok(), hi.parse::<i64>().ok());
                    matches!((lo, hi), (Some(lo), Some(hi)) if (lo..=hi).contains(&slot.parse().unwrap()))
                });
                (myself && owns).then_some(node)
            });
        }
    }
    let from = owner.expect("an owner of the slot");
    let to = (from + 1) % 3;
    let to_id = cluster.node_id(to).await;
    let from_id = cluster.node_id(from).await;
    let () = cluster
        .node_cmd(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])
        .await;
    let () = cluster
        .node_cmd(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])
        .await;
    for node in [to, from, 3 - to - from] {
        let () = cluster
            .node_cmd(node, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])
            .await;
    }
    until("node 2 subscribed again", async || {
        two.relay.resubscribed() >= 1
    })
    .await;
    // The new owner has the subscriber; a push from node 1 arrives.
    until("a push to b1 through the moved inbox", async || {
        let results = one
            .server
            .pusher()
            .push_devices(APP, &["b1"], &PushMessage::new(1, &b"moved"[..]))
            .await
            .unwrap();
        results.queued == 1
    })
    .await;
    assert_eq!(&next_payload(&mut b1).await[..], b"moved");
    let subscribers: Vec<redis::Value> = cluster
        .node_cmd(to, &["PUBSUB", "SHARDNUMSUB", "lc:relay:{2}"])
        .await;
    assert_eq!(subscribers.get(1), Some(&redis::Value::Int(1)));
    one.relay.shutdown().await;
    two.relay.shutdown().await;
}

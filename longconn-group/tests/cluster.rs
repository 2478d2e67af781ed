//! Two access nodes in one process, joined by a test relay that routes by node id (what
//! a cluster layer does over the network): batched unicast across nodes, a node that
//! never answers, a group publish reaching members on both nodes with one
//! `(epoch, seq)`, and a kick across nodes. Runs on tokio's paused clock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use longconn_core::connection::memory::{MemoryClient, pair};
use longconn_core::{Code, Frame, TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_server::{
    DeviceKey, GroupLog, GroupLogError, GroupMessage, GroupPosition, KickRequest, LocalGroupLog,
    MemoryRouteStore, PushMessage, Relay, RelayBatch, RelayInbox, RelayResult, RemoteGroupReport,
    Route, RouteStore, Server, ServerConfig, Target,
};

const APP: &str = "cluster-test";
const STEP: Duration = Duration::from_secs(10);
const RELAY_TIMEOUT: Duration = Duration::from_millis(800);

fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("k", b"cluster-test-secret-01").unwrap())
}

fn token(device: &str) -> Bytes {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    Bytes::from(keys().mint(APP, device, exp))
}

/// What the nodes share: each node's inbox, the nodes that never answer, which nodes
/// have members of which group, and a log of the messages sent (from, to, kind).
#[derive(Debug, Default)]
struct Network {
    inboxes: Mutex<HashMap<u16, RelayInbox>>,
    silent: Mutex<HashSet<u16>>,
    groups: Mutex<HashMap<String, BTreeSet<u16>>>,
    sent: Mutex<Vec<(u16, u16, &'static str)>>,
}

impl Network {
    /// The inbox of `node`, after logging the message; `None` for a node that does not
    /// exist. A silent node never answers.
    async fn reach(&self, from: u16, to: u16, kind: &'static str) -> Option<RelayInbox> {
        self.sent.lock().unwrap().push((from, to, kind));
        if self.silent.lock().unwrap().contains(&to) {
            std::future::pending::<()>().await;
        }
        self.inboxes.lock().unwrap().get(&to).cloned()
    }

    fn sent(&self, kind: &str) -> Vec<(u16, u16)> {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .filter(|(_, _, k)| *k == kind)
            .map(|&(from, to, _)| (from, to))
            .collect()
    }
}

/// One node's end of the test network.
#[derive(Debug)]
struct TestRelay {
    node: u16,
    net: Arc<Network>,
}

#[async_trait]
impl Relay for TestRelay {
    async fn push_batch(&self, node: u16, batch: &RelayBatch) -> Vec<RelayResult> {
        match self.net.reach(self.node, node, "push").await {
            Some(inbox) => inbox.push_batch(batch),
            None => vec![RelayResult::Offline; batch.targets.len()],
        }
    }

    async fn publish_group(&self, message: &GroupMessage) -> RemoteGroupReport {
        let nodes = self.net.groups.lock().unwrap().get(&message.group).cloned();
        let mut report = RemoteGroupReport::default();
        for node in nodes.unwrap_or_default() {
            if node == self.node {
                continue;
            }
            // A real relay bounds each node's wait; here a silent node is known at once.
            if self.net.silent.lock().unwrap().contains(&node) {
                report.unknown_nodes += 1;
                continue;
            }
            if let Some(inbox) = self.net.reach(self.node, node, "group").await {
                report.delivery += inbox.publish_group(message).await;
                report.nodes += 1;
            }
        }
        report
    }

    async fn kick(&self, node: u16, request: &KickRequest) -> RelayResult {
        match self.net.reach(self.node, node, "kick").await {
            Some(inbox) => inbox.kick(request),
            None => RelayResult::Offline,
        }
    }

    fn group_active(&self, group: &str) {
        let mut groups = self.net.groups.lock().unwrap();
        groups
            .entry(group.to_owned())
            .or_default()
            .insert(self.node);
    }

    fn group_inactive(&self, group: &str) {
        let mut groups = self.net.groups.lock().unwrap();
        if let Some(nodes) = groups.get_mut(group) {
            nodes.remove(&self.node);
        }
    }
}

/// The cluster's one group log: a shared log ignores `forget`.
#[derive(Debug, Default)]
struct SharedLog(LocalGroupLog);

#[async_trait]
impl GroupLog for SharedLog {
    async fn next_position(&self, group: &str) -> Result<GroupPosition, GroupLogError> {
        Ok(self.0.next(group))
    }
}

struct Node {
    server: Server,
    groups: Arc<GroupRegistry>,
}

struct Cluster {
    net: Arc<Network>,
    store: Arc<MemoryRouteStore>,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Nodes 1 and 2, sharing a route store, a group log and the network.
    fn new() -> Cluster {
        let net = Arc::new(Network::default());
        let store = Arc::new(MemoryRouteStore::new());
        let log = Arc::new(SharedLog::default());
        let nodes = [1, 2]
            .into_iter()
            .map(|node_id| {
                let relay = Arc::new(TestRelay {
                    node: node_id,
                    net: net.clone(),
                });
                let config = GroupConfig::builder()
                    .relay_timeout(RELAY_TIMEOUT)
                    .build()
                    .unwrap();
                let groups = Arc::new(
                    GroupRegistry::new(config)
                        .with_group_log(log.clone())
                        .with_relay(relay.clone()),
                );
                let config = ServerConfig::builder()
                    .node_id(node_id)
                    .relay_timeout(RELAY_TIMEOUT)
                    .build()
                    .unwrap();
                let server = Server::builder(config, Arc::new(keys()))
                    .groups(groups.clone())
                    .route_store(store.clone())
                    .relay(relay)
                    .build();
                let inbox = server.relay_inbox();
                assert_eq!(inbox.node_id(), node_id);
                net.inboxes.lock().unwrap().insert(node_id, inbox);
                Node { server, groups }
            })
            .collect();
        Cluster { net, store, nodes }
    }

    fn node(&self, id: u16) -> &Node {
        &self.nodes[usize::from(id) - 1]
    }

    /// Logs `device` in on node `id` and waits until the shared store has its route.
    async fn login(&self, id: u16, device: &str) -> (MemoryClient, u64) {
        let (client, served) = pair(16, 65_536);
        assert!(self.node(id).server.serve_connection(served));
        let mut client = MemoryClient::new(client);
        let conn_id = client
            .login(APP, device, token(device))
            .await
            .unwrap()
            .unwrap();
        let route = Some(Route { conn_id, node: id });
        tokio::time::timeout(STEP, async {
            while self.store.lookup(APP, &[device]).await.unwrap() != [route] {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the route is registered");
        (client, conn_id)
    }
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

#[tokio::test(start_paused = true)]
async fn batched_unicast_reaches_devices_on_both_nodes_in_one_message_per_node() {
    let cluster = Cluster::new();
    let (mut a1, _) = cluster.login(1, "a1").await;
    let (mut b1, _) = cluster.login(2, "b1").await;
    let (mut b2, _) = cluster.login(2, "b2").await;
    // A stale route: node 2 has no such connection or device.
    let stale = Route {
        conn_id: (2 << 48) | 999,
        node: 2,
    };
    cluster
        .store
        .register(&[(DeviceKey::new(APP, "stale"), stale)])
        .await
        .unwrap();

    let pusher = cluster.node(1).server.pusher();
    let devices = ["a1", "b1", "stale", "b2", "ghost"];
    let report = pusher
        .push_devices(APP, &devices, &PushMessage::new(1, &b"all"[..]))
        .await
        .unwrap();
    assert_eq!(report.queued, 3, "{report:?}");
    assert_eq!(report.offline, ["stale", "ghost"]);
    assert!(report.dropped.is_empty() && report.unknown.is_empty());
    assert_eq!(cluster.net.sent("push"), [(1, 2)], "one message for node 2");
    for client in [&mut a1, &mut b1, &mut b2] {
        assert_eq!(&next_payload(client).await[..], b"all");
    }

    let each = [
        ("b2", PushMessage::new(2, &b"to b2"[..])),
        ("a1", PushMessage::new(2, &b"to a1"[..])),
        ("b1", PushMessage::new(2, &b"to b1"[..])),
    ];
    let report = pusher.push_each(APP, &each).await.unwrap();
    assert_eq!((report.queued, report.offline.len()), (3, 0), "{report:?}");
    assert_eq!(cluster.net.sent("push").len(), 2);
    assert_eq!(&next_payload(&mut a1).await[..], b"to a1");
    assert_eq!(&next_payload(&mut b1).await[..], b"to b1");
    assert_eq!(&next_payload(&mut b2).await[..], b"to b2");
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_nodes_devices_come_back_unknown() {
    let cluster = Cluster::new();
    let (mut a1, _) = cluster.login(1, "a1").await;
    cluster.net.silent.lock().unwrap().insert(3);
    let route = |node| Route {
        conn_id: (u64::from(node) << 48) | 1,
        node,
    };
    cluster
        .store
        .register(&[
            (DeviceKey::new(APP, "far"), route(3)),
            (DeviceKey::new(APP, "gone"), route(4)),
        ])
        .await
        .unwrap();

    let pusher = cluster.node(1).server.pusher();
    let started = tokio::time::Instant::now();
    let report = pusher
        .push_devices(APP, &["far", "a1", "gone"], &PushMessage::new(1, &b"x"[..]))
        .await
        .unwrap();
    assert_eq!(report.queued, 1);
    assert_eq!(report.unknown, ["far"], "node 3 never answered: {report:?}");
    assert_eq!(report.offline, ["gone"], "node 4 does not exist");
    assert_eq!(
        started.elapsed(),
        RELAY_TIMEOUT,
        "node 4 was not waited for"
    );
    assert_eq!(&next_payload(&mut a1).await[..], b"x");

    let kick = pusher
        .kick(
            Target::Device {
                app: APP,
                device: "far",
            },
            Code::Kicked,
            "bye",
        )
        .await
        .unwrap();
    assert_eq!(kick, RelayResult::Unknown);
}

#[tokio::test(start_paused = true)]
async fn a_group_publish_reaches_both_nodes_with_one_position() {
    let cluster = Cluster::new();
    let (mut a1, _) = cluster.login(1, "a1").await;
    let (mut b1, _) = cluster.login(2, "b1").await;
    let (mut b2, _) = cluster.login(2, "b2").await;
    // Node 1 joins a1 on the server side; b1 and b2 ask themselves.
    let node1 = cluster.node(1);
    node1
        .groups
        .join_device(node1.server.hub(), APP, "a1", "room")
        .unwrap();
    for (id, client) in [(1, &mut b1), (2, &mut b2)] {
        let group = longconn_core::Text::from("room");
        client
            .send(Frame::JoinGroup {
                id,
                group,
                since: None,
            })
            .await
            .unwrap();
        assert!(matches!(next(client).await, Frame::JoinAck { .. }));
    }
    assert_eq!(cluster.node(2).groups.members("room"), 2);

    let report = node1
        .groups
        .publish("room", &PushMessage::new(7, &b"one"[..]))
        .await
        .unwrap();
    assert_eq!(
        (report.members, report.queued, report.dropped, report.seq),
        (3, 3, 0, 1)
    );
    assert_eq!((report.remote_nodes, report.unknown_nodes), (1, 0));
    // Node 2 publishes next: the shared log numbers it after node 1's.
    let second = cluster
        .node(2)
        .groups
        .publish("room", &PushMessage::new(7, &b"two"[..]))
        .await
        .unwrap();
    assert_eq!((second.epoch, second.seq), (report.epoch, 2));
    assert_eq!((second.members, second.remote_nodes), (3, 1));
    assert_eq!(
        cluster.net.sent("group"),
        [(1, 2), (2, 1)],
        "one message per node and publish, not per member"
    );
    for client in [&mut a1, &mut b1, &mut b2] {
        for (seq, payload) in [(1, &b"one"[..]), (2, &b"two"[..])] {
            match next(client).await {
                Frame::Push {
                    group: Some(group),
                    seq: Some(s),
                    epoch: Some(epoch),
                    payload: p,
                    ..
                } => {
                    assert_eq!(group.as_str(), "room");
                    assert_eq!((epoch, s), (report.epoch, seq));
                    assert_eq!(&p[..], payload);
                }
                other => panic!("expected a group push, got {other:?}"),
            }
        }
    }

    // Node 2's members leave: its publishes no longer cross, node 1's stay local.
    drop((b1, b2));
    tokio::time::timeout(STEP, async {
        while cluster.node(2).groups.members("room") > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    let local = node1
        .groups
        .publish("room", &PushMessage::new(7, &b"three"[..]))
        .await
        .unwrap();
    assert_eq!((local.members, local.remote_nodes, local.seq), (1, 0, 3));
    assert_eq!(cluster.net.sent("group").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_node_without_members_publishes_through_the_relay_and_counts_silent_nodes() {
    let cluster = Cluster::new();
    let (mut b1, _) = cluster.login(2, "b1").await;
    let node2 = cluster.node(2);
    node2
        .groups
        .join_device(node2.server.hub(), APP, "b1", "feed")
        .unwrap();
    // Node 3 has members too, but never answers.
    let silent = 3;
    cluster.net.silent.lock().unwrap().insert(silent);
    let feed_nodes = |nodes: &mut HashMap<String, BTreeSet<u16>>| {
        nodes.get_mut("feed").unwrap().insert(silent);
    };
    feed_nodes(&mut cluster.net.groups.lock().unwrap());

    let node1 = cluster.node(1);
    assert_eq!(node1.groups.members("feed"), 0);
    let report = node1
        .groups
        .publish("feed", &PushMessage::new(3, &b"from afar"[..]))
        .await
        .unwrap();
    assert_eq!(
        (report.members, report.queued, report.seq),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!((report.remote_nodes, report.unknown_nodes), (1, 1));
    match next(&mut b1).await {
        Frame::Push {
            seq: Some(1),
            epoch: Some(epoch),
            payload,
            ..
        } => {
            assert_eq!(epoch, report.epoch);
            assert_eq!(&payload[..], b"from afar");
        }
        other => panic!("expected the relayed push, got {other:?}"),
    }
    assert_eq!(
        node1.groups.group_count(),
        0,
        "node 1 keeps no group for it"
    );
    // Without a relay, a node with no members sends nothing and takes no position.
    let alone = GroupRegistry::new(GroupConfig::default());
    let nothing = alone
        .publish("feed", &PushMessage::new(3, &b"x"[..]))
        .await
        .unwrap();
    assert_eq!(nothing, Default::default());
}

#[tokio::test(start_paused = true)]
async fn a_kick_closes_the_session_on_the_other_node() {
    let cluster = Cluster::new();
    let (mut b1, _) = cluster.login(2, "b1").await;
    let (mut b2, b2_conn) = cluster.login(2, "b2").await;
    let pusher = cluster.node(1).server.pusher();

    let by_device = Target::Device {
        app: APP,
        device: "b1",
    };
    let kicked = pusher
        .kick(by_device, Code::Replaced, "logged in elsewhere")
        .await
        .unwrap();
    assert_eq!(kicked, RelayResult::Queued);
    match next(&mut b1).await {
        Frame::Kick { code, message } => {
            assert_eq!(code, Code::Replaced);
            assert_eq!(message.as_str(), "logged in elsewhere");
        }
        other => panic!("expected a kick, got {other:?}"),
    }
    let end = tokio::time::timeout(STEP, b1.recv()).await.unwrap();
    assert!(matches!(end, Ok(None)), "closed after the kick: {end:?}");

    // By connection id: the node is in its top bits, no route lookup needed.
    let kicked = pusher
        .kick(Target::Conn(b2_conn), Code::Kicked, "operator")
        .await
        .unwrap();
    assert_eq!(kicked, RelayResult::Queued);
    assert!(matches!(
        next(&mut b2).await,
        Frame::Kick {
            code: Code::Kicked,
            ..
        }
    ));
    assert_eq!(cluster.net.sent("kick"), [(1, 2), (1, 2)]);

    let nobody = Target::Device {
        app: APP,
        device: "nobody",
    };
    let missing = pusher.kick(nobody, Code::Kicked, "x").await.unwrap();
    assert_eq!(missing, RelayResult::Offline);
    assert_eq!(cluster.net.sent("kick").len(), 2, "no route: nothing sent");
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_login_on_another_node_replaces_the_older_session() {
    let cluster = Cluster::new();
    let (mut older, _) = cluster.login(1, "phone").await;
    let (mut newer, newer_id) = cluster.login(2, "phone").await;
    match next(&mut older).await {
        Frame::Kick { code, .. } => assert_eq!(code, Code::Replaced),
        other => panic!("expected Kick(replaced), got {other:?}"),
    }
    let end = tokio::time::timeout(STEP, older.recv()).await.unwrap();
    assert!(matches!(end, Ok(None)), "closed after the kick: {end:?}");
    assert_eq!(cluster.net.sent("kick"), [(2, 1)]);
    // The older session's close does not remove the newer route.
    tokio::time::timeout(STEP, async {
        while cluster
            .node(1)
            .server
            .hub()
            .find_device(APP, "phone")
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let route = cluster.store.lookup(APP, &["phone"]).await.unwrap();
    assert_eq!(
        route,
        [Some(Route {
            conn_id: newer_id,
            node: 2
        })]
    );
    newer
        .send(Frame::Ping {
            id: 1,
            payload: Bytes::new(),
        })
        .await
        .unwrap();
    assert!(matches!(next(&mut newer).await, Frame::Pong { id: 1, .. }));
}

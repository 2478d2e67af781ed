//! Cluster-wide presence through `GET /v1/groups/{group}`: two in-process nodes (each a
//! server, a group registry and the HTTP API) joined by a test relay that routes by node
//! id to each node's `RelayInbox` (what a cluster layer does over the network). Members
//! on both nodes are counted from either node; a node that never answers is counted in
//! `unknown_nodes`, its members not guessed; a cluster that cannot say which nodes hold
//! members is a 503.

mod support;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_http::ApiLimits;
use longconn_server::{
    GroupMessage, KickRequest, Relay, RelayBatch, RelayInbox, RelayResult, RemoteGroupReport,
    RemotePresence, Server, ServerConfig,
};
use serde_json::json;
use support::{STEP, Setup};

/// How long the test relay waits for one node's answer (a real relay's own bound).
const NODE_WAIT: Duration = Duration::from_millis(200);

/// What the nodes share: each node's inbox, the nodes that never answer, which nodes
/// have members of which group (from the group layers' hints), and whether the group
/// sets can be read at all.
#[derive(Debug, Default)]
struct Network {
    inboxes: Mutex<HashMap<u16, RelayInbox>>,
    silent: Mutex<HashSet<u16>>,
    groups: Mutex<HashMap<String, BTreeSet<u16>>>,
    sets_unreadable: AtomicBool,
    /// Queries sent: (from, to).
    queries: Mutex<Vec<(u16, u16)>>,
}

#[derive(Debug)]
struct TestRelay {
    node: u16,
    net: Arc<Network>,
}

impl TestRelay {
    /// `node`'s answer to a presence query, or `None` if it did not answer in time.
    async fn ask(&self, node: u16, group: &str) -> Option<usize> {
        self.net.queries.lock().unwrap().push((self.node, node));
        let silent = self.net.silent.lock().unwrap().contains(&node);
        let inbox = self.net.inboxes.lock().unwrap().get(&node).cloned();
        let answer = async move {
            if silent {
                std::future::pending::<()>().await;
            }
            inbox.map(|inbox| inbox.group_members(group))
        };
        tokio::time::timeout(NODE_WAIT, answer).await.ok().flatten()
    }
}

#[async_trait]
impl Relay for TestRelay {
    async fn push_batch(&self, _node: u16, batch: &RelayBatch) -> Vec<RelayResult> {
        vec![RelayResult::Offline; batch.targets.len()]
    }

    async fn publish_group(&self, _message: &GroupMessage) -> RemoteGroupReport {
        RemoteGroupReport::default()
    }

    async fn kick(&self, _node: u16, _request: &KickRequest) -> RelayResult {
        RelayResult::Offline
    }

    async fn group_members(&self, group: &str) -> RemotePresence {
        if self.net.sets_unreadable.load(Ordering::Relaxed) {
            return RemotePresence {
                incomplete: true,
                ..RemotePresence::default()
            };
        }
        let nodes: Vec<u16> = {
            let groups = self.net.groups.lock().unwrap();
            let set = groups.get(group).cloned().unwrap_or_default();
            set.into_iter().filter(|&n| n != self.node).collect()
        };
        let answers =
            futures::future::join_all(nodes.iter().map(|&node| self.ask(node, group))).await;
        let mut presence = RemotePresence::default();
        for answer in answers {
            match answer {
                Some(members) => {
                    presence.nodes += 1;
                    presence.members += members;
                }
                None => presence.unknown_nodes += 1,
            }
        }
        presence
    }

    fn group_active(&self, group: &str) {
        let mut groups = self.net.groups.lock().unwrap();
        groups
            .entry(group.to_owned())
            .or_default()
            .insert(self.node);
    }

    fn group_inactive(&self, group: &str) {
        if let Some(nodes) = self.net.groups.lock().unwrap().get_mut(group) {
            nodes.remove(&self.node);
        }
    }
}

/// A node with the HTTP API, in the network as `id`; `relay_timeout` bounds the
/// server's wait for the whole query.
async fn node(net: &Arc<Network>, id: u16, relay_timeout: Duration) -> Setup {
    let relay = Arc::new(TestRelay {
        node: id,
        net: net.clone(),
    });
    let config = ServerConfig::builder()
        .node_id(id)
        .relay_timeout(relay_timeout)
        .build()
        .unwrap();
    let builder = Server::builder(config, Arc::new(support::keys())).relay(relay.clone());
    let groups = GroupRegistry::new(GroupConfig::default()).with_relay(relay);
    let setup = Setup::start_with_groups(builder, ApiLimits::default(), Arc::new(groups)).await;
    net.inboxes
        .lock()
        .unwrap()
        .insert(id, setup.server.relay_inbox());
    setup
}

async fn presence(node: &Setup, group: &str) -> serde_json::Value {
    let (status, reply) = node.get(&format!("/v1/groups/{group}")).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_both_nodes_are_counted_from_either_node() {
    let net = Arc::new(Network::default());
    let one = node(&net, 1, STEP).await;
    let two = node(&net, 2, STEP).await;
    let mut clients = Vec::new();
    for (node, device) in [(&one, "a1"), (&one, "a2"), (&two, "b1"), (&two, "b2")] {
        let client = node.client(device).await;
        client.join("room").await.unwrap();
        clients.push(client);
    }
    let b3 = two.client("b3").await;
    b3.join("room").await.unwrap();

    assert_eq!(
        presence(&one, "room").await,
        json!({"group": "room", "members": 5, "local_members": 2, "remote_nodes": 1, "unknown_nodes": 0})
    );
    assert_eq!(
        presence(&two, "room").await,
        json!({"group": "room", "members": 5, "local_members": 3, "remote_nodes": 1, "unknown_nodes": 0})
    );
    // One query per other node with members, none to a node without.
    assert_eq!(*net.queries.lock().unwrap(), vec![(1, 2), (2, 1)]);
    assert_eq!(
        presence(&one, "nobody").await,
        json!({"group": "nobody", "members": 0, "local_members": 0, "remote_nodes": 0, "unknown_nodes": 0})
    );

    // A member leaves node 2: the count follows.
    b3.leave("room").await.unwrap();
    assert_eq!(presence(&one, "room").await["members"], 4);

    // Node 2's members all leave: node 2 is out of the group's set, node 1 is alone.
    for client in &clients[2..] {
        client.leave("room").await.unwrap();
    }
    assert_eq!(
        presence(&one, "room").await,
        json!({"group": "room", "members": 2, "local_members": 2, "remote_nodes": 0, "unknown_nodes": 0})
    );
    assert_eq!(
        presence(&two, "room").await,
        json!({"group": "room", "members": 2, "local_members": 0, "remote_nodes": 1, "unknown_nodes": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_unknown_not_guessed() {
    let net = Arc::new(Network::default());
    let one = node(&net, 1, STEP).await;
    let two = node(&net, 2, STEP).await;
    let a1 = one.client("a1").await;
    a1.join("room").await.unwrap();
    let b1 = two.client("b1").await;
    b1.join("room").await.unwrap();
    // Node 3 holds members (it says so in the group's set) and never answers.
    net.groups
        .lock()
        .unwrap()
        .get_mut("room")
        .unwrap()
        .insert(3);
    net.silent.lock().unwrap().insert(3);

    let started = tokio::time::Instant::now();
    assert_eq!(
        presence(&one, "room").await,
        json!({"group": "room", "members": 2, "local_members": 1, "remote_nodes": 1, "unknown_nodes": 1})
    );
    // The nodes were asked at once: one node wait, not two.
    let took = started.elapsed();
    assert!(
        took >= NODE_WAIT && took < 2 * NODE_WAIT + STEP / 20,
        "{took:?}"
    );

    // Node 2 goes silent too.
    net.silent.lock().unwrap().insert(2);
    assert_eq!(
        presence(&one, "room").await,
        json!({"group": "room", "members": 1, "local_members": 1, "remote_nodes": 0, "unknown_nodes": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_cannot_say_who_holds_members_is_a_503() {
    let net = Arc::new(Network::default());
    // The server waits less for the whole query than the relay waits for a node.
    let one = node(&net, 1, NODE_WAIT / 4).await;
    let _two = node(&net, 2, STEP).await;
    let a1 = one.client("a1").await;
    a1.join("room").await.unwrap();

    net.sets_unreadable.store(true, Ordering::Relaxed);
    let (status, reply) = one.get("/v1/groups/room").await;
    assert_eq!(
        (status, &reply["error"]),
        (503, &json!("cluster_unavailable"))
    );
    assert_eq!(reply["retry_after_ms"], 1000, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("1 members"),
        "{reply}"
    );

    // The sets can be read, but a node holding members is slower than the server's
    // whole bound: the query is cut short, the count would be a guess.
    net.sets_unreadable.store(false, Ordering::Relaxed);
    net.groups
        .lock()
        .unwrap()
        .get_mut("room")
        .unwrap()
        .insert(3);
    net.silent.lock().unwrap().insert(3);
    let (status, reply) = one.get("/v1/groups/room").await;
    assert_eq!(
        (status, &reply["error"]),
        (503, &json!("cluster_unavailable"))
    );

    // The slow node is gone from the set: the answer is whole again.
    net.groups
        .lock()
        .unwrap()
        .get_mut("room")
        .unwrap()
        .remove(&3);
    assert_eq!(presence(&one, "room").await["members"], 1);
}

//! Cluster-wide presence over `RedisRelay` on a spawned redis-server: members on two
//! nodes counted from either node with one query per other node in the group's set, a
//! node that listens but never answers counted in `unknown_nodes`, a dead node neither
//! counted nor waited for (and pruned), and an unreachable Redis reported incomplete
//! while this node's members are still counted. Skipped unless redis-server is installed
//! (a failure when `CI=true`).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use longconn_cluster::{RedisRelay, redis};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_server::{GroupPresence, RemotePresence, Server, ServerConfig};
use support::{RedisServer, STEP, until};

const APP: &str = "presence-test";
const RELAY_TIMEOUT: Duration = Duration::from_millis(500);

struct Node {
    server: Server,
    groups: Arc<GroupRegistry>,
    relay: Arc<RedisRelay>,
}

async fn node(redis: &RedisServer, id: u16) -> Node {
    let client = redis::Client::open(redis.url()).unwrap();
    let relay = RedisRelay::start_with(client, redis.connect().await, id, "lc:", RELAY_TIMEOUT)
        .await
        .unwrap();
    let relay = Arc::new(relay);
    let groups = Arc::new(GroupRegistry::new(GroupConfig::default()).with_relay(relay.clone()));
    let config = ServerConfig::builder()
        .node_id(id)
        .relay_timeout(STEP)
        .build()
        .unwrap();
    let server = Server::builder(config, Arc::new(support::keys()))
        .groups(groups.clone())
        .relay(relay.clone())
        .build();
    relay.attach(server.relay_inbox());
    Node {
        server,
        groups,
        relay,
    }
}

/// Logs `device` in on `node` and joins it to `group`; keep the client alive.
async fn member(
    node: &Node,
    device: &str,
    group: &str,
) -> longconn_core::connection::memory::MemoryClient {
    let (client, _) = support::login(&node.server, APP, device).await;
    node.groups
        .join_device(node.server.hub(), APP, device, group)
        .unwrap();
    client
}

/// Calls of `command` since the last `CONFIG RESETSTAT` (`INFO commandstats`).
async fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]).await;
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn remote(members: usize, nodes: usize, unknown_nodes: usize) -> RemotePresence {
    RemotePresence {
        members,
        nodes,
        unknown_nodes,
        incomplete: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_members_on_every_node_through_redis() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let one = node(&redis, 1).await;
    let two = node(&redis, 2).await;
    let _a1 = member(&one, "a1", "room").await;
    let _b1 = member(&two, "b1", "room").await;
    let _b2 = member(&two, "b2", "room").await;
    let set = async || -> BTreeSet<u16> { redis.cmd(&["SMEMBERS", "lc:gn:room"]).await };
    until("both nodes in the room's set", async || {
        set().await == BTreeSet::from([1, 2])
    })
    .await;

    assert_eq!(
        one.server.group_presence("room").await,
        GroupPresence {
            local_members: 1,
            remote: remote(2, 1, 0),
        }
    );
    let from_two = two.server.group_presence("room").await;
    assert_eq!((from_two.members(), from_two.local_members), (3, 2));
    assert_eq!(from_two.remote, remote(1, 1, 0));

    // One query per other node, one answer: 2 SPUBLISH and 1 SMEMBERS in all.
    let _: () = redis.cmd(&["CONFIG", "RESETSTAT"]).await;
    assert_eq!(one.server.group_presence("room").await.members(), 3);
    assert_eq!(calls(&redis, "spublish").await, 2);
    assert_eq!(calls(&redis, "smembers").await, 1);

    // Node 3 listens on its inbox (it is live) and never answers: unknown, its members
    // not guessed, and the wait is the relay's bound. Node 8 has no subscriber and no
    // registry entry (dead): not asked twice, not counted, pruned from the set.
    let (_silent, _pushes) = support::sharded_subscriber(&redis.url(), "lc:relay:{3}").await;
    let _: i64 = redis.cmd(&["SADD", "lc:gn:room", "3", "8"]).await;
    let started = tokio::time::Instant::now();
    let presence = one.server.group_presence("room").await;
    let took = started.elapsed();
    assert_eq!(presence.local_members, 1);
    assert_eq!(presence.remote, remote(2, 1, 1), "{presence:?}");
    assert!(took >= RELAY_TIMEOUT && took < STEP, "{took:?}");
    until("node 8 pruned", async || {
        set().await == BTreeSet::from([1, 2, 3])
    })
    .await;
    assert_eq!(one.relay.pruned_nodes(), 1);

    // Redis gone: nobody can say which nodes hold members. This node's are still known.
    redis.kill();
    let presence = one.server.group_presence("room").await;
    assert!(presence.remote.incomplete, "{presence:?}");
    assert_eq!(presence.local_members, 1);
    one.relay.shutdown().await;
    two.relay.shutdown().await;
}

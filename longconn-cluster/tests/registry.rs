//! `NodeRegistry` against a real redis-server: a live id is refused, live nodes are
//! listed, drain and deregister, expiry when the heartbeat stops, and a lost id.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use longconn_cluster::{Error, NodeAnnouncement, NodeRegistry};
use support::RedisServer;

fn node(id: u16) -> NodeAnnouncement {
    let addrs = BTreeMap::from([
        ("tcp".to_owned(), format!("10.0.0.{id}:7100")),
        ("ws".to_owned(), format!("ws://10.0.0.{id}:7101/ws")),
    ]);
    NodeAnnouncement { id, addrs }
}

#[tokio::test]
async fn a_live_id_is_refused_and_live_nodes_are_listed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let registry = NodeRegistry::new(redis.connect().await);
    assert_eq!(registry.heartbeat_interval(), NodeRegistry::DEFAULT_TTL / 3);
    let one = registry.register(node(1)).await.unwrap();
    let two = registry.register(node(2)).await.unwrap();
    // Another process (another connection) asks for id 1 while it is live.
    let other = NodeRegistry::new(redis.connect().await);
    match other.register(node(1)).await {
        Err(Error::NodeIdTaken {
            node,
            holder_instance,
        }) => {
            assert_eq!(node, 1);
            assert_eq!(holder_instance, one.info().instance);
        }
        other => panic!("expected NodeIdTaken, got {other:?}"),
    }
    let err = other.register(node(2)).await.unwrap_err();
    assert!(
        err.to_string().contains("node id 2 is already live"),
        "{err}"
    );

    let listed = other.list().await.unwrap();
    assert_eq!(listed, [one.info(), two.info()]);
    assert_eq!(listed[0].addrs["tcp"], "10.0.0.1:7100");
    assert!(!listed[0].draining && listed[0].started_at_ms > 0);
    let ttl: i64 = redis.cmd(&["PTTL", "lc:{nodes}:n:1"]).await;
    assert!((14_000..=15_000).contains(&ttl), "{ttl}");

    // Draining is written at once, with the connection count.
    one.set_connections(42);
    one.set_draining(true).await.unwrap();
    let listed = other.list().await.unwrap();
    assert_eq!((listed[0].connections, listed[0].draining), (42, true));
    // The end of the drain: gone from the list, and the id is free again.
    one.deregister().await.unwrap();
    assert_eq!(other.list().await.unwrap(), [two.info()]);
    let again = other.register(node(1)).await.unwrap();
    assert_eq!(other.list().await.unwrap().len(), 2);
    again.deregister().await.unwrap();
    two.deregister().await.unwrap();
    assert!(other.list().await.unwrap().is_empty());
    let members: Vec<u16> = redis.cmd(&["SMEMBERS", "lc:{nodes}:ids"]).await;
    assert!(members.is_empty(), "{members:?}");
}

#[tokio::test]
async fn an_entry_lives_while_its_heartbeat_runs_and_expires_after_it_stops() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let registry = NodeRegistry::new(redis.connect().await)
        .with_ttl(Duration::from_millis(1200))
        .unwrap();
    assert!(
        NodeRegistry::new(redis.connect().await)
            .with_ttl(Duration::from_millis(2))
            .is_err()
    );
    let lease = registry.register(node(7)).await.unwrap();
    lease.set_connections(3);
    assert_eq!(registry.heartbeat_interval(), Duration::from_millis(400));
    // Two TTLs: only the heartbeat (every 400 ms) keeps the entry.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    let listed = registry.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].connections, 3, "the heartbeat wrote the count");
    // A crash: the heartbeat stops, the entry stays until its TTL runs out.
    lease.stop().await;
    assert_eq!(registry.list().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(1400)).await;
    assert!(registry.list().await.unwrap().is_empty());
    let members: Vec<u16> = redis.cmd(&["SMEMBERS", "lc:{nodes}:ids"]).await;
    assert!(members.is_empty(), "list pruned the dead id: {members:?}");
    // The id is free for the restarted node.
    let restarted = registry.register(node(7)).await.unwrap();
    restarted.deregister().await.unwrap();
}

#[tokio::test]
async fn a_node_whose_id_was_taken_over_stops_claiming_it() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let registry = NodeRegistry::new(redis.connect().await);
    let old = registry.register(node(3)).await.unwrap();
    // Its entry is lost (it expired during a long pause), and a new instance takes id 3.
    let _: i64 = redis.cmd(&["DEL", "lc:{nodes}:n:3"]).await;
    let new = registry.register(node(3)).await.unwrap();
    assert!(!old.is_lost());
    let err = old.set_draining(true).await.unwrap_err();
    assert!(matches!(err, Error::NodeIdTaken { node: 3, .. }), "{err}");
    assert!(old.is_lost());
    // The old instance's deregister leaves the new one's entry alone.
    old.deregister().await.unwrap();
    let listed = registry.list().await.unwrap();
    assert_eq!(listed, [new.info()]);
    assert!(!listed[0].draining);
    // After a Redis restart the heartbeat puts the entry back.
    let _: () = redis.cmd(&["FLUSHALL"]).await;
    new.set_connections(5);
    new.set_draining(false).await.unwrap();
    assert_eq!(registry.list().await.unwrap()[0].connections, 5);
    new.deregister().await.unwrap();
}

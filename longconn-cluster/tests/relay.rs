//! Two `Server`s (nodes 1 and 2) joined by `RedisRelay` on one redis-server, with the
//! Redis route store and group log: batched unicast across nodes, a missing node and a
//! silent node, kicks, a duplicate login across nodes, a group publish with one
//! position on both nodes, and concurrent calls matched to their answers.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use longconn_cluster::{
    NodeAnnouncement, NodeRegistry, RedisGroupLog, RedisRelay, RedisRouteStore, RelayConfig, redis,
};
use longconn_core::connection::memory::MemoryClient;
use longconn_core::{Code, Frame};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_server::{
    BatchFrames, DeviceKey, KickRequest, KickTarget, PushMessage, Relay, RelayBatch, RelayResult,
    RelayTarget, Route, RouteStore, Server, ServerConfig, Target,
};
use support::{RedisServer, STEP, until};

const APP: &str = "relay-test";
const RELAY_TIMEOUT: Duration = Duration::from_millis(500);

struct Node {
    server: Server,
    groups: Arc<GroupRegistry>,
    relay: Arc<RedisRelay>,
    store: Arc<RedisRouteStore>,
}

async fn node(redis: &RedisServer, id: u16) -> Node {
    let conn = redis.connect().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let relay = RedisRelay::start_with(client, conn, id, "lc:", RELAY_TIMEOUT)
        .await
        .unwrap();
    node_on(redis, id, relay).await
}

/// A node whose relay has these settings.
async fn node_with(redis: &RedisServer, id: u16, config: RelayConfig) -> Node {
    let client = redis::Client::open(redis.url()).unwrap();
    let relay = RedisRelay::start_with_config(client, redis.connect().await, id, config)
        .await
        .unwrap();
    node_on(redis, id, relay).await
}

async fn node_on(redis: &RedisServer, id: u16, relay: RedisRelay) -> Node {
    let conn = redis.connect().await;
    let relay = Arc::new(relay);
    let store = Arc::new(RedisRouteStore::new(conn.clone()));
    let log = Arc::new(RedisGroupLog::new(conn));
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
    }
}

/// Logs `device` in on `node` and waits until Redis has its route.
async fn login(node: &Node, device: &str) -> (MemoryClient, u64) {
    let (client, conn_id) = support::login(&node.server, APP, device).await;
    let route = Route {
        conn_id,
        node: node.server.hub().node_id(),
    };
    until("the route in Redis", async || {
        node.store.lookup(APP, &[device]).await.unwrap() == [Some(route)]
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
async fn unicast_kicks_and_duplicate_logins_cross_nodes_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one = node(&redis, 1).await;
    let two = node(&redis, 2).await;
    let (mut a1, _) = login(&one, "a1").await;
    let (mut b1, _) = login(&two, "b1").await;
    let (mut b2, b2_conn) = login(&two, "b2").await;

    let pusher = one.server.pusher();
    let report = pusher
        .push_devices(
            APP,
            &["a1", "b1", "ghost", "b2"],
            &PushMessage::new(1, &b"all"[..]),
        )
        .await
        .unwrap();
    assert_eq!(report.queued, 3, "{report:?}");
    assert_eq!(report.offline, ["ghost"]);
    for client in [&mut a1, &mut b1, &mut b2] {
        assert_eq!(&next_payload(client).await[..], b"all");
    }

    // Node 3 does not exist (nobody listens on its channel): Offline, at once. Node 4
    // listens but never answers: Unknown after the relay's timeout.
    let _silent = support::sharded_subscriber(&redis.url(), "lc:relay:{4}").await;
    let route = |node: u16| Route {
        conn_id: (u64::from(node) << 48) | 1,
        node,
    };
    one.store
        .register(&[
            (DeviceKey::new(APP, "gone"), route(3)),
            (DeviceKey::new(APP, "far"), route(4)),
        ])
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let report = pusher
        .push_devices(APP, &["gone", "far"], &PushMessage::new(1, &b"x"[..]))
        .await
        .unwrap();
    assert_eq!(
        (report.offline, report.unknown),
        (vec!["gone".to_owned()], vec!["far".to_owned()])
    );
    let waited = started.elapsed();
    assert!(waited >= RELAY_TIMEOUT && waited < STEP, "{waited:?}");

    // A kick by device and one by connection id reach node 2's sessions.
    let kicked = pusher
        .kick(
            Target::Device {
                app: APP,
                device: "b1",
            },
            Code::Kicked,
            "operator",
        )
        .await
        .unwrap();
    assert_eq!(kicked, RelayResult::Queued);
    match next(&mut b1).await {
        Frame::Kick { code, message } => {
            assert_eq!(code, Code::Kicked);
            assert_eq!(message.as_str(), "operator");
        }
        other => panic!("expected a kick, got {other:?}"),
    }
    let nobody = KickRequest {
        target: KickTarget::Conn(b2_conn + 1000),
        code: Code::Kicked,
        message: String::new(),
    };
    assert_eq!(one.relay.kick(2, &nobody).await, RelayResult::Offline);

    // b2 logs in again on node 1: node 2's older session is kicked with `replaced`.
    let (_newer, newer_id) = login(&one, "b2").await;
    match next(&mut b2).await {
        Frame::Kick { code, .. } => assert_eq!(code, Code::Replaced),
        other => panic!("expected Kick(replaced), got {other:?}"),
    }
    let end = tokio::time::timeout(STEP, b2.recv()).await.unwrap();
    assert!(matches!(end, Ok(None)), "closed after the kick: {end:?}");
    // Its late close on node 2 leaves the newer route.
    until("node 2 to drop the older session", async || {
        two.server.hub().find_device(APP, "b2").is_none()
    })
    .await;
    two.server.shutdown(Duration::from_secs(1)).await;
    let found = one.store.lookup(APP, &["b2"]).await.unwrap();
    assert_eq!(
        found,
        [Some(Route {
            conn_id: newer_id,
            node: 1
        })]
    );

    one.server.shutdown(Duration::from_secs(1)).await;
    one.relay.shutdown().await;
    two.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_publish_reaches_both_nodes_with_one_position() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one = node(&redis, 1).await;
    let two = node(&redis, 2).await;
    let (mut a1, _) = login(&one, "a1").await;
    let (mut b1, _) = login(&two, "b1").await;
    one.groups
        .join_device(one.server.hub(), APP, "a1", "room")
        .unwrap();
    two.groups
        .join_device(two.server.hub(), APP, "b1", "room")
        .unwrap();
    until("both nodes in the room's set", async || {
        let nodes: BTreeSet<u16> = redis.cmd(&["SMEMBERS", "lc:gn:room"]).await;
        nodes == BTreeSet::from([1, 2])
    })
    .await;

    let first = one
        .groups
        .publish("room", &PushMessage::new(7, &b"one"[..]))
        .await
        .unwrap();
    assert_eq!(
        (first.members, first.queued, first.seq),
        (2, 2, 1),
        "{first:?}"
    );
    assert_eq!((first.remote_nodes, first.unknown_nodes), (1, 0));
    let second = two
        .groups
        .publish("room", &PushMessage::new(7, &b"two"[..]))
        .await
        .unwrap();
    assert_eq!((second.epoch, second.seq), (first.epoch, 2));
    assert_eq!(second.remote_nodes, 1);
    for client in [&mut a1, &mut b1] {
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
                    assert_eq!((epoch, s), (first.epoch, seq));
                    assert_eq!(&p[..], payload);
                }
                other => panic!("expected a group push, got {other:?}"),
            }
        }
    }

    // Node 2's member leaves: node 2 leaves the set, node 1's publishes stay local.
    drop(b1);
    until("node 2 out of the room's set", async || {
        let nodes: BTreeSet<u16> = redis.cmd(&["SMEMBERS", "lc:gn:room"]).await;
        nodes == BTreeSet::from([1])
    })
    .await;
    let local = one
        .groups
        .publish("room", &PushMessage::new(7, &b"three"[..]))
        .await
        .unwrap();
    assert_eq!((local.members, local.remote_nodes, local.seq), (1, 0, 3));
    assert_eq!(one.relay.hints_dropped(), 0);
    one.relay.shutdown().await;
    two.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_each_get_their_own_answer() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one = node(&redis, 1).await;
    let two = node(&redis, 2).await;
    let (_b1, b1_conn) = login(&two, "b1").await;
    // 20 batches at once, of 1..=20 targets: b1 first, then devices node 2 lacks.
    let calls = (1..=20).map(|n| {
        let mut targets = vec![RelayTarget {
            device: "b1".into(),
            conn_id: b1_conn,
        }];
        targets.extend((1..n).map(|i| RelayTarget {
            device: format!("nobody{i}"),
            conn_id: (2 << 48) | 999_999,
        }));
        let batch = RelayBatch {
            app: APP.into(),
            targets,
            frames: BatchFrames::Shared(Bytes::new()),
        };
        let relay = one.relay.clone();
        async move { (n, relay.push_batch(2, &batch).await) }
    });
    for (n, results) in futures::future::join_all(calls).await {
        assert_eq!(results.len(), n);
        assert_eq!(results[0], RelayResult::Queued);
        assert!(results[1..].iter().all(|r| *r == RelayResult::Offline));
    }
    // After shutdown the node no longer listens: it is Offline to the others.
    two.relay.shutdown().await;
    let kick = KickRequest {
        target: KickTarget::Conn(b1_conn),
        code: Code::Kicked,
        message: String::new(),
    };
    assert_eq!(one.relay.kick(2, &kick).await, RelayResult::Offline);
    one.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_nodes_leave_group_sets_and_live_nodes_keep_theirs_fresh() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let refresh = Duration::from_millis(200);
    let config = RelayConfig {
        timeout: RELAY_TIMEOUT,
        group_refresh: refresh,
        ..RelayConfig::default()
    };
    let one = node_with(&redis, 1, config.clone()).await;
    let two = node_with(&redis, 2, config).await;
    let (_a1, _) = login(&one, "a1").await;
    let (b1, _) = login(&two, "b1").await;
    one.groups
        .join_device(one.server.hub(), APP, "a1", "room")
        .unwrap();
    two.groups
        .join_device(two.server.hub(), APP, "b1", "room")
        .unwrap();
    let members = async || -> BTreeSet<u16> { redis.cmd(&["SMEMBERS", "lc:gn:room"]).await };
    until("both nodes in the room's set", async || {
        members().await == BTreeSet::from([1, 2])
    })
    .await;
    // The set lives three refreshes past the last one.
    let ttl: i64 = redis.cmd(&["PTTL", "lc:gn:room"]).await;
    assert!((1..=600).contains(&ttl), "{ttl}");

    // Node 8 died with members (no subscriber, no registry entry); node 9 is live in
    // the registry but not listening at the moment.
    let registry = NodeRegistry::new(redis.connect().await);
    let nine = registry
        .register(NodeAnnouncement {
            id: 9,
            addrs: Default::default(),
        })
        .await
        .unwrap();
    let _: i64 = redis.cmd(&["SADD", "lc:gn:room", "8", "9"]).await;
    let report = one
        .groups
        .publish("room", &PushMessage::new(7, &b"x"[..]))
        .await
        .unwrap();
    assert_eq!(
        (report.remote_nodes, report.unknown_nodes),
        (1, 0),
        "{report:?}"
    );
    until("node 8 pruned", async || {
        members().await == BTreeSet::from([1, 2, 9])
    })
    .await;
    assert_eq!(one.relay.pruned_nodes(), 1);
    nine.deregister().await.unwrap();

    // Redis lost the set: the next refresh puts the live nodes back.
    let _: i64 = redis.cmd(&["DEL", "lc:gn:room"]).await;
    until("the set refreshed", async || {
        members().await == BTreeSet::from([1, 2])
    })
    .await;
    // A node whose last member left is not put back by its refresh.
    drop(b1);
    until("node 2 out of the set", async || {
        members().await == BTreeSet::from([1])
    })
    .await;
    tokio::time::sleep(3 * refresh).await;
    assert_eq!(members().await, BTreeSet::from([1]));
    // Every node gone: the set expires.
    one.relay.shutdown().await;
    two.relay.shutdown().await;
    until("the set expired", async || {
        redis.cmd::<i64>(&["EXISTS", "lc:gn:room"]).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_is_subscribed_again_after_its_connection_is_killed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one = node(&redis, 1).await;
    let two = node(&redis, 2).await;
    let (mut b1, _) = login(&two, "b1").await;
    // The subscribers are the clients with a shard channel subscription (`ssub=1`).
    let clients: String = redis.cmd(&["CLIENT", "LIST"]).await;
    let subscribers: Vec<&str> = clients
        .lines()
        .filter(|line| line.contains(" ssub=1 "))
        .filter_map(|line| line.split(' ').next()?.strip_prefix("id="))
        .collect();
    assert_eq!(subscribers.len(), 2, "{clients}");
    for id in subscribers {
        let _: i64 = redis.cmd(&["CLIENT", "KILL", "ID", id]).await;
    }
    until("both inboxes subscribed again", async || {
        one.relay.resubscribed() >= 1 && two.relay.resubscribed() >= 1
    })
    .await;
    let report = one
        .server
        .pusher()
        .push_devices(APP, &["b1"], &PushMessage::new(1, &b"back"[..]))
        .await
        .unwrap();
    assert_eq!(report.queued, 1, "{report:?}");
    assert_eq!(&next_payload(&mut b1).await[..], b"back");
    one.relay.shutdown().await;
    two.relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_shows_in_the_lag_and_drains() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // A wait long enough for the whole burst (the default 500 ms is not, in debug).
    let config = RelayConfig {
        timeout: STEP,
        ..RelayConfig::default()
    };
    let one = node_with(&redis, 1, config.clone()).await;
    let two = node_with(&redis, 2, config).await;
    let (_b1, b1_conn) = login(&two, "b1").await;
    assert_eq!(two.relay.lag(), Default::default());
    let batch = RelayBatch {
        app: APP.into(),
        targets: vec![RelayTarget {
            device: "b1".into(),
            conn_id: b1_conn,
        }],
        frames: BatchFrames::Shared(Bytes::from_static(b"")),
    };
    // 2,000 requests at once; node 2's handler answers them one by one.
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let relay = two.relay.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut most = Default::default();
            while !stop.is_cancelled() {
                let lag: longconn_cluster::RelayLag = relay.lag();
                if lag.queued_requests > most {
                    most = lag.queued_requests;
                    assert!(lag.queued_bytes >= lag.queued_requests * 12, "{lag:?}");
                }
                tokio::task::yield_now().await;
            }
            most
        })
    };
    let calls = (0..2000).map(|_| one.relay.push_batch(2, &batch));
    let results = futures::future::join_all(calls).await;
    stop.cancel();
    let most = sampler.await.unwrap();
    let unanswered = results
        .iter()
        .filter(|r| r[0] == RelayResult::Unknown || r[0] == RelayResult::Offline)
        .count();
    assert_eq!(unanswered, 0, "every request answered");
    assert!(most > 0, "the handler fell behind at some point");
    let lag = two.relay.lag();
    assert_eq!(lag, Default::default(), "drained, nothing dropped");
    one.relay.shutdown().await;
    two.relay.shutdown().await;
}

#[tokio::test]
async fn a_redis_without_sharded_pub_sub_is_refused_clearly() {
    // What a Redis 6 answers, on a Redis 7 with the command renamed away.
    let Some(redis) = RedisServer::start_with(&["--rename-command", "SSUBSCRIBE", ""]) else {
        return;
    };
    let client = redis::Client::open(redis.url()).unwrap();
    let err = RedisRelay::start(client, redis.connect().await, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, longconn_cluster::Error::Unsupported(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("Redis >= 7.0"), "{err}");
}

//! `RedisHistory` on a private redis-server: replay, trimming, epochs, and recovery on
//! another node than the one the pushes were published on. Skipped without
//! redis-server.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use longconn_cluster::{RedisGroupLog, RedisHistory};
use longconn_core::Frame;
use longconn_core::protocol::Position;
use longconn_group::{GroupConfig, GroupHistory, GroupRegistry, HistoryConfig, HistoryRule};
use longconn_server::{GroupPosition, PushMessage, Server, ServerConfig};
use support::{RedisServer, STEP};

fn config(max_len: usize) -> HistoryConfig {
    HistoryConfig {
        rules: vec![HistoryRule {
            prefix: "room".into(),
            max_len,
            max_age: Some(Duration::from_secs(60)),
        }],
        ..HistoryConfig::default()
    }
}

fn pos(epoch: u64, offset: u64) -> GroupPosition {
    GroupPosition { epoch, offset }
}

#[tokio::test]
async fn replays_what_was_missed_and_refuses_holes_and_other_epochs() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let h = RedisHistory::new(redis.connect().await, config(1000)).unwrap();
    assert!(h.enabled("room-1") && !h.enabled("chat"));
    for i in 1..=20 {
        h.append("room-1", pos(7, i), Bytes::from(format!("m{i}")))
            .await;
    }
    let r = h.since("room-1", Some(pos(7, 15))).await;
    assert!(r.recovered);
    assert_eq!(r.top, Some(pos(7, 20)));
    assert_eq!(r.frames, vec!["m16", "m17", "m18", "m19", "m20"]);
    assert!(h.since("room-1", Some(pos(7, 20))).await.recovered);
    assert!(
        !h.since("room-1", Some(pos(8, 3))).await.recovered,
        "other epoch"
    );
    assert!(
        !h.since("room-1", Some(pos(7, 21))).await.recovered,
        "ahead"
    );
    let first = h.since("room-1", None).await;
    assert!(!first.recovered && first.frames.is_empty());
    assert_eq!(first.top, Some(pos(7, 20)));

    // A hole (an append that never made it) is not papered over.
    h.append("room-1", pos(7, 22), Bytes::from_static(b"m22"))
        .await;
    assert!(!h.since("room-1", Some(pos(7, 20))).await.recovered);
    // A new epoch: only its own entries count.
    h.append("room-1", pos(9, 1), Bytes::from_static(b"n1"))
        .await;
    let r = h.since("room-1", Some(pos(9, 0))).await;
    assert!(r.recovered);
    assert_eq!(r.frames, vec!["n1"]);
    assert!(!h.since("room-1", Some(pos(7, 22))).await.recovered);
}

#[tokio::test]
async fn a_trimmed_stream_is_not_recovered() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let h = RedisHistory::new(redis.connect().await, config(10)).unwrap();
    for i in 1..=500 {
        h.append("room-2", pos(3, i), Bytes::from(format!("m{i}")))
            .await;
    }
    let len: usize = redis.cmd(&["XLEN", "lc:h:room-2"]).await;
    assert!((10..500).contains(&len), "MAXLEN ~ trimmed to {len}");
    assert!(!h.since("room-2", Some(pos(3, 1))).await.recovered);
    let r = h.since("room-2", Some(pos(3, 498))).await;
    assert!(r.recovered);
    assert_eq!(r.frames, vec!["m499", "m500"]);
}

fn node(id: u16, conn: longconn_cluster::redis::aio::ConnectionManager) -> Server {
    let registry = GroupRegistry::new(GroupConfig::default())
        .with_group_log(Arc::new(RedisGroupLog::new(conn.clone())))
        .with_history(Arc::new(RedisHistory::new(conn, config(1000)).unwrap()));
    let config = ServerConfig::builder().node_id(id).build().unwrap();
    let registry = Arc::new(registry);
    Server::builder(config, Arc::new(support::keys()))
        .groups(registry)
        .build()
}

async fn next(client: &mut longconn_core::connection::memory::MemoryClient) -> Frame {
    tokio::time::timeout(STEP, client.recv())
        .await
        .expect("a frame in time")
        .unwrap()
        .expect("open")
}

/// A member on node 1 drops; 100 pushes are published on node 1 meanwhile; it
/// reconnects to node 2 and rejoins from its position: all 100, in order, from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_recovers_on_another_node_from_the_shared_history() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let conn = redis.connect().await;
    let two = node(2, conn.clone());
    // Node 1's group layer: it publishes while the member is away.
    let registry_one = GroupRegistry::new(GroupConfig::default())
        .with_group_log(Arc::new(RedisGroupLog::new(conn.clone())))
        .with_history(Arc::new(
            RedisHistory::new(conn.clone(), config(1000)).unwrap(),
        ));

    // The member saw the group up to (epoch, first).
    let msg = |body: String| PushMessage::new(1, Bytes::from(body));
    let report = registry_one
        .publish("room-3", &msg("m0".into()))
        .await
        .unwrap();
    let (epoch, first) = (report.epoch, report.seq);
    assert_ne!(epoch, 0, "numbered and kept with no member anywhere");
    for i in 1..=100 {
        registry_one
            .publish("room-3", &msg(format!("m{i}")))
            .await
            .unwrap();
    }

    let (mut client, _) = support::login(&two, "app", "m").await;
    client
        .send(Frame::JoinGroup {
            id: 5,
            group: "room-3".into(),
            since: Some(Position { epoch, seq: first }),
        })
        .await
        .unwrap();
    let ack = next(&mut client).await;
    assert_eq!(
        ack,
        Frame::JoinAck {
            id: 5,
            group: "room-3".into(),
            position: Some(Position {
                epoch,
                seq: first + 100
            }),
            recovered: Some(true),
        }
    );
    for i in 1..=100u64 {
        let Frame::Push {
            seq,
            epoch: e,
            payload,
            ..
        } = next(&mut client).await
        else {
            panic!("a push")
        };
        assert_eq!((seq, e), (Some(first + i), Some(epoch)));
        assert_eq!(payload, format!("m{i}"));
    }
}

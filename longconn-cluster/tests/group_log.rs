//! `RedisGroupLog` against a real redis-server: one numbering for concurrent callers on
//! several connections, a new epoch when Redis loses the counter, one round trip each.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use longconn_cluster::RedisGroupLog;
use longconn_server::{GroupLog, GroupPosition};
use support::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_two_nodes_get_offsets_one_to_n_in_one_epoch() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Two "nodes", each with its own connection, 8 publishers each.
    let logs = [
        RedisGroupLog::new(redis.connect().await),
        RedisGroupLog::new(redis.connect().await),
    ];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let log = logs[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..25 {
                got.push(log.next_position("room").await.unwrap());
            }
            got
        }));
    }
    let mut all: Vec<GroupPosition> = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let epochs: HashSet<u64> = all.iter().map(|p| p.epoch).collect();
    assert_eq!(epochs.len(), 1, "{epochs:?}");
    let epoch = all[0].epoch;
    assert!(epoch != 0 && epoch < 1 << 53, "{epoch}");
    let mut offsets: Vec<u64> = all.iter().map(|p| p.offset).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=400).collect::<Vec<_>>());

    // Another group has its own counter and its own epoch.
    let other = logs[0].next("lobby").await.unwrap();
    assert_eq!(other.offset, 1);
    assert_ne!(other.epoch, epoch);
    // The stored form: a hash with the epoch and the last offset, and the idle TTL.
    let stored: Vec<String> = redis.cmd(&["HMGET", "lc:g:room", "e", "o"]).await;
    assert_eq!(stored, [epoch.to_string(), "400".to_owned()]);
    let ttl: i64 = redis.cmd(&["PTTL", "lc:g:room"]).await;
    assert!(ttl > 86_000_000, "{ttl}");
}

#[tokio::test]
async fn a_lost_counter_starts_a_new_epoch_never_a_repeated_position() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let log = RedisGroupLog::new(redis.connect().await);
    let mut seen = HashSet::new();
    for n in 1..=3 {
        let p = log.next("room").await.unwrap();
        assert_eq!(p.offset, n);
        assert!(seen.insert(p));
    }
    let first_epoch = seen.iter().next().unwrap().epoch;
    // Redis restarted without persistence: every key and every script is gone.
    let _: () = redis.cmd(&["FLUSHALL"]).await;
    let _: () = redis.cmd(&["SCRIPT", "FLUSH"]).await;
    let again = log.next("room").await.unwrap();
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, first_epoch);
    assert!(seen.insert(again));
    // Losing only the script costs a reload, never a second offset.
    let _: () = redis.cmd(&["SCRIPT", "FLUSH"]).await;
    let next = log.next("room").await.unwrap();
    assert_eq!((next.epoch, next.offset), (again.epoch, 2));
    // A hash without its epoch (edited by hand) also starts over in a new epoch.
    let _: i64 = redis.cmd(&["HDEL", "lc:g:room", "e"]).await;
    let restarted = log.next("room").await.unwrap();
    assert_eq!(restarted.offset, 1);
    assert_ne!(restarted.epoch, again.epoch);
}

#[tokio::test]
async fn an_idle_group_expires_and_each_publish_is_one_round_trip() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let conn = redis.counting().await;
    let log = RedisGroupLog::new(conn.clone())
        .with_idle_ttl(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        RedisGroupLog::new(conn.clone())
            .with_idle_ttl(Some(Duration::ZERO))
            .is_err()
    );
    let first = log.next("room").await.unwrap();
    conn.take(); // NOSCRIPT, SCRIPT LOAD, EVALSHA
    for n in 2..=10 {
        assert_eq!(log.next("room").await.unwrap().offset, n);
    }
    assert_eq!(conn.take(), 9, "one round trip per position");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = log.next("room").await.unwrap();
    assert_eq!(after.offset, 1, "the idle group's log expired");
    assert_ne!(after.epoch, first.epoch);

    let forever = RedisGroupLog::new(redis.connect().await)
        .with_idle_ttl(None)
        .unwrap();
    forever.next("kept").await.unwrap();
    forever.forget("kept"); // a shared log ignores it
    let ttl: i64 = redis.cmd(&["PTTL", "lc:g:kept"]).await;
    assert_eq!(ttl, -1, "no TTL");
    assert_eq!(forever.next("kept").await.unwrap().offset, 2);
}

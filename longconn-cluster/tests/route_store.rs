//! `RedisRouteStore` against a real redis-server: round trips, the late-close race,
//! replaced routes, expiry and refresh, and one pipeline per batch.

mod support;

use std::time::Duration;

use longconn_cluster::RedisRouteStore;
use longconn_server::{DeviceKey, Route, RouteStore};
use support::RedisServer;

const APP: &str = "app";

fn route(node: u16, n: u64) -> Route {
    Route {
        conn_id: (u64::from(node) << 48) | n,
        node,
    }
}

fn dev(device: &str) -> DeviceKey {
    DeviceKey::new(APP, device)
}

#[tokio::test]
async fn register_lookup_and_unregister_round_trip() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisRouteStore::new(redis.connect().await);
    assert_eq!(store.ttl(), RedisRouteStore::DEFAULT_TTL);
    assert_eq!(
        RedisRouteStore::DEFAULT_TTL,
        3 * longconn_cluster::ROUTE_REFRESH_INTERVAL
    );
    store
        .register(&[
            (dev("phone"), route(1, 1)),
            (dev("tablet"), route(2, 7)),
            (DeviceKey::new("other", "phone"), route(3, 9)),
        ])
        .await
        .unwrap();
    let found = store
        .lookup(APP, &["phone", "tablet", "watch"])
        .await
        .unwrap();
    assert_eq!(found, [Some(route(1, 1)), Some(route(2, 7)), None]);
    assert_eq!(
        store.lookup("other", &["phone"]).await.unwrap(),
        [Some(route(3, 9))],
        "apps do not share devices"
    );
    // The stored form is the documented one, with the default TTL.
    let value: String = redis.cmd(&["GET", "lc:r:3:app:tablet"]).await;
    assert_eq!(value, "2:562949953421319");
    let ttl: i64 = redis.cmd(&["PTTL", "lc:r:3:app:tablet"]).await;
    let default_ms = RedisRouteStore::DEFAULT_TTL.as_millis() as i64;
    assert!((default_ms - 1_000..=default_ms).contains(&ttl), "{ttl}");

    // Only the owning connection id removes a route.
    store
        .unregister(&[(dev("phone"), route(1, 1).conn_id), (dev("tablet"), 7)])
        .await
        .unwrap();
    let found = store.lookup(APP, &["phone", "tablet"]).await.unwrap();
    assert_eq!(found, [None, Some(route(2, 7))]);
    // Empty batches are fine and cost nothing.
    store.register(&[]).await.unwrap();
    store.unregister(&[]).await.unwrap();
    assert!(store.lookup(APP, &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_late_close_on_the_old_node_keeps_the_newer_route() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // Two nodes, each with its own connection.
    let node1 = RedisRouteStore::new(redis.connect().await);
    let node2 = RedisRouteStore::new(redis.connect().await);
    node1
        .register(&[(dev("phone"), route(1, 5))])
        .await
        .unwrap();
    let replaced = node2
        .register_replacing(&[(dev("phone"), route(2, 8))])
        .await
        .unwrap();
    assert_eq!(replaced, [Some(route(1, 5))]);
    // Node 1's connection closes after the new login: its removal must not win.
    node1
        .unregister(&[(dev("phone"), route(1, 5).conn_id)])
        .await
        .unwrap();
    assert_eq!(
        node1.lookup(APP, &["phone"]).await.unwrap(),
        [Some(route(2, 8))]
    );
    // A connection id that is a suffix of the stored one does not match either.
    let stored = route(2, 8).conn_id.to_string();
    let suffix: u64 = stored[1..].parse().unwrap();
    node1.unregister(&[(dev("phone"), suffix)]).await.unwrap();
    assert_eq!(
        node1.lookup(APP, &["phone"]).await.unwrap(),
        [Some(route(2, 8))]
    );
    node2
        .unregister(&[(dev("phone"), route(2, 8).conn_id)])
        .await
        .unwrap();
    assert_eq!(node1.lookup(APP, &["phone"]).await.unwrap(), [None]);
}

#[tokio::test]
async fn register_replacing_reports_each_replaced_route_in_order() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisRouteStore::new(redis.connect().await);
    store
        .register(&[(dev("b"), route(2, 1)), (dev("d"), route(1, 4))])
        .await
        .unwrap();
    let replaced = store
        .register_replacing(&[
            (dev("a"), route(1, 10)),
            (dev("b"), route(1, 11)),
            (dev("c"), route(1, 12)),
            (dev("d"), route(1, 13)),
        ])
        .await
        .unwrap();
    assert_eq!(replaced, [None, Some(route(2, 1)), None, Some(route(1, 4))]);
    let found = store.lookup(APP, &["a", "b", "c", "d"]).await.unwrap();
    assert_eq!(
        found,
        [
            Some(route(1, 10)),
            Some(route(1, 11)),
            Some(route(1, 12)),
            Some(route(1, 13))
        ]
    );
    // A value that is not a route reads as none (and is replaced by the next login).
    let _: () = redis.cmd(&["SET", "lc:r:3:app:e", "garbage"]).await;
    assert_eq!(store.lookup(APP, &["e"]).await.unwrap(), [None]);
    let replaced = store
        .register_replacing(&[(dev("e"), route(1, 14))])
        .await
        .unwrap();
    assert_eq!(replaced, [None]);
    assert_eq!(
        store.lookup(APP, &["e"]).await.unwrap(),
        [Some(route(1, 14))]
    );
}

#[tokio::test]
async fn routes_expire_after_their_ttl_unless_refreshed() {
    expire_unless_refreshed(false).await;
}

#[tokio::test]
async fn routes_expire_after_their_ttl_unless_refreshed_many_per_call() {
    expire_unless_refreshed(true).await;
}

/// Refresh semantics, with one script call per route or one per chunk of routes.
async fn expire_unless_refreshed(many_per_call: bool) {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_millis(1000);
    let store = RedisRouteStore::new(redis.connect().await)
        .with_ttl(ttl)
        .unwrap()
        .with_multi_key_refresh(many_per_call);
    assert!(
        RedisRouteStore::new(redis.connect().await)
            .with_ttl(Duration::ZERO)
            .is_err()
    );
    store
        .register(&[(dev("idle"), route(1, 1)), (dev("live"), route(1, 2))])
        .await
        .unwrap();
    let ttl_ms: i64 = redis.cmd(&["PTTL", "lc:r:3:app:idle"]).await;
    assert!((1..=1000).contains(&ttl_ms), "{ttl_ms}");
    // `live` is refreshed every 300 ms (as RouteSync does every 30 s), `idle` never.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.refresh(&[(dev("live"), route(1, 2))]).await.unwrap();
    }
    let found = store.lookup(APP, &["idle", "live"]).await.unwrap();
    assert_eq!(found, [None, Some(route(1, 2))], "after 1.5 s");

    // A refresh re-creates a route Redis lost, and never overwrites a newer login's.
    let _: i64 = redis.cmd(&["DEL", "lc:r:3:app:live"]).await;
    store
        .register(&[(dev("moved"), route(2, 3))])
        .await
        .unwrap();
    store
        .refresh(&[(dev("live"), route(1, 2)), (dev("moved"), route(1, 9))])
        .await
        .unwrap();
    let found = store.lookup(APP, &["live", "moved"]).await.unwrap();
    assert_eq!(found, [Some(route(1, 2)), Some(route(2, 3))]);
    let ttl_ms: i64 = redis.cmd(&["PTTL", "lc:r:3:app:live"]).await;
    assert!(ttl_ms > 0, "a refreshed route has a TTL: {ttl_ms}");

    // A large refresh (several calls of the multi-key script): every route of this
    // node comes back, the newer login's stays, each with the TTL.
    let many: Vec<_> = (0..450u64)
        .map(|i| (dev(&format!("m{i}")), route(1, 100 + i)))
        .collect();
    let mut batch = many.clone();
    batch.push((dev("moved"), route(1, 9)));
    store.refresh(&batch).await.unwrap();
    let names: Vec<String> = (0..450).map(|i| format!("m{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let found = store.lookup(APP, &names).await.unwrap();
    let expected: Vec<_> = many.iter().map(|(_, r)| Some(*r)).collect();
    assert_eq!(found, expected);
    let moved = store.lookup(APP, &["moved"]).await.unwrap();
    assert_eq!(moved, [Some(route(2, 3))]);
    let ttl_ms: i64 = redis.cmd(&["PTTL", "lc:r:3:app:m449"]).await;
    assert!((1..=1000).contains(&ttl_ms), "{ttl_ms}");
}

#[tokio::test]
async fn every_call_on_a_batch_is_one_round_trip() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let conn = redis.counting().await;
    let store = RedisRouteStore::new(conn.clone()).with_prefix("t:");
    let routes: Vec<(DeviceKey, Route)> = (0..300)
        .map(|i| (dev(&format!("d{i}")), route(1, i)))
        .collect();
    let names: Vec<String> = (0..300).map(|i| format!("d{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();

    // The scripts are loaded on first use (NOSCRIPT, SCRIPT LOAD, again: three).
    store.refresh(&routes[..1]).await.unwrap();
    store.unregister(&[(dev("none"), 0)]).await.unwrap();
    assert_eq!(conn.take(), 6);

    store.register(&routes).await.unwrap();
    assert_eq!(conn.take(), 1, "register");
    let found = store.lookup(APP, &names).await.unwrap();
    assert_eq!(conn.take(), 1, "lookup");
    assert!(found.iter().zip(&routes).all(|(f, (_, r))| *f == Some(*r)));
    let replaced = store.register_replacing(&routes).await.unwrap();
    assert_eq!(conn.take(), 1, "register_replacing");
    assert!(
        replaced
            .iter()
            .zip(&routes)
            .all(|(f, (_, r))| *f == Some(*r))
    );
    store.refresh(&routes).await.unwrap();
    assert_eq!(conn.take(), 1, "refresh");
    let under_prefix: i64 = redis.cmd(&["EXISTS", "t:r:3:app:d299"]).await;
    assert_eq!(under_prefix, 1, "keys live under the store's prefix");
    let owned: Vec<(DeviceKey, u64)> = routes.iter().map(|(d, r)| (d.clone(), r.conn_id)).collect();
    store.unregister(&owned).await.unwrap();
    assert_eq!(conn.take(), 1, "unregister");
    let found = store.lookup(APP, &names).await.unwrap();
    assert!(found.iter().all(Option::is_none));
    // And Redis saw one command per device per call (no hidden extra commands).
    let stats: String = redis.cmd(&["INFO", "commandstats"]).await;
    let calls = |cmd: &str| -> u64 {
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))
            .unwrap_or_else(|| panic!("no {cmd} in {stats}"));
        line.split(['=', ',']).nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(calls("mget"), 2);
    assert_eq!(calls("evalsha"), 2 + 2 * 300 + 2);
    assert_eq!(
        calls("set"),
        300 + 300 + 300 + 1,
        "register, replacing, refresh, warm-up"
    );
}

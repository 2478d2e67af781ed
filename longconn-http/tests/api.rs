//! The push HTTP API against a running server with SDK clients.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use longconn_client::ConnState;
use longconn_http::ApiLimits;
use longconn_server::{
    DeviceKey, GroupMessage, KickRequest, MemoryRouteStore, Relay, RelayBatch, RelayResult,
    RemoteGroupReport, Route, RouteStore, Router, Server, ServerConfig,
};
use serde_json::json;
use support::{APP, STEP, Setup, next_push};

fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_unicast_reports_queued_and_offline_devices() {
    let setup = Setup::start(Router::echo(), ApiLimits::default()).await;
    let d1 = setup.client("d1").await;
    let d2 = setup.client("d2").await;
    let (mut p1, mut p2) = (d1.pushes().unwrap(), d2.pushes().unwrap());

    let body = json!({
        "app": support::APP, "business": 7,
        "devices": ["d1", "d2", "ghost"],
        "payload_b64": b64(b"same for all"),
        "meta": {"campaign": "c1"},
    });
    let (status, reply) = setup.post("/v1/push/devices", body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"queued": 2, "offline": ["ghost"], "dropped": [], "unknown": []})
    );
    for pushes in [&mut p1, &mut p2] {
        let push = next_push(pushes).await;
        assert_eq!(
            (push.business, &push.payload[..]),
            (7, &b"same for all"[..])
        );
        assert_eq!(push.meta.get("campaign"), Some(&b"c1"[..]));
        assert_eq!((push.group, push.seq), (None, None));
    }

    let body = json!({
        "app": support::APP, "business": 8,
        "messages": [
            {"device": "d1", "payload_b64": b64(b"for d1")},
            {"device": "d2", "payload_b64": b64(b"for d2")},
            {"device": "nobody", "payload_b64": b64(b"lost")},
        ],
    });
    let (status, reply) = setup.post("/v1/push/devices", body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"queued": 2, "offline": ["nobody"], "dropped": [], "unknown": []})
    );
    assert_eq!(&next_push(&mut p1).await.payload[..], b"for d1");
    assert_eq!(&next_push(&mut p2).await.payload[..], b"for d2");

    // Another app's device of the same name is not ours.
    let body = json!({"app": "other", "business": 1, "devices": ["d1"], "payload_b64": ""});
    let (_, reply) = setup.post("/v1/push/devices", body.to_string()).await;
    assert_eq!(
        reply,
        json!({"queued": 0, "offline": ["d1"], "dropped": [], "unknown": []})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_push_presence_and_kick() {
    let setup = Setup::start(Router::echo(), ApiLimits::default()).await;
    let mut clients = Vec::new();
    for device in ["g1", "g2", "g3"] {
        let client = setup.client(device).await;
        client.join("news").await.unwrap();
        clients.push(client);
    }
    let (status, reply) = setup.get("/v1/groups/news").await;
    assert_eq!(
        (status, reply),
        (
            200,
            json!({"group": "news", "members": 3, "local_members": 3, "remote_nodes": 0, "unknown_nodes": 0})
        )
    );
    assert_eq!(setup.get("/v1/groups/empty").await.1["members"], 0);

    let mut streams: Vec<_> = clients.iter().map(|c| c.pushes().unwrap()).collect();
    let mut epoch = None;
    for seq in 1..=2 {
        let body = json!({"business": 3, "payload_b64": b64(b"headline")});
        let (status, reply) = setup.post("/v1/push/groups/news", body.to_string()).await;
        assert_eq!(status, 200, "{reply}");
        let this_epoch = reply["epoch"].as_u64().expect("a JSON-safe epoch");
        assert!(this_epoch > 0 && this_epoch < 1 << 53, "{reply}");
        assert_eq!(*epoch.get_or_insert(this_epoch), this_epoch, "one epoch");
        assert_eq!(
            reply,
            json!({"members": 3, "queued": 3, "dropped": 0, "remote_nodes": 0, "unknown_nodes": 0, "seq": seq, "epoch": this_epoch})
        );
    }
    for stream in &mut streams {
        for seq in 1..=2 {
            let push = next_push(stream).await;
            assert_eq!((push.group.as_deref(), push.seq), (Some("news"), Some(seq)));
        }
    }
    let body = json!({"business": 3, "payload_b64": ""});
    let (_, reply) = setup.post("/v1/push/groups/nobody", body.to_string()).await;
    assert_eq!(
        reply,
        json!({"members": 0, "queued": 0, "dropped": 0, "remote_nodes": 0, "unknown_nodes": 0, "seq": 0, "epoch": 0})
    );

    // Kick: the client stops for good and its groups are left.
    let body = json!({"app": support::APP, "device": "g1", "reason": "maintenance"});
    let (status, reply) = setup.post("/v1/kick", body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(reply["kicked"], true, "{reply}");
    let mut state = clients[0].state();
    tokio::time::timeout(
        STEP,
        state.wait_for(|s| matches!(s, ConnState::Disconnected { .. })),
    )
    .await
    .expect("kicked client stops")
    .unwrap();
    let deadline = tokio::time::Instant::now() + STEP;
    while setup.groups.members("news") != 2 {
        assert!(tokio::time::Instant::now() < deadline, "kicked member left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, reply) = setup.post("/v1/kick", body.to_string()).await;
    assert_eq!(reply, json!({"kicked": false}));
}

/// Node 2 answers every push and kick with `queued`; node 3 never answers (the relay's
/// own timeout: `unknown`).
#[derive(Debug)]
struct TwoOtherNodes;

#[async_trait]
impl Relay for TwoOtherNodes {
    async fn push_batch(&self, node: u16, batch: &RelayBatch) -> Vec<RelayResult> {
        let result = if node == 2 {
            RelayResult::Queued
        } else {
            RelayResult::Unknown
        };
        vec![result; batch.targets.len()]
    }

    async fn publish_group(&self, _: &GroupMessage) -> RemoteGroupReport {
        RemoteGroupReport::default()
    }

    async fn kick(&self, node: u16, _: &KickRequest) -> RelayResult {
        if node == 2 {
            RelayResult::Queued
        } else {
            RelayResult::Unknown
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_other_nodes_are_pushed_and_kicked_through_the_relay() {
    let store = Arc::new(MemoryRouteStore::new());
    let route = |node: u16| Route {
        conn_id: (u64::from(node) << 48) | 5,
        node,
    };
    store
        .register(&[
            (DeviceKey::new(APP, "on-2"), route(2)),
            (DeviceKey::new(APP, "on-3"), route(3)),
        ])
        .await
        .unwrap();
    let builder = Server::builder(ServerConfig::default(), Arc::new(support::keys()))
        .route_store(store)
        .relay(Arc::new(TwoOtherNodes));
    let setup = Setup::start_with(builder, ApiLimits::default()).await;
    let _here = setup.client("here").await;

    let body = json!({
        "app": APP,
        "business": 1,
        "devices": ["on-3", "here", "on-2", "ghost"],
        "payload_b64": b64(b"x"),
    });
    let (status, reply) = setup.post("/v1/push/devices", body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        reply,
        json!({"queued": 2, "offline": ["ghost"], "dropped": [], "unknown": ["on-3"]})
    );

    let kick = |device: &str| json!({"app": APP, "device": device}).to_string();
    let (_, reply) = setup.post("/v1/kick", kick("on-2")).await;
    assert_eq!(reply, json!({"kicked": true}));
    let (_, reply) = setup.post("/v1/kick", kick("on-3")).await;
    assert_eq!(reply, json!({"kicked": false, "unknown": true}));
    let (_, reply) = setup.post("/v1/kick", kick("ghost")).await;
    assert_eq!(reply, json!({"kicked": false}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_server_stays_up() {
    let limits = ApiLimits {
        max_payload: 16,
        max_batch: 3,
        max_body: 4096,
    };
    let setup = Setup::start(Router::echo(), limits).await;
    let client = setup.client("d1").await;
    let app = support::APP;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/push/devices", "{not json".into(), 400, "bad_json"),
        (
            "/v1/push/devices",
            json!({"app": app, "business": 1, "devices": ["d1"]}).to_string(),
            400,
            "bad_request",
        ),
        (
            "/v1/push/devices",
            json!({"app": app, "business": 1, "devices": ["d1"], "payload_b64": "x",
                   "messages": []})
            .to_string(),
            400,
            "bad_request",
        ),
        (
            "/v1/push/devices",
            json!({"app": app, "business": 1, "devices": ["d1"], "payload_b64": "!!!"}).to_string(),
            400,
            "bad_base64",
        ),
        (
            "/v1/push/devices",
            json!({"app": app, "business": 1, "devices": ["d1"], "payload_b64": b64(&[0; 17])})
                .to_string(),
            413,
            "payload_too_large",
        ),
        (
            "/v1/push/devices",
            json!({"app": app, "business": 1, "devices": ["a", "b", "c", "d"],
                   "payload_b64": ""})
            .to_string(),
            413,
            "payload_too_large",
        ),
        (
            "/v1/push/devices",
            json!({"app": app, "business": 1, "devices": ["d1"], "payload_b64": "",
                   "surprise": 1})
            .to_string(),
            422,
            "bad_json",
        ),
        (
            "/v1/push/devices",
            json!({"app": app, "business": -1, "devices": ["d1"], "payload_b64": ""}).to_string(),
            422,
            "bad_json",
        ),
        (
            "/v1/push/devices",
            json!({"app": "", "business": 1, "devices": ["d1"], "payload_b64": ""}).to_string(),
            400,
            "bad_request",
        ),
        (
            "/v1/push/devices",
            format!(
                r#"{{"app":"{app}","business":1,"devices":["{}"],"payload_b64":""}}"#,
                "x".repeat(5000)
            ),
            413,
            "payload_too_large",
        ),
        (
            "/v1/push/groups/g",
            json!({"business": 1, "payload_b64": "%%%"}).to_string(),
            400,
            "bad_base64",
        ),
        (
            "/v1/push/groups/g",
            json!({"business": 1, "payload_b64": b64(&[1; 17])}).to_string(),
            413,
            "payload_too_large",
        ),
        (
            &*Box::leak(format!("/v1/push/groups/{}", "g".repeat(200)).into_boxed_str()),
            json!({"business": 1, "payload_b64": ""}).to_string(),
            400,
            "bad_request",
        ),
        ("/v1/kick", json!({"app": app}).to_string(), 422, "bad_json"),
        (
            "/v1/kick",
            json!({"app": app, "device": "d1", "reason": "r".repeat(1025)}).to_string(),
            400,
            "bad_request",
        ),
    ];
    for (path, body, status, code) in cases {
        let (got, reply) = setup.post(path, body.clone()).await;
        assert_eq!(
            (got, reply["error"].as_str()),
            (status, Some(code)),
            "{path} {}: {reply}",
            &body[..body.len().min(120)]
        );
        assert!(reply["message"].is_string(), "{reply}");
    }
    // Not JSON at all: 415 with a JSON body.
    let reply = setup
        .http
        .post(format!("{}/v1/kick", setup.api))
        .body("app=x")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 415);
    let text = reply.text().await.unwrap();
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["error"], "bad_json");

    // Nothing was pushed or lost, and the connection is still served.
    let echoed = client
        .request(1, bytes::Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(&echoed.payload[..], b"still here");
}

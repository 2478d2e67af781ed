//! A saturated group's publishes get 503 `group_saturated` with a retry hint; other
//! groups are served as usual.

use std::sync::Arc;
use std::time::Duration;

use longconn_core::{SlowConsumerPolicy, TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_http::{ApiLimits, PushApi, push_api};
use longconn_server::{ConnHandle, Server, ServerConfig};
use serde_json::{Value, json};

/// Members without a driver: what is pushed to them stays queued until the test
/// takes it, like members that do not keep up.
fn members(first: u64, n: u64) -> Vec<ConnHandle> {
    (first..first + n)
        .map(|id| ConnHandle::new(id, 64, SlowConsumerPolicy::DropNewest))
        .collect()
}

async fn publish(http: &reqwest::Client, api: &str, group: &str) -> (u16, Option<String>, Value) {
    let reply = http
        .post(format!("{api}/v1/push/groups/{group}"))
        .header("content-type", "application/json")
        .body(json!({"business": 1, "payload_b64": "aGk="}).to_string())
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let retry_after = reply
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = reply.text().await.unwrap();
    (status, retry_after, serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_group_gets_503_with_a_retry_hint_and_others_are_unaffected() {
    let config = GroupConfig::builder()
        .max_group_backlog(4)
        .saturated_retry_after(Duration::from_millis(1500))
        .build()
        .unwrap();
    let groups = Arc::new(GroupRegistry::new(config));
    let keys = TokenKeys::new(TokenKey::new("k", b"saturation-test-secret").unwrap());
    let server = Server::builder(ServerConfig::default(), Arc::new(keys))
        .groups(groups.clone())
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let router = push_api(PushApi::new(server, groups.clone(), ApiLimits::default()));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::new();

    let (busy, calm) = (members(1, 50), members(1001, 50));
    busy.iter().for_each(|m| groups.join(m, "busy").unwrap());
    calm.iter().for_each(|m| groups.join(m, "calm").unwrap());

    for seq in 1..=4 {
        let (status, _, reply) = publish(&http, &api, "busy").await;
        assert_eq!((status, &reply["seq"]), (200, &json!(seq)), "{reply}");
    }
    for _ in 0..3 {
        let (status, retry_after, reply) = publish(&http, &api, "busy").await;
        assert_eq!(status, 503, "{reply}");
        assert_eq!(retry_after.as_deref(), Some("2"), "1.5 s rounded up");
        assert_eq!(reply["error"], "group_saturated");
        assert_eq!(reply["retry_after_ms"], 1500);
        assert!(reply["message"].as_str().unwrap().contains("saturated"));

        let (status, _, reply) = publish(&http, &api, "calm").await;
        assert_eq!((status, &reply["queued"]), (200, &json!(50)), "{reply}");
        calm.iter()
            .for_each(|m| assert_eq!(m.take_pushes().len(), 1));
    }
    assert_eq!(groups.saturated_publishes(), 3);
    assert!(
        busy.iter().all(|m| m.queued_pushes() == 4),
        "a refused publish queues nothing"
    );

    // Once its members catch up, the group takes publishes again, without a gap.
    busy.iter().for_each(|m| drop(m.take_pushes()));
    let (status, _, reply) = publish(&http, &api, "busy").await;
    assert_eq!((status, &reply["seq"]), (200, &json!(5)), "{reply}");
}

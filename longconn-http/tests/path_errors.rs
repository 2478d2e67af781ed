//! A group id in the path that does not decode (percent-encoded bytes that are not
//! UTF-8) is 400 `bad_request` with the JSON error body, on the group push and the
//! presence route. Found by the http_json fuzz target: axum's own `Path` rejection
//! answered 400 with a plain-text body.

use std::sync::Arc;

use longconn_core::{TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_http::{ApiLimits, PushApi, push_api};
use longconn_server::{Server, ServerConfig};
use serde_json::Value;

#[tokio::test]
async fn a_group_id_that_is_not_utf8_gets_a_json_400() {
    let token_keys = TokenKeys::new(TokenKey::new("k", b"http-test-secret-01234").unwrap());
    let groups = Arc::new(GroupRegistry::new(GroupConfig::default()));
    let server = Server::builder(ServerConfig::default(), Arc::new(token_keys))
        .groups(groups.clone())
        .build();
    let app = push_api(PushApi::new(server, groups, ApiLimits::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    for request in [
        client
            .post(format!("http://{addr}/v1/push/groups/%A8room"))
            .header("content-type", "application/json")
            .body(r#"{"business":7,"payload_b64":"aGk="}"#),
        client.get(format!("http://{addr}/v1/groups/%FF%FE")),
    ] {
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        assert_eq!(status, 400, "{text}");
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(json["error"], "bad_request", "{json}");
    }
}

//! API keys on the push API (401 without or with a wrong key, other routes open), and
//! the JSON errors of issue 16: a body that is not JSON is 400 `bad_json` even when an
//! unknown field comes first, a wrong method is 405 with a JSON body.

use std::sync::Arc;

use axum::routing::get;
use longconn_core::{TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_http::{ApiKeys, ApiLimits, PushApi, push_api};
use longconn_server::{Server, ServerConfig};
use serde_json::{Value, json};

const SECRET: &str = "push-api-secret-0123456789";

async fn serve(keys: ApiKeys) -> String {
    let token_keys = TokenKeys::new(TokenKey::new("k", b"http-test-secret-01234").unwrap());
    let groups = Arc::new(GroupRegistry::new(GroupConfig::default()));
    let server = Server::builder(ServerConfig::default(), Arc::new(token_keys))
        .groups(groups.clone())
        .build();
    let api = PushApi::new(server, groups, ApiLimits::default()).with_api_keys(keys);
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(push_api(api));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn kick(base: &str, auth: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/kick"))
        .header("content-type", "application/json")
        .body(json!({"app": "a", "device": "d"}).to_string());
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let challenge = reply
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = reply.text().await.unwrap();
    (status, challenge, serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn a_call_without_a_valid_key_gets_401_and_healthz_stays_open() {
    let keys = ApiKeys::new()
        .with_key("ops", SECRET)
        .unwrap()
        .with_key("ci", "another-secret-of-16+")
        .unwrap();
    let base = serve(keys).await;
    for auth in [
        None,
        Some("Bearer wrong-secret-0123456789"),
        Some("Basic b3BzOnNlY3JldA=="),
        Some("Bearer"),
        Some(&*format!("Bearer {SECRET}x")),
    ] {
        let (status, challenge, body) = kick(&base, auth).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(challenge.unwrap().starts_with("Bearer"), "{auth:?}");
        assert_eq!(body["error"], "unauthorized", "{auth:?}");
        assert!(body["message"].is_string());
    }
    // A 401 comes before any look at the body or the method.
    let reply = reqwest::Client::new()
        .get(format!("{base}/v1/groups/g"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 401);

    for auth in [
        format!("Bearer {SECRET}"),
        "bearer another-secret-of-16+".into(),
    ] {
        let (status, _, body) = kick(&base, Some(&auth)).await;
        assert_eq!((status, &body), (200, &json!({"kicked": false})), "{auth}");
    }
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "healthz needs no key");
}

#[tokio::test]
async fn without_keys_the_api_is_open() {
    let base = serve(ApiKeys::new()).await;
    let (status, _, body) = kick(&base, None).await;
    assert_eq!((status, body), (200, json!({"kicked": false})));
}

#[tokio::test]
async fn not_json_is_400_and_a_wrong_method_is_405_json() {
    let base = serve(ApiKeys::new()).await;
    let http = reqwest::Client::new();
    // An unknown field first, then something that is not JSON: 400, not 422.
    for body in [
        r#"{"surprise": not json}"#,
        "{not json",
        "",
        r#"{"app": "a","#,
    ] {
        let reply = http
            .post(format!("{base}/v1/kick"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let json: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
        assert_eq!(
            (status, json["error"].as_str()),
            (400, Some("bad_json")),
            "{body:?}"
        );
    }
    // JSON of the wrong shape stays 422.
    let reply = http
        .post(format!("{base}/v1/kick"))
        .header("content-type", "application/json")
        .body(r#"{"surprise": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 422);

    let reply = http.get(format!("{base}/v1/kick")).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 405);
    assert_eq!(reply.headers().get("allow").unwrap(), "POST");
    let json: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
    assert_eq!(json["error"], "method_not_allowed");
    assert!(json["message"].is_string(), "{json}");
}

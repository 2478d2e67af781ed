//! Fuzzes the JSON bodies of the HTTP push API as the gateway serves it
//! (`longconn_gateway::http::router` over `longconn_http::push_api`, on an in-memory hub
//! with no connections): the input picks a route and is sent as the body with
//! `tower::ServiceExt::oneshot`, with an API key configured and presented. Bad input must
//! get a 4xx with the documented JSON error body (`{"error": "<code>", ...}`), never a
//! 5xx, and nothing may panic.
//!
//! Input layout: byte 0 = route (below), byte 1 = flags (bit 0: no `content-type`;
//! bit 1: a wrong API key; bit 2: the group id in the path comes from the body's first
//! bytes, percent-encoded), the rest = the body.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run http_json`.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use longconn_core::{TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry};
use longconn_http::{ApiKeys, ApiLimits, PushApi};
use longconn_server::{Server, ServerConfig};
use tower::ServiceExt;

const SECRET: &str = "fuzz-api-secret-0123456789";

/// Small limits, so that the body, batch and payload limits are reached often.
const LIMITS: ApiLimits = ApiLimits {
    max_payload: 256,
    max_batch: 8,
    max_body: 4096,
};

struct Target {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let router = runtime.block_on(async {
            let token_keys =
                TokenKeys::new(TokenKey::new("k", b"fuzz-token-secret-0123").expect("key"));
            let groups = Arc::new(GroupRegistry::new(GroupConfig::default()));
            let server = Server::builder(ServerConfig::default(), Arc::new(token_keys))
                .groups(groups.clone())
                .build();
            let keys = ApiKeys::new().with_key("ops", SECRET).expect("api key");
            let api = PushApi::new(server.clone(), groups, LIMITS).with_api_keys(keys);
            longconn_gateway::http::router(server, api)
        });
        Target { runtime, router }
    })
}

/// `bytes` as one path segment, every byte percent-encoded.
fn segment(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let (route, flags, body) = match data {
        [route, flags, rest @ ..] => (*route, *flags, rest),
        _ => return,
    };
    let group = match body.split_first() {
        Some((n, rest)) if flags & 4 != 0 => segment(&rest[..(*n as usize % 16).min(rest.len())]),
        _ => "room-1".to_owned(),
    };
    let (method, path) = match route % 5 {
        0 => (Method::POST, "/v1/push/devices".to_owned()),
        1 => (Method::POST, format!("/v1/push/groups/{group}")),
        2 => (Method::POST, "/v1/kick".to_owned()),
        3 => (Method::GET, format!("/v1/groups/{group}")),
        _ => (Method::POST, format!("/v1/groups/{group}")),
    };
    let mut request = Request::builder().method(method).uri(&path);
    if flags & 1 == 0 {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let key = if flags & 2 == 0 { SECRET } else { "wrong-secret-0123456789" };
    request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    let request = request
        .body(Body::from(body.to_vec()))
        .expect("a valid request");
    let target = target();
    let (status, bytes) = target.runtime.block_on(async {
        let response = target
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("the reply body");
        (status, bytes)
    });
    assert!(
        !status.is_server_error(),
        "{path}: {status} for a client's body: {}",
        String::from_utf8_lossy(&bytes)
    );
    // An empty group id leaves the API's routes: the gateway's JSON 404 answers it.
    if flags & 2 != 0 && !group.is_empty() {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: a wrong key");
    }
    if status.is_client_error() {
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: {status} without a JSON body ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert!(
            json["error"].is_string(),
            "{path}: {status} without an \"error\" code: {json}"
        );
    }
});

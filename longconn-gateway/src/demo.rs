//! The demo (`gateway --demo`, [`crate::GatewayBuilder::demo`]): a live room in the
//! browser, built on the TypeScript SDK (sdk/typescript).
//!
//! - `GET /demo/` on the HTTP listener serves the page; its files (`demo/` in this crate,
//!   the SDK's build in `demo/sdk/`) are embedded in the binary.
//! - `GET /demo/config` tells the page the WebSocket port, the app and the business id.
//! - `POST /demo/token` `{"device":"..."}` mints a login token for app `demo` with the
//!   gateway's signing key. Anyone who can reach the HTTP listener gets one: this is a
//!   development tool, and the gateway warns when it is on.
//! - `GET /demo/rooms/{group}` answers `{"group","members"}`: the cluster-wide member
//!   count, for the page's presence display.
//! - Business [`DEMO_BUSINESS`] ([`DemoBackend`]): a request whose metadata names a
//!   `group` the sender is in is published to that group (metadata `from` = the sender's
//!   device) and answered with the publish's position `{"seq","epoch","members"}`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use longconn_core::protocol::MAX_ID_LEN;
use longconn_core::{Metadata, TokenKeys};
use longconn_group::GroupRegistry;
use longconn_server::{Backend, BackendError, BackendReply, BackendRequest, PushMessage, Server};
use serde::Deserialize;
use serde_json::json;

/// Business id of the demo's room handler.
pub const DEMO_BUSINESS: u32 = 7;
/// The app id the demo mints tokens for.
pub const DEMO_APP: &str = "demo";
/// Lifetime of a demo token.
pub const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Largest message the demo handler publishes, in bytes.
pub const DEMO_MAX_MESSAGE: usize = 4096;

const INDEX_HTML: &str = include_str!("../demo/index.html");
const APP_JS: &str = include_str!("../demo/app.js");
const STYLE_CSS: &str = include_str!("../demo/style.css");
/// The SDK's build (sdk/typescript `npm run sync-demo`), served at `/demo/sdk/{name}`.
const SDK_FILES: [(&str, &str); 4] = [
    ("index.js", include_str!("../demo/sdk/index.js")),
    ("client.js", include_str!("../demo/sdk/client.js")),
    ("codec.js", include_str!("../demo/sdk/codec.js")),
    ("quality.js", include_str!("../demo/sdk/quality.js")),
];

/// The demo: its token keys, and once the gateway has started, its server, group
/// registry and WebSocket port. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Demo {
    inner: Arc<Inner>,
}

struct Inner {
    keys: TokenKeys,
    running: OnceLock<Running>,
}

struct Running {
    server: Server,
    groups: Arc<GroupRegistry>,
    ws: SocketAddr,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("ws", &self.inner.running.get().map(|r| r.ws))
            .finish_non_exhaustive()
    }
}

impl Demo {
    /// A demo that mints its tokens with `keys` (the gateway's own, so its logins verify).
    pub fn new(keys: TokenKeys) -> Demo {
        Demo {
            inner: Arc::new(Inner {
                keys,
                running: OnceLock::new(),
            }),
        }
    }

    /// The room handler, for business [`DEMO_BUSINESS`]. [`crate::GatewayBuilder::demo`]
    /// routes it when the builder assembles the router; a caller that gives its own
    /// router routes it there.
    pub fn backend(&self) -> DemoBackend {
        DemoBackend { demo: self.clone() }
    }

    /// Hands the demo the running parts; called once by the builder.
    pub(crate) fn attach(&self, server: Server, groups: Arc<GroupRegistry>, ws: SocketAddr) {
        let _ = self.inner.running.set(Running { server, groups, ws });
    }

    /// The `/demo` routes for the gateway's HTTP listener.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
            .route("/demo/", get(|| async { asset("text/html", INDEX_HTML) }))
            .route("/demo/app.js", get(|| async { asset(JS, APP_JS) }))
            .route(
                "/demo/style.css",
                get(|| async { asset("text/css", STYLE_CSS) }),
            )
            .route("/demo/sdk/{name}", get(sdk_file))
            .route("/demo/config", get(config))
            .route("/demo/token", post(token))
            .route("/demo/rooms/{group}", get(room))
            .with_state(self.clone())
    }
}

const JS: &str = "text/javascript";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(&format!("{content_type}; charset=utf-8"))
                    .unwrap_or(HeaderValue::from_static("text/plain")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn sdk_file(Path(name): Path<String>) -> Response {
    match SDK_FILES.iter().find(|(file, _)| *file == name) {
        Some((_, body)) => asset(JS, body),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such file"),
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

fn not_running() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the gateway is starting",
    )
}

async fn config(State(demo): State<Demo>) -> Response {
    let Some(running) = demo.inner.running.get() else {
        return not_running();
    };
    Json(json!({
        "app": DEMO_APP,
        "business": DEMO_BUSINESS,
        "ws_port": running.ws.port(),
        "ws_path": "/ws",
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    device: String,
}

async fn token(
    State(demo): State<Demo>,
    request: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(request)) = request else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_json",
            "expected {\"device\": \"...\"}",
        );
    };
    if request.device.is_empty() || request.device.len() > MAX_ID_LEN {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`device` must be 1 to {MAX_ID_LEN} bytes"),
        );
    }
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + DEMO_TOKEN_TTL.as_secs();
    let token = demo.inner.keys.mint(DEMO_APP, &request.device, expires);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "app": DEMO_APP,
            "device": request.device,
            "token": token,
            "expires_at_unix_s": expires,
        })),
    )
        .into_response()
}

async fn room(State(demo): State<Demo>, Path(group): Path<String>) -> Response {
    let Some(running) = demo.inner.running.get() else {
        return not_running();
    };
    if group.is_empty() || group.len() > MAX_ID_LEN {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the group id must be 1 to {MAX_ID_LEN} bytes"),
        );
    }
    let presence = running.server.group_presence(&group).await;
    Json(json!({
        "group": group,
        "members": presence.members(),
        "complete": !presence.remote.incomplete,
    }))
    .into_response()
}

/// The demo's room handler (business [`DEMO_BUSINESS`]): publishes each request's
/// payload to the group its metadata names.
#[derive(Clone, Debug)]
pub struct DemoBackend {
    demo: Demo,
}

#[async_trait]
impl Backend for DemoBackend {
    async fn call(&self, request: BackendRequest) -> Result<BackendReply, BackendError> {
        let Some(running) = self.demo.inner.running.get() else {
            return Err(BackendError::failed("the gateway is starting"));
        };
        let group = request
            .meta
            .get("group")
            .and_then(|g| std::str::from_utf8(g).ok())
            .filter(|g| !g.is_empty())
            .ok_or_else(|| BackendError::failed("the demo needs the metadata entry `group`"))?;
        if request.payload.len() > DEMO_MAX_MESSAGE {
            return Err(BackendError::failed(format!(
                "a demo message is at most {DEMO_MAX_MESSAGE} bytes"
            )));
        }
        if !running
            .groups
            .groups_of(request.conn_id)
            .iter()
            .any(|g| g == group)
        {
            return Err(BackendError::failed(format!(
                "join `{group}` before sending to it"
            )));
        }
        let meta = Metadata::from_pairs([("from", request.device.device().as_bytes())])
            .map_err(|e| BackendError::failed(e.to_string()))?;
        let message = PushMessage {
            business: DEMO_BUSINESS,
            meta,
            payload: request.payload,
        };
        let report = running
            .groups
            .publish(group, &message)
            .await
            .map_err(|e| BackendError::failed(format!("publish failed: {e}")))?;
        let reply = json!({
            "seq": report.seq.to_string(),
            "epoch": report.epoch.to_string(),
            "members": report.members,
        });
        Ok(BackendReply {
            meta: Metadata::new(),
            payload: Bytes::from(reply.to_string()),
        })
    }
}

//! The push HTTP API, as an axum [`Router`] over a [`PushApi`].
//!
//! | method and path | body | reply |
//! |---|---|---|
//! | `POST /v1/push/devices` | `{"app","business","devices":[..],"payload_b64"}` or `{"app","business","messages":[{"device","payload_b64"}]}`, optional `"meta":{"k":"v"}` | `{"queued":n,"offline":[..],"dropped":[..],"unknown":[..]}` |
//! | `POST /v1/push/groups/{group}` | `{"business","payload_b64"}`, optional `"meta"` | `{"members":n,"queued":n,"dropped":n,"remote_nodes":n,"unknown_nodes":n,"seq":s,"epoch":e}` |
//! | `GET /v1/groups/{group}` | | `{"group":g,"members":n,"local_members":n,"remote_nodes":n,"unknown_nodes":n}` |
//! | `POST /v1/kick` | `{"app","device","reason"}` (`reason` optional) | `{"kicked":true,"conn_id":n}` (connected here), `{"kicked":true}` (kicked on the node holding it, through the relay), `{"kicked":false}` (not connected) or `{"kicked":false,"unknown":true}` (its node did not answer in time) |
//!
//! In a device push reply, `queued` counts pushes queued on this node or on the node
//! holding the device (through the server's relay); `offline` lists devices with no
//! connection; `dropped` devices whose queue was full; `unknown` devices on another node
//! that did not answer in time (maybe queued, maybe not: never counted as delivered; the
//! field is left out when empty, as it always is on a single node).
//! A group push reply counts members here and on the `remote_nodes` other nodes that
//! answered; `unknown_nodes` did not answer in time.
//! A presence reply's `members` is the cluster-wide count: `local_members` on this node
//! plus the members of the `remote_nodes` other nodes with members that answered (the
//! server's relay; 0 and 0 on a single node); `unknown_nodes` did not answer in time and
//! their members are not counted.
//!
//! Every error is a JSON body `{"error":"<code>","message":"<detail>"}`:
//!
//! | status | `error` | when |
//! |---|---|---|
//! | 400 | `bad_json` | the body is not JSON |
//! | 422 | `bad_json` | the body is JSON of the wrong shape (a missing or unknown field, a wrong type) |
//! | 400 | `bad_request` | both or neither of `devices` and `messages`; an empty app or device; a bad group id; bad metadata |
//! | 400 | `bad_base64` | a payload is not standard base64 |
//! | 413 | `payload_too_large` | a payload over [`ApiLimits::max_payload`], a batch over [`ApiLimits::max_batch`], or a body over [`ApiLimits::max_body`] |
//! | 415 | `bad_json` | the request is not `content-type: application/json` |
//! | 401 | `unauthorized` | API keys are configured ([`PushApi::with_api_keys`]) and the request has none, or a wrong one (`Authorization: Bearer <secret>`); the reply has `WWW-Authenticate: Bearer` |
//! | 405 | `method_not_allowed` | a known path with the wrong method; the reply has an `Allow` header |
//! | 503 | `cluster_unavailable` | device push: some devices are not connected to this node and the cluster's route store (Redis) cannot be reached; devices connected here were pushed. The body has `"retry_after_ms"` and the reply a `Retry-After` header ([`CLUSTER_RETRY_AFTER`]); counted by [`PushApi::cluster_unavailable`] |
//! | 503 | `cluster_unavailable` | presence: the cluster could not say which nodes hold members of the group (Redis unreachable, or no answer within the server's relay timeout); with `"retry_after_ms"` and `Retry-After` |
//! | 503 | `unavailable` | the route store failed (kick), or the group log failed (group push) |
//! | 503 | `group_saturated` | a group push, when the group's fan-out is saturated here (its members' queues hold `GroupConfig::max_group_backlog` pushes, or `max_pending_publishes` publishes to it are waiting): nothing was sent and no `seq` was used. The reply has a `Retry-After` header (whole seconds, rounded up) and `"retry_after_ms"` in the body; other groups are unaffected |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use longconn_core::{Code, Metadata, Text};
use longconn_group::GroupRegistry;
use longconn_server::{PushMessage, RelayResult, Server, Target};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{ApiKeys, require_api_key};

/// Request-size limits of the push API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest decoded payload. Default 60 KiB, which leaves room for the frame's
    /// header and fields inside the default 64 KiB frame.
    pub max_payload: usize,
    /// Most devices (or messages) in one batched push. Default 10,000.
    pub max_batch: usize,
    /// Largest request body. Default 16 MiB.
    pub max_body: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_payload: 60 * 1024,
            max_batch: 10_000,
            max_body: 16 << 20,
        }
    }
}

/// The retry hint of a `cluster_unavailable` reply: 1 s, about how long a node takes to
/// notice that Redis is back (its connection reconnects on the next call, with a 2 s
/// connection timeout).
pub const CLUSTER_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What the API works on: the server's push API and hub, and the group registry.
#[derive(Debug, Clone)]
pub struct PushApi {
    server: Server,
    groups: Arc<GroupRegistry>,
    limits: ApiLimits,
    /// Device pushes refused with `cluster_unavailable`.
    cluster_unavailable: Arc<AtomicU64>,
    /// The keys a caller must present; empty: the API is open.
    api_keys: ApiKeys,
}

impl PushApi {
    /// The API for `server` and `groups` with `limits`.
    pub fn new(server: Server, groups: Arc<GroupRegistry>, limits: ApiLimits) -> PushApi {
        PushApi {
            server,
            groups,
            limits,
            cluster_unavailable: Arc::new(AtomicU64::new(0)),
            api_keys: ApiKeys::new(),
        }
    }

    /// Requires one of `keys` on every route of [`push_api`] (`Authorization: Bearer
    /// <secret>`; see [`crate::auth`]). Empty keys (the default): the API is open.
    #[must_use]
    pub fn with_api_keys(mut self, keys: ApiKeys) -> PushApi {
        self.api_keys = keys;
        self
    }

    /// The keys the API requires (empty: none).
    pub fn api_keys(&self) -> &ApiKeys {
        &self.api_keys
    }

    /// Device pushes refused with `cluster_unavailable` (503) since the API was made:
    /// the cluster's route store could not be reached.
    pub fn cluster_unavailable(&self) -> u64 {
        self.cluster_unavailable.load(Ordering::Relaxed)
    }
}

/// The routes of the [module docs](self), ready to serve or to merge into a bigger router.
///
/// With API keys ([`PushApi::with_api_keys`]) every route needs one (401 otherwise);
/// the layer covers these routes only, so routes merged next to them (`/healthz`) stay
/// open. A wrong method gets 405 with a JSON body ([`json_method_not_allowed`]).
pub fn push_api(api: PushApi) -> Router {
    let max_body = api.limits.max_body;
    let keys = api.api_keys.clone();
    Router::new()
        .route("/v1/push/devices", post(push_devices))
        .route("/v1/push/groups/{group}", post(push_group))
        .route("/v1/groups/{group}", get(group_presence))
        .route("/v1/kick", post(kick))
        .route_layer(axum::middleware::from_fn(crate::metrics::record))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::map_response(json_method_not_allowed))
        .route_layer(axum::middleware::from_fn_with_state(keys, require_api_key))
        .with_state(api)
}

/// Gives a bodiless 405 (axum's answer to a wrong method) the JSON error body
/// `{"error":"method_not_allowed",...}`, keeping its `Allow` header; any other response
/// passes unchanged. Usable as `axum::middleware::map_response` on any router.
pub async fn json_method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let body = json!({
        "error": "method_not_allowed",
        "message": "this endpoint does not take this method (the Allow header lists those it takes)",
    });
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

/// A JSON error reply.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A retry hint: `"retry_after_ms"` in the body and a `Retry-After` header.
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        let Some(retry_after) = self.retry_after else {
            return (self.status, Json(body)).into_response();
        };
        body["retry_after_ms"] = json!(retry_after.as_millis() as u64);
        // `Retry-After` counts whole seconds: round up.
        let seconds = retry_after.as_millis().div_ceil(1000).max(1).to_string();
        (
            self.status,
            [(axum::http::header::RETRY_AFTER, seconds)],
            Json(body),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The `{group}` path segment. One that does not decode (percent-encoded bytes that are
/// not UTF-8) is 400 `bad_request` with the JSON error body like any other bad group id;
/// axum's own `Path` rejection is a plain-text body (found by the http_json fuzz target).
#[derive(Debug)]
struct GroupPath(String);

impl<S: Send + Sync> FromRequestParts<S> for GroupPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(group)) => Ok(GroupPath(group)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "bad group id in the path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A JSON request body of shape `T`, read in two steps so that the documented statuses
/// hold: not `application/json` is 415, a body over the limit 413, a body that is not
/// JSON at all 400 `bad_json` (checked first: with `deny_unknown_fields` a one-step
/// parse meets an unknown field before a syntax error further on and said 422), JSON of
/// the wrong shape 422 `bad_json`.
#[derive(Debug)]
struct Body<T>(T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json_type = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_json",
                "expected `content-type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|e| {
            let status = e.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "bad_request"
            };
            ApiError::new(status, code, e.body_text())
        })?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("the body is not JSON: {e}"),
            )
        })?;
        serde_json::from_value(value).map(Body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_json",
                format!("the body has the wrong shape: {e}"),
            )
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesPush {
    app: String,
    business: u32,
    #[serde(default)]
    devices: Option<Vec<String>>,
    #[serde(default)]
    payload_b64: Option<String>,
    #[serde(default)]
    messages: Option<Vec<DeviceMessage>>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceMessage {
    device: String,
    payload_b64: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupPush {
    business: u32,
    payload_b64: String,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kick {
    app: String,
    device: String,
    #[serde(default)]
    reason: Option<String>,
}

impl PushApi {
    fn payload(&self, b64: &str, what: &str) -> Result<Bytes, ApiError> {
        let payload = STANDARD.decode(b64).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_base64",
                format!("{what}: {e}"),
            )
        })?;
        if payload.len() > self.limits.max_payload {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "{what}: {} bytes, the limit is {}",
                    payload.len(),
                    self.limits.max_payload
                ),
            ));
        }
        Ok(payload.into())
    }

    fn check_batch(&self, len: usize) -> Result<(), ApiError> {
        if len > self.limits.max_batch {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("{len} devices, the limit is {}", self.limits.max_batch),
            ));
        }
        Ok(())
    }
}

fn metadata(meta: &BTreeMap<String, String>) -> Result<Metadata, ApiError> {
    Metadata::from_pairs(meta.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))
        .map_err(|e| ApiError::bad_request(format!("meta: {e}")))
}

/// A push that failed for a reason the caller could not have avoided.
fn push_failed(err: longconn_server::Error) -> ApiError {
    match err {
        longconn_server::Error::Encode(longconn_core::EncodeError::FrameTooLarge { .. }) => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                err.to_string(),
            )
        }
        longconn_server::Error::RouteStore(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        ),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// A device push that failed: a route store failure is the cluster being unreachable
/// (devices here were pushed; the others could not be looked up), counted.
fn device_push_failed(api: &PushApi, err: longconn_server::Error) -> ApiError {
    match err {
        longconn_server::Error::RouteStore(err) => {
            api.cluster_unavailable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, "device push refused: cluster unavailable");
            ApiError {
                retry_after: Some(CLUSTER_RETRY_AFTER),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cluster_unavailable",
                    format!(
                        "the cluster's route store cannot be reached, so devices not \
                         connected to this node could not be looked up (devices connected \
                         here were pushed): {err}"
                    ),
                )
            }
        }
        other => push_failed(other),
    }
}

async fn push_devices(State(api): State<PushApi>, Body(request): Body<DevicesPush>) -> ApiResult {
    if request.app.is_empty() {
        return Err(ApiError::bad_request("`app` is empty"));
    }
    let meta = metadata(&request.meta)?;
    let pusher = api.server.pusher();
    let report = match (request.devices, request.payload_b64, request.messages) {
        (Some(devices), Some(payload_b64), None) => {
            api.check_batch(devices.len())?;
            if devices.iter().any(String::is_empty) {
                return Err(ApiError::bad_request("a device id is empty"));
            }
            let message = PushMessage {
                business: request.business,
                meta,
                payload: api.payload(&payload_b64, "payload_b64")?,
            };
            pusher
                .push_devices(&request.app, &devices, &message)
                .await
                .map_err(|e| device_push_failed(&api, e))?
        }
        (None, None, Some(messages)) => {
            api.check_batch(messages.len())?;
            let mut batch = Vec::with_capacity(messages.len());
            for (i, m) in messages.into_iter().enumerate() {
                if m.device.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "messages[{i}]: empty device"
                    )));
                }
                let payload = api.payload(&m.payload_b64, &format!("messages[{i}]"))?;
                let message = PushMessage {
                    business: request.business,
                    meta: meta.clone(),
                    payload,
                };
                batch.push((m.device, message));
            }
            pusher
                .push_each(&request.app, &batch)
                .await
                .map_err(|e| device_push_failed(&api, e))?
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either `devices` with `payload_b64`, or `messages`",
            ));
        }
    };
    // One shape on one node and in a cluster (`unknown` is empty on a single node), as
    // the group reply always carries `remote_nodes` and `unknown_nodes`.
    Ok(Json(json!({
        "queued": report.queued,
        "offline": report.offline,
        "dropped": report.dropped,
        "unknown": report.unknown,
    })))
}

async fn push_group(
    State(api): State<PushApi>,
    GroupPath(group): GroupPath,
    Body(request): Body<GroupPush>,
) -> Result<Json<Value>, Response> {
    let message = PushMessage {
        business: request.business,
        meta: metadata(&request.meta).map_err(IntoResponse::into_response)?,
        payload: api
            .payload(&request.payload_b64, "payload_b64")
            .map_err(IntoResponse::into_response)?,
    };
    check_group(&api, &group).map_err(IntoResponse::into_response)?;
    let report = api
        .groups
        .publish(&group, &message)
        .await
        .map_err(|e| match e {
            longconn_group::Error::Saturated { retry_after, .. } => {
                group_saturated(&e.to_string(), retry_after)
            }
            longconn_group::Error::Encode(e) => push_failed(e.into()).into_response(),
            longconn_group::Error::Log(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
            .into_response(),
            other => ApiError::bad_request(other.to_string()).into_response(),
        })?;
    Ok(Json(json!({
        "members": report.members,
        "queued": report.queued,
        "dropped": report.dropped,
        "remote_nodes": report.remote_nodes,
        "unknown_nodes": report.unknown_nodes,
        "seq": report.seq,
        "epoch": report.epoch,
    })))
}

/// 503 `group_saturated` with the retry hint: `Retry-After` in whole seconds (rounded
/// up, as the header has no finer unit) and `retry_after_ms` in the body.
fn group_saturated(message: &str, retry_after: std::time::Duration) -> Response {
    let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
    let body = json!({"error": "group_saturated", "message": message, "retry_after_ms": ms});
    let seconds = ms.div_ceil(1000).max(1).to_string();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, seconds)],
        Json(body),
    )
        .into_response()
}

fn check_group(api: &PushApi, group: &str) -> Result<(), ApiError> {
    let max = api.groups.config().max_group_id_len();
    if group.is_empty() || group.len() > max {
        return Err(ApiError::bad_request(format!(
            "group id must be 1 to {max} bytes"
        )));
    }
    Ok(())
}

/// The group's members across the cluster: this node's plus those of every other node
/// with members that answered in time. `unknown_nodes` did not answer (their members are
/// not counted). If the cluster could not say which nodes hold members, the count would
/// be a guess: 503 `cluster_unavailable` instead.
async fn group_presence(State(api): State<PushApi>, GroupPath(group): GroupPath) -> ApiResult {
    check_group(&api, &group)?;
    let presence = api.server.group_presence(&group).await;
    if presence.remote.incomplete {
        tracing::warn!(group, "presence refused: cluster unavailable");
        return Err(ApiError {
            retry_after: Some(CLUSTER_RETRY_AFTER),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!(
                    "the cluster could not say which nodes hold members of the group \
                     ({} members on this node)",
                    presence.local_members
                ),
            )
        });
    }
    Ok(Json(json!({
        "group": group,
        "members": presence.members(),
        "local_members": presence.local_members,
        "remote_nodes": presence.remote.nodes,
        "unknown_nodes": presence.remote.unknown_nodes,
    })))
}

async fn kick(State(api): State<PushApi>, Body(request): Body<Kick>) -> ApiResult {
    if request.app.is_empty() || request.device.is_empty() {
        return Err(ApiError::bad_request("`app` and `device` are required"));
    }
    let reason = request
        .reason
        .unwrap_or_else(|| "kicked by an operator".into());
    if reason.len() > longconn_core::protocol::MAX_MESSAGE_LEN {
        return Err(ApiError::bad_request(format!(
            "`reason` is longer than {} bytes",
            longconn_core::protocol::MAX_MESSAGE_LEN
        )));
    }
    if let Some(conn) = api.server.hub().find_device(&request.app, &request.device) {
        let kicked = conn.kick(Code::Kicked, Text::from(reason));
        return Ok(Json(json!({"kicked": kicked, "conn_id": conn.id()})));
    }
    // Not here: wherever its route says, through the relay.
    let target = Target::Device {
        app: &request.app,
        device: &request.device,
    };
    let kicked = api
        .server
        .pusher()
        .kick(target, Code::Kicked, &reason)
        .await
        .map_err(push_failed)?;
    Ok(Json(match kicked {
        RelayResult::Queued => json!({"kicked": true}),
        RelayResult::Offline | RelayResult::Dropped => json!({"kicked": false}),
        RelayResult::Unknown => json!({"kicked": false, "unknown": true}),
    }))
}

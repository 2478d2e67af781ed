//! The HTTP API's JSON shapes and its errors (docs/CONTROL.md, "API").
//!
//! Every failure is answered with a 4xx or 503 status and a body
//! `{"error": {"code": "<code>", "message": "<detail>"}}`, where `code` is one of
//! [`ErrorCode`]'s documented names.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::nodes::Transport;
use crate::rules::Network;
use crate::select::Endpoint;

/// `POST /v1/access` body. Unknown fields are ignored (newer SDKs may send more).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessRequest {
    /// App id; must be one of the config's `apps`.
    pub app: String,
    /// Device id, 1..=128 bytes.
    pub device: String,
    /// Platform (`ios`, `android`, `web`, ...), 1..=32 bytes; compared lowercase.
    pub platform: String,
    /// App version (`2.3.1`).
    pub app_version: String,
    /// SDK version (`0.1.0`).
    pub sdk_version: String,
    /// Network type. Default `unknown`.
    #[serde(default)]
    pub network: Network,
    /// The client's last measured quality per transport, if it has any.
    #[serde(default)]
    pub quality: BTreeMap<Transport, ProtocolQuality>,
}

/// Quality the client measured over one transport.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProtocolQuality {
    /// Share of connect attempts that ended logged in, 0..=1.
    #[serde(default)]
    pub connect_success_rate: Option<f64>,
    /// Share of heartbeats answered, 0..=1.
    #[serde(default)]
    pub ping_success_rate: Option<f64>,
    /// Median heartbeat round trip, ms.
    #[serde(default)]
    pub rtt_ms: Option<u32>,
}

/// Reconnect delays the client must use: attempt `n` waits a uniformly random time in
/// `[0, min(cap, base * 2^n)]` (full jitter).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// First window, ms.
    pub base_ms: u64,
    /// Largest window, ms.
    pub cap_ms: u64,
    /// The jitter kind; `full` (the only one so far).
    pub jitter: String,
}

/// `POST /v1/access` answer.
#[derive(Debug, Clone, Serialize)]
pub struct AccessAnswer {
    /// Endpoints in the order to try them.
    pub endpoints: Vec<Endpoint>,
    /// Login token (`lc2`, carries `bucket`).
    pub token: String,
    /// Token expiry, Unix seconds.
    pub expires_at_unix_s: u64,
    /// Longest heartbeat interval to use, ms.
    pub heartbeat_ms: u64,
    /// Reconnect delays.
    pub reconnect: ReconnectPolicy,
    /// Failed connects in a row after which the client asks `/v1/access` again.
    pub reaccess_after_failures: u32,
    /// The rule the device fell into (`default` if none).
    pub bucket: String,
    /// The rule's flags.
    pub flags: BTreeMap<String, String>,
    /// Version of the rules that answered.
    pub rules_version: u64,
}

/// `POST /v1/token/refresh` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// A token issued by this control layer (or any holder of its keys), still valid.
    pub token: String,
}

/// `POST /v1/token/refresh` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshAnswer {
    /// The new token: same app, device and bucket, signed by the current signing key.
    pub token: String,
    /// Its expiry, Unix seconds.
    pub expires_at_unix_s: u64,
}

/// The documented error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the body is not JSON.
    MalformedJson,
    /// 422: a field is missing, of the wrong type, or out of range.
    InvalidRequest,
    /// 404: the app is not served here.
    UnknownApp,
    /// 401: the token is malformed, forged or signed by an unknown key.
    InvalidToken,
    /// 401: the token has expired.
    ExpiredToken,
    /// 413: the body is larger than `limits.max_body_bytes`.
    BodyTooLarge,
    /// 429: the client IP is over its rate limit; see `Retry-After`.
    RateLimited,
    /// 503: no live node offers a transport the device may use.
    NoEndpoints,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
}

impl ErrorCode {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownApp => "unknown_app",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NoEndpoints => "no_endpoints",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::UnknownApp | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidToken | ErrorCode::ExpiredToken => StatusCode::UNAUTHORIZED,
            ErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// Which.
    pub code: ErrorCode,
    /// Detail for humans.
    pub message: String,
    /// For `rate_limited`: when to come back.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A JSON body that did not deserialize: syntax errors are `malformed_json`, a
    /// missing or mistyped field `invalid_request`.
    pub(crate) fn from_json(err: &serde_json::Error) -> ApiError {
        let code = match err.classify() {
            serde_json::error::Category::Data => ErrorCode::InvalidRequest,
            _ => ErrorCode::MalformedJson,
        };
        ApiError::new(code, err.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'static str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str(),
                message: &self.message,
            },
        })
        .unwrap_or_default();
        let mut response = (
            self.code.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

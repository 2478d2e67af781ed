//! [`Control`]: the control layer's state (the policy in force, the node source, the rate
//! limiter), its request logic ([`Control::access`], [`Control::refresh`]) and its axum
//! [`Control::router`].
//!
//! The policy is an `Arc<Policy>` behind a lock held only to clone or swap the `Arc`: a
//! request takes the policy once and answers entirely from it, so a reload never changes
//! an answer halfway and never waits for requests (nor they for it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::api::{
    AccessAnswer, AccessRequest, ApiError, ErrorCode, ReconnectPolicy, RefreshAnswer,
    RefreshRequest,
};
use crate::config::{ControlConfig, DefaultRule, Policy, RuleConfig, now_ms};
use crate::error::{ConfigError, Error, Result};
use crate::nodes::{Node, NodeSource};
use crate::ratelimit::RateLimiter;
use crate::rules::{DeviceFacts, Version};
use crate::select::{SelectLimits, select};

/// The control layer. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: RwLock<Arc<Policy>>,
    /// `None`: the policy's static `[[nodes]]`.
    nodes: Option<Arc<dyn NodeSource>>,
    limiter: RateLimiter,
    max_body_bytes: usize,
    /// The config file, for reloads.
    path: Option<PathBuf>,
    last_reload_error: Mutex<Option<ReloadError>>,
    /// Held while a reload parses and swaps.
    reloading: Mutex<()>,
}

/// The last refused reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadError {
    /// When, Unix ms.
    pub at_ms: u64,
    /// Why (the line and field).
    pub error: String,
}

impl Control {
    /// A control layer answering with `policy`. Settings read at start only (rate limit,
    /// body limit) come from it now.
    pub fn new(policy: Policy) -> Control {
        let cfg = policy.config.clone();
        Control {
            inner: Arc::new(Inner {
                limiter: RateLimiter::new(
                    cfg.rate_limit.per_second,
                    cfg.rate_limit.burst,
                    cfg.rate_limit.max_tracked_ips,
                ),
                max_body_bytes: cfg.limits.max_body_bytes,
                policy: RwLock::new(Arc::new(policy)),
                nodes: None,
                path: None,
                last_reload_error: Mutex::new(None),
                reloading: Mutex::new(()),
            }),
        }
    }

    /// The embedded defaults (`ControlConfig::default()`).
    pub fn embedded() -> Control {
        Control::new(Policy::embedded())
    }

    /// Loads `path`; [`Control::reload`] reads it again.
    pub fn from_file(path: &Path) -> Result<Control> {
        let policy = load_file(path, 1)?;
        let mut control = Control::new(policy);
        Arc::get_mut(&mut control.inner)
            .expect("not shared yet")
            .path = Some(path.to_owned());
        Ok(control)
    }

    /// Takes nodes from `source` (a [`crate::RegistryNodes`], say) instead of the
    /// config's `[[nodes]]`. Call before cloning or serving.
    pub fn with_node_source(mut self, source: Arc<dyn NodeSource>) -> Control {
        Arc::get_mut(&mut self.inner)
            .expect("with_node_source is called before the control layer is shared")
            .nodes = Some(source);
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Parses and validates `text`; if it is good, it replaces the policy in force
    /// (version + 1) and the new version is returned. Text identical to the text in
    /// force (same digest) changes nothing and returns the version in force. If not, the policy in force stays
    /// and the error is returned (and shown by `GET /v1/rules`).
    pub fn reload_text(&self, text: &str, source: &str) -> Result<u64, ConfigError> {
        // One reload at a time; requests only wait for the pointer swap, never for the
        // parse.
        let _reloading = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let current = self.policy();
        if current.digest == crate::config::digest(text) {
            *self.last_error() = None;
            return Ok(current.version);
        }
        let version = current.version + 1;
        match ControlConfig::load(text, version, source) {
            Ok(policy) => {
                *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
                *self.last_error() = None;
                Ok(version)
            }
            Err(err) => {
                *self.last_error() = Some(ReloadError {
                    at_ms: now_ms(),
                    error: err.to_string(),
                });
                Err(err)
            }
        }
    }

    /// Reads the config file again (see [`Control::reload_text`]). Without a file (the
    /// embedded defaults) there is nothing to reload and the version in force is
    /// returned.
    pub fn reload(&self) -> Result<u64> {
        let Some(path) = &self.inner.path else {
            return Ok(self.policy().version);
        };
        let text = std::fs::read_to_string(path).map_err(|source| {
            let err = Error::Read {
                path: path.display().to_string(),
                source,
            };
            *self.last_error() = Some(ReloadError {
                at_ms: now_ms(),
                error: err.to_string(),
            });
            err
        })?;
        self.reload_text(&text, &path.display().to_string())
            .map_err(|source| Error::Config {
                path: path.display().to_string(),
                source,
            })
    }

    /// The config file, if the control layer was loaded from one.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The last refused reload, if the last attempt was refused.
    pub fn last_reload_error(&self) -> Option<ReloadError> {
        self.last_error().clone()
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<ReloadError>> {
        self.inner
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn nodes(&self, policy: &Policy) -> Arc<[Node]> {
        match &self.inner.nodes {
            Some(source) => source.nodes(),
            None => policy.static_nodes.nodes(),
        }
    }

    /// Answers an access request at `now_unix_s` (no rate limit: that is the HTTP
    /// layer's).
    pub fn access(&self, req: &AccessRequest, now_unix_s: u64) -> Result<AccessAnswer, ApiError> {
        let policy = self.policy();
        let invalid = |field: &str, why: &str| {
            ApiError::new(ErrorCode::InvalidRequest, format!("field `{field}`: {why}"))
        };
        if !(1..=128).contains(&req.device.len()) {
            return Err(invalid("device", "must be 1..=128 bytes"));
        }
        if !(1..=32).contains(&req.platform.len()) {
            return Err(invalid("platform", "must be 1..=32 bytes"));
        }
        let version = |field: &str, text: &str| {
            text.parse::<Version>()
                .map_err(|why| invalid(field, why.as_str()))
        };
        let app_version = version("app_version", &req.app_version)?;
        let sdk_version = version("sdk_version", &req.sdk_version)?;
        if !policy.apps.contains(&req.app) {
            return Err(ApiError::new(
                ErrorCode::UnknownApp,
                format!("app `{}` is not served here", req.app),
            ));
        }
        let platform = req.platform.to_ascii_lowercase();
        let facts = DeviceFacts {
            app: &req.app,
            device: &req.device,
            platform: &platform,
            app_version,
            sdk_version,
            network: req.network,
        };
        let outcome = policy.rules.decide(&facts);
        let cfg = &policy.config;
        let min_rate = cfg.quality.min_connect_success_rate;
        let demoted = |t| {
            req.quality
                .get(&t)
                .and_then(|q| q.connect_success_rate)
                .is_some_and(|rate| rate < min_rate)
        };
        let nodes = self.nodes(&policy);
        let endpoints = select(
            &nodes,
            outcome,
            &req.device,
            demoted,
            SelectLimits {
                max_nodes: cfg.limits.max_nodes,
                max_endpoints: cfg.limits.max_endpoints,
                load_smoothing: cfg.limits.load_smoothing,
            },
        );
        if endpoints.is_empty() {
            return Err(ApiError::new(
                ErrorCode::NoEndpoints,
                format!(
                    "no live node offers {:?} to bucket `{}`",
                    outcome.transports, outcome.bucket
                ),
            ));
        }
        let expires_at_unix_s = now_unix_s + policy.token_ttl.as_secs();
        let token = policy
            .keys
            .mint_in_bucket(&req.app, &req.device, expires_at_unix_s, &outcome.bucket)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
        Ok(AccessAnswer {
            endpoints,
            token,
            expires_at_unix_s,
            heartbeat_ms: cfg.client.heartbeat_ms,
            reconnect: ReconnectPolicy {
                base_ms: cfg.client.reconnect_base_ms,
                cap_ms: cfg.client.reconnect_cap_ms,
                jitter: "full".to_owned(),
            },
            reaccess_after_failures: cfg.client.reaccess_after_failures,
            bucket: outcome.bucket.clone(),
            flags: outcome.flags.clone(),
            rules_version: policy.version,
        })
    }

    /// Exchanges a still-valid token for a new one (same app, device and bucket; signed
    /// with the current signing key; a fresh lifetime).
    pub fn refresh(&self, token: &str, now_unix_s: u64) -> Result<RefreshAnswer, ApiError> {
        let policy = self.policy();
        let claims = policy
            .keys
            .verify(token.as_bytes(), now_unix_s)
            .map_err(|e| match e {
                longconn_core::TokenError::Expired { .. } => {
                    ApiError::new(ErrorCode::ExpiredToken, e.to_string())
                }
                _ => ApiError::new(ErrorCode::InvalidToken, e.to_string()),
            })?;
        if !policy.apps.contains(&claims.app) {
            return Err(ApiError::new(
                ErrorCode::UnknownApp,
                format!("app `{}` is not served here", claims.app),
            ));
        }
        let expires_at_unix_s = now_unix_s + policy.token_ttl.as_secs();
        let bucket = claims.bucket.as_deref().unwrap_or("default");
        let token = policy
            .keys
            .mint_in_bucket(&claims.app, &claims.device, expires_at_unix_s, bucket)
            .map_err(|e| ApiError::new(ErrorCode::InvalidToken, e.to_string()))?;
        Ok(RefreshAnswer {
            token,
            expires_at_unix_s,
        })
    }

    /// The HTTP API: `POST /v1/access`, `POST /v1/token/refresh`, `GET /v1/rules`,
    /// `GET /healthz`. Serve it with connect info (`into_make_service_with_connect_info::
    /// <SocketAddr>()`, as [`Control::serve`] does) so the rate limit sees client IPs;
    /// without it every client shares one bucket.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/access", post(access))
            .route("/v1/token/refresh", post(refresh))
            .route("/v1/rules", get(rules))
            .route("/healthz", get(healthz))
            .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
            .method_not_allowed_fallback(|| async {
                ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed here")
            })
            .layer(DefaultBodyLimit::max(self.inner.max_body_bytes))
            .with_state(self.clone())
    }

    /// Serves the API on `listener` until `shutdown` completes; requests in flight are
    /// finished first (axum's graceful shutdown).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future drops open connections. Use `shutdown`.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(
            listener,
            self.router()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}

fn load_file(path: &Path, version: u64) -> Result<Policy> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    ControlConfig::load(&text, version, &shown).map_err(|source| Error::Config {
        path: shown,
        source,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The client's IP from the connect info, or 0.0.0.0 when the router is served without
/// it.
#[derive(Debug, Clone, Copy)]
struct ClientIp(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

fn body_error(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::BodyTooLarge, rejection.body_text())
    } else {
        ApiError::new(ErrorCode::MalformedJson, rejection.body_text())
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).unwrap_or_default(),
    )
        .into_response()
}

async fn access(
    State(control): State<Control>,
    ClientIp(ip): ClientIp,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if let Err(retry_after) = control.inner.limiter.check(ip, Instant::now()) {
        return Err(ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests from {ip}"),
            )
        });
    }
    let body = body.map_err(|r| body_error(&r))?;
    let req: AccessRequest = serde_json::from_slice(&body).map_err(|e| ApiError::from_json(&e))?;
    Ok(json(&control.access(&req, unix_now())?))
}

async fn refresh(
    State(control): State<Control>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| body_error(&r))?;
    let req: RefreshRequest = serde_json::from_slice(&body).map_err(|e| ApiError::from_json(&e))?;
    Ok(json(&control.refresh(&req.token, unix_now())?))
}

#[derive(Serialize)]
struct RulesView<'a> {
    version: u64,
    loaded_at_ms: u64,
    source: &'a str,
    digest: &'a str,
    last_reload_error: Option<ReloadError>,
    default: &'a DefaultRule,
    rules: Vec<&'a RuleConfig>,
}

async fn rules(State(control): State<Control>) -> Response {
    let policy = control.policy();
    json(&RulesView {
        version: policy.version,
        loaded_at_ms: policy.loaded_at_ms,
        source: &policy.source,
        digest: &policy.digest,
        last_reload_error: control.last_reload_error(),
        default: policy.config.default.get_ref(),
        rules: policy.config.rules.iter().map(|r| r.get_ref()).collect(),
    })
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    rules_version: u64,
    nodes: usize,
    live_nodes: usize,
}

async fn healthz(State(control): State<Control>) -> Response {
    let policy = control.policy();
    let nodes = control.nodes(&policy);
    json(&Health {
        status: "ok",
        rules_version: policy.version,
        nodes: nodes.len(),
        live_nodes: nodes.iter().filter(|n| !n.draining).count(),
    })
}

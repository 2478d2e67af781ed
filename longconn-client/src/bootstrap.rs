//! Bootstrapping from a control layer (longconn-control): ask `POST /v1/access` where to
//! connect, walk the answer's endpoints in order on failure, renew the token through
//! `POST /v1/token/refresh`, and ask again after repeated failures.
//!
//! The driver owns one `Bootstrap`; the HTTP calls run inside the driver's dial
//! future or beside its frame loop, never blocking heartbeats. The answer's shapes are
//! declared here (not taken from longconn-control) so the SDK does not depend on the
//! server crate: the JSON is the contract (docs/CONTROL.md).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use longconn_core::ClientPolicy;
use longconn_transport::cert::Trust;

use crate::config::{ControlSettings, Endpoint};
use crate::error::ClientError;

/// One endpoint of an access answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessEndpoint {
    /// URL to dial.
    pub url: String,
    /// Transport name (`tcp`, `ws`, `quic`, ...).
    pub transport: String,
    /// 0 first.
    pub priority: u32,
    /// Node id.
    pub node: u16,
}

/// Reconnect delays from the control layer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessReconnect {
    /// First window, ms.
    pub base_ms: u64,
    /// Largest window, ms.
    pub cap_ms: u64,
    /// Jitter kind: `full` (the SDK's only rule; other values are treated as `full`).
    #[serde(default)]
    pub jitter: String,
}

/// What `POST /v1/access` answered (the fields the SDK uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessAnswer {
    /// Endpoints in order.
    pub endpoints: Vec<AccessEndpoint>,
    /// Login token.
    pub token: String,
    /// Its expiry, Unix seconds.
    pub expires_at_unix_s: u64,
    /// Longest heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Reconnect delays.
    pub reconnect: AccessReconnect,
    /// Failed connects in a row before asking again.
    pub reaccess_after_failures: u32,
    /// The rule bucket the device is in.
    pub bucket: String,
    /// The rule's flags.
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct AccessBody<'a> {
    app: &'a str,
    device: &'a str,
    platform: &'a str,
    app_version: &'a str,
    sdk_version: &'a str,
    network: &'a str,
    quality: BTreeMap<&'a str, TransportQuality>,
}

#[derive(Serialize)]
struct TransportQuality {
    connect_success_rate: f64,
}

#[derive(Deserialize)]
struct RefreshAnswer {
    token: String,
    expires_at_unix_s: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// The answer in use and what happened with it.
#[derive(Debug)]
struct State {
    answer: AccessAnswer,
    /// Parsed endpoints (entries the SDK cannot dial are dropped).
    endpoints: Vec<Endpoint>,
    /// Transport name of each endpoint.
    transports: Vec<String>,
    /// The token and when it was obtained (for the renewal time).
    token: Bytes,
    token_from_unix_s: u64,
    /// Endpoint to try first.
    next: usize,
    /// Failed connects in a row.
    failures: u32,
    /// Connect attempts and successes per transport, reported on the next access.
    tried: BTreeMap<String, (u64, u64)>,
}

/// A control-layer session: the HTTP client, the settings, the last answer.
#[derive(Debug)]
pub(crate) struct Bootstrap {
    http: reqwest::Client,
    settings: ControlSettings,
    app: String,
    device: String,
    state: Mutex<Option<State>>,
    /// No access request before this time (a 429's `Retry-After`).
    not_before: Mutex<Option<Instant>>,
}

/// Wait after a 429 without a readable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `Retry-After` in seconds (the control layer sends delta-seconds; an HTTP date is
/// not used by it and is ignored).
fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3_600)))
}

/// The heartbeat cap and reconnect windows an answer sets. Full jitter is the only
/// rule the SDK has; another `jitter` value is logged and treated as full.
pub(crate) fn policy_of(answer: &AccessAnswer) -> ClientPolicy {
    let jitter = answer.reconnect.jitter.as_str();
    if !jitter.is_empty() && jitter != "full" {
        tracing::debug!(jitter, "unknown jitter kind; using full jitter");
    }
    ClientPolicy {
        max_heartbeat: (answer.heartbeat_ms > 0)
            .then(|| Duration::from_millis(answer.heartbeat_ms)),
        backoff_base: Duration::from_millis(answer.reconnect.base_ms.max(1)),
        backoff_cap: Duration::from_millis(answer.reconnect.cap_ms),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Bootstrap {
    /// A bootstrap for `settings`; `https://` control URLs are checked against `trust`
    /// (rustls with ring).
    pub(crate) fn new(
        settings: ControlSettings,
        app: &str,
        device: &str,
        timeout: Duration,
        trust: &Trust,
    ) -> Bootstrap {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if settings.url.starts_with("https://") {
            match trust.client_config(&[b"http/1.1"], false) {
                Ok(tls) => builder = builder.use_preconfigured_tls(tls),
                Err(err) => tracing::warn!(%err, "no TLS trust for the control layer"),
            }
        }
        let http = builder.build().unwrap_or_else(|err| {
            tracing::warn!(%err, "control HTTP client: using defaults");
            reqwest::Client::new()
        });
        Bootstrap {
            http,
            settings,
            app: app.to_owned(),
            device: device.to_owned(),
            state: Mutex::new(None),
            not_before: Mutex::new(None),
        }
    }

    /// How long the control layer asked us to wait (a 429's `Retry-After`), if the
    /// wait has not passed yet.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        let at = (*self.not_before.lock().unwrap_or_else(|p| p.into_inner()))?;
        let now = Instant::now();
        (at > now).then(|| at - now)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<State>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.settings.url.trim_end_matches('/'));
        let failed = |why: String| ClientError::Control(format!("{url}: {why}"));
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after_header(response.headers()).unwrap_or(DEFAULT_RETRY_AFTER);
            *self.not_before.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + wait);
        }
        let bytes = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let why = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => format!("{status} {}: {}", body.error.code, body.error.message),
                Err(_) => status.to_string(),
            };
            return Err(failed(why));
        }
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("bad answer: {e}")))
    }

    /// Asks `/v1/access` and makes the answer the one in use (endpoint walk restarts at
    /// the first entry). Fails if the control layer is unreachable, refuses, or offers
    /// no endpoint the SDK can dial.
    pub(crate) async fn access(&self) -> Result<AccessAnswer, ClientError> {
        // A 429 said when to come back: not earlier (cancel safe: only a sleep).
        if let Some(wait) = self.retry_after() {
            tracing::debug!(?wait, "control layer asked to retry later; waiting");
            tokio::time::sleep(wait).await;
        }
        let quality = self
            .state()
            .as_ref()
            .map(|s| {
                s.tried
                    .iter()
                    .filter(|(_, (attempts, _))| *attempts > 0)
                    .map(|(t, (attempts, ok))| (t.clone(), *ok as f64 / *attempts as f64))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let body = AccessBody {
            app: &self.app,
            device: &self.device,
            platform: &self.settings.platform,
            app_version: &self.settings.app_version,
            sdk_version: &self.settings.sdk_version,
            network: &self.settings.network,
            quality: quality
                .iter()
                .map(|(t, rate)| {
                    (
                        t.as_str(),
                        TransportQuality {
                            connect_success_rate: *rate,
                        },
                    )
                })
                .collect(),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let answer: AccessAnswer = self.post("/v1/access", body).await?;
        let mut endpoints = Vec::new();
        let mut transports = Vec::new();
        for e in &answer.endpoints {
            match Endpoint::parse(&e.url) {
                Ok(parsed) => {
                    endpoints.push(parsed);
                    transports.push(e.transport.clone());
                }
                Err(bad) => {
                    tracing::debug!(url = %bad.url, reason = %bad.reason, "skipping endpoint")
                }
            }
        }
        if endpoints.is_empty() {
            return Err(ClientError::Control(
                "the access answer has no endpoint this SDK can dial".into(),
            ));
        }
        let mut state = self.state();
        let tried = state.take().map(|s| s.tried).unwrap_or_default();
        *state = Some(State {
            token: Bytes::from(answer.token.clone()),
            token_from_unix_s: unix_now(),
            answer: answer.clone(),
            endpoints,
            transports,
            next: 0,
            failures: 0,
            tried,
        });
        Ok(answer)
    }

    /// Whether the next dial must ask the control layer first: no answer yet, the
    /// token has expired, or `reaccess_after_failures` connects failed in a row (at
    /// least one full walk of the list).
    pub(crate) fn needs_access(&self) -> bool {
        match self.state().as_ref() {
            None => true,
            Some(s) => {
                let limit = s
                    .answer
                    .reaccess_after_failures
                    .max(s.endpoints.len() as u32);
                s.failures >= limit || s.answer.expires_at_unix_s <= unix_now()
            }
        }
    }

    /// The endpoints, starting with the one to try first.
    pub(crate) fn walk(&self) -> Vec<(usize, Endpoint)> {
        let state = self.state();
        let Some(s) = state.as_ref() else {
            return Vec::new();
        };
        let n = s.endpoints.len();
        (0..n)
            .map(|k| {
                let i = (s.next + k) % n;
                (i, s.endpoints[i].clone())
            })
            .collect()
    }

    /// The connect to endpoint `i` failed (dial, or the connection ended before
    /// login): the next attempt starts at the following endpoint.
    pub(crate) fn failed(&self, i: usize) {
        if let Some(s) = self.state().as_mut() {
            s.failures += 1;
            s.next = (i + 1) % s.endpoints.len().max(1);
            if let Some(t) = s.transports.get(i) {
                s.tried.entry(t.clone()).or_default().0 += 1;
            }
        }
    }

    /// Endpoint `i` connected: later attempts start there.
    pub(crate) fn connected(&self, i: usize) {
        if let Some(s) = self.state().as_mut() {
            s.next = i;
        }
    }

    /// Logged in over endpoint `i`: the failure count restarts.
    pub(crate) fn logged_in(&self, i: usize) {
        if let Some(s) = self.state().as_mut() {
            s.failures = 0;
            if let Some(t) = s.transports.get(i) {
                let entry = s.tried.entry(t.clone()).or_default();
                entry.0 += 1;
                entry.1 += 1;
            }
        }
    }

    /// The policy of the answer in use: heartbeat cap and reconnect delays (the
    /// driver applies it to its session after every answer).
    pub(crate) fn policy(&self) -> Option<ClientPolicy> {
        self.state().as_ref().map(|s| policy_of(&s.answer))
    }

    /// The answer in use.
    pub(crate) fn answer(&self) -> Option<AccessAnswer> {
        self.state().as_ref().map(|s| s.answer.clone())
    }

    /// When the token should be renewed: after 80 % of its lifetime.
    pub(crate) fn renew_at(&self) -> Option<Instant> {
        let state = self.state();
        let s = state.as_ref()?;
        let lifetime = s
            .answer
            .expires_at_unix_s
            .saturating_sub(s.token_from_unix_s);
        let due_unix = s.token_from_unix_s + lifetime * 4 / 5;
        let wait = due_unix.saturating_sub(unix_now());
        Some(Instant::now() + Duration::from_secs(wait))
    }

    /// The token for a login: the one in use, renewed first if its renewal is due; if
    /// the control layer refuses to renew it, a fresh access answer's.
    pub(crate) async fn token(&self) -> Result<Bytes, ClientError> {
        let due = self.renew_at().is_some_and(|at| at <= Instant::now());
        let current = self.state().as_ref().map(|s| s.token.clone());
        match current {
            Some(token) if !due => Ok(token),
            _ => match self.renew().await {
                Ok(token) => Ok(token),
                Err(_) => self.access().await.map(|a| Bytes::from(a.token)),
            },
        }
    }

    /// Exchanges the token in use for a new one (`/v1/token/refresh`).
    pub(crate) async fn renew(&self) -> Result<Bytes, ClientError> {
        let Some(token) = self.state().as_ref().map(|s| s.token.clone()) else {
            return Err(ClientError::Control("no token to renew yet".into()));
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "token": String::from_utf8_lossy(&token)
        }))
        .unwrap_or_default();
        let renewed: RefreshAnswer = self.post("/v1/token/refresh", body).await?;
        let token = Bytes::from(renewed.token);
        if let Some(s) = self.state().as_mut() {
            s.token = token.clone();
            s.token_from_unix_s = unix_now();
            s.answer.expires_at_unix_s = renewed.expires_at_unix_s;
            s.answer.token = String::from_utf8_lossy(&token).into_owned();
        }
        Ok(token)
    }
}

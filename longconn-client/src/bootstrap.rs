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
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Bootstrap {
    pub(crate) fn new(
        settings: ControlSettings,
        app: &str,
        device: &str,
        timeout: Duration,
    ) -> Bootstrap {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Bootstrap {
            http,
            settings,
            app: app.to_owned(),
            device: device.to_owned(),
            state: Mutex::new(None),
        }
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

    /// The policy of the answer in use: heartbeat cap and reconnect delays.
    pub(crate) fn policy(&self) -> Option<(Duration, Duration, Duration)> {
        self.state().as_ref().map(|s| {
            (
                Duration::from_millis(s.answer.heartbeat_ms),
                Duration::from_millis(s.answer.reconnect.base_ms),
                Duration::from_millis(s.answer.reconnect.cap_ms),
            )
        })
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

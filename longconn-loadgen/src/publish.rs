//! The driver's sending side for push phases: batched unicast and group publishes
//! through the gateway's HTTP API, paced to the phase's rate, with the send time in
//! every payload.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::fleet::stamped;

/// Business id of the pushes loadgen sends.
pub const PUSH_BUSINESS: u32 = 7;
/// Devices per `POST /v1/push/devices`.
const BATCH: usize = 500;

/// What the sending side did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Published {
    /// Pushes (unicast) or publishes (multicast) sent.
    pub sent: u64,
    /// Deliveries the gateway was asked to make: devices pushed to, or the group's
    /// member count at each publish.
    pub expected: u64,
    /// Deliveries the gateway refused at once (offline or dropped devices, dropped
    /// members) and failed HTTP calls.
    pub errors: u64,
}

/// Sends through the HTTP API.
#[derive(Debug, Clone)]
pub struct Publisher {
    http: reqwest::Client,
    api: String,
    app: String,
    payload_size: usize,
}

impl Publisher {
    /// A publisher for the API at `api` (`http://host:port`).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(api: &str, app: &str, payload_size: usize) -> Result<Publisher, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Publisher {
            http,
            api: api.trim_end_matches('/').to_owned(),
            app: app.to_owned(),
            payload_size,
        })
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let reply = self
            .http
            .post(format!("{}{path}", self.api))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = reply.status();
        let text = reply.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("POST {path}: {e}"))
    }

    /// `messages` pushes to each of `devices`, `rate` pushes per second in all.
    pub async fn unicast(
        &self,
        devices: &[String],
        messages: u32,
        rate: f64,
        progress: &indicatif::ProgressBar,
    ) -> Published {
        let mut out = Published::default();
        let start = Instant::now();
        for round in 0..messages {
            for batch in devices.chunks(BATCH) {
                pace(start, out.sent, rate).await;
                let payload = STANDARD.encode(stamped(self.payload_size, u64::from(round)));
                let body = json!({
                    "app": self.app,
                    "business": PUSH_BUSINESS,
                    "devices": batch,
                    "payload_b64": payload,
                });
                out.sent += batch.len() as u64;
                out.expected += batch.len() as u64;
                match self.post("/v1/push/devices", &body).await {
                    Ok(reply) => {
                        let refused = |key: &str| reply[key].as_array().map_or(0, Vec::len);
                        out.errors += (refused("offline") + refused("dropped")) as u64;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "unicast batch failed");
                        out.errors += batch.len() as u64;
                    }
                }
                metrics::counter!("loadgen_sent_total").increment(batch.len() as u64);
                progress.set_position(out.sent);
            }
        }
        out
    }

    /// `messages` publishes to each of `groups` groups (`{prefix}g{n}`), round robin,
    /// `rate` publishes per second in all.
    pub async fn multicast(
        &self,
        prefix: &str,
        groups: u32,
        messages: u32,
        rate: f64,
        progress: &indicatif::ProgressBar,
    ) -> Published {
        let mut out = Published::default();
        let start = Instant::now();
        let total = u64::from(groups) * u64::from(messages);
        for n in 0..total {
            pace(start, n, rate).await;
            let group = n % u64::from(groups);
            let body = json!({
                "business": PUSH_BUSINESS,
                "payload_b64": STANDARD.encode(stamped(self.payload_size, n)),
            });
            out.sent += 1;
            match self
                .post(&format!("/v1/push/groups/{prefix}g{group}"), &body)
                .await
            {
                Ok(reply) => {
                    out.expected += reply["members"].as_u64().unwrap_or(0);
                    out.errors += reply["dropped"].as_u64().unwrap_or(0);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "publish failed");
                    out.errors += 1;
                }
            }
            metrics::counter!("loadgen_sent_total").increment(1);
            progress.set_position(out.sent);
        }
        out
    }
}

/// Waits until `done` sends are due at `rate` per second since `start`.
async fn pace(start: Instant, done: u64, rate: f64) {
    let due = start + Duration::from_secs_f64(done as f64 / rate);
    tokio::time::sleep_until(due).await;
}

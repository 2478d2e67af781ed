//! The driver's sending side for push phases: batched unicast and group publishes
//! through the gateway's HTTP API, paced to the phase's rate, with the send time in
//! every payload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::fleet::stamped;
use super::spread::ApiBases;

/// Business id of the pushes loadgen sends.
pub const PUSH_BUSINESS: u32 = 7;
/// Devices per `POST /v1/push/devices` unless `--batch` says otherwise.
pub const DEFAULT_BATCH: usize = 500;
/// Group publishes not sent this long after the end of their phase's window are not
/// sent at all.
pub const LATE_CUTOFF: Duration = Duration::from_secs(2);

/// What the sending side did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Published {
    /// Round trip of each HTTP call (a unicast batch or a group publish).
    pub rtt_us: Option<super::stats::Percentiles>,
    /// Pushes (unicast) or publishes (multicast) sent.
    pub sent: u64,
    /// Deliveries the gateway was asked to make: devices pushed to, or the group's
    /// member count at each publish.
    pub expected: u64,
    /// Deliveries the gateway refused at once (offline or dropped devices, dropped
    /// members) and failed HTTP calls.
    pub errors: u64,
    /// Devices (unicast) or nodes (group publish) the answering node reported as
    /// `unknown`: on another node that did not answer in time. Not errors, not counted
    /// as delivered: whether they arrived shows in `received`.
    pub unknown: u64,
}

impl Published {
    fn add(&mut self, other: &Published) {
        self.sent += other.sent;
        self.expected += other.expected;
        self.errors += other.errors;
        self.unknown += other.unknown;
    }
}

/// Sends through the HTTP API.
#[derive(Debug, Clone)]
pub struct Publisher {
    http: reqwest::Client,
    apis: Arc<ApiBases>,
    app: String,
    payload_size: usize,
    /// Calls in flight at once (one keep-alive connection each).
    concurrency: usize,
    /// Devices per unicast call.
    batch: usize,
    /// `Authorization` header value, when the API needs a key.
    bearer: Option<Arc<str>>,
}

impl Publisher {
    /// A publisher for the API bases `apis` (round robin per call).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(apis: ApiBases, app: &str, payload_size: usize) -> Result<Publisher, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Publisher {
            http,
            apis: Arc::new(apis),
            app: app.to_owned(),
            payload_size,
            concurrency: 1,
            batch: DEFAULT_BATCH,
            bearer: None,
        })
    }

    /// Sends `key` as `Authorization: Bearer <secret>` on every call (the gateway's
    /// `--api-key`). `ID:SECRET` is accepted too: the id is dropped, as the gateway
    /// matches the secret.
    #[must_use]
    pub fn with_api_key(mut self, key: Option<&str>) -> Publisher {
        self.bearer = key.map(|k| {
            let secret = k.split_once(':').map_or(k, |(_, secret)| secret);
            Arc::from(format!("Bearer {secret}"))
        });
        self
    }

    /// Sends `n` devices per unicast call (default [`DEFAULT_BATCH`]).
    #[must_use]
    pub fn with_batch(mut self, n: usize) -> Publisher {
        self.batch = n.max(1);
        self
    }

    /// Sends group publishes and unicast batches over `n` keep-alive connections at
    /// once (default 1): a slow answer then delays only its own connection's next call,
    /// as with a publisher that has several connections to the API.
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Publisher {
        self.concurrency = n.max(1);
        self
    }

    fn auth_header(&self) -> reqwest::header::HeaderMap {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = self
            .bearer
            .as_deref()
            .and_then(|b| reqwest::header::HeaderValue::from_str(b).ok())
        {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        headers
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let reply = self
            .http
            .post(format!("{}{path}", self.apis.next()))
            .header("content-type", "application/json")
            .headers(self.auth_header())
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

    /// [`Publisher::multicast`] on a thread of its own (a current-thread runtime with a
    /// fresh HTTP client), so that the publishes' round trips do not wait behind this
    /// process's client tasks: with thousands of members in the process, a response is
    /// otherwise read only after every member task woken before it has run, and the
    /// measured round trip would be the load side's.
    pub async fn multicast_on_own_thread(
        &self,
        prefix: &str,
        groups: u32,
        messages: u32,
        rate: f64,
        progress: &indicatif::ProgressBar,
    ) -> Published {
        let publisher = match Publisher::new((*self.apis).clone(), &self.app, self.payload_size) {
            Ok(p) => Publisher {
                bearer: self.bearer.clone(),
                ..p.with_concurrency(self.concurrency).with_batch(self.batch)
            },
            Err(err) => {
                tracing::warn!(error = %err, "publisher");
                return Published::default();
            }
        };
        let (prefix, progress) = (prefix.to_owned(), progress.clone());
        let (done, result) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("loadgen-publish".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let out = runtime.map(|runtime| {
                    runtime
                        .block_on(publisher.multicast(&prefix, groups, messages, rate, &progress))
                });
                let _ = done.send(out);
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "publisher thread");
            return Published::default();
        }
        match result.await {
            Ok(Ok(out)) => out,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "publisher runtime");
                Published::default()
            }
            Err(_) => Published::default(),
        }
    }

    /// `messages` pushes to each of `devices`, `rate` pushes per second in all, in
    /// batches of the publisher's batch size over its concurrency. Batch `n` (round
    /// `n / batches per round`) is due when the pushes before it are due at `rate`.
    pub async fn unicast(
        &self,
        devices: &[String],
        messages: u32,
        rate: f64,
        progress: &indicatif::ProgressBar,
    ) -> Published {
        let start = Instant::now();
        let chunks: Vec<&[String]> = devices.chunks(self.batch).collect();
        let per_round = chunks.len() as u64;
        let total = per_round * u64::from(messages);
        let next = AtomicU64::new(0);
        let rtt = Mutex::new(super::stats::histogram());
        let one = || async {
            let mut out = Published::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return out;
                }
                let (round, chunk) = (n / per_round, (n % per_round) as usize);
                let batch = chunks[chunk];
                let before = round * devices.len() as u64 + (chunk * self.batch) as u64;
                pace(start, before, rate).await;
                let payload = STANDARD.encode(stamped(self.payload_size, round));
                let body = json!({
                    "app": self.app,
                    "business": PUSH_BUSINESS,
                    "devices": batch,
                    "payload_b64": payload,
                });
                out.sent += batch.len() as u64;
                out.expected += batch.len() as u64;
                let sent_at = Instant::now();
                let reply = self.post("/v1/push/devices", &body).await;
                record_rtt(&rtt, sent_at);
                match reply {
                    Ok(reply) => {
                        let listed = |key: &str| reply[key].as_array().map_or(0, Vec::len) as u64;
                        out.errors += listed("offline") + listed("dropped");
                        out.unknown += listed("unknown");
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "unicast batch failed");
                        out.errors += batch.len() as u64;
                    }
                }
                metrics::counter!("loadgen_sent_total").increment(batch.len() as u64);
                progress.inc(batch.len() as u64);
            }
        };
        let parts = futures::future::join_all((0..self.concurrency).map(|_| one())).await;
        let mut out = Published::default();
        for part in &parts {
            out.add(part);
        }
        out.rtt_us = Some(super::stats::Percentiles::of(
            &rtt.into_inner().unwrap_or_else(|e| e.into_inner()),
        ));
        out
    }

    /// `messages` publishes to each of `groups` groups (`{prefix}g{n}`), round robin,
    /// `rate` publishes per second in all, over the publisher's concurrency. Publish `n`
    /// is due at `n / rate` s; a connection still waiting for an answer sends its next
    /// publish late. Publishing stops [`LATE_CUTOFF`] after the phase's window
    /// (`groups * messages / rate` s): a slow API shows as fewer publishes sent, and the
    /// phase stays bounded in time.
    pub async fn multicast(
        &self,
        prefix: &str,
        groups: u32,
        messages: u32,
        rate: f64,
        progress: &indicatif::ProgressBar,
    ) -> Published {
        let start = Instant::now();
        let total = u64::from(groups) * u64::from(messages);
        let next = AtomicU64::new(0);
        let cutoff = start + Duration::from_secs_f64(total as f64 / rate) + LATE_CUTOFF;
        let rtt = Mutex::new(super::stats::histogram());
        let one = || async {
            let mut out = Published::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || Instant::now() > cutoff {
                    return out;
                }
                pace(start, n, rate).await;
                let group = n % u64::from(groups);
                let body = json!({
                    "business": PUSH_BUSINESS,
                    "payload_b64": STANDARD.encode(stamped(self.payload_size, n)),
                });
                out.sent += 1;
                let sent_at = Instant::now();
                let reply = self
                    .post(&format!("/v1/push/groups/{prefix}g{group}"), &body)
                    .await;
                record_rtt(&rtt, sent_at);
                match reply {
                    Ok(reply) => {
                        out.expected += reply["members"].as_u64().unwrap_or(0);
                        out.errors += reply["dropped"].as_u64().unwrap_or(0);
                        out.unknown += reply["unknown_nodes"].as_u64().unwrap_or(0);
                    }
                    Err(err) => {
                        out.errors += 1;
                        // A refused publish (503 `group_saturated`) says when to come
                        // back: this connection waits that long, as a well-behaved
                        // publisher does, instead of hammering the API.
                        match retry_hint(&err) {
                            Some(wait) => {
                                tracing::debug!(error = %err, "publish refused");
                                tokio::time::sleep(wait).await;
                            }
                            None => tracing::warn!(error = %err, "publish failed"),
                        }
                    }
                }
                metrics::counter!("loadgen_sent_total").increment(1);
                progress.inc(1);
            }
        };
        let parts = futures::future::join_all((0..self.concurrency).map(|_| one())).await;
        let mut out = Published::default();
        for part in &parts {
            out.add(part);
        }
        out.rtt_us = Some(super::stats::Percentiles::of(
            &rtt.into_inner().unwrap_or_else(|e| e.into_inner()),
        ));
        out
    }
}

/// The `retry_after_ms` of a refused publish's JSON error body, if it has one.
fn retry_hint(error: &str) -> Option<Duration> {
    let body: Value = serde_json::from_str(&error[error.find('{')?..]).ok()?;
    body["retry_after_ms"].as_u64().map(Duration::from_millis)
}

fn record_rtt(rtt: &Mutex<hdrhistogram::Histogram<u64>>, sent_at: Instant) {
    let took = sent_at.elapsed().as_micros() as u64;
    rtt.lock()
        .unwrap_or_else(|e| e.into_inner())
        .saturating_record(took.max(1));
}

/// Waits until `done` sends are due at `rate` per second since `start`.
async fn pace(start: Instant, done: u64, rate: f64) {
    let due = start + Duration::from_secs_f64(done as f64 / rate);
    tokio::time::sleep_until(due).await;
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn a_refusal_with_a_hint_is_read_and_other_errors_have_none() {
        let refused = r#"POST /v1/push/groups/g: 503 Service Unavailable {"error":"group_saturated","message":"m","retry_after_ms":250}"#;
        assert_eq!(retry_hint(refused), Some(Duration::from_millis(250)));
        let failed = r#"POST /v1/push/groups/g: 503 Service Unavailable {"error":"unavailable","message":"m"}"#;
        assert_eq!(retry_hint(failed), None);
        assert_eq!(
            retry_hint("POST /v1/push/groups/g: connection refused"),
            None
        );
    }
}

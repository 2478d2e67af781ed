//! `--control URL`: every simulated device asks the control layer (longconn-control)
//! where to connect (`POST /v1/access`) and logs in to the first endpoint of the
//! answer with the answer's token. The access latency and the spread of devices over
//! nodes are counted per process ([`AccessReport`]) and merged ([`AccessSummary`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use longconn_client::Trust;
use serde::{Deserialize, Serialize};

use super::stats::{Percentiles, decode, encode, histogram};

/// How long one `/v1/access` call may take.
const ACCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// What a device needs from an access answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The first endpoint's URL.
    pub url: String,
    /// Its node id.
    pub node: u16,
    /// The login token.
    pub token: Bytes,
}

#[derive(Deserialize)]
struct Answer {
    endpoints: Vec<AnswerEndpoint>,
    token: String,
}

#[derive(Deserialize)]
struct AnswerEndpoint {
    url: String,
    node: u16,
}

/// The control layer of a run and what its answers were.
#[derive(Debug)]
pub struct ControlAccess {
    http: reqwest::Client,
    url: String,
    app: String,
    latency: Mutex<Histogram<u64>>,
    failed: AtomicU64,
    /// Devices sent to each endpoint (`node id url`).
    per_node: Mutex<BTreeMap<String, u64>>,
}

impl ControlAccess {
    /// A client of the control layer at `url` (`http://` or `https://`, the latter
    /// checked against `trust`).
    ///
    /// # Errors
    /// A URL that is not http(s), or a TLS setup that fails.
    pub fn new(url: &str, app: &str, trust: &Trust) -> Result<ControlAccess, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(ACCESS_TIMEOUT)
            .pool_max_idle_per_host(64);
        if url.starts_with("https://") {
            let tls = trust
                .client_config(&[b"http/1.1"], false)
                .map_err(|e| format!("--control {url}: {e}"))?;
            builder = builder.use_preconfigured_tls(tls);
        } else if !url.starts_with("http://") {
            return Err(format!(
                "--control {url}: expected http://host:port or https://"
            ));
        }
        Ok(ControlAccess {
            http: builder.build().map_err(|e| e.to_string())?,
            url: url.trim_end_matches('/').to_owned(),
            app: app.to_owned(),
            latency: Mutex::new(histogram()),
            failed: AtomicU64::new(0),
            per_node: Mutex::new(BTreeMap::new()),
        })
    }

    /// Asks `/v1/access` for `device`, counting the latency and the node it got.
    ///
    /// # Errors
    /// The control layer did not answer, refused, or offered no endpoint.
    pub async fn access(&self, device: &str) -> Result<Access, String> {
        let started = Instant::now();
        let result = self.ask(device).await;
        match &result {
            Ok(access) => {
                let us = started.elapsed().as_micros() as u64;
                let _ = lock(&self.latency).record(us.max(1));
                *lock(&self.per_node)
                    .entry(format!("{} {}", access.node, access.url))
                    .or_default() += 1;
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn ask(&self, device: &str) -> Result<Access, String> {
        let body = serde_json::json!({
            "app": self.app,
            "device": device,
            "platform": "loadgen",
            "app_version": "0.0.0",
            "sdk_version": env!("CARGO_PKG_VERSION"),
            "network": "unknown",
        });
        let response = self
            .http
            .post(format!("{}/v1/access", self.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("/v1/access: {e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "/v1/access: {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        let answer: Answer =
            serde_json::from_slice(&bytes).map_err(|e| format!("/v1/access answer: {e}"))?;
        let first = answer
            .endpoints
            .into_iter()
            .next()
            .ok_or("/v1/access: no endpoint")?;
        Ok(Access {
            url: first.url,
            node: first.node,
            token: Bytes::from(answer.token),
        })
    }

    /// The phase's figures, leaving the counters empty.
    pub fn take(&self) -> AccessReport {
        let latency = std::mem::replace(&mut *lock(&self.latency), histogram());
        AccessReport {
            latency: encode(&latency),
            failed: self.failed.swap(0, Ordering::Relaxed),
            per_node: std::mem::take(&mut *lock(&self.per_node)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One process's access figures of a phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessReport {
    /// `/v1/access` latency histogram (µs), V2-serialised, base64.
    pub latency: String,
    /// Access calls that failed.
    pub failed: u64,
    /// Devices per endpoint (`node id url`).
    pub per_node: BTreeMap<String, u64>,
}

/// The merged access figures of a phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessSummary {
    /// Answered access calls.
    pub answered: u64,
    /// Failed access calls.
    pub failed: u64,
    /// `/v1/access` latency, µs.
    pub latency_us: Percentiles,
    /// Devices per endpoint (`node id url`).
    pub per_node: BTreeMap<String, u64>,
    /// Largest node share over the even share (1.0 = perfectly even).
    pub max_over_even: f64,
}

/// Merges the processes' access reports; `None` when there are none (no `--control`).
///
/// # Errors
/// A histogram does not decode.
pub fn merge<'a>(
    reports: impl IntoIterator<Item = &'a AccessReport>,
) -> Result<Option<AccessSummary>, String> {
    let mut any = false;
    let mut latency = histogram();
    let mut s = AccessSummary::default();
    for r in reports {
        any = true;
        latency
            .add(decode(&r.latency)?)
            .map_err(|e| e.to_string())?;
        s.failed += r.failed;
        for (node, n) in &r.per_node {
            *s.per_node.entry(node.clone()).or_default() += n;
        }
    }
    if !any {
        return Ok(None);
    }
    s.answered = latency.len();
    s.latency_us = Percentiles::of(&latency);
    let total: u64 = s.per_node.values().sum();
    let max = s.per_node.values().copied().max().unwrap_or(0);
    s.max_over_even = if total == 0 {
        0.0
    } else {
        max as f64 * s.per_node.len() as f64 / total as f64
    };
    Ok(Some(s))
}

impl AccessSummary {
    /// Readable lines for stderr.
    pub fn human(&self) -> String {
        let mut out = format!(
            "  access: {} answered, {} failed, latency p50 {} us p99 {} us max {} us; \
             busiest node {:.3}x the even share",
            self.answered,
            self.failed,
            self.latency_us.p50,
            self.latency_us.p99,
            self.latency_us.max,
            self.max_over_even
        );
        for (node, n) in &self.per_node {
            out.push_str(&format!("\n    node {node}: {n} devices"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two processes' reports add up per node; the spread and percentiles come out.
    #[test]
    fn reports_merge_per_node_with_the_spread() {
        let one = |us: &[u64], nodes: &[(&str, u64)]| {
            let mut h = histogram();
            for v in us {
                h.record(*v).unwrap();
            }
            AccessReport {
                latency: encode(&h),
                failed: 1,
                per_node: nodes.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            }
        };
        let a = one(&[100, 200], &[("1 tcp://a", 30), ("2 tcp://b", 10)]);
        let b = one(&[300, 40_000], &[("2 tcp://b", 10)]);
        let s = merge([&a, &b]).unwrap().unwrap();
        assert_eq!(s.answered, 4);
        assert_eq!(s.failed, 2);
        assert_eq!(s.per_node["1 tcp://a"], 30);
        assert_eq!(s.per_node["2 tcp://b"], 20);
        assert!((s.max_over_even - 1.2).abs() < 1e-9, "{}", s.max_over_even);
        assert!(s.latency_us.p99 >= 39_000, "{:?}", s.latency_us);
        assert!(merge([]).unwrap().is_none());
    }

    #[test]
    fn only_http_control_urls() {
        let err = ControlAccess::new("tcp://x:1", "a", &Trust::System).unwrap_err();
        assert!(err.contains("http://"), "{err}");
    }
}

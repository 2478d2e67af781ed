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

/// Retries of one device's `/v1/access` after `429 Too Many Requests`.
const MAX_RETRIES_429: u32 = 5;

/// The wait after a 429 without a usable `Retry-After`, and the most any 429 waits.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why one `/v1/access` call failed.
enum AskError {
    /// `429 Too Many Requests`, with the `Retry-After` seconds if given.
    Busy(Option<Duration>),
    /// Anything else: not retried here.
    Other(String),
}

impl From<String> for AskError {
    fn from(message: String) -> AskError {
        AskError::Other(message)
    }
}

impl From<&str> for AskError {
    fn from(message: &str) -> AskError {
        AskError::Other(message.to_owned())
    }
}

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
    /// Calls repeated after a 429.
    retried: AtomicU64,
    /// Retries of one device after a 429 before it counts as failed.
    max_retries: u32,
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
            retried: AtomicU64::new(0),
            max_retries: MAX_RETRIES_429,
        })
    }

    /// Asks `/v1/access` for `device`, counting the latency and the node it got. A
    /// `429 Too Many Requests` (the control layer's per-IP rate limit) is retried after
    /// its `Retry-After` (1 s when absent, at most 30 s, plus up to 10 % jitter), at
    /// most 5 times; each retry is counted in `retried`, not in `failed`. The latency
    /// covers the whole call, waits included.
    ///
    /// # Errors
    /// The control layer did not answer, refused (429 after the last retry), or
    /// offered no endpoint.
    pub async fn access(&self, device: &str) -> Result<Access, String> {
        let started = Instant::now();
        let mut retries = 0;
        let result = loop {
            match self.ask(device).await {
                Ok(access) => break Ok(access),
                Err(AskError::Busy(after)) if retries < self.max_retries => {
                    retries += 1;
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    let wait = after.unwrap_or(DEFAULT_RETRY_AFTER).min(MAX_RETRY_AFTER);
                    let jitter = wait.mul_f64(fastrand::f64() * 0.1);
                    tokio::time::sleep(wait + jitter).await;
                }
                Err(AskError::Busy(_)) => {
                    break Err(format!(
                        "/v1/access: 429 Too Many Requests after {retries} retries"
                    ));
                }
                Err(AskError::Other(message)) => break Err(message),
            }
        };
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

    async fn ask(&self, device: &str) -> Result<Access, AskError> {
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
            .map_err(|e| AskError::Other(format!("/v1/access: {e}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(AskError::Busy(after));
        }
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(AskError::Other(format!(
                "/v1/access: {status}: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| AskError::Other(format!("/v1/access answer: {e}")))?;
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
            retried: self.retried.swap(0, Ordering::Relaxed),
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
    /// Access calls repeated after a 429 (not failures).
    #[serde(default)]
    pub retried: u64,
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
    /// Access calls repeated after a 429 (`Retry-After` honoured; not failures).
    #[serde(default)]
    pub retried: u64,
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
        s.retried += r.retried;
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
            "  access: {} answered, {} failed, {} retried after 429, latency p50 {} us \
             p99 {} us max {} us; busiest node {:.3}x the even share",
            self.answered,
            self.failed,
            self.retried,
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
                retried: 3,
            }
        };
        let a = one(&[100, 200], &[("1 tcp://a", 30), ("2 tcp://b", 10)]);
        let b = one(&[300, 40_000], &[("2 tcp://b", 10)]);
        let s = merge([&a, &b]).unwrap().unwrap();
        assert_eq!(s.answered, 4);
        assert_eq!((s.failed, s.retried), (2, 6));
        assert_eq!(s.per_node["1 tcp://a"], 30);
        assert_eq!(s.per_node["2 tcp://b"], 20);
        assert!((s.max_over_even - 1.2).abs() < 1e-9, "{}", s.max_over_even);
        assert!(s.latency_us.p99 >= 39_000, "{:?}", s.latency_us);
        assert!(merge([]).unwrap().is_none());
    }

    /// A control layer that answers the first `busy` calls with 429 (`Retry-After:
    /// retry_after`), then an access answer; the number of calls it saw.
    async fn control_stub(
        busy: usize,
        retry_after: &'static str,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let n = seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    // Read the head and the (small) body, then answer and close.
                    let mut buf = vec![0u8; 8192];
                    let _ = tcp.read(&mut buf).await;
                    let reply = if n < busy {
                        format!(
                            "HTTP/1.1 429 Too Many Requests\r\nretry-after: {retry_after}\r\n\
                             content-length: 0\r\nconnection: close\r\n\r\n"
                        )
                    } else {
                        let body =
                            r#"{"endpoints":[{"url":"tcp://127.0.0.1:1","node":3}],"token":"t"}"#;
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    let _ = tcp.write_all(reply.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        (url, calls)
    }

    /// A 429 is retried after its Retry-After and counted as a retry, not a failure.
    #[tokio::test]
    async fn a_429_is_retried_after_its_retry_after() {
        let (url, calls) = control_stub(2, "1").await;
        let control = ControlAccess::new(&url, "a", &Trust::System).unwrap();
        let started = Instant::now();
        let access = control.access("d-1").await.unwrap();
        assert_eq!((access.node, calls.load(Ordering::SeqCst)), (3, 3));
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "waited Retry-After twice: {:?}",
            started.elapsed()
        );
        let report = control.take();
        assert_eq!((report.failed, report.retried), (0, 2));
    }

    /// Retries are bounded: a control layer that keeps refusing fails the device.
    #[tokio::test]
    async fn a_429_that_persists_fails_after_the_bounded_retries() {
        let (url, calls) = control_stub(usize::MAX, "0").await;
        let control = ControlAccess::new(&url, "a", &Trust::System).unwrap();
        let err = control.access("d-1").await.unwrap_err();
        assert!(err.contains("429"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1 + MAX_RETRIES_429 as usize);
        let report = control.take();
        assert_eq!(
            (report.failed, report.retried),
            (1, u64::from(MAX_RETRIES_429))
        );
    }

    #[test]
    fn only_http_control_urls() {
        let err = ControlAccess::new("tcp://x:1", "a", &Trust::System).unwrap_err();
        assert!(err.contains("http://"), "{err}");
    }
}

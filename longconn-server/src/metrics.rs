//! Metrics through the `metrics` facade (names and labels: docs/METRICS.md). No
//! exporter here: the application installs one (the reference gateway serves
//! Prometheus text at `GET /metrics`); without one every handle is a no-op.
//!
//! Hot paths use handles registered once, when the server (or router) is built: a
//! counter per transport and reason, never a name lookup per frame. A recorder must
//! therefore be installed before the server is built. Labels are bounded: transport,
//! reason, mode, outcome, business id (a configured set, else `other`); never a device,
//! group or connection id.

use std::collections::HashMap;
use std::time::Duration;

use longconn_core::connection::TransportKind;
use longconn_core::protocol::Code;
use longconn_core::session::CloseReason;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Every metric the library crates record, with its kind and help text: (name, kind,
/// help). `kind` is `counter`, `gauge` or `histogram`. docs/METRICS.md lists the same.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "longconn_connects_total",
        "counter",
        "Connections accepted, by transport.",
    ),
    (
        "longconn_logins_total",
        "counter",
        "Login checks, by transport and outcome (ok, rejected).",
    ),
    (
        "longconn_sessions_online",
        "gauge",
        "Logged-in sessions on this node, by transport.",
    ),
    (
        "longconn_disconnects_total",
        "counter",
        "Connections closed, by transport and reason.",
    ),
    (
        "longconn_login_duration_seconds",
        "histogram",
        "Time the authenticator took to answer a login.",
    ),
    (
        "longconn_frames_received_total",
        "counter",
        "Frames read from clients, by transport.",
    ),
    (
        "longconn_frames_sent_total",
        "counter",
        "Frames written to clients, by transport.",
    ),
    (
        "longconn_received_bytes_total",
        "counter",
        "Encoded frame bytes read from clients, by transport.",
    ),
    (
        "longconn_sent_bytes_total",
        "counter",
        "Encoded frame bytes written to clients, by transport.",
    ),
    (
        "longconn_upstream_requests_total",
        "counter",
        "Upstream requests, by business id and outcome.",
    ),
    (
        "longconn_upstream_request_duration_seconds",
        "histogram",
        "Time backends took to answer, by business id.",
    ),
    (
        "longconn_pushes_total",
        "counter",
        "Pushes by mode (unicast, batched, group, cross_node) and outcome at enqueue.",
    ),
    (
        "longconn_pushes_written_total",
        "counter",
        "Pushes moved from a connection's queue to its session for writing, by transport.",
    ),
    (
        "longconn_push_queue_seconds",
        "histogram",
        "Time the oldest queued push of each drained batch waited in its connection's queue.",
    ),
    (
        "longconn_queue_drops_total",
        "counter",
        "Pushes discarded from or refused by a connection's queue.",
    ),
    (
        "longconn_groups",
        "gauge",
        "Groups with at least one member on this node.",
    ),
    (
        "longconn_group_members",
        "gauge",
        "Group memberships on this node.",
    ),
    (
        "longconn_route_store_op_duration_seconds",
        "histogram",
        "Route-store operation latency, by op.",
    ),
    (
        "longconn_route_store_errors_total",
        "counter",
        "Route-store operations that failed, by op.",
    ),
    (
        "longconn_relay_op_duration_seconds",
        "histogram",
        "Relay calls to other nodes, by op.",
    ),
    (
        "longconn_relay_errors_total",
        "counter",
        "Relay calls to other nodes that timed out, by op.",
    ),
    (
        "longconn_http_requests_total",
        "counter",
        "Push API requests, by route pattern and status code.",
    ),
    (
        "longconn_http_request_duration_seconds",
        "histogram",
        "Push API request latency, by route pattern.",
    ),
    (
        "longconn_cluster_subscriber_lag_seconds",
        "histogram",
        "Time relay requests waited between this node's Redis subscriber and its handler.",
    ),
    (
        "longconn_cluster_subscriber_messages_total",
        "counter",
        "Relay messages (requests and answers) this node's Redis subscriber read.",
    ),
    (
        "longconn_cluster_subscriber_queued_requests",
        "gauge",
        "Relay requests read from Redis and not yet handled.",
    ),
    (
        "longconn_cluster_subscriber_dropped_total",
        "counter",
        "Relay requests dropped because the handler's queue was full.",
    ),
];

/// Gives the installed recorder the help text (and unit) of every metric in
/// [`METRICS`]; call it once after installing the recorder (Prometheus tools warn about
/// metrics without help text). Also turns on the queue timing ([`set_queue_timing`]).
pub fn describe() {
    set_queue_timing(true);
    for &(name, kind, help) in METRICS {
        let unit = name.ends_with("_seconds").then_some(metrics::Unit::Seconds);
        match (kind, unit) {
            ("counter", _) => metrics::describe_counter!(name, help),
            ("gauge", _) => metrics::describe_gauge!(name, help),
            (_, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            _ => metrics::describe_histogram!(name, help),
        }
    }
}

/// Transport labels, in [`transport_index`] order.
pub const TRANSPORTS: [&str; 6] = ["memory", "tcp", "tls", "ws", "quic", "other"];

/// Disconnect reasons, in [`reason_index`] order.
pub const DISCONNECT_REASONS: [&str; 13] = [
    "closed",
    "peer_closed",
    "transport_ended",
    "transport_failed",
    "slow_consumer",
    "duplicate_login",
    "kicked",
    "idle",
    "login_timeout",
    "token_expired",
    "drained",
    "auth_failed",
    "protocol_error",
];

/// Index of `kind` in [`TRANSPORTS`].
pub fn transport_index(kind: TransportKind) -> usize {
    match kind {
        TransportKind::Memory => 0,
        TransportKind::Tcp => 1,
        TransportKind::Tls => 2,
        TransportKind::WebSocket => 3,
        TransportKind::Quic => 4,
        _ => 5,
    }
}

/// The `reason` label of a close: index in [`DISCONNECT_REASONS`].
pub fn reason_index(reason: CloseReason) -> usize {
    match reason {
        CloseReason::Peer(_) => 1,
        CloseReason::TransportEnded => 2,
        CloseReason::TransportFailed => 3,
        CloseReason::Local(code) => match code {
            Code::SlowConsumer => 4,
            Code::Replaced => 5,
            Code::Kicked => 6,
            Code::IdleTimeout => 7,
            Code::LoginTimeout => 8,
            Code::TokenExpired => 9,
            Code::GoingAway | Code::Draining => 10,
            Code::InvalidToken | Code::ExpiredToken | Code::Forbidden => 11,
            Code::BadMagic
            | Code::UnsupportedVersion
            | Code::FrameTooLarge
            | Code::MalformedFrame
            | Code::UnexpectedFrame
            | Code::UnsupportedMessage => 12,
            _ => 0,
        },
    }
}

/// The `reason` label of a close.
pub fn reason_label(reason: CloseReason) -> &'static str {
    DISCONNECT_REASONS[reason_index(reason)]
}

/// Handles for one transport.
#[derive(Debug)]
pub(crate) struct TransportMetrics {
    pub(crate) connects: Counter,
    pub(crate) logins_ok: Counter,
    pub(crate) logins_rejected: Counter,
    pub(crate) online: Gauge,
    pub(crate) frames_in: Counter,
    pub(crate) frames_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) pushes_written: Counter,
    pub(crate) disconnects: Vec<Counter>,
}

impl TransportMetrics {
    fn new(transport: &'static str) -> TransportMetrics {
        let t = ("transport", transport);
        TransportMetrics {
            connects: counter!("longconn_connects_total", &[t]),
            logins_ok: counter!("longconn_logins_total", &[t, ("outcome", "ok")]),
            logins_rejected: counter!("longconn_logins_total", &[t, ("outcome", "rejected")]),
            online: gauge!("longconn_sessions_online", &[t]),
            frames_in: counter!("longconn_frames_received_total", &[t]),
            frames_out: counter!("longconn_frames_sent_total", &[t]),
            bytes_in: counter!("longconn_received_bytes_total", &[t]),
            bytes_out: counter!("longconn_sent_bytes_total", &[t]),
            pushes_written: counter!("longconn_pushes_written_total", &[t]),
            disconnects: DISCONNECT_REASONS
                .iter()
                .map(|&r| counter!("longconn_disconnects_total", &[t, ("reason", r)]))
                .collect(),
        }
    }
}

/// Push modes (`mode` label), in [`PushMode`] order.
pub const PUSH_MODES: [&str; 4] = ["unicast", "batched", "group", "cross_node"];
/// Push outcomes (`outcome` label) at the push API, in [`PushOutcomeLabel`] order.
pub const PUSH_OUTCOMES: [&str; 4] = ["queued", "offline", "dropped_full", "dropped_slow"];

/// How a push was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushMode {
    /// `Pusher::push` and `push_acked`.
    Unicast = 0,
    /// `Pusher::push_devices` and `push_each`.
    Batched = 1,
    /// A group publish (one per member).
    Group = 2,
    /// Arrived from another node through the relay.
    CrossNode = 3,
}

/// What became of a push at its enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcomeLabel {
    /// Queued for the connection's driver.
    Queued = 0,
    /// No such connection or device.
    Offline = 1,
    /// Dropped: the queue was full (drop-newest policy, or the session's own queue).
    DroppedFull = 2,
    /// Dropped with the connection: it was disconnected as a slow consumer.
    DroppedSlow = 3,
}

impl PushOutcomeLabel {
    /// The label for a hub outcome.
    pub fn of(outcome: longconn_core::session::PushOutcome) -> PushOutcomeLabel {
        use longconn_core::session::PushOutcome as O;
        match outcome {
            O::Queued => PushOutcomeLabel::Queued,
            O::Dropped => PushOutcomeLabel::DroppedFull,
            O::Disconnected => PushOutcomeLabel::DroppedSlow,
            O::NotActive => PushOutcomeLabel::Offline,
        }
    }
}

/// The push counters, by mode x outcome: usable by the group layer too.
#[derive(Debug)]
pub struct PushMetrics {
    counts: Vec<Counter>,
}

impl PushMetrics {
    /// Registers every (mode, outcome) pair with the installed recorder.
    pub fn new() -> PushMetrics {
        let mut counts = Vec::with_capacity(PUSH_MODES.len() * PUSH_OUTCOMES.len());
        for mode in PUSH_MODES {
            for outcome in PUSH_OUTCOMES {
                counts.push(counter!(
                    "longconn_pushes_total",
                    "mode" => mode,
                    "outcome" => outcome
                ));
            }
        }
        PushMetrics { counts }
    }

    /// Counts `n` pushes of `mode` that ended as `outcome`.
    pub fn record(&self, mode: PushMode, outcome: PushOutcomeLabel, n: u64) {
        self.counts[mode as usize * PUSH_OUTCOMES.len() + outcome as usize].increment(n);
    }
}

/// Outcomes of one batch of pushes of one mode, counted locally and added to the
/// shared counters once ([`PushTally::flush`]): one atomic add per outcome per batch
/// instead of one per push (the counters are shared by every thread).
#[derive(Debug, Default)]
pub(crate) struct PushTally([u64; PUSH_OUTCOMES.len()]);

impl PushTally {
    /// Counts one push that ended as `outcome`.
    pub(crate) fn add(&mut self, outcome: PushOutcomeLabel) {
        self.0[outcome as usize] += 1;
    }

    /// Adds the batch's counts to `metrics` under `mode`.
    pub(crate) fn flush(self, metrics: &PushMetrics, mode: PushMode) {
        for (i, &n) in self.0.iter().enumerate() {
            if n > 0 {
                metrics.counts[mode as usize * PUSH_OUTCOMES.len() + i].increment(n);
            }
        }
    }
}

impl Default for PushMetrics {
    fn default() -> Self {
        PushMetrics::new()
    }
}

/// The server's handles.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    transports: Vec<TransportMetrics>,
    pub(crate) login_seconds: Histogram,
    pub(crate) push_queue_seconds: Histogram,
    pub(crate) pushes: PushMetrics,
    pub(crate) relay: OpMetrics,
}

impl ServerMetrics {
    pub(crate) fn new() -> ServerMetrics {
        ServerMetrics {
            transports: TRANSPORTS
                .iter()
                .map(|t| TransportMetrics::new(t))
                .collect(),
            login_seconds: histogram!("longconn_login_duration_seconds"),
            push_queue_seconds: histogram!("longconn_push_queue_seconds"),
            pushes: PushMetrics::new(),
            relay: OpMetrics::new(
                "longconn_relay_op_duration_seconds",
                "longconn_relay_errors_total",
                &["push", "kick"],
            ),
        }
    }

    pub(crate) fn transport(&self, kind: TransportKind) -> &TransportMetrics {
        &self.transports[transport_index(kind)]
    }
}

static QUEUE_TIMING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns `longconn_push_queue_seconds` on or off (default off): it reads the clock when a
/// push lands in an empty connection queue, which a fan-out to 10,000 members does 10,000
/// times per publish, so a process without a recorder should not pay for it.
/// [`describe`] turns it on (an application that describes its metrics records them).
pub fn set_queue_timing(on: bool) {
    QUEUE_TIMING.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn queue_timing() -> bool {
    QUEUE_TIMING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The time to stamp pushes with as they are queued: `None` while queue timing is off.
/// A fan-out reads it once per batch of members and hands it to
/// [`crate::ConnHandle::push_stamped`], so 10,000 members cost one clock read, not 10,000.
pub fn queue_stamp() -> Option<std::time::Instant> {
    queue_timing().then(std::time::Instant::now)
}

/// `longconn_queue_drops_total`: pushes discarded from (or refused by) a connection's
/// queue. Registered at first use, so install the recorder before the first push.
pub(crate) fn queue_drops() -> &'static Counter {
    static DROPS: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    DROPS.get_or_init(|| counter!("longconn_queue_drops_total"))
}

/// Route-store operations: `longconn_route_store_op_duration_seconds{op}` and
/// `longconn_route_store_errors_total{op}`, op = register, unregister, lookup.
pub(crate) fn route_store_ops() -> &'static OpMetrics {
    static OPS: std::sync::OnceLock<OpMetrics> = std::sync::OnceLock::new();
    OPS.get_or_init(|| {
        OpMetrics::new(
            "longconn_route_store_op_duration_seconds",
            "longconn_route_store_errors_total",
            &["register", "unregister", "lookup"],
        )
    })
}

/// Latency and error handles for a fixed set of operations.
#[derive(Debug)]
pub(crate) struct OpMetrics {
    ops: Vec<(&'static str, Histogram, Counter)>,
}

impl OpMetrics {
    fn new(seconds: &'static str, errors: &'static str, ops: &[&'static str]) -> OpMetrics {
        OpMetrics {
            ops: ops
                .iter()
                .map(|&op| {
                    (
                        op,
                        histogram!(seconds, "op" => op),
                        counter!(errors, "op" => op),
                    )
                })
                .collect(),
        }
    }

    fn find(&self, op: &str) -> Option<&(&'static str, Histogram, Counter)> {
        self.ops.iter().find(|(name, _, _)| *name == op)
    }

    /// Records one `op` that took `took`; `failed` counts an error.
    pub(crate) fn record(&self, op: &str, took: Duration, failed: bool) {
        if let Some((_, seconds, errors)) = self.find(op) {
            seconds.record(took.as_secs_f64());
            if failed {
                errors.increment(1);
            }
        }
    }
}

/// Request outcomes (`outcome` label), in [`RequestOutcome`] order.
pub const REQUEST_OUTCOMES: [&str; 5] = ["ok", "backend_error", "timeout", "rejected", "no_route"];

/// What became of an upstream request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestOutcome {
    Ok = 0,
    BackendError = 1,
    Timeout = 2,
    Rejected = 3,
    NoRoute = 4,
}

/// Handles for one `business` label value.
#[derive(Debug)]
pub(crate) struct BusinessMetrics {
    outcomes: Vec<Counter>,
    seconds: Histogram,
}

impl BusinessMetrics {
    fn new(business: String) -> BusinessMetrics {
        BusinessMetrics {
            outcomes: REQUEST_OUTCOMES
                .iter()
                .map(|&o| {
                    counter!(
                        "longconn_upstream_requests_total",
                        "business" => business.clone(),
                        "outcome" => o
                    )
                })
                .collect(),
            seconds: histogram!("longconn_upstream_request_duration_seconds", "business" => business),
        }
    }

    pub(crate) fn record(&self, outcome: RequestOutcome, took: Option<Duration>) {
        self.outcomes[outcome as usize].increment(1);
        if let Some(took) = took {
            self.seconds.record(took.as_secs_f64());
        }
    }
}

/// The router's handles: one set per labelled business id, one for `other`.
#[derive(Debug)]
pub(crate) struct RouterMetrics {
    known: HashMap<u32, BusinessMetrics>,
    other: BusinessMetrics,
}

impl RouterMetrics {
    pub(crate) fn new(businesses: impl IntoIterator<Item = u32>) -> RouterMetrics {
        RouterMetrics {
            known: businesses
                .into_iter()
                .map(|b| (b, BusinessMetrics::new(b.to_string())))
                .collect(),
            other: BusinessMetrics::new("other".to_owned()),
        }
    }

    pub(crate) fn business(&self, business: u32) -> &BusinessMetrics {
        self.known.get(&business).unwrap_or(&self.other)
    }
}

/// The process collector's figures in the Prometheus text format (the standard
/// `process_*` names of the official clients): `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`. Read from
/// `/proc/self` at each call (Linux; elsewhere an empty string). An exporter appends it
/// to its scrape: the facade has no fractional counters, so CPU seconds cannot go
/// through it.
pub fn process_metrics_text() -> String {
    use std::fmt::Write;
    let Some(p) = read_process() else {
        return String::new();
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.rss_bytes,
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds,
    );
    if let Some(max) = p.max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    out
}

/// One reading of `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessReading {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub rss_bytes: f64,
    /// Open file descriptors.
    pub open_fds: f64,
    /// The soft limit on open files.
    pub max_fds: Option<f64>,
}

/// Reads `/proc/self/stat`, `/proc/self/statm`, `/proc/self/fd` and
/// `/proc/self/limits`; `None` where they do not exist.
pub fn read_process() -> Option<ProcessReading> {
    // Linux's USER_HZ and page size are 100 and 4096 on every platform Rust supports
    // with /proc; reading them needs libc (sysconf), which this crate does not use.
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let rss_pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line["Max open files".len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
    Some(ProcessReading {
        cpu_seconds: (utime + stime) / TICKS,
        rss_bytes: rss_pages * PAGE,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_cover_the_named_closes() {
        assert_eq!(
            reason_label(CloseReason::Local(Code::SlowConsumer)),
            "slow_consumer"
        );
        assert_eq!(
            reason_label(CloseReason::Local(Code::Replaced)),
            "duplicate_login"
        );
        assert_eq!(reason_label(CloseReason::Local(Code::Kicked)), "kicked");
        assert_eq!(reason_label(CloseReason::Local(Code::IdleTimeout)), "idle");
        assert_eq!(reason_label(CloseReason::Local(Code::GoingAway)), "drained");
        assert_eq!(reason_label(CloseReason::Peer(Code::Normal)), "peer_closed");
        assert_eq!(reason_label(CloseReason::Local(Code::Normal)), "closed");
    }

    #[test]
    fn process_reading_is_sane_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let p = read_process().expect("a reading");
        assert!(p.rss_bytes > 1e6, "rss {}", p.rss_bytes);
        assert!(p.open_fds >= 3.0);
        assert!(p.cpu_seconds >= 0.0);
    }
}

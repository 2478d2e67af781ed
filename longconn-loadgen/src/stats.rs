//! Counting what happened: [`Recorder`] (live, shared by a process's tasks), [`Report`]
//! (one phase of one process, serialisable so worker processes can hand it over) and
//! [`Summary`] (the merged result, printed as the last line of stdout).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Histogram shards: tasks record into `shard % SHARDS`, so they rarely share a lock.
const SHARDS: usize = 32;
/// Largest latency recorded, microseconds (larger values are clamped): 10 minutes.
const MAX_US: u64 = 600_000_000;

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds")
}

/// A histogram split into locked shards.
#[derive(Debug)]
pub struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
    /// Its Prometheus twin (`--metrics`), in seconds; a no-op unless named.
    prometheus: metrics::Histogram,
}

impl Default for ShardedHistogram {
    fn default() -> Self {
        ShardedHistogram {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            prometheus: metrics::Histogram::noop(),
        }
    }
}

impl ShardedHistogram {
    /// A histogram mirrored to the Prometheus histogram `name` (seconds).
    pub fn named(name: &'static str) -> ShardedHistogram {
        ShardedHistogram {
            prometheus: metrics::histogram!(name),
            ..ShardedHistogram::default()
        }
    }

    /// Records `us` microseconds from task `shard`.
    pub fn record(&self, shard: usize, us: u64) {
        self.prometheus.record(us as f64 / 1e6);
        let mut h = self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        h.saturating_record(us.clamp(1, MAX_US));
    }

    /// All shards in one histogram, emptying them.
    pub fn take(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let mut h = shard.lock().unwrap_or_else(|p| p.into_inner());
            all.add(&*h).expect("same bounds");
            h.reset();
        }
        all
    }
}

/// Live counters of one process for the phase that runs, mirrored to Prometheus.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Connections attempted.
    pub attempted: AtomicU64,
    /// Connections logged in (first time).
    pub established: AtomicU64,
    /// Connections that never logged in.
    pub failed: AtomicU64,
    /// Messages sent (pushes, publishes or requests).
    pub sent: AtomicU64,
    /// Messages received (pushes, or request answers).
    pub received: AtomicU64,
    /// Requests answered with an error, or pushes the gateway reported dropped.
    pub errors: AtomicU64,
    /// Reconnects (connections that came back after a loss, and churn reconnects).
    pub reconnects: AtomicU64,
    /// Push-to-receive or request latency, microseconds.
    pub latency: ShardedHistogram,
    /// Connect-and-login latency, microseconds.
    pub connect_latency: ShardedHistogram,
    /// Per `--target`, in the order given (empty: not counted per target).
    pub targets: Vec<TargetCounters>,
}

/// Live counters of one target.
#[derive(Debug, Default)]
pub struct TargetCounters {
    /// Connections logged in to this target.
    pub established: AtomicU64,
    /// Pushes received over connections to this target.
    pub received: AtomicU64,
}

impl Recorder {
    /// A recorder that also counts per target, for `n` targets.
    pub fn with_targets(n: usize) -> Recorder {
        Recorder {
            targets: (0..n).map(|_| TargetCounters::default()).collect(),
            latency: ShardedHistogram::named("loadgen_latency_seconds"),
            connect_latency: ShardedHistogram::named("loadgen_connect_latency_seconds"),
            ..Recorder::default()
        }
    }

    /// Counts a login on target `at` (and in the totals).
    pub fn established_on(&self, at: usize) {
        self.bump(&self.established, "loadgen_connects_established_total");
        if let Some(t) = self.targets.get(at) {
            t.established.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a push received over a connection to target `at` (and in the totals).
    pub fn received_on(&self, at: usize) {
        self.received_n_on(at, 1);
    }

    /// Counts `n` pushes received over a connection to target `at`: one update for
    /// all the pushes one read brought.
    pub fn received_n_on(&self, at: usize, n: u64) {
        if n == 0 {
            return;
        }
        self.bump_by(&self.received, "loadgen_received_total", n);
        if let Some(t) = self.targets.get(at) {
            t.received.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds 1 to `counter` and to its Prometheus twin.
    pub fn bump(&self, counter: &AtomicU64, name: &'static str) {
        self.bump_by(counter, name, 1);
    }

    fn bump_by(&self, counter: &AtomicU64, name: &'static str, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(name).increment(n);
    }

    /// Takes the phase's figures, leaving the recorder empty for the next phase.
    pub fn take(&self) -> Report {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        Report {
            counts: Counts {
                connections: take(&self.attempted),
                established: take(&self.established),
                failed: take(&self.failed),
                sent: take(&self.sent),
                received: take(&self.received),
                errors: take(&self.errors),
                reconnects: take(&self.reconnects),
                ..Counts::default()
            },
            latency: encode(&self.latency.take()),
            connect_latency: encode(&self.connect_latency.take()),
            per_target: self
                .targets
                .iter()
                .map(|t| TargetCounts {
                    established: take(&t.established),
                    received: take(&t.received),
                    ..TargetCounts::default()
                })
                .collect(),
            ..Report::default()
        }
    }
}

/// Microseconds since the Unix epoch, the timestamp carried in payloads.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(crate) fn encode(h: &Histogram<u64>) -> String {
    use base64::Engine;
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .expect("in-memory serialisation");
    base64::engine::general_purpose::STANDARD.encode(out)
}

pub(crate) fn decode(text: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine;
    if text.is_empty() {
        return Ok(histogram());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram: {e:?}"))
}

/// What a phase counted: the same fields in a process's [`Report`] and in a merged
/// [`Summary`] (flattened into both, so the JSON keys stay at the top level).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Connections attempted.
    pub connections: u64,
    /// Logged in.
    pub established: u64,
    /// Never logged in.
    pub failed: u64,
    /// Sent.
    pub sent: u64,
    /// Received.
    pub received: u64,
    /// Deliveries expected (pushes) or answers expected (requests).
    pub expected: u64,
    /// Errors.
    pub errors: u64,
    /// Deliveries the answering node reported as `unknown` (another node did not
    /// answer in time): devices for unicast, nodes for group publishes.
    #[serde(default)]
    pub unknown: u64,
    /// Reconnects.
    pub reconnects: u64,
    /// Connected when the phase ended.
    pub connected_at_end: u64,
}

impl Counts {
    /// received / expected (1.0 when nothing was expected).
    pub fn reach(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.received as f64 / self.expected as f64
        }
    }

    /// Adds every count of `other`.
    pub fn add(&mut self, other: &Counts) {
        self.connections += other.connections;
        self.established += other.established;
        self.failed += other.failed;
        self.sent += other.sent;
        self.received += other.received;
        self.expected += other.expected;
        self.errors += other.errors;
        self.unknown += other.unknown;
        self.reconnects += other.reconnects;
        self.connected_at_end += other.connected_at_end;
    }
}

/// One phase of one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// From the first send (or connect) to the last receive, seconds.
    pub active_s: f64,
    /// Latency histogram, V2-serialised, base64.
    pub latency: String,
    /// Connect latency histogram, V2-serialised, base64.
    pub connect_latency: String,
    /// Per target, in `--target` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_target: Vec<TargetCounts>,
    /// `/v1/access` figures (`--control` runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Box<super::control::AccessReport>>,
    /// Logins, losses and `try_later` refusals per 100 ms (connect phases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Box<super::timeline::Timeline>>,
    /// The members that stopped reading (`--slow-members`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<Box<super::slow::SlowReport>>,
}

/// One target's share of a phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetCounts {
    /// The target's URL.
    pub target: String,
    /// Connections logged in to it.
    pub established: u64,
    /// Pushes received over its connections.
    pub received: u64,
    /// Pushes its connections should have received: connected members times the
    /// phase's messages (push phases; assumes every message was sent, which the
    /// overall `sent` shows).
    pub expected: u64,
    /// received / expected (1.0 when nothing was expected).
    pub reach_rate: f64,
}

/// Percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The merged figures of one phase (or of a whole run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario name (or the mode).
    pub scenario: String,
    /// Phase kind, or `total`.
    pub phase: String,
    /// Target URL.
    pub target: String,
    /// The counts (summed over processes, and over phases in a run's total).
    #[serde(flatten)]
    pub counts: Counts,
    /// received / expected (1.0 when nothing was expected).
    pub reach_rate: f64,
    /// Push-to-receive or request latency.
    pub latency_us: Percentiles,
    /// Connect-and-login latency.
    pub connect_latency_us: Percentiles,
    /// received (or established, for connect phases) per active second.
    pub throughput_per_s: f64,
    /// Wall-clock seconds of the phase (or run).
    pub duration_s: f64,
    /// Worker processes.
    pub procs: u16,
    /// CPU seconds the load generator used (all its processes).
    pub load_cpu_s: f64,
    /// CPU seconds the server (`--server-pid`) used from `Go` to the end of the phase.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_cpu_s: Option<f64>,
    /// Round trip of the phase's group publishes through the HTTP API (multicast).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub publish_rtt_us: Option<Percentiles>,
    /// Per target, when there are several (`--target a,b,..`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub per_target: Vec<TargetCounts>,
    /// Per-phase summaries (in the run total only).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub phases: Vec<Summary>,
    /// `/v1/access` latency and the spread over nodes (`--control` runs only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub access: Option<super::control::AccessSummary>,
    /// Connect phases: logins, losses and `try_later` refusals per 100 ms over all
    /// processes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connect_timeline: Option<super::timeline::Timeline>,
    /// Connect phases: the first loss of connections and the way back.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recovery: Option<super::timeline::Recovery>,
    /// The members that stopped reading (`--slow-members`), apart from the rest.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slow_members: Option<super::slow::SlowSummary>,
}

/// Merges reports of one phase from every process.
///
/// # Errors
/// A report's histogram does not decode.
pub fn merge(
    scenario: &str,
    phase: &str,
    target: &str,
    reports: &[Report],
    duration_s: f64,
) -> Result<Summary, String> {
    let mut latency = histogram();
    let mut connect = histogram();
    let mut s = Summary {
        scenario: scenario.to_owned(),
        phase: phase.to_owned(),
        target: target.to_owned(),
        duration_s,
        procs: reports.len() as u16,
        ..Summary::default()
    };
    let mut active_s: f64 = 0.0;
    for r in reports {
        s.counts.add(&r.counts);
        if s.per_target.len() < r.per_target.len() {
            s.per_target
                .resize(r.per_target.len(), TargetCounts::default());
        }
        for (sum, t) in s.per_target.iter_mut().zip(&r.per_target) {
            if sum.target.is_empty() {
                sum.target.clone_from(&t.target);
            } else if sum.target != t.target {
                return Err(format!(
                    "reports disagree on target order: `{}` and `{}`",
                    sum.target, t.target
                ));
            }
            sum.established += t.established;
            sum.received += t.received;
            sum.expected += t.expected;
        }
        active_s = active_s.max(r.active_s);
        latency
            .add(decode(&r.latency)?)
            .map_err(|e| e.to_string())?;
        connect
            .add(decode(&r.connect_latency)?)
            .map_err(|e| e.to_string())?;
    }
    for t in &mut s.per_target {
        t.reach_rate = if t.expected == 0 {
            1.0
        } else {
            t.received as f64 / t.expected as f64
        };
    }
    if s.per_target.len() < 2 {
        s.per_target.clear();
    }
    s.access = super::control::merge(reports.iter().filter_map(|r| r.access.as_deref()))?;
    s.connect_timeline =
        super::timeline::Timeline::merge(reports.iter().filter_map(|r| r.timeline.as_deref()))?;
    s.recovery = s.connect_timeline.as_ref().and_then(|t| t.recovery());
    s.slow_members =
        super::slow::SlowSummary::merge(reports.iter().filter_map(|r| r.slow.as_deref()));
    s.reach_rate = s.counts.reach();
    s.latency_us = Percentiles::of(&latency);
    s.connect_latency_us = Percentiles::of(&connect);
    let done = if phase == "connect" {
        s.counts.established
    } else {
        s.counts.received
    };
    s.throughput_per_s = if active_s > 0.0 {
        done as f64 / active_s
    } else {
        0.0
    };
    Ok(s)
}

impl Summary {
    /// The run's total over its phases: sums, the worst reach, the slowest latencies.
    pub fn total(scenario: &str, target: &str, phases: Vec<Summary>, duration_s: f64) -> Summary {
        let mut t = Summary {
            scenario: scenario.to_owned(),
            phase: "total".into(),
            target: target.to_owned(),
            duration_s,
            reach_rate: 1.0,
            ..Summary::default()
        };
        for p in &phases {
            t.counts.add(&p.counts);
            // Connected at the end of the run: the last phase's figure, not a sum.
            t.counts.connected_at_end = p.counts.connected_at_end;
            t.procs = t.procs.max(p.procs);
            t.reach_rate = t.reach_rate.min(p.reach_rate);
            t.throughput_per_s = t.throughput_per_s.max(p.throughput_per_s);
            let worst = |a: Percentiles, b: Percentiles| Percentiles {
                p50: a.p50.max(b.p50),
                p90: a.p90.max(b.p90),
                p99: a.p99.max(b.p99),
                p999: a.p999.max(b.p999),
                max: a.max.max(b.max),
            };
            t.latency_us = worst(t.latency_us, p.latency_us);
            t.connect_latency_us = worst(t.connect_latency_us, p.connect_latency_us);
        }
        t.phases = phases;
        t
    }

    /// A few readable lines (for stderr).
    pub fn human(&self) -> String {
        let l = &self.latency_us;
        let mut out = format!(
            "{phase:<9} conns {est}/{conns} (failed {failed}), sent {sent}, received \
             {recv}/{exp} (reach {reach:.4}, unknown {unknown}), {tp:.0}/s, latency p50 {p50} us p99 {p99} us \
             max {max} us, reconnects {rc}, connected at end {end}, {dur:.1} s",
            phase = self.phase,
            est = self.counts.established,
            conns = self.counts.connections,
            failed = self.counts.failed,
            sent = self.counts.sent,
            recv = self.counts.received,
            exp = self.counts.expected,
            reach = self.reach_rate,
            unknown = self.counts.unknown,
            tp = self.throughput_per_s,
            p50 = l.p50,
            p99 = l.p99,
            max = l.max,
            rc = self.counts.reconnects,
            end = self.counts.connected_at_end,
            dur = self.duration_s,
        );
        for t in &self.per_target {
            out.push_str(&format!(
                "\n  {}: logged in {}, received {}/{} (reach {:.4})",
                t.target, t.established, t.received, t.expected, t.reach_rate
            ));
        }
        if let Some(access) = &self.access {
            out.push('\n');
            out.push_str(&access.human());
        }
        if let Some(r) = &self.recovery {
            out.push_str(&format!(
                "\n  lost {} of {} at {:.1} s, all back after {}, peak {} logins/s, {} try_later",
                r.lost,
                r.before,
                r.drop_at_s,
                r.all_back_after_s
                    .map_or("never".to_owned(), |s| format!("{s:.1} s")),
                r.peak_connects_per_s,
                r.try_later
            ));
        }
        if let Some(slow) = &self.slow_members {
            out.push('\n');
            out.push_str(&slow.human());
        }
        out
    }
}

/// CPU seconds (user + system) process `pid` has used so far, from /proc/PID/stat.
pub fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and
    // 13th of those, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// A progress bar on stderr, or a hidden one when `hidden`.
pub fn progress_bar(len: u64, what: &'static str, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} {per_sec} {elapsed}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_merge_across_processes_and_keep_their_shape() {
        let recorder = Recorder::default();
        for (shard, us) in [(0, 100), (1, 200), (2, 300), (3, 10_000)] {
            recorder.latency.record(shard, us);
            recorder.bump(&recorder.received, "test_received");
        }
        recorder.established.store(2, Ordering::Relaxed);
        let mut a = recorder.take();
        a.counts.expected = 4;
        a.active_s = 2.0;
        assert_eq!(
            recorder.take().counts.received,
            0,
            "taking empties the recorder"
        );
        let b = Report {
            counts: Counts {
                expected: 4,
                received: 3,
                ..Counts::default()
            },
            latency: a.latency.clone(),
            ..Report::default()
        };
        // Through JSON, as a worker process hands it over.
        let a: Report = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let s = merge("sc", "multicast", "tcp://x", &[a, b], 3.0).unwrap();
        assert_eq!((s.counts.received, s.counts.expected), (7, 8));
        assert!((s.reach_rate - 0.875).abs() < 1e-9);
        assert_eq!(
            s.latency_us.max, 10_007,
            "hdr rounding at 3 digits: {:?}",
            s.latency_us
        );
        assert!(
            s.latency_us.p50 >= 200 && s.latency_us.p50 <= 201,
            "{:?}",
            s.latency_us
        );
        assert!((s.throughput_per_s - 3.5).abs() < 1e-9);

        let total = Summary::total("sc", "tcp://x", vec![s], 3.5);
        let json = serde_json::to_value(&total).unwrap();
        for key in [
            "scenario",
            "target",
            "connections",
            "established",
            "failed",
            "sent",
            "received",
            "reach_rate",
            "latency_us",
            "throughput_per_s",
            "reconnects",
            "connected_at_end",
            "duration_s",
        ] {
            assert!(json.get(key).is_some(), "summary lacks `{key}`: {json}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json["latency_us"][key].is_u64(), "latency_us.{key}");
        }
        assert_eq!(json["phases"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn per_target_counts_add_up_by_position_and_refuse_another_order() {
        let report = |targets: &[(&str, u64, u64, u64)]| Report {
            per_target: targets
                .iter()
                .map(|&(target, established, received, expected)| TargetCounts {
                    target: target.into(),
                    established,
                    received,
                    expected,
                    reach_rate: 0.0,
                })
                .collect(),
            ..Report::default()
        };
        let a = report(&[("tcp://a", 5, 10, 10), ("tcp://b", 5, 6, 10)]);
        let b = report(&[("tcp://a", 4, 8, 8), ("tcp://b", 4, 8, 8)]);
        let s = merge("sc", "unicast", "tcp://a,tcp://b", &[a.clone(), b], 1.0).unwrap();
        let got: Vec<_> = s
            .per_target
            .iter()
            .map(|t| (t.target.as_str(), t.established, t.received, t.expected))
            .collect();
        assert_eq!(got, [("tcp://a", 9, 18, 18), ("tcp://b", 9, 14, 18)]);
        assert!((s.per_target[1].reach_rate - 14.0 / 18.0).abs() < 1e-9);

        let swapped = report(&[("tcp://b", 1, 1, 1), ("tcp://a", 1, 1, 1)]);
        let err = merge("sc", "unicast", "x", &[a, swapped], 1.0).unwrap_err();
        assert!(err.contains("target order"), "{err}");

        let one = report(&[("tcp://a", 3, 3, 3)]);
        let s = merge("sc", "unicast", "tcp://a", &[one], 1.0).unwrap();
        assert!(s.per_target.is_empty(), "one target: no breakdown");
    }
}

//! Client quality: aggregation of the `QualityReport`s clients send
//! (docs/PROTOCOL.md section 4.1) into a [`QualityBoard`].
//!
//! Each report puts its connection into a network bucket ([`NetworkBucket`]: weak,
//! medium, good) from the report's own ping loss and median round trip, with the
//! thresholds of [`QualityConfig`]. The board then adds the report's per-transport
//! counts to the cell (bucket, transport), so that transports compare under each
//! network condition: connect success rate and connect latency percentiles, ping
//! success rate and round-trip percentiles ([`QualityBoard::summary`]). Every report is
//! also recorded through the `metrics` facade (`longconn_quality_*`, docs/METRICS.md);
//! no exporter is installed here.

use std::collections::BTreeMap;
use std::sync::Mutex;

use longconn_core::ConfigError;
use longconn_core::protocol::{
    LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKETS, QualityReport, ReportTransport,
};

/// Value (ms) that stands for the open last latency bucket (above 5000 ms) where a
/// number is needed: bucketing and the metrics histograms.
pub const OPEN_BUCKET_MS: u64 = 10_000;

/// The thresholds that put a report into a network bucket. Build with
/// [`QualityConfig::builder`].
///
/// A report's loss is `(pings - answered) / pings` over all its entries; its round trip
/// is the median of its ping round trips, taken as the upper bound of the latency bucket
/// that holds the median (10, 25, 50, 100, 250, 500, 1000, 2500, 5000 ms, or 10,000 ms for
/// the open bucket). Then:
/// - **weak**: loss above `weak_loss` or round trip above `weak_rtt_ms`;
/// - **good**: otherwise, loss at most `good_loss` and round trip at most `good_rtt_ms`;
/// - **medium**: everything else;
/// - **unknown**: the report has no pings (its connects are still counted there).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityConfig {
    good_loss: f64,
    good_rtt_ms: u64,
    weak_loss: f64,
    weak_rtt_ms: u64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            good_loss: 0.01,
            good_rtt_ms: 100,
            weak_loss: 0.05,
            weak_rtt_ms: 300,
        }
    }
}

impl QualityConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> QualityConfigBuilder {
        QualityConfigBuilder {
            config: QualityConfig::default(),
        }
    }

    /// Largest ping loss (0..=1) of a good network. Default 0.01 (1 %).
    pub fn good_loss(&self) -> f64 {
        self.good_loss
    }

    /// Largest median round trip of a good network, ms. Default 100.
    pub fn good_rtt_ms(&self) -> u64 {
        self.good_rtt_ms
    }

    /// Ping loss (0..=1) above which a network is weak. Default 0.05 (5 %); at least
    /// `good_loss`.
    pub fn weak_loss(&self) -> f64 {
        self.weak_loss
    }

    /// Median round trip above which a network is weak, ms. Default 300; at least
    /// `good_rtt_ms`.
    pub fn weak_rtt_ms(&self) -> u64 {
        self.weak_rtt_ms
    }

    /// The bucket of one report.
    pub fn bucket(&self, report: &QualityReport) -> NetworkBucket {
        let mut rtt = [0u64; LATENCY_BUCKETS];
        let mut pings = 0u64;
        for e in &report.transports {
            pings += e.pings as u64;
            for (sum, &c) in rtt.iter_mut().zip(&e.rtt) {
                *sum += c as u64;
            }
        }
        if pings == 0 {
            return NetworkBucket::Unknown;
        }
        let answered: u64 = rtt.iter().sum();
        let loss = (pings - answered.min(pings)) as f64 / pings as f64;
        // All pings lost: no round trip, and the loss alone decides (weak).
        let median = percentile_ms(&rtt, 0.5).unwrap_or(OPEN_BUCKET_MS);
        if loss > self.weak_loss || median > self.weak_rtt_ms {
            NetworkBucket::Weak
        } else if loss <= self.good_loss && median <= self.good_rtt_ms {
            NetworkBucket::Good
        } else {
            NetworkBucket::Medium
        }
    }
}

/// Builder for [`QualityConfig`].
#[derive(Debug, Clone)]
pub struct QualityConfigBuilder {
    config: QualityConfig,
}

impl QualityConfigBuilder {
    /// See [`QualityConfig::good_loss`].
    pub fn good_loss(mut self, value: f64) -> Self {
        self.config.good_loss = value;
        self
    }
    /// See [`QualityConfig::good_rtt_ms`].
    pub fn good_rtt_ms(mut self, value: u64) -> Self {
        self.config.good_rtt_ms = value;
        self
    }
    /// See [`QualityConfig::weak_loss`].
    pub fn weak_loss(mut self, value: f64) -> Self {
        self.config.weak_loss = value;
        self
    }
    /// See [`QualityConfig::weak_rtt_ms`].
    pub fn weak_rtt_ms(mut self, value: u64) -> Self {
        self.config.weak_rtt_ms = value;
        self
    }

    /// Checks the thresholds: losses in 0..=1, `good_loss <= weak_loss`,
    /// `good_rtt_ms <= weak_rtt_ms`.
    pub fn build(self) -> Result<QualityConfig, ConfigError> {
        let c = self.config;
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        if !unit(c.good_loss) || !unit(c.weak_loss) {
            return Err(ConfigError {
                field: "quality loss thresholds",
                reason: "must be between 0 and 1",
            });
        }
        if c.good_loss > c.weak_loss {
            return Err(ConfigError {
                field: "good_loss",
                reason: "must be at most weak_loss",
            });
        }
        if c.good_rtt_ms > c.weak_rtt_ms {
            return Err(ConfigError {
                field: "good_rtt_ms",
                reason: "must be at most weak_rtt_ms",
            });
        }
        Ok(c)
    }
}

/// A network quality bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkBucket {
    /// High loss or a long round trip.
    Weak,
    /// Between weak and good.
    Medium,
    /// Low loss and a short round trip.
    Good,
    /// The report had no pings.
    Unknown,
}

impl NetworkBucket {
    /// Every bucket, in display order.
    pub const ALL: [NetworkBucket; 4] = [
        NetworkBucket::Weak,
        NetworkBucket::Medium,
        NetworkBucket::Good,
        NetworkBucket::Unknown,
    ];

    /// The lowercase name, also the `bucket` metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            NetworkBucket::Weak => "weak",
            NetworkBucket::Medium => "medium",
            NetworkBucket::Good => "good",
            NetworkBucket::Unknown => "unknown",
        }
    }
}

/// The name of a `NETWORK` value: `unknown`, `wifi`, `cellular`, `wired` (values above 3
/// cannot be decoded, they are `unknown` here too).
pub const fn network_name(network: u8) -> &'static str {
    match network {
        1 => "wifi",
        2 => "cellular",
        3 => "wired",
        _ => "unknown",
    }
}

/// The upper bound (ms) of the latency bucket that holds the `q` quantile of a bucketed
/// histogram: [`OPEN_BUCKET_MS`] for the open bucket, `None` for an empty histogram.
fn percentile_ms(counts: &[u64; LATENCY_BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_upper_ms(i));
        }
    }
    Some(OPEN_BUCKET_MS)
}

fn bucket_upper_ms(i: usize) -> u64 {
    LATENCY_BUCKET_BOUNDS_MS
        .get(i)
        .copied()
        .unwrap_or(OPEN_BUCKET_MS)
}

/// Sums for one (bucket, transport) cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cell {
    connect_attempts: u64,
    connect_latency: [u64; LATENCY_BUCKETS],
    pings: u64,
    rtt: [u64; LATENCY_BUCKETS],
}

#[derive(Debug, Default)]
struct Tables {
    cells: BTreeMap<(NetworkBucket, ReportTransport), Cell>,
    reports: BTreeMap<(NetworkBucket, u8), u64>,
}

/// Percentiles of a bucketed latency histogram, each the upper bound (ms) of the bucket
/// that holds it; `None` in the open bucket (above 5000 ms) or without samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
}

impl Percentiles {
    fn of(counts: &[u64; LATENCY_BUCKETS]) -> Percentiles {
        let p = |q| percentile_ms(counts, q).filter(|&ms| ms != OPEN_BUCKET_MS);
        Percentiles {
            p50: p(0.5),
            p90: p(0.9),
            p99: p(0.99),
        }
    }
}

/// One (bucket, transport) cell of [`QualityBoard::summary`].
#[derive(Debug, Clone, PartialEq)]
pub struct CellSummary {
    /// The network bucket.
    pub bucket: NetworkBucket,
    /// The transport.
    pub transport: ReportTransport,
    /// Connect attempts that ended.
    pub connect_attempts: u64,
    /// Successful connects.
    pub connect_successes: u64,
    /// `connect_successes / connect_attempts`; `None` without attempts.
    pub connect_success_rate: Option<f64>,
    /// Connect latency of the successful connects.
    pub connect_latency: Percentiles,
    /// Pings whose fate is known.
    pub pings: u64,
    /// Answered pings.
    pub pongs: u64,
    /// `pongs / pings`; `None` without pings.
    pub ping_success_rate: Option<f64>,
    /// Round trips of the answered pings.
    pub rtt: Percentiles,
}

/// Reports by bucket and network type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportCount {
    /// The network bucket the reports went into.
    pub bucket: NetworkBucket,
    /// The reports' `NETWORK` value.
    pub network: u8,
    /// How many.
    pub reports: u64,
}

/// What the board holds, cell by cell ([`QualityBoard::summary`]).
#[derive(Debug, Clone, PartialEq)]
pub struct QualitySummary {
    /// Reports by bucket and network, in bucket order.
    pub reports: Vec<ReportCount>,
    /// One entry per (bucket, transport) that received counts, in bucket then transport
    /// id order.
    pub cells: Vec<CellSummary>,
}

/// Aggregates quality reports since the server started. One per server
/// ([`crate::Server::quality`]); cheap to share.
#[derive(Debug, Default)]
pub struct QualityBoard {
    config: QualityConfig,
    tables: Mutex<Tables>,
}

impl QualityBoard {
    /// An empty board bucketing with `config`.
    pub fn new(config: QualityConfig) -> QualityBoard {
        QualityBoard {
            config,
            tables: Mutex::new(Tables::default()),
        }
    }

    /// The thresholds in use.
    pub fn config(&self) -> &QualityConfig {
        &self.config
    }

    /// Adds one report from a client on `network`; returns the bucket it went into.
    pub fn record(&self, network: u8, report: &QualityReport) -> NetworkBucket {
        let bucket = self.config.bucket(report);
        record_metrics(bucket, network, report);
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        *t.reports.entry((bucket, network)).or_default() += 1;
        for e in &report.transports {
            let cell = t.cells.entry((bucket, e.transport)).or_default();
            cell.connect_attempts += e.connect_attempts as u64;
            cell.pings += e.pings as u64;
            for i in 0..LATENCY_BUCKETS {
                cell.connect_latency[i] += e.connect_latency[i] as u64;
                cell.rtt[i] += e.rtt[i] as u64;
            }
        }
        bucket
    }

    /// The table by bucket and transport.
    pub fn summary(&self) -> QualitySummary {
        let t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let rate = |ok: u64, all: u64| (all > 0).then(|| ok as f64 / all as f64);
        QualitySummary {
            reports: t
                .reports
                .iter()
                .map(|(&(bucket, network), &reports)| ReportCount {
                    bucket,
                    network,
                    reports,
                })
                .collect(),
            cells: t
                .cells
                .iter()
                .map(|(&(bucket, transport), c)| {
                    let ok: u64 = c.connect_latency.iter().sum();
                    let pongs: u64 = c.rtt.iter().sum();
                    CellSummary {
                        bucket,
                        transport,
                        connect_attempts: c.connect_attempts,
                        connect_successes: ok,
                        connect_success_rate: rate(ok, c.connect_attempts),
                        connect_latency: Percentiles::of(&c.connect_latency),
                        pings: c.pings,
                        pongs,
                        ping_success_rate: rate(pongs, c.pings),
                        rtt: Percentiles::of(&c.rtt),
                    }
                })
                .collect(),
        }
    }
}

/// Records one report through the `metrics` facade (names in docs/METRICS.md). The
/// histograms get each bucket's count at the bucket's upper bound (10 s for the open
/// bucket), so exporter buckets on the same bounds count exactly.
fn record_metrics(bucket: NetworkBucket, network: u8, report: &QualityReport) {
    metrics::counter!(
        "longconn_quality_reports_total",
        "bucket" => bucket.name(),
        "network" => network_name(network),
    )
    .increment(1);
    for e in &report.transports {
        let labels = [("transport", e.transport.name()), ("bucket", bucket.name())];
        metrics::counter!("longconn_quality_connect_attempts_total", &labels)
            .increment(e.connect_attempts as u64);
        metrics::counter!("longconn_quality_connect_successes_total", &labels)
            .increment(e.connects_ok() as u64);
        metrics::counter!("longconn_quality_pings_total", &labels).increment(e.pings as u64);
        metrics::counter!("longconn_quality_pongs_total", &labels).increment(e.pongs() as u64);
        let connect = metrics::histogram!("longconn_quality_connect_latency_seconds", &labels);
        let rtt = metrics::histogram!("longconn_quality_ping_rtt_seconds", &labels);
        for i in 0..LATENCY_BUCKETS {
            let seconds = bucket_upper_ms(i) as f64 / 1000.0;
            if e.connect_latency[i] > 0 {
                connect.record_many(seconds, e.connect_latency[i] as usize);
            }
            if e.rtt[i] > 0 {
                rtt.record_many(seconds, e.rtt[i] as usize);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longconn_core::protocol::TransportReport;

    /// A report of one transport: `ok` connects at `connect_ms`, `fail` failed connects,
    /// `pongs` pings answered in `rtt_ms`, `lost` pings lost.
    fn report(
        transport: ReportTransport,
        ok: u16,
        fail: u16,
        connect_ms: u64,
        pongs: u16,
        lost: u16,
        rtt_ms: u64,
    ) -> QualityReport {
        let mut e = TransportReport::new(transport);
        (0..ok).for_each(|_| e.record_connect(Some(connect_ms)));
        (0..fail).for_each(|_| e.record_connect(None));
        (0..pongs).for_each(|_| e.record_ping(Some(rtt_ms)));
        (0..lost).for_each(|_| e.record_ping(None));
        QualityReport {
            version: 1,
            transports: vec![e],
        }
    }

    #[test]
    fn reports_are_bucketed_by_loss_and_median_round_trip() {
        let c = QualityConfig::default();
        let tcp = ReportTransport::Tcp;
        assert_eq!(
            c.bucket(&report(tcp, 1, 0, 5, 100, 0, 40)),
            NetworkBucket::Good
        );
        assert_eq!(
            c.bucket(&report(tcp, 1, 0, 5, 99, 1, 100)),
            NetworkBucket::Good
        );
        // 2 % loss: not good, not weak.
        assert_eq!(
            c.bucket(&report(tcp, 1, 0, 5, 98, 2, 40)),
            NetworkBucket::Medium
        );
        // Median in the 100..250 ms bucket (250 <= 300): medium.
        assert_eq!(
            c.bucket(&report(tcp, 1, 0, 5, 10, 0, 200)),
            NetworkBucket::Medium
        );
        // Median in the 250..500 ms bucket: weak.
        assert_eq!(
            c.bucket(&report(tcp, 1, 0, 5, 10, 0, 400)),
            NetworkBucket::Weak
        );
        // 6 % loss: weak whatever the round trip.
        assert_eq!(
            c.bucket(&report(tcp, 1, 0, 5, 94, 6, 5)),
            NetworkBucket::Weak
        );
        // Every ping lost: weak.
        assert_eq!(
            c.bucket(&report(tcp, 0, 1, 5, 0, 3, 5)),
            NetworkBucket::Weak
        );
        assert_eq!(
            c.bucket(&report(tcp, 1, 0, 5, 0, 0, 5)),
            NetworkBucket::Unknown
        );
        // Other thresholds move the same report.
        let strict = QualityConfig::builder()
            .good_rtt_ms(25)
            .weak_rtt_ms(50)
            .build()
            .unwrap();
        assert_eq!(
            strict.bucket(&report(tcp, 1, 0, 5, 100, 0, 40)),
            NetworkBucket::Medium
        );
        assert_eq!(
            strict.bucket(&report(tcp, 1, 0, 5, 100, 0, 60)),
            NetworkBucket::Weak
        );
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(QualityConfig::builder().good_loss(1.5).build().is_err());
        assert!(QualityConfig::builder().good_loss(0.2).build().is_err());
        assert!(QualityConfig::builder().good_rtt_ms(400).build().is_err());
        assert!(QualityConfig::builder().weak_loss(-0.1).build().is_err());
        assert_eq!(
            QualityConfig::builder().build().unwrap(),
            QualityConfig::default()
        );
    }

    #[test]
    fn the_board_sums_cells_and_computes_rates_and_percentiles() {
        let board = QualityBoard::new(QualityConfig::default());
        let ws = ReportTransport::Ws;
        let quic = ReportTransport::Quic;
        assert_eq!(
            board.record(1, &report(ws, 3, 1, 40, 10, 0, 20)),
            NetworkBucket::Good
        );
        assert_eq!(
            board.record(1, &report(ws, 1, 0, 400, 10, 0, 20)),
            NetworkBucket::Good
        );
        assert_eq!(
            board.record(2, &report(quic, 1, 1, 60, 9, 1, 30)),
            NetworkBucket::Weak
        );
        let s = board.summary();
        assert_eq!(
            s.reports,
            [
                ReportCount {
                    bucket: NetworkBucket::Weak,
                    network: 2,
                    reports: 1
                },
                ReportCount {
                    bucket: NetworkBucket::Good,
                    network: 1,
                    reports: 2
                },
            ]
        );
        assert_eq!(s.cells.len(), 2);
        let weak = &s.cells[0];
        assert_eq!((weak.bucket, weak.transport), (NetworkBucket::Weak, quic));
        assert_eq!((weak.connect_attempts, weak.connect_successes), (2, 1));
        assert_eq!(weak.connect_success_rate, Some(0.5));
        assert_eq!(weak.ping_success_rate, Some(0.9));
        let good = &s.cells[1];
        assert_eq!((good.bucket, good.transport), (NetworkBucket::Good, ws));
        assert_eq!((good.connect_attempts, good.connect_successes), (5, 4));
        assert_eq!(good.connect_success_rate, Some(0.8));
        // Three connects at 40 ms (<= 50), one at 400 ms (<= 500).
        assert_eq!(
            good.connect_latency,
            Percentiles {
                p50: Some(50),
                p90: Some(500),
                p99: Some(500)
            }
        );
        assert_eq!(good.rtt.p99, Some(25));
        assert_eq!((good.pings, good.pongs), (20, 20));
    }

    #[test]
    fn percentiles_in_the_open_bucket_are_none() {
        let mut counts = [0u64; LATENCY_BUCKETS];
        counts[LATENCY_BUCKETS - 1] = 1;
        assert_eq!(Percentiles::of(&counts).p50, None);
        assert_eq!(Percentiles::of(&[0; LATENCY_BUCKETS]).p99, None);
        counts[0] = 99;
        assert_eq!(Percentiles::of(&counts).p99, Some(10));
        counts[0] = 98;
        assert_eq!(Percentiles::of(&counts).p99, None);
    }
}

//! The body of a `QualityReport` frame (docs/PROTOCOL.md section 4.1): per transport,
//! connect attempts and pings since the previous report, with latency histograms.
//!
//! ```text
//! 0  version  u8   1
//! 1  count    u8   number of entries (0..=5)
//! 2  entries  count x 45 bytes, in strictly ascending transport id order:
//!      transport        u8        0 tcp, 1 tls, 2 ws, 3 wss, 4 quic
//!      connect_attempts u16       attempts that ended (success or failure)
//!      connect_latency  10 x u16  successful attempts by latency bucket
//!      pings            u16       pings whose fate is known (answered or lost)
//!      rtt              10 x u16  answered pings by round-trip bucket
//! ```
//!
//! All integers are big-endian. A body is at most [`MAX_REPORT_LEN`] bytes, and in each
//! entry the bucket counts sum to at most the attempts (pings) they belong to.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// The report body version this crate writes and reads.
pub const REPORT_VERSION: u8 = 1;
/// Largest report body, bytes.
pub const MAX_REPORT_LEN: usize = 256;
/// Bytes of one entry.
pub const REPORT_ENTRY_LEN: usize = 45;
/// Number of latency buckets of each histogram.
pub const LATENCY_BUCKETS: usize = 10;
/// Upper bounds (inclusive, milliseconds) of the first nine latency buckets; the tenth
/// bucket is open (above 5000 ms).
pub const LATENCY_BUCKET_BOUNDS_MS: [u64; LATENCY_BUCKETS - 1] =
    [10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/// The bucket (0..=9) of a latency in milliseconds.
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_MS
        .iter()
        .position(|&bound| ms <= bound)
        .unwrap_or(LATENCY_BUCKETS - 1)
}

/// A transport a report entry is about (the entry's id byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ReportTransport {
    /// 0: plain TCP.
    Tcp = 0,
    /// 1: TLS over TCP.
    Tls = 1,
    /// 2: WebSocket.
    Ws = 2,
    /// 3: WebSocket over TLS.
    Wss = 3,
    /// 4: QUIC.
    Quic = 4,
}

impl ReportTransport {
    /// Every transport, in id order.
    pub const ALL: [ReportTransport; 5] = [
        ReportTransport::Tcp,
        ReportTransport::Tls,
        ReportTransport::Ws,
        ReportTransport::Wss,
        ReportTransport::Quic,
    ];

    /// The transport of an id byte.
    pub fn from_u8(id: u8) -> Option<ReportTransport> {
        ReportTransport::ALL.get(id as usize).copied()
    }

    /// The lowercase name (`"tcp"`, ..., `"quic"`), also used as a metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            ReportTransport::Tcp => "tcp",
            ReportTransport::Tls => "tls",
            ReportTransport::Ws => "ws",
            ReportTransport::Wss => "wss",
            ReportTransport::Quic => "quic",
        }
    }
}

impl fmt::Display for ReportTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One transport's counts since the previous report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportReport {
    /// The transport.
    pub transport: ReportTransport,
    /// Connect attempts that ended (success or failure).
    pub connect_attempts: u16,
    /// Successful attempts by latency bucket.
    pub connect_latency: [u16; LATENCY_BUCKETS],
    /// Pings whose fate is known (answered or lost).
    pub pings: u16,
    /// Answered pings by round-trip bucket.
    pub rtt: [u16; LATENCY_BUCKETS],
}

impl TransportReport {
    /// An entry with every count zero.
    pub fn new(transport: ReportTransport) -> TransportReport {
        TransportReport {
            transport,
            connect_attempts: 0,
            connect_latency: [0; LATENCY_BUCKETS],
            pings: 0,
            rtt: [0; LATENCY_BUCKETS],
        }
    }

    /// Successful connects (the sum of `connect_latency`).
    pub fn connects_ok(&self) -> u32 {
        self.connect_latency.iter().map(|&c| c as u32).sum()
    }

    /// Answered pings (the sum of `rtt`).
    pub fn pongs(&self) -> u32 {
        self.rtt.iter().map(|&c| c as u32).sum()
    }

    /// Counts one ended connect attempt: its latency, or `None` for a failure. Counts
    /// stop at 65,535 (the attempt is then not counted at all, so sums stay consistent).
    pub fn record_connect(&mut self, latency_ms: Option<u64>) {
        if self.connect_attempts == u16::MAX {
            return;
        }
        self.connect_attempts += 1;
        if let Some(ms) = latency_ms {
            self.connect_latency[latency_bucket(ms)] += 1;
        }
    }

    /// Counts one ping whose fate is known: its round trip, or `None` when it was lost.
    pub fn record_ping(&mut self, rtt_ms: Option<u64>) {
        if self.pings == u16::MAX {
            return;
        }
        self.pings += 1;
        if let Some(ms) = rtt_ms {
            self.rtt[latency_bucket(ms)] += 1;
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.connect_attempts == 0 && self.pings == 0
    }
}

/// A report body: the entries in strictly ascending transport id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityReport {
    /// The body version ([`REPORT_VERSION`]).
    pub version: u8,
    /// The entries, at most one per transport.
    pub transports: Vec<TransportReport>,
}

/// Why a report body breaks docs/PROTOCOL.md section 4.1 (decoding), or why a report
/// cannot be written (encoding). A gateway answers a body that fails to decode with an
/// `Error` carrying [`crate::protocol::Code::MalformedReport`] (320); the session stays
/// open. The variant names are shared with the TypeScript SDK's `ReportError` kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The body is longer than [`MAX_REPORT_LEN`] bytes.
    #[error("report body of {0} bytes, more than 256")]
    TooLong(usize),
    /// The body ends before its version and count, or inside an entry.
    #[error("report body truncated: {0}")]
    Truncated(&'static str),
    /// The version byte is not [`REPORT_VERSION`].
    #[error("unsupported report version {0}")]
    UnsupportedVersion(u8),
    /// An entry's transport id is not 0..=4.
    #[error("unknown transport id {0}")]
    UnknownTransport(u8),
    /// An entry's transport id is not above the previous entry's.
    #[error("transport id {id} after {previous}")]
    TransportOrder {
        /// The entry's id.
        id: u8,
        /// The previous entry's id.
        previous: u8,
    },
    /// A histogram's buckets sum to more than the attempts (pings) they belong to.
    #[error("{0}: more successes than attempts")]
    CountsInconsistent(ReportTransport),
    /// Bytes follow the last entry.
    #[error("{0} bytes after the last entry")]
    TrailingBytes(usize),
}

impl ReportError {
    /// The variant's name (`"TooLong"`, ...), as used in the vector file and the
    /// TypeScript SDK.
    pub fn kind(&self) -> &'static str {
        match self {
            ReportError::TooLong(_) => "TooLong",
            ReportError::Truncated(_) => "Truncated",
            ReportError::UnsupportedVersion(_) => "UnsupportedVersion",
            ReportError::UnknownTransport(_) => "UnknownTransport",
            ReportError::TransportOrder { .. } => "TransportOrder",
            ReportError::CountsInconsistent(_) => "CountsInconsistent",
            ReportError::TrailingBytes(_) => "TrailingBytes",
        }
    }
}

impl QualityReport {
    /// A version-1 report with no entries.
    pub fn new() -> QualityReport {
        QualityReport {
            version: REPORT_VERSION,
            transports: Vec::new(),
        }
    }

    /// Decodes and checks a report body. Checks run in this order: length, truncation
    /// of the version and count, version, then entry by entry (truncation, transport id,
    /// order, counts), then trailing bytes.
    pub fn decode(body: &[u8]) -> Result<QualityReport, ReportError> {
        if body.len() > MAX_REPORT_LEN {
            return Err(ReportError::TooLong(body.len()));
        }
        if body.len() < 2 {
            return Err(ReportError::Truncated("no version and count"));
        }
        if body[0] != REPORT_VERSION {
            return Err(ReportError::UnsupportedVersion(body[0]));
        }
        let count = body[1] as usize;
        let mut transports = Vec::with_capacity(count.min(ReportTransport::ALL.len()));
        let mut at = 2;
        let mut last: Option<u8> = None;
        for _ in 0..count {
            if body.len() - at < REPORT_ENTRY_LEN {
                return Err(ReportError::Truncated("an entry is cut short"));
            }
            let e = &body[at..at + REPORT_ENTRY_LEN];
            let id = e[0];
            let transport =
                ReportTransport::from_u8(id).ok_or(ReportError::UnknownTransport(id))?;
            if let Some(previous) = last
                && id <= previous
            {
                return Err(ReportError::TransportOrder { id, previous });
            }
            last = Some(id);
            let u16_at = |off: usize| u16::from_be_bytes([e[off], e[off + 1]]);
            let buckets = |off: usize| std::array::from_fn(|i| u16_at(off + 2 * i));
            let entry = TransportReport {
                transport,
                connect_attempts: u16_at(1),
                connect_latency: buckets(3),
                pings: u16_at(23),
                rtt: buckets(25),
            };
            entry.check()?;
            transports.push(entry);
            at += REPORT_ENTRY_LEN;
        }
        if at != body.len() {
            return Err(ReportError::TrailingBytes(body.len() - at));
        }
        Ok(QualityReport {
            version: REPORT_VERSION,
            transports,
        })
    }

    /// Encodes the body; fails for a report the gateway would refuse.
    pub fn encode(&self) -> Result<Bytes, ReportError> {
        if self.version != REPORT_VERSION {
            return Err(ReportError::UnsupportedVersion(self.version));
        }
        let len = 2 + REPORT_ENTRY_LEN * self.transports.len();
        if len > MAX_REPORT_LEN {
            return Err(ReportError::TooLong(len));
        }
        let mut out = BytesMut::with_capacity(len);
        out.put_u8(self.version);
        out.put_u8(self.transports.len() as u8);
        let mut last: Option<u8> = None;
        for entry in &self.transports {
            let id = entry.transport as u8;
            if let Some(previous) = last
                && id <= previous
            {
                return Err(ReportError::TransportOrder { id, previous });
            }
            last = Some(id);
            entry.check()?;
            out.put_u8(id);
            out.put_u16(entry.connect_attempts);
            entry.connect_latency.iter().for_each(|&c| out.put_u16(c));
            out.put_u16(entry.pings);
            entry.rtt.iter().for_each(|&c| out.put_u16(c));
        }
        Ok(out.freeze())
    }
}

impl Default for QualityReport {
    fn default() -> QualityReport {
        QualityReport::new()
    }
}

impl TransportReport {
    fn check(&self) -> Result<(), ReportError> {
        if self.connects_ok() > self.connect_attempts as u32 || self.pongs() > self.pings as u32 {
            return Err(ReportError::CountsInconsistent(self.transport));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const EXAMPLE: &str = concat!(
        "0102",
        "000003",
        "0000000000010001000000000000000000000000",
        "000a",
        "0000000000020005000200000000000000000000",
        "040001",
        "0000000000000000000100000000000000000000",
        "0000",
        "0000000000000000000000000000000000000000"
    );

    #[test]
    fn the_example_round_trips() {
        let report = QualityReport::decode(&hex(EXAMPLE)).unwrap();
        let tcp = &report.transports[0];
        assert_eq!(tcp.transport, ReportTransport::Tcp);
        assert_eq!((tcp.connect_attempts, tcp.connects_ok()), (3, 2));
        assert_eq!(tcp.connect_latency[2..4], [1, 1]);
        assert_eq!((tcp.pings, tcp.pongs()), (10, 9));
        assert_eq!(report.transports[1].transport, ReportTransport::Quic);
        assert_eq!(report.encode().unwrap().as_ref(), hex(EXAMPLE).as_slice());
        assert_eq!(
            QualityReport::new().encode().unwrap().as_ref(),
            &[1u8, 0][..]
        );
    }

    #[test]
    fn buckets_match_the_documented_bounds() {
        let got: Vec<usize> = [0, 10, 11, 5000, 5001, 1_000_000_000]
            .into_iter()
            .map(latency_bucket)
            .collect();
        assert_eq!(got, [0, 0, 1, 8, 9, 9]);
    }

    #[test]
    fn every_malformed_kind_is_reported() {
        let ex = hex(EXAMPLE);
        let kind = |b: &[u8]| {
            QualityReport::decode(b)
                .map(|_| "ok")
                .unwrap_or_else(|e| e.kind())
        };
        assert_eq!(kind(&[]), "Truncated");
        assert_eq!(kind(&[2]), "Truncated");
        assert_eq!(kind(&[2, 0]), "UnsupportedVersion");
        assert_eq!(kind(&[1, 0]), "ok");
        assert_eq!(kind(&[1, 0, 0]), "TrailingBytes");
        assert_eq!(kind(&ex[..ex.len() - 1]), "Truncated");
        let mut unknown = vec![1, 1];
        unknown.extend_from_slice(&ex[2..2 + REPORT_ENTRY_LEN]);
        unknown[2] = 5;
        assert_eq!(kind(&unknown), "UnknownTransport");
        let mut twice = vec![1, 2];
        twice.extend_from_slice(&ex[2..2 + REPORT_ENTRY_LEN]);
        twice.extend_from_slice(&ex[2..2 + REPORT_ENTRY_LEN]);
        assert_eq!(kind(&twice), "TransportOrder");
        let mut long = vec![1, 0];
        long.resize(MAX_REPORT_LEN + 1, 0);
        assert_eq!(kind(&long), "TooLong");
        let mut too_many = ex.clone();
        too_many[2 + 24] = 8; // tcp: 8 pings, 9 answered

        assert_eq!(kind(&too_many), "CountsInconsistent");
        let mut bad_attempts = ex.clone();
        bad_attempts[2 + 2] = 1; // tcp: 1 attempt, 2 successes
        assert_eq!(kind(&bad_attempts), "CountsInconsistent");
    }

    #[test]
    fn the_encoder_refuses_what_the_decoder_rejects() {
        let mut ws = TransportReport::new(ReportTransport::Ws);
        ws.pings = 1;
        ws.rtt[0] = 2;
        let mut report = QualityReport::new();
        report.transports.push(ws.clone());
        assert_eq!(report.encode().unwrap_err().kind(), "CountsInconsistent");
        ws.rtt[0] = 1;
        report.transports = vec![ws.clone(), ws];
        assert_eq!(report.encode().unwrap_err().kind(), "TransportOrder");
        report.transports.pop();
        report.version = 2;
        assert_eq!(report.encode().unwrap_err().kind(), "UnsupportedVersion");
    }

    #[test]
    fn recording_saturates_consistently() {
        let mut e = TransportReport::new(ReportTransport::Quic);
        e.record_connect(Some(30));
        e.record_connect(None);
        e.record_ping(Some(3));
        e.record_ping(None);
        assert_eq!((e.connect_attempts, e.connect_latency[2]), (2, 1));
        assert_eq!((e.pings, e.rtt[0]), (2, 1));
        e.pings = u16::MAX;
        e.record_ping(Some(1));
        assert_eq!((e.pings, e.rtt[0]), (u16::MAX, 1));
        assert!(e.check().is_ok());
    }
}

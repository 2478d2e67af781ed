//! `loadgen multicast --slow-members N` (raw subscribers only): N of the members stop
//! reading their socket once they have joined. They keep it open and never poll it
//! while the phase publishes, with a small receive buffer (4 KiB asked), so the
//! gateway's queue for them fills and its slow-consumer policy applies (drop the
//! newest push, or `Kick {slow_consumer}`). They are left out of the reach and
//! latency of the others.
//!
//! When the phase's publishing has ended and the others have drained, each slow
//! member reads what its socket holds: the pushes that did get through, then a
//! `Kick`/`Close` frame or the end of the stream if the gateway closed it. When it
//! was closed is estimated from the send timestamp of the last push it received before
//! the close (the push after which its queue overflowed), relative to `Go`.

use std::time::Duration;

use bytes::BytesMut;
use longconn_core::{Code, Frame};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::peer::RAW_CODEC;

/// Receive buffer a slow member asks for (the kernel doubles it, and has a minimum).
pub const SLOW_RECV_BUFFER: u32 = 4096;
/// After its release, a slow member that reads nothing for this long counts as open.
const QUIET: Duration = Duration::from_secs(2);
/// ... and reads for at most this long in all.
const READ_LIMIT: Duration = Duration::from_secs(20);

/// Whether member `index` of `members` is one of the `slow` slow ones: exactly `slow`
/// of them, spread evenly over the indices (so over worker processes and groups too).
pub fn is_slow(index: u32, slow: u32, members: u32) -> bool {
    slow > 0
        && members > 0
        && (u64::from(index) * u64::from(slow)) % u64::from(members) < u64::from(slow)
}

/// What one slow member found when it read its socket at last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowOutcome {
    /// Pushes that had reached it.
    pub received: u64,
    /// Closed by the gateway: `Some(code)` of its `Kick`/`Close` frame, `Some(None)`
    /// for an end of stream (or reset) without one, `None` when still open.
    pub closed: Option<Option<Code>>,
    /// Send time (µs since the epoch) of the last push it received.
    pub last_sent_us: Option<u64>,
}

/// Holds `stream` unread until `release` turns `true`, then reads it (see the
/// module doc).
pub async fn hold_then_read(
    mut stream: TcpStream,
    mut buf: BytesMut,
    mut release: watch::Receiver<bool>,
) -> SlowOutcome {
    while !*release.borrow_and_update() {
        if release.changed().await.is_err() {
            break;
        }
    }
    let mut out = SlowOutcome::default();
    let deadline = tokio::time::Instant::now() + READ_LIMIT;
    loop {
        let mut codec = RAW_CODEC;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Frame::Push { payload, .. })) => {
                    out.received += 1;
                    if let Some(sent) = payload.get(..8) {
                        out.last_sent_us =
                            Some(u64::from_be_bytes(sent.try_into().expect("8 bytes")));
                    }
                }
                Ok(Some(Frame::Kick { code, .. } | Frame::Close { code, .. })) => {
                    out.closed = Some(Some(code));
                    return out;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    out.closed = Some(None);
                    return out;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let until = deadline.min(tokio::time::Instant::now() + QUIET);
        match tokio::time::timeout_at(until, stream.read_buf(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                out.closed = Some(None);
                return out;
            }
            Ok(Ok(_)) => {}
            Err(_) => return out, // quiet: still open
        }
    }
}

/// The slow members of one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowReport {
    /// Slow members subscribed.
    pub members: u64,
    /// Pushes that reached them.
    pub received: u64,
    /// Closed by the gateway with `Kick {slow_consumer}`.
    pub slow_consumer_kicks: u64,
    /// Closed by the gateway otherwise (another code, or the stream just ended).
    pub other_closes: u64,
    /// Still open when they read at last.
    pub still_open: u64,
    /// For each closed member, when (seconds after `Go`, from the send time of the last
    /// push it received; 0 without any).
    pub closed_after_s: Vec<f64>,
}

impl SlowReport {
    /// Counts `o`; `go_us` is when the phase's `Go` came.
    pub fn add(&mut self, o: &SlowOutcome, go_us: u64) {
        self.members += 1;
        self.received += o.received;
        match o.closed {
            None => self.still_open += 1,
            Some(code) => {
                if code == Some(Code::SlowConsumer) {
                    self.slow_consumer_kicks += 1;
                } else {
                    self.other_closes += 1;
                }
                let at = o
                    .last_sent_us
                    .map_or(0.0, |sent| sent.saturating_sub(go_us) as f64 / 1e6);
                self.closed_after_s.push(at);
            }
        }
    }
}

/// The slow members of a phase over all processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowSummary {
    /// Slow members subscribed.
    pub members: u64,
    /// Pushes that reached them.
    pub received: u64,
    /// Closed with `Kick {slow_consumer}`.
    pub slow_consumer_kicks: u64,
    /// Closed otherwise.
    pub other_closes: u64,
    /// Never closed.
    pub still_open: u64,
    /// When the first, the median and the last were closed, seconds after `Go`.
    pub closed_after_s: Option<[f64; 3]>,
}

impl SlowSummary {
    /// The reports added up; `None` without any.
    pub fn merge<'a>(reports: impl IntoIterator<Item = &'a SlowReport>) -> Option<SlowSummary> {
        let mut out: Option<SlowSummary> = None;
        let mut times = Vec::new();
        for r in reports {
            let s = out.get_or_insert_with(SlowSummary::default);
            s.members += r.members;
            s.received += r.received;
            s.slow_consumer_kicks += r.slow_consumer_kicks;
            s.other_closes += r.other_closes;
            s.still_open += r.still_open;
            times.extend_from_slice(&r.closed_after_s);
        }
        if let Some(s) = out.as_mut() {
            times.sort_by(f64::total_cmp);
            if let (Some(first), Some(last)) = (times.first(), times.last()) {
                s.closed_after_s = Some([*first, times[times.len() / 2], *last]);
            }
        }
        out
    }

    /// One readable line.
    pub fn human(&self) -> String {
        format!(
            "  slow members {}: kicked slow_consumer {}, closed otherwise {}, still open {}, \
             received {}, closed after (first/median/last) {}",
            self.members,
            self.slow_consumer_kicks,
            self.other_closes,
            self.still_open,
            self.received,
            self.closed_after_s
                .map_or("-".to_owned(), |[a, b, c]| format!(
                    "{a:.1}/{b:.1}/{c:.1} s"
                ))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_n_slow_members_spread_over_the_indices() {
        for (members, slow) in [(50, 2), (10_000, 100), (7, 7), (7, 0), (13, 5)] {
            let picked: Vec<u32> = (0..members)
                .filter(|&i| is_slow(i, slow, members))
                .collect();
            assert_eq!(picked.len(), slow as usize, "{members}/{slow}: {picked:?}");
        }
        let picked: Vec<u32> = (0..50).filter(|&i| is_slow(i, 2, 50)).collect();
        assert_eq!(picked, [0, 25]);
        assert!(!is_slow(0, 1, 0));
    }

    #[test]
    fn reports_count_kicks_apart_and_merge_with_times() {
        let go = 1_000_000_000;
        let mut a = SlowReport::default();
        a.add(
            &SlowOutcome {
                received: 10,
                closed: Some(Some(Code::SlowConsumer)),
                last_sent_us: Some(go + 2_500_000),
            },
            go,
        );
        a.add(&SlowOutcome::default(), go);
        let mut b = SlowReport::default();
        b.add(
            &SlowOutcome {
                received: 3,
                closed: Some(None),
                last_sent_us: None,
            },
            go,
        );
        b.add(
            &SlowOutcome {
                received: 1,
                closed: Some(Some(Code::SlowConsumer)),
                last_sent_us: Some(go + 4_000_000),
            },
            go,
        );
        let b: SlowReport = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        let s = SlowSummary::merge([&a, &b]).unwrap();
        assert_eq!(
            (
                s.members,
                s.received,
                s.slow_consumer_kicks,
                s.other_closes,
                s.still_open
            ),
            (4, 14, 2, 1, 1)
        );
        assert_eq!(s.closed_after_s, Some([0.0, 2.5, 4.0]));
        assert!(s.human().contains("kicked slow_consumer 2"));
        assert_eq!(SlowSummary::merge([]), None);
    }
}

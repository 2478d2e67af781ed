//! Admission limits checked when a connection has completed its transport handshake,
//! before it gets a session: the accept rate ([`ServerConfig::max_accept_rate`]) and
//! connections per source IP ([`ServerConfig::max_connections_per_ip`]).
//!
//! A refused connection gets one `Close` frame and is closed:
//! - over the accept rate: `Close {try_later}` whose message is `retry_after_ms=<N>`.
//!   Each refused connection is promised its own later slot (the delays of a storm grow
//!   by one accept interval per refusal, up to 30 s), so a reconnect storm is spread
//!   over the time the server needs to take it instead of retrying in waves. The Rust
//!   SDK waits the delay plus a jitter before it reconnects.
//! - over the per-IP limit: `Close {source_limit}`; the client backs off as after any
//!   loss.
//!
//! [`ServerConfig::max_accept_rate`]: crate::ServerConfig::max_accept_rate
//! [`ServerConfig::max_connections_per_ip`]: crate::ServerConfig::max_connections_per_ip

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use longconn_core::Code;

/// Longest `try_later` delay promised.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Shortest `try_later` delay.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over the accept rate: come back after this long.
    TryLater(Duration),
    /// The source IP holds as many connections as it may.
    SourceLimit,
}

impl Refusal {
    /// The `Close` frame's code and message.
    pub(crate) fn close(self) -> (Code, String) {
        match self {
            Refusal::TryLater(delay) => (
                Code::TryLater,
                format!("retry_after_ms={}", delay.as_millis()),
            ),
            Refusal::SourceLimit => (
                Code::SourceLimit,
                "too many connections from this address".to_owned(),
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Rate {
    /// GCRA theoretical arrival time of the next accept.
    tat: Option<Instant>,
    /// The last slot promised to a refused connection.
    promised: Option<Instant>,
}

/// The limits' state, shared by every accept loop of a server.
#[derive(Debug)]
pub(crate) struct AdmissionLimits {
    max_rate: Option<u32>,
    max_per_ip: Option<u32>,
    rate: Mutex<Rate>,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl AdmissionLimits {
    pub(crate) fn new(max_rate: Option<u32>, max_per_ip: Option<u32>) -> AdmissionLimits {
        AdmissionLimits {
            max_rate,
            max_per_ip,
            rate: Mutex::default(),
            per_ip: Mutex::default(),
        }
    }

    /// Admits a connection from `peer` at `now`, or says why not. `Some(ip)`: the
    /// connection was counted against its IP (there is a per-IP limit and a peer
    /// address), and [`AdmissionLimits::release`] must give the count back when it ends
    /// (the server's driver does, when it is dropped).
    pub(crate) fn admit(
        &self,
        now: Instant,
        peer: Option<SocketAddr>,
    ) -> Result<Option<IpAddr>, Refusal> {
        let counted = match (self.max_per_ip, peer) {
            (Some(max), Some(peer)) => {
                let ip = peer.ip();
                let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                let n = counts.entry(ip).or_insert(0);
                if *n >= max {
                    return Err(Refusal::SourceLimit);
                }
                *n += 1;
                Some(ip)
            }
            _ => None,
        };
        if let Some(rate) = self.max_rate {
            let interval = Duration::from_secs(1) / rate.max(1);
            let tolerance = Duration::from_secs(1).saturating_sub(interval);
            let mut state = self.rate.lock().unwrap_or_else(|p| p.into_inner());
            let tat = state.tat.map_or(now, |t| t.max(now));
            if tat.saturating_duration_since(now) > tolerance {
                // When the bucket has room again, then one interval per refusal since.
                let free_at = tat - tolerance;
                let base = state.promised.map_or(free_at, |p| p.max(free_at));
                let slot_at = base + interval;
                state.promised = Some(slot_at);
                let delay = slot_at
                    .saturating_duration_since(now)
                    .clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER);
                drop(state);
                if let Some(ip) = counted {
                    self.release(ip);
                }
                return Err(Refusal::TryLater(delay));
            }
            state.tat = Some(tat + interval);
        }
        Ok(counted)
    }

    /// Gives back a connection's count against `ip` (from [`AdmissionLimits::admit`]).
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 1000))
    }

    #[test]
    fn over_the_rate_each_refusal_gets_a_later_slot() {
        let limits = AdmissionLimits::new(Some(10), None);
        let now = Instant::now();
        for _ in 0..10 {
            assert!(limits.admit(now, peer("10.0.0.1")).is_ok(), "the burst");
        }
        let delays: Vec<Duration> = (0..5)
            .map(|_| match limits.admit(now, peer("10.0.0.1")) {
                Err(Refusal::TryLater(d)) => d,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(delays.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
        assert_eq!(delays[1] - delays[0], Duration::from_millis(100));
        let (code, message) = Refusal::TryLater(delays[0]).close();
        assert_eq!(code.as_u16(), 8);
        assert_eq!(message, format!("retry_after_ms={}", delays[0].as_millis()));
        // A second later the bucket has room again.
        assert!(limits.admit(now + Duration::from_secs(1), None).is_ok());
    }

    #[test]
    fn per_ip_counts_are_given_back_when_connections_end() {
        let limits = AdmissionLimits::new(None, Some(2));
        let now = Instant::now();
        let a = limits.admit(now, peer("10.0.0.1")).unwrap();
        assert_eq!(a, Some("10.0.0.1".parse().unwrap()));
        let _b = limits.admit(now, peer("10.0.0.1")).unwrap();
        assert_eq!(
            limits.admit(now, peer("10.0.0.1")).unwrap_err(),
            Refusal::SourceLimit
        );
        assert!(limits.admit(now, peer("10.0.0.2")).is_ok(), "another IP");
        limits.release(a.unwrap());
        assert!(limits.admit(now, peer("10.0.0.1")).is_ok());
        assert_eq!(Refusal::SourceLimit.close().0.as_u16(), 9);
    }

    #[test]
    fn a_connection_refused_for_the_rate_keeps_no_ip_count() {
        let limits = AdmissionLimits::new(Some(1), Some(1));
        let now = Instant::now();
        let first = limits.admit(now, peer("10.0.0.1")).unwrap();
        limits.release(first.unwrap());
        assert!(matches!(
            limits.admit(now, peer("10.0.0.1")),
            Err(Refusal::TryLater(_))
        ));
        // Had the refused connection kept its count, this would be `SourceLimit`.
        assert!(
            limits
                .admit(now + Duration::from_secs(2), peer("10.0.0.1"))
                .is_ok()
        );
    }
}

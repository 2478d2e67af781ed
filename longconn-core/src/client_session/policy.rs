//! Changing a running session's heartbeat cap and reconnect delays: a control layer
//! (longconn-control's `/v1/access`) hands every client the policy it must follow, and
//! a later answer may change it. [`ClientSession::set_policy`] applies it between or
//! during connections without touching the state machine's transitions.

use std::time::{Duration, Instant};

use super::{ClientSession, ClientState};

/// The heartbeat cap and reconnect delays a control layer hands a client. Jitter is
/// always full jitter (the session's only rule, see [`super::Backoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Longest heartbeat interval (the gateway's advertised one is lowered to it);
    /// `None`: the gateway's.
    pub max_heartbeat: Option<Duration>,
    /// First reconnect window.
    pub backoff_base: Duration,
    /// Largest reconnect window (raised to `backoff_base` if lower).
    pub backoff_cap: Duration,
}

impl ClientSession {
    /// Applies `policy` from `now` on: the next reconnect delay is drawn from the new
    /// windows (`max_attempts` is kept), the next login caps its heartbeat at the new
    /// `max_heartbeat`, and a logged-in session whose heartbeat is longer than the new
    /// cap lowers it at once (its next ping is due no later than `now + cap`). A
    /// reconnect delay already drawn (state `Waiting`) is kept.
    pub fn set_policy(&mut self, now: Instant, policy: ClientPolicy) {
        self.config.max_heartbeat = policy.max_heartbeat;
        self.config.backoff.base = policy.backoff_base;
        self.config.backoff.cap = policy.backoff_cap.max(policy.backoff_base);
        if self.state == ClientState::LoggedIn
            && let Some(cap) = policy.max_heartbeat
        {
            let cap = cap.max(self.config.min_heartbeat);
            if self.heartbeat > cap {
                self.heartbeat = cap;
                if self.ping_out.is_none() {
                    let due = now + cap;
                    self.ping_at = Some(self.ping_at.map_or(due, |at| at.min(due)));
                }
            }
        }
    }

    /// The heartbeat interval of the current login (zero before the first).
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::client_session::{ClientEvent, ClientSessionConfig, LOGIN_ID, Reconnect};
    use crate::protocol::Frame;

    fn policy(hb_ms: u64, base_ms: u64, cap_ms: u64) -> ClientPolicy {
        ClientPolicy {
            max_heartbeat: Some(Duration::from_millis(hb_ms)),
            backoff_base: Duration::from_millis(base_ms),
            backoff_cap: Duration::from_millis(cap_ms),
        }
    }

    fn logged_in(now: Instant, heartbeat_ms: u32) -> ClientSession {
        let mut config = ClientSessionConfig::new("app", "dev");
        config.min_heartbeat = Duration::from_millis(10);
        let mut s = ClientSession::new(config, now, 7);
        assert!(s.connected(now));
        while s.poll_event().is_some() {}
        assert!(s.provide_token(now, Bytes::from_static(b"t")));
        while s.poll_transmit().is_some() {}
        s.handle_frame(
            now,
            Frame::LoginAck {
                id: LOGIN_ID,
                conn_id: 1,
                heartbeat_ms,
                expires_at_ms: None,
            },
        );
        assert_eq!(s.state(), ClientState::LoggedIn);
        s
    }

    /// The reconnect delay after a policy change comes from the new window, not the
    /// config's: 200 dial failures with base 5 s would wait up to 5 s; with the
    /// policy's 50 ms base every first delay is at most 50 ms.
    #[test]
    fn reconnect_delays_follow_the_new_windows() {
        let now = Instant::now();
        for seed in 0..200u64 {
            let mut config = ClientSessionConfig::new("app", "dev");
            config.backoff.base = Duration::from_secs(5);
            config.backoff.cap = Duration::from_secs(60);
            let mut s = ClientSession::new(config, now, seed);
            s.set_policy(now, policy(1_000, 50, 400));
            assert!(s.dial_failed(now));
            let delay = std::iter::from_fn(|| s.poll_event())
                .find_map(|e| match e {
                    ClientEvent::Ended {
                        reconnect: Reconnect::After(d),
                        ..
                    } => Some(d),
                    _ => None,
                })
                .expect("a reconnect delay");
            assert!(delay <= Duration::from_millis(50), "seed {seed}: {delay:?}");
        }
    }

    /// A logged-in session with the gateway's 60 s heartbeat lowers it to the new
    /// 2 s cap and pings within 2 s; the next login caps the advertised interval too.
    #[test]
    fn heartbeat_cap_applies_now_and_at_the_next_login() {
        let now = Instant::now();
        let mut s = logged_in(now, 60_000);
        assert_eq!(s.heartbeat(), Duration::from_secs(60));
        s.set_policy(now, policy(2_000, 100, 1_000));
        assert_eq!(s.heartbeat(), Duration::from_secs(2));
        assert!(
            s.poll_timeout()
                .is_some_and(|at| at <= now + Duration::from_secs(2))
        );
        s.handle_timeout(now + Duration::from_secs(2));
        assert!(
            std::iter::from_fn(|| s.poll_transmit()).any(|f| matches!(f, Frame::Ping { .. })),
            "no ping at the new interval"
        );
        // A cap above the interval in use changes nothing now.
        let mut s = logged_in(now, 5_000);
        s.set_policy(now, policy(30_000, 100, 1_000));
        assert_eq!(s.heartbeat(), Duration::from_secs(5));
    }
}

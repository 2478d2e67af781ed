//! The values that cross the client session's boundary: its config, states, events,
//! reconnect decisions and the backoff rule.

use std::time::Duration;

use bytes::Bytes;

use crate::protocol::{Code, Metadata, ReportTransport, Text};

/// Reconnect delays: exponential backoff with full jitter.
///
/// Attempt `n` (from 0) waits a uniformly random time in `[0, min(cap, base * 2^n)]`.
/// Full jitter spreads clients that lost the same gateway at the same moment over the
/// whole window, instead of bringing them back in waves (the reconnect storms that
/// EMQX, Phoenix and NATS clients had to fix). The randomness is an input
/// ([`Backoff::delay`] takes a random sample), so the rule is tested without an RNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first attempt's delay. Default 500 ms.
    pub base: Duration,
    /// Largest upper bound. Default 10 s: a client that lost its gateway is back at most
    /// this long after the gateway is (a reconnect storm still spreads over the window).
    pub cap: Duration,
    /// Attempts in a row before the client gives up; `None` for never. Default `None`.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The window for attempt `attempt`: `min(cap, base * 2^attempt)`.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay for attempt `attempt` given a uniformly random `sample` (any `u64`):
    /// uniform in `[0, window]` at millisecond resolution.
    pub fn delay(&self, attempt: u32, sample: u64) -> Duration {
        let window = self.window(attempt).as_millis() as u64;
        Duration::from_millis(uniform(sample, window))
    }
}

/// Maps a random `u64` onto `0..=max` (Lemire's multiply-shift: no modulo bias worth
/// measuring at these sizes).
pub(crate) fn uniform(sample: u64, max: u64) -> u64 {
    ((u128::from(sample) * (u128::from(max) + 1)) >> 64) as u64
}

/// Everything a [`super::ClientSession`] needs to know. The fields are public; the
/// defaults are documented on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSessionConfig {
    /// App id sent in `Login`.
    pub app: String,
    /// Device id sent in `Login`.
    pub device: String,
    /// Metadata sent in `Login`. Default empty.
    pub login_meta: Metadata,
    /// How long a dial may take (state `Connecting`). Default 10 s.
    pub connect_timeout: Duration,
    /// How long from `connected` to `LoginAck` (state `LoggingIn`, token fetch
    /// included). Default 10 s.
    pub login_timeout: Duration,
    /// How long to wait for the `Pong` of a heartbeat `Ping` before the connection counts
    /// as lost; `None` for twice the heartbeat interval. Default `None`.
    pub pong_timeout: Option<Duration>,
    /// Smallest heartbeat interval honoured, whatever `LoginAck` says. Default 100 ms.
    pub min_heartbeat: Duration,
    /// Largest heartbeat interval used: the client pings at the smaller of this and
    /// `LoginAck`'s interval (a control layer that knows the network's NAT timeouts sets
    /// it). Default `None`: `LoginAck`'s.
    pub max_heartbeat: Option<Duration>,
    /// Reconnect delays after a lost connection.
    pub backoff: Backoff,
    /// Logins refused with `expired_token` that are retried (each with a freshly fetched
    /// token) before the refusal is final. Default 1.
    pub expired_token_retries: u32,
    /// Dead-peer timeout: once logged in, a gateway that sends nothing at all for this
    /// long counts as gone (`EndReason::HeartbeatLost`) whatever the heartbeat interval.
    /// After half of it without a received frame the client sends a probe `Ping` (none
    /// while one is unanswered), so a live gateway always answers in time. `None` turns
    /// the probe off (only the heartbeat's pong timeout applies). Default `None` here;
    /// the Rust SDK sets 10 s (`longconn_client::ClientConfig::dead_peer_timeout`).
    pub dead_peer_timeout: Option<Duration>,
    /// Send a `QualityReport` (docs/PROTOCOL.md section 4.1: connect attempts and
    /// heartbeat round trips per transport) this often while logged in. Default `None`
    /// (off): a gateway without `QualityReport` support closes the session on it.
    pub quality_report_interval: Option<Duration>,
    /// The `NETWORK` of quality reports: 0 unknown (default), 1 wifi, 2 cellular,
    /// 3 wired. Values above 3 are sent as 0.
    pub network: u8,
    /// The transport the attempts and pings are counted under (set it for each dial
    /// with [`super::ClientSession::set_transport`] when it changes). Default tcp.
    pub transport: ReportTransport,
}

impl ClientSessionConfig {
    /// A config for `app` and `device` with the defaults for everything else.
    pub fn new(app: impl Into<String>, device: impl Into<String>) -> ClientSessionConfig {
        ClientSessionConfig {
            app: app.into(),
            device: device.into(),
            login_meta: Metadata::new(),
            connect_timeout: Duration::from_secs(10),
            login_timeout: Duration::from_secs(10),
            pong_timeout: None,
            min_heartbeat: Duration::from_millis(100),
            max_heartbeat: None,
            backoff: Backoff::default(),
            expired_token_retries: 1,
            dead_peer_timeout: None,
            quality_report_interval: None,
            network: 0,
            transport: ReportTransport::Tcp,
        }
    }
}

/// Where the client session stands (docs/PROTOCOL.md, "Client state table").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientState {
    /// The transport is being dialed; `connected` or `dial_failed` comes next.
    Connecting,
    /// Connected: fetching the token, then `Login` sent and `LoginAck` awaited.
    LoggingIn,
    /// Logged in: calls, pushes and heartbeats flow.
    LoggedIn,
    /// `GoAway` received: calls still flow; the gateway closes soon.
    Draining,
    /// The connection ended; waiting for the reconnect delay to pass.
    Waiting,
    /// Stopped for good (closed by the application, kicked, refused, out of attempts).
    Closed,
}

/// Why a connection (or an attempt at one) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The application called `close`.
    ClosedByApp,
    /// The dial failed or took longer than `connect_timeout`.
    DialFailed,
    /// The token provider failed before login (not permanent: retried with backoff).
    TokenUnavailable,
    /// No `LoginAck` within `login_timeout`.
    LoginTimeout,
    /// The gateway refused the login with `Close {code}`.
    LoginRefused(Code),
    /// No `Pong` for a heartbeat `Ping` within the pong timeout.
    HeartbeatLost,
    /// The gateway ended the session with `Kick {code}`.
    Kicked(Code),
    /// The gateway ended the session with `Close {code}`.
    ClosedByGateway(Code),
    /// The stream ended without `Close`.
    TransportEnded,
    /// The transport failed.
    TransportFailed,
    /// The gateway broke the protocol; this side sent `Close {code}`.
    ProtocolError(Code),
}

/// Why the client stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The application closed the client.
    ClosedByApp,
    /// Kicked as `replaced` or `kicked`: reconnecting would fight another login or an
    /// operator.
    Kicked(Code),
    /// The login was refused for good: `invalid_token`, `forbidden`, or `expired_token`
    /// once the fresh-token retries are used up.
    AuthRejected(Code),
    /// `Backoff::max_attempts` attempts in a row failed.
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
}

/// What the client does after a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Dial again after this delay (the session's timeout fires then and it moves to
    /// `Connecting`).
    After(Duration),
    /// Do not reconnect.
    Never(StopReason),
}

/// What the async loop or the application must act on. Drain with
/// [`super::ClientSession::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The state changed (emitted after the transition's other events).
    StateChanged(ClientState),
    /// A token is needed: for the login (state `LoggingIn`) or because the gateway sent
    /// `TokenExpiring`. Fetch it off the frame loop and answer with
    /// [`super::ClientSession::provide_token`] or [`super::ClientSession::token_failed`].
    TokenNeeded,
    /// `LoginAck` arrived.
    LoggedIn {
        /// The gateway's id for the connection.
        conn_id: u64,
        /// The heartbeat interval in use (the advertised one, at least `min_heartbeat`).
        heartbeat: Duration,
        /// When the token expires (Unix ms), if it does.
        expires_at_ms: Option<u64>,
    },
    /// A request was answered.
    Response {
        /// The call id `request` returned.
        id: u32,
        /// Business id.
        business: u32,
        /// Response metadata.
        meta: Metadata,
        /// Response payload.
        payload: Bytes,
    },
    /// A request, join or leave was refused with `Error`.
    Failed {
        /// The call id.
        id: u32,
        /// The wire code.
        code: Code,
        /// The gateway's detail.
        message: Text,
    },
    /// A call passed its timeout unanswered (a later answer is ignored).
    TimedOut {
        /// The call id.
        id: u32,
    },
    /// The connection ended before the call was answered.
    Abandoned {
        /// The call id.
        id: u32,
    },
    /// A join or leave succeeded.
    GroupAck {
        /// The call id.
        id: u32,
        /// The group.
        group: Text,
        /// `true` for a join, `false` for a leave.
        joined: bool,
    },
    /// A group joined before a reconnect was joined again. `recovered`: the pushes
    /// missed meanwhile follow, in order (the gateway kept them); otherwise they are
    /// lost (no history, epoch changed, or older than the history) and the application
    /// should resync the group from its own source.
    Rejoined {
        /// The group.
        group: Text,
        /// Whether the missed pushes were recovered.
        recovered: bool,
    },
    /// A group joined before a reconnect could not be joined again; it is forgotten.
    RejoinFailed {
        /// The group.
        group: Text,
        /// The gateway's code.
        code: Code,
    },
    /// A push arrived (a `PushAck` is already queued when it asked for one).
    Push {
        /// Business id.
        business: u32,
        /// The group it was sent to, if any.
        group: Option<Text>,
        /// Position in the group's log, if any.
        seq: Option<u64>,
        /// Epoch of the group's log, if any.
        epoch: Option<u64>,
        /// Metadata.
        meta: Metadata,
        /// Payload.
        payload: Bytes,
    },
    /// The connection ended, and this is what comes next.
    Ended {
        /// Why it ended.
        reason: EndReason,
        /// Reconnect after a delay, or stop.
        reconnect: Reconnect,
    },
}

/// A call the session cannot take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Between connections (state `Waiting`).
    #[error("not connected")]
    NotConnected,
    /// Stopped for good (state `Closed`).
    #[error("client stopped")]
    Stopped,
}

/// What the session measured, for quality reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Heartbeat pings sent.
    pub pings_sent: u64,
    /// Pongs received for them.
    pub pongs_received: u64,
    /// Round trip of the last answered ping.
    pub last_rtt: Option<Duration>,
}

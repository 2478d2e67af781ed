//! The sans-IO client state machine: one per client, across its reconnects. No sockets,
//! no clock, no RNG.
//!
//! It is the client-side twin of [`crate::Session`]. An async loop (the SDK's driver, a
//! test harness) dials, feeds it what happened and drains what it must do:
//!
//! | input | output |
//! |---|---|
//! | [`ClientSession::connected`] / [`ClientSession::dial_failed`] | [`ClientSession::poll_transmit`]: frames to send, in order |
//! | [`ClientSession::handle_frame`] for each decoded frame | [`ClientSession::poll_event`]: [`ClientEvent`]s for the loop and the application |
//! | [`ClientSession::handle_decode_error`], [`ClientSession::handle_transport_end`] | [`ClientSession::poll_timeout`]: when to call `handle_timeout` next |
//! | [`ClientSession::handle_timeout`] when the deadline passes | |
//! | [`ClientSession::provide_token`] / [`ClientSession::token_failed`] after [`ClientEvent::TokenNeeded`] | |
//! | [`ClientSession::request`], [`ClientSession::join`], [`ClientSession::leave`], [`ClientSession::close`] from the application | |
//!
//! Every call takes `now`. Randomness (the jitter of reconnect delays) comes from the
//! `seed` given to [`ClientSession::new`]: the session runs a small deterministic
//! generator over it and reads no entropy of its own, so a test with a fixed seed sees
//! fixed delays.
//!
//! # Decisions
//! - The token is fetched by the loop, never by the session: [`ClientEvent::TokenNeeded`]
//!   asks for it (before every login and on `TokenExpiring`), and the loop answers with
//!   `provide_token` when its fetch completes. Heartbeats keep running meanwhile.
//! - A login refused with `invalid_token` or `forbidden` is final:
//!   `Reconnect::Never(StopReason::AuthRejected(code))`. A token provider failure is not
//!   (`EndReason::TokenUnavailable`, backoff). `expired_token` is retried
//!   [`ClientSessionConfig::expired_token_retries`] times (default once), each time with
//!   a freshly fetched token: a provider may hand out a token that expired in transit
//!   or was cached, and a second refusal shows it cannot do better.
//! - `Kick {replaced}` and `Kick {kicked}` stop the client; any other kick is a loss.
//! - After `GoAway {retry_after}` the end of the connection waits `retry_after` plus a
//!   jitter uniform in `[0, max(retry_after / 2, 100 ms)]`; `Close {going_away}` without
//!   a `GoAway` (once logged in) waits only the jitter. Other losses back off with full jitter
//!   ([`Backoff`]); the attempt count restarts after every successful login.
//! - Calls made while connecting or logging in are held and sent after `LoginAck`;
//!   calls made between connections fail at once ([`CallError`]).
//! - Groups joined successfully are joined again after every reconnect, right after
//!   `LoginAck`; a group the gateway no longer accepts is reported
//!   ([`ClientEvent::RejoinFailed`]) and forgotten.
//!
//! # Transition table
//! The same table as docs/PROTOCOL.md ("Client state table"), where the states and
//! deadlines are described; `tests/client_session_table.rs` has a test per cell and
//! checks that both copies list the same cells. "Connected" means `LoggingIn`,
//! `LoggedIn` or `Draining`; inputs in *italics* come from the loop or the application.
//!
//! #### In any connected state
//! | id | state | input | sends | events | next |
//! |---|---|---|---|---|---|
//! | CX1 | connected | `Ping {id, payload}` | `Pong {id, payload}` | nothing | unchanged |
//! | CX2 | connected | `Kick {replaced}` or `Kick {kicked}` | nothing | `Ended {Kicked(code), Never(Kicked(code))}` | `Closed` |
//! | CX3 | connected | `Kick {other code}` (`slow_consumer`) | nothing | `Ended {Kicked(code), After(backoff)}` | `Waiting` |
//! | CX4 | connected | end of stream / transport error | nothing (unsent frames are discarded) | `Abandoned {id}` per open call; `Ended {TransportEnded / TransportFailed, After(backoff)}` | `Waiting` |
//! | CX5 | connected | bytes that fail to decode | `Close {code of the error}` | `Ended {ProtocolError(code), After(backoff)}` | `Waiting` |
//! | CX6 | connected | *close* | `Close {normal}` | `Abandoned {id}` per open call; `Ended {ClosedByApp, Never(ClosedByApp)}` | `Closed` |
//! | CX7 | any but `Closed` | a call's timeout passes | nothing | `TimedOut {id}`; a later answer is ignored | unchanged |
//!
//! #### Connecting
//! | id | state | input | sends | events | next |
//! |---|---|---|---|---|---|
//! | CC1 | `Connecting` | *connected* | nothing yet | `TokenNeeded` | `LoggingIn` |
//! | CC2 | `Connecting` | *dial failed* | nothing | `Ended {DialFailed, After(backoff)}` | `Waiting` |
//! | CC3 | `Connecting` | connect deadline passes | nothing | `Ended {DialFailed, After(backoff)}` | `Waiting` |
//! | CC4 | `Connecting` | *request*, *join*, *leave* | nothing yet (held until `LoginAck`) | the call's id is returned | unchanged |
//! | CC5 | `Connecting` | *dial failed*, `max_attempts` failures in a row | nothing | `Ended {DialFailed, Never(GaveUp {attempts})}` | `Closed` |
//!
//! #### LoggingIn
//! | id | state | input | sends | events | next |
//! |---|---|---|---|---|---|
//! | CL1 | `LoggingIn` | *provide token* | `Login {id 1, app, device, token, meta}` | nothing | unchanged |
//! | CL2 | `LoggingIn` | *token failed* | nothing | `Ended {TokenUnavailable, After(backoff)}` | `Waiting` |
//! | CL3 | `LoggingIn` | `LoginAck {conn_id, heartbeat_ms}` | `JoinGroup` for each joined group (with its last position), then the held calls in order | `LoggedIn {conn_id, heartbeat}` | `LoggedIn`; attempt count reset |
//! | CL4 | `LoggingIn` | `Close {invalid_token}` or `Close {forbidden}` | nothing | `Ended {LoginRefused(code), Never(AuthRejected(code))}` | `Closed` |
//! | CL5 | `LoggingIn` | `Close {expired_token}` | nothing | first time: `Ended {LoginRefused(expired_token), After(backoff)}`; again before a login succeeds: `Never(AuthRejected(expired_token))` | `Waiting`, then `Closed` |
//! | CL6 | `LoggingIn` | `Close {other code}` (`going_away` from a draining gateway, `login_timeout`, ...) | nothing | `Ended {ClosedByGateway(code), After(backoff)}` | `Waiting` |
//! | CL7 | `LoggingIn` | login deadline passes | `Close {login_timeout}` | `Ended {LoginTimeout, After(backoff)}` | `Waiting` |
//! | CL8 | `LoggingIn` | any other frame (`LoginAck` before `Login` too) | `Close {unexpected_frame}` | `Ended {ProtocolError(unexpected_frame), After(backoff)}` | `Waiting` |
//! | CL9 | `LoggingIn` or `LoggedIn` | `Close {try_later, message "retry_after_ms=N"}` (the gateway is over its accept rate) | nothing | `Ended {ClosedByGateway(try_later), After(N ms + jitter uniform in [0, max(N / 2, 100) ms])}`; attempt count reset; N at most 60,000, 1,000 when the message does not say | `Waiting` |
//!
//! #### LoggedIn
//! | id | state | input | sends | events | next |
//! |---|---|---|---|---|---|
//! | CA1 | `LoggedIn` | *request* | `Request {id, business, meta, payload}` | the call's id is returned | `LoggedIn` |
//! | CA2 | `LoggedIn` | `Response {id}` / `Error {id, code}` of a request | nothing | `Response {id, ..}` / `Failed {id, code, message}`; unknown ids are ignored | `LoggedIn` |
//! | CA3 | `LoggedIn` | *join* / *leave*, then `JoinAck` / `LeaveAck` / `Error` | `JoinGroup` / `LeaveGroup` | `GroupAck {id, group, joined}` (the joined set follows) / `Failed` | `LoggedIn` |
//! | CA4 | `LoggedIn` | `Push {id, ack_required}` | `PushAck {id}` if `ack_required` | `Push {business, group, seq, epoch, meta, payload}` | `LoggedIn` |
//! | CA5 | `LoggedIn` | heartbeat due | `Ping {id}` (none while one is unanswered) | nothing | `LoggedIn`; next heartbeat = now + interval |
//! | CA6 | `LoggedIn` | `Pong {id}` of the heartbeat | nothing | nothing (round trip recorded) | `LoggedIn`; pong deadline cleared |
//! | CA7 | `LoggedIn` | pong deadline passes | nothing | `Ended {HeartbeatLost, After(backoff from attempt 0)}` | `Waiting` |
//! | CA8 | `LoggedIn` | `TokenExpiring`, then *provide token* | `TokenRefresh {id, token}` | `TokenNeeded` (heartbeats go on while the token is fetched) | `LoggedIn` |
//! | CA9 | `LoggedIn` | `GoAway {retry_after_ms}` | nothing | `StateChanged(Draining)` | `Draining` |
//! | CA10 | `LoggedIn` | `Close {code}` | nothing | `Ended {ClosedByGateway(code), After(..)}`: the jitter alone for `going_away`, backoff otherwise | `Waiting` |
//! | CA11 | `LoggedIn` | `LoginAck` or a frame only a client sends | `Close {unexpected_frame}` | `Ended {ProtocolError(unexpected_frame), After(backoff)}` | `Waiting` |
//! | CA12 | `LoggedIn` | `Error {id}` for a rejoin sent at CL3 | nothing | `RejoinFailed {group, code}`; the group is forgotten | `LoggedIn` |
//! | CA13 | `LoggedIn` | *refresh token* (the application renewed its token before expiry) | `TokenRefresh {id, token}` | nothing; a `TokenRefreshAck` or `Error` for it changes nothing either | `LoggedIn` |
//! | CA14 | `LoggedIn` | `JoinAck {id, position, recovered}` for a rejoin sent at CL3 | nothing | `Rejoined {group, recovered}` (recovered only for `RECOVERED = 1`); unless recovered, the ack's position replaces the group's | `LoggedIn` |
//! | CA15 | `LoggedIn` | nothing received for half the dead-peer timeout, then for all of it (`dead_peer_timeout` set) | a probe `Ping {id}` (none while one is unanswered) | then `Ended {HeartbeatLost, After(backoff from attempt 0)}` | `LoggedIn`, then `Waiting` |
//!
//! #### Draining
//! Every `LoggedIn` row applies in `Draining` too, except for these:
//!
//! | id | state | input | sends | events | next |
//! |---|---|---|---|---|---|
//! | CD1 | `Draining` | *request*, `Response`, `Push` (sample of the `LoggedIn` rows) | as in `LoggedIn` | as in `LoggedIn` | `Draining` |
//! | CD2 | `Draining` | `Close {any code}`, end of stream or transport error | nothing | `Ended {.., After(retry_after + jitter)}`; attempt count reset | `Waiting` |
//! | CD3 | `Draining` | `GoAway` again | nothing | nothing; the newer hint applies | `Draining` |
//!
//! #### Waiting and Closed
//! | id | state | input | sends | events | next |
//! |---|---|---|---|---|---|
//! | CW1 | `Waiting` | reconnect deadline passes | nothing | `StateChanged(Connecting)` | `Connecting` |
//! | CW2 | `Waiting` | *request*, *join*, *leave* | nothing | refused: `NotConnected` | `Waiting` |
//! | CW3 | `Waiting` | frames, transport events, *connected*, *provide token* | nothing | nothing; reported "not applied" | `Waiting` |
//! | CW4 | `Waiting` | *close* | nothing | `Ended {ClosedByApp, Never(ClosedByApp)}` | `Closed` |
//! | CZ1 | `Closed` | anything | nothing; calls refused with `Stopped`, other inputs "not applied" | nothing | `Closed` |

mod policy;
mod types;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use policy::ClientPolicy;
pub use types::{
    Backoff, CallError, ClientEvent, ClientSessionConfig, ClientState, ClientStats, EndReason,
    Reconnect, StopReason,
};

use crate::error::DecodeError;
use crate::protocol::{
    Code, Frame, MAX_NETWORK, Metadata, Position, QualityReport, ReportTransport, Text,
    TransportReport,
};
use crate::session::TransportEnd;

/// The id of every `Login` this session sends (its `LoginAck` echoes it).
pub const LOGIN_ID: u32 = 1;

/// What waits for an answer, by frame id.
#[derive(Debug)]
struct Pending {
    kind: Kind,
    deadline: Option<Instant>,
    /// The frame, while the call is held until `LoginAck`.
    held: Option<Frame>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Request,
    Join(Text),
    Leave(Text),
    /// A join sent by the session itself after a reconnect.
    Rejoin(Text),
    /// A `TokenRefresh`.
    Refresh,
}

impl Kind {
    /// Whether the application waits for this one (and so hears of its end).
    fn is_call(&self) -> bool {
        matches!(self, Kind::Request | Kind::Join(_) | Kind::Leave(_))
    }
}

/// One client's protocol state across its connections. See the [module docs](self).
#[derive(Debug)]
pub struct ClientSession {
    config: ClientSessionConfig,
    state: ClientState,
    /// State of the jitter generator (splitmix64).
    rng: u64,
    /// Failed attempts in a row since the last successful login.
    attempt: u32,
    expired_retries_left: u32,
    /// The deadline of the state: connect, login, or reconnect.
    deadline: Option<Instant>,
    /// Whether this connection reached `LoggedIn`.
    logged_in: bool,
    login_sent: bool,
    /// A `TokenNeeded` is outstanding.
    token_wanted: bool,
    heartbeat: Duration,
    ping_at: Option<Instant>,
    /// The heartbeat ping awaiting its pong: id and send time.
    ping_out: Option<(u32, Instant)>,
    /// When the current connection last received a frame (dead-peer timeout).
    last_recv: Option<Instant>,
    go_away: Option<Duration>,
    next_id: u32,
    pending: HashMap<u32, Pending>,
    /// Ids of held calls, in call order.
    held: Vec<u32>,
    /// Joined groups with the last position seen in each (sent on rejoin).
    joined: BTreeMap<Text, Option<Position>>,
    transmit: VecDeque<Frame>,
    events: VecDeque<ClientEvent>,
    stats: ClientStats,
    stop: Option<StopReason>,
    /// When the current connect attempt started (entering `Connecting`), until it ends.
    attempt_started: Option<Instant>,
    /// Counts for the next quality report, one entry per transport in id order.
    quality: Vec<TransportReport>,
    /// When the next quality report is due (while logged in, when configured).
    report_at: Option<Instant>,
}

impl ClientSession {
    /// A session about to dial at `now`: state `Connecting`, connect deadline
    /// `now + connect_timeout`. `seed` feeds the reconnect jitter (give each client a
    /// different random one).
    pub fn new(config: ClientSessionConfig, now: Instant, seed: u64) -> ClientSession {
        let deadline = Some(now + config.connect_timeout);
        let expired_retries_left = config.expired_token_retries;
        ClientSession {
            config,
            state: ClientState::Connecting,
            rng: seed,
            attempt: 0,
            expired_retries_left,
            deadline,
            logged_in: false,
            login_sent: false,
            token_wanted: false,
            heartbeat: Duration::ZERO,
            ping_at: None,
            ping_out: None,
            last_recv: None,
            go_away: None,
            next_id: LOGIN_ID,
            pending: HashMap::new(),
            held: Vec::new(),
            joined: BTreeMap::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
            stop: None,
            attempt_started: Some(now),
            quality: ReportTransport::ALL
                .iter()
                .map(|&t| TransportReport::new(t))
                .collect(),
            report_at: None,
        }
    }

    /// The `Login` frame for `app`, `device` and `token` (id [`LOGIN_ID`]): the one way a
    /// longconn client logs in. [`ClientSession`] sends it itself; bare test clients use
    /// it with [`login_answer`].
    pub fn login_frame(app: &str, device: &str, token: Bytes, meta: Metadata) -> Frame {
        Frame::Login {
            id: LOGIN_ID,
            app: Text::from(app),
            device: Text::from(device),
            token,
            meta,
        }
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Failed attempts in a row since the last successful login.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Why the client stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop
    }

    /// The groups this client is in (joined again after each reconnect).
    pub fn joined(&self) -> impl Iterator<Item = &str> {
        self.joined.keys().map(Text::as_str)
    }

    /// The last position seen in joined `group` (from its `JoinAck` or its last
    /// push): what the next rejoin asks to recover from.
    pub fn position(&self, group: &str) -> Option<Position> {
        self.joined.get(&Text::from(group)).copied().flatten()
    }

    /// Heartbeat figures so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The next frame to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] must next be called; `None` when closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.pending.values().filter_map(|p| p.deadline).min();
        let state = match self.state {
            ClientState::Closed => return None,
            ClientState::Connecting | ClientState::LoggingIn | ClientState::Waiting => {
                self.deadline
            }
            ClientState::LoggedIn | ClientState::Draining => {
                let pong = self.ping_out.map(|(_, sent)| sent + self.pong_timeout());
                let (probe, dead) = self.dead_peer_deadlines();
                let probe = probe.filter(|_| self.ping_out.is_none());
                [self.ping_at, pong, probe, dead, self.report_at]
                    .into_iter()
                    .flatten()
                    .min()
            }
        };
        [state, calls].into_iter().flatten().min()
    }

    /// The transport is up: ask for a token (`TokenNeeded`) and start the login
    /// deadline. Returns `false` (and changes nothing) unless `Connecting`.
    pub fn connected(&mut self, now: Instant) -> bool {
        if self.state != ClientState::Connecting {
            return false;
        }
        self.deadline = Some(now + self.config.login_timeout);
        self.last_recv = Some(now);
        self.logged_in = false;
        self.login_sent = false;
        self.go_away = None;
        self.token_wanted = true;
        self.events.push_back(ClientEvent::TokenNeeded);
        self.set_state(ClientState::LoggingIn);
        true
    }

    /// The dial failed. Returns `false` unless `Connecting`.
    pub fn dial_failed(&mut self, now: Instant) -> bool {
        if self.state != ClientState::Connecting {
            return false;
        }
        self.end(now, EndReason::DialFailed);
        true
    }

    /// The token the last [`ClientEvent::TokenNeeded`] asked for: sends `Login` (while
    /// logging in) or `TokenRefresh` (while logged in). Returns `false` when no token was
    /// asked for (a late answer after the connection ended, say).
    pub fn provide_token(&mut self, _now: Instant, token: Bytes) -> bool {
        if !self.token_wanted {
            return false;
        }
        match self.state {
            ClientState::LoggingIn if !self.login_sent => {
                self.token_wanted = false;
                self.login_sent = true;
                let frame = Self::login_frame(
                    &self.config.app,
                    &self.config.device,
                    token,
                    self.config.login_meta.clone(),
                );
                self.transmit.push_back(frame);
                true
            }
            ClientState::LoggedIn | ClientState::Draining => {
                self.token_wanted = false;
                let id = self.next_id();
                self.pending.insert(
                    id,
                    Pending {
                        kind: Kind::Refresh,
                        deadline: None,
                        held: None,
                    },
                );
                self.transmit.push_back(Frame::TokenRefresh { id, token });
                true
            }
            _ => false,
        }
    }

    /// Sends `TokenRefresh` with `token` now, before the gateway asks: the application
    /// renewed a token that is about to expire, and the session goes on without a
    /// reconnect (docs/PROTOCOL.md 8.6). Any outstanding `TokenNeeded` is answered by it.
    /// Returns `false` (and sends nothing) unless logged in or draining.
    pub fn refresh_token(&mut self, _now: Instant, token: Bytes) -> bool {
        if !matches!(self.state, ClientState::LoggedIn | ClientState::Draining) {
            return false;
        }
        self.token_wanted = false;
        let id = self.next_id();
        self.pending.insert(
            id,
            Pending {
                kind: Kind::Refresh,
                deadline: None,
                held: None,
            },
        );
        self.transmit.push_back(Frame::TokenRefresh { id, token });
        true
    }

    /// The token provider failed. Before login this ends the attempt
    /// (`TokenUnavailable`, retried with backoff); while logged in nothing changes (the
    /// gateway closes with `token_expired` at its deadline, or a later `TokenExpiring`
    /// asks again). Returns `false` when no token was asked for.
    pub fn token_failed(&mut self, now: Instant) -> bool {
        if !self.token_wanted {
            return false;
        }
        self.token_wanted = false;
        if self.state == ClientState::LoggingIn {
            self.end(now, EndReason::TokenUnavailable);
        }
        true
    }

    /// Sends (or, before `LoginAck`, holds) a request to backend `business`; the answer
    /// is a [`ClientEvent::Response`], `Failed`, `TimedOut` (after `timeout`, if given)
    /// or `Abandoned` with the returned id.
    ///
    /// # Errors
    /// [`CallError`] between connections or once stopped.
    pub fn request(
        &mut self,
        now: Instant,
        business: u32,
        meta: Metadata,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<u32, CallError> {
        self.call(now, timeout, Kind::Request, |id| Frame::Request {
            id,
            business,
            meta,
            payload,
        })
    }

    /// Joins `group` (answered by [`ClientEvent::GroupAck`] or `Failed`). Joined groups
    /// are joined again after every reconnect.
    ///
    /// # Errors
    /// [`CallError`] between connections or once stopped.
    pub fn join(
        &mut self,
        now: Instant,
        group: &str,
        timeout: Option<Duration>,
    ) -> Result<u32, CallError> {
        let group = Text::from(group);
        self.call(now, timeout, Kind::Join(group.clone()), |id| {
            Frame::JoinGroup {
                id,
                group,
                since: None,
            }
        })
    }

    /// Leaves `group`.
    ///
    /// # Errors
    /// [`CallError`] between connections or once stopped.
    pub fn leave(
        &mut self,
        now: Instant,
        group: &str,
        timeout: Option<Duration>,
    ) -> Result<u32, CallError> {
        let group = Text::from(group);
        self.call(now, timeout, Kind::Leave(group.clone()), |id| {
            Frame::LeaveGroup { id, group }
        })
    }

    fn call(
        &mut self,
        now: Instant,
        timeout: Option<Duration>,
        kind: Kind,
        frame: impl FnOnce(u32) -> Frame,
    ) -> Result<u32, CallError> {
        let send_now = match self.state {
            ClientState::Closed => return Err(CallError::Stopped),
            ClientState::Waiting => return Err(CallError::NotConnected),
            ClientState::Connecting | ClientState::LoggingIn => false,
            ClientState::LoggedIn | ClientState::Draining => true,
        };
        let id = self.next_id();
        let frame = frame(id);
        let held = if send_now {
            self.transmit.push_back(frame);
            None
        } else {
            self.held.push(id);
            Some(frame)
        };
        self.pending.insert(
            id,
            Pending {
                kind,
                deadline: timeout.map(|t| now + t),
                held,
            },
        );
        Ok(id)
    }

    /// Closes for good: sends `Close {normal}` if connected, abandons open calls and
    /// ends with `Reconnect::Never(ClosedByApp)`. Returns `false` if already closed.
    pub fn close(&mut self, now: Instant) -> bool {
        if self.state == ClientState::Closed {
            return false;
        }
        if self.is_connected() {
            self.transmit.push_back(Frame::Close {
                code: Code::Normal,
                message: Text::new(),
            });
        }
        self.stop = Some(StopReason::ClosedByApp);
        self.end(now, EndReason::ClosedByApp);
        true
    }

    /// Processes the deadlines that have passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        let mut expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| due(p.deadline))
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        for id in expired {
            self.pending.remove(&id);
            self.held.retain(|h| *h != id);
            self.events.push_back(ClientEvent::TimedOut { id });
        }
        match self.state {
            ClientState::Closed => {}
            ClientState::Connecting if due(self.deadline) => {
                self.end(now, EndReason::DialFailed);
            }
            ClientState::LoggingIn if due(self.deadline) => {
                self.transmit.push_back(Frame::Close {
                    code: Code::LoginTimeout,
                    message: Text::new(),
                });
                self.end(now, EndReason::LoginTimeout);
            }
            ClientState::Waiting if due(self.deadline) => {
                self.deadline = Some(now + self.config.connect_timeout);
                self.attempt_started = Some(now);
                self.set_state(ClientState::Connecting);
            }
            ClientState::LoggedIn | ClientState::Draining => {
                let (probe, dead) = self.dead_peer_deadlines();
                if due(self.report_at) {
                    self.report_at = self.config.quality_report_interval.map(|i| now + i);
                    self.send_quality_report();
                }
                if due(dead)
                    || self
                        .ping_out
                        .is_some_and(|(_, sent)| sent + self.pong_timeout() <= now)
                {
                    self.end(now, EndReason::HeartbeatLost);
                } else if due(self.ping_at) || (due(probe) && self.ping_out.is_none()) {
                    if due(self.ping_at) {
                        self.ping_at = Some(now + self.heartbeat);
                    }
                    if self.ping_out.is_none() {
                        let id = self.next_id();
                        self.ping_out = Some((id, now));
                        self.stats.pings_sent += 1;
                        self.transmit.push_back(Frame::Ping {
                            id,
                            payload: Bytes::new(),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// Processes a frame received from the gateway at `now`.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if !self.is_connected() {
            return;
        }
        self.last_recv = Some(now);
        match frame {
            Frame::Ping { id, payload } => self.transmit.push_back(Frame::Pong { id, payload }),
            Frame::Close { code, message } => {
                if code == Code::TryLater {
                    // The gateway's delay, honoured like a `GoAway` hint (plus jitter).
                    self.go_away = Some(try_later_delay(message.as_str()));
                }
                let refused = matches!(
                    code,
                    Code::InvalidToken | Code::ExpiredToken | Code::Forbidden
                );
                let reason = if self.state == ClientState::LoggingIn && refused {
                    EndReason::LoginRefused(code)
                } else {
                    EndReason::ClosedByGateway(code)
                };
                self.end(now, reason);
            }
            Frame::Kick { code, .. } => self.end(now, EndReason::Kicked(code)),
            frame if self.state == ClientState::LoggingIn => self.handle_login_frame(now, frame),
            frame => self.handle_logged_in_frame(now, frame),
        }
    }

    fn handle_login_frame(&mut self, now: Instant, frame: Frame) {
        match frame {
            Frame::LoginAck {
                conn_id,
                heartbeat_ms,
                expires_at_ms,
                ..
            } if self.login_sent => {
                self.logged_in = true;
                self.attempt = 0;
                self.expired_retries_left = self.config.expired_token_retries;
                self.deadline = None;
                self.heartbeat = Duration::from_millis(u64::from(heartbeat_ms))
                    .min(self.config.max_heartbeat.unwrap_or(Duration::MAX))
                    .max(self.config.min_heartbeat);
                self.ping_at = Some(now + self.heartbeat);
                self.ping_out = None;
                if let Some(started) = self.attempt_started.take() {
                    let ms = now.saturating_duration_since(started).as_millis() as u64;
                    self.quality_entry().record_connect(Some(ms));
                }
                self.report_at = self.config.quality_report_interval.map(|i| now + i);
                self.events.push_back(ClientEvent::LoggedIn {
                    conn_id,
                    heartbeat: self.heartbeat,
                    expires_at_ms,
                });
                let groups: Vec<(Text, Option<Position>)> =
                    self.joined.iter().map(|(g, p)| (g.clone(), *p)).collect();
                for (group, since) in groups {
                    let id = self.next_id();
                    self.pending.insert(
                        id,
                        Pending {
                            kind: Kind::Rejoin(group.clone()),
                            deadline: None,
                            held: None,
                        },
                    );
                    self.transmit
                        .push_back(Frame::JoinGroup { id, group, since });
                }
                for id in std::mem::take(&mut self.held) {
                    if let Some(frame) = self.pending.get_mut(&id).and_then(|p| p.held.take()) {
                        self.transmit.push_back(frame);
                    }
                }
                self.set_state(ClientState::LoggedIn);
            }
            other => self.unexpected(now, &other),
        }
    }

    fn handle_logged_in_frame(&mut self, now: Instant, frame: Frame) {
        match frame {
            Frame::Response {
                id,
                business,
                meta,
                payload,
            } => {
                if self.take_pending(id, |k| *k == Kind::Request).is_some() {
                    self.events.push_back(ClientEvent::Response {
                        id,
                        business,
                        meta,
                        payload,
                    });
                }
            }
            Frame::Error { id, code, message } => match self.pending.remove(&id) {
                Some(p) if p.kind.is_call() => {
                    self.events
                        .push_back(ClientEvent::Failed { id, code, message });
                }
                Some(Pending {
                    kind: Kind::Rejoin(group),
                    ..
                }) => {
                    self.joined.remove(&group);
                    self.events
                        .push_back(ClientEvent::RejoinFailed { group, code });
                }
                // A refused `TokenRefresh`: the gateway's refresh deadline keeps running;
                // a later `TokenExpiring` asks again, or the gateway closes.
                Some(_) | None => {}
            },
            Frame::JoinAck {
                id,
                position,
                recovered,
                ..
            } => {
                let kind = self.take_pending(id, |k| matches!(k, Kind::Join(_) | Kind::Rejoin(_)));
                match kind.map(|p| p.kind) {
                    Some(Kind::Join(group)) => {
                        self.joined.insert(group.detach(), position);
                        self.events.push_back(ClientEvent::GroupAck {
                            id,
                            group,
                            joined: true,
                        });
                    }
                    Some(Kind::Rejoin(group)) => {
                        let recovered = recovered == Some(true);
                        if let Some(at) = self.joined.get_mut(&group) {
                            // Recovered: the replayed pushes that follow move the
                            // position on. Not: the ack's position is the new base.
                            if !recovered {
                                *at = position;
                            }
                        }
                        self.events
                            .push_back(ClientEvent::Rejoined { group, recovered });
                    }
                    _ => {}
                }
            }
            Frame::LeaveAck { id, .. } => {
                // Only a leave takes a `LeaveAck` (a join or rejoin takes a `JoinAck`);
                // an ack with another call's id leaves that call waiting.
                if let Some(Kind::Leave(group)) = self
                    .take_pending(id, |k| matches!(k, Kind::Leave(_)))
                    .map(|p| p.kind)
                {
                    self.joined.remove(&group);
                    self.events.push_back(ClientEvent::GroupAck {
                        id,
                        group,
                        joined: false,
                    });
                }
            }
            Frame::Push {
                id,
                ack_required,
                business,
                group,
                seq,
                epoch,
                meta,
                payload,
            } => {
                if ack_required {
                    self.transmit.push_back(Frame::PushAck { id });
                }
                if let (Some(g), Some(seq), Some(epoch)) = (&group, seq, epoch)
                    && let Some(at) = self.joined.get_mut(g)
                {
                    let newer = match at {
                        Some(p) => p.epoch != epoch || seq > p.seq,
                        None => true,
                    };
                    if newer {
                        *at = Some(Position { epoch, seq });
                    }
                }
                self.events.push_back(ClientEvent::Push {
                    business,
                    group,
                    seq,
                    epoch,
                    meta,
                    payload,
                });
            }
            Frame::Pong { id, .. } => {
                if let Some((sent_id, sent)) = self.ping_out
                    && sent_id == id
                {
                    self.ping_out = None;
                    self.stats.pongs_received += 1;
                    let rtt = now.saturating_duration_since(sent);
                    self.stats.last_rtt = Some(rtt);
                    self.quality_entry()
                        .record_ping(Some(rtt.as_millis() as u64));
                }
            }
            Frame::TokenExpiring { .. } => {
                if !self.token_wanted {
                    self.token_wanted = true;
                    self.events.push_back(ClientEvent::TokenNeeded);
                }
            }
            Frame::TokenRefreshAck { id, .. } => {
                self.take_pending(id, |k| *k == Kind::Refresh);
            }
            Frame::GoAway { retry_after_ms, .. } => {
                self.go_away = Some(Duration::from_millis(u64::from(retry_after_ms)));
                if self.state == ClientState::LoggedIn {
                    self.set_state(ClientState::Draining);
                }
            }
            other => self.unexpected(now, &other),
        }
    }

    fn take_pending(&mut self, id: u32, matches: impl Fn(&Kind) -> bool) -> Option<Pending> {
        if self.pending.get(&id).is_some_and(|p| matches(&p.kind)) {
            self.pending.remove(&id)
        } else {
            None
        }
    }

    /// The gateway's bytes failed to decode: send `Close` with the error's code and end
    /// the connection (reconnect with backoff).
    pub fn handle_decode_error(&mut self, now: Instant, err: &DecodeError) {
        if !self.is_connected() {
            return;
        }
        let code = err.wire_code();
        self.transmit.push_back(Frame::Close {
            code,
            message: Text::new(),
        });
        self.end(now, EndReason::ProtocolError(code));
    }

    /// The transport ended (EOF) or failed. Unsent frames are discarded.
    pub fn handle_transport_end(&mut self, now: Instant, end: TransportEnd) {
        if !self.is_connected() {
            return;
        }
        self.transmit.clear();
        self.end(
            now,
            match end {
                TransportEnd::Eof => EndReason::TransportEnded,
                TransportEnd::Failed => EndReason::TransportFailed,
            },
        );
    }

    /// Whether a transport is up (logging in, logged in or draining).
    pub fn is_connected(&self) -> bool {
        matches!(
            self.state,
            ClientState::LoggingIn | ClientState::LoggedIn | ClientState::Draining
        )
    }

    fn unexpected(&mut self, now: Instant, frame: &Frame) {
        let message = format!(
            "{:?} not expected in state {:?}",
            frame.frame_type(),
            self.state
        );
        self.transmit.push_back(Frame::Close {
            code: Code::UnexpectedFrame,
            message: Text::from(message),
        });
        self.end(now, EndReason::ProtocolError(Code::UnexpectedFrame));
    }

    /// When to send a dead-peer probe and when the gateway counts as gone: half the
    /// dead-peer timeout and all of it after the last received frame (`None` when the
    /// timeout is off or nothing was received on this connection).
    fn dead_peer_deadlines(&self) -> (Option<Instant>, Option<Instant>) {
        match (self.config.dead_peer_timeout, self.last_recv) {
            (Some(timeout), Some(last)) => (Some(last + timeout / 2), Some(last + timeout)),
            _ => (None, None),
        }
    }

    fn pong_timeout(&self) -> Duration {
        self.config.pong_timeout.unwrap_or(self.heartbeat * 2)
    }

    fn next_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            let id = self.next_id;
            if id > LOGIN_ID && !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// A uniformly random `u64` (splitmix64 over the seed).
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn set_state(&mut self, state: ClientState) {
        self.state = state;
        self.events.push_back(ClientEvent::StateChanged(state));
    }

    /// Ends the connection (or attempt): abandons calls, clears timers, decides what
    /// comes next, and reports it.
    /// Sets the transport the next attempts and pings are counted under (quality
    /// reports, docs/PROTOCOL.md section 4.1).
    pub fn set_transport(&mut self, transport: ReportTransport) {
        self.config.transport = transport;
    }

    /// Takes what was counted since the last report (entries with counts only, in
    /// transport order); the counts restart from zero.
    pub fn take_quality_report(&mut self) -> QualityReport {
        let mut report = QualityReport::new();
        for e in &mut self.quality {
            if !e.is_empty() {
                report.transports.push(e.clone());
                *e = TransportReport::new(e.transport);
            }
        }
        report
    }

    fn quality_entry(&mut self) -> &mut TransportReport {
        &mut self.quality[self.config.transport as usize]
    }

    /// Sends a `QualityReport` with what was counted (nothing when nothing was).
    fn send_quality_report(&mut self) {
        let report = self.take_quality_report();
        if report.transports.is_empty() {
            return;
        }
        // At most 5 entries, each consistent by construction: encoding cannot fail.
        let Ok(payload) = report.encode() else {
            return;
        };
        let network = if self.config.network <= MAX_NETWORK {
            self.config.network
        } else {
            0
        };
        let id = self.next_id();
        self.transmit.push_back(Frame::QualityReport {
            id,
            network,
            payload,
        });
    }

    fn end(&mut self, now: Instant, reason: EndReason) {
        let mut abandoned: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.kind.is_call())
            .map(|(id, _)| *id)
            .collect();
        abandoned.sort_unstable();
        self.pending.clear();
        self.held.clear();
        for id in abandoned {
            self.events.push_back(ClientEvent::Abandoned { id });
        }
        if self.ping_out.is_some() {
            self.quality_entry().record_ping(None);
        }
        if self.attempt_started.take().is_some() {
            self.quality_entry().record_connect(None);
        }
        self.report_at = None;
        self.ping_at = None;
        self.ping_out = None;
        self.last_recv = None;
        self.token_wanted = false;
        self.login_sent = false;
        let reconnect = self.decide(&reason);
        self.go_away = None;
        self.logged_in = false;
        self.events
            .push_back(ClientEvent::Ended { reason, reconnect });
        match reconnect {
            Reconnect::After(delay) => {
                self.deadline = Some(now + delay);
                self.set_state(ClientState::Waiting);
            }
            Reconnect::Never(stop) => {
                self.stop = Some(stop);
                self.deadline = None;
                self.set_state(ClientState::Closed);
            }
        }
    }

    fn decide(&mut self, reason: &EndReason) -> Reconnect {
        if let Some(stop) = self.stop {
            return Reconnect::Never(stop);
        }
        match *reason {
            EndReason::ClosedByApp => return Reconnect::Never(StopReason::ClosedByApp),
            EndReason::LoginRefused(code @ (Code::InvalidToken | Code::Forbidden)) => {
                return Reconnect::Never(StopReason::AuthRejected(code));
            }
            EndReason::LoginRefused(code) => {
                if self.expired_retries_left == 0 {
                    return Reconnect::Never(StopReason::AuthRejected(code));
                }
                self.expired_retries_left -= 1;
            }
            EndReason::Kicked(code @ (Code::Replaced | Code::Kicked)) => {
                return Reconnect::Never(StopReason::Kicked(code));
            }
            _ => {}
        }
        let gateway_ended = matches!(
            reason,
            EndReason::ClosedByGateway(_) | EndReason::TransportEnded | EndReason::TransportFailed
        );
        let hint = match (self.go_away, reason) {
            (Some(hint), _) if gateway_ended => Some(hint),
            // A logged-in session closed by a draining gateway without a hint; a login
            // refused with `going_away` backs off instead (the gateway takes no new
            // sessions, and the attempt count must grow).
            (None, EndReason::ClosedByGateway(Code::GoingAway)) if self.logged_in => {
                Some(Duration::ZERO)
            }
            _ => None,
        };
        if let Some(hint) = hint {
            // Everyone got the same hint: spread the returns over half of it again.
            self.attempt = 0;
            let spread = (hint.as_millis() as u64 / 2).max(100);
            let jitter = types::uniform(self.random(), spread);
            return Reconnect::After(hint + Duration::from_millis(jitter));
        }
        if self.logged_in {
            self.attempt = 0;
        }
        if let Some(max) = self.config.backoff.max_attempts
            && self.attempt >= max
        {
            return Reconnect::Never(StopReason::GaveUp {
                attempts: self.attempt,
            });
        }
        let sample = self.random();
        let delay = self.config.backoff.delay(self.attempt, sample);
        self.attempt += 1;
        Reconnect::After(delay)
    }
}

/// What the gateway's answer to a `Login` (sent as [`ClientSession::login_frame`]) says:
/// `Ok(conn_id)` for `LoginAck`, `Err(code)` for a `Close` or `Kick` (the refusal), and
/// `Err(unexpected_frame)` for anything else.
pub fn login_answer(frame: &Frame) -> Result<u64, Code> {
    match frame {
        Frame::LoginAck { conn_id, .. } => Ok(*conn_id),
        Frame::Close { code, .. } | Frame::Kick { code, .. } => Err(*code),
        _ => Err(Code::UnexpectedFrame),
    }
}

/// The delay of a `Close {try_later}`: its message `retry_after_ms=<N>`, at most 60 s;
/// 1 s when the message does not say.
fn try_later_delay(message: &str) -> Duration {
    message
        .strip_prefix("retry_after_ms=")
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), |ms| {
            Duration::from_millis(ms.min(60_000))
        })
}

//! The sans-IO session state machine: one per connection, no sockets, no clock.
//!
//! A driver (the transport task) feeds the session what happened and drains what it must
//! do, in the style of quinn-proto's `Connection`:
//!
//! | input | output |
//! |---|---|
//! | [`Session::handle_frame`] for each decoded frame | [`Session::poll_transmit`]: frames to send, in order |
//! | [`Session::handle_decode_error`] when the codec fails | [`Session::poll_event`]: what the application must act on |
//! | [`Session::handle_transport_end`] on EOF or I/O error | [`Session::poll_timeout`]: when to call `handle_timeout` next |
//! | [`Session::handle_timeout`] when the deadline passes | |
//! | [`Session::handle_command`] and [`Session::push`] from the application | |
//!
//! Every call takes `now`; the session never reads a clock, so tests run it on a
//! simulated one. The full transition table is in docs/PROTOCOL.md ("Session state
//! table"), and `tests/session_table.rs` drives each of its cells.

mod moment;
mod types;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use types::{
    CloseReason, Command, Event, PushOutcome, State, TokenExpiry, Transmit, TransportEnd,
};

use crate::config::{SessionConfig, SlowConsumerPolicy};
use crate::error::DecodeError;
use crate::protocol::{Code, Frame, MAX_MESSAGE_LEN, QualityReport, Text};
use moment::Moment;

/// One connection's protocol state. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    state: State,
    close_reason: Option<CloseReason>,
    /// Id of the `Login` frame, echoed by `LoginAck`.
    login_id: u32,
    // The deadlines are `Moment`s, 8 bytes each instead of an `Option<Instant>`'s 16:
    // every idle connection keeps them.
    /// Deadline for the current state: login, or drain.
    state_deadline: Moment,
    /// Closes with `idle_timeout` when reached; moved forward by every received frame.
    idle_deadline: Moment,
    /// When the token expires (then `TokenExpiring` is sent); `token_expiry_ms` is the
    /// same moment as Unix milliseconds.
    token_expiry: Moment,
    token_expiry_ms: u64,
    /// After `TokenExpiring`: closes with `token_expired` when reached.
    refresh_deadline: Moment,
    /// The transmit and event queues, boxed while in use: an idle session holds one
    /// pointer ([`Session::release_idle_memory`] drops them once empty).
    queues: Option<Box<Queues>>,
    dropped_pushes: u64,
    inflight_requests: u32,
    /// Request rate limit, GCRA: the theoretical arrival time of the next request.
    request_tat: Moment,
}

/// A session's outbound frames and application events.
#[derive(Debug, Default)]
struct Queues {
    transmit: VecDeque<Queued>,
    /// Pushes among `transmit`.
    queued_pushes: usize,
    events: VecDeque<Event>,
}

/// A queued transmit, tagged so the push count stays exact as the queue drains.
#[derive(Debug)]
struct Queued {
    transmit: Transmit,
    is_push: bool,
}

impl Session {
    /// A new session for a connection accepted at `now`: state `AwaitingLogin`, login
    /// deadline `now + login_timeout`.
    pub fn new(config: Arc<SessionConfig>, now: Instant) -> Session {
        let login_deadline = now + config.login_timeout();
        Session {
            config,
            state: State::AwaitingLogin,
            close_reason: None,
            login_id: 0,
            state_deadline: Moment::at(login_deadline),
            idle_deadline: Moment::NONE,
            token_expiry: Moment::NONE,
            token_expiry_ms: 0,
            refresh_deadline: Moment::NONE,
            queues: None,
            dropped_pushes: 0,
            inflight_requests: 0,
            request_tat: Moment::NONE,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
    }

    /// Whether the session has closed. Its remaining transmits should still be flushed
    /// (they end with the `Close` or `Kick` frame), then the transport closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Pushes discarded so far by the drop-newest policy or by a slow-consumer disconnect.
    pub fn dropped_pushes(&self) -> u64 {
        self.dropped_pushes
    }

    /// Pushes queued and not yet taken by [`Session::poll_transmit`].
    pub fn queued_pushes(&self) -> usize {
        self.queues.as_ref().map_or(0, |q| q.queued_pushes)
    }

    /// The queues, made on first use.
    fn queues(&mut self) -> &mut Queues {
        self.queues.get_or_insert_with(Box::default)
    }

    /// The next frame to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let queues = self.queues.as_deref_mut()?;
        let queued = queues.transmit.pop_front()?;
        if queued.is_push {
            queues.queued_pushes -= 1;
        }
        Some(queued.transmit)
    }

    /// Whether frames are waiting in [`Session::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        self.queues.as_ref().is_some_and(|q| !q.transmit.is_empty())
    }

    /// Gives back the memory of the transmit and event queues once both are empty. An idle
    /// connection then holds no queue allocation (a driver calls this before it waits;
    /// the queues grow again on the next burst).
    pub fn release_idle_memory(&mut self) {
        let Some(queues) = self.queues.as_deref_mut() else {
            return;
        };
        match (queues.transmit.is_empty(), queues.events.is_empty()) {
            (true, true) => self.queues = None,
            (true, false) if queues.transmit.capacity() > 0 => {
                queues.transmit = VecDeque::new();
            }
            (false, true) if queues.events.capacity() > 0 => queues.events = VecDeque::new(),
            _ => {}
        }
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.queues.as_deref_mut()?.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must next be called; `None` when closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::AwaitingLogin | State::Authenticating => self.state_deadline.get(),
            State::Active | State::Draining => [
                self.state_deadline.get(),
                self.idle_deadline.get(),
                self.refresh_deadline.get().or(self.token_expiry.get()),
            ]
            .into_iter()
            .flatten()
            .min(),
        }
    }

    /// Processes the deadlines that have passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |deadline: Moment| deadline.is_due(now);
        match self.state {
            State::Closed => {}
            State::AwaitingLogin | State::Authenticating => {
                if due(self.state_deadline) {
                    self.close(Code::LoginTimeout);
                }
            }
            State::Active | State::Draining => {
                if due(self.idle_deadline) {
                    self.close(Code::IdleTimeout);
                } else if due(self.refresh_deadline) {
                    self.close(Code::TokenExpired);
                } else if self.state == State::Draining && due(self.state_deadline) {
                    self.close(Code::GoingAway);
                } else if let Some(at) = self.token_expiry.get().filter(|at| *at <= now) {
                    // Asked once per expiry; `RefreshAccepted` sets a new one.
                    self.token_expiry = Moment::NONE;
                    let grace = self.config.token_refresh_grace();
                    self.refresh_deadline = Moment::at(at + grace);
                    self.send(Frame::TokenExpiring {
                        deadline_ms: self
                            .token_expiry_ms
                            .saturating_add(grace.as_millis() as u64),
                    });
                }
            }
        }
    }

    /// Processes a frame received from the client at `now`.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if self.state == State::Closed {
            return;
        }
        if matches!(self.state, State::Active | State::Draining) {
            self.idle_deadline = Moment::at(now + self.config.idle_timeout());
        }
        match (self.state, frame) {
            (_, Frame::Ping { id, payload }) => self.send(Frame::Pong { id, payload }),
            (_, Frame::Close { code, .. }) => self.finish(CloseReason::Peer(code)),
            (State::AwaitingLogin, Frame::Login { meta, .. })
                if meta.as_wire().len() > self.config.max_login_meta_size() =>
            {
                let message = format!(
                    "login metadata of {} bytes; at most {}",
                    meta.as_wire().len(),
                    self.config.max_login_meta_size()
                );
                self.close_with(Code::MetadataTooLarge, Text::from(message));
            }
            (
                State::AwaitingLogin,
                Frame::Login {
                    id,
                    app,
                    device,
                    token,
                    meta,
                },
            ) => {
                self.login_id = id;
                self.state = State::Authenticating;
                self.queues().events.push_back(Event::Authenticate {
                    app,
                    device,
                    token,
                    meta,
                });
            }
            (State::Active | State::Draining, frame) => self.handle_logged_in_frame(now, frame),
            (_, frame) => self.unexpected(&frame),
        }
    }

    fn handle_logged_in_frame(&mut self, now: Instant, frame: Frame) {
        let draining = self.state == State::Draining;
        match frame {
            Frame::Request { id, .. } | Frame::JoinGroup { id, .. } if draining => {
                self.send_error(id, Code::Draining, "server is draining");
            }
            Frame::Request { id, .. }
                if self.inflight_requests >= self.config.max_inflight_requests() =>
            {
                self.send_error(id, Code::Busy, "too many requests in flight");
            }
            Frame::Request { id, .. } if !self.admit_request(now) => {
                self.send_error(id, Code::RateLimited, "too many requests per second");
            }
            Frame::Request {
                id,
                business,
                meta,
                payload,
            } => {
                self.inflight_requests += 1;
                self.queues().events.push_back(Event::Request {
                    id,
                    business,
                    meta,
                    payload,
                });
            }
            Frame::PushAck { id } => self.queues().events.push_back(Event::PushAcked { id }),
            Frame::JoinGroup { id, group, since } => {
                self.queues()
                    .events
                    .push_back(Event::JoinGroup { id, group, since });
            }
            Frame::LeaveGroup { id, group } => {
                self.queues()
                    .events
                    .push_back(Event::LeaveGroup { id, group });
            }
            Frame::TokenRefresh { id, token } => {
                self.queues()
                    .events
                    .push_back(Event::RefreshToken { id, token });
            }
            Frame::Pong { .. } => {}
            Frame::QualityReport {
                id,
                network,
                payload,
            } => match QualityReport::decode(&payload) {
                // A valid report has no answer; a refused body gets an `Error` and the
                // session goes on (docs/PROTOCOL.md section 4.1).
                Ok(report) => self
                    .queues()
                    .events
                    .push_back(Event::QualityReport { network, report }),
                Err(err) => self.send(Frame::Error {
                    id,
                    code: Code::MalformedReport,
                    message: Text::from(err.to_string()),
                }),
            },
            Frame::Error { id, code, message } => {
                self.queues()
                    .events
                    .push_back(Event::PeerError { id, code, message });
            }
            other => self.unexpected(&other),
        }
    }

    /// The codec failed on the client's bytes: send `Close` with the error's wire code and
    /// close. Nothing after a decode error can be trusted, so this is always fatal.
    pub fn handle_decode_error(&mut self, err: &DecodeError) {
        if self.state == State::Closed {
            return;
        }
        let mut message = err.to_string();
        message.truncate(MAX_MESSAGE_LEN);
        self.close_with(err.wire_code(), Text::from(message));
    }

    /// The transport ended (EOF) or failed. Nothing more can be sent.
    pub fn handle_transport_end(&mut self, end: TransportEnd) {
        if self.state == State::Closed {
            return;
        }
        if let Some(queues) = self.queues.as_deref_mut() {
            queues.transmit.clear();
            queues.queued_pushes = 0;
        }
        self.finish(match end {
            TransportEnd::Eof => CloseReason::TransportEnded,
            TransportEnd::Failed => CloseReason::TransportFailed,
        });
    }

    /// Applies an application command at `now`. Returns `false` (and changes nothing) when
    /// the command does not apply to the current state, such as an auth result for a
    /// session that already timed out.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> bool {
        let logged_in = matches!(self.state, State::Active | State::Draining);
        match command {
            Command::AuthAccepted { conn_id, expiry } if self.state == State::Authenticating => {
                self.state = State::Active;
                self.state_deadline = Moment::NONE;
                self.idle_deadline = Moment::at(now + self.config.idle_timeout());
                self.set_token_expiry(expiry);
                self.send(Frame::LoginAck {
                    id: self.login_id,
                    conn_id,
                    heartbeat_ms: self.config.heartbeat_interval().as_millis() as u32,
                    expires_at_ms: expiry.map(|e| e.unix_ms),
                });
                self.queues().events.push_back(Event::LoggedIn { conn_id });
            }
            Command::AuthRejected { code } if self.state == State::Authenticating => {
                self.close(code);
            }
            Command::RefreshAccepted { id, expiry } if logged_in => {
                self.set_token_expiry(expiry);
                self.refresh_deadline = Moment::NONE;
                self.send(Frame::TokenRefreshAck {
                    id,
                    expires_at_ms: expiry.map(|e| e.unix_ms),
                });
            }
            Command::RefreshRejected { id, code } if logged_in => {
                self.send_error(id, code, "token refresh rejected");
            }
            Command::Respond {
                id,
                business,
                meta,
                payload,
            } if logged_in => {
                self.inflight_requests = self.inflight_requests.saturating_sub(1);
                self.send(Frame::Response {
                    id,
                    business,
                    meta,
                    payload,
                });
            }
            Command::RequestFailed { id, code, message } if logged_in => {
                self.inflight_requests = self.inflight_requests.saturating_sub(1);
                self.send(Frame::Error { id, code, message });
            }
            Command::GroupJoined {
                id,
                group,
                position,
                recovered,
            } if logged_in => {
                self.send(Frame::JoinAck {
                    id,
                    group,
                    position,
                    recovered,
                });
            }
            Command::GroupLeft { id, group } if logged_in => {
                self.send(Frame::LeaveAck { id, group });
            }
            Command::GroupRejected { id, code } if logged_in => {
                self.send_error(id, code, "group request rejected");
            }
            Command::Kick { code, message } if self.state != State::Closed => {
                self.send(Frame::Kick { code, message });
                self.finish(CloseReason::Local(code));
            }
            Command::BeginDrain { retry_after } if self.state == State::Active => {
                self.state = State::Draining;
                self.state_deadline = Moment::at(now + self.config.drain_timeout());
                self.send(Frame::GoAway {
                    retry_after_ms: retry_after.as_millis().min(u32::MAX as u128) as u32,
                    message: Text::new(),
                });
            }
            Command::BeginDrain { .. }
                if matches!(self.state, State::AwaitingLogin | State::Authenticating) =>
            {
                self.close(Code::GoingAway);
            }
            Command::Close { code } if self.state != State::Closed => self.close(code),
            _ => return false,
        }
        true
    }

    /// Queues a push (a `Frame::Push`, or its shared encoding) under the queue limit and
    /// slow-consumer policy. Never blocks; the outcome says what happened.
    pub fn push(&mut self, push: Transmit) -> PushOutcome {
        if !matches!(self.state, State::Active | State::Draining) {
            return PushOutcome::NotActive;
        }
        let queued = self.queued_pushes();
        if queued >= self.config.max_queued_pushes() {
            return match self.config.slow_consumer_policy() {
                SlowConsumerPolicy::DropNewest => {
                    self.dropped_pushes += 1;
                    PushOutcome::Dropped
                }
                SlowConsumerPolicy::Disconnect => {
                    self.dropped_pushes += queued as u64 + 1;
                    let queues = self.queues();
                    queues.transmit.retain(|q| !q.is_push);
                    queues.queued_pushes = 0;
                    self.send(Frame::Kick {
                        code: Code::SlowConsumer,
                        message: Text::from_static("outbound queue full"),
                    });
                    self.finish(CloseReason::Local(Code::SlowConsumer));
                    PushOutcome::Disconnected
                }
            };
        }
        let queues = self.queues();
        queues.queued_pushes += 1;
        queues.transmit.push_back(Queued {
            transmit: push,
            is_push: true,
        });
        PushOutcome::Queued
    }

    fn unexpected(&mut self, frame: &Frame) {
        let message = format!(
            "{:?} not allowed in state {:?}",
            frame.frame_type(),
            self.state
        );
        self.close_with(Code::UnexpectedFrame, Text::from(message));
    }

    fn send(&mut self, frame: Frame) {
        self.queues().transmit.push_back(Queued {
            transmit: Transmit::Frame(frame),
            is_push: false,
        });
    }

    /// The request rate limit (GCRA, the token bucket as one timestamp): requests are
    /// spaced `1 s / max_requests_per_second` apart on average, with a burst of one
    /// second's worth. `false` refuses the request (and does not use up budget).
    fn admit_request(&mut self, now: Instant) -> bool {
        let rate = self.config.max_requests_per_second().max(1);
        let interval = Duration::from_secs(1) / rate;
        let tolerance = Duration::from_secs(1).saturating_sub(interval);
        let tat = self.request_tat.get().map_or(now, |t| t.max(now));
        if tat.saturating_duration_since(now) > tolerance {
            return false;
        }
        self.request_tat = Moment::at(tat + interval);
        true
    }

    fn set_token_expiry(&mut self, expiry: Option<TokenExpiry>) {
        self.token_expiry = Moment::new(expiry.map(|e| e.at));
        self.token_expiry_ms = expiry.map_or(0, |e| e.unix_ms);
    }

    fn send_error(&mut self, id: u32, code: Code, message: &'static str) {
        self.send(Frame::Error {
            id,
            code,
            message: Text::from_static(message),
        });
    }

    fn close(&mut self, code: Code) {
        self.close_with(code, Text::new());
    }

    fn close_with(&mut self, code: Code, message: Text) {
        self.send(Frame::Close { code, message });
        self.finish(CloseReason::Local(code));
    }

    fn finish(&mut self, reason: CloseReason) {
        self.state = State::Closed;
        self.close_reason = Some(reason);
        self.state_deadline = Moment::NONE;
        self.idle_deadline = Moment::NONE;
        self.token_expiry = Moment::NONE;
        self.refresh_deadline = Moment::NONE;
        self.queues().events.push_back(Event::Closed(reason));
    }
}

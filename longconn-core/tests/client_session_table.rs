//! Drives every cell of the client state table in docs/PROTOCOL.md ("Client state
//! table") on a simulated clock: no sleeps, no sockets. Each test is named after the cell
//! id it covers; `every_documented_cell_has_a_test` checks that none is missing.

use std::time::{Duration, Instant};

use bytes::Bytes;
use longconn_core::client_session::{LOGIN_ID, login_answer};
use longconn_core::protocol::Position;
use longconn_core::{
    Backoff, CallError, ClientEvent, ClientSession, ClientSessionConfig, ClientState, Code,
    DecodeError, EndReason, Frame, Metadata, Reconnect, StopReason, Text, TransportEnd,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(4);
const HEARTBEAT_MS: u32 = 1_000;
const HEARTBEAT: Duration = Duration::from_millis(HEARTBEAT_MS as u64);
const CONN_ID: u64 = 42;
const BASE: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(8);
const CONNECTED: [ClientState; 3] = [
    ClientState::LoggingIn,
    ClientState::LoggedIn,
    ClientState::Draining,
];

fn config() -> ClientSessionConfig {
    let mut config = ClientSessionConfig::new("demo", "phone-1");
    config.connect_timeout = CONNECT_TIMEOUT;
    config.login_timeout = LOGIN_TIMEOUT;
    config.login_meta = Metadata::from_pairs([("os", "ios")]).unwrap();
    config.backoff = Backoff {
        base: BASE,
        cap: CAP,
        max_attempts: None,
    };
    config
}

/// A client session on a simulated clock.
struct Harness {
    s: ClientSession,
    now: Instant,
}

impl Harness {
    fn with(config: ClientSessionConfig, seed: u64) -> Harness {
        let now = Instant::now();
        Harness {
            s: ClientSession::new(config, now, seed),
            now,
        }
    }

    fn new() -> Harness {
        Harness::with(config(), 7)
    }

    /// A session in `state`, with nothing left to send or report.
    fn in_state(state: ClientState) -> Harness {
        let mut h = Harness::new();
        h.reach(state);
        h
    }

    fn reach(&mut self, state: ClientState) {
        match state {
            ClientState::Connecting => {}
            ClientState::LoggingIn => {
                assert!(self.s.connected(self.now));
            }
            ClientState::LoggedIn => {
                self.reach(ClientState::LoggingIn);
                self.token();
                self.frame(login_ack());
            }
            ClientState::Draining => {
                self.reach(ClientState::LoggedIn);
                self.frame(go_away(2_000));
            }
            ClientState::Waiting => {
                assert!(self.s.dial_failed(self.now));
            }
            ClientState::Closed => {
                assert!(self.s.close(self.now));
            }
        }
        self.sent();
        self.events();
        assert_eq!(self.s.state(), state);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn frame(&mut self, frame: Frame) {
        self.s.handle_frame(self.now, frame);
    }

    fn timeout(&mut self) {
        self.s.handle_timeout(self.now);
    }

    fn token(&mut self) -> bool {
        self.s.provide_token(self.now, Bytes::from_static(b"token"))
    }

    fn request(&mut self, timeout: Option<Duration>) -> Result<u32, CallError> {
        self.s.request(
            self.now,
            1,
            Metadata::new(),
            Bytes::from_static(b"req"),
            timeout,
        )
    }

    fn sent(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| self.s.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    /// The events end with `Ended` then `StateChanged`; returns the `Ended`'s fields and
    /// the events before it.
    fn ended(&mut self) -> (EndReason, Reconnect, Vec<ClientEvent>) {
        let mut events = self.events();
        let changed = events.pop();
        let Some(ClientEvent::Ended { reason, reconnect }) = events.pop() else {
            panic!("expected Ended, got {events:?}");
        };
        let next = match reconnect {
            Reconnect::After(_) => ClientState::Waiting,
            Reconnect::Never(_) => ClientState::Closed,
        };
        assert_eq!(changed, Some(ClientEvent::StateChanged(next)));
        assert_eq!(self.s.state(), next);
        (reason, reconnect, events)
    }

    /// Asserts a backoff delay for attempt `attempt`: within its window.
    fn assert_backoff(reconnect: Reconnect, attempt: u32) -> Duration {
        let window = BASE.saturating_mul(1 << attempt).min(CAP);
        match reconnect {
            Reconnect::After(delay) => {
                assert!(delay <= window, "{delay:?} beyond {window:?}");
                delay
            }
            other => panic!("expected a backoff, got {other:?}"),
        }
    }
}

fn login_ack() -> Frame {
    Frame::LoginAck {
        id: LOGIN_ID,
        conn_id: CONN_ID,
        heartbeat_ms: HEARTBEAT_MS,
        expires_at_ms: None,
    }
}

fn go_away(ms: u32) -> Frame {
    Frame::GoAway {
        retry_after_ms: ms,
        message: Text::new(),
    }
}

fn close(code: Code) -> Frame {
    Frame::Close {
        code,
        message: Text::new(),
    }
}

fn kick(code: Code) -> Frame {
    Frame::Kick {
        code,
        message: Text::new(),
    }
}

fn push(id: u32, ack_required: bool) -> Frame {
    Frame::Push {
        id,
        ack_required,
        business: 9,
        group: Some("room".into()),
        seq: Some(3),
        epoch: Some(11),
        meta: Metadata::new(),
        payload: Bytes::from_static(b"push"),
    }
}

fn response(id: u32) -> Frame {
    Frame::Response {
        id,
        business: 1,
        meta: Metadata::new(),
        payload: Bytes::from_static(b"answer"),
    }
}

// ----- In any connected state -----

#[test]
fn cell_cx1_server_ping_is_answered_in_every_connected_state() {
    for state in CONNECTED {
        let mut h = Harness::in_state(state);
        let payload = Bytes::from_static(b"probe");
        h.frame(Frame::Ping {
            id: 5,
            payload: payload.clone(),
        });
        assert_eq!(h.sent(), [Frame::Pong { id: 5, payload }], "{state:?}");
        assert_eq!(h.events(), [], "{state:?}");
        assert_eq!(h.s.state(), state);
    }
}

#[test]
fn cell_cx2_replaced_or_kicked_stops_the_client() {
    for state in CONNECTED {
        for code in [Code::Replaced, Code::Kicked] {
            let mut h = Harness::in_state(state);
            h.frame(kick(code));
            assert_eq!(h.sent(), []);
            let (reason, reconnect, _) = h.ended();
            assert_eq!(reason, EndReason::Kicked(code));
            assert_eq!(reconnect, Reconnect::Never(StopReason::Kicked(code)));
            assert_eq!(h.s.stop_reason(), Some(StopReason::Kicked(code)));
            assert_eq!(h.s.poll_timeout(), None, "no deadline once closed");
        }
    }
}

#[test]
fn cell_cx3_other_kicks_are_losses() {
    for state in [ClientState::LoggedIn, ClientState::LoggingIn] {
        let mut h = Harness::in_state(state);
        h.frame(kick(Code::SlowConsumer));
        let (reason, reconnect, _) = h.ended();
        assert_eq!(reason, EndReason::Kicked(Code::SlowConsumer));
        let delay = Harness::assert_backoff(reconnect, 0);
        assert_eq!(h.s.poll_timeout(), Some(h.now + delay));
    }
}

#[test]
fn cell_cx4_end_of_stream_or_failure_discards_output_and_abandons_calls() {
    for end in [TransportEnd::Eof, TransportEnd::Failed] {
        let mut h = Harness::in_state(ClientState::LoggedIn);
        let a = h.request(None).unwrap();
        let b = h.s.join(h.now, "room", None).unwrap();
        h.s.handle_transport_end(h.now, end);
        assert_eq!(h.sent(), [], "unsent frames are discarded");
        let (reason, reconnect, before) = h.ended();
        assert_eq!(
            reason,
            match end {
                TransportEnd::Eof => EndReason::TransportEnded,
                TransportEnd::Failed => EndReason::TransportFailed,
            }
        );
        Harness::assert_backoff(reconnect, 0);
        assert_eq!(
            before,
            [
                ClientEvent::Abandoned { id: a },
                ClientEvent::Abandoned { id: b }
            ]
        );
    }
    // While logging in, too.
    let mut h = Harness::in_state(ClientState::LoggingIn);
    h.s.handle_transport_end(h.now, TransportEnd::Eof);
    assert_eq!(h.ended().0, EndReason::TransportEnded);
}

#[test]
fn cell_cx5_undecodable_bytes_close_with_the_errors_code() {
    for state in CONNECTED {
        let mut h = Harness::in_state(state);
        h.s.handle_decode_error(h.now, &DecodeError::BadMagic { found: 0x4745 });
        assert!(matches!(
            h.sent().as_slice(),
            [Frame::Close {
                code: Code::BadMagic,
                ..
            }]
        ));
        let (reason, reconnect, _) = h.ended();
        assert_eq!(reason, EndReason::ProtocolError(Code::BadMagic));
        assert!(matches!(reconnect, Reconnect::After(_)), "{state:?}");
    }
}

#[test]
fn cell_cx6_close_by_the_application_sends_close_and_stops() {
    for state in CONNECTED {
        let mut h = Harness::in_state(state);
        let id = if state == ClientState::LoggingIn {
            h.request(None).unwrap()
        } else {
            let id = h.request(None).unwrap();
            h.sent();
            id
        };
        assert!(h.s.close(h.now));
        assert_eq!(h.sent(), [close(Code::Normal)], "{state:?}");
        let (reason, reconnect, before) = h.ended();
        assert_eq!(reason, EndReason::ClosedByApp);
        assert_eq!(reconnect, Reconnect::Never(StopReason::ClosedByApp));
        assert_eq!(before, [ClientEvent::Abandoned { id }]);
    }
}

#[test]
fn cell_cx7_calls_time_out_and_late_answers_are_ignored() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    let id = h.request(Some(Duration::from_millis(300))).unwrap();
    h.sent();
    assert_eq!(
        h.s.poll_timeout(),
        Some(h.now + Duration::from_millis(300)),
        "the call's deadline comes before the heartbeat"
    );
    h.advance(Duration::from_millis(300));
    h.timeout();
    assert_eq!(h.events(), [ClientEvent::TimedOut { id }]);
    h.frame(response(id));
    assert_eq!(h.events(), [], "the late answer is dropped");
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    // A held call times out before the login completes, and is then not sent.
    let mut h = Harness::in_state(ClientState::Connecting);
    let id = h.request(Some(Duration::from_secs(1))).unwrap();
    h.advance(Duration::from_secs(1));
    h.timeout();
    assert_eq!(h.events(), [ClientEvent::TimedOut { id }]);
    h.reach(ClientState::LoggedIn);
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    let mut h2 = Harness::in_state(ClientState::Connecting);
    h2.request(Some(Duration::from_secs(1))).unwrap();
    h2.advance(Duration::from_secs(1));
    h2.timeout();
    h2.events();
    assert!(h2.s.connected(h2.now));
    h2.token();
    h2.sent();
    h2.frame(login_ack());
    assert_eq!(h2.sent(), [], "a timed-out held call is never sent");
}

// ----- Connecting -----

#[test]
fn cell_cc1_connected_asks_for_a_token_and_starts_the_login_deadline() {
    let mut h = Harness::new();
    assert_eq!(h.s.state(), ClientState::Connecting);
    assert_eq!(h.s.poll_timeout(), Some(h.now + CONNECT_TIMEOUT));
    h.advance(Duration::from_secs(1));
    assert!(h.s.connected(h.now));
    assert_eq!(h.sent(), [], "no Login before the token");
    assert_eq!(
        h.events(),
        [
            ClientEvent::TokenNeeded,
            ClientEvent::StateChanged(ClientState::LoggingIn)
        ]
    );
    assert_eq!(h.s.poll_timeout(), Some(h.now + LOGIN_TIMEOUT));
}

#[test]
fn cell_cc2_a_failed_dial_backs_off() {
    let mut h = Harness::new();
    let mut delays = Vec::new();
    for attempt in 0..5 {
        assert!(h.s.dial_failed(h.now));
        let (reason, reconnect, _) = h.ended();
        assert_eq!(reason, EndReason::DialFailed);
        let delay = Harness::assert_backoff(reconnect, attempt);
        delays.push(delay);
        assert_eq!(h.s.attempt(), attempt + 1);
        h.advance(delay);
        h.timeout();
        h.events();
        assert_eq!(h.s.state(), ClientState::Connecting);
    }
    assert!(
        delays.iter().any(|d| *d > BASE),
        "later windows are wider: {delays:?}"
    );
}

#[test]
fn cell_cc3_the_connect_deadline_counts_as_a_failed_dial() {
    let mut h = Harness::new();
    h.advance(CONNECT_TIMEOUT - Duration::from_millis(1));
    h.timeout();
    assert_eq!(h.events(), []);
    h.advance(Duration::from_millis(1));
    h.timeout();
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::DialFailed);
    Harness::assert_backoff(reconnect, 0);
}

#[test]
fn cell_cc4_calls_while_connecting_are_held_until_login_ack() {
    let mut h = Harness::new();
    let a = h.request(None).unwrap();
    let j = h.s.join(h.now, "room", None).unwrap();
    assert_ne!(a, j);
    assert!(a != LOGIN_ID && j != LOGIN_ID);
    assert_eq!(h.sent(), []);
    h.s.connected(h.now);
    h.token();
    assert!(matches!(h.sent().as_slice(), [Frame::Login { .. }]));
    h.frame(login_ack());
    let sent = h.sent();
    assert!(
        matches!(
            sent.as_slice(),
            [Frame::Request { id: ra, .. }, Frame::JoinGroup { id: rj, .. }] if *ra == a && *rj == j
        ),
        "{sent:?}"
    );
}

#[test]
fn cell_cc5_max_attempts_failures_stop_the_client() {
    let mut c = config();
    c.backoff.max_attempts = Some(2);
    let mut h = Harness::with(c, 1);
    for _ in 0..2 {
        h.s.dial_failed(h.now);
        let (_, reconnect, _) = h.ended();
        let Reconnect::After(delay) = reconnect else {
            panic!("{reconnect:?}")
        };
        h.advance(delay);
        h.timeout();
        h.events();
    }
    h.s.dial_failed(h.now);
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::DialFailed);
    assert_eq!(
        reconnect,
        Reconnect::Never(StopReason::GaveUp { attempts: 2 })
    );
}

// ----- LoggingIn -----

#[test]
fn cell_cl1_the_token_sends_login() {
    let mut h = Harness::in_state(ClientState::LoggingIn);
    assert!(h.token());
    let sent = h.sent();
    assert_eq!(
        sent,
        [Frame::Login {
            id: LOGIN_ID,
            app: "demo".into(),
            device: "phone-1".into(),
            token: Bytes::from_static(b"token"),
            meta: Metadata::from_pairs([("os", "ios")]).unwrap(),
        }]
    );
    assert_eq!(
        sent[0],
        ClientSession::login_frame(
            "demo",
            "phone-1",
            Bytes::from_static(b"token"),
            Metadata::from_pairs([("os", "ios")]).unwrap()
        ),
        "the shared helper builds the same frame"
    );
    assert!(!h.token(), "a second token is not asked for");
    assert_eq!(h.s.state(), ClientState::LoggingIn);
}

#[test]
fn cell_cl2_a_token_provider_failure_backs_off() {
    let mut h = Harness::in_state(ClientState::LoggingIn);
    assert!(h.s.token_failed(h.now));
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::TokenUnavailable);
    Harness::assert_backoff(reconnect, 0);
}

#[test]
fn cell_cl3_login_ack_logs_in_rejoins_and_sends_held_calls() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    // Join two groups, then lose the connection after a failed attempt.
    for group in ["room-2", "room-1"] {
        let id = h.s.join(h.now, group, None).unwrap();
        h.frame(Frame::JoinAck {
            id,
            group: group.into(),
            position: None,
            recovered: None,
        });
    }
    h.sent();
    h.events();
    h.s.handle_transport_end(h.now, TransportEnd::Eof);
    let (_, reconnect, _) = h.ended();
    let Reconnect::After(delay) = reconnect else {
        panic!()
    };
    h.advance(delay);
    h.timeout();
    h.s.dial_failed(h.now);
    assert_eq!(h.s.attempt(), 2);
    let (_, Reconnect::After(delay), _) = h.ended() else {
        panic!()
    };
    h.advance(delay);
    h.timeout();
    h.events();
    let held = h.request(None).unwrap();
    h.s.connected(h.now);
    h.token();
    h.sent();
    h.events();
    h.frame(Frame::LoginAck {
        id: LOGIN_ID,
        conn_id: 77,
        heartbeat_ms: 10,
        expires_at_ms: Some(5),
    });
    let min = Duration::from_millis(100);
    assert_eq!(
        h.events(),
        [
            ClientEvent::LoggedIn {
                conn_id: 77,
                heartbeat: min,
                expires_at_ms: Some(5)
            },
            ClientEvent::StateChanged(ClientState::LoggedIn)
        ],
        "the heartbeat is at least min_heartbeat"
    );
    let sent = h.sent();
    let groups: Vec<&str> = sent
        .iter()
        .filter_map(|f| match f {
            Frame::JoinGroup { group, .. } => Some(group.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(groups, ["room-1", "room-2"]);
    assert!(matches!(sent.last(), Some(Frame::Request { id, .. }) if *id == held));
    assert_eq!(h.s.attempt(), 0, "reset by the login");
    assert_eq!(h.s.poll_timeout(), Some(h.now + min), "first heartbeat");
    // Rejoin acks are the session's own business.
    for f in &sent {
        if let Frame::JoinGroup { id, group, .. } = f {
            h.frame(Frame::JoinAck {
                id: *id,
                group: group.clone(),
                position: None,
                recovered: None,
            });
        }
    }
    // A gateway without recovery: the rejoins are reported as not recovered.
    assert_eq!(
        h.events(),
        [
            ClientEvent::Rejoined {
                group: "room-1".into(),
                recovered: false
            },
            ClientEvent::Rejoined {
                group: "room-2".into(),
                recovered: false
            }
        ]
    );
    assert_eq!(h.s.joined().collect::<Vec<_>>(), ["room-1", "room-2"]);
}

#[test]
fn cell_cl4_invalid_token_and_forbidden_stop_the_client() {
    for code in [Code::InvalidToken, Code::Forbidden] {
        let mut h = Harness::in_state(ClientState::LoggingIn);
        h.token();
        h.sent();
        h.frame(close(code));
        let (reason, reconnect, _) = h.ended();
        assert_eq!(reason, EndReason::LoginRefused(code));
        assert_eq!(reconnect, Reconnect::Never(StopReason::AuthRejected(code)));
        assert_eq!(h.s.stop_reason(), Some(StopReason::AuthRejected(code)));
        assert_eq!(
            h.request(None),
            Err(CallError::Stopped),
            "calls fail for good"
        );
        assert_eq!(login_answer(&close(code)), Err(code));
    }
    assert_eq!(login_answer(&login_ack()), Ok(CONN_ID));
}

#[test]
fn cell_cl5_expired_token_is_retried_once_with_a_fresh_token() {
    let mut h = Harness::in_state(ClientState::LoggingIn);
    h.token();
    h.frame(close(Code::ExpiredToken));
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::LoginRefused(Code::ExpiredToken));
    let Reconnect::After(delay) = reconnect else {
        panic!("{reconnect:?}")
    };
    h.advance(delay);
    h.timeout();
    h.events();
    h.s.connected(h.now);
    assert_eq!(
        h.events()[0],
        ClientEvent::TokenNeeded,
        "a fresh token is fetched"
    );
    h.token();
    h.frame(close(Code::ExpiredToken));
    let (_, reconnect, _) = h.ended();
    assert_eq!(
        reconnect,
        Reconnect::Never(StopReason::AuthRejected(Code::ExpiredToken))
    );
    // A successful login in between restores the retry.
    let mut h = Harness::in_state(ClientState::LoggingIn);
    h.token();
    h.frame(close(Code::ExpiredToken));
    let (_, Reconnect::After(delay), _) = h.ended() else {
        panic!()
    };
    h.advance(delay);
    h.timeout();
    h.reach(ClientState::LoggedIn);
    h.s.handle_transport_end(h.now, TransportEnd::Eof);
    let (_, Reconnect::After(delay), _) = h.ended() else {
        panic!()
    };
    h.advance(delay);
    h.timeout();
    h.events();
    h.reach(ClientState::LoggingIn);
    h.token();
    h.frame(close(Code::ExpiredToken));
    assert!(matches!(h.ended().1, Reconnect::After(_)));
}

#[test]
fn cell_cl6_other_closes_during_login_are_losses() {
    for code in [Code::GoingAway, Code::LoginTimeout] {
        let mut h = Harness::in_state(ClientState::LoggingIn);
        h.token();
        h.frame(close(code));
        let (reason, reconnect, _) = h.ended();
        assert_eq!(reason, EndReason::ClosedByGateway(code));
        Harness::assert_backoff(reconnect, 0);
        assert_eq!(h.s.attempt(), 1, "{code:?}: the attempt counts");
    }
    // A draining gateway refusing every login: the windows keep growing.
    let mut h = Harness::in_state(ClientState::LoggingIn);
    for attempt in 0..4 {
        h.frame(close(Code::GoingAway));
        let (_, reconnect, _) = h.ended();
        let delay = Harness::assert_backoff(reconnect, attempt);
        h.advance(delay);
        h.timeout();
        h.events();
        h.reach(ClientState::LoggingIn);
    }
    assert_eq!(h.s.attempt(), 4);
}

#[test]
fn cell_cl7_no_login_ack_in_time() {
    let mut h = Harness::in_state(ClientState::LoggingIn);
    h.token();
    h.sent();
    h.advance(LOGIN_TIMEOUT);
    h.timeout();
    assert_eq!(h.sent(), [close(Code::LoginTimeout)]);
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::LoginTimeout);
    Harness::assert_backoff(reconnect, 0);
}

#[test]
fn cell_cl8_unexpected_frames_during_login() {
    for frame in [login_ack(), push(1, false), go_away(10)] {
        let mut h = Harness::in_state(ClientState::LoggingIn);
        let early_ack = matches!(frame, Frame::LoginAck { .. });
        if !early_ack {
            h.token();
            h.sent();
        }
        h.frame(frame);
        assert!(matches!(
            h.sent().as_slice(),
            [Frame::Close {
                code: Code::UnexpectedFrame,
                ..
            }]
        ));
        let (reason, _, _) = h.ended();
        assert_eq!(reason, EndReason::ProtocolError(Code::UnexpectedFrame));
    }
}

// ----- LoggedIn -----

#[test]
fn cell_cl9_try_later_waits_the_gateways_delay_plus_jitter() {
    for state in [ClientState::LoggingIn, ClientState::LoggedIn] {
        let mut h = Harness::in_state(state);
        h.frame(Frame::Close {
            code: Code::TryLater,
            message: "retry_after_ms=3000".into(),
        });
        let (reason, reconnect, _) = h.ended();
        assert_eq!(reason, EndReason::ClosedByGateway(Code::TryLater));
        let Reconnect::After(delay) = reconnect else {
            panic!("{reconnect:?}")
        };
        assert!(
            delay >= Duration::from_millis(3000) && delay <= Duration::from_millis(4500),
            "{state:?}: {delay:?}"
        );
        assert_eq!(h.s.attempt(), 0);
    }
    // Without a readable delay: 1 s plus jitter.
    let mut h = Harness::in_state(ClientState::LoggingIn);
    h.frame(Frame::Close {
        code: Code::TryLater,
        message: "later".into(),
    });
    let (_, reconnect, _) = h.ended();
    let Reconnect::After(delay) = reconnect else {
        panic!("{reconnect:?}")
    };
    assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_millis(1500));
}

#[test]
fn cell_ca1_requests_are_sent_with_fresh_ids() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    let a = h.request(None).unwrap();
    let b = h.request(None).unwrap();
    assert_ne!(a, b);
    assert_eq!(
        h.sent(),
        [
            Frame::Request {
                id: a,
                business: 1,
                meta: Metadata::new(),
                payload: Bytes::from_static(b"req")
            },
            Frame::Request {
                id: b,
                business: 1,
                meta: Metadata::new(),
                payload: Bytes::from_static(b"req")
            }
        ]
    );
}

#[test]
fn cell_ca2_answers_are_matched_by_id() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    let a = h.request(None).unwrap();
    let b = h.request(None).unwrap();
    h.frame(Frame::Error {
        id: b,
        code: Code::UnknownBusiness,
        message: "no".into(),
    });
    h.frame(response(a));
    h.frame(response(999));
    assert_eq!(
        h.events(),
        [
            ClientEvent::Failed {
                id: b,
                code: Code::UnknownBusiness,
                message: "no".into()
            },
            ClientEvent::Response {
                id: a,
                business: 1,
                meta: Metadata::new(),
                payload: Bytes::from_static(b"answer")
            }
        ]
    );
}

#[test]
fn cell_ca3_joins_and_leaves_track_the_joined_set() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    let j = h.s.join(h.now, "room", None).unwrap();
    let refused = h.s.join(h.now, "vip", None).unwrap();
    assert_eq!(
        h.sent(),
        [
            Frame::JoinGroup {
                id: j,
                group: "room".into(),
                since: None,
            },
            Frame::JoinGroup {
                id: refused,
                group: "vip".into(),
                since: None,
            }
        ]
    );
    h.frame(Frame::JoinAck {
        id: j,
        group: "room".into(),
        position: None,
        recovered: None,
    });
    h.frame(Frame::Error {
        id: refused,
        code: Code::GroupForbidden,
        message: Text::new(),
    });
    assert_eq!(
        h.events(),
        [
            ClientEvent::GroupAck {
                id: j,
                group: "room".into(),
                joined: true
            },
            ClientEvent::Failed {
                id: refused,
                code: Code::GroupForbidden,
                message: Text::new()
            }
        ]
    );
    assert_eq!(h.s.joined().collect::<Vec<_>>(), ["room"]);
    let l = h.s.leave(h.now, "room", None).unwrap();
    assert_eq!(
        h.sent(),
        [Frame::LeaveGroup {
            id: l,
            group: "room".into()
        }]
    );
    h.frame(Frame::LeaveAck {
        id: l,
        group: "room".into(),
    });
    assert_eq!(
        h.events(),
        [ClientEvent::GroupAck {
            id: l,
            group: "room".into(),
            joined: false
        }]
    );
    assert_eq!(h.s.joined().count(), 0);
}

#[test]
fn cell_ca4_pushes_are_delivered_and_acked_when_asked() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    h.frame(push(70, true));
    h.frame(push(71, false));
    assert_eq!(h.sent(), [Frame::PushAck { id: 70 }]);
    let event = ClientEvent::Push {
        business: 9,
        group: Some("room".into()),
        seq: Some(3),
        epoch: Some(11),
        meta: Metadata::new(),
        payload: Bytes::from_static(b"push"),
    };
    assert_eq!(h.events(), [event.clone(), event]);
}

#[test]
fn cell_ca5_heartbeats_at_the_advertised_interval() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    assert_eq!(h.s.poll_timeout(), Some(h.now + HEARTBEAT));
    h.advance(HEARTBEAT);
    h.timeout();
    let sent = h.sent();
    let [Frame::Ping { id, .. }] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    let id = *id;
    assert_eq!(h.s.stats().pings_sent, 1);
    // Next heartbeat is due before the pong deadline; with the ping unanswered, none
    // is sent.
    assert_eq!(h.s.poll_timeout(), Some(h.now + HEARTBEAT));
    h.advance(HEARTBEAT);
    h.timeout();
    assert_eq!(h.sent(), [], "one ping in flight at a time");
    h.frame(Frame::Pong {
        id,
        payload: Bytes::new(),
    });
    h.advance(HEARTBEAT);
    h.timeout();
    assert!(matches!(h.sent().as_slice(), [Frame::Ping { .. }]));
    assert_eq!(h.s.state(), ClientState::LoggedIn);
}

#[test]
fn cell_ca6_the_pong_clears_the_deadline_and_records_the_rtt() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    h.advance(HEARTBEAT);
    h.timeout();
    let Some(Frame::Ping { id, .. }) = h.s.poll_transmit() else {
        panic!()
    };
    h.advance(Duration::from_millis(40));
    h.frame(Frame::Pong {
        id: id + 1,
        payload: Bytes::new(),
    });
    assert_eq!(h.s.stats().pongs_received, 0, "another id is not the pong");
    h.frame(Frame::Pong {
        id,
        payload: Bytes::new(),
    });
    let stats = h.s.stats();
    assert_eq!(stats.pongs_received, 1);
    assert_eq!(stats.last_rtt, Some(Duration::from_millis(40)));
    // Past where the pong deadline was: still logged in.
    h.advance(HEARTBEAT * 2);
    h.timeout();
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    assert_eq!(h.events(), []);
}

#[test]
fn cell_ca7_no_pong_in_time_is_a_loss() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    h.advance(HEARTBEAT);
    h.timeout();
    h.sent();
    h.advance(HEARTBEAT * 2 - Duration::from_millis(1));
    h.timeout();
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    h.advance(Duration::from_millis(1));
    h.timeout();
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::HeartbeatLost);
    Harness::assert_backoff(reconnect, 0);
}

#[test]
fn cell_ca15_a_silent_gateway_is_probed_then_given_up_at_the_dead_peer_timeout() {
    // The heartbeat is long (20 s, pong timeout 40 s); the dead-peer timeout (4 s)
    // bounds how long a silent gateway goes unnoticed.
    let dead = Duration::from_secs(4);
    let mut config = config();
    config.dead_peer_timeout = Some(dead);
    let mut h = Harness::with(config, 7);
    h.reach(ClientState::LoggingIn);
    h.token();
    h.frame(Frame::LoginAck {
        id: LOGIN_ID,
        conn_id: CONN_ID,
        heartbeat_ms: 20_000,
        expires_at_ms: None,
    });
    h.sent();
    h.events();
    assert_eq!(
        h.s.poll_timeout(),
        Some(h.now + dead / 2),
        "the probe is due first"
    );
    h.advance(dead / 2 - Duration::from_millis(1));
    h.timeout();
    assert_eq!(h.sent(), [], "no probe before half the timeout");
    // A received frame moves the window.
    h.frame(Frame::Ping {
        id: 9,
        payload: Bytes::new(),
    });
    h.sent();
    h.advance(dead / 2 - Duration::from_millis(1));
    h.timeout();
    assert_eq!(h.sent(), []);
    h.advance(Duration::from_millis(1));
    h.timeout();
    let sent = h.sent();
    let [Frame::Ping { id, .. }] = sent.as_slice() else {
        panic!("a probe ping: {sent:?}")
    };
    // Its pong keeps the session alive: a live gateway always answers in time.
    h.advance(Duration::from_millis(300));
    h.frame(Frame::Pong {
        id: *id,
        payload: Bytes::new(),
    });
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    // Then the gateway goes silent: one probe, and the end at the full timeout.
    h.advance(dead / 2);
    h.timeout();
    assert!(matches!(h.sent().as_slice(), [Frame::Ping { .. }]));
    h.advance(dead / 2 - Duration::from_millis(1));
    h.timeout();
    assert_eq!(h.sent(), [], "one probe in flight at a time");
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    h.advance(Duration::from_millis(1));
    h.timeout();
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::HeartbeatLost);
    Harness::assert_backoff(reconnect, 0);
}

#[test]
fn cell_ca8_token_refresh_does_not_stop_heartbeats() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    h.frame(Frame::TokenExpiring { deadline_ms: 1 });
    assert_eq!(h.events(), [ClientEvent::TokenNeeded]);
    h.frame(Frame::TokenExpiring { deadline_ms: 1 });
    assert_eq!(h.events(), [], "asked once while a fetch is running");
    // The provider is slow: heartbeats go on meanwhile.
    h.advance(HEARTBEAT);
    h.timeout();
    assert!(matches!(h.sent().as_slice(), [Frame::Ping { .. }]));
    assert!(h.token());
    let sent = h.sent();
    let [Frame::TokenRefresh { id, token }] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(token.as_ref(), b"token");
    h.frame(Frame::TokenRefreshAck {
        id: *id,
        expires_at_ms: None,
    });
    assert_eq!(h.events(), []);
    assert!(!h.token(), "no token is wanted any more");
    // A provider failure while logged in changes nothing.
    h.frame(Frame::TokenExpiring { deadline_ms: 1 });
    h.events();
    assert!(h.s.token_failed(h.now));
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    assert_eq!(h.events(), []);
}

#[test]
fn cell_ca13_an_early_refresh_is_sent_at_once_and_its_answer_changes_nothing() {
    let mut h = Harness::new();
    assert!(
        !h.s.refresh_token(h.now, Bytes::from_static(b"early")),
        "nothing to refresh before login"
    );
    h.reach(ClientState::LoggedIn);
    assert!(h.s.refresh_token(h.now, Bytes::from_static(b"fresh")));
    let sent = h.sent();
    let [Frame::TokenRefresh { id, token }] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    assert_eq!(token.as_ref(), b"fresh");
    h.frame(Frame::TokenRefreshAck {
        id: *id,
        expires_at_ms: Some(1),
    });
    assert_eq!(h.events(), []);
    assert!(h.s.refresh_token(h.now, Bytes::from_static(b"again")));
    let sent = h.sent();
    let [Frame::TokenRefresh { id, .. }] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    h.frame(Frame::Error {
        id: *id,
        code: Code::InvalidToken,
        message: "refused".into(),
    });
    assert_eq!(
        h.events(),
        [],
        "a refused early refresh is not a call failure"
    );
    assert_eq!(h.s.state(), ClientState::LoggedIn);
}

#[test]
fn max_heartbeat_caps_the_gateways_interval() {
    let mut config = config();
    config.max_heartbeat = Some(Duration::from_millis(500));
    let mut h = Harness::with(config, 1);
    h.reach(ClientState::LoggedIn);
    h.advance(Duration::from_millis(500));
    h.timeout();
    assert!(matches!(h.sent().as_slice(), [Frame::Ping { .. }]));
}

#[test]
fn cell_ca9_go_away_starts_draining() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    h.frame(go_away(3_000));
    assert_eq!(
        h.events(),
        [ClientEvent::StateChanged(ClientState::Draining)]
    );
    assert_eq!(h.sent(), []);
    assert_eq!(h.s.state(), ClientState::Draining);
}

#[test]
fn cell_ca10_close_from_the_gateway() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    h.frame(close(Code::IdleTimeout));
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::ClosedByGateway(Code::IdleTimeout));
    Harness::assert_backoff(reconnect, 0);

    let mut h = Harness::in_state(ClientState::LoggedIn);
    h.frame(close(Code::GoingAway));
    let (_, reconnect, _) = h.ended();
    let Reconnect::After(delay) = reconnect else {
        panic!()
    };
    assert!(delay <= Duration::from_millis(100), "{delay:?}");
}

#[test]
fn cell_ca11_unexpected_frames_when_logged_in() {
    let login = ClientSession::login_frame("a", "d", Bytes::from_static(b"t"), Metadata::new());
    for frame in [login_ack(), login, Frame::PushAck { id: 1 }] {
        let mut h = Harness::in_state(ClientState::LoggedIn);
        h.frame(frame);
        assert!(matches!(
            h.sent().as_slice(),
            [Frame::Close {
                code: Code::UnexpectedFrame,
                ..
            }]
        ));
        assert_eq!(h.ended().0, EndReason::ProtocolError(Code::UnexpectedFrame));
    }
}

/// The rejoin carries the group's last position (the ack's, then each push's); the
/// ack says whether the missed pushes follow.
#[test]
fn cell_ca14_a_rejoin_from_the_last_position_reports_recovery() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    let id = h.s.join(h.now, "room", None).unwrap();
    let at = |epoch, seq| Some(Position { epoch, seq });
    h.frame(Frame::JoinAck {
        id,
        group: "room".into(),
        position: at(9, 5),
        recovered: None,
    });
    assert_eq!(h.s.position("room"), at(9, 5));
    h.frame(Frame::Push {
        id: 0,
        ack_required: false,
        business: 1,
        group: Some("room".into()),
        seq: Some(6),
        epoch: Some(9),
        meta: Default::default(),
        payload: Bytes::from_static(b"p"),
    });
    assert_eq!(h.s.position("room"), at(9, 6));
    h.sent();
    h.events();
    let reconnect = |h: &mut Harness| {
        h.s.handle_transport_end(h.now, TransportEnd::Eof);
        let (_, Reconnect::After(delay), _) = h.ended() else {
            panic!()
        };
        h.advance(delay);
        h.timeout();
        h.events();
        h.reach(ClientState::LoggingIn);
        h.token();
        h.sent();
        h.frame(login_ack());
        h.events();
        let sent = h.sent();
        let [Frame::JoinGroup { id, since, .. }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        (*id, *since)
    };
    let (id, since) = reconnect(&mut h);
    assert_eq!(since, at(9, 6), "rejoins from the last push");
    h.frame(Frame::JoinAck {
        id,
        group: "room".into(),
        position: at(9, 8),
        recovered: Some(true),
    });
    assert_eq!(
        h.events(),
        [ClientEvent::Rejoined {
            group: "room".into(),
            recovered: true
        }]
    );
    assert_eq!(
        h.s.position("room"),
        at(9, 6),
        "the replayed pushes move it"
    );

    let (id, since) = reconnect(&mut h);
    assert_eq!(since, at(9, 6));
    h.frame(Frame::JoinAck {
        id,
        group: "room".into(),
        position: at(4, 3),
        recovered: Some(false),
    });
    assert_eq!(
        h.events(),
        [ClientEvent::Rejoined {
            group: "room".into(),
            recovered: false
        }]
    );
    assert_eq!(h.s.position("room"), at(4, 3), "the new base");
}

#[test]
fn cell_ca12_a_refused_rejoin_forgets_the_group() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    let id = h.s.join(h.now, "room", None).unwrap();
    h.frame(Frame::JoinAck {
        id,
        group: "room".into(),
        position: None,
        recovered: None,
    });
    h.sent();
    h.events();
    h.s.handle_transport_end(h.now, TransportEnd::Eof);
    let (_, Reconnect::After(delay), _) = h.ended() else {
        panic!()
    };
    h.advance(delay);
    h.timeout();
    h.events();
    h.reach(ClientState::LoggingIn);
    h.token();
    h.sent();
    h.frame(login_ack());
    h.events();
    let sent = h.sent();
    let [Frame::JoinGroup { id, .. }] = sent.as_slice() else {
        panic!("{sent:?}")
    };
    h.frame(Frame::Error {
        id: *id,
        code: Code::GroupFull,
        message: Text::new(),
    });
    assert_eq!(
        h.events(),
        [ClientEvent::RejoinFailed {
            group: "room".into(),
            code: Code::GroupFull
        }]
    );
    assert_eq!(h.s.joined().count(), 0);
}

// ----- Draining -----

#[test]
fn cell_cd1_calls_and_pushes_flow_while_draining() {
    let mut h = Harness::in_state(ClientState::Draining);
    let id = h.request(None).unwrap();
    assert!(matches!(h.sent().as_slice(), [Frame::Request { .. }]));
    h.frame(response(id));
    h.frame(push(5, true));
    assert_eq!(h.sent(), [Frame::PushAck { id: 5 }]);
    let events = h.events();
    assert!(matches!(
        events.as_slice(),
        [ClientEvent::Response { .. }, ClientEvent::Push { .. }]
    ));
    assert_eq!(h.s.state(), ClientState::Draining);
}

#[test]
fn cell_cd2_the_end_after_go_away_waits_the_hint_plus_jitter() {
    let hint = Duration::from_millis(2_000);
    let ends: [fn(&mut Harness); 3] = [
        |h| h.frame(close(Code::GoingAway)),
        |h| h.frame(close(Code::Internal)),
        |h| h.s.handle_transport_end(h.now, TransportEnd::Eof),
    ];
    let mut delays = Vec::new();
    for (seed, end) in ends.iter().cycle().take(60).enumerate() {
        let mut h = Harness::with(config(), seed as u64);
        // A failed attempt first: the count resets with the drain.
        h.s.dial_failed(h.now);
        let (_, Reconnect::After(d), _) = h.ended() else {
            panic!()
        };
        h.advance(d);
        h.timeout();
        h.events();
        h.reach(ClientState::Draining);
        end(&mut h);
        let (_, reconnect, _) = h.ended();
        let Reconnect::After(delay) = reconnect else {
            panic!("{reconnect:?}")
        };
        assert!(delay >= hint && delay <= hint + hint / 2, "{delay:?}");
        assert_eq!(h.s.attempt(), 0);
        delays.push(delay);
    }
    delays.sort_unstable();
    assert!(
        delays[45] - delays[15] >= Duration::from_millis(200),
        "spread over the window, not in lockstep: {delays:?}"
    );
}

#[test]
fn cell_cd3_a_second_go_away_replaces_the_hint() {
    let mut h = Harness::in_state(ClientState::Draining);
    h.frame(go_away(10_000));
    assert_eq!(h.events(), []);
    assert_eq!(h.s.state(), ClientState::Draining);
    h.frame(close(Code::GoingAway));
    let (_, Reconnect::After(delay), _) = h.ended() else {
        panic!()
    };
    assert!(delay >= Duration::from_secs(10), "{delay:?}");
}

// ----- Waiting and Closed -----

#[test]
fn cell_cw1_the_reconnect_deadline_starts_the_next_dial() {
    let mut h = Harness::new();
    h.s.dial_failed(h.now);
    let (_, Reconnect::After(delay), _) = h.ended() else {
        panic!()
    };
    assert_eq!(h.s.poll_timeout(), Some(h.now + delay));
    h.advance(delay);
    h.timeout();
    assert_eq!(
        h.events(),
        [ClientEvent::StateChanged(ClientState::Connecting)]
    );
    assert_eq!(h.s.poll_timeout(), Some(h.now + CONNECT_TIMEOUT));
}

#[test]
fn cell_cw2_calls_between_connections_fail_at_once() {
    let mut h = Harness::in_state(ClientState::Waiting);
    assert_eq!(h.request(None), Err(CallError::NotConnected));
    assert_eq!(h.s.join(h.now, "g", None), Err(CallError::NotConnected));
    assert_eq!(h.s.leave(h.now, "g", None), Err(CallError::NotConnected));
    assert_eq!(h.sent(), []);
}

#[test]
fn cell_cw3_connection_inputs_do_not_apply_while_waiting() {
    let mut h = Harness::in_state(ClientState::Waiting);
    let deadline = h.s.poll_timeout();
    h.frame(login_ack());
    h.frame(close(Code::Normal));
    h.s.handle_transport_end(h.now, TransportEnd::Failed);
    h.s.handle_decode_error(h.now, &DecodeError::BadMagic { found: 1 });
    assert!(!h.s.connected(h.now));
    assert!(!h.token());
    assert!(!h.s.token_failed(h.now));
    assert!(!h.s.dial_failed(h.now));
    assert_eq!(h.sent(), []);
    assert_eq!(h.events(), []);
    assert_eq!(h.s.state(), ClientState::Waiting);
    assert_eq!(h.s.poll_timeout(), deadline);
}

#[test]
fn cell_cw4_close_while_waiting_stops_without_a_frame() {
    let mut h = Harness::in_state(ClientState::Waiting);
    assert!(h.s.close(h.now));
    assert_eq!(h.sent(), []);
    let (reason, reconnect, _) = h.ended();
    assert_eq!(reason, EndReason::ClosedByApp);
    assert_eq!(reconnect, Reconnect::Never(StopReason::ClosedByApp));
}

#[test]
fn cell_cz1_nothing_applies_once_closed() {
    let mut h = Harness::in_state(ClientState::Closed);
    assert_eq!(h.request(None), Err(CallError::Stopped));
    assert_eq!(h.s.join(h.now, "g", None), Err(CallError::Stopped));
    assert!(!h.s.close(h.now));
    assert!(!h.s.connected(h.now));
    assert!(!h.s.dial_failed(h.now));
    h.frame(login_ack());
    h.advance(Duration::from_secs(3600));
    h.timeout();
    assert_eq!(h.sent(), []);
    assert_eq!(h.events(), []);
    assert_eq!(h.s.poll_timeout(), None);
    assert_eq!(h.s.state(), ClientState::Closed);
}

#[test]
fn backoff_delays_stay_in_their_window_and_use_the_sample() {
    let b = Backoff {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
        max_attempts: None,
    };
    let windows: Vec<u128> = (0..6).map(|n| b.window(n).as_millis()).collect();
    assert_eq!(windows, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(b.window(200), Duration::from_secs(1), "no overflow");
    assert_eq!(b.delay(0, 0), Duration::ZERO);
    assert_eq!(b.delay(0, u64::MAX), Duration::from_millis(100));
    assert_eq!(b.delay(9, u64::MAX / 2), Duration::from_millis(500));
}

#[test]
fn every_documented_cell_has_a_test() {
    let spec = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"));
    let tests = include_str!("client_session_table.rs");
    let table = spec
        .split("## Client state table")
        .nth(1)
        .expect("PROTOCOL.md has a client state table");
    let table = table.split("\n## ").next().unwrap_or_default();
    let mut ids = Vec::new();
    for line in table.lines() {
        let Some(rest) = line.strip_prefix("| ") else {
            continue;
        };
        let id = rest.split(' ').next().unwrap_or_default();
        let is_id = id.len() > 2
            && id.starts_with('C')
            && id[1..2].chars().all(|c| c.is_ascii_uppercase())
            && id[2..].chars().all(|c| c.is_ascii_digit());
        if is_id {
            ids.push(id.to_ascii_lowercase());
        }
    }
    assert!(
        ids.len() >= 35,
        "found only {} cell ids: {ids:?}",
        ids.len()
    );
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !tests.contains(&format!("fn cell_{id}_")))
        .collect();
    assert!(missing.is_empty(), "cells without a test: {missing:?}");
    // The module docs carry the same rows.
    let module = include_str!("../src/client_session/mod.rs");
    let rows = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.trim_start_matches("//!").trim())
            .filter(|l| l.starts_with("| C") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        rows(module),
        rows(table),
        "the module docs and docs/PROTOCOL.md list the same cells"
    );
}

/// Quality reports (PROTOCOL.md 4.1, opt-in): connect attempts with their latency and
/// heartbeat round trips are counted per transport and sent every interval.
#[test]
fn quality_reports_count_attempts_and_round_trips_per_transport() {
    use longconn_core::protocol::{QualityReport, ReportTransport};
    let mut config = config();
    config.quality_report_interval = Some(Duration::from_secs(60));
    config.network = 2;
    config.transport = ReportTransport::Ws;
    let mut h = Harness::with(config, 7);
    // Attempt 1 fails at the dial.
    assert!(h.s.dial_failed(h.now));
    h.advance(CAP);
    h.timeout();
    assert_eq!(h.s.state(), ClientState::Connecting);
    // Attempt 2 logs in after 30 ms.
    h.advance(Duration::from_millis(30));
    h.reach(ClientState::LoggedIn);
    // One heartbeat answered in 5 ms, the next one still open when the report is due.
    h.advance(HEARTBEAT);
    h.timeout();
    let ping = h.sent().pop().expect("a ping");
    h.advance(Duration::from_millis(5));
    h.frame(Frame::Pong {
        id: ping.id(),
        payload: Bytes::new(),
    });
    assert!(h.s.poll_timeout().unwrap() <= h.now + HEARTBEAT);
    h.advance(Duration::from_secs(59));
    h.timeout();
    let sent = h.sent();
    let Some(Frame::QualityReport {
        network, payload, ..
    }) = sent
        .iter()
        .find(|f| matches!(f, Frame::QualityReport { .. }))
    else {
        panic!("no report in {sent:?}");
    };
    assert_eq!(*network, 2);
    let report = QualityReport::decode(payload).unwrap();
    assert_eq!(report.transports.len(), 1);
    let ws = &report.transports[0];
    assert_eq!(ws.transport, ReportTransport::Ws);
    assert_eq!(ws.connect_attempts, 2);
    assert_eq!(ws.connect_latency, [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(ws.pings, 1);
    assert_eq!(ws.rtt, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // The gateway's Error for the report fails nothing.
    h.frame(Frame::Error {
        id: sent.last().unwrap().id(),
        code: Code::MalformedReport,
        message: Text::new(),
    });
    assert_eq!(h.s.state(), ClientState::LoggedIn);
    // Counts restart: the ping still open when the connection ends is lost, and the
    // next report (none is sent while nothing was counted) holds only that.
    h.s.handle_transport_end(h.now, TransportEnd::Eof);
    let rest = h.s.take_quality_report();
    assert_eq!(rest.transports.len(), 1);
    assert_eq!(
        (
            rest.transports[0].connect_attempts,
            rest.transports[0].pings
        ),
        (0, 1)
    );
    assert_eq!(rest.transports[0].rtt, [0; 10]);
}

#[test]
fn quality_reports_are_off_by_default() {
    let mut h = Harness::in_state(ClientState::LoggedIn);
    for _ in 0..200 {
        h.advance(HEARTBEAT);
        h.timeout();
        if let Some(ping) = h.sent().pop() {
            assert!(matches!(ping, Frame::Ping { .. }), "{ping:?}");
            h.frame(Frame::Pong {
                id: ping.id(),
                payload: Bytes::new(),
            });
        }
    }
}

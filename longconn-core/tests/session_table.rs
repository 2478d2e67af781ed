//! Drives every cell of the session state table in docs/PROTOCOL.md ("Session state
//! table") on a simulated clock: no sleeps, no sockets. Each test is named after the
//! cell id it covers; `every_documented_cell_has_a_test` checks that none is missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use longconn_core::protocol::{FrameCodec, QualityReport, ReportTransport, TransportReport};
use longconn_core::{
    CloseReason, Code, Command, DecodeError as Error, Event, Frame, Metadata, PushOutcome, Session,
    SessionConfig, SlowConsumerPolicy, State, Text, TokenExpiry, Transmit, TransportEnd,
};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(75);
const GRACE: Duration = Duration::from_secs(30);
const DRAIN: Duration = Duration::from_secs(10);
const MAX_QUEUED: usize = 2;
const MAX_INFLIGHT: u32 = 2;
const CONN_ID: u64 = 42;
const LOGIN_ID: u32 = 3;
const OPEN_STATES: [State; 4] = [
    State::AwaitingLogin,
    State::Authenticating,
    State::Active,
    State::Draining,
];

/// A session on a simulated clock, with helpers to reach each state.
struct Harness {
    session: Session,
    start: Instant,
    now: Instant,
}

impl Harness {
    fn with_policy(policy: SlowConsumerPolicy) -> Harness {
        Harness::build(policy, DRAIN)
    }

    /// A session whose drain outlasts the idle timeout, so idle deadlines can be seen
    /// while draining.
    fn with_long_drain() -> Harness {
        Harness::build(SlowConsumerPolicy::DropNewest, IDLE * 3)
    }

    fn build(policy: SlowConsumerPolicy, drain: Duration) -> Harness {
        let config = SessionConfig::builder()
            .login_timeout(LOGIN_TIMEOUT)
            .heartbeat_interval(HEARTBEAT)
            .idle_timeout(IDLE)
            .token_refresh_grace(GRACE)
            .drain_timeout(drain)
            .max_queued_pushes(MAX_QUEUED)
            .max_inflight_requests(MAX_INFLIGHT)
            .slow_consumer_policy(policy)
            .build()
            .unwrap();
        let start = Instant::now();
        Harness {
            session: Session::new(Arc::new(config), start),
            start,
            now: start,
        }
    }

    fn new() -> Harness {
        Harness::with_policy(SlowConsumerPolicy::DropNewest)
    }

    /// A session in `state`, with nothing left to transmit or report.
    fn in_state(state: State) -> Harness {
        let mut h = Harness::new();
        h.reach(state, None);
        h
    }

    fn reach(&mut self, state: State, expiry: Option<TokenExpiry>) {
        if state == State::AwaitingLogin {
            return;
        }
        self.advance(Duration::from_secs(1));
        self.frame(login());
        if state != State::Authenticating {
            assert!(self.command(Command::AuthAccepted {
                conn_id: CONN_ID,
                expiry,
            }));
        }
        if state == State::Draining {
            assert!(self.command(Command::BeginDrain {
                retry_after: Duration::from_secs(5),
            }));
        }
        self.sent();
        self.events();
        assert_eq!(self.session.state(), state);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Moves the clock to `start + at`.
    fn at(&mut self, at: Duration) {
        self.now = self.start + at;
    }

    fn frame(&mut self, frame: Frame) {
        self.session.handle_frame(self.now, frame);
    }

    fn command(&mut self, command: Command) -> bool {
        self.session.handle_command(self.now, command)
    }

    fn timeout(&mut self) {
        self.session.handle_timeout(self.now);
    }

    /// Everything queued for the peer, oldest first (shared encodings decoded).
    fn sent(&mut self) -> Vec<Frame> {
        let codec = FrameCodec::new(1 << 20);
        std::iter::from_fn(|| self.session.poll_transmit())
            .map(|t| match t {
                Transmit::Frame(frame) => frame,
                Transmit::Encoded(bytes) => codec.decode_message(bytes).unwrap(),
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.session.poll_event()).collect()
    }

    /// Asserts the session closed locally with `code`: exactly one frame (`Close` or
    /// `Kick` as `kick` says) carrying it, and exactly one `Closed` event.
    fn assert_closed_locally(&mut self, code: Code, kick: bool) {
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "one closing frame: {sent:?}");
        match (&sent[0], kick) {
            (Frame::Close { code: got, .. }, false) | (Frame::Kick { code: got, .. }, true) => {
                assert_eq!(*got, code)
            }
            (other, _) => panic!("expected a closing frame with {code:?}, got {other:?}"),
        }
        assert_eq!(self.events(), [Event::Closed(CloseReason::Local(code))]);
        self.assert_finished(CloseReason::Local(code));
    }

    fn assert_finished(&self, reason: CloseReason) {
        assert_eq!(self.session.state(), State::Closed);
        assert_eq!(self.session.close_reason(), Some(reason));
        assert_eq!(self.session.poll_timeout(), None, "no deadline once closed");
    }

    fn assert_quiet(&mut self) {
        assert_eq!(self.sent(), []);
        assert_eq!(self.events(), []);
    }
}

fn quality_report(id: u32, body: Bytes) -> Frame {
    Frame::QualityReport {
        id,
        network: 2,
        payload: body,
    }
}

fn login() -> Frame {
    Frame::Login {
        id: LOGIN_ID,
        app: "demo".into(),
        device: "phone-1".into(),
        token: Bytes::from_static(b"token"),
        meta: Metadata::from_pairs([("os", "ios")]).unwrap(),
    }
}

fn request(id: u32) -> Frame {
    Frame::Request {
        id,
        business: 1,
        meta: Metadata::new(),
        payload: Bytes::from_static(b"req"),
    }
}

fn push(id: u32) -> Transmit {
    Transmit::Frame(push_frame(id))
}

fn push_frame(id: u32) -> Frame {
    Frame::Push {
        id,
        ack_required: false,
        business: 9,
        group: None,
        seq: Some(u64::from(id)),
        epoch: None,
        meta: Metadata::new(),
        payload: Bytes::from_static(b"push"),
    }
}

fn error_frame(id: u32, code: Code, message: &'static str) -> Frame {
    Frame::Error {
        id,
        code,
        message: Text::from_static(message),
    }
}

fn expiry(h: &Harness, after: Duration, unix_ms: u64) -> TokenExpiry {
    TokenExpiry {
        at: h.now + after,
        unix_ms,
    }
}

// ----- In any open state -----

#[test]
fn cell_x1_ping_is_answered_with_pong_in_every_open_state() {
    for state in OPEN_STATES {
        let mut h = Harness::in_state(state);
        let payload = Bytes::from_static(b"probe");
        h.frame(Frame::Ping {
            id: 5,
            payload: payload.clone(),
        });
        assert_eq!(h.sent(), [Frame::Pong { id: 5, payload }], "{state:?}");
        assert_eq!(h.events(), [], "{state:?}");
        assert_eq!(h.session.state(), state);
    }
}

#[test]
fn cell_x2_peer_close_ends_the_session_in_every_open_state() {
    for state in OPEN_STATES {
        let mut h = Harness::in_state(state);
        h.frame(Frame::Close {
            code: Code::Normal,
            message: Text::from_static("bye"),
        });
        assert_eq!(h.sent(), [], "{state:?}: nothing answers a Close");
        assert_eq!(h.events(), [Event::Closed(CloseReason::Peer(Code::Normal))]);
        h.assert_finished(CloseReason::Peer(Code::Normal));
    }
}

#[test]
fn cell_x3_undecodable_bytes_close_with_the_errors_code_in_every_open_state() {
    for state in OPEN_STATES {
        for (error, code) in [
            (Error::BadMagic { found: 0x4745 }, Code::BadMagic),
            (
                Error::UnsupportedVersion { version: 9 },
                Code::UnsupportedVersion,
            ),
            (
                Error::FrameTooLarge {
                    len: 1 << 20,
                    max: 65_536,
                },
                Code::FrameTooLarge,
            ),
            (Error::UnknownFrameType(0x7F), Code::MalformedFrame),
        ] {
            let mut h = Harness::in_state(state);
            h.session.handle_decode_error(&error);
            let sent = h.sent();
            match sent.as_slice() {
                [Frame::Close { code: got, message }] => {
                    assert_eq!(*got, code, "{state:?} {error}");
                    assert_eq!(
                        message.as_str(),
                        error.to_string(),
                        "the error is explained"
                    );
                }
                other => panic!("{state:?}: expected one Close, got {other:?}"),
            }
            assert_eq!(h.events(), [Event::Closed(CloseReason::Local(code))]);
            h.assert_finished(CloseReason::Local(code));
        }
    }
}

#[test]
fn cell_x4_end_of_stream_discards_unsent_frames_in_every_open_state() {
    for state in OPEN_STATES {
        let mut h = Harness::in_state(state);
        h.frame(Frame::Ping {
            id: 1,
            payload: Bytes::new(),
        });
        if matches!(state, State::Active | State::Draining) {
            assert_eq!(h.session.push(push(1)), PushOutcome::Queued);
        }
        h.session.handle_transport_end(TransportEnd::Eof);
        assert_eq!(h.sent(), [], "{state:?}: unsent frames are discarded");
        assert_eq!(h.session.queued_pushes(), 0);
        assert_eq!(h.events(), [Event::Closed(CloseReason::TransportEnded)]);
        h.assert_finished(CloseReason::TransportEnded);
    }
}

#[test]
fn cell_x5_transport_failure_discards_unsent_frames_in_every_open_state() {
    for state in OPEN_STATES {
        let mut h = Harness::in_state(state);
        h.frame(Frame::Ping {
            id: 1,
            payload: Bytes::new(),
        });
        h.session.handle_transport_end(TransportEnd::Failed);
        assert_eq!(h.sent(), [], "{state:?}");
        assert_eq!(h.events(), [Event::Closed(CloseReason::TransportFailed)]);
        h.assert_finished(CloseReason::TransportFailed);
    }
}

#[test]
fn cell_x6_kick_command_sends_kick_and_closes_in_every_open_state() {
    for state in OPEN_STATES {
        for code in [Code::Kicked, Code::Replaced] {
            let mut h = Harness::in_state(state);
            assert!(h.command(Command::Kick {
                code,
                message: Text::from_static("by operator"),
            }));
            assert_eq!(
                h.sent(),
                [Frame::Kick {
                    code,
                    message: Text::from_static("by operator"),
                }],
                "{state:?}"
            );
            assert_eq!(h.events(), [Event::Closed(CloseReason::Local(code))]);
            h.assert_finished(CloseReason::Local(code));
        }
    }
}

#[test]
fn cell_x7_close_command_sends_close_in_every_open_state() {
    for state in OPEN_STATES {
        let mut h = Harness::in_state(state);
        assert!(h.command(Command::Close { code: Code::Normal }));
        assert_eq!(
            h.sent(),
            [Frame::Close {
                code: Code::Normal,
                message: Text::new(),
            }],
            "{state:?}"
        );
        assert_eq!(
            h.events(),
            [Event::Closed(CloseReason::Local(Code::Normal))]
        );
        h.assert_finished(CloseReason::Local(Code::Normal));
    }
}

#[test]
fn cell_x8_a_closed_session_ignores_everything() {
    let mut h = Harness::in_state(State::Active);
    assert!(h.command(Command::Close { code: Code::Normal }));
    h.sent();
    h.events();
    h.frame(Frame::Ping {
        id: 1,
        payload: Bytes::new(),
    });
    h.frame(request(2));
    h.advance(Duration::from_secs(3600));
    h.timeout();
    h.session.handle_decode_error(&Error::BadMagic { found: 0 });
    h.session.handle_transport_end(TransportEnd::Eof);
    let commands = [
        Command::AuthAccepted {
            conn_id: 1,
            expiry: None,
        },
        Command::AuthRejected {
            code: Code::InvalidToken,
        },
        Command::RefreshAccepted {
            id: 1,
            expiry: None,
        },
        Command::RefreshRejected {
            id: 1,
            code: Code::InvalidToken,
        },
        Command::Respond {
            id: 2,
            business: 1,
            meta: Metadata::new(),
            payload: Bytes::new(),
        },
        Command::RequestFailed {
            id: 2,
            code: Code::BackendError,
            message: Text::new(),
        },
        Command::GroupJoined {
            id: 3,
            group: "g".into(),
            position: None,
            recovered: None,
        },
        Command::GroupLeft {
            id: 3,
            group: "g".into(),
        },
        Command::GroupRejected {
            id: 3,
            code: Code::GroupForbidden,
        },
        Command::Kick {
            code: Code::Kicked,
            message: Text::new(),
        },
        Command::BeginDrain {
            retry_after: Duration::ZERO,
        },
        Command::Close { code: Code::Normal },
    ];
    for command in commands {
        assert!(
            !h.command(command.clone()),
            "{command:?} reports not applied"
        );
    }
    assert_eq!(h.session.push(push(1)), PushOutcome::NotActive);
    h.assert_quiet();
    h.assert_finished(CloseReason::Local(Code::Normal));
}

// ----- AwaitingLogin -----

#[test]
fn cell_a1_login_asks_the_application_to_authenticate() {
    let mut h = Harness::new();
    h.advance(Duration::from_secs(2));
    h.frame(login());
    assert_eq!(h.sent(), []);
    assert_eq!(
        h.events(),
        [Event::Authenticate {
            app: "demo".into(),
            device: "phone-1".into(),
            token: Bytes::from_static(b"token"),
            meta: Metadata::from_pairs([("os", "ios")]).unwrap(),
        }]
    );
    assert_eq!(h.session.state(), State::Authenticating);
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.start + LOGIN_TIMEOUT),
        "the login deadline still counts from the connection's start"
    );
}

#[test]
fn cell_a2_other_frames_before_login_are_unexpected() {
    let frames = [
        request(1),
        Frame::PushAck { id: 1 },
        Frame::JoinGroup {
            id: 1,
            group: "g".into(),
            since: None,
        },
        Frame::Pong {
            id: 1,
            payload: Bytes::new(),
        },
        Frame::LoginAck {
            id: 1,
            conn_id: 1,
            heartbeat_ms: 1,
            expires_at_ms: None,
        },
        quality_report(1, Bytes::from_static(&[1, 0])),
    ];
    for frame in frames {
        let mut h = Harness::new();
        let ty = frame.frame_type();
        h.frame(frame);
        let sent = h.sent();
        match sent.as_slice() {
            [Frame::Close { code, message }] => {
                assert_eq!(*code, Code::UnexpectedFrame);
                assert!(message.as_str().contains(&format!("{ty:?}")), "{message:?}");
            }
            other => panic!("{ty:?}: expected Close, got {other:?}"),
        }
        assert_eq!(
            h.events(),
            [Event::Closed(CloseReason::Local(Code::UnexpectedFrame))]
        );
        h.assert_finished(CloseReason::Local(Code::UnexpectedFrame));
    }
}

#[test]
fn cell_a3_login_deadline_closes_an_idle_connection() {
    let mut h = Harness::new();
    assert_eq!(h.session.poll_timeout(), Some(h.start + LOGIN_TIMEOUT));
    h.at(LOGIN_TIMEOUT - Duration::from_millis(1));
    h.timeout();
    h.assert_quiet();
    assert_eq!(h.session.state(), State::AwaitingLogin, "not yet");
    h.at(LOGIN_TIMEOUT);
    h.timeout();
    h.assert_closed_locally(Code::LoginTimeout, false);
}

#[test]
fn cell_a6_oversized_login_metadata_is_refused() {
    let limit = SessionConfig::default().max_login_meta_size();
    let big = "x".repeat(limit);
    let mut h = Harness::new();
    h.frame(Frame::Login {
        id: LOGIN_ID,
        app: "demo".into(),
        device: "phone-1".into(),
        token: Bytes::from_static(b"token"),
        meta: Metadata::from_pairs([("k", big.as_str())]).unwrap(),
    });
    h.assert_closed_locally(Code::MetadataTooLarge, false);
    assert_eq!(Code::MetadataTooLarge.as_u16(), 331);
    // Just under the limit is fine.
    let mut h = Harness::new();
    let fits = "x".repeat(limit - 64);
    h.frame(Frame::Login {
        id: LOGIN_ID,
        app: "demo".into(),
        device: "phone-1".into(),
        token: Bytes::from_static(b"token"),
        meta: Metadata::from_pairs([("k", fits.as_str())]).unwrap(),
    });
    assert!(matches!(
        h.events().as_slice(),
        [Event::Authenticate { .. }]
    ));
}

#[test]
fn cell_a4_drain_before_login_closes_with_going_away() {
    let mut h = Harness::new();
    assert!(h.command(Command::BeginDrain {
        retry_after: Duration::from_secs(5),
    }));
    h.assert_closed_locally(Code::GoingAway, false);
}

#[test]
fn cell_a5_push_before_login_is_not_accepted() {
    let mut h = Harness::new();
    assert_eq!(h.session.push(push(1)), PushOutcome::NotActive);
    h.assert_quiet();
    assert_eq!(h.session.state(), State::AwaitingLogin);
    assert_eq!(h.session.queued_pushes(), 0);
}

// ----- Authenticating -----

#[test]
fn cell_u1_accepted_login_is_acknowledged() {
    let mut h = Harness::in_state(State::Authenticating);
    h.advance(Duration::from_secs(1));
    let exp = expiry(&h, Duration::from_secs(3600), 1_700_000_000_000);
    assert!(h.command(Command::AuthAccepted {
        conn_id: CONN_ID,
        expiry: Some(exp),
    }));
    assert_eq!(
        h.sent(),
        [Frame::LoginAck {
            id: LOGIN_ID,
            conn_id: CONN_ID,
            heartbeat_ms: HEARTBEAT.as_millis() as u32,
            expires_at_ms: Some(1_700_000_000_000),
        }]
    );
    assert_eq!(h.events(), [Event::LoggedIn { conn_id: CONN_ID }]);
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + IDLE),
        "the idle deadline replaces the login deadline"
    );
}

#[test]
fn cell_u2_rejected_login_closes_with_the_code() {
    for code in [Code::InvalidToken, Code::ExpiredToken, Code::Forbidden] {
        let mut h = Harness::in_state(State::Authenticating);
        assert!(h.command(Command::AuthRejected { code }));
        h.assert_closed_locally(code, false);
    }
}

#[test]
fn cell_u3_login_deadline_passes_while_authenticating() {
    let mut h = Harness::in_state(State::Authenticating);
    h.at(LOGIN_TIMEOUT - Duration::from_millis(1));
    h.timeout();
    h.assert_quiet();
    h.at(LOGIN_TIMEOUT);
    h.timeout();
    h.assert_closed_locally(Code::LoginTimeout, false);
    // A late answer from the authenticator is refused.
    assert!(!h.command(Command::AuthAccepted {
        conn_id: CONN_ID,
        expiry: None,
    }));
}

#[test]
fn cell_u4_frames_while_authenticating_are_unexpected() {
    for frame in [login(), request(1), Frame::PushAck { id: 2 }] {
        let mut h = Harness::in_state(State::Authenticating);
        h.frame(frame);
        let sent = h.sent();
        assert!(
            matches!(
                sent.as_slice(),
                [Frame::Close {
                    code: Code::UnexpectedFrame,
                    ..
                }]
            ),
            "{sent:?}"
        );
        assert_eq!(
            h.events(),
            [Event::Closed(CloseReason::Local(Code::UnexpectedFrame))]
        );
        h.assert_finished(CloseReason::Local(Code::UnexpectedFrame));
    }
}

#[test]
fn cell_u5_drain_while_authenticating_closes_with_going_away() {
    let mut h = Harness::in_state(State::Authenticating);
    assert!(h.command(Command::BeginDrain {
        retry_after: Duration::from_secs(5),
    }));
    h.assert_closed_locally(Code::GoingAway, false);
}

// ----- Active -----

#[test]
fn cell_v1_every_frame_moves_the_idle_deadline_after_login_only() {
    // Before login, frames do not extend anything: the login deadline stands.
    let mut h = Harness::new();
    h.advance(Duration::from_secs(5));
    h.frame(Frame::Ping {
        id: 1,
        payload: Bytes::new(),
    });
    assert_eq!(h.session.poll_timeout(), Some(h.start + LOGIN_TIMEOUT));

    for state in [State::Active, State::Draining] {
        let mut h = Harness::with_long_drain();
        h.reach(state, None);
        let logged_in = h.now;
        h.advance(Duration::from_secs(50));
        h.frame(Frame::Pong {
            id: 1,
            payload: Bytes::new(),
        });
        let idle = h.now + IDLE;
        assert_eq!(h.session.poll_timeout(), Some(idle), "{state:?}");
        // At the old idle deadline nothing happens; at the new one the session closes.
        h.now = logged_in + IDLE;
        h.timeout();
        h.assert_quiet();
        assert_eq!(h.session.state(), state);
        h.now = idle;
        h.timeout();
        h.assert_closed_locally(Code::IdleTimeout, false);
    }
}

#[test]
fn cell_v2_request_goes_to_the_application() {
    let mut h = Harness::in_state(State::Active);
    h.frame(request(7));
    assert_eq!(h.sent(), []);
    assert_eq!(
        h.events(),
        [Event::Request {
            id: 7,
            business: 1,
            meta: Metadata::new(),
            payload: Bytes::from_static(b"req"),
        }]
    );
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn cell_v3_requests_beyond_the_inflight_limit_are_busy() {
    let mut h = Harness::in_state(State::Active);
    for id in 1..=MAX_INFLIGHT {
        h.frame(request(id));
    }
    assert_eq!(h.events().len(), MAX_INFLIGHT as usize);
    h.frame(request(99));
    assert_eq!(
        h.sent(),
        [error_frame(99, Code::Busy, "too many requests in flight")]
    );
    assert_eq!(h.events(), [], "the busy request is not passed on");
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn cell_v21_requests_beyond_the_rate_limit_are_refused() {
    let config = SessionConfig::builder()
        .max_requests_per_second(10)
        .max_inflight_requests(1000)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut h = Harness {
        session: Session::new(Arc::new(config), start),
        start,
        now: start,
    };
    h.reach(State::Active, None);
    // A burst of one second's worth passes, the next is refused.
    for id in 1..=10 {
        h.frame(request(id));
    }
    assert_eq!(h.events().len(), 10);
    assert_eq!(h.sent(), []);
    h.frame(request(11));
    assert_eq!(
        h.sent(),
        [error_frame(
            11,
            Code::RateLimited,
            "too many requests per second"
        )]
    );
    assert_eq!(h.events(), [], "the refused request is not passed on");
    assert_eq!(h.session.state(), State::Active, "the connection goes on");
    // One interval (100 ms) later, one more is allowed; a refusal uses no budget.
    h.advance(Duration::from_millis(100));
    h.frame(request(12));
    assert_eq!(h.events().len(), 1);
    h.frame(request(13));
    assert!(matches!(
        h.sent().as_slice(),
        [Frame::Error {
            id: 13,
            code: Code::RateLimited,
            ..
        }]
    ));
    // A quiet second refills the whole burst.
    h.advance(Duration::from_secs(1));
    for id in 20..30 {
        h.frame(request(id));
    }
    assert_eq!(h.events().len(), 10);
    assert_eq!(h.sent(), []);
    assert_eq!(Code::RateLimited.as_u16(), 330);
}

#[test]
fn cell_v4_answers_to_requests_are_sent_and_free_a_slot() {
    let mut h = Harness::in_state(State::Active);
    h.frame(request(1));
    h.frame(request(2));
    h.events();
    assert!(h.command(Command::Respond {
        id: 1,
        business: 1,
        meta: Metadata::new(),
        payload: Bytes::from_static(b"answer"),
    }));
    assert!(h.command(Command::RequestFailed {
        id: 2,
        code: Code::BackendTimeout,
        message: Text::from_static("slow backend"),
    }));
    assert_eq!(
        h.sent(),
        [
            Frame::Response {
                id: 1,
                business: 1,
                meta: Metadata::new(),
                payload: Bytes::from_static(b"answer"),
            },
            error_frame(2, Code::BackendTimeout, "slow backend"),
        ]
    );
    assert_eq!(h.events(), []);
    // Both slots are free again.
    h.frame(request(3));
    h.frame(request(4));
    assert_eq!(h.events().len(), 2);
    assert_eq!(h.sent(), []);
}

#[test]
fn cell_v5_group_requests_go_to_the_application() {
    let mut h = Harness::in_state(State::Active);
    h.frame(Frame::JoinGroup {
        id: 4,
        group: "room-1".into(),
        since: None,
    });
    h.frame(Frame::LeaveGroup {
        id: 5,
        group: "room-1".into(),
    });
    assert_eq!(h.sent(), []);
    assert_eq!(
        h.events(),
        [
            Event::JoinGroup {
                id: 4,
                group: "room-1".into(),
                since: None,
            },
            Event::LeaveGroup {
                id: 5,
                group: "room-1".into(),
            },
        ]
    );
}

#[test]
fn cell_v6_group_answers_are_sent() {
    let mut h = Harness::in_state(State::Active);
    assert!(h.command(Command::GroupJoined {
        id: 4,
        group: "room-1".into(),
        position: None,
        recovered: None,
    }));
    assert!(h.command(Command::GroupLeft {
        id: 5,
        group: "room-1".into(),
    }));
    assert!(h.command(Command::GroupRejected {
        id: 6,
        code: Code::GroupFull,
    }));
    assert_eq!(
        h.sent(),
        [
            Frame::JoinAck {
                id: 4,
                group: "room-1".into(),
                position: None,
                recovered: None,
            },
            Frame::LeaveAck {
                id: 5,
                group: "room-1".into(),
            },
            error_frame(6, Code::GroupFull, "group request rejected"),
        ]
    );
    assert_eq!(h.events(), []);
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn cell_v7_push_ack_is_reported() {
    let mut h = Harness::in_state(State::Active);
    h.frame(Frame::PushAck { id: 11 });
    assert_eq!(h.sent(), []);
    assert_eq!(h.events(), [Event::PushAcked { id: 11 }]);
}

#[test]
fn cell_v8_peer_error_is_reported() {
    let mut h = Harness::in_state(State::Active);
    h.frame(error_frame(12, Code::BackendError, "cannot render push"));
    assert_eq!(h.sent(), []);
    assert_eq!(
        h.events(),
        [Event::PeerError {
            id: 12,
            code: Code::BackendError,
            message: Text::from_static("cannot render push"),
        }]
    );
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn cell_v9_pong_is_accepted_silently() {
    let mut h = Harness::in_state(State::Active);
    h.frame(Frame::Pong {
        id: 1,
        payload: Bytes::from_static(b"x"),
    });
    h.assert_quiet();
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn cell_v10_pushes_under_the_limit_are_sent_in_order() {
    let mut h = Harness::in_state(State::Active);
    assert_eq!(h.session.push(push(1)), PushOutcome::Queued);
    let shared = push_frame(2).to_bytes(1 << 20).unwrap();
    assert_eq!(
        h.session.push(Transmit::Encoded(shared)),
        PushOutcome::Queued
    );
    assert_eq!(h.session.queued_pushes(), 2);
    assert_eq!(h.sent(), [push_frame(1), push_frame(2)]);
    assert_eq!(h.session.queued_pushes(), 0);
    assert_eq!(h.events(), []);
}

#[test]
fn cell_v11_full_queue_with_drop_newest_drops_and_counts() {
    let mut h = Harness::with_policy(SlowConsumerPolicy::DropNewest);
    h.reach(State::Active, None);
    for id in 1..=MAX_QUEUED as u32 {
        assert_eq!(h.session.push(push(id)), PushOutcome::Queued);
    }
    assert_eq!(h.session.push(push(99)), PushOutcome::Dropped);
    assert_eq!(h.session.dropped_pushes(), 1);
    assert_eq!(h.sent(), [push_frame(1), push_frame(2)]);
    assert_eq!(h.events(), []);
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(h.session.push(push(3)), PushOutcome::Queued, "room again");
}

#[test]
fn cell_v12_full_queue_with_disconnect_policy_kicks_the_slow_consumer() {
    let mut h = Harness::with_policy(SlowConsumerPolicy::Disconnect);
    h.reach(State::Active, None);
    h.frame(Frame::Ping {
        id: 1,
        payload: Bytes::new(),
    });
    for id in 1..=MAX_QUEUED as u32 {
        assert_eq!(h.session.push(push(id)), PushOutcome::Queued);
    }
    assert_eq!(h.session.push(push(99)), PushOutcome::Disconnected);
    assert_eq!(h.session.dropped_pushes(), MAX_QUEUED as u64 + 1);
    // Control frames stay; pushes are discarded; the Kick ends the stream.
    assert_eq!(
        h.sent(),
        [
            Frame::Pong {
                id: 1,
                payload: Bytes::new(),
            },
            Frame::Kick {
                code: Code::SlowConsumer,
                message: Text::from_static("outbound queue full"),
            },
        ]
    );
    assert_eq!(
        h.events(),
        [Event::Closed(CloseReason::Local(Code::SlowConsumer))]
    );
    h.assert_finished(CloseReason::Local(Code::SlowConsumer));
}

#[test]
fn cell_v13_idle_deadline_closes_a_silent_session() {
    let mut h = Harness::in_state(State::Active);
    let login_done = h.now;
    h.now = login_done + IDLE - Duration::from_millis(1);
    h.timeout();
    h.assert_quiet();
    h.now = login_done + IDLE;
    h.timeout();
    h.assert_closed_locally(Code::IdleTimeout, false);
}

#[test]
fn cell_v14_token_expiry_asks_for_a_refresh() {
    let mut h = Harness::new();
    let exp = TokenExpiry {
        at: h.start + Duration::from_secs(11),
        unix_ms: 5_000_000,
    };
    h.reach(State::Active, Some(exp));
    assert_eq!(h.session.poll_timeout(), Some(exp.at), "expiry before idle");
    h.now = exp.at;
    h.timeout();
    assert_eq!(
        h.sent(),
        [Frame::TokenExpiring {
            deadline_ms: 5_000_000 + GRACE.as_millis() as u64,
        }]
    );
    assert_eq!(h.events(), []);
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(
        h.session.poll_timeout(),
        Some(exp.at + GRACE),
        "the refresh deadline is next"
    );
    h.timeout();
    h.assert_quiet();
}

#[test]
fn cell_v15_token_refresh_goes_to_the_application() {
    let mut h = Harness::in_state(State::Active);
    h.frame(Frame::TokenRefresh {
        id: 8,
        token: Bytes::from_static(b"new-token"),
    });
    assert_eq!(h.sent(), []);
    assert_eq!(
        h.events(),
        [Event::RefreshToken {
            id: 8,
            token: Bytes::from_static(b"new-token"),
        }]
    );
}

/// An active session whose token expired at +11 s and which was asked to refresh.
fn refresh_pending() -> (Harness, TokenExpiry) {
    let mut h = Harness::new();
    let exp = TokenExpiry {
        at: h.start + Duration::from_secs(11),
        unix_ms: 5_000_000,
    };
    h.reach(State::Active, Some(exp));
    h.now = exp.at;
    h.timeout();
    h.sent();
    (h, exp)
}

#[test]
fn cell_v16_accepted_refresh_sets_a_new_expiry() {
    let (mut h, old) = refresh_pending();
    h.frame(Frame::TokenRefresh {
        id: 8,
        token: Bytes::from_static(b"new"),
    });
    h.events();
    let new = expiry(&h, Duration::from_secs(7200), 9_000_000);
    assert!(h.command(Command::RefreshAccepted {
        id: 8,
        expiry: Some(new),
    }));
    assert_eq!(
        h.sent(),
        [Frame::TokenRefreshAck {
            id: 8,
            expires_at_ms: Some(9_000_000),
        }]
    );
    assert_eq!(h.events(), []);
    // The refresh deadline is gone: passing it changes nothing.
    h.now = old.at + GRACE;
    h.timeout();
    h.assert_quiet();
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(
        h.session.poll_timeout(),
        Some(old.at + IDLE),
        "idle is next"
    );
}

#[test]
fn cell_v17_rejected_refresh_is_an_error_and_the_deadline_still_runs() {
    let (mut h, old) = refresh_pending();
    assert!(h.command(Command::RefreshRejected {
        id: 8,
        code: Code::InvalidToken,
    }));
    assert_eq!(
        h.sent(),
        [error_frame(8, Code::InvalidToken, "token refresh rejected")]
    );
    assert_eq!(h.events(), []);
    assert_eq!(h.session.state(), State::Active);
    assert_eq!(h.session.poll_timeout(), Some(old.at + GRACE));
}

#[test]
fn cell_v18_refresh_deadline_closes_with_token_expired() {
    let (mut h, old) = refresh_pending();
    h.now = old.at + GRACE - Duration::from_millis(1);
    h.timeout();
    h.assert_quiet();
    h.now = old.at + GRACE;
    h.timeout();
    h.assert_closed_locally(Code::TokenExpired, false);
}

#[test]
fn cell_v19_drain_sends_go_away_and_starts_the_drain_deadline() {
    let mut h = Harness::in_state(State::Active);
    assert!(h.command(Command::BeginDrain {
        retry_after: Duration::from_millis(5_500),
    }));
    assert_eq!(
        h.sent(),
        [Frame::GoAway {
            retry_after_ms: 5_500,
            message: Text::new(),
        }]
    );
    assert_eq!(h.events(), []);
    assert_eq!(h.session.state(), State::Draining);
    assert_eq!(h.session.poll_timeout(), Some(h.now + DRAIN));
}

#[test]
fn cell_v20_login_or_server_frames_after_login_are_unexpected() {
    let server_only = [
        login(),
        Frame::LoginAck {
            id: 1,
            conn_id: 1,
            heartbeat_ms: 1,
            expires_at_ms: None,
        },
        Frame::Response {
            id: 1,
            business: 1,
            meta: Metadata::new(),
            payload: Bytes::new(),
        },
        Frame::GoAway {
            retry_after_ms: 1,
            message: Text::new(),
        },
        Frame::Kick {
            code: Code::Kicked,
            message: Text::new(),
        },
        Frame::TokenExpiring { deadline_ms: 1 },
    ];
    for frame in server_only {
        let mut h = Harness::in_state(State::Active);
        let ty = frame.frame_type();
        h.frame(frame);
        let sent = h.sent();
        assert!(
            matches!(
                sent.as_slice(),
                [Frame::Close {
                    code: Code::UnexpectedFrame,
                    ..
                }]
            ),
            "{ty:?}: {sent:?}"
        );
        assert_eq!(
            h.events(),
            [Event::Closed(CloseReason::Local(Code::UnexpectedFrame))]
        );
    }
}

// ----- Draining -----

#[test]
fn cell_d1_requests_and_joins_while_draining_are_refused() {
    let mut h = Harness::in_state(State::Draining);
    h.frame(request(1));
    h.frame(Frame::JoinGroup {
        id: 2,
        group: "g".into(),
        since: None,
    });
    assert_eq!(
        h.sent(),
        [
            error_frame(1, Code::Draining, "server is draining"),
            error_frame(2, Code::Draining, "server is draining"),
        ]
    );
    assert_eq!(h.events(), []);
    assert_eq!(h.session.state(), State::Draining);
}

#[test]
fn cell_d2_drain_deadline_closes_with_going_away() {
    let mut h = Harness::in_state(State::Draining);
    let deadline = h.session.poll_timeout().unwrap();
    h.now = deadline - Duration::from_millis(1);
    h.timeout();
    h.assert_quiet();
    h.now = deadline;
    h.timeout();
    h.assert_closed_locally(Code::GoingAway, false);
}

#[test]
fn cell_d3_second_drain_is_not_applied() {
    let mut h = Harness::in_state(State::Draining);
    let deadline = h.session.poll_timeout();
    assert!(!h.command(Command::BeginDrain {
        retry_after: Duration::from_secs(1),
    }));
    h.assert_quiet();
    assert_eq!(h.session.state(), State::Draining);
    assert_eq!(h.session.poll_timeout(), deadline, "deadline unchanged");
}

#[test]
fn cell_d4_active_rows_apply_while_draining() {
    let mut h = Harness::in_state(State::Draining);
    assert_eq!(h.session.push(push(1)), PushOutcome::Queued);
    assert_eq!(h.sent(), [push_frame(1)], "queued pushes still flow");
    h.frame(Frame::PushAck { id: 1 });
    h.frame(Frame::LeaveGroup {
        id: 3,
        group: "g".into(),
    });
    assert_eq!(
        h.events(),
        [
            Event::PushAcked { id: 1 },
            Event::LeaveGroup {
                id: 3,
                group: "g".into(),
            },
        ]
    );
    assert!(h.command(Command::Respond {
        id: 9,
        business: 1,
        meta: Metadata::new(),
        payload: Bytes::new(),
    }));
    assert_eq!(
        h.sent().len(),
        1,
        "answers to earlier requests still go out"
    );
    assert_eq!(h.session.state(), State::Draining);

    // The idle deadline applies too (with a drain longer than the idle timeout).
    let mut h = Harness::with_long_drain();
    h.reach(State::Draining, None);
    let drained_at = h.now;
    h.now = drained_at + IDLE - Duration::from_millis(1);
    h.timeout();
    h.assert_quiet();
    h.now = drained_at + IDLE;
    h.timeout();
    h.assert_closed_locally(Code::IdleTimeout, false);
}

// ----- Rules below the table -----

#[test]
fn deadline_precedence_idle_then_refresh_then_drain_then_expiry() {
    // All four due at once: idle wins.
    let mut h = Harness::new();
    let exp = TokenExpiry {
        at: h.start + Duration::from_secs(2),
        unix_ms: 1,
    };
    h.reach(State::Active, Some(exp));
    h.now = exp.at;
    h.timeout(); // TokenExpiring; refresh deadline = exp + GRACE
    h.sent();
    assert!(h.command(Command::BeginDrain {
        retry_after: Duration::ZERO,
    }));
    h.sent();
    h.now += Duration::from_secs(3600);
    h.timeout();
    h.assert_closed_locally(Code::IdleTimeout, false);

    // Refresh and drain due, idle not: refresh wins.
    let mut h = Harness::new();
    h.reach(State::Active, Some(exp));
    h.now = exp.at;
    h.timeout();
    h.sent();
    assert!(h.command(Command::BeginDrain {
        retry_after: Duration::ZERO,
    }));
    h.sent();
    h.now = exp.at + GRACE.max(DRAIN);
    h.frame(Frame::Pong {
        id: 1,
        payload: Bytes::new(),
    });
    h.timeout();
    h.assert_closed_locally(Code::TokenExpired, false);

    // Drain and expiry due: drain wins, no TokenExpiring is sent.
    let mut h = Harness::new();
    let late = TokenExpiry {
        at: h.start + Duration::from_secs(5),
        unix_ms: 1,
    };
    h.reach(State::Draining, Some(late));
    h.now = h.start + Duration::from_secs(1) + DRAIN;
    h.timeout();
    h.assert_closed_locally(Code::GoingAway, false);
}

#[test]
fn exactly_one_closed_event_over_a_sessions_life() {
    let mut h = Harness::in_state(State::Active);
    let mut closed = 0;
    h.session.handle_decode_error(&Error::BadMagic { found: 1 });
    h.frame(Frame::Close {
        code: Code::Normal,
        message: Text::new(),
    });
    h.session.handle_transport_end(TransportEnd::Eof);
    h.command(Command::Close { code: Code::Normal });
    h.advance(IDLE * 2);
    h.timeout();
    for event in h.events() {
        if matches!(event, Event::Closed(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1);
    assert_eq!(
        h.session.close_reason(),
        Some(CloseReason::Local(Code::BadMagic))
    );
}

#[test]
fn every_documented_cell_has_a_test() {
    let spec = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"));
    let tests = include_str!("session_table.rs");
    let table = spec
        .split("## Session state table")
        .nth(1)
        .expect("PROTOCOL.md has a session state table");
    let mut ids = Vec::new();
    for line in table.lines() {
        let Some(rest) = line.strip_prefix("| ") else {
            continue;
        };
        let id = rest.split(' ').next().unwrap_or_default();
        let mut chars = id.chars();
        let is_id = matches!(chars.next(), Some('X' | 'A' | 'U' | 'V' | 'D'))
            && !id[1..].is_empty()
            && id[1..].chars().all(|c| c.is_ascii_digit());
        if is_id {
            ids.push(id.to_ascii_lowercase());
        }
    }
    assert!(
        ids.len() >= 40,
        "found only {} cell ids: {ids:?}",
        ids.len()
    );
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !tests.contains(&format!("fn cell_{id}_")))
        .collect();
    assert!(missing.is_empty(), "cells without a test: {missing:?}");
}

#[test]
fn cell_v22_a_valid_quality_report_is_reported_without_an_answer() {
    let mut h = Harness::in_state(State::Active);
    let mut report = QualityReport::new();
    let mut ws = TransportReport::new(ReportTransport::Ws);
    ws.record_connect(Some(30));
    ws.record_ping(Some(4));
    ws.record_ping(None);
    report.transports.push(ws);
    h.frame(quality_report(7, report.encode().unwrap()));
    assert_eq!(h.sent(), []);
    assert_eq!(h.events(), [Event::QualityReport { network: 2, report }]);
    assert_eq!(h.session.state(), State::Active);
}

#[test]
fn cell_v23_a_malformed_quality_report_is_an_error_and_the_session_goes_on() {
    for (body, kind) in [
        (&[2u8, 0][..], "unsupported report version"),
        (&[1, 0, 0][..], "after the last entry"),
        (&[][..], "truncated"),
    ] {
        let mut h = Harness::in_state(State::Active);
        h.frame(quality_report(8, Bytes::copy_from_slice(body)));
        match h.sent().as_slice() {
            [Frame::Error { id, code, message }] => {
                assert_eq!((*id, *code), (8, Code::MalformedReport));
                assert_eq!(code.as_u16(), 320);
                assert!(message.as_str().contains(kind), "{message:?}");
            }
            other => panic!("expected Error, got {other:?}"),
        }
        assert_eq!(h.events(), []);
        assert_eq!(h.session.state(), State::Active);
    }
}

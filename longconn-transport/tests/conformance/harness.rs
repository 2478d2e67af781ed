//! What every transport's run of the suite shares: the server under test, a minimal test
//! client over any `Connection`, and the `Fixture` trait a transport implements.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use longconn_core::client_session::login_answer;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::{
    ClientEvent, ClientSession, ClientSessionConfig, Code, Frame, Metadata, SessionConfig,
    SlowConsumerPolicy, TokenKey, TokenKeys, Transmit,
};
use longconn_server::{Router, Server, ServerConfig};

/// Every wait in the suite is bounded by this; a hang fails instead of blocking CI.
pub const STEP: Duration = Duration::from_secs(5);
pub const NODE_ID: u16 = 7;
pub const MAX_FRAME: usize = 16 * 1024;
pub const MAX_QUEUED: usize = 8;
pub const APP: &str = "conformance";

/// The session timers a run uses.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub heartbeat: Duration,
    pub idle: Duration,
    pub login: Duration,
    /// Heartbeats the keep-alive case sends, one per `heartbeat`: together they outlast
    /// `idle` by 5/3.
    pub beats: u32,
}

impl Timers {
    /// For runs on tokio's paused clock: their length costs no wall time (they stay
    /// below [`STEP`], which bounds every wait).
    pub const PAUSED: Timers = Timers {
        heartbeat: Duration::from_millis(200),
        idle: Duration::from_millis(600),
        login: Duration::from_millis(500),
        beats: 5,
    };
    /// For runs over real sockets on the wall clock: short, with slack (idle minus
    /// heartbeat) for a loaded machine.
    pub const WALL: Timers = Timers {
        heartbeat: Duration::from_millis(100),
        idle: Duration::from_millis(300),
        login: Duration::from_millis(150),
        beats: 5,
    };
}

/// A transport under test: starts listening on a server and opens client connections.
pub trait Fixture: Sized + Send + Sync + 'static {
    type Conn: Connection;
    /// The session timers of this transport's run.
    const TIMERS: Timers = Timers::WALL;
    fn start(server: &Server) -> impl Future<Output = Self> + Send;
    fn connect(&self) -> impl Future<Output = Self::Conn> + Send;
}

pub fn keys() -> TokenKeys {
    TokenKeys::new(TokenKey::new("test", b"conformance-secret-0123").unwrap())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid token for `device`, good for an hour.
pub fn token(device: &str) -> Bytes {
    Bytes::from(keys().mint(APP, device, unix_now() + 3600))
}

pub fn server(policy: SlowConsumerPolicy, timers: Timers) -> Server {
    let session = SessionConfig::builder()
        .max_frame_size(MAX_FRAME)
        .login_timeout(timers.login)
        .heartbeat_interval(timers.heartbeat)
        .idle_timeout(timers.idle)
        .drain_timeout(Duration::from_secs(3))
        .max_queued_pushes(MAX_QUEUED)
        .slow_consumer_policy(policy)
        .build()
        .unwrap();
    let config = ServerConfig::builder()
        .node_id(NODE_ID)
        .session(session)
        .shutdown_retry_after(Duration::from_millis(1500))
        .build()
        .unwrap();
    Server::new(config, Arc::new(keys()), Arc::new(Router::echo()))
}

/// A bare client: sends and receives frames, checks what arrives. No reconnects, no
/// heartbeats of its own.
pub struct TestClient<C: Connection> {
    reader: C::Reader,
    writer: C::Writer,
}

impl<C: Connection> TestClient<C> {
    pub fn new(conn: C) -> Self {
        let (reader, writer) = conn.split();
        TestClient { reader, writer }
    }

    pub async fn send(&mut self, frame: Frame) {
        self.writer.send(Transmit::Frame(frame)).unwrap();
        self.flush().await;
    }

    /// Sends bytes as they are: on a stream they continue the byte stream, on a message
    /// transport they are one message.
    pub async fn send_raw(&mut self, bytes: Bytes) {
        self.writer.send(Transmit::Encoded(bytes)).unwrap();
        self.flush().await;
    }

    async fn flush(&mut self) {
        tokio::time::timeout(STEP, self.writer.flush())
            .await
            .expect("flush timed out")
            .expect("flush failed");
    }

    /// The next frame; `None` at end of stream (or a reset after the server's close).
    pub async fn recv(&mut self) -> Option<Frame> {
        match tokio::time::timeout(STEP, self.reader.recv()).await {
            Err(_) => panic!("no frame within {STEP:?}"),
            Ok(Ok(frame)) => frame,
            Ok(Err(longconn_core::ConnectionError::Io(_))) => None,
            Ok(Err(err)) => panic!("client could not decode the server's frame: {err}"),
        }
    }

    pub async fn expect(&mut self) -> Frame {
        self.recv()
            .await
            .expect("connection ended, a frame was expected")
    }

    /// Expects `Close {code}` and then the end of the connection.
    pub async fn expect_close(&mut self, code: Code) {
        match self.expect().await {
            Frame::Close { code: got, .. } => assert_eq!(got, code, "close code"),
            other => panic!("expected Close({code:?}), got {other:?}"),
        }
        self.expect_end().await;
    }

    pub async fn expect_end(&mut self) {
        if let Some(frame) = self.recv().await {
            panic!("expected the connection to end, got {frame:?}");
        }
    }

    /// Logs in the way every longconn client does (through `ClientSession`, the SDK's
    /// state machine) and returns the gateway's answer, checked against the session's
    /// reading of it.
    pub async fn login(&mut self, device: &str, token: Bytes) -> Frame {
        let now = std::time::Instant::now();
        let mut session = ClientSession::new(ClientSessionConfig::new(APP, device), now, 0);
        session.connected(now);
        session.provide_token(now, token);
        while let Some(frame) = session.poll_transmit() {
            self.send(frame).await;
        }
        let answer = self.expect().await;
        session.handle_frame(now, answer.clone());
        let logged_in = std::iter::from_fn(|| session.poll_event())
            .any(|e| matches!(e, ClientEvent::LoggedIn { .. }));
        assert_eq!(
            logged_in,
            login_answer(&answer).is_ok(),
            "the session and the answer agree: {answer:?}"
        );
        answer
    }

    /// Logs in with a valid token and asserts the ack.
    pub async fn login_ok(&mut self, device: &str) -> u64 {
        let answer = self.login(device, token(device)).await;
        login_answer(&answer).unwrap_or_else(|code| panic!("expected LoginAck, got {code:?}"))
    }
}

/// The `Login` frame a client sends (`ClientSession::login_frame`), for cases that send
/// it by hand.
pub fn login_frame(device: &str, token: Bytes) -> Frame {
    ClientSession::login_frame(APP, device, token, Metadata::new())
}

pub fn push_frame(id: u32, payload: Bytes) -> Frame {
    Frame::Push {
        id,
        ack_required: false,
        business: 9,
        group: None,
        seq: Some(u64::from(id)),
        epoch: None,
        meta: Metadata::new(),
        payload,
    }
}

/// Polls `check` until it holds, for up to [`STEP`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

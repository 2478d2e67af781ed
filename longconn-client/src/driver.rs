//! The background task behind a [`crate::Client`]: a thin async loop over
//! [`ClientSession`], which decides everything (login, calls by id, heartbeats, token
//! refresh, when and whether to reconnect).
//!
//! The loop dials (through the transport crate's [`Dialer`], or an in-memory connector),
//! feeds the session what happened, and drains what it must do:
//!
//! ```text
//! loop by session state {
//!   Connecting: select { dial, commands, sleep_until(poll_timeout) }
//!   connected:  select { writer.flush, commands, reader.recv, sleep_until(poll_timeout),
//!                        token fetch }
//!               then poll_transmit -> writer, poll_event -> replies, pushes, state
//!   Waiting:    select { commands (refused by the session), sleep_until(poll_timeout) }
//!   Closed:     stop
//! }
//! ```
//!
//! The token provider runs as one more branch of the `select!`, never awaited inline, so
//! a slow provider does not hold up heartbeats, pushes or answers.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use longconn_core::connection::memory::MemoryConnection;
use longconn_core::connection::{Connection, FrameReader, FrameWriter};
use longconn_core::protocol::ReportTransport;
use longconn_core::{
    CallError, ClientEvent, ClientSession, ClientSessionConfig, ClientState, CloseReason, Code,
    ConnectionError, EndReason, Frame, Reconnect, StopReason, Transmit, TransportEnd,
};
use longconn_transport::ConnectFailure;
use longconn_transport::dial::{DialOptions, Dialed, Dialer, Scheme};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::bootstrap::Bootstrap;
use crate::client::{ClientCommand, ConnState, Listeners, Push, Quality, Response};
use crate::config::ClientConfig;
use crate::error::ClientError;

/// How long a closing connection may take to flush its last frames.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// A token fetch running beside the frame loop.
type TokenFetch = Pin<Box<dyn Future<Output = Result<Bytes, ClientError>> + Send>>;

/// Makes in-memory connections, for [`crate::Client::connect_in_memory`].
pub(crate) type MemoryConnector = Box<
    dyn FnMut() -> Pin<Box<dyn Future<Output = Result<MemoryConnection, ClientError>> + Send>>
        + Send,
>;

/// Where connections come from.
pub(crate) enum Connector {
    /// The endpoint URL, through the transport crate's dialer (its TLS config and QUIC
    /// endpoint are kept across reconnects).
    Dial(Dialer),
    /// In-process connections.
    Memory(MemoryConnector),
}

impl Connector {
    pub(crate) fn dial(config: &ClientConfig) -> Connector {
        Connector::Dial(Dialer::new(DialOptions {
            max_frame_size: config.max_frame_size,
            local_ip: config.local_ip,
            trust: config.trust.clone(),
            server_name: None,
            connect_timeout: config.connect_timeout,
            dead_peer_timeout: config.dead_peer_timeout,
        }))
    }
}

/// A dial in progress: the connection and, when bootstrapped, the index of the
/// endpoint that answered.
type Dialing = Pin<Box<dyn Future<Output = Result<(Conn, Option<usize>), ConnectFailure>> + Send>>;

/// How long to wait before retrying a failed token renewal.
const RENEW_RETRY: Duration = Duration::from_secs(30);

/// A connection of any kind the client makes.
enum Conn {
    Dialed(Dialed),
    Memory(MemoryConnection),
}

/// What a call waits on, by the session's call id.
enum Reply {
    Request(oneshot::Sender<Result<Response, ClientError>>),
    Group(oneshot::Sender<Result<(), ClientError>>),
}

impl Reply {
    fn fail(self, error: ClientError) {
        match self {
            Reply::Request(tx) => drop(tx.send(Err(error))),
            Reply::Group(tx) => drop(tx.send(Err(error))),
        }
    }
}

/// The application's side of the client, shared with the [`crate::Client`] handle.
pub(crate) struct Shared {
    /// Each group's last rejoin outcome.
    pub(crate) rejoins: watch::Sender<crate::Rejoins>,
    pub(crate) state: watch::Sender<ConnState>,
    pub(crate) pushes: mpsc::Sender<Push>,
    pub(crate) listeners: Listeners,
    pub(crate) quality: Arc<Mutex<Quality>>,
    /// Why the client stopped, as a typed error (`AuthRejected` for a refused login).
    pub(crate) stopped: Arc<Mutex<Option<ClientError>>>,
    /// The control layer's last access answer.
    pub(crate) access: Arc<Mutex<Option<crate::AccessAnswer>>>,
    /// Failed connection attempts since the last login.
    pub(crate) failures: crate::failures::Failures,
}

struct Driver {
    config: ClientConfig,
    session: ClientSession,
    commands: mpsc::Receiver<ClientCommand>,
    shared: Shared,
    calls: HashMap<u32, Reply>,
    token: Option<TokenFetch>,
    /// When the current attempt started (for the connect latency).
    attempt_started: Instant,
    /// Why the last connection ended, for the final reason.
    last_end: Option<EndReason>,
    /// The control layer, when the client bootstraps from one.
    boot: Option<Arc<Bootstrap>>,
    /// The bootstrap endpoint of the current connection.
    endpoint_index: Option<usize>,
    /// Whether the current connection logged in.
    logged_in_here: bool,
    /// A token renewal (control layer) running beside the frame loop.
    renewal: Option<TokenFetch>,
    /// Earliest time for the next renewal after a failed one.
    renew_retry_at: Option<Instant>,
    /// The permanent failure the client stopped on.
    permanent: Option<ConnectFailure>,
}

pub(crate) async fn run(
    config: ClientConfig,
    connector: Connector,
    mut commands: mpsc::Receiver<ClientCommand>,
    shared: Shared,
) {
    let mut session_config = ClientSessionConfig::new(config.app.as_str(), config.device.as_str());
    session_config.connect_timeout = config.connect_timeout;
    session_config.login_timeout = config.connect_timeout;
    session_config.backoff = config.backoff;
    session_config.dead_peer_timeout = config.dead_peer_timeout;
    session_config.quality_report_interval = config.quality_report_interval;
    session_config.network = config.network;
    session_config.transport = report_transport(config.endpoint.scheme);
    let mut held = Vec::new();
    let boot = match &config.control {
        Some(settings) => {
            let boot = Arc::new(Bootstrap::new(
                settings.clone(),
                &config.app,
                &config.device,
                config.connect_timeout,
                &config.trust,
            ));
            if !first_access(&boot, &config, &mut commands, &mut held, &shared).await {
                return;
            }
            if let Some(policy) = boot.policy() {
                session_config.max_heartbeat = policy.max_heartbeat;
                session_config.backoff.base = policy.backoff_base;
                session_config.backoff.cap = policy.backoff_cap.max(policy.backoff_base);
            }
            Some(boot)
        }
        None => None,
    };
    let session = ClientSession::new(session_config, now(), fastrand::u64(..));
    let mut driver = Driver {
        config,
        session,
        commands,
        shared,
        calls: HashMap::new(),
        token: None,
        attempt_started: Instant::now(),
        last_end: None,
        boot,
        endpoint_index: None,
        logged_in_here: false,
        renewal: None,
        renew_retry_at: None,
        permanent: None,
    };
    driver.publish_answer();
    for command in held {
        driver.command(Some(command));
    }
    driver.run(connector).await;
}

/// Asks the control layer until it answers, with the config's backoff between tries;
/// commands meanwhile are held in `held` (a close stops at once). `false` when the
/// client stopped (closed, or out of attempts).
async fn first_access(
    boot: &Bootstrap,
    config: &ClientConfig,
    commands: &mut mpsc::Receiver<ClientCommand>,
    held: &mut Vec<ClientCommand>,
    shared: &Shared,
) -> bool {
    let mut attempt = 0u32;
    loop {
        let asking = boot.access();
        tokio::pin!(asking);
        let failed = loop {
            tokio::select! {
                answer = &mut asking => match answer {
                    Ok(_) => return true,
                    Err(err) => break err,
                },
                command = commands.recv() => match command {
                    Some(ClientCommand::Close) | None => {
                        stop_before_start(held, shared, "closed by the application".into(), None);
                        return false;
                    }
                    Some(command) => held.push(command),
                },
            }
        };
        debug!(%failed, attempt, "control layer did not answer");
        if config
            .backoff
            .max_attempts
            .is_some_and(|max| attempt + 1 >= max)
        {
            let reason = format!("gave up after {} attempts: {failed}", attempt + 1);
            stop_before_start(held, shared, reason, Some(failed));
            return false;
        }
        let delay = config
            .backoff
            .delay(attempt, fastrand::u64(..))
            .max(boot.retry_after().unwrap_or_default());
        attempt += 1;
        shared
            .state
            .send_replace(ConnState::Reconnecting { attempt, delay });
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                command = commands.recv() => match command {
                    Some(ClientCommand::Close) | None => {
                        stop_before_start(held, shared, "closed by the application".into(), None);
                        return false;
                    }
                    Some(command) => held.push(command),
                },
            }
        }
        shared.state.send_replace(ConnState::Connecting { attempt });
    }
}

/// The client stops before its first connection: held calls fail, the state says why.
fn stop_before_start(
    held: &mut Vec<ClientCommand>,
    shared: &Shared,
    reason: String,
    error: Option<ClientError>,
) {
    for command in held.drain(..) {
        refuse(command, ClientError::Closed(reason.clone()));
    }
    *shared.stopped.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(error.unwrap_or_else(|| ClientError::Closed(reason.clone())));
    shared
        .state
        .send_replace(ConnState::Disconnected { reason });
}

/// The session's clock: tokio's, so a paused test clock drives it too.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The running token fetch's result.
///
/// # Cancel safety
/// Cancel safe: the fetch stays in `slot` and goes on at the next call.
async fn fetched(slot: &mut Option<TokenFetch>) -> Result<Bytes, ClientError> {
    match slot.as_mut() {
        Some(fetch) => fetch.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until the session's next deadline (forever when it has none).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(&mut self, mut connector: Connector) {
        loop {
            match self.session.state() {
                ClientState::Connecting => {
                    if let Some(conn) = self.dial(&mut connector).await {
                        match conn {
                            Conn::Memory(c) => self.serve(c).await,
                            Conn::Dialed(Dialed::Tcp(c)) => self.serve(c).await,
                            Conn::Dialed(Dialed::Tls(c)) => self.serve(c).await,
                            Conn::Dialed(Dialed::Ws(c)) => self.serve(*c).await,
                            Conn::Dialed(Dialed::Quic(c)) => self.serve(c).await,
                            Conn::Dialed(other) => {
                                debug!(kind = ?other.kind(), "transport without a driver");
                                self.dial_failed(ConnectFailure::Other(format!(
                                    "no driver for {:?} connections",
                                    other.kind()
                                )));
                                self.drain_events();
                            }
                        }
                    }
                }
                ClientState::Waiting => self.wait().await,
                ClientState::Closed => break,
                // `serve` returns only once the connection has ended.
                ClientState::LoggingIn | ClientState::LoggedIn | ClientState::Draining => {
                    self.session
                        .handle_transport_end(now(), TransportEnd::Failed);
                    self.drain_events();
                }
            }
        }
        // Whatever arrives from now on is refused.
        self.commands.close();
        while let Some(command) = self.commands.recv().await {
            refuse(command, ClientError::Closed("client stopped".into()));
        }
    }

    /// Dials while answering commands and the session's deadlines. `None` when the
    /// attempt ended without a connection (the session has decided what comes next).
    async fn dial(&mut self, connector: &mut Connector) -> Option<Conn> {
        self.attempt_started = Instant::now();
        bump(&self.shared.quality, |q| q.connect_attempts += 1);
        self.endpoint_index = None;
        self.logged_in_here = false;
        let dialing: Dialing = match connector {
            Connector::Dial(dialer) => match self.boot.clone() {
                Some(boot) => {
                    let dialer = dialer.clone();
                    Box::pin(async move {
                        if boot.needs_access() {
                            boot.access()
                                .await
                                .map_err(|e| ConnectFailure::Other(e.to_string()))?;
                        }
                        let mut last = None;
                        for (i, endpoint) in boot.walk() {
                            match dialer.connect(&endpoint).await {
                                Ok(conn) => {
                                    boot.connected(i);
                                    return Ok((Conn::Dialed(conn), Some(i)));
                                }
                                Err(err) => {
                                    debug!(%err, endpoint = i, "endpoint failed, trying the next");
                                    boot.failed(i);
                                    last = Some(err.connect_failure());
                                }
                            }
                        }
                        Err(last.unwrap_or_else(|| {
                            ConnectFailure::Other("the access answer lists no endpoint".into())
                        }))
                    })
                }
                None => {
                    let dialer = dialer.clone();
                    let endpoint = self.config.endpoint.clone();
                    Box::pin(async move {
                        dialer
                            .connect(&endpoint)
                            .await
                            .map(|c| (Conn::Dialed(c), None))
                            .map_err(|e| e.connect_failure())
                    })
                }
            },
            Connector::Memory(make) => {
                let connecting = make();
                Box::pin(async move {
                    connecting
                        .await
                        .map(|c| (Conn::Memory(c), None))
                        .map_err(|e| ConnectFailure::Other(e.to_string()))
                })
            }
        };
        tokio::pin!(dialing);
        loop {
            tokio::select! {
                dialed = &mut dialing => {
                    self.publish_answer();
                    match dialed {
                        Ok((conn, index)) => {
                            self.endpoint_index = index;
                            return Some(conn);
                        }
                        Err(why) => {
                            debug!(%why, "dial failed");
                            self.dial_failed(why);
                        }
                    }
                }
                command = self.commands.recv() => self.command(command),
                () = sleep_until(self.session.poll_timeout()) => {
                    self.session.handle_timeout(now());
                    if self.session.state() != ClientState::Connecting {
                        // The session's connect deadline passed before the dial ended.
                        self.shared.failures.record(ConnectFailure::Timeout);
                    }
                }
            }
            self.drain_events();
            if self.session.state() != ClientState::Connecting {
                return None;
            }
        }
    }

    /// An attempt failed with `failure`: recorded; a permanent one stops the client
    /// (unless the config says to retry those too), any other goes to the session,
    /// which retries after its backoff.
    fn dial_failed(&mut self, failure: ConnectFailure) {
        self.shared.failures.record(failure.clone());
        if failure.is_permanent() && !self.config.retry_permanent_failures {
            self.permanent = Some(failure);
            self.session.close(now());
        } else {
            self.session.dial_failed(now());
        }
    }

    /// Between connections: calls are refused by the session until its reconnect
    /// deadline moves it back to `Connecting`.
    async fn wait(&mut self) {
        while self.session.state() == ClientState::Waiting {
            tokio::select! {
                command = self.commands.recv() => self.command(command),
                () = sleep_until(self.session.poll_timeout()) => self.session.handle_timeout(now()),
            }
            self.drain_events();
        }
    }

    /// Serves one connection until the session ends it.
    async fn serve<C: Connection>(&mut self, conn: C) {
        let (mut reader, mut writer) = conn.split();
        self.session.connected(now());
        loop {
            self.drain_events();
            while let Some(frame) = self.session.poll_transmit() {
                self.send(&mut writer, frame);
            }
            if !self.session.is_connected() {
                let reason = match &self.last_end {
                    Some(EndReason::ClosedByApp) => CloseReason::Local(Code::Normal),
                    Some(EndReason::ProtocolError(code)) => CloseReason::Local(*code),
                    Some(EndReason::TransportEnded) => CloseReason::TransportEnded,
                    Some(EndReason::TransportFailed) => CloseReason::TransportFailed,
                    _ => CloseReason::Local(Code::Normal),
                };
                let _ = tokio::time::timeout(CLOSE_LINGER, writer.close(reason)).await;
                if let (Some(boot), Some(i), false) =
                    (&self.boot, self.endpoint_index, self.logged_in_here)
                {
                    // Connected but never logged in: move on to the next endpoint.
                    boot.failed(i);
                }
                self.renewal = None;
                return;
            }
            let deadline = self.session.poll_timeout();
            let renew_at = self.renew_at();
            let renewing = self.renewal.is_some();
            let renewal = &mut self.renewal;
            let pending_writes = writer.has_pending_writes();
            let fetching = self.token.is_some();
            let fetch = &mut self.token;
            tokio::select! {
                flushed = writer.flush(), if pending_writes => {
                    if let Err(err) = flushed {
                        debug!(%err, "write failed");
                        self.session.handle_transport_end(now(), TransportEnd::Failed);
                    }
                }
                command = self.commands.recv() => self.command(command),
                received = reader.recv() => match received {
                    Ok(Some(frame)) => self.session.handle_frame(now(), frame),
                    Ok(None) => self.session.handle_transport_end(now(), TransportEnd::Eof),
                    Err(ConnectionError::Decode(err)) => self.session.handle_decode_error(now(), &err),
                    Err(err) => {
                        debug!(%err, "transport failed");
                        self.session.handle_transport_end(now(), TransportEnd::Failed);
                    }
                },
                () = sleep_until(deadline) => self.session.handle_timeout(now()),
                () = sleep_until(renew_at.map(Instant::into_std)), if renew_at.is_some() => {
                    let boot = self.boot.clone();
                    self.renewal = boot.map(|boot| -> TokenFetch {
                        Box::pin(async move { boot.renew().await })
                    });
                }
                renewed = fetched(renewal), if renewing => {
                    self.renewal = None;
                    match renewed {
                        Ok(token) => {
                            self.renew_retry_at = None;
                            self.session.refresh_token(now(), token);
                        }
                        Err(err) => {
                            debug!(%err, "token renewal failed; retrying later");
                            self.renew_retry_at = Some(Instant::now() + RENEW_RETRY);
                        }
                    }
                }
                token = fetched(fetch), if fetching => {
                    self.token = None;
                    match token {
                        Ok(token) => {
                            self.session.provide_token(now(), token);
                        }
                        Err(err) => {
                            debug!(%err, "token provider failed");
                            self.session.token_failed(now());
                        }
                    }
                }
            }
        }
    }

    /// Shows the bootstrap's answer to the application ([`crate::Client::access_answer`])
    /// and applies its heartbeat and reconnect policy to the session (every answer).
    fn publish_answer(&mut self) {
        if let Some(boot) = &self.boot {
            *self.shared.access.lock().unwrap_or_else(|p| p.into_inner()) = boot.answer();
            if let Some(policy) = boot.policy() {
                self.session.set_policy(now(), policy);
            }
        }
    }

    /// When the next in-band token renewal is due (control layer only; while logged
    /// in and no renewal is running).
    fn renew_at(&self) -> Option<Instant> {
        let boot = self.boot.as_ref()?;
        if self.renewal.is_some() || !self.logged_in_here {
            return None;
        }
        let due = boot.renew_at()?;
        Some(match self.renew_retry_at {
            Some(retry) => due.max(retry),
            None => due,
        })
    }

    /// Buffers `frame`; a call whose frame cannot be encoded (too large) fails at once.
    fn send<W: FrameWriter>(&mut self, writer: &mut W, frame: Frame) {
        let call = match &frame {
            Frame::Request { id, .. }
            | Frame::JoinGroup { id, .. }
            | Frame::LeaveGroup { id, .. } => Some(*id),
            _ => None,
        };
        if let Err(err) = writer.send(Transmit::Frame(frame)) {
            debug!(%err, "frame not sent");
            if let Some(reply) = call.and_then(|id| self.calls.remove(&id)) {
                reply.fail(ClientError::Transport(err.to_string()));
            }
        }
    }

    fn command(&mut self, command: Option<ClientCommand>) {
        let now = now();
        let Some(command) = command else {
            // Every handle is gone.
            self.session.close(now);
            return;
        };
        let (result, reply) = match command {
            ClientCommand::Close => {
                self.session.close(now);
                return;
            }
            ClientCommand::Request {
                business,
                meta,
                payload,
                timeout,
                reply,
            } => (
                self.session
                    .request(now, business, meta, payload, Some(timeout)),
                Reply::Request(reply),
            ),
            ClientCommand::Group {
                group,
                join,
                timeout,
                reply,
            } => (
                if join {
                    self.session.join(now, &group, Some(timeout))
                } else {
                    self.session.leave(now, &group, Some(timeout))
                },
                Reply::Group(reply),
            ),
        };
        match result {
            Ok(id) => {
                self.calls.insert(id, reply);
            }
            Err(CallError::NotConnected) => reply.fail(ClientError::NotConnected),
            Err(CallError::Stopped) => reply.fail(ClientError::Closed("client stopped".into())),
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.event(event);
        }
        let stats = self.session.stats();
        bump(&self.shared.quality, |q| {
            q.pings_sent = stats.pings_sent;
            q.pongs_received = stats.pongs_received;
            q.last_rtt = stats.last_rtt;
        });
    }

    fn event(&mut self, event: ClientEvent) {
        match event {
            ClientEvent::StateChanged(ClientState::Connecting) => {
                self.shared.state.send_replace(ConnState::Connecting {
                    attempt: self.session.attempt(),
                });
            }
            ClientEvent::StateChanged(_) => {}
            ClientEvent::TokenNeeded => {
                self.token = Some(match self.boot.clone() {
                    Some(boot) => Box::pin(async move { boot.token().await }),
                    None => {
                        let tokens = self.config.tokens.clone();
                        Box::pin(async move { tokens.token().await })
                    }
                });
            }
            ClientEvent::LoggedIn { conn_id, .. } => {
                self.logged_in_here = true;
                self.shared.failures.clear();
                if let (Some(boot), Some(i)) = (&self.boot, self.endpoint_index) {
                    boot.logged_in(i);
                }
                let latency = self.attempt_started.elapsed();
                bump(&self.shared.quality, |q| {
                    q.connect_successes += 1;
                    q.last_connect_latency = Some(latency);
                });
                self.shared
                    .state
                    .send_replace(ConnState::Connected { conn_id });
            }
            ClientEvent::Response {
                id,
                business,
                meta,
                payload,
            } => {
                if let Some(Reply::Request(tx)) = self.calls.remove(&id) {
                    let _ = tx.send(Ok(Response {
                        business,
                        meta,
                        payload,
                    }));
                }
            }
            ClientEvent::GroupAck { id, .. } => {
                if let Some(Reply::Group(tx)) = self.calls.remove(&id) {
                    let _ = tx.send(Ok(()));
                }
            }
            ClientEvent::Failed { id, code, message } => {
                if let Some(reply) = self.calls.remove(&id) {
                    reply.fail(ClientError::Failed {
                        code,
                        message: message.as_str().to_owned(),
                    });
                }
            }
            ClientEvent::TimedOut { id } => {
                if let Some(reply) = self.calls.remove(&id) {
                    reply.fail(ClientError::Timeout);
                }
            }
            ClientEvent::Abandoned { id } => {
                if let Some(reply) = self.calls.remove(&id) {
                    reply.fail(ClientError::NotConnected);
                }
            }
            ClientEvent::Rejoined { group, recovered } => {
                debug!(group = group.as_str(), recovered, "rejoined");
                self.shared.rejoins.send_modify(|rejoins| {
                    let entry = rejoins
                        .entry(group.as_str().to_owned())
                        .or_insert(crate::Rejoin {
                            recovered,
                            count: 0,
                        });
                    entry.recovered = recovered;
                    entry.count += 1;
                });
            }
            ClientEvent::RejoinFailed { group, code } => {
                debug!(group = group.as_str(), code = code.name(), "rejoin refused");
            }
            ClientEvent::Push {
                business,
                group,
                seq,
                epoch,
                meta,
                payload,
            } => self.deliver(Push {
                business,
                group,
                seq,
                epoch,
                meta,
                payload,
            }),
            ClientEvent::Ended { reason, reconnect } => {
                debug!(?reason, ?reconnect, "connection ended");
                if !self.logged_in_here
                    && !matches!(
                        reason,
                        EndReason::DialFailed | EndReason::ClosedByApp | EndReason::LoginRefused(_)
                    )
                {
                    // Connected, but the login was never answered.
                    self.shared
                        .failures
                        .record(ConnectFailure::Ended(format!("{reason:?}")));
                }
                if reason == EndReason::ClosedByGateway(Code::TryLater) {
                    bump(&self.shared.quality, |q| q.try_later_closes += 1);
                }
                // A fetch for the ended connection is of no use to the next one.
                self.token = None;
                match reconnect {
                    Reconnect::After(delay) => {
                        self.shared.state.send_replace(ConnState::Reconnecting {
                            attempt: self.session.attempt(),
                            delay,
                        });
                    }
                    Reconnect::Never(stop) => {
                        let (error, reason) = match (&self.permanent, &stop) {
                            (Some(failure), StopReason::ClosedByApp) => {
                                let reason = format!("stopped on a permanent failure: {failure}");
                                (self.shared.failures.unreachable(), reason)
                            }
                            (_, StopReason::GaveUp { .. }) => {
                                let (error, reason) = stopped(stop, &reason);
                                (self.shared.failures.unreachable().or(Some(error)), reason)
                            }
                            _ => {
                                let (error, reason) = stopped(stop, &reason);
                                (Some(error), reason)
                            }
                        };
                        let error = error.unwrap_or_else(|| ClientError::Closed(reason.clone()));
                        *self
                            .shared
                            .stopped
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = Some(error);
                        self.shared
                            .state
                            .send_replace(ConnState::Disconnected { reason });
                    }
                }
                self.last_end = Some(reason);
            }
        }
    }

    /// Hands a push to the config's push handler, or its business's listener, or the
    /// general stream.
    fn deliver(&self, push: Push) {
        if let Some(handler) = &self.config.on_push {
            handler(push);
            return;
        }
        let listener = self
            .shared
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&push.business)
            .filter(|tx| !tx.is_closed())
            .cloned();
        let sent = match listener {
            Some(tx) => tx.try_send(push).is_ok(),
            None => self.shared.pushes.try_send(push).is_ok(),
        };
        if !sent {
            bump(&self.shared.quality, |q| q.pushes_dropped += 1);
        }
    }
}

/// The typed error and the state's reason for a client that stopped.
fn stopped(stop: StopReason, last: &EndReason) -> (ClientError, String) {
    match stop {
        StopReason::ClosedByApp => {
            let reason = "closed by the application".to_owned();
            (ClientError::Closed(reason.clone()), reason)
        }
        StopReason::Kicked(code) => {
            let reason = format!("kicked by the gateway: {}", code.name());
            (ClientError::Closed(reason.clone()), reason)
        }
        StopReason::AuthRejected(code) => (
            ClientError::AuthRejected(code),
            format!("login refused: {}", code.name()),
        ),
        StopReason::GaveUp { attempts } => {
            let reason = format!("gave up after {attempts} attempts: {last:?}");
            (ClientError::Closed(reason.clone()), reason)
        }
    }
}

fn refuse(command: ClientCommand, error: ClientError) {
    match command {
        ClientCommand::Request { reply, .. } => drop(reply.send(Err(error))),
        ClientCommand::Group { reply, .. } => drop(reply.send(Err(error))),
        ClientCommand::Close => {}
    }
}

/// The quality report transport of a dial scheme.
fn report_transport(scheme: Scheme) -> ReportTransport {
    match scheme {
        Scheme::Tcp => ReportTransport::Tcp,
        Scheme::Tls => ReportTransport::Tls,
        Scheme::Ws => ReportTransport::Ws,
        Scheme::Wss => ReportTransport::Wss,
        Scheme::Quic => ReportTransport::Quic,
    }
}

fn bump(quality: &Mutex<Quality>, f: impl FnOnce(&mut Quality)) {
    f(&mut quality.lock().unwrap_or_else(|p| p.into_inner()));
}

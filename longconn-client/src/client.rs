//! [`Client`]: the handle business code holds. It talks to a background task (the
//! driver, in the private `driver` module) that owns the connection and keeps it alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use longconn_core::{Metadata, Text};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::ClientConfig;
use crate::error::ClientError;

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Connecting and logging in (attempt counts from 0 after each success).
    Connecting {
        /// Attempts in a row so far.
        attempt: u32,
    },
    /// Logged in.
    Connected {
        /// The gateway's id for this connection.
        conn_id: u64,
    },
    /// Waiting before the next attempt.
    Reconnecting {
        /// The attempt that comes next.
        attempt: u32,
        /// How long the client waits first.
        delay: Duration,
    },
    /// Stopped for good; the reason says why (closed by the application, replaced by
    /// another login of the same device, kicked, out of attempts).
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// A successful answer to [`Client::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Business id.
    pub business: u32,
    /// Response metadata.
    pub meta: Metadata,
    /// Response payload.
    pub payload: Bytes,
}

/// A push from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Business id.
    pub business: u32,
    /// The group it was sent to, if any (a slice of the received frame: no copy).
    pub group: Option<Text>,
    /// The group's sequence number, if any.
    pub seq: Option<u64>,
    /// The epoch of the group's log: `seq` values compare only within one epoch.
    pub epoch: Option<u64>,
    /// Metadata.
    pub meta: Metadata,
    /// Payload.
    pub payload: Bytes,
}

/// Connection quality as the client measured it, the figures the source design uses to
/// compare transports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quality {
    /// Connect-and-login attempts.
    pub connect_attempts: u64,
    /// Attempts that ended logged in.
    pub connect_successes: u64,
    /// Time from the start of the last successful attempt to its `LoginAck`.
    pub last_connect_latency: Option<Duration>,
    /// Heartbeat pings sent.
    pub pings_sent: u64,
    /// Pongs received for them.
    pub pongs_received: u64,
    /// Round trip of the last answered ping.
    pub last_rtt: Option<Duration>,
    /// Pushes dropped because the application did not take them (the push channel was
    /// full).
    pub pushes_dropped: u64,
    /// Connections the gateway refused with `Close {try_later}` (over its accept rate);
    /// the client waited the delay it named (plus jitter) before the next attempt.
    pub try_later_closes: u64,
}

pub(crate) enum ClientCommand {
    Request {
        business: u32,
        meta: Metadata,
        payload: Bytes,
        timeout: Duration,
        reply: oneshot::Sender<Result<Response, ClientError>>,
    },
    Group {
        group: String,
        join: bool,
        timeout: Duration,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Close,
}

/// Pushes waiting for the application before new ones are dropped (and counted).
pub(crate) const PUSH_BUFFER: usize = 1024;

/// Per-business push listeners, shared by the handle and the driver.
pub(crate) type Listeners = Arc<Mutex<HashMap<u32, mpsc::Sender<Push>>>>;

/// A connection to a longconn gateway that keeps itself alive: it logs in, sends
/// heartbeats, answers token refreshes, and reconnects with jittered backoff.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Client {
    commands: mpsc::Sender<ClientCommand>,
    state: watch::Receiver<ConnState>,
    pushes: Mutex<Option<mpsc::Receiver<Push>>>,
    quality: Arc<Mutex<Quality>>,
    listeners: Listeners,
    stopped: Arc<Mutex<Option<ClientError>>>,
    access: Arc<Mutex<Option<crate::AccessAnswer>>>,
    request_timeout: Duration,
    rejoins: watch::Receiver<crate::Rejoins>,
    failures: crate::failures::Failures,
}

impl std::fmt::Debug for ClientCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientCommand::Request { .. } => "Request",
            ClientCommand::Group { .. } => "Group",
            ClientCommand::Close => "Close",
        })
    }
}

impl Client {
    /// Starts connecting in the background and returns at once; watch
    /// [`Client::state`] or call [`Client::wait_connected`]. Must be called inside a
    /// tokio runtime.
    pub fn connect(config: ClientConfig) -> Client {
        let connector = crate::driver::Connector::dial(&config);
        Client::start(config, connector)
    }

    /// [`Client::connect`] over in-process connections: `connect` is called for every
    /// attempt and gives one side of a [`longconn_core::connection::memory::pair`]
    /// whose other side a server serves (`Server::serve_connection`). The config's
    /// endpoint, trust and source IP are not used. Tests use it to run the client on a
    /// paused clock; embedders to attach a client to a gateway in the same process.
    pub fn connect_in_memory<F, Fut>(config: ClientConfig, mut connect: F) -> Client
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<
                Output = Result<longconn_core::connection::memory::MemoryConnection, ClientError>,
            > + Send
            + 'static,
    {
        let connector = crate::driver::Connector::Memory(Box::new(move || Box::pin(connect())));
        Client::start(config, connector)
    }

    fn start(config: ClientConfig, connector: crate::driver::Connector) -> Client {
        let (commands, command_rx) = mpsc::channel(256);
        let (state_tx, state) = watch::channel(ConnState::Connecting { attempt: 0 });
        let (push_tx, push_rx) = mpsc::channel(PUSH_BUFFER);
        let quality = Arc::new(Mutex::new(Quality::default()));
        let listeners = Listeners::default();
        let stopped = Arc::new(Mutex::new(None));
        let access = Arc::new(Mutex::new(None));
        let request_timeout = config.request_timeout;
        let (rejoins_tx, rejoins) = watch::channel(crate::Rejoins::new());
        let failures = crate::failures::Failures::default();
        let shared = crate::driver::Shared {
            rejoins: rejoins_tx,
            state: state_tx,
            pushes: push_tx,
            listeners: listeners.clone(),
            quality: quality.clone(),
            stopped: stopped.clone(),
            access: access.clone(),
            failures: failures.clone(),
        };
        tokio::spawn(crate::driver::run(config, connector, command_rx, shared));
        Client {
            commands,
            state,
            pushes: Mutex::new(Some(push_rx)),
            quality,
            listeners,
            stopped,
            access,
            request_timeout,
            rejoins,
            failures,
        }
    }

    /// Each joined group's last rejoin after a reconnect: whether the pushes missed
    /// meanwhile were recovered (they arrive next, in order) or must be resynced. A
    /// watch: `changed()` wakes after each rejoin. See [`crate::recovery`].
    pub fn rejoins(&self) -> watch::Receiver<crate::Rejoins> {
        self.rejoins.clone()
    }

    /// Whether `group`'s last rejoin recovered what was missed; `None` before its first
    /// rejoin.
    pub fn recovered(&self, group: &str) -> Option<bool> {
        self.rejoins.borrow().get(group).map(|r| r.recovered)
    }

    /// The connection state, as a watch: `borrow()` for now, `changed()` to wait.
    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.state.clone()
    }

    /// Waits until logged in; returns the connection id.
    ///
    /// # Errors
    /// [`ClientError::AuthRejected`] when the gateway refused the login for good
    /// (`invalid_token`, `forbidden`, or `expired_token` again with a fresh token);
    /// [`ClientError::Unreachable`] when it stopped on a permanent connect failure (a
    /// WebSocket upgrade answered 4xx) or ran out of attempts, and also when `timeout`
    /// passes after failed attempts (naming the last one's cause; the client goes on
    /// retrying); [`ClientError::Closed`] when the client stopped otherwise;
    /// [`ClientError::Timeout`] when `timeout` passed with no failure recorded (an
    /// attempt still under way).
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches the state.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<u64, ClientError> {
        let mut state = self.state.clone();
        let wait = async {
            loop {
                match &*state.borrow_and_update() {
                    ConnState::Connected { conn_id } => return Ok(*conn_id),
                    ConnState::Disconnected { reason } => {
                        return Err(self
                            .stop_error()
                            .unwrap_or_else(|| ClientError::Closed(reason.clone())));
                    }
                    _ => {}
                }
                if state.changed().await.is_err() {
                    return Err(ClientError::Closed("client dropped".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.failures.unreachable().unwrap_or(ClientError::Timeout))?
    }

    /// Why the last connection attempt failed (refused port, TLS failure, WebSocket
    /// path answered 404, timeout, ...), while the client goes on retrying; `None`
    /// before the first failure and again after each successful login. Set as soon
    /// as the attempt fails, long before [`Client::wait_connected`] times out.
    pub fn last_connect_error(&self) -> Option<crate::ConnectFailure> {
        self.failures.last()
    }

    /// Why the client stopped, once it has: [`ClientError::AuthRejected`] for a login
    /// refused for good, [`ClientError::Unreachable`] for a permanent connect failure
    /// or running out of attempts, [`ClientError::Closed`] otherwise. `None` while it
    /// runs.
    pub fn stop_error(&self) -> Option<ClientError> {
        self.stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The control layer's last access answer (bucket, flags, endpoints, policy) when
    /// the client bootstraps from one ([`ClientConfig::from_control`]); `None` before
    /// the first answer and for clients with a fixed endpoint.
    pub fn access_answer(&self) -> Option<crate::AccessAnswer> {
        self.access
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sends a request to the backend `business` and waits for its answer, up to the
    /// configured request timeout.
    pub async fn request(&self, business: u32, payload: Bytes) -> Result<Response, ClientError> {
        self.request_with(business, Metadata::new(), payload, self.request_timeout)
            .await
    }

    /// [`Client::request`] with metadata and a timeout of its own.
    pub async fn request_with(
        &self,
        business: u32,
        meta: Metadata,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(ClientCommand::Request {
            business,
            meta,
            payload,
            timeout,
            reply,
        })
        .await?;
        wait(answer, timeout).await
    }

    /// Joins `group`; the gateway's `JoinAck` completes it. Joined groups are joined
    /// again after every reconnect.
    pub async fn join(&self, group: &str) -> Result<(), ClientError> {
        self.group(group, true).await
    }

    /// Leaves `group`.
    pub async fn leave(&self, group: &str) -> Result<(), ClientError> {
        self.group(group, false).await
    }

    async fn group(&self, group: &str, join: bool) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send(ClientCommand::Group {
            group: group.to_owned(),
            join,
            timeout: self.request_timeout,
            reply,
        })
        .await?;
        wait(answer, self.request_timeout).await
    }

    /// The stream of pushes. It can be taken once; later calls return `None`. Pushes
    /// that find it full (1,024 waiting) are dropped and counted in
    /// [`Quality::pushes_dropped`]; pushes that ask for an acknowledgement are
    /// acknowledged when they are received.
    pub fn pushes(&self) -> Option<mpsc::Receiver<Push>> {
        self.pushes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// A stream of the pushes for one business id. Those pushes go here instead of to
    /// [`Client::pushes`]; subscribing again replaces the previous stream (which then
    /// ends). Dropping the receiver sends that business's pushes to the general stream
    /// again.
    pub fn subscribe(&self, business: u32) -> mpsc::Receiver<Push> {
        let (tx, rx) = mpsc::channel(PUSH_BUFFER);
        self.listeners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(business, tx);
        rx
    }

    /// What the client has measured so far.
    pub fn quality(&self) -> Quality {
        self.quality
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Closes the session (`Close(normal)`) and stops reconnecting.
    pub async fn close(&self) {
        let _ = self.commands.send(ClientCommand::Close).await;
        let mut state = self.state.clone();
        while !matches!(&*state.borrow_and_update(), ConnState::Disconnected { .. }) {
            if state.changed().await.is_err() {
                break;
            }
        }
    }

    async fn send(&self, command: ClientCommand) -> Result<(), ClientError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed("client stopped".into()))
    }
}

async fn wait<T>(
    answer: oneshot::Receiver<Result<T, ClientError>>,
    timeout: Duration,
) -> Result<T, ClientError> {
    match tokio::time::timeout(timeout, answer).await {
        Err(_) => Err(ClientError::Timeout),
        Ok(Err(_)) => Err(ClientError::NotConnected),
        Ok(Ok(result)) => result,
    }
}

//! [`Server`]: accept loops with admission control and backoff, and two-phase shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admission_limits::AdmissionLimits;
use crate::auth::Authenticator;
use crate::driver::drive;
use crate::groups::{GroupMembership, NoGroups};
use crate::push::{PendingAcks, Pusher};
use crate::relay::{GroupPresence, LocalRelay, Relay, RelayInbox};
use crate::route_store::{HubRoutes, RouteSinks, RouteStore, RouteSync};
use crate::{Hub, QualityBoard, QualityConfig, Router, Shared, Stats};
use longconn_core::config::SessionConfig;
use longconn_core::connection::{Connection, Listener};

/// Server-wide settings. Build with [`ServerConfig::builder`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    node_id: u16,
    max_connections: usize,
    session: Arc<SessionConfig>,
    close_linger: Duration,
    accept_backoff_max: Duration,
    shutdown_retry_after: Duration,
    relay_timeout: Duration,
    max_accept_rate: Option<u32>,
    max_connections_per_ip: Option<u32>,
    max_logins_per_device: Option<u32>,
    quality: QualityConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            max_connections: 100_000,
            session: Arc::new(SessionConfig::default()),
            close_linger: Duration::from_secs(2),
            accept_backoff_max: Duration::from_secs(1),
            shutdown_retry_after: Duration::from_secs(5),
            relay_timeout: Duration::from_secs(5),
            max_accept_rate: Some(5000),
            max_connections_per_ip: None,
            max_logins_per_device: Some(30),
            quality: QualityConfig::default(),
        }
    }
}

impl ServerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder {
            config: ServerConfig::default(),
        }
    }

    /// This node's id, carried in the top 16 bits of every connection id. Default 1.
    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// Connections admitted at once, over all listeners; the next peer waits in the
    /// kernel's accept queue until one closes. Default 100,000; at least 1.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Per-connection limits and timers.
    pub fn session(&self) -> &Arc<SessionConfig> {
        &self.session
    }

    /// How long a closing connection may take to flush its last frames. Default 2 s.
    pub fn close_linger(&self) -> Duration {
        self.close_linger
    }

    /// Longest pause between retries of a failing accept (the first is 10 ms, doubling).
    /// Default 1 s.
    pub fn accept_backoff_max(&self) -> Duration {
        self.accept_backoff_max
    }

    /// Reconnect hint sent in `GoAway` at shutdown. Default 5 s.
    pub fn shutdown_retry_after(&self) -> Duration {
        self.shutdown_retry_after
    }

    /// Longest wait for another node's answer to a relayed batch or kick; targets still
    /// unanswered then are `unknown`. Default 5 s; at least 1 ms.
    pub fn relay_timeout(&self) -> Duration {
        self.relay_timeout
    }

    /// Connections admitted per second over all listeners (a token bucket with a burst
    /// of one second's worth); more are answered `Close {try_later}` with
    /// `retry_after_ms=<N>` (crate `admission_limits`). `None` for no limit. Default
    /// 5,000; at least 1.
    pub fn max_accept_rate(&self) -> Option<u32> {
        self.max_accept_rate
    }

    /// Connections one source IP may hold; more are answered `Close {source_limit}`.
    /// `None` for no limit (clients behind one NAT share an address). Default `None`;
    /// at least 1.
    pub fn max_connections_per_ip(&self) -> Option<u32> {
        self.max_connections_per_ip
    }

    /// Login attempts (and token refreshes) one (app, device) may make per minute;
    /// more are refused with `Close {login_rate_limited}` (203) before the
    /// authenticator is asked (crate `login_limit`). `None` for no limit. Default 30;
    /// at least 1.
    pub fn max_logins_per_device(&self) -> Option<u32> {
        self.max_logins_per_device
    }

    /// Network bucket thresholds of client quality reports ([`QualityConfig`]).
    pub fn quality(&self) -> &QualityConfig {
        &self.quality
    }
}

/// Builder for [`ServerConfig`].
#[derive(Debug, Clone)]
pub struct ServerConfigBuilder {
    config: ServerConfig,
}

impl ServerConfigBuilder {
    /// See [`ServerConfig::node_id`].
    pub fn node_id(mut self, value: u16) -> Self {
        self.config.node_id = value;
        self
    }
    /// See [`ServerConfig::max_connections`].
    pub fn max_connections(mut self, value: usize) -> Self {
        self.config.max_connections = value;
        self
    }
    /// See [`ServerConfig::session`].
    pub fn session(mut self, value: SessionConfig) -> Self {
        self.config.session = Arc::new(value);
        self
    }
    /// See [`ServerConfig::close_linger`].
    pub fn close_linger(mut self, value: Duration) -> Self {
        self.config.close_linger = value;
        self
    }
    /// See [`ServerConfig::accept_backoff_max`].
    pub fn accept_backoff_max(mut self, value: Duration) -> Self {
        self.config.accept_backoff_max = value;
        self
    }
    /// See [`ServerConfig::shutdown_retry_after`].
    pub fn shutdown_retry_after(mut self, value: Duration) -> Self {
        self.config.shutdown_retry_after = value;
        self
    }
    /// See [`ServerConfig::relay_timeout`].
    pub fn relay_timeout(mut self, value: Duration) -> Self {
        self.config.relay_timeout = value;
        self
    }
    /// See [`ServerConfig::max_accept_rate`].
    pub fn max_accept_rate(mut self, value: Option<u32>) -> Self {
        self.config.max_accept_rate = value;
        self
    }
    /// See [`ServerConfig::max_connections_per_ip`].
    pub fn max_connections_per_ip(mut self, value: Option<u32>) -> Self {
        self.config.max_connections_per_ip = value;
        self
    }
    /// See [`ServerConfig::max_logins_per_device`].
    pub fn max_logins_per_device(mut self, value: Option<u32>) -> Self {
        self.config.max_logins_per_device = value;
        self
    }
    /// See [`ServerConfig::quality`].
    pub fn quality(mut self, value: QualityConfig) -> Self {
        self.config.quality = value;
        self
    }

    /// Checks every value against its documented range.
    pub fn build(self) -> std::result::Result<ServerConfig, longconn_core::ConfigError> {
        let c = self.config;
        if c.max_connections == 0 || c.max_connections > Semaphore::MAX_PERMITS {
            return Err(longconn_core::ConfigError {
                field: "max_connections",
                reason: "must be at least 1",
            });
        }
        if c.accept_backoff_max < Duration::from_millis(10) {
            return Err(longconn_core::ConfigError {
                field: "accept_backoff_max",
                reason: "must be at least 10 ms",
            });
        }
        if c.max_accept_rate == Some(0) {
            return Err(longconn_core::ConfigError {
                field: "max_accept_rate",
                reason: "must be at least 1 (or none)",
            });
        }
        if c.max_logins_per_device == Some(0) {
            return Err(longconn_core::ConfigError {
                field: "max_logins_per_device",
                reason: "must be at least 1 (or none)",
            });
        }
        if c.max_connections_per_ip == Some(0) {
            return Err(longconn_core::ConfigError {
                field: "max_connections_per_ip",
                reason: "must be at least 1 (or none)",
            });
        }
        if c.relay_timeout < Duration::from_millis(1) {
            return Err(longconn_core::ConfigError {
                field: "relay_timeout",
                reason: "must be at least 1 ms",
            });
        }
        Ok(c)
    }
}

/// What a graceful shutdown did: what was open, what was flushed and what was lost.
/// Every count covers this server only; when [`Server::shutdown`] returns, every task
/// the server spawned (accept loops, connection drivers and their auth and request
/// tasks, the route sync task, event subscribers, fan-out workers) has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Connections open when shutdown began.
    pub connections: usize,
    /// Frames written by draining sessions (queued pushes, `GoAway`, `Close`).
    pub frames_flushed: u64,
    /// Pushes that were still queued when their connection closed.
    pub pushes_dropped: u64,
    /// Connections still open at the deadline, closed without a flush.
    pub forced: usize,
    /// Route changes (logins and closes) the route store accepted over the server's
    /// life; shutdown waits until the last close has been applied.
    pub route_changes_flushed: u64,
    /// Route changes lost: a full queue, a store error, or a change after the stop.
    pub route_changes_dropped: u64,
    /// Connection events subscribers never got (full queue, or still queued at the
    /// shutdown deadline).
    pub events_dropped: u64,
    /// Fan-out chunks the group layer still had queued at the stop, finished before
    /// shutdown returned.
    pub fanout_chunks_drained: u64,
}

/// Builder for [`Server`]: the parts a server plugs together.
pub struct ServerBuilder {
    config: ServerConfig,
    authenticator: Arc<dyn Authenticator>,
    router: Option<Arc<Router>>,
    groups: Arc<dyn GroupMembership>,
    /// `None`: the hub answers route lookups itself ([`HubRoutes`]).
    route_store: Option<Arc<dyn RouteStore>>,
    relay: Arc<dyn Relay>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("router", &self.router)
            .field("groups", &self.groups)
            .field("route_store", &self.route_store)
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Where upstream requests go, and who hears connection events. Default
    /// [`Router::echo`].
    pub fn router(mut self, router: Arc<Router>) -> Self {
        self.router = Some(router);
        self
    }

    /// The group layer (`longconn_group::GroupRegistry`). Default [`NoGroups`]: joins are
    /// refused with `group_forbidden`.
    pub fn groups(mut self, groups: Arc<dyn GroupMembership>) -> Self {
        self.groups = groups;
        self
    }

    /// Where device routes are registered. Default: none of its own; the hub's device
    /// map answers lookups (what a [`crate::MemoryRouteStore`] of this server alone
    /// would hold, without a second map of every logged-in device).
    pub fn route_store(mut self, store: Arc<dyn RouteStore>) -> Self {
        self.route_store = Some(store);
        self
    }

    /// How pushes, kicks and group messages reach other nodes. Default [`LocalRelay`]
    /// (a single node). Give the group layer the same relay, so that its publishes reach
    /// the other nodes too.
    pub fn relay(mut self, relay: Arc<dyn Relay>) -> Self {
        self.relay = relay;
        self
    }

    /// The server, not yet serving: call [`Server::serve`] for each listener.
    pub fn build(self) -> Server {
        let hub = Arc::new(Hub::new(self.config.node_id));
        // Without a store of its own, the server's routes are its hub's devices: no
        // changes to queue, lookups read the hub.
        let (store, hub_only): (Arc<dyn RouteStore>, bool) = match self.route_store {
            Some(store) => (store, false),
            None => (Arc::new(HubRoutes::new(hub.clone())), true),
        };
        let timers = crate::timers::Timers::new(hub.clone());
        let shared = Arc::new(Shared {
            routes: RouteSync::new(
                RouteSinks {
                    store,
                    relay: self.relay.clone(),
                    relay_timeout: self.config.relay_timeout,
                },
                hub.clone(),
                hub_only,
            ),
            hub,
            session_config: self.config.session.clone(),
            authenticator: match self.config.max_logins_per_device {
                Some(max) => Arc::new(crate::login_limit::LoginLimit::new(self.authenticator, max)),
                None => self.authenticator,
            },
            router: self.router.unwrap_or_else(|| Arc::new(Router::echo())),
            groups: self.groups,
            relay: self.relay,
            relay_timeout: self.config.relay_timeout,
            acks: PendingAcks::default(),
            close_linger: self.config.close_linger,
            stats: Stats::default(),
            metrics: crate::metrics::ServerMetrics::new(),
            shutting_down: CancellationToken::new(),
            quality: Arc::new(QualityBoard::new(self.config.quality)),
            timers,
            admission: Arc::new(Semaphore::new(self.config.max_connections)),
            limits: AdmissionLimits::new(
                self.config.max_accept_rate,
                self.config.max_connections_per_ip,
            ),
        });
        Server {
            shared,
            config: self.config,
            accepting: CancellationToken::new(),
            accept_loops: TaskTracker::new(),
            tasks: TaskTracker::new(),
        }
    }
}

/// The access-layer server: owns the hub, the admission semaphore and every task it
/// spawned. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
    config: ServerConfig,
    accepting: CancellationToken,
    /// The [`Server::serve`] loops: shutdown waits for them (and so for their listeners
    /// to be dropped) before it abandons the handshakes in progress.
    accept_loops: TaskTracker,
    /// Every other task: connections (with their handshakes) and their helpers.
    tasks: TaskTracker,
}

impl Server {
    /// A server that checks logins with `authenticator` and forwards requests with
    /// `router`, without groups, routes kept in memory. [`Server::builder`] sets the rest.
    pub fn new(
        config: ServerConfig,
        authenticator: Arc<dyn Authenticator>,
        router: Arc<Router>,
    ) -> Server {
        Server::builder(config, authenticator)
            .router(router)
            .build()
    }

    /// A builder for a server checking logins with `authenticator`.
    pub fn builder(config: ServerConfig, authenticator: Arc<dyn Authenticator>) -> ServerBuilder {
        ServerBuilder {
            config,
            authenticator,
            router: None,
            groups: Arc::new(NoGroups),
            route_store: None,
            relay: Arc::new(LocalRelay),
        }
    }

    /// The push API for this server's connections.
    pub fn pusher(&self) -> Pusher {
        Pusher {
            shared: self.shared.clone(),
        }
    }

    /// The receiving end of the relay: the cluster layer hands it every relay message
    /// addressed to this node.
    pub fn relay_inbox(&self) -> RelayInbox {
        RelayInbox {
            shared: self.shared.clone(),
        }
    }

    /// How many members `group` has across the cluster: this node's (from the group
    /// layer) plus what the other nodes with members answer through the relay, within
    /// [`ServerConfig::relay_timeout`]. On a single node ([`LocalRelay`]) the remote
    /// part is empty.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads; a dropped query leaves nothing behind (answers that
    /// arrive later are discarded by the relay).
    pub async fn group_presence(&self, group: &str) -> GroupPresence {
        crate::relay::group_presence(&self.shared, group).await
    }

    /// The forwarding router.
    pub fn router(&self) -> &Arc<Router> {
        &self.shared.router
    }

    /// Client quality reports received by this server, by network bucket and transport.
    pub fn quality(&self) -> &Arc<QualityBoard> {
        &self.shared.quality
    }

    /// The hub of this server's connections (for pushes and kicks).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.shared.hub
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Accepts connections from `listener` on a task of its own until shutdown.
    pub fn serve<L: Listener>(&self, mut listener: L) {
        let server = self.clone();
        self.accept_loops.spawn(async move {
            let kind = listener.kind();
            let mut backoff = Duration::from_millis(10);
            loop {
                let permit = tokio::select! {
                    () = server.accepting.cancelled() => break,
                    permit = server.shared.admission.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                let handshake = tokio::select! {
                    () = server.accepting.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(handshake) => handshake,
                        Err(err) => {
                            warn!(protocol = kind.as_str(), error = %err, ?backoff, "accept failed");
                            tokio::select! {
                                () = server.accepting.cancelled() => break,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(server.config.accept_backoff_max);
                            continue;
                        }
                    },
                };
                backoff = Duration::from_millis(10);
                let shared = server.shared.clone();
                let protocol = kind.as_str();
                // The handshake and admission run in a boxed future, freed once the
                // connection is admitted; the task then holds the driver's task alone
                // (the driver keeps the permit and the IP's count). Combinators, not an
                // `async` block: a block keeps its captured values and the states of
                // every await it passed in its own layout, ~270 B per idle connection.
                let setup = Box::pin(async move {
                    let login_timeout = shared.session_config.login_timeout();
                    // Shutdown abandons a handshake in progress, so no handshake task
                    // outlives it by up to `login_timeout`.
                    let handshaken = tokio::select! {
                        handshaken = tokio::time::timeout(login_timeout, handshake) => handshaken,
                        () = shared.shutting_down.cancelled() => {
                            debug!(protocol, "handshake abandoned at shutdown");
                            return None;
                        }
                    };
                    let conn = match handshaken {
                        Ok(Ok(conn)) => conn,
                        Ok(Err(err)) => {
                            debug!(protocol, error = %err, "handshake failed");
                            return None;
                        }
                        Err(_) => {
                            debug!(protocol, "handshake timed out");
                            return None;
                        }
                    };
                    match shared.limits.admit(std::time::Instant::now(), conn.peer_addr()) {
                        Ok(slot) => Some((conn, slot, shared)),
                        Err(refusal) => {
                            debug!(protocol, ?refusal, "connection refused");
                            refuse(conn, refusal, shared.close_linger).await;
                            None
                        }
                    }
                });
                let task = setup.then(move |admitted| match admitted {
                    // The driver gives the permit and the IP's count back when it is
                    // dropped (kept inside it: the task holds nothing else).
                    Some((conn, counted_ip, shared)) => {
                        permit.forget();
                        Either::Left(drive(conn, shared, counted_ip))
                    }
                    None => Either::Right(std::future::ready(())),
                });
                crate::driver::record_task_size(std::mem::size_of_val(&task));
                server.tasks.spawn(task);
            }
            debug!(protocol = kind.as_str(), "listener stopped");
        });
    }

    /// Runs an already established connection (an in-memory pair, a connection accepted
    /// elsewhere). Returns `false`, dropping it, when the server is at
    /// `max_connections` or shutting down.
    pub fn serve_connection<C: Connection>(&self, conn: C) -> bool {
        if self.accepting.is_cancelled() {
            return false;
        }
        let Ok(permit) = self.shared.admission.clone().try_acquire_owned() else {
            return false;
        };
        // The driver adds the permit back when it is dropped.
        permit.forget();
        self.tasks.spawn(drive(conn, self.shared.clone(), None));
        true
    }

    /// Two-phase graceful shutdown. Phase 1: stop accepting and send `GoAway` to every
    /// session; each keeps flushing what it has queued and closes once it is empty (or at
    /// its `drain_timeout`). Phase 2: at `deadline`, connections still open are closed.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        self.accepting.cancel();
        // The accept loops end at once; their listeners are dropped before the
        // handshakes in progress are abandoned, so a transport can tell the two apart
        // (QUIC closes an abandoned handshake with `GoingAway`, not `LoginTimeout`).
        self.accept_loops.close();
        self.accept_loops.wait().await;
        self.shared.shutting_down.cancel();
        let retry_after = self.config.shutdown_retry_after;
        let connections = self.shared.hub.len();
        info!(connections, "shutdown: draining");
        self.shared.hub.for_each(|conn| {
            conn.begin_drain(retry_after);
        });
        self.tasks.close();
        let mut forced = 0;
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            forced = self.shared.hub.len();
            warn!(forced, "shutdown: deadline reached, closing the rest");
            self.shared.hub.for_each(|conn| {
                conn.close(longconn_core::Code::GoingAway);
            });
            let _ = tokio::time::timeout(self.config.close_linger, self.tasks.wait()).await;
        }
        // Every connection has departed (or was forced): their unregisters, events and
        // fan-outs are queued. Let the background tasks finish them, in that order.
        let routes = self.shared.routes.finish().await;
        self.shared.timers.finish().await;
        let events_dropped = self
            .shared
            .router
            .finish_events(self.config.close_linger)
            .await;
        let fanout_chunks_drained = self.shared.groups.close().await;
        let stats = &self.shared.stats;
        let report = ShutdownReport {
            connections,
            frames_flushed: stats.drain_flushed.load(Ordering::Relaxed),
            pushes_dropped: stats.dropped_at_close.load(Ordering::Relaxed),
            forced,
            route_changes_flushed: routes.applied,
            route_changes_dropped: routes.dropped,
            events_dropped,
            fanout_chunks_drained,
        };
        info!(?report, "shutdown: done");
        report
    }
}

/// Answers a refused connection with its `Close` and closes it, within `linger`.
async fn refuse<C: Connection>(
    conn: C,
    refusal: crate::admission_limits::Refusal,
    linger: Duration,
) {
    use longconn_core::connection::FrameWriter;
    let (code, message) = refusal.close();
    let (reader, mut writer) = conn.split();
    let closing = async {
        if writer
            .send(longconn_core::Transmit::Frame(
                longconn_core::Frame::Close {
                    code,
                    message: longconn_core::Text::from(message),
                },
            ))
            .is_ok()
        {
            let _ = writer.flush().await;
        }
        let _ = writer.close(longconn_core::CloseReason::Local(code)).await;
    };
    let _ = tokio::time::timeout(linger, closing).await;
    drop(reader);
}

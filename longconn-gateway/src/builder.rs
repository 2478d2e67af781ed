//! [`GatewayBuilder`]: the one assembly of a gateway, from listeners, authentication,
//! business handlers, groups and the HTTP side to a running [`Gateway`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use longconn_cluster::{ClusterConfig, ClusterNode};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};
use longconn_group::{GroupConfig, GroupRegistry, JoinAuthorizer};
use longconn_http::{ApiKeys, ApiLimits, PushApi};
use longconn_server::{
    Authenticator, Backend, BackendLimits, DeviceKey, ECHO_BUSINESS, EchoBackend, GroupLog,
    Listener, Relay, RouteStore, Router, Server, ServerConfig,
};
use longconn_transport::TransportConfig;
use longconn_transport::cert::TlsIdentity;
use longconn_transport::quic::QuicAcceptor;
use longconn_transport::tcp::TcpAcceptor;
use longconn_transport::tls::TlsAcceptor;
use longconn_transport::ws::WsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::demo::{DEMO_APP, DEMO_BUSINESS, Demo};
use crate::{Gateway, GatewayError, ListenerKind, http};

/// Default [`GatewayBuilder::shutdown_deadline`]: 15 s for the whole drain.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);

/// Bytes of a frame the push API keeps for the header and fields: a pushed payload may be
/// at most the frame size minus this.
pub const PUSH_FRAME_OVERHEAD: usize = 1024;

/// Assembles a [`Gateway`]; start with [`Gateway::builder`], finish with
/// [`GatewayBuilder::start`].
///
/// Every limit has one source:
/// - the frame limit is the session's ([`ServerConfig::session`]'s `max_frame_size`,
///   default 64 KiB); `start` gives it to every acceptor (the [`TransportConfig`]), to
///   the group registry (the [`GroupConfig`]) and to the push API (its largest payload is
///   the frame size minus [`PUSH_FRAME_OVERHEAD`]);
/// - everything else defaults to the owning crate's `Default` ([`ServerConfig`],
///   [`TransportConfig`], [`GroupConfig`], [`ApiLimits`]), and the drain deadline to
///   [`DEFAULT_SHUTDOWN_DEADLINE`].
///
/// Nothing listens unless asked: add listeners with [`GatewayBuilder::tcp`],
/// [`GatewayBuilder::ws`], [`GatewayBuilder::quic`], [`GatewayBuilder::tls`],
/// [`GatewayBuilder::wss`] and [`GatewayBuilder::http`].
pub struct GatewayBuilder {
    server: ServerConfig,
    transport: TransportConfig,
    groups: GroupConfig,
    api_limits: ApiLimits,
    shutdown_deadline: Duration,
    listeners: Vec<(ListenerKind, SocketAddr)>,
    tls_identity: Option<TlsIdentity>,
    authenticator: Option<Arc<dyn Authenticator>>,
    router: Option<Arc<Router>>,
    backends: Vec<(u32, Arc<dyn Backend>, BackendLimits)>,
    route_store: Option<Arc<dyn RouteStore>>,
    group_log: Option<Arc<dyn GroupLog>>,
    relay: Option<Arc<dyn Relay>>,
    cluster: Option<ClusterConfig>,
    join_authorizer: Option<Arc<dyn JoinAuthorizer>>,
    demo: Option<Demo>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    api_keys: ApiKeys,
    ws_origins: Option<Vec<String>>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("groups", &self.groups)
            .field("api_limits", &self.api_limits)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("listeners", &self.listeners)
            .field("router", &self.router)
            .field("backends", &self.backends.len())
            .field("cluster", &self.cluster)
            .field("demo", &self.demo.is_some())
            .field("api_keys", &self.api_keys)
            .field("ws_origins", &self.ws_origins)
            .finish_non_exhaustive()
    }
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        GatewayBuilder {
            server: ServerConfig::default(),
            transport: TransportConfig::default(),
            groups: GroupConfig::default(),
            api_limits: ApiLimits::default(),
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            listeners: Vec::new(),
            tls_identity: None,
            authenticator: None,
            router: None,
            backends: Vec::new(),
            route_store: None,
            group_log: None,
            relay: None,
            cluster: None,
            join_authorizer: None,
            demo: None,
            metrics: None,
            api_keys: ApiKeys::new(),
            ws_origins: None,
        }
    }
}

impl GatewayBuilder {
    /// The runtime's settings: node id, admission limit, the per-connection
    /// `SessionConfig` (whose `max_frame_size` is the gateway's one frame limit), close
    /// linger and the `GoAway` hint. Default `ServerConfig::default()`.
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }

    /// The acceptors' limits (`SO_REUSEPORT`, backlog, WebSocket and QUIC parameters).
    /// Its `max_frame_size` is replaced by the session's. Default
    /// `TransportConfig::default()`.
    pub fn transport(mut self, config: TransportConfig) -> Self {
        self.transport = config;
        self
    }

    /// The group layer's limits. Its `max_frame_size` is replaced by the session's.
    /// Default `GroupConfig::default()`.
    pub fn groups(mut self, config: GroupConfig) -> Self {
        self.groups = config;
        self
    }

    /// The push API's limits. Its `max_payload` is replaced by the session's frame size
    /// minus [`PUSH_FRAME_OVERHEAD`]. Default `ApiLimits::default()`.
    pub fn api_limits(mut self, limits: ApiLimits) -> Self {
        self.api_limits = limits;
        self
    }

    /// Time [`Gateway::shutdown`] allows for the whole drain before it closes the
    /// connections left. Default [`DEFAULT_SHUTDOWN_DEADLINE`].
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Adds a listener of `kind` on `addr` (port 0: any free port; see
    /// [`Gateway::local_addr`]).
    pub fn listen(mut self, kind: ListenerKind, addr: SocketAddr) -> Self {
        self.listeners.push((kind, addr));
        self
    }

    /// Adds a TCP listener.
    pub fn tcp(self, addr: SocketAddr) -> Self {
        self.listen(ListenerKind::Tcp, addr)
    }

    /// Adds a WebSocket listener (path `/ws`).
    pub fn ws(self, addr: SocketAddr) -> Self {
        self.listen(ListenerKind::Ws, addr)
    }

    /// Adds a QUIC listener (UDP, ALPN `longconn`); needs [`GatewayBuilder::tls_identity`].
    pub fn quic(self, addr: SocketAddr) -> Self {
        self.listen(ListenerKind::Quic, addr)
    }

    /// Adds a TLS-over-TCP listener; needs [`GatewayBuilder::tls_identity`].
    pub fn tls(self, addr: SocketAddr) -> Self {
        self.listen(ListenerKind::Tls, addr)
    }

    /// Adds a WebSocket-over-TLS listener (path `/ws`); needs
    /// [`GatewayBuilder::tls_identity`].
    pub fn wss(self, addr: SocketAddr) -> Self {
        self.listen(ListenerKind::Wss, addr)
    }

    /// Serves `GET /healthz` and the push API (`longconn_http::api`) over HTTP on `addr`.
    ///
    /// The push API needs one of [`GatewayBuilder::api_keys`] (`Authorization: Bearer
    /// <secret>`); without keys it is open, which `start` allows only on a loopback
    /// address (with a warning), and refuses with [`GatewayError::Config`] otherwise.
    pub fn http(self, addr: SocketAddr) -> Self {
        self.listen(ListenerKind::Http, addr)
    }

    /// The certificate QUIC, TLS and wss listeners present.
    pub fn tls_identity(mut self, identity: TlsIdentity) -> Self {
        self.tls_identity = Some(identity);
        self
    }

    /// Checks logins with `authenticator` (for example `TokenKeys` with the deployment's
    /// keys). Default: `TokenKeys` with the built-in development key, which anyone with
    /// the source can sign with; `start` warns about it.
    pub fn authenticator(self, authenticator: impl Authenticator) -> Self {
        self.shared_authenticator(Arc::new(authenticator))
    }

    /// [`GatewayBuilder::authenticator`] for one that is already shared.
    pub fn shared_authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Sends requests for `business` to `backend`, with the default [`BackendLimits`].
    /// Business 1 stays on the echo backend unless a backend claims it. Not with
    /// [`GatewayBuilder::router`].
    pub fn backend(self, business: u32, backend: impl Backend) -> Self {
        self.backend_with_limits(business, backend, BackendLimits::default())
    }

    /// [`GatewayBuilder::backend`] with its own timeout and concurrency limit.
    pub fn backend_with_limits(
        mut self,
        business: u32,
        backend: impl Backend,
        limits: BackendLimits,
    ) -> Self {
        self.backends.push((business, Arc::new(backend), limits));
        self
    }

    /// Forwards requests with `router` as it is (ranges, a default route, event
    /// subscribers; no echo backend is added). Not with [`GatewayBuilder::backend`].
    /// Default: the echo backend on business 1, plus the backends added.
    pub fn router(mut self, router: Router) -> Self {
        self.router = Some(Arc::new(router));
        self
    }

    /// Where device routes are registered (a cluster's shared store). Default the
    /// server's in-memory store.
    pub fn route_store(mut self, store: Arc<dyn RouteStore>) -> Self {
        self.route_store = Some(store);
        self
    }

    /// Who numbers group publishes (a cluster's shared log). Default the group
    /// registry's in-process log.
    pub fn group_log(mut self, log: Arc<dyn GroupLog>) -> Self {
        self.group_log = Some(log);
        self
    }

    /// Delivery to the other nodes of a cluster: batched pushes, kicks and duplicate
    /// logins through the server, group publishes through the group registry (one relay
    /// for both, so they reach the same nodes). Use it with a shared
    /// [`GatewayBuilder::route_store`] and [`GatewayBuilder::group_log`]. Default: the
    /// single-node `LocalRelay`.
    pub fn relay(mut self, relay: Arc<dyn Relay>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Makes this gateway one node of a cluster on Redis: `start` joins it with
    /// [`ClusterNode::start`] once every listener is bound, and wires the node's route
    /// store, group log and relay in (not with [`GatewayBuilder::route_store`],
    /// [`GatewayBuilder::group_log`] or [`GatewayBuilder::relay`]). Its `node_id` must be
    /// the server's ([`ServerConfig::node_id`]); an empty `advertise` is filled with
    /// the bound connection listeners (`tcp` -> `127.0.0.1:7100`, ...), which is only
    /// right when those addresses are what clients reach (not `0.0.0.0`, not behind
    /// NAT). [`Gateway::shutdown`] then drains in order: draining flag, server drain
    /// (routes unregistered), relay stop and node entry removal. Default: no cluster
    /// (memory routes, a single node).
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Checks client-initiated group joins. Default: every client may join every group.
    pub fn join_authorizer(mut self, authorizer: impl JoinAuthorizer) -> Self {
        self.join_authorizer = Some(Arc::new(authorizer));
        self
    }

    /// Serves `GET /metrics` on the HTTP listener from `handle`
    /// ([`crate::metrics::install_prometheus`]). Without it `/metrics` answers a JSON
    /// 404 `metrics_off`. Default: off.
    pub fn metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// Turns the demo on ([`crate::demo`]): the `/demo` page and its token, config and
    /// presence routes on the HTTP listener, and the room handler on business
    /// [`DEMO_BUSINESS`]. It needs an HTTP and a WebSocket listener. With backends (or
    /// none) the handler is routed here; a [`GatewayBuilder::router`] must route
    /// [`DEMO_BUSINESS`] to [`Demo::backend`] itself. Default: off.
    pub fn demo(mut self, demo: Demo) -> Self {
        self.demo = Some(demo);
        self
    }

    /// The API keys the push API requires (`Authorization: Bearer <secret>`,
    /// `longconn_http::auth`); `/healthz` and other routes stay open. Default: none,
    /// allowed only on a loopback HTTP listener.
    pub fn api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = keys;
        self
    }

    /// The browser origins (`scheme://host[:port]`, or `*` for any) allowed to open a
    /// WebSocket (ws and wss listeners); others get `403` at the upgrade, and a request
    /// without an `Origin` header (a native client) is not checked. Default (`None`):
    /// every origin on a loopback listener, none on any other.
    pub fn ws_allowed_origins(mut self, origins: Option<Vec<String>>) -> Self {
        self.ws_origins = origins;
        self
    }

    /// Checks the settings, binds every listener, and starts serving. Nothing is served
    /// unless every listener bound.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for settings out of range or that do not fit together
    /// (a TLS listener without an identity, both a router and backends, overlapping
    /// backend rules), [`GatewayError::Transport`] or [`GatewayError::Io`] when a
    /// listener cannot be bound.
    pub async fn start(self) -> Result<Gateway, GatewayError> {
        check_api_keys(&self.listeners, &self.api_keys)?;
        let config = GatewayError::Config;
        let session = self.server.session().clone();
        let max_frame = session.max_frame_size();
        let transport = self
            .transport
            .to_builder()
            .max_frame_size(max_frame)
            .build()?;
        let groups = group_config_with_frame(&self.groups, max_frame)?;
        let api_limits = ApiLimits {
            max_payload: max_frame.saturating_sub(PUSH_FRAME_OVERHEAD),
            ..self.api_limits
        };
        let kinds = || self.listeners.iter().map(|(kind, _)| *kind);
        if kinds().any(|k| k == ListenerKind::Quic)
            && transport.quic_idle_timeout() <= session.heartbeat_interval()
        {
            return Err(config(
                "transport.quic_idle_timeout must exceed session.heartbeat_interval, or idle \
                 QUIC sessions drop between heartbeats"
                    .into(),
            ));
        }
        if self.demo.is_some() {
            for kind in [ListenerKind::Http, ListenerKind::Ws] {
                if !kinds().any(|k| k == kind) {
                    return Err(config(format!(
                        "the demo needs a{} {} listener",
                        if kind == ListenerKind::Http { "n" } else { "" },
                        kind.label()
                    )));
                }
            }
        }
        let mut backends = self.backends;
        if let Some(demo) = &self.demo {
            match &self.router {
                Some(router) if router.backend_for(DEMO_BUSINESS).is_none() => {
                    return Err(config(format!(
                        "the demo needs business {DEMO_BUSINESS} routed to Demo::backend()"
                    )));
                }
                Some(_) => {}
                None => backends.push((
                    DEMO_BUSINESS,
                    Arc::new(demo.backend()),
                    BackendLimits::default(),
                )),
            }
        }
        let router = match (self.router, backends.is_empty()) {
            (Some(router), true) => router,
            (None, _) => Arc::new(router_from(backends)?),
            (Some(_), false) => {
                return Err(config("give either a router or backends, not both".into()));
            }
        };
        if let Some(cluster) = &self.cluster {
            if self.route_store.is_some() || self.group_log.is_some() || self.relay.is_some() {
                return Err(config(
                    "give either a cluster or a route store / group log / relay, not both".into(),
                ));
            }
            if cluster.node_id != self.server.node_id() {
                return Err(config(format!(
                    "cluster node id {} differs from the server's node id {}",
                    cluster.node_id,
                    self.server.node_id()
                )));
            }
            cluster
                .validate()
                .map_err(|e| config(format!("cluster: {e}")))?;
            if cluster.relay_timeout >= self.server.relay_timeout() {
                warn!(
                    cluster = ?cluster.relay_timeout,
                    server = ?self.server.relay_timeout(),
                    "the cluster's relay timeout is not below the server's: a silent node \
                     is then reported by the server's timeout rather than the relay's"
                );
            }
        }
        let authenticator = match self.authenticator {
            Some(authenticator) => authenticator,
            None => {
                warn!(
                    "USING THE BUILT-IN DEVELOPMENT TOKEN SECRET: anyone can log in. Set \
                     --token-secret or [[token_keys]] (or an authenticator) for any real \
                     deployment."
                );
                let key = TokenKey::new(DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET.as_bytes())
                    .map_err(|e| config(format!("development token key: {e}")))?;
                Arc::new(TokenKeys::new(key))
            }
        };

        // Bind everything before serving anything: a failed bind leaves no accept loop
        // behind.
        let mut bound: Vec<(&'static str, SocketAddr)> = Vec::new();
        let mut serve: Vec<StartServing> = Vec::new();
        let mut http_listener = None;
        let mut tcp_tls = None;
        for &(kind, addr) in &self.listeners {
            let local = match kind {
                ListenerKind::Tcp => queue(&mut serve, TcpAcceptor::bind_with(addr, &transport)?)?,
                ListenerKind::Ws => queue(
                    &mut serve,
                    WsAcceptor::bind_with(addr, &transport)?
                        .allow_origins(origin_policy(self.ws_origins.as_deref(), addr)),
                )?,
                ListenerKind::Quic => {
                    let identity = identity(&self.tls_identity, kind)?;
                    queue(
                        &mut serve,
                        QuicAcceptor::bind_with(addr, identity, &transport)?,
                    )?
                }
                ListenerKind::Tls | ListenerKind::Wss => {
                    let tls = match &tcp_tls {
                        Some(tls) => Arc::clone(tls),
                        None => {
                            let identity = identity(&self.tls_identity, kind)?;
                            let tls = Arc::new(identity.server_config(&[], false)?);
                            tcp_tls.insert(tls).clone()
                        }
                    };
                    if kind == ListenerKind::Tls {
                        queue(&mut serve, TlsAcceptor::bind_with(addr, tls, &transport)?)?
                    } else {
                        queue(
                            &mut serve,
                            WsAcceptor::bind_tls_with(addr, tls, &transport)?
                                .allow_origins(origin_policy(self.ws_origins.as_deref(), addr)),
                        )?
                    }
                }
                ListenerKind::Http => {
                    if http_listener.is_some() {
                        return Err(config("at most one HTTP listener".into()));
                    }
                    let listener = http::bind(addr).await?;
                    let local = listener.local_addr()?;
                    http_listener = Some((listener, local));
                    // Logged last, after every connection listener.
                    continue;
                }
            };
            bound.push((kind.label(), local));
        }

        // Join the cluster once the listeners are bound (the default advertised
        // addresses are the bound ones) and before anything is served.
        let (mut route_store, mut group_log, mut relay) =
            (self.route_store, self.group_log, self.relay);
        let cluster = match self.cluster {
            Some(mut cluster) => {
                if cluster.advertise.is_empty() {
                    cluster.advertise = advertised(&bound);
                }
                let node = ClusterNode::start(cluster).await?;
                route_store = Some(node.route_store());
                group_log = Some(node.group_log());
                relay = Some(node.relay());
                Some(node)
            }
            None => None,
        };
        let history = groups.history().clone();
        let mut registry = match self.join_authorizer {
            Some(authorizer) => {
                GroupRegistry::with_authorizer(groups, SharedAuthorizer(authorizer))
            }
            None => GroupRegistry::new(groups),
        };
        if let Some(log) = group_log {
            registry = registry.with_group_log(log);
        }
        // In a cluster the group history is shared in Redis Streams, so a client that
        // reconnects to another node recovers too.
        if let Some(node) = &cluster
            && !history.rules.is_empty()
        {
            registry = registry.with_history(node.history(history)?);
        }
        if let Some(relay) = &relay {
            registry = registry.with_relay(relay.clone());
        }
        let registry = Arc::new(registry);
        // The push API publishes from its own thread; the drivers run here.
        registry.wake_on(tokio::runtime::Handle::current());
        let mut server = Server::builder(self.server, authenticator)
            .router(router)
            .groups(registry.clone());
        if let Some(store) = route_store {
            server = server.route_store(store);
        }
        if let Some(relay) = relay {
            server = server.relay(relay);
        }
        let server = server.build();
        if let Some(node) = &cluster {
            node.attach(&server);
        }
        if let Some(demo) = &self.demo {
            let ws = bound
                .iter()
                .find(|(label, _)| *label == ListenerKind::Ws.label())
                .map(|(_, addr)| *addr)
                .ok_or_else(|| config("the demo needs a ws listener".into()))?;
            demo.attach(server.clone(), registry.clone(), ws);
            warn!(
                "DEMO ON: /demo/token mints login tokens for app `{DEMO_APP}` for anyone who \
                 reaches the HTTP listener; development only"
            );
        }
        for start in serve {
            start(&server);
        }
        let stop_http = CancellationToken::new();
        let mut http_task = None;
        if let Some((listener, local)) = http_listener {
            bound.push((ListenerKind::Http.label(), local));
            let api = PushApi::new(server.clone(), registry.clone(), api_limits)
                .with_api_keys(self.api_keys.clone());
            let mut app = http::router(server.clone(), api);
            if let Some(demo) = &self.demo {
                app = app.merge(demo.routes());
            }
            app = app.merge(crate::metrics::routes(self.metrics.clone()));
            http_task = Some(http::spawn_thread(listener, app, stop_http.clone())?);
        }
        for (label, addr) in &bound {
            info!(%addr, "{label} listening");
        }
        Ok(Gateway {
            server,
            groups: registry,
            transport,
            stop_http,
            http_task,
            shutdown_deadline: self.shutdown_deadline,
            cluster,
            bound,
        })
    }
}

/// The addresses a node advertises when none are configured: each bound connection
/// listener by its label (the HTTP listener is not for clients). A wildcard address
/// (`0.0.0.0`, `::`) is advertised as it is, with a warning: clients cannot reach it.
fn advertised(bound: &[(&'static str, SocketAddr)]) -> std::collections::BTreeMap<String, String> {
    let mut addrs = std::collections::BTreeMap::new();
    for &(label, addr) in bound {
        if label == ListenerKind::Http.label() || addrs.contains_key(label) {
            continue;
        }
        if addr.ip().is_unspecified() {
            warn!(
                %addr,
                "advertising the wildcard {label} address; set --advertise to what clients reach"
            );
        }
        addrs.insert(label.to_owned(), addr.to_string());
    }
    addrs
}

/// Starts one bound acceptor's accept loop on the server.
type StartServing = Box<dyn FnOnce(&Server) + Send>;

/// Queues `acceptor` to be served once the server exists; returns its bound address.
fn queue<L: Listener>(
    serve: &mut Vec<StartServing>,
    acceptor: L,
) -> Result<SocketAddr, GatewayError> {
    let local = acceptor.local_addr()?;
    serve.push(Box::new(move |server: &Server| server.serve(acceptor)));
    Ok(local)
}

fn identity(
    identity: &Option<TlsIdentity>,
    kind: ListenerKind,
) -> Result<&TlsIdentity, GatewayError> {
    identity.as_ref().ok_or_else(|| {
        GatewayError::Config(format!(
            "a {} listener needs a TLS identity (GatewayBuilder::tls_identity)",
            kind.label()
        ))
    })
}

/// `config` with the group layer's frame limit set to the session's; every other
/// setting (history, publish bounds, ...) is kept.
fn group_config_with_frame(
    config: &GroupConfig,
    max_frame_size: usize,
) -> Result<GroupConfig, GatewayError> {
    config
        .to_builder()
        .max_frame_size(max_frame_size)
        .build()
        .map_err(|e| GatewayError::Config(format!("groups: {e}")))
}

/// The echo backend on business 1 (unless a backend claims it), then one backend per
/// business id.
fn router_from(
    backends: Vec<(u32, Arc<dyn Backend>, BackendLimits)>,
) -> Result<Router, GatewayError> {
    let mut seen = std::collections::HashSet::new();
    if let Some((business, ..)) = backends.iter().find(|(b, ..)| !seen.insert(*b)) {
        return Err(GatewayError::Config(format!(
            "backends: two backends for business {business}"
        )));
    }
    let mut builder = Router::builder();
    if !backends
        .iter()
        .any(|(business, ..)| *business == ECHO_BUSINESS)
    {
        builder = builder
            .backend("echo", EchoBackend, BackendLimits::default())
            .route(ECHO_BUSINESS, "echo");
    }
    for (business, backend, limits) in backends {
        let name = format!("business-{business}");
        builder = builder
            .shared_backend(&name, backend, limits)
            .route(business, &name);
    }
    builder
        .build()
        .map_err(|e| GatewayError::Config(format!("backends: {e}")))
}

/// A shared [`JoinAuthorizer`] (the registry takes one by value).
struct SharedAuthorizer(Arc<dyn JoinAuthorizer>);

impl JoinAuthorizer for SharedAuthorizer {
    fn may_join(&self, device: &DeviceKey, group: &str) -> bool {
        self.0.may_join(device, group)
    }
}

/// An open push API (no keys) only on loopback: anyone who reaches it can push to any
/// device and kick anyone. On loopback it is allowed with a loud warning saying how to
/// set a key; on any other address the gateway refuses to start.
fn check_api_keys(
    listeners: &[(ListenerKind, SocketAddr)],
    keys: &ApiKeys,
) -> Result<(), GatewayError> {
    if !keys.is_empty() {
        return Ok(());
    }
    for (kind, addr) in listeners {
        if *kind != ListenerKind::Http {
            continue;
        }
        if !addr.ip().is_loopback() {
            return Err(GatewayError::Config(format!(
                "the HTTP listener {addr} is not loopback and no API key is set: anyone who                  reaches it could push to any device and kick anyone. Set a key with                  --api-key ID:SECRET (or [[http.api_keys]] in the config file), or listen                  on 127.0.0.1"
            )));
        }
        warn!(
            %addr,
            "THE PUSH API HAS NO API KEY: any local process can push and kick. Set one with \
             --api-key ID:SECRET (secret of 16+ bytes) or [[http.api_keys]] id/secret in the \
             config file, and send it as `Authorization: Bearer SECRET`"
        );
    }
    Ok(())
}

/// The Origin allowlist of a WebSocket listener on `addr`: the configured origins (`*`:
/// any, `None` for the acceptor); without any, every origin on loopback and none
/// elsewhere (native clients, which send no `Origin`, always pass).
fn origin_policy(configured: Option<&[String]>, addr: SocketAddr) -> Option<Vec<String>> {
    match configured {
        Some(list) if list.iter().any(|o| o == "*") => None,
        Some(list) => Some(list.to_vec()),
        None if addr.ip().is_loopback() => None,
        None => Some(Vec::new()),
    }
}

#[cfg(test)]
mod origin_policy_tests {
    use super::origin_policy;

    #[test]
    fn any_origin_only_on_loopback_unless_listed() {
        let lo = "127.0.0.1:7101".parse().unwrap();
        let any = "0.0.0.0:7101".parse().unwrap();
        assert_eq!(origin_policy(None, lo), None);
        assert_eq!(origin_policy(None, "[::1]:1".parse().unwrap()), None);
        assert_eq!(origin_policy(None, any), Some(vec![]));
        let listed = vec!["https://app.example".to_owned()];
        assert_eq!(origin_policy(Some(&listed), lo), Some(listed.clone()));
        assert_eq!(origin_policy(Some(&listed), any), Some(listed));
        assert_eq!(origin_policy(Some(&["*".to_owned()]), any), None);
    }
}

#[cfg(test)]
mod group_config_tests {
    use super::group_config_with_frame;
    use longconn_group::{GroupConfig, HistoryConfig, HistoryRule};
    use std::time::Duration;

    /// Setting the session's frame limit keeps every other group setting (it used to
    /// rebuild the config from five of them and drop history and the publish bounds).
    #[test]
    fn the_frame_limit_keeps_every_other_group_setting() {
        let history = HistoryConfig {
            rules: vec![HistoryRule {
                prefix: "room:".into(),
                max_len: 50,
                max_age: None,
            }],
            ..HistoryConfig::default()
        };
        let config = GroupConfig::builder()
            .history(history.clone())
            .max_pending_publishes(7)
            .max_group_backlog(9)
            .saturated_retry_after(Duration::from_millis(1234))
            .build()
            .unwrap();
        let out = group_config_with_frame(&config, 4096).unwrap();
        assert_eq!(out.max_frame_size(), 4096);
        assert_eq!(out.history(), &history);
        assert_eq!(out.max_pending_publishes(), 7);
        assert_eq!(out.max_group_backlog(), 9);
        assert_eq!(out.saturated_retry_after(), Duration::from_millis(1234));
    }
}

//! Gateway assembly: every transport of `longconn-transport` in front of one
//! `longconn_server::Server`, with a group registry, a forwarding router, the HTTP push
//! API and health endpoint, and graceful shutdown. [`Gateway::builder`] is the library
//! entry; the `gateway` binary is a thin command line over it (flags and a TOML file,
//! [`config`]).
//!
//! An embedded gateway with every listener, groups and the push API:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use longconn_core::{SessionConfig, TokenKey, TokenKeys};
//! use longconn_gateway::{Gateway, ListenerKind};
//! use longconn_group::GroupConfig;
//! use longconn_server::{EchoBackend, ServerConfig};
//! use longconn_transport::cert::TlsIdentity;
//!
//! let any = "127.0.0.1:0".parse()?;
//! let session = SessionConfig::builder().max_frame_size(256 * 1024).build()?;
//! let gateway = Gateway::builder()
//!     .server_config(ServerConfig::builder().node_id(7).session(session).build()?)
//!     .tcp(any).ws(any).quic(any).tls(any).wss(any).http(any)
//!     .tls_identity(TlsIdentity::self_signed(&["localhost"])?)
//!     .authenticator(TokenKeys::new(TokenKey::new("k1", b"a secret of 16+ bytes")?))
//!     .backend(9, EchoBackend)
//!     .groups(GroupConfig::builder().max_groups_per_connection(8).build()?)
//!     .shutdown_deadline(Duration::from_secs(5))
//!     .start()
//!     .await?;
//! // One frame limit everywhere: the session's.
//! assert_eq!(gateway.transport_config().max_frame_size(), 256 * 1024);
//! assert_eq!(gateway.groups().config().max_frame_size(), 256 * 1024);
//! assert!(gateway.local_addr(ListenerKind::Quic).is_some());
//! gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`builder`]: [`GatewayBuilder`], the one assembly (listeners, authenticator,
//!   backends or a router, groups, route store, group log, HTTP side), and the limits
//!   each part takes from the one `ServerConfig`.
//! - [`http`]: the HTTP router: `GET /healthz`, the push API, JSON 404s.
//! - [`metrics`]: the Prometheus recorder and `GET /metrics` (docs/METRICS.md).
//! - [`quality`]: `GET /v1/quality`, the client quality table.
//! - [`demo`]: the browser demo (`--demo`): a live room page built on the TypeScript
//!   SDK, its token route and the room handler on business 7.
//! - [`config`]: the reference binary's settings: embedded defaults (the libraries'),
//!   a TOML file, command-line flags; [`GatewaySettings::into_builder`] turns them into
//!   builder calls.

pub mod builder;
pub mod config;
pub mod demo;
pub mod http;
pub mod metrics;
pub mod quality;
pub mod quic_reset;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use longconn_group::GroupRegistry;
use longconn_server::{Server, ShutdownReport};
use longconn_transport::TransportConfig;
use tokio_util::sync::CancellationToken;

pub use builder::{DEFAULT_SHUTDOWN_DEADLINE, GatewayBuilder, PUSH_FRAME_OVERHEAD};
pub use config::{Cli, FileBackend, GatewaySettings};
pub use demo::{DEMO_BUSINESS, Demo};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A setting is missing, malformed, out of range, or does not fit with another.
    #[error("configuration: {0}")]
    Config(String),
    /// A listener could not be set up, or the transport limits are out of range.
    #[error(transparent)]
    Transport(#[from] longconn_transport::Error),
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Joining the cluster failed: Redis unreachable, or the node id is held by a live
    /// node (`longconn_cluster::Error::NodeIdTaken`).
    #[error("cluster: {0}")]
    Cluster(#[from] longconn_cluster::Error),
}

/// The kinds of listener a gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Plain TCP.
    Tcp,
    /// WebSocket at `/ws`.
    Ws,
    /// QUIC (UDP, ALPN `longconn`).
    Quic,
    /// TLS over TCP.
    Tls,
    /// WebSocket over TLS at `/ws`.
    Wss,
    /// HTTP: `GET /healthz` and the push API.
    Http,
}

impl ListenerKind {
    /// The label in logs and in [`Gateway::bound`]: `tcp`, `ws`, `quic`, `tls`, `wss`,
    /// `http`.
    pub fn label(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Ws => "ws",
            ListenerKind::Quic => "quic",
            ListenerKind::Tls => "tls",
            ListenerKind::Wss => "wss",
            ListenerKind::Http => "http",
        }
    }
}

/// A running gateway: its server, group registry, the addresses it bound, and its stop
/// signal.
#[derive(Debug)]
pub struct Gateway {
    server: Server,
    groups: Arc<GroupRegistry>,
    transport: TransportConfig,
    stop_http: CancellationToken,
    /// Resolves when the HTTP thread ([`http::spawn_thread`]) has stopped.
    http_task: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
    shutdown_deadline: Duration,
    /// The cluster node, when the gateway is one ([`GatewayBuilder::cluster`]).
    cluster: Option<longconn_cluster::ClusterNode>,
    /// What each listener bound, by label ([`ListenerKind::label`]; ports resolved when 0
    /// was asked for), in the order they were added, HTTP last.
    pub bound: Vec<(&'static str, SocketAddr)>,
}

impl Gateway {
    /// A builder for an embedded gateway; see [`GatewayBuilder`] for every part and its
    /// default.
    ///
    /// A gateway with a business handler and an authenticator of its own, on a random
    /// port, and one client request over raw TCP frames:
    ///
    /// ```
    /// use bytes::Bytes;
    /// use longconn_core::connection::{Connection, FrameReader, FrameWriter};
    /// use longconn_core::{Code, Frame, Metadata, Transmit};
    /// use longconn_gateway::{Gateway, ListenerKind};
    /// use longconn_server::{AuthGrant, Authenticator, BackendReply, FnBackend, LoginRequest};
    /// use longconn_transport::tcp::TcpConnection;
    ///
    /// /// Lets in every device of app `demo` that presents the token `let me in`.
    /// struct DemoAuth;
    ///
    /// #[async_trait::async_trait]
    /// impl Authenticator for DemoAuth {
    ///     async fn authenticate(&self, login: &LoginRequest, _now: u64) -> Result<AuthGrant, Code> {
    ///         if login.app.as_str() == "demo" && &login.token[..] == b"let me in" {
    ///             Ok(AuthGrant { expires_unix_s: None })
    ///         } else {
    ///             Err(Code::InvalidToken)
    ///         }
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Business 7 greets whoever calls it.
    /// let greeter = FnBackend::new(|request| async move {
    ///     let mut payload = b"hello, ".to_vec();
    ///     payload.extend_from_slice(&request.payload);
    ///     Ok(BackendReply { meta: request.meta, payload: payload.into() })
    /// });
    /// let gateway = Gateway::builder()
    ///     .tcp("127.0.0.1:0".parse()?)
    ///     .authenticator(DemoAuth)
    ///     .backend(7, greeter)
    ///     .start()
    ///     .await?;
    ///
    /// // A client speaking raw frames over TCP.
    /// let addr = gateway.local_addr(ListenerKind::Tcp).unwrap();
    /// let (mut reader, mut writer) = TcpConnection::connect(addr, 65_536).await?.split();
    /// let login = Frame::Login {
    ///     id: 1,
    ///     app: "demo".into(),
    ///     device: "phone-1".into(),
    ///     token: Bytes::from_static(b"let me in"),
    ///     meta: Metadata::new(),
    /// };
    /// writer.send(Transmit::Frame(login))?;
    /// writer.flush().await?;
    /// assert!(matches!(reader.recv().await?, Some(Frame::LoginAck { id: 1, .. })));
    /// let request = Frame::Request {
    ///     id: 2,
    ///     business: 7,
    ///     meta: Metadata::new(),
    ///     payload: Bytes::from_static(b"world"),
    /// };
    /// writer.send(Transmit::Frame(request))?;
    /// writer.flush().await?;
    /// match reader.recv().await? {
    ///     Some(Frame::Response { id: 2, payload, .. }) => assert_eq!(payload, "hello, world"),
    ///     other => panic!("expected the greeting, got {other:?}"),
    /// }
    ///
    /// let report = gateway.shutdown().await;
    /// assert_eq!(report.connections, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Binds every listener of `settings` and starts serving: the reference binary's
    /// path, [`GatewaySettings::into_builder`] then [`GatewayBuilder::start`].
    pub async fn start(settings: GatewaySettings) -> Result<Gateway, GatewayError> {
        settings.into_builder()?.start().await
    }

    /// The address the first listener of `kind` bound, if there is one.
    pub fn local_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(label, _)| *label == kind.label())
            .map(|(_, addr)| *addr)
    }

    /// The runtime server (for pushes, kicks and inspection).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The group registry (for server-side joins and publishes).
    pub fn groups(&self) -> &Arc<GroupRegistry> {
        &self.groups
    }

    /// The cluster node, when the gateway is one.
    pub fn cluster(&self) -> Option<&longconn_cluster::ClusterNode> {
        self.cluster.as_ref()
    }

    /// The limits every acceptor was bound with (its frame limit is the session's).
    pub fn transport_config(&self) -> &TransportConfig {
        &self.transport
    }

    /// Graceful shutdown: drains every session (until the builder's shutdown deadline),
    /// then stops the HTTP side. A cluster node first marks itself draining in the
    /// registry; the server's drain unregisters its routes (compare-and-delete) before
    /// it returns; then the relay stops and the node entry is removed; the HTTP side
    /// stops last.
    pub async fn shutdown(mut self) -> ShutdownReport {
        if let Some(node) = &self.cluster {
            if let Err(err) = node.drain().await {
                tracing::warn!(error = %err, "cluster: draining flag not written");
            }
        }
        let report = self.server.shutdown(self.shutdown_deadline).await;
        // Before the HTTP thread stops: redis-rs re-establishes a lost connection on the
        // runtime of the call that found it broken, which may be the HTTP thread's, and
        // the connection dies with that runtime.
        if let Some(node) = self.cluster.take() {
            match node.shutdown().await {
                Ok(()) => tracing::info!("cluster: node deregistered"),
                Err(err) => tracing::warn!(error = %err, "cluster: node entry not removed"),
            }
        }
        self.stop_http.cancel();
        if let Some(task) = self.http_task.take() {
            let _ = task.await;
        }
        report
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] stops its HTTP thread too.
    fn drop(&mut self) {
        self.stop_http.cancel();
    }
}

/// Resolves when the process is asked to stop (SIGTERM, or Ctrl-C / SIGINT).
pub async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => Ok(()),
            result = tokio::signal::ctrl_c() => result,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

//! The reference gateway: every transport of `longconn-transport` in front of one
//! `longconn_server::Server` with a group registry and a forwarding router (echo
//! on business 1, HTTP callbacks from the config), the HTTP push API and health
//! endpoint, and graceful shutdown on SIGTERM or Ctrl-C.

pub mod config;
pub mod http;

use std::sync::Arc;

use longconn_core::{TokenKey, TokenKeys};
use longconn_group::GroupRegistry;
use longconn_http::{ApiLimits, HttpBackend, HttpBackendConfig, PushApi};
use longconn_server::{
    BackendLimits, ECHO_BUSINESS, EchoBackend, Listener, Router, Server, ServerConfig,
    ShutdownReport,
};
use longconn_transport::cert::TlsIdentity;
use longconn_transport::quic::QuicAcceptor;
use longconn_transport::tcp::TcpAcceptor;
use longconn_transport::tls::TlsAcceptor;
use longconn_transport::ws::WsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{Cli, FileBackend, GatewaySettings};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A setting is missing, malformed or out of range.
    #[error("configuration: {0}")]
    Config(String),
    /// A listener could not be set up.
    #[error(transparent)]
    Transport(#[from] longconn_transport::Error),
    /// A socket operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A running gateway: its server, the addresses it bound, and its stop signal.
#[derive(Debug)]
pub struct Gateway {
    server: Server,
    groups: Arc<GroupRegistry>,
    stop_http: CancellationToken,
    http_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    settings: GatewaySettings,
    /// What each listener bound, by label (ports resolved when 0 was asked for).
    pub bound: Vec<(&'static str, std::net::SocketAddr)>,
}

impl Gateway {
    /// Binds every configured listener and starts serving.
    pub async fn start(settings: GatewaySettings) -> Result<Gateway, GatewayError> {
        let keys = token_keys(&settings)?;
        if settings.dev_secret {
            warn!(
                "USING THE BUILT-IN DEVELOPMENT TOKEN SECRET: anyone can log in. Set \
                 --token-secret or [[token_keys]] for any real deployment."
            );
        }
        let config = ServerConfig::builder()
            .node_id(settings.node_id)
            .max_connections(settings.max_connections)
            .session(settings.session.clone())
            .shutdown_retry_after(settings.shutdown_retry_after)
            .build()
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let max_frame = settings.session.max_frame_size();
        let groups = Arc::new(GroupRegistry::new(settings.groups.clone()));
        let server = Server::builder(config, Arc::new(keys))
            .router(Arc::new(router(&settings.backends)?))
            .groups(groups.clone())
            .build();
        let mut bound = Vec::new();
        let reuse = settings.reuse_port;
        if let Some(addr) = settings.tcp {
            let acceptor = TcpAcceptor::bind(addr, max_frame, reuse)?;
            bound.push(("tcp", acceptor.local_addr()?));
            server.serve(acceptor);
        }
        if let Some(addr) = settings.ws {
            let acceptor = WsAcceptor::bind(addr, max_frame, reuse)?;
            bound.push(("ws", acceptor.local_addr()?));
            server.serve(acceptor);
        }
        if settings.quic.is_some() || settings.tls.is_some() || settings.wss.is_some() {
            let identity = tls_identity(&settings)?;
            if let Some(addr) = settings.quic {
                let acceptor = QuicAcceptor::bind(addr, &identity, max_frame)?;
                bound.push(("quic", acceptor.local_addr()?));
                server.serve(acceptor);
            }
            let tcp_tls = Arc::new(identity.server_config(&[], false)?);
            if let Some(addr) = settings.tls {
                let acceptor = TlsAcceptor::bind(addr, tcp_tls.clone(), max_frame, reuse)?;
                bound.push(("tls", acceptor.local_addr()?));
                server.serve(acceptor);
            }
            if let Some(addr) = settings.wss {
                let acceptor = WsAcceptor::bind_tls(addr, tcp_tls, max_frame, reuse)?;
                bound.push(("wss", acceptor.local_addr()?));
                server.serve(acceptor);
            }
        }
        let stop_http = CancellationToken::new();
        let mut http_task = None;
        if let Some(addr) = settings.http {
            let listener = http::bind(addr).await?;
            bound.push(("http", listener.local_addr()?));
            let limits = ApiLimits {
                // Room for the header and fields inside one frame.
                max_payload: max_frame.saturating_sub(1024),
                ..ApiLimits::default()
            };
            let api = PushApi::new(server.clone(), groups.clone(), limits);
            http_task = Some(tokio::spawn(http::serve(
                listener,
                server.clone(),
                api,
                stop_http.clone(),
            )));
        }
        for (label, addr) in &bound {
            info!(%addr, "{label} listening");
        }
        Ok(Gateway {
            server,
            groups,
            stop_http,
            http_task,
            settings,
            bound,
        })
    }

    /// The runtime server (for pushes and inspection).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The group registry (for server-side joins and publishes).
    pub fn groups(&self) -> &Arc<GroupRegistry> {
        &self.groups
    }

    /// Graceful shutdown: drains every session, then stops the HTTP side.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let report = self.server.shutdown(self.settings.shutdown_deadline).await;
        self.stop_http.cancel();
        if let Some(task) = self.http_task.take() {
            let _ = task.await;
        }
        report
    }
}

/// The forwarding rules: the echo backend on business 1 (unless a configured rule claims
/// it), then one HTTP callback backend per `[[backends]]` entry.
fn router(backends: &[FileBackend]) -> Result<Router, GatewayError> {
    let claims_echo = backends.iter().any(|b| {
        b.businesses.contains(&ECHO_BUSINESS)
            || b.ranges
                .iter()
                .any(|[lo, hi]| (*lo..=*hi).contains(&ECHO_BUSINESS))
    });
    let mut builder = Router::builder();
    if !claims_echo {
        builder = builder
            .backend("echo", EchoBackend, BackendLimits::default())
            .route(ECHO_BUSINESS, "echo");
    }
    for b in backends {
        let config = GatewayError::Config;
        let http = HttpBackend::new(HttpBackendConfig {
            events_url: b.events_url.clone(),
            ..HttpBackendConfig::new(b.url.clone())
        })
        .map_err(|e| config(format!("backend `{}`: {e}", b.name)))?;
        let defaults = BackendLimits::default();
        let limits = BackendLimits {
            timeout: b
                .timeout_ms
                .map_or(defaults.timeout, std::time::Duration::from_millis),
            max_concurrency: b.max_concurrency.unwrap_or(defaults.max_concurrency),
        };
        builder = builder.backend(&b.name, http, limits);
        for &business in &b.businesses {
            builder = builder.route(business, &b.name);
        }
        for &[lo, hi] in &b.ranges {
            builder = builder.route_range(lo..=hi, &b.name);
        }
        if b.default {
            builder = builder.default_route(&b.name);
        }
        if b.events_url.is_some() {
            builder = builder.subscribe(&b.name);
        }
    }
    builder
        .build()
        .map_err(|e| GatewayError::Config(format!("backends: {e}")))
}

/// The configured certificate, or a freshly generated development one written to
/// `dev_cert_dir` so that clients can trust it with `--ca`.
fn tls_identity(settings: &GatewaySettings) -> Result<TlsIdentity, GatewayError> {
    if let Some((cert, key)) = &settings.tls_files {
        return Ok(TlsIdentity::from_pem_files(cert, key)?);
    }
    let identity = TlsIdentity::self_signed(&["localhost", "127.0.0.1", "::1"])?;
    let dir = &settings.dev_cert_dir;
    std::fs::create_dir_all(dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    identity.write_pem_files(&cert, &key)?;
    warn!(
        cert = %cert.display(),
        fingerprint = %identity.fingerprint_sha256(),
        "USING A GENERATED DEVELOPMENT CERTIFICATE for QUIC/TLS/wss. Clients must trust \
         this file (--ca) or skip verification in development only (--insecure). \
         Pass --tls-cert and --tls-key for any real deployment."
    );
    Ok(identity)
}

fn token_keys(settings: &GatewaySettings) -> Result<TokenKeys, GatewayError> {
    let mut keys: Option<TokenKeys> = None;
    for (id, secret) in &settings.token_keys {
        let key = TokenKey::new(id, secret.as_bytes())
            .map_err(|e| GatewayError::Config(format!("token key `{id}`: {e}")))?;
        keys = Some(match keys {
            None => TokenKeys::new(key),
            Some(keys) => keys.with_verify_key(key),
        });
    }
    keys.ok_or_else(|| GatewayError::Config("no token key".into()))
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

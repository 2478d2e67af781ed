//! Gateway settings of the reference binary: embedded defaults, overridden by a TOML
//! file, overridden by flags; [`GatewaySettings::into_builder`] turns them into
//! [`GatewayBuilder`] calls.
//!
//! The defaults are the libraries' (`ServerConfig::default()`, `SessionConfig::default()`,
//! `TransportConfig::default()`, `GroupConfig::default()`, [`DEFAULT_SHUTDOWN_DEADLINE`]):
//! a setting given by neither the file nor a flag is left to its library's builder. Only
//! what exists in the binary alone (listen addresses, the key id of `--token-secret`, the
//! development certificate's directory) is defined here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use longconn_cluster::{ClusterConfig, RedisTarget};
use longconn_core::{SessionConfig, SlowConsumerPolicy, TokenKey, TokenKeys};
use longconn_group::GroupConfig;
use longconn_http::{ApiKeys, HttpBackend, HttpBackendConfig};
use longconn_server::{
    BackendLimits, ECHO_BUSINESS, EchoBackend, QualityConfig, Router, ServerConfig,
};
use longconn_transport::TransportConfig;
use longconn_transport::cert::TlsIdentity;
use serde::Deserialize;
use tracing::warn;

use crate::demo::{DEMO_BUSINESS, Demo};
use crate::{DEFAULT_SHUTDOWN_DEADLINE, GatewayBuilder, GatewayError, ListenerKind};

pub use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};

/// Default `--tcp`.
pub const DEFAULT_TCP: &str = "127.0.0.1:7100";
/// Default `--ws`.
pub const DEFAULT_WS: &str = "127.0.0.1:7101";
/// Default `--quic`.
pub const DEFAULT_QUIC: &str = "127.0.0.1:7102";
/// Default `--http`.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7180";
/// Default `--token-key-id`.
pub const DEFAULT_TOKEN_KEY_ID: &str = "k1";

/// Command-line flags of the `gateway` binary. Every flag overrides the same setting
/// from `--config`; anything set by neither keeps its embedded default.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about = "longconn reference gateway")]
pub struct Cli {
    /// TOML file with settings (see docs/GATEWAY.md for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TCP listen address, or `off` [default: 127.0.0.1:7100].
    #[arg(long, value_name = "ADDR|off")]
    pub tcp: Option<Listen>,
    /// WebSocket listen address (path /ws), or `off` [default: 127.0.0.1:7101].
    #[arg(long, value_name = "ADDR|off")]
    pub ws: Option<Listen>,
    /// QUIC listen address (UDP, ALPN longconn), or `off` [default: 127.0.0.1:7102].
    #[arg(long, value_name = "ADDR|off")]
    pub quic: Option<Listen>,
    /// TLS-over-TCP listen address, or `off` [default: off].
    #[arg(long, value_name = "ADDR|off")]
    pub tls: Option<Listen>,
    /// WebSocket-over-TLS (wss) listen address, or `off` [default: off].
    #[arg(long, value_name = "ADDR|off")]
    pub wss: Option<Listen>,
    /// PEM certificate chain for TLS, wss and QUIC [default: a generated development
    /// certificate, with a warning].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where the development certificate is written [default: a directory of this
    /// gateway's own, $TMPDIR/longconn-dev-cert-<listener>-<ip>-<port> after its first
    /// QUIC, TLS or wss listener, e.g. /tmp/longconn-dev-cert-quic-127.0.0.1-7102].
    #[arg(long, value_name = "DIR")]
    pub dev_cert_dir: Option<PathBuf>,
    /// HTTP listen address for /healthz and the push API, or `off`
    /// [default: 127.0.0.1:7180].
    #[arg(long, value_name = "ADDR|off")]
    pub http: Option<Listen>,
    /// Node id carried in every connection id, 0..=65535 [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<u16>,
    /// HMAC secret for login tokens (at least 16 bytes) [default: a development secret,
    /// with a warning].
    #[arg(long, value_name = "SECRET")]
    pub token_secret: Option<String>,
    /// Key id of --token-secret, carried in the tokens it signs [default: k1].
    #[arg(long, value_name = "ID")]
    pub token_key_id: Option<String>,
    /// Connections admitted at once over all listeners [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Bind listeners with SO_REUSEPORT, so several gateways can share the ports.
    #[arg(long)]
    pub reuse_port: bool,
    /// Join a cluster on this Redis (`redis://host:port/db`): routes, group positions,
    /// the node registry and cross-node delivery live there. Every node needs its own
    /// --node-id [default: no cluster, in-memory routes].
    #[arg(long, value_name = "URL", conflicts_with = "redis_cluster")]
    pub redis: Option<String>,
    /// Join a cluster on this Redis Cluster (seed URLs, comma-separated). Not built in
    /// this build yet: refused at start.
    #[arg(long, value_name = "URL,URL,...", value_delimiter = ',')]
    pub redis_cluster: Option<Vec<String>>,
    /// Addresses clients reach this node at, per transport, written to the cluster's
    /// node registry: `tcp=HOST:PORT,ws=...`. Set it when the listeners bind 0.0.0.0 or
    /// sit behind NAT or a load balancer [default: the bound listen addresses].
    #[arg(long, value_name = "NAME=ADDR,...", value_delimiter = ',', value_parser = parse_advertised)]
    pub advertise: Option<Vec<(String, String)>>,
    /// Serve the browser demo at http://<--http>/demo/: a live room on the TypeScript
    /// SDK, with a route that mints tokens for app `demo` for anyone (development only).
    /// Needs the HTTP and WebSocket listeners; takes business 7.
    #[arg(long)]
    pub demo: bool,
    /// Do not record metrics (no recorder is installed; `GET /metrics` answers 404
    /// `metrics_off`). For measuring what the metrics cost.
    #[arg(long)]
    pub no_metrics: bool,
    /// Log line format: `text` (human) or `json` (one object per line). Filter with
    /// RUST_LOG (e.g. `info,longconn_server=debug`) [default: info].
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// An API key for the push API, `ID:SECRET` (secret of 16+ bytes, sent as
    /// `Authorization: Bearer SECRET`); repeat for several keys. Replaces
    /// `[[http.api_keys]]` [default: none: the API is open, allowed on a loopback --http
    /// only].
    #[arg(long = "api-key", value_name = "ID:SECRET")]
    pub api_keys: Vec<String>,
    /// A browser origin (`scheme://host[:port]`, or `*` for any) allowed to open a
    /// WebSocket; repeat for several; replaces `[ws] allowed_origins`. Others get 403;
    /// native clients (no Origin header) always pass [default: any origin on a loopback
    /// ws/wss listener, none on another].
    #[arg(long = "ws-allowed-origin", value_name = "ORIGIN")]
    pub ws_allowed_origins: Vec<String>,
    /// Secret the QUIC listener's stateless-reset key is derived from (with the node
    /// id), so a restarted node resets its previous process's QUIC connections at once.
    /// Keep it stable across restarts [default: the signing token secret].
    #[arg(long, value_name = "SECRET")]
    pub quic_reset_secret: Option<String>,
    /// Connections admitted per second over all listeners, or `off`; more are answered
    /// `Close(try_later)` with a delay [default: 5000].
    #[arg(long, value_name = "N|off", value_parser = parse_limit)]
    pub max_accept_rate: Option<Limit>,
    /// Connections one source IP may hold, or `off`; more are answered
    /// `Close(source_limit)` [default: off].
    #[arg(long, value_name = "N|off", value_parser = parse_limit)]
    pub max_connections_per_ip: Option<Limit>,
    /// Login attempts one device may make per minute, or `off`; more are refused with
    /// `Close(login_rate_limited)` [default: 30].
    #[arg(long, value_name = "N|off", value_parser = parse_limit)]
    pub max_logins_per_device: Option<Limit>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A limit flag: a positive number, or `off` (no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u32>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    if s == "off" {
        return Ok(Limit(None));
    }
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Limit(Some(n))),
        _ => Err(format!("`{s}` is not a positive number or `off`")),
    }
}

/// One `--advertise` entry: `name=address`.
fn parse_advertised(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, addr)) if !name.is_empty() && !addr.is_empty() => {
            Ok((name.to_owned(), addr.to_owned()))
        }
        _ => Err(format!(
            "`{s}` is not NAME=ADDRESS (like tcp=10.0.0.5:7100)"
        )),
    }
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        s.parse()
            .map(|addr| Listen(Some(addr)))
            .map_err(|e| format!("`{s}` is neither an address like 127.0.0.1:7100 nor `off`: {e}"))
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The TOML file's shape. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Cli::node_id`].
    pub node_id: Option<u16>,
    /// See [`Cli::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`Cli::reuse_port`].
    pub reuse_port: Option<bool>,
    /// Listen addresses.
    pub listen: FileListen,
    /// Certificate files.
    pub tls: FileTls,
    /// Token keys; the first signs, all verify (rotation).
    pub token_keys: Vec<FileTokenKey>,
    /// Session limits and timers.
    pub session: FileSession,
    /// Graceful shutdown.
    pub shutdown: FileShutdown,
    /// Acceptor limits.
    pub transport: FileTransport,
    /// Group limits.
    pub groups: FileGroups,
    /// Forwarding rules to HTTP callbacks (business 1 stays on the echo backend unless
    /// a rule claims it).
    pub backends: Vec<FileBackend>,
    /// Cluster on Redis; absent: a single node on memory.
    pub cluster: FileCluster,
    /// See [`Cli::max_accept_rate`]; 0: no limit.
    pub max_accept_rate: Option<u32>,
    /// See [`Cli::max_connections_per_ip`]; 0: no limit.
    pub max_connections_per_ip: Option<u32>,
    /// See [`Cli::max_logins_per_device`]; 0: no limit.
    pub max_logins_per_device: Option<u32>,
    /// The HTTP side: API keys.
    pub http: FileHttp,
    /// WebSocket listeners: the Origin allowlist.
    pub ws: FileWs,
    /// Network bucket thresholds of client quality reports.
    pub quality: FileQuality,
}

/// `[ws]`: `allowed_origins = ["https://app.example", ...]` (see
/// [`Cli::ws_allowed_origins`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileWs {
    /// See [`Cli::ws_allowed_origins`].
    pub allowed_origins: Option<Vec<String>>,
}

/// `[http]`: the push API's keys (`[[http.api_keys]]` entries with `id` and `secret`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileHttp {
    /// See [`Cli::api_keys`].
    pub api_keys: Vec<FileTokenKey>,
}

/// `[quality]`: see `longconn_server::QualityConfig` for each value's meaning, default
/// and range (defaults: good up to 1 % loss and 100 ms median round trip, weak above
/// 5 % loss or 300 ms).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileQuality {
    /// Largest ping loss (0..=1) of a good network.
    pub good_loss: Option<f64>,
    /// Largest median round trip of a good network, ms.
    pub good_rtt_ms: Option<u64>,
    /// Ping loss (0..=1) above which a network is weak.
    pub weak_loss: Option<f64>,
    /// Median round trip above which a network is weak, ms.
    pub weak_rtt_ms: Option<u64>,
}

/// `[cluster]`: see `longconn_cluster::ClusterConfig` for each value's meaning, default
/// and range. Without `redis` or `redis_cluster` (here or as a flag) the other keys are
/// refused: they would do nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileCluster {
    /// See [`Cli::redis`].
    pub redis: Option<String>,
    /// See [`Cli::redis_cluster`].
    pub redis_cluster: Option<Vec<String>>,
    /// See [`Cli::advertise`]: `{ tcp = "10.0.0.5:7100", ws = "10.0.0.5:7101" }`.
    pub advertise: Option<std::collections::BTreeMap<String, String>>,
    /// Prefix of every key and channel (default `lc:`).
    pub key_prefix: Option<String>,
    /// Route TTL, milliseconds (default 30000).
    pub route_ttl_ms: Option<u64>,
    /// Node entry TTL, milliseconds (default 15000).
    pub node_ttl_ms: Option<u64>,
    /// Relay call timeout, milliseconds (default 2000).
    pub relay_timeout_ms: Option<u64>,
}

/// `[transport]`: see `longconn_transport::TransportConfig` for each value's meaning and
/// range. The frame limit is `[session] max_frame_size`; `SO_REUSEPORT` is `reuse_port`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileTransport {
    /// `listen(2)` backlog of TCP-based listeners.
    pub listen_backlog: Option<u32>,
    /// Largest WebSocket upgrade request head, bytes.
    pub ws_max_request_head: Option<usize>,
    /// QUIC idle timeout, milliseconds.
    pub quic_idle_timeout_ms: Option<u64>,
    /// QUIC keep-alive interval, milliseconds; 0: none.
    pub quic_keep_alive_ms: Option<u64>,
    /// QUIC flow-control windows, bytes.
    pub quic_stream_window: Option<u32>,
    /// See [`Cli::quic_reset_secret`].
    pub quic_reset_secret: Option<String>,
}

/// `[groups]`: see `longconn_group::GroupConfig` for each value's meaning and range.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileGroups {
    /// Groups one connection may be in.
    pub max_groups_per_connection: Option<usize>,
    /// Members one group may have on this node.
    pub max_members_per_group: Option<usize>,
    /// Longest group id, bytes.
    pub max_group_id_len: Option<usize>,
    /// Members per fan-out chunk.
    pub fanout_chunk: Option<usize>,
    /// Fan-out worker tasks.
    pub fanout_workers: Option<usize>,
    /// Publishes to one group waiting here before more get 503 `group_saturated`.
    pub max_pending_publishes: Option<usize>,
    /// Pushes waiting in most sampled members' queues at which a group is saturated.
    pub max_group_backlog: Option<usize>,
    /// Retry hint of a 503 `group_saturated`, milliseconds.
    pub saturated_retry_after_ms: Option<u64>,
    /// `[[groups.history]]`: groups that keep their recent publications in memory for
    /// recovery after a reconnect (first matching prefix wins; none: off).
    pub history: Vec<FileHistoryRule>,
    /// Most groups with history kept at once (default 10000).
    pub history_max_groups: Option<usize>,
}

/// One `[[groups.history]]` rule: see `longconn_group::HistoryRule`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileHistoryRule {
    /// Groups whose name starts with this (`""`: every group).
    pub prefix: String,
    /// Most publications kept per group, 1 to 100000.
    pub max_len: usize,
    /// Oldest publication kept, milliseconds; absent: no age limit.
    pub max_age_ms: Option<u64>,
}

/// One `[[backends]]` entry: an HTTP callback and the business ids it serves.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    /// Name, for logs and errors.
    pub name: String,
    /// Where requests are POSTed (`http://` or `https://`).
    pub url: String,
    /// Where connection events are POSTed; setting it subscribes the backend.
    #[serde(default)]
    pub events_url: Option<String>,
    /// Per-call timeout, milliseconds. Default 5000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Calls in flight at once. Default 1024.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Exact business ids.
    #[serde(default)]
    pub businesses: Vec<u32>,
    /// Inclusive business id ranges, `[[100, 199]]`.
    #[serde(default)]
    pub ranges: Vec<[u32; 2]>,
    /// Serves every business id no other rule matches.
    #[serde(default)]
    pub default: bool,
    /// A PEM file of certificates trusted for an `https://` url or events_url, besides
    /// the system's roots (a private CA, or the backend's self-signed certificate).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// `[listen]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileListen {
    /// See [`Cli::tcp`].
    pub tcp: Option<Listen>,
    /// See [`Cli::http`].
    pub http: Option<Listen>,
    /// See [`Cli::ws`].
    pub ws: Option<Listen>,
    /// See [`Cli::quic`].
    pub quic: Option<Listen>,
    /// See [`Cli::tls`].
    pub tls: Option<Listen>,
    /// See [`Cli::wss`].
    pub wss: Option<Listen>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileTls {
    /// See [`Cli::tls_cert`].
    pub cert: Option<PathBuf>,
    /// See [`Cli::tls_key`].
    pub key: Option<PathBuf>,
    /// See [`Cli::dev_cert_dir`].
    pub dev_cert_dir: Option<PathBuf>,
}

/// One `[[token_keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTokenKey {
    /// Key id.
    pub id: String,
    /// HMAC secret.
    pub secret: String,
}

/// `[session]`: see `longconn_core::SessionConfig` for each value's meaning and range.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSession {
    /// Largest frame, bytes.
    pub max_frame_size: Option<usize>,
    /// Milliseconds.
    pub login_timeout_ms: Option<u64>,
    /// Milliseconds.
    pub heartbeat_interval_ms: Option<u64>,
    /// Milliseconds.
    pub idle_timeout_ms: Option<u64>,
    /// Milliseconds.
    pub token_refresh_grace_ms: Option<u64>,
    /// Milliseconds.
    pub drain_timeout_ms: Option<u64>,
    /// Pushes waiting per connection.
    pub max_queued_pushes: Option<usize>,
    /// `drop_newest` or `disconnect`.
    pub slow_consumer_policy: Option<String>,
    /// Requests waiting for a backend per connection.
    pub max_inflight_requests: Option<u32>,
    /// Upstream requests per connection per second.
    pub max_requests_per_second: Option<u32>,
    /// Largest login metadata, bytes.
    pub max_login_meta_size: Option<usize>,
}

/// `[shutdown]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileShutdown {
    /// Reconnect hint sent in `GoAway`, milliseconds.
    pub retry_after_ms: Option<u64>,
    /// Time allowed for the whole drain, milliseconds.
    pub deadline_ms: Option<u64>,
}

/// The resolved settings the gateway runs with.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Node id, admission limit, per-connection limits and timers (the frame limit is
    /// the session's), `GoAway` hint.
    pub server: ServerConfig,
    /// Acceptor limits (`SO_REUSEPORT`, backlog, WebSocket and QUIC parameters).
    pub transport: TransportConfig,
    /// Group limits.
    pub groups: GroupConfig,
    /// Drain deadline.
    pub shutdown_deadline: Duration,
    /// TCP listener.
    pub tcp: Option<SocketAddr>,
    /// HTTP listener.
    pub http: Option<SocketAddr>,
    /// WebSocket listener.
    pub ws: Option<SocketAddr>,
    /// QUIC listener.
    pub quic: Option<SocketAddr>,
    /// TLS-over-TCP listener.
    pub tls: Option<SocketAddr>,
    /// WebSocket-over-TLS listener.
    pub wss: Option<SocketAddr>,
    /// (certificate chain, key) PEM files; `None`: generate a development certificate.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Where a development certificate is written.
    pub dev_cert_dir: PathBuf,
    /// (key id, secret) pairs; the first signs.
    pub token_keys: Vec<(String, String)>,
    /// Whether the development secret is in use.
    pub dev_secret: bool,
    /// HTTP callback rules.
    pub backends: Vec<FileBackend>,
    /// The cluster to join, if any (its node id is the server's).
    pub cluster: Option<ClusterConfig>,
    /// Whether the browser demo is on (`--demo`).
    pub demo: bool,
    /// The push API's keys, (id, secret); empty: open (loopback only).
    pub api_keys: Vec<(String, String)>,
    /// Browser origins allowed on the WebSocket listeners; `None`: the default policy.
    pub ws_allowed_origins: Option<Vec<String>>,
}

impl GatewaySettings {
    /// Resolves defaults, then `--config`, then flags.
    pub fn resolve(cli: Cli) -> Result<GatewaySettings, GatewayError> {
        let file = match &cli.config {
            Some(path) => load(path)?,
            None => FileConfig::default(),
        };
        Self::resolve_file(cli, file)
    }

    /// [`GatewaySettings::resolve`] with the text of a config file instead of
    /// `--config` (which is ignored): the same TOML parsing and validation, without
    /// reading a file. Not a stable API: the config fuzz target
    /// (fuzz/fuzz_targets/config.rs) drives the real parser through it.
    ///
    /// # Errors
    /// [`GatewayError::Config`] for text that is not TOML of the documented shape or
    /// holds a value out of range.
    #[doc(hidden)]
    pub fn resolve_text(cli: Cli, text: &str) -> Result<GatewaySettings, GatewayError> {
        let file = toml::from_str(text).map_err(|e| GatewayError::Config(e.to_string()))?;
        Self::resolve_file(cli, file)
    }

    fn resolve_file(cli: Cli, file: FileConfig) -> Result<GatewaySettings, GatewayError> {
        let listen = |flag: Option<Listen>, file: Option<Listen>, default: Option<&str>| {
            flag.or(file)
                .map(|l| l.0)
                .unwrap_or_else(|| default.and_then(|d| d.parse().ok()))
        };
        let mut token_keys: Vec<(String, String)> = file
            .token_keys
            .into_iter()
            .map(|k| (k.id, k.secret))
            .collect();
        if let Some(secret) = cli.token_secret {
            let id = cli
                .token_key_id
                .unwrap_or_else(|| DEFAULT_TOKEN_KEY_ID.to_owned());
            token_keys = vec![(id, secret)];
        }
        let dev_secret = token_keys.is_empty();
        if dev_secret {
            token_keys.push((DEV_TOKEN_KEY_ID.to_owned(), DEV_TOKEN_SECRET.to_owned()));
        }
        let session = session_config(&file.session)?;
        let max_frame = session.max_frame_size();
        let mut server = ServerConfig::builder().session(session);
        if let Some(v) = cli.node_id.or(file.node_id) {
            server = server.node_id(v);
        }
        if let Some(v) = cli.max_connections.or(file.max_connections) {
            server = server.max_connections(v);
        }
        if let Some(v) = file.shutdown.retry_after_ms {
            server = server.shutdown_retry_after(Duration::from_millis(v));
        }
        let zero_off = |v: u32| (v > 0).then_some(v);
        if let Some(v) = cli
            .max_accept_rate
            .map(|l| l.0)
            .or(file.max_accept_rate.map(zero_off))
        {
            server = server.max_accept_rate(v);
        }
        if let Some(v) = cli
            .max_connections_per_ip
            .map(|l| l.0)
            .or(file.max_connections_per_ip.map(zero_off))
        {
            server = server.max_connections_per_ip(v);
        }
        if let Some(v) = cli
            .max_logins_per_device
            .map(|l| l.0)
            .or(file.max_logins_per_device.map(zero_off))
        {
            server = server.max_logins_per_device(v);
        }
        server = server.quality(quality_config(&file.quality)?);
        let server = server
            .build()
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        let cluster = cluster_config(
            &file.cluster,
            cli.redis,
            cli.redis_cluster,
            cli.advertise,
            server.node_id(),
        )?;
        let reuse_port = if cli.reuse_port {
            Some(true)
        } else {
            file.reuse_port
        };
        let reset_secret = cli
            .quic_reset_secret
            .or_else(|| file.transport.quic_reset_secret.clone())
            .unwrap_or_else(|| token_keys[0].1.clone());
        let reset_key = crate::quic_reset::derive(reset_secret.as_bytes(), server.node_id());
        let transport = transport_config(&file.transport, max_frame, reuse_port)?
            .to_builder()
            .quic_reset_key(Some(reset_key))
            .build()?;
        let mut settings = GatewaySettings {
            server,
            transport,
            groups: group_config(&file.groups, max_frame, cli.demo)?,
            shutdown_deadline: file
                .shutdown
                .deadline_ms
                .map_or(DEFAULT_SHUTDOWN_DEADLINE, Duration::from_millis),
            tcp: listen(cli.tcp, file.listen.tcp, Some(DEFAULT_TCP)),
            http: listen(cli.http, file.listen.http, Some(DEFAULT_HTTP)),
            ws: listen(cli.ws, file.listen.ws, Some(DEFAULT_WS)),
            quic: listen(cli.quic, file.listen.quic, Some(DEFAULT_QUIC)),
            tls: listen(cli.tls, file.listen.tls, None),
            wss: listen(cli.wss, file.listen.wss, None),
            tls_files: match (cli.tls_cert.or(file.tls.cert), cli.tls_key.or(file.tls.key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => {
                    return Err(GatewayError::Config(
                        "tls: give both the certificate and the key".into(),
                    ));
                }
            },
            dev_cert_dir: cli
                .dev_cert_dir
                .or(file.tls.dev_cert_dir)
                .unwrap_or_default(),
            token_keys,
            dev_secret,
            backends: file.backends,
            cluster,
            demo: cli.demo,
            api_keys: if cli.api_keys.is_empty() {
                file.http
                    .api_keys
                    .into_iter()
                    .map(|k| (k.id, k.secret))
                    .collect()
            } else {
                cli.api_keys
                    .iter()
                    .map(|k| ApiKeys::split_id_secret(k))
                    .collect::<Result<_, _>>()
                    .map_err(|e| GatewayError::Config(format!("--api-key: {e}")))?
            },
            ws_allowed_origins: if cli.ws_allowed_origins.is_empty() {
                file.ws.allowed_origins
            } else {
                Some(cli.ws_allowed_origins)
            },
        };
        if settings.dev_cert_dir.as_os_str().is_empty() {
            settings.dev_cert_dir = default_dev_cert_dir(&settings);
        }
        Ok(settings)
    }

    /// The builder calls these settings stand for: listeners, token keys (none while the
    /// development secret is in use, so the builder warns about its default), the
    /// forwarding rules, and a TLS identity if a QUIC, TLS or wss listener is on (from
    /// the PEM files, or generated and written to `dev_cert_dir`).
    pub fn into_builder(self) -> Result<GatewayBuilder, GatewayError> {
        let demo = if self.demo {
            Some(Demo::new(token_keys(&self.token_keys)?))
        } else {
            None
        };
        let mut builder = crate::Gateway::builder()
            .server_config(self.server.clone())
            .transport(self.transport.clone())
            .groups(self.groups.clone())
            .shutdown_deadline(self.shutdown_deadline)
            .router(router(&self.backends, demo.as_ref())?);
        if let Some(demo) = demo {
            builder = builder.demo(demo);
        }
        if !self.dev_secret {
            builder = builder.authenticator(token_keys(&self.token_keys)?);
        }
        let listeners = [
            (ListenerKind::Tcp, self.tcp),
            (ListenerKind::Ws, self.ws),
            (ListenerKind::Quic, self.quic),
            (ListenerKind::Tls, self.tls),
            (ListenerKind::Wss, self.wss),
            (ListenerKind::Http, self.http),
        ];
        for (kind, addr) in listeners {
            if let Some(addr) = addr {
                builder = builder.listen(kind, addr);
            }
        }
        if self.quic.is_some() || self.tls.is_some() || self.wss.is_some() {
            builder = builder.tls_identity(tls_identity(&self)?);
        }
        if let Some(cluster) = self.cluster {
            builder = builder.cluster(cluster);
        }
        let mut api_keys = ApiKeys::new();
        for (id, secret) in &self.api_keys {
            api_keys = api_keys
                .with_key(id, secret)
                .map_err(|e| GatewayError::Config(format!("http.api_keys: {e}")))?;
        }
        Ok(builder
            .api_keys(api_keys)
            .ws_allowed_origins(self.ws_allowed_origins))
    }
}

/// The cluster settings from flags (which win) and `[cluster]`; `None` without a Redis.
fn cluster_config(
    file: &FileCluster,
    redis: Option<String>,
    redis_cluster: Option<Vec<String>>,
    advertise: Option<Vec<(String, String)>>,
    node_id: u16,
) -> Result<Option<ClusterConfig>, GatewayError> {
    let config = GatewayError::Config;
    let target = match (redis, redis_cluster) {
        (Some(url), _) => Some(RedisTarget::Single(url)),
        (None, Some(urls)) => Some(RedisTarget::Cluster(urls)),
        (None, None) => match (&file.redis, &file.redis_cluster) {
            (Some(_), Some(_)) => {
                return Err(config(
                    "cluster: give either redis or redis_cluster, not both".into(),
                ));
            }
            (Some(url), None) => Some(RedisTarget::Single(url.clone())),
            (None, Some(urls)) => Some(RedisTarget::Cluster(urls.clone())),
            (None, None) => None,
        },
    };
    let Some(target) = target else {
        let set = advertise.is_some()
            || file.advertise.is_some()
            || file.key_prefix.is_some()
            || file.route_ttl_ms.is_some()
            || file.node_ttl_ms.is_some()
            || file.relay_timeout_ms.is_some();
        if set {
            return Err(config(
                "cluster settings given without --redis or --redis-cluster (or [cluster] redis)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let ms = Duration::from_millis;
    let mut cluster = ClusterConfig::new(target, node_id);
    if let Some(addrs) = advertise {
        cluster.advertise = addrs.into_iter().collect();
    } else if let Some(addrs) = &file.advertise {
        cluster.advertise = addrs.clone();
    }
    if let Some(v) = &file.key_prefix {
        cluster.key_prefix = v.clone();
    }
    if let Some(v) = file.route_ttl_ms {
        cluster.route_ttl = ms(v);
    }
    if let Some(v) = file.node_ttl_ms {
        cluster.node_ttl = ms(v);
    }
    if let Some(v) = file.relay_timeout_ms {
        cluster.relay_timeout = ms(v);
    }
    cluster
        .validate()
        .map_err(|e| config(format!("cluster: {e}")))?;
    Ok(Some(cluster))
}

/// The forwarding rules: the echo backend on business 1 (unless a configured rule claims
/// it), the demo's room handler on business 7 when the demo is on, then one HTTP
/// callback backend per `[[backends]]` entry.
fn router(backends: &[FileBackend], demo: Option<&Demo>) -> Result<Router, GatewayError> {
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
    if let Some(demo) = demo {
        builder = builder
            .backend("demo", demo.backend(), BackendLimits::default())
            .route(DEMO_BUSINESS, "demo");
    }
    for b in backends {
        let config = GatewayError::Config;
        let http = HttpBackend::new(HttpBackendConfig {
            events_url: b.events_url.clone(),
            ca_file: b.ca_file.clone(),
            ..HttpBackendConfig::new(b.url.clone())
        })
        .map_err(|e| config(format!("backend `{}`: {e}", b.name)))?;
        let defaults = BackendLimits::default();
        let limits = BackendLimits {
            timeout: b.timeout_ms.map_or(defaults.timeout, Duration::from_millis),
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

/// The default development certificate directory, one per gateway so that gateways on
/// one machine do not overwrite each other's certificate (issue 16): named after the
/// first QUIC, TLS or wss listener (`$TMPDIR/longconn-dev-cert-quic-127.0.0.1-7102`),
/// which no other gateway can hold. With port 0 or `SO_REUSEPORT` the address is not
/// this gateway's alone, so the process id and a per-process counter are added.
pub fn default_dev_cert_dir(settings: &GatewaySettings) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let first = [
        ("quic", settings.quic),
        ("tls", settings.tls),
        ("wss", settings.wss),
    ]
    .into_iter()
    .find_map(|(label, addr)| addr.map(|addr| (label, addr)));
    let mut name = String::from("longconn-dev-cert");
    if let Some((label, addr)) = first {
        let ip: String = addr
            .ip()
            .to_string()
            .chars()
            .map(|c| if c == ':' { '_' } else { c })
            .collect();
        name.push_str(&format!("-{label}-{ip}-{}", addr.port()));
        if addr.port() == 0 || settings.transport.reuse_port() {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            name.push_str(&format!("-pid{}-{n}", std::process::id()));
        }
    }
    std::env::temp_dir().join(name)
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

fn token_keys(pairs: &[(String, String)]) -> Result<TokenKeys, GatewayError> {
    let mut keys: Option<TokenKeys> = None;
    for (id, secret) in pairs {
        let key = TokenKey::new(id, secret.as_bytes())
            .map_err(|e| GatewayError::Config(format!("token key `{id}`: {e}")))?;
        keys = Some(match keys {
            None => TokenKeys::new(key),
            Some(keys) => keys.with_verify_key(key),
        });
    }
    keys.ok_or_else(|| GatewayError::Config("no token key".into()))
}

fn transport_config(
    file: &FileTransport,
    max_frame_size: usize,
    reuse_port: Option<bool>,
) -> Result<TransportConfig, GatewayError> {
    let ms = Duration::from_millis;
    let mut b = TransportConfig::builder().max_frame_size(max_frame_size);
    if let Some(v) = reuse_port {
        b = b.reuse_port(v);
    }
    if let Some(v) = file.listen_backlog {
        b = b.listen_backlog(v);
    }
    if let Some(v) = file.ws_max_request_head {
        b = b.ws_max_request_head(v);
    }
    if let Some(v) = file.quic_idle_timeout_ms {
        b = b.quic_idle_timeout(ms(v));
    }
    if let Some(v) = file.quic_keep_alive_ms {
        b = b.quic_keep_alive_interval((v > 0).then(|| ms(v)));
    }
    if let Some(v) = file.quic_stream_window {
        b = b.quic_stream_window(v);
    }
    Ok(b.build()?)
}

fn load(path: &Path) -> Result<FileConfig, GatewayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| GatewayError::Config(format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))
}

fn quality_config(file: &FileQuality) -> Result<QualityConfig, GatewayError> {
    let mut b = QualityConfig::builder();
    if let Some(v) = file.good_loss {
        b = b.good_loss(v);
    }
    if let Some(v) = file.good_rtt_ms {
        b = b.good_rtt_ms(v);
    }
    if let Some(v) = file.weak_loss {
        b = b.weak_loss(v);
    }
    if let Some(v) = file.weak_rtt_ms {
        b = b.weak_rtt_ms(v);
    }
    b.build()
        .map_err(|e| GatewayError::Config(format!("quality: {e}")))
}

/// History kept for every group while `--demo` runs and the file configures none, so the
/// demo page shows recovery after a dropped socket: the last 200 publications of the last
/// 10 minutes per room.
const DEMO_HISTORY: (usize, Duration) = (200, Duration::from_secs(600));

fn group_config(
    file: &FileGroups,
    max_frame_size: usize,
    demo: bool,
) -> Result<GroupConfig, GatewayError> {
    let mut b = GroupConfig::builder();
    if demo && file.history.is_empty() {
        b = b.history(longconn_group::HistoryConfig {
            rules: vec![longconn_group::HistoryRule {
                prefix: String::new(),
                max_len: DEMO_HISTORY.0,
                max_age: Some(DEMO_HISTORY.1),
            }],
            ..longconn_group::HistoryConfig::default()
        });
    }
    if let Some(v) = file.max_groups_per_connection {
        b = b.max_groups_per_connection(v);
    }
    if let Some(v) = file.max_members_per_group {
        b = b.max_members_per_group(v);
    }
    if let Some(v) = file.max_group_id_len {
        b = b.max_group_id_len(v);
    }
    if let Some(v) = file.fanout_chunk {
        b = b.fanout_chunk(v);
    }
    if let Some(v) = file.fanout_workers {
        b = b.fanout_workers(v);
    }
    if let Some(v) = file.max_pending_publishes {
        b = b.max_pending_publishes(v);
    }
    if !file.history.is_empty() || file.history_max_groups.is_some() {
        let mut history = longconn_group::HistoryConfig::default();
        history.rules = file
            .history
            .iter()
            .map(|r| longconn_group::HistoryRule {
                prefix: r.prefix.clone(),
                max_len: r.max_len,
                max_age: r.max_age_ms.map(Duration::from_millis),
            })
            .collect();
        if let Some(v) = file.history_max_groups {
            history.max_groups = v;
        }
        b = b.history(history);
    }
    if let Some(v) = file.max_group_backlog {
        b = b.max_group_backlog(v);
    }
    if let Some(v) = file.saturated_retry_after_ms {
        b = b.saturated_retry_after(Duration::from_millis(v));
    }
    b.max_frame_size(max_frame_size)
        .build()
        .map_err(|e| GatewayError::Config(format!("groups: {e}")))
}

fn session_config(file: &FileSession) -> Result<SessionConfig, GatewayError> {
    let ms = Duration::from_millis;
    let mut b = SessionConfig::builder();
    if let Some(v) = file.max_frame_size {
        b = b.max_frame_size(v);
    }
    if let Some(v) = file.login_timeout_ms {
        b = b.login_timeout(ms(v));
    }
    if let Some(v) = file.heartbeat_interval_ms {
        b = b.heartbeat_interval(ms(v));
    }
    if let Some(v) = file.idle_timeout_ms {
        b = b.idle_timeout(ms(v));
    }
    if let Some(v) = file.token_refresh_grace_ms {
        b = b.token_refresh_grace(ms(v));
    }
    if let Some(v) = file.drain_timeout_ms {
        b = b.drain_timeout(ms(v));
    }
    if let Some(v) = file.max_queued_pushes {
        b = b.max_queued_pushes(v);
    }
    if let Some(v) = &file.slow_consumer_policy {
        b = b.slow_consumer_policy(match v.as_str() {
            "drop_newest" => SlowConsumerPolicy::DropNewest,
            "disconnect" => SlowConsumerPolicy::Disconnect,
            other => {
                return Err(GatewayError::Config(format!(
                    "session.slow_consumer_policy `{other}`: expected drop_newest or disconnect"
                )));
            }
        });
    }
    if let Some(v) = file.max_inflight_requests {
        b = b.max_inflight_requests(v);
    }
    if let Some(v) = file.max_requests_per_second {
        b = b.max_requests_per_second(v);
    }
    if let Some(v) = file.max_login_meta_size {
        b = b.max_login_meta_size(v);
    }
    b.build().map_err(|e| GatewayError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("gateway").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn demo_flag_routes_business_7_to_the_demo_and_refuses_a_claimed_7() {
        let off = GatewaySettings::resolve(cli(&[])).unwrap();
        assert!(!off.demo, "the demo is opt-in");
        let on = GatewaySettings::resolve(cli(&["--demo"])).unwrap();
        assert!(on.demo);
        let demo = Demo::new(token_keys(&on.token_keys).unwrap());
        let routed = router(&on.backends, Some(&demo)).unwrap();
        assert_eq!(routed.backend_for(DEMO_BUSINESS), Some("demo"));
        assert_eq!(routed.backend_for(ECHO_BUSINESS), Some("echo"));
        assert_eq!(router(&on.backends, None).unwrap().backend_for(7), None);
        let claims_7 = FileBackend {
            name: "orders".into(),
            url: "http://127.0.0.1:9/rpc".into(),
            events_url: None,
            timeout_ms: None,
            max_concurrency: None,
            businesses: vec![7],
            ranges: vec![],
            default: false,
            ca_file: None,
        };
        assert!(router(&[claims_7], Some(&demo)).is_err());
    }

    #[test]
    fn defaults_need_no_file() {
        let s = GatewaySettings::resolve(cli(&[])).unwrap();
        assert_eq!(s.tcp, Some("127.0.0.1:7100".parse().unwrap()));
        assert_eq!(s.http, Some("127.0.0.1:7180".parse().unwrap()));
        assert_eq!(s.ws, Some("127.0.0.1:7101".parse().unwrap()));
        assert_eq!(s.quic, Some("127.0.0.1:7102".parse().unwrap()));
        assert_eq!((s.tls, s.wss), (None, None), "TLS listeners are opt-in");
        assert!(s.tls_files.is_none());
        assert!(s.dev_secret);
        assert_eq!(s.token_keys[0].0, DEV_TOKEN_KEY_ID);
    }

    /// Every setting neither the file nor a flag gives is the library's default.
    #[test]
    fn defaults_are_the_libraries_defaults() {
        let s = GatewaySettings::resolve(cli(&[])).unwrap();
        let server = ServerConfig::default();
        assert_eq!(s.server.node_id(), server.node_id());
        assert_eq!(s.server.max_connections(), server.max_connections());
        assert_eq!(s.server.close_linger(), server.close_linger());
        assert_eq!(s.server.accept_backoff_max(), server.accept_backoff_max());
        assert_eq!(
            s.server.shutdown_retry_after(),
            server.shutdown_retry_after()
        );
        assert_eq!(**s.server.session(), SessionConfig::default());
        // The one setting the binary always adds: a QUIC reset key derived from the
        // development secret and the node id (stable across restarts).
        assert_eq!(
            s.transport,
            TransportConfig::default()
                .to_builder()
                .quic_reset_key(Some(crate::quic_reset::derive(
                    DEV_TOKEN_SECRET.as_bytes(),
                    server.node_id()
                )))
                .build()
                .unwrap()
        );
        assert_eq!(s.groups, GroupConfig::default());
        assert_eq!(s.shutdown_deadline, DEFAULT_SHUTDOWN_DEADLINE);
    }

    /// `[session] max_frame_size` is the one frame limit: it reaches the transport and
    /// the group layer; `[transport]` and `reuse_port` reach the transport config.
    #[test]
    fn the_session_frame_limit_and_transport_keys_reach_the_transport() {
        let dir = std::env::temp_dir().join(format!("lc-gw-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(
            &path,
            "reuse_port = true\n[session]\nmax_frame_size = 4096\n\
             [transport]\nlisten_backlog = 128\nws_max_request_head = 2048\n\
             quic_idle_timeout_ms = 60000\nquic_keep_alive_ms = 20000\n",
        )
        .unwrap();
        let s = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(s.server.session().max_frame_size(), 4096);
        assert_eq!(s.transport.max_frame_size(), 4096);
        assert_eq!(s.groups.max_frame_size(), 4096);
        assert!(s.transport.reuse_port());
        assert_eq!(s.transport.listen_backlog(), 128);
        assert_eq!(s.transport.ws_max_request_head(), 2048);
        assert_eq!(s.transport.quic_idle_timeout(), Duration::from_secs(60));
        assert_eq!(
            s.transport.quic_keep_alive_interval(),
            Some(Duration::from_secs(20))
        );

        std::fs::write(&path, "[transport]\nws_max_request_head = 1\n").unwrap();
        let err = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("ws_max_request_head"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("lc-gw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(
            &path,
            r#"
node_id = 9
[listen]
tcp = "127.0.0.1:9100"
http = "off"
[[token_keys]]
id = "new"
secret = "new-secret-0123456789"
[[token_keys]]
id = "old"
secret = "old-secret-0123456789"
[session]
heartbeat_interval_ms = 10000
idle_timeout_ms = 25000
slow_consumer_policy = "disconnect"
"#,
        )
        .unwrap();
        let s =
            GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap(), "--node-id", "3"]))
                .unwrap();
        assert_eq!(s.server.node_id(), 3, "flag wins");
        assert_eq!(s.tcp, Some("127.0.0.1:9100".parse().unwrap()), "file wins");
        assert_eq!(s.http, None, "off");
        assert!(!s.dev_secret);
        assert_eq!(s.token_keys.len(), 2);
        assert_eq!(
            s.server.session().heartbeat_interval(),
            Duration::from_secs(10)
        );
        assert_eq!(
            s.server.session().slow_consumer_policy(),
            SlowConsumerPolicy::Disconnect
        );

        std::fs::write(&path, "[session]\nidle_timeout_ms = 1\n").unwrap();
        let err = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        std::fs::write(&path, "unknown_key = 1\n").unwrap();
        assert!(GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The defaults `--help` quotes are the ones in force.
    #[test]
    fn help_quotes_the_defaults_in_force() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let server = ServerConfig::default();
        for quoted in [
            format!("[default: {}]", server.node_id()),
            format!("[default: {}]", server.max_connections()),
            format!("[default: {DEFAULT_TOKEN_KEY_ID}]"),
            format!("[default: {DEFAULT_TCP}]"),
            format!("[default: {DEFAULT_WS}]"),
            format!("[default: {DEFAULT_QUIC}]"),
            format!("[default: {DEFAULT_HTTP}]"),
        ] {
            assert!(help.contains(&quoted), "--help lacks {quoted}");
        }
    }

    #[test]
    fn cluster_flags_and_the_cluster_section() {
        let s = GatewaySettings::resolve(cli(&[])).unwrap();
        assert!(s.cluster.is_none(), "no Redis: a single node on memory");

        let s = GatewaySettings::resolve(cli(&[
            "--node-id",
            "4",
            "--redis",
            "redis://10.0.0.9:6379/",
            "--advertise",
            "tcp=203.0.113.7:7100,ws=ws://203.0.113.7:7101/ws",
        ]))
        .unwrap();
        let cluster = s.cluster.unwrap();
        assert_eq!(cluster.node_id, 4, "the server's node id");
        assert_eq!(
            cluster.target,
            RedisTarget::Single("redis://10.0.0.9:6379/".into())
        );
        assert_eq!(cluster.advertise["tcp"], "203.0.113.7:7100");
        assert_eq!(cluster.advertise["ws"], "ws://203.0.113.7:7101/ws");
        assert_eq!(cluster.route_ttl, ClusterConfig::DEFAULT_ROUTE_TTL);

        let dir = std::env::temp_dir().join(format!("lc-gw-cluster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(
            &path,
            "[cluster]\nredis_cluster = [\"redis://a:7000\", \"redis://b:7000\"]\n\
             key_prefix = \"blue:\"\nroute_ttl_ms = 12000\nnode_ttl_ms = 6000\n\
             relay_timeout_ms = 500\nadvertise = { tcp = \"10.0.0.5:7100\" }\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let cluster = GatewaySettings::resolve(cli(&["--config", file]))
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(
            cluster.target,
            RedisTarget::Cluster(vec!["redis://a:7000".into(), "redis://b:7000".into()])
        );
        assert_eq!(cluster.key_prefix, "blue:");
        assert_eq!(cluster.route_ttl, Duration::from_secs(12));
        assert_eq!(cluster.node_ttl, Duration::from_secs(6));
        assert_eq!(cluster.relay_timeout, Duration::from_millis(500));
        assert_eq!(cluster.advertise["tcp"], "10.0.0.5:7100");
        // The flag wins over the file's target.
        let cluster = GatewaySettings::resolve(cli(&["--config", file, "--redis", "redis://c/"]))
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(cluster.target, RedisTarget::Single("redis://c/".into()));

        std::fs::write(
            &path,
            "[cluster]\nredis = \"redis://a/\"\nroute_ttl_ms = 1\n",
        )
        .unwrap();
        let err = GatewaySettings::resolve(cli(&["--config", file])).unwrap_err();
        assert!(err.to_string().contains("route ttl"), "{err}");
        std::fs::write(&path, "[cluster]\nroute_ttl_ms = 5000\n").unwrap();
        let err = GatewaySettings::resolve(cli(&["--config", file])).unwrap_err();
        assert!(err.to_string().contains("without --redis"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(Cli::try_parse_from(["gateway", "--redis", "a", "--redis-cluster", "b"]).is_err());
        let err = Cli::try_parse_from(["gateway", "--advertise", "tcp"]).unwrap_err();
        assert!(err.to_string().contains("NAME=ADDRESS"), "{err}");
    }

    #[test]
    fn bad_listen_values_are_explained() {
        let err = Cli::try_parse_from(["gateway", "--tcp", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("neither an address"), "{err}");
    }

    /// `[[groups.history]]` rules reach the group layer (recovery after a reconnect);
    /// a rule out of range is refused with the field named.
    #[test]
    fn group_history_rules_reach_the_group_config() {
        let dir = std::env::temp_dir().join(format!("lc-gw-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(
            &path,
            "[groups]\nhistory_max_groups = 50\n\
             [[groups.history]]\nprefix = \"room:\"\nmax_len = 500\nmax_age_ms = 60000\n",
        )
        .unwrap();
        let s = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).unwrap();
        let history = s.groups.history();
        assert_eq!(history.max_groups, 50);
        assert_eq!(
            history.rules,
            vec![longconn_group::HistoryRule {
                prefix: "room:".into(),
                max_len: 500,
                max_age: Some(Duration::from_secs(60)),
            }]
        );
        std::fs::write(&path, "[[groups.history]]\nprefix = \"\"\nmax_len = 0\n").unwrap();
        let err = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("history"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `--demo` keeps history for every room unless the file has rules of its own.
    #[test]
    fn the_demo_keeps_group_history() {
        let s = GatewaySettings::resolve(cli(&["--demo"])).unwrap();
        let rules = &s.groups.history().rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(
            (rules[0].prefix.as_str(), rules[0].max_len),
            ("", DEMO_HISTORY.0)
        );
        let s = GatewaySettings::resolve(cli(&[])).unwrap();
        assert!(s.groups.history().rules.is_empty(), "off without --demo");
    }

    /// `[quality]` thresholds reach the server config; a value out of range is refused.
    #[test]
    fn the_quality_section_sets_the_bucket_thresholds_and_is_checked() {
        let dir = std::env::temp_dir().join(format!("lc-gw-quality-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gw.toml");
        std::fs::write(
            &path,
            "[quality]\ngood_loss = 0.02\ngood_rtt_ms = 50\nweak_loss = 0.1\nweak_rtt_ms = 500\n",
        )
        .unwrap();
        let s = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).unwrap();
        let q = s.server.quality();
        assert_eq!((q.good_loss(), q.good_rtt_ms()), (0.02, 50));
        assert_eq!((q.weak_loss(), q.weak_rtt_ms()), (0.1, 500));
        std::fs::write(&path, "[quality]\ngood_loss = 0.5\n").unwrap();
        let err = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("quality"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

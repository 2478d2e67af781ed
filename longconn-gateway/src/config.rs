//! Gateway settings: embedded defaults, overridden by a TOML file, overridden by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use longconn_core::{SessionConfig, SlowConsumerPolicy};
use longconn_group::GroupConfig;
use serde::Deserialize;

use super::GatewayError;

pub use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};

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
    /// Where the development certificate is written [default: $TMPDIR/longconn-dev-cert].
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
    /// Group limits.
    pub groups: FileGroups,
    /// Forwarding rules to HTTP callbacks (business 1 stays on the echo backend unless
    /// a rule claims it).
    pub backends: Vec<FileBackend>,
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
}

/// One `[[backends]]` entry: an HTTP callback and the business ids it serves.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    /// Name, for logs and errors.
    pub name: String,
    /// Where requests are POSTed (`http://`).
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
    /// Node id.
    pub node_id: u16,
    /// Admission limit.
    pub max_connections: usize,
    /// SO_REUSEPORT on every listener.
    pub reuse_port: bool,
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
    /// Per-connection limits and timers.
    pub session: SessionConfig,
    /// `GoAway` reconnect hint.
    pub shutdown_retry_after: Duration,
    /// Drain deadline.
    pub shutdown_deadline: Duration,
    /// Group limits.
    pub groups: GroupConfig,
    /// HTTP callback rules.
    pub backends: Vec<FileBackend>,
}

impl GatewaySettings {
    /// Resolves defaults, then `--config`, then flags.
    pub fn resolve(cli: Cli) -> Result<GatewaySettings, GatewayError> {
        let file = match &cli.config {
            Some(path) => load(path)?,
            None => FileConfig::default(),
        };
        let listen = |flag: Option<Listen>, file: Option<Listen>, default: &str| {
            flag.or(file)
                .map(|l| l.0)
                .unwrap_or_else(|| default.parse().ok())
        };
        let mut token_keys: Vec<(String, String)> = file
            .token_keys
            .into_iter()
            .map(|k| (k.id, k.secret))
            .collect();
        if let Some(secret) = cli.token_secret {
            let id = cli.token_key_id.unwrap_or_else(|| "k1".to_owned());
            token_keys = vec![(id, secret)];
        }
        let dev_secret = token_keys.is_empty();
        if dev_secret {
            token_keys.push((DEV_TOKEN_KEY_ID.to_owned(), DEV_TOKEN_SECRET.to_owned()));
        }
        let shutdown = file.shutdown;
        Ok(GatewaySettings {
            node_id: cli.node_id.or(file.node_id).unwrap_or(1),
            max_connections: cli
                .max_connections
                .or(file.max_connections)
                .unwrap_or(100_000),
            reuse_port: cli.reuse_port || file.reuse_port.unwrap_or(false),
            tcp: listen(cli.tcp, file.listen.tcp, "127.0.0.1:7100"),
            http: listen(cli.http, file.listen.http, "127.0.0.1:7180"),
            ws: listen(cli.ws, file.listen.ws, "127.0.0.1:7101"),
            quic: listen(cli.quic, file.listen.quic, "127.0.0.1:7102"),
            tls: listen(cli.tls, file.listen.tls, "off"),
            wss: listen(cli.wss, file.listen.wss, "off"),
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
                .unwrap_or_else(|| std::env::temp_dir().join("longconn-dev-cert")),
            token_keys,
            dev_secret,
            groups: group_config(&file.groups, file.session.max_frame_size)?,
            backends: file.backends,
            session: session_config(&file.session)?,
            shutdown_retry_after: Duration::from_millis(shutdown.retry_after_ms.unwrap_or(5_000)),
            shutdown_deadline: Duration::from_millis(shutdown.deadline_ms.unwrap_or(15_000)),
        })
    }
}

fn load(path: &Path) -> Result<FileConfig, GatewayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| GatewayError::Config(format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| GatewayError::Config(format!("{}: {e}", path.display())))
}

fn group_config(
    file: &FileGroups,
    max_frame_size: Option<usize>,
) -> Result<GroupConfig, GatewayError> {
    let mut b = GroupConfig::builder();
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
    if let Some(v) = max_frame_size {
        b = b.max_frame_size(v);
    }
    b.build()
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
    b.build().map_err(|e| GatewayError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("gateway").chain(args.iter().copied())).unwrap()
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
        assert_eq!(s.node_id, 1);
        assert!(s.dev_secret);
        assert_eq!(s.token_keys[0].0, DEV_TOKEN_KEY_ID);
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
        assert_eq!(s.node_id, 3, "flag wins");
        assert_eq!(s.tcp, Some("127.0.0.1:9100".parse().unwrap()), "file wins");
        assert_eq!(s.http, None, "off");
        assert!(!s.dev_secret);
        assert_eq!(s.token_keys.len(), 2);
        assert_eq!(s.session.heartbeat_interval(), Duration::from_secs(10));
        assert_eq!(
            s.session.slow_consumer_policy(),
            SlowConsumerPolicy::Disconnect
        );

        std::fs::write(&path, "[session]\nidle_timeout_ms = 1\n").unwrap();
        let err = GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        std::fs::write(&path, "unknown_key = 1\n").unwrap();
        assert!(GatewaySettings::resolve(cli(&["--config", path.to_str().unwrap()])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_listen_values_are_explained() {
        let err = Cli::try_parse_from(["gateway", "--tcp", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("neither an address"), "{err}");
    }
}

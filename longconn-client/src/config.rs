//! What a client connects to and how: [`Endpoint`], [`ClientConfig`], [`TokenProvider`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longconn_transport::cert::Trust;

use crate::backoff::Backoff;
use crate::error::ClientError;

pub use longconn_transport::dial::{Endpoint, Scheme};

impl From<longconn_transport::dial::BadEndpoint> for ClientError {
    fn from(bad: longconn_transport::dial::BadEndpoint) -> ClientError {
        ClientError::BadEndpoint {
            url: bad.url,
            reason: bad.reason,
        }
    }
}

/// Supplies login tokens. Called before every login and when the gateway asks for a
/// refresh, so tokens can be fetched fresh from the application's own servers.
#[async_trait]
pub trait TokenProvider: Send + Sync + 'static {
    /// A token for this app and device.
    async fn token(&self) -> Result<Bytes, ClientError>;
}

/// A provider that always returns the same token.
#[derive(Debug, Clone)]
pub struct StaticToken(pub Bytes);

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<Bytes, ClientError> {
        Ok(self.0.clone())
    }
}

/// The token provider of a config made by [`ClientConfig::from_control`]: tokens come
/// from the control layer's answers, so this one is never asked (and fails if it is).
#[derive(Debug, Clone, Copy)]
pub struct FromControl;

#[async_trait]
impl TokenProvider for FromControl {
    async fn token(&self) -> Result<Bytes, ClientError> {
        Err(ClientError::Control(
            "tokens come from the control layer's access answer".into(),
        ))
    }
}

/// How to ask a control layer (longconn-control) where to connect; see
/// [`ClientConfig::from_control`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSettings {
    /// Base URL of the control layer, `http://host:port` or `https://host:port` (rustls
    /// with ring, checked against [`ClientConfig::trust`]).
    pub url: String,
    /// Platform reported to the rules (`ios`, `android`, `web`, ...). Default the OS
    /// this runs on (`std::env::consts::OS`).
    pub platform: String,
    /// App version reported to the rules. Default `0.0.0`.
    pub app_version: String,
    /// SDK version reported. Default this crate's version.
    pub sdk_version: String,
    /// Network type: `wifi`, `cellular` or `unknown` (default).
    pub network: String,
}

impl ControlSettings {
    /// Settings for the control layer at `url`, with the defaults above.
    pub fn new(url: &str) -> ControlSettings {
        ControlSettings {
            url: url.to_owned(),
            platform: std::env::consts::OS.to_owned(),
            app_version: "0.0.0".to_owned(),
            sdk_version: env!("CARGO_PKG_VERSION").to_owned(),
            network: "unknown".to_owned(),
        }
    }
}

/// A push callback; see [`ClientConfig::on_push`].
pub type PushHandler = Arc<dyn Fn(crate::Push) + Send + Sync>;

/// Everything a [`crate::Client`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// Where to connect. Not used when `control` is set (the control layer's answer
    /// says where).
    pub endpoint: Endpoint,
    /// Ask this control layer where to connect instead of dialing `endpoint`: the
    /// client calls `/v1/access`, dials its endpoints in order (falling back through
    /// the list and across transports), logs in with its token, renews the token in
    /// band before it expires, uses its heartbeat and reconnect policy, and asks again
    /// after repeated failures. Default `None`.
    pub control: Option<ControlSettings>,
    /// App id.
    pub app: String,
    /// Device id.
    pub device: String,
    /// Source of login tokens.
    pub tokens: Arc<dyn TokenProvider>,
    /// Which servers to trust for `tls`, `wss` and `quic`. Default: the system's roots.
    pub trust: Trust,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Default timeout of [`crate::Client::request`] and group calls. Default 10 s.
    pub request_timeout: Duration,
    /// Timeout of connect plus login. Default 10 s.
    pub connect_timeout: Duration,
    /// Largest frame sent or accepted. Default 65,536.
    pub max_frame_size: usize,
    /// Called with every push, on the client's own task, instead of queueing it for
    /// [`crate::Client::pushes`] and [`crate::Client::subscribe`]: the cheapest way to
    /// take pushes (no channel, no task wake-up per push). It must return quickly; slow
    /// work belongs on a task of the handler's own. Default `None`.
    pub on_push: Option<PushHandler>,
    /// Local IP to connect from (the kernel picks the port). Default `None`: the
    /// system's choice. Load generators spread clients over 127.0.0.x with it.
    pub local_ip: Option<std::net::IpAddr>,
    /// Dead-peer timeout: a gateway that vanished without closing (killed, host gone,
    /// network cut) is noticed within this time on every transport, and the client
    /// reconnects. The session sends a probe `Ping` after half of it without a received
    /// frame and gives up at all of it; TCP, TLS and WebSocket sockets get TCP keep-alive
    /// and `TCP_USER_TIMEOUT`, QUIC keep-alives and this idle timeout
    /// (`longconn_transport::dead_peer`). An idle client therefore sends a probe about
    /// every half timeout when the gateway's heartbeat is longer. `None` relies on the
    /// heartbeat alone (twice the gateway's interval for the pong). Default 10 s.
    pub dead_peer_timeout: Option<Duration>,
    /// Send a quality report (docs/PROTOCOL.md section 4.1: connect attempts with their
    /// latency and heartbeat round trips, per transport, since the previous report)
    /// this often while connected. Default `None` (off): a gateway older than
    /// `QualityReport` closes the session on it. Minutes suit real clients.
    pub quality_report_interval: Option<Duration>,
    /// The network type quality reports carry: 0 unknown (default), 1 wifi,
    /// 2 cellular, 3 wired (`NETWORK` of docs/PROTOCOL.md; larger values are sent as 0).
    pub network: u8,
    /// Keep retrying after a failure that [`crate::ConnectFailure::is_permanent`] calls
    /// permanent (a WebSocket upgrade answered 4xx: a wrong path, a forbidden Origin)
    /// instead of stopping with [`ClientError::Unreachable`]. For deployments behind a
    /// proxy that answers 404 while its backend restarts. Default `false`.
    pub retry_permanent_failures: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("app", &self.app)
            .field("device", &self.device)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A config with defaults for everything but the essentials.
    pub fn new(
        url: &str,
        app: &str,
        device: &str,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<ClientConfig, ClientError> {
        Ok(ClientConfig {
            endpoint: Endpoint::parse(url)?,
            control: None,
            app: app.to_owned(),
            device: device.to_owned(),
            tokens,
            trust: Trust::System,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_frame_size: 64 * 1024,
            local_ip: None,
            on_push: None,
            dead_peer_timeout: Some(Duration::from_secs(10)),
            quality_report_interval: None,
            network: 0,
            retry_permanent_failures: false,
        })
    }
}

impl ClientConfig {
    /// A config that bootstraps from the control layer at `control_url`
    /// (`http://host:port`) instead of a fixed address: see [`ClientConfig::control`].
    /// Tokens come from the control layer ([`FromControl`] stands in for a provider);
    /// `endpoint` is a placeholder that is never dialed. Adjust
    /// [`ControlSettings`] (platform, versions, network) through `control`.
    pub fn from_control(
        control_url: &str,
        app: &str,
        device: &str,
    ) -> Result<ClientConfig, ClientError> {
        if !control_url.starts_with("http://") && !control_url.starts_with("https://") {
            return Err(ClientError::BadEndpoint {
                url: control_url.to_owned(),
                reason: "a control URL is http://host:port".into(),
            });
        }
        let mut config = ClientConfig::new("tcp://0.0.0.0:0", app, device, Arc::new(FromControl))?;
        config.control = Some(ControlSettings::new(control_url));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URL parsing lives in the transport crate's dialer; the SDK's config turns its
    /// refusals into `ClientError::BadEndpoint`.
    #[test]
    fn bad_endpoints_are_typed_client_errors() {
        let tokens: Arc<dyn TokenProvider> = Arc::new(StaticToken(Bytes::from_static(b"t")));
        let config =
            ClientConfig::new("wss://gw.example.com:443/ws", "a", "d", tokens.clone()).unwrap();
        assert_eq!(
            (config.endpoint.scheme, config.endpoint.port),
            (Scheme::Wss, 443)
        );
        match ClientConfig::new("http://x:1", "a", "d", tokens) {
            Err(ClientError::BadEndpoint { url, reason }) => {
                assert_eq!(url, "http://x:1");
                assert!(reason.contains("scheme must be"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

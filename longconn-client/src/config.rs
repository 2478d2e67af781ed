//! What a client connects to and how: [`Endpoint`], [`ClientConfig`], [`TokenProvider`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longconn_transport::cert::Trust;

use crate::backoff::Backoff;
use crate::error::ClientError;

/// The transport named by an endpoint URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `tcp://host:port`
    Tcp,
    /// `tls://host:port`
    Tls,
    /// `ws://host:port/ws`
    Ws,
    /// `wss://host:port/ws`
    Wss,
    /// `quic://host:port`
    Quic,
}

/// A parsed endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The transport.
    pub scheme: Scheme,
    /// Host name or address, as given (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The URL as given (WebSocket upgrades use it).
    pub url: String,
}

impl Endpoint {
    /// Parses `tcp://`, `tls://`, `ws://`, `wss://` or `quic://` URLs with an explicit port.
    pub fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let bad = |reason: &str| ClientError::BadEndpoint {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme {
            "tcp" => Scheme::Tcp,
            "tls" => Scheme::Tls,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            "quic" => Scheme::Quic,
            _ => return Err(bad("scheme must be tcp, tls, ws, wss or quic")),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("a port is required"))?;
        let port = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint {
            scheme,
            host: host.to_owned(),
            port,
            url: url.to_owned(),
        })
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

/// A push callback; see [`ClientConfig::on_push`].
pub type PushHandler = Arc<dyn Fn(crate::Push) + Send + Sync>;

/// Everything a [`crate::Client`] needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// Where to connect.
    pub endpoint: Endpoint,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_bad_ones_say_why() {
        let e = Endpoint::parse("wss://gw.example.com:443/ws").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Wss, "gw.example.com", 443)
        );
        let e = Endpoint::parse("quic://[::1]:7102").unwrap();
        assert_eq!((e.scheme, e.host.as_str()), (Scheme::Quic, "::1"));
        for (url, why) in [
            ("127.0.0.1:7100", "no scheme"),
            ("http://x:1", "scheme must be"),
            ("tcp://x", "a port is required"),
            ("tcp://x:port", "not a number"),
        ] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}

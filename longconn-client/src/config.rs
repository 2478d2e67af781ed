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

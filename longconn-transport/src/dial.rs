//! The client side of every transport in one place: parse an endpoint URL
//! (`tcp://`, `tls://`, `ws://`, `wss://`, `quic://`), resolve it, and connect with the
//! options a client needs (frame limit, source IP, trust, connect timeout).
//!
//! A [`Dialer`] keeps what is expensive to build across reconnects: the rustls client
//! config (loading the system's root certificates is not cheap) and the QUIC client
//! endpoint (one UDP socket shared by every connection it opens). Clone a [`Dialer`] to
//! share those caches between tasks.
//!
//! ```no_run
//! # async fn demo() -> longconn_transport::Result<()> {
//! use longconn_transport::dial::{DialOptions, Dialer, Endpoint};
//! let endpoint = Endpoint::parse("tcp://127.0.0.1:7100").unwrap();
//! let dialer = Dialer::new(DialOptions::default());
//! let conn = dialer.connect(&endpoint).await?;
//! # drop(conn); Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
#[cfg(feature = "tls")]
use std::sync::Mutex;
use std::time::Duration;

use longconn_core::connection::Connection;

#[cfg(feature = "tls")]
use crate::cert::Trust;

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

/// An endpoint URL that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad endpoint `{url}`: {reason}")]
pub struct BadEndpoint {
    /// The URL given.
    pub url: String,
    /// Why it was refused.
    pub reason: String,
}

impl Endpoint {
    /// Parses `tcp://`, `tls://`, `ws://`, `wss://` or `quic://` URLs with an explicit
    /// port.
    ///
    /// # Errors
    /// [`BadEndpoint`] says what is wrong with the URL.
    pub fn parse(url: &str) -> Result<Endpoint, BadEndpoint> {
        let bad = |reason: &str| BadEndpoint {
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

/// How to connect.
#[derive(Debug, Clone)]
pub struct DialOptions {
    /// Largest frame sent or accepted. Default 65,536.
    pub max_frame_size: usize,
    /// Local IP to connect from (the kernel picks the port); for QUIC, the IP the
    /// client endpoint binds. Default `None`: the system's choice.
    pub local_ip: Option<IpAddr>,
    /// Which servers to trust for `tls`, `wss` and `quic`. Default: the system's roots.
    #[cfg(feature = "tls")]
    pub trust: Trust,
    /// The name to verify the server's certificate against; `None` for the URL's host.
    /// Default `None`.
    pub server_name: Option<String>,
    /// Resolve, connect and handshake (TLS, WebSocket upgrade, QUIC) within this time.
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// Dead-peer timeout of the transport ([`crate::dead_peer`]): TCP keep-alive and
    /// `TCP_USER_TIMEOUT` on TCP, TLS and WebSocket sockets, keep-alives and the idle
    /// timeout on QUIC, so a vanished server is noticed within it. `None` leaves the
    /// system's and quinn's defaults. Default 10 s.
    pub dead_peer_timeout: Option<Duration>,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            max_frame_size: 64 * 1024,
            local_ip: None,
            #[cfg(feature = "tls")]
            trust: Trust::System,
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            dead_peer_timeout: Some(Duration::from_secs(10)),
        }
    }
}

/// A connection made by [`Dialer::connect`], one variant per transport. Match on it to
/// drive each as its own `Connection` type (one monomorphised copy of the loop each).
#[derive(Debug)]
#[non_exhaustive]
pub enum Dialed {
    /// `tcp://`
    #[cfg(feature = "tcp")]
    Tcp(crate::tcp::TcpConnection),
    /// `tls://`
    #[cfg(feature = "tls")]
    Tls(crate::tls::TlsConnection),
    /// `ws://` and `wss://`
    #[cfg(feature = "ws")]
    Ws(Box<crate::ws::WsConnection>),
    /// `quic://`
    #[cfg(feature = "quic")]
    Quic(crate::quic::QuicConnection),
}

impl Dialed {
    /// The transport's kind.
    pub fn kind(&self) -> longconn_core::TransportKind {
        match self {
            #[cfg(feature = "tcp")]
            Dialed::Tcp(c) => c.kind(),
            #[cfg(feature = "tls")]
            Dialed::Tls(c) => c.kind(),
            #[cfg(feature = "ws")]
            Dialed::Ws(c) => c.kind(),
            #[cfg(feature = "quic")]
            Dialed::Quic(c) => c.kind(),
        }
    }
}

/// Connects to endpoints, keeping the TLS config and the QUIC endpoint between calls.
/// Cheap to clone; clones share the caches.
#[derive(Debug, Clone)]
pub struct Dialer {
    options: Arc<DialOptions>,
    #[cfg(feature = "tls")]
    tls: Arc<Mutex<Option<Arc<rustls::ClientConfig>>>>,
    #[cfg(feature = "quic")]
    quic: Arc<Mutex<Option<(SocketAddr, crate::quic::QuicClient)>>>,
}

impl Dialer {
    /// A dialer with `options`.
    pub fn new(options: DialOptions) -> Dialer {
        Dialer {
            options: Arc::new(options),
            #[cfg(feature = "tls")]
            tls: Arc::default(),
            #[cfg(feature = "quic")]
            quic: Arc::default(),
        }
    }

    /// The options it dials with.
    pub fn options(&self) -> &DialOptions {
        &self.options
    }

    /// Resolves `endpoint` and connects by its scheme, all within `connect_timeout`.
    ///
    /// # Errors
    /// Resolution, connect or handshake failures; [`crate::Error::Io`] with
    /// `TimedOut` past the timeout, `Unsupported` for a scheme whose cargo feature is
    /// off.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-made connection; the caches
    /// stay usable.
    pub async fn connect(&self, endpoint: &Endpoint) -> crate::Result<Dialed> {
        match tokio::time::timeout(self.options.connect_timeout, self.connect_now(endpoint)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connecting to {} timed out", endpoint.url),
            )
            .into()),
        }
    }

    async fn connect_now(&self, endpoint: &Endpoint) -> crate::Result<Dialed> {
        let addr = resolve(endpoint, self.options.local_ip).await?;
        #[cfg(feature = "tls")]
        let server_name = self
            .options
            .server_name
            .as_deref()
            .unwrap_or(&endpoint.host);
        let max = self.options.max_frame_size;
        match endpoint.scheme {
            #[cfg(feature = "tcp")]
            Scheme::Tcp => {
                let stream = self.tcp(addr).await?;
                Ok(Dialed::Tcp(crate::tcp::TcpConnection::from_stream(
                    stream, addr, max,
                )?))
            }
            #[cfg(feature = "tls")]
            Scheme::Tls => {
                let stream = self.tcp(addr).await?;
                let config = self.tls_config()?;
                Ok(Dialed::Tls(
                    crate::tls::TlsConnection::over_tcp(stream, server_name, config, max).await?,
                ))
            }
            #[cfg(feature = "ws")]
            Scheme::Ws => {
                let stream = self.tcp(addr).await?;
                Ok(Dialed::Ws(Box::new(
                    crate::ws::WsConnection::over_tcp(stream, &endpoint.url, max).await?,
                )))
            }
            #[cfg(all(feature = "ws", feature = "tls"))]
            Scheme::Wss => {
                let stream = self.tcp(addr).await?;
                let config = self.tls_config()?;
                Ok(Dialed::Ws(Box::new(
                    crate::ws::WsConnection::over_tls_tcp(
                        stream,
                        &endpoint.url,
                        server_name,
                        config,
                        max,
                    )
                    .await?,
                )))
            }
            #[cfg(feature = "quic")]
            Scheme::Quic => {
                let client = self.quic_client(addr)?;
                Ok(Dialed::Quic(client.connect(addr, server_name, max).await?))
            }
            #[allow(unreachable_patterns)]
            other => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("{other:?} is not built into this longconn-transport (cargo feature)"),
            )
            .into()),
        }
    }

    /// A TCP connection to `addr` from `local_ip`, with the dead-peer socket options.
    #[cfg(feature = "tcp")]
    async fn tcp(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let stream = crate::tcp::dial(addr, self.options.local_ip).await?;
        if let Some(timeout) = self.options.dead_peer_timeout {
            crate::dead_peer::tcp(&stream, timeout)?;
        }
        Ok(stream)
    }

    #[cfg(feature = "tls")]
    fn tls_config(&self) -> crate::Result<Arc<rustls::ClientConfig>> {
        let mut cached = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = &*cached {
            return Ok(config.clone());
        }
        let config = Arc::new(self.options.trust.client_config(&[], false)?);
        *cached = Some(config.clone());
        Ok(config)
    }

    /// The QUIC endpoint for connections to `addr`: bound to `local_ip` (or the
    /// unspecified address of `addr`'s family), made once and reused.
    #[cfg(feature = "quic")]
    fn quic_client(&self, addr: SocketAddr) -> crate::Result<crate::quic::QuicClient> {
        let unspecified: IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let bind = SocketAddr::new(self.options.local_ip.unwrap_or(unspecified), 0);
        let mut cached = self.quic.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((bound, client)) = &*cached
            && *bound == bind
        {
            return Ok(client.clone());
        }
        let transport = match self.options.dead_peer_timeout {
            Some(timeout) => crate::dead_peer::quic_transport(timeout),
            None => crate::quic::transport_config(),
        };
        let client = crate::quic::QuicClient::with_transport(bind, &self.options.trust, transport)?;
        *cached = Some((bind, client.clone()));
        Ok(client)
    }
}

/// Connects to `url` once with `options` (no caches kept: use a [`Dialer`] to
/// reconnect).
///
/// # Errors
/// A bad URL ([`crate::Error::Io`] with `InvalidInput`), or what [`Dialer::connect`]
/// reports.
pub async fn connect(url: &str, options: &DialOptions) -> crate::Result<Dialed> {
    let endpoint = Endpoint::parse(url)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    Dialer::new(options.clone()).connect(&endpoint).await
}

/// The first address of `endpoint`'s host, preferring the family of `local_ip` when
/// one is set.
async fn resolve(endpoint: &Endpoint, local_ip: Option<IpAddr>) -> crate::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| crate::Error::Resolve {
            host: endpoint.host.clone(),
            message: e.to_string(),
        })?
        .collect();
    let same_family = |a: &&SocketAddr| local_ip.is_none_or(|ip| ip.is_ipv4() == a.is_ipv4());
    addrs
        .iter()
        .find(same_family)
        .or(addrs.first())
        .copied()
        .ok_or_else(|| crate::Error::Resolve {
            host: endpoint.host.clone(),
            message: "resolves to no address".to_owned(),
        })
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
            ("tcp://:1", "no host"),
        ] {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn tcp_dials_from_the_chosen_source_ip() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let options = DialOptions {
            local_ip: Some("127.0.0.2".parse().unwrap()),
            ..DialOptions::default()
        };
        let dialed = connect(&format!("tcp://127.0.0.1:{port}"), &options)
            .await
            .unwrap();
        assert_eq!(dialed.kind(), longconn_core::TransportKind::Tcp);
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.2");
    }

    #[tokio::test]
    async fn bad_urls_and_slow_handshakes_fail_with_their_kind() {
        let err = connect("http://x:1", &DialOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, crate::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput),
            "{err}"
        );
        // A server that accepts TCP but never answers the handshake: the whole dial is
        // bounded by the connect timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let options = DialOptions {
            connect_timeout: Duration::from_millis(200),
            ..DialOptions::default()
        };
        let url = if cfg!(feature = "ws") {
            format!("ws://127.0.0.1:{port}/ws")
        } else {
            // Without `ws`, a scheme that is not built in fails at once instead.
            format!("tls://127.0.0.1:{port}")
        };
        let started = std::time::Instant::now();
        let err = connect(&url, &options).await.unwrap_err();
        let crate::Error::Io(io) = &err else {
            panic!("{err}")
        };
        if cfg!(feature = "ws") {
            assert_eq!(io.kind(), std::io::ErrorKind::TimedOut, "{err}");
            assert!(started.elapsed() >= Duration::from_millis(200));
        } else if !cfg!(feature = "tls") {
            assert_eq!(io.kind(), std::io::ErrorKind::Unsupported, "{err}");
        }
        drop(listener);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn the_tls_config_is_built_once_and_shared_by_clones() {
        let dialer = Dialer::new(DialOptions {
            trust: Trust::InsecureSkipVerify,
            ..DialOptions::default()
        });
        let first = dialer.tls_config().unwrap();
        let second = dialer.clone().tls_config().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }
}

//! TLS over TCP: the same frames as [`crate::tcp`], inside TLS 1.2 or 1.3 (rustls with
//! the `ring` provider). Certificates come from [`crate::cert`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use longconn_core::Listener;
use longconn_core::connection::{Connection, Joined, TransportKind};
use rustls::pki_types::ServerName;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::TransportConfig;
use crate::stream::{AsyncIo, StreamReader, StreamWriter};

/// Accepts TLS connections: TCP accept in the accept loop, the TLS handshake on the
/// connection's own task.
pub struct TlsAcceptor {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    max_frame_size: usize,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Binds `addr` and serves `tls` (from [`crate::cert::TlsIdentity::server_config`])
    /// with `config`: its maximum frame size, `SO_REUSEPORT` and listen backlog.
    pub fn bind_with(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        config: &TransportConfig,
    ) -> crate::Result<Self> {
        Ok(TlsAcceptor {
            listener: crate::tcp::listen(addr, config)?,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            max_frame_size: config.max_frame_size(),
        })
    }

    /// Binds `addr` and serves `config` (from [`crate::cert::TlsIdentity::server_config`]).
    /// Shorthand for [`TlsAcceptor::bind_with`] with the other limits at their defaults.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if `max_frame_size` is out of range, or the bind's I/O
    /// error.
    pub fn bind(
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
        max_frame_size: usize,
        reuse_port: bool,
    ) -> crate::Result<Self> {
        Self::bind_with(
            addr,
            config,
            &crate::tcp::shorthand(max_frame_size, reuse_port)?,
        )
    }
}

/// The handshake future [`TlsAcceptor`] hands to the runtime.
pub type TlsHandshake = Pin<
    Box<
        dyn Future<Output = std::result::Result<TlsConnection, longconn_core::ConnectionError>>
            + Send
            + 'static,
    >,
>;

impl Listener for TlsAcceptor {
    type Conn = TlsConnection;
    type Handshake = TlsHandshake;

    async fn accept(&mut self) -> std::io::Result<TlsHandshake> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        let acceptor = self.acceptor.clone();
        let max_frame_size = self.max_frame_size;
        Ok(Box::pin(async move {
            let tls = acceptor.accept(stream).await?;
            Ok(TlsConnection::new(
                Box::new(tokio_rustls::TlsStream::Server(tls)),
                peer,
                max_frame_size,
            ))
        }))
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Tls
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// One TLS connection, server or client side.
pub struct TlsConnection {
    io: Box<dyn AsyncIo>,
    peer: SocketAddr,
    max_frame_size: usize,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl TlsConnection {
    fn new(io: Box<dyn AsyncIo>, peer: SocketAddr, max_frame_size: usize) -> Self {
        TlsConnection {
            io,
            peer,
            max_frame_size,
        }
    }

    /// Connects to `addr` and completes the handshake for `server_name` with `config`
    /// (from [`crate::cert::Trust::client_config`]).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        Self::over_tcp(stream, server_name, config, max_frame_size).await
    }

    /// Completes the handshake for `server_name` over an established TCP stream (see
    /// [`crate::tcp::dial`]).
    pub async fn over_tcp(
        stream: TcpStream,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let addr = stream.peer_addr()?;
        stream.set_nodelay(true)?;
        let tls = handshake(stream, server_name, config).await?;
        Ok(TlsConnection::new(
            Box::new(tokio_rustls::TlsStream::Client(tls)),
            addr,
            max_frame_size,
        ))
    }
}

/// The client side of a TLS handshake over `stream` for `server_name` (shared with
/// `wss://`).
pub(crate) async fn handshake(
    stream: TcpStream,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> crate::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| crate::Error::Tls(format!("server name `{server_name}`: {e}")))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(handshake_error)
}

/// A failed handshake: [`crate::Error::Tls`] when rustls refused it (an untrusted
/// certificate, an alert from the peer), the socket error otherwise (a reset while the
/// peer restarts stays [`crate::Error::Io`]).
fn handshake_error(err: std::io::Error) -> crate::Error {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => crate::Error::Tls(tls.to_string()),
        None => crate::Error::Io(err),
    }
}

impl Connection for TlsConnection {
    type Reader = StreamReader<ReadHalf<Box<dyn AsyncIo>>>;
    type Writer = StreamWriter<WriteHalf<Box<dyn AsyncIo>>>;
    type Joined = Joined<Self::Reader, Self::Writer>;

    fn join(self) -> Self::Joined {
        let (reader, writer) = self.split();
        Joined::new(reader, writer)
    }

    fn split(self) -> (Self::Reader, Self::Writer) {
        let (read, write) = tokio::io::split(self.io);
        (
            StreamReader::new(read, self.max_frame_size),
            StreamWriter::new(write, self.max_frame_size),
        )
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Tls
    }
}

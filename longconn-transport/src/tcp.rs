//! Plain TCP: frames back to back on the byte stream (docs/PROTOCOL.md, "TCP").

use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use longconn_core::Listener;
use longconn_core::connection::{Connection, FrameReader, FrameWriter, TransportKind};
use longconn_core::{CloseReason, ConnectionError, Frame, Transmit};

type Result<T, E = ConnectionError> = std::result::Result<T, E>;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::TransportConfig;
use crate::stream::{ReadBuffer, StreamReader, StreamWriter};

/// Accepts TCP connections for a `longconn_server::Server`.
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: tokio::net::TcpListener,
    max_frame_size: usize,
}

impl TcpAcceptor {
    /// Binds `addr` with `config`: its maximum frame size, `SO_REUSEPORT` and listen
    /// backlog.
    pub fn bind_with(addr: SocketAddr, config: &TransportConfig) -> crate::Result<Self> {
        Ok(TcpAcceptor {
            listener: listen(addr, config)?,
            max_frame_size: config.max_frame_size(),
        })
    }

    /// Binds `addr`. With `reuse_port`, several processes (or acceptors) can bind the same
    /// address and the kernel spreads connections over them (`SO_REUSEPORT`). Shorthand
    /// for [`TcpAcceptor::bind_with`] with the other limits at their defaults.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if `max_frame_size` is out of range, or the bind's I/O
    /// error.
    pub fn bind(addr: SocketAddr, max_frame_size: usize, reuse_port: bool) -> crate::Result<Self> {
        Self::bind_with(addr, &shorthand(max_frame_size, reuse_port)?)
    }
}

/// The [`TransportConfig`] of the `bind(addr, max_frame_size, reuse_port)` shorthands.
pub(crate) fn shorthand(max_frame_size: usize, reuse_port: bool) -> crate::Result<TransportConfig> {
    TransportConfig::builder()
        .max_frame_size(max_frame_size)
        .reuse_port(reuse_port)
        .build()
}

/// Binds a TCP listener for any TCP-based transport (plain, TLS, WebSocket) with
/// `config`'s `SO_REUSEPORT` and backlog.
pub(crate) fn listen(
    addr: SocketAddr,
    config: &TransportConfig,
) -> crate::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if config.reuse_port() {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    Ok(socket.listen(config.listen_backlog())?)
}

impl Listener for TcpAcceptor {
    type Conn = TcpConnection;
    type Handshake = Ready<Result<TcpConnection>>;

    async fn accept(&mut self) -> std::io::Result<Self::Handshake> {
        let (stream, peer) = self.listener.accept().await?;
        Ok(ready(TcpConnection::from_stream(
            stream,
            peer,
            self.max_frame_size,
        )))
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// One TCP connection, server or client side.
#[derive(Debug)]
pub struct TcpConnection {
    stream: TcpStream,
    peer: SocketAddr,
    max_frame_size: usize,
}

/// Opens a TCP stream to `addr`, from the local IP `from` if given (port chosen by the
/// kernel). Load generators spread their connections over several source addresses this
/// way; every client transport can be built over the stream (`TcpConnection::from_stream`,
/// `TlsConnection::over_tcp`, `WsConnection::over_tcp`, `WsConnection::over_tls_tcp`).
pub async fn dial(addr: SocketAddr, from: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = from else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

impl TcpConnection {
    /// Connects to `addr` (client side).
    pub async fn connect(addr: SocketAddr, max_frame_size: usize) -> crate::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        Ok(Self::from_stream(stream, addr, max_frame_size)?)
    }

    /// Connects to `addr` from the local address `from` (a load generator spreads its
    /// connections over several source addresses this way).
    pub async fn connect_from(
        from: SocketAddr,
        addr: SocketAddr,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(from)?;
        let stream = socket.connect(addr).await?;
        Ok(Self::from_stream(stream, addr, max_frame_size)?)
    }

    /// Wraps an established stream. Disables Nagle's algorithm: frames are coalesced by
    /// the writer already.
    pub fn from_stream(stream: TcpStream, peer: SocketAddr, max_frame_size: usize) -> Result<Self> {
        stream.set_nodelay(true)?;
        Ok(TcpConnection {
            stream,
            peer,
            max_frame_size,
        })
    }
}

impl Connection for TcpConnection {
    type Reader = TcpReader;
    type Writer = StreamWriter<OwnedWriteHalf>;
    type Joined = TcpJoined;

    fn split(self) -> (TcpReader, StreamWriter<OwnedWriteHalf>) {
        let (read, write) = self.stream.into_split();
        (
            StreamReader::new(read, self.max_frame_size),
            StreamWriter::new(write, self.max_frame_size),
        )
    }

    /// The socket itself, not two halves sharing it: no `Arc` (48 B per connection).
    fn join(self) -> TcpJoined {
        TcpJoined {
            buffer: ReadBuffer::new(self.max_frame_size),
            writer: StreamWriter::new(self.stream, self.max_frame_size),
        }
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }
}

/// The receiving half of a [`TcpConnection`]: a [`StreamReader`] over the socket's read
/// half (an idle connection holds no read buffer).
pub type TcpReader = StreamReader<OwnedReadHalf>;

/// A [`TcpConnection`] as one value ([`Connection::join`]): the server's driver reads
/// and writes through it from one task, so the socket is owned here instead of shared
/// by two halves.
#[derive(Debug)]
pub struct TcpJoined {
    buffer: ReadBuffer,
    /// Owns the socket; reads go through [`StreamWriter::get_mut`].
    writer: StreamWriter<TcpStream>,
}

impl FrameReader for TcpJoined {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>>> {
        self.buffer.poll_frame(self.writer.get_mut(), cx)
    }
}

impl FrameWriter for TcpJoined {
    fn send(&mut self, frame: Transmit) -> Result<()> {
        self.writer.send(frame)
    }

    fn has_pending_writes(&self) -> bool {
        self.writer.has_pending_writes()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.writer.poll_flush(cx)
    }

    /// Flushes, then shuts the socket's sending side down (FIN).
    fn close(&mut self, reason: CloseReason) -> impl Future<Output = Result<()>> + Send {
        self.writer.close(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reuse_port_comes_from_the_transport_config() {
        let first = TcpAcceptor::bind_with(
            "127.0.0.1:0".parse().unwrap(),
            &TransportConfig::builder().reuse_port(true).build().unwrap(),
        )
        .unwrap();
        let addr = first.local_addr().unwrap();
        let shared = TransportConfig::builder().reuse_port(true).build().unwrap();
        assert!(TcpAcceptor::bind_with(addr, &shared).is_ok());
        assert!(TcpAcceptor::bind_with(addr, &TransportConfig::default()).is_err());
        // The shorthand validates like the builder.
        assert!(matches!(
            TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 16, false),
            Err(crate::Error::Config(_))
        ));
    }

    #[tokio::test]
    async fn dial_connects_from_the_given_source_ip() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for from in [None, Some("127.0.0.3".parse().unwrap())] {
            let (dialed, accepted) = tokio::join!(dial(addr, from), listener.accept());
            let (_stream, peer) = accepted.unwrap();
            assert_eq!(dialed.unwrap().local_addr().unwrap().ip(), peer.ip());
            if let Some(ip) = from {
                assert_eq!(peer.ip(), ip);
            }
        }
    }
}

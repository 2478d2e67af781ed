//! Plain TCP: frames back to back on the byte stream (docs/PROTOCOL.md, "TCP").

use std::future::{Ready, ready};
use std::net::SocketAddr;

use longconn_core::connection::{Connection, FrameReader, TransportKind};
use longconn_core::runtime::Listener;
use longconn_core::{Frame, Result};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::stream::{ReadBuffer, StreamWriter};

/// Accepts TCP connections for a [`longconn_core::runtime::Server`].
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: tokio::net::TcpListener,
    max_frame_size: usize,
}

impl TcpAcceptor {
    /// Binds `addr`. With `reuse_port`, several processes (or acceptors) can bind the same
    /// address and the kernel spreads connections over them (`SO_REUSEPORT`).
    pub fn bind(addr: SocketAddr, max_frame_size: usize, reuse_port: bool) -> crate::Result<Self> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if reuse_port {
            socket.set_reuseport(true)?;
        }
        socket.bind(addr)?;
        Ok(TcpAcceptor {
            listener: socket.listen(4096)?,
            max_frame_size,
        })
    }
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

    fn split(self) -> (TcpReader, StreamWriter<OwnedWriteHalf>) {
        let (read, write) = self.stream.into_split();
        (
            TcpReader {
                io: read,
                buffer: ReadBuffer::new(self.max_frame_size),
            },
            StreamWriter::new(write, self.max_frame_size),
        )
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Tcp
    }
}

/// The receiving half of a [`TcpConnection`]. It waits for readiness before it takes a
/// read buffer, so an idle connection holds none.
#[derive(Debug)]
pub struct TcpReader {
    io: OwnedReadHalf,
    buffer: ReadBuffer,
}

impl FrameReader for TcpReader {
    async fn recv(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.buffer.decode()? {
                return Ok(Some(frame));
            }
            // Readiness waits hold no data, and `try_read_buf` does not wait: cancel safe.
            self.io.readable().await?;
            match self.io.try_read_buf(self.buffer.spare()) {
                Ok(0) => return self.buffer.decode_eof(),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err.into()),
            }
        }
    }
}

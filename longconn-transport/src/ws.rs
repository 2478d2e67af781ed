//! WebSocket (`ws://`, and `wss://` with the `tls` feature): path `/ws`, one binary
//! message carries exactly one frame (docs/PROTOCOL.md, "Transport mappings").
//!
//! Built on tokio-tungstenite, configured for many idle connections: a 512-byte read
//! buffer and messages no larger than the session's maximum frame size (see
//! docs/BENCHMARKS.md for the memory figures behind the choice).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, StreamExt};
use longconn_core::connection::{Connection, FrameReader, FrameWriter, TransportKind};
use longconn_core::runtime::Listener;
use longconn_core::{CloseReason, Code, Frame, FrameCodec, Transmit};
use tokio::net::TcpStream;

use crate::stream::AsyncIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The only path that upgrades.
pub const WS_PATH: &str = "/ws";

/// Read buffer per connection. tungstenite's default (128 KiB) is allocated on the first
/// read and kept; 512 bytes is enough for typical frames and grows for large ones.
const READ_BUFFER: usize = 512;

type Socket = WebSocketStream<Box<dyn AsyncIo>>;

fn ws_config(max_frame_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max_frame_size))
        .max_frame_size(Some(max_frame_size))
}

/// Accepts WebSocket connections on `/ws`, optionally over TLS (`wss`).
pub struct WsAcceptor {
    listener: tokio::net::TcpListener,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_frame_size: usize,
}

impl std::fmt::Debug for WsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsAcceptor")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl WsAcceptor {
    /// Binds `addr` for plain `ws://`.
    pub fn bind(addr: SocketAddr, max_frame_size: usize, reuse_port: bool) -> crate::Result<Self> {
        Ok(WsAcceptor {
            listener: crate::tcp::listen(addr, reuse_port)?,
            #[cfg(feature = "tls")]
            tls: None,
            max_frame_size,
        })
    }

    /// Binds `addr` for `wss://` with `config` (from
    /// [`crate::cert::TlsIdentity::server_config`]).
    #[cfg(feature = "tls")]
    pub fn bind_tls(
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
        max_frame_size: usize,
        reuse_port: bool,
    ) -> crate::Result<Self> {
        Ok(WsAcceptor {
            listener: crate::tcp::listen(addr, reuse_port)?,
            tls: Some(tokio_rustls::TlsAcceptor::from(config)),
            max_frame_size,
        })
    }
}

/// Refuses every path but [`WS_PATH`] with a 404 and a JSON body.
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
fn only_ws_path(request: &Request, response: Response) -> Result<Response, ErrorResponse> {
    if request.uri().path() == WS_PATH {
        return Ok(response);
    }
    let mut refusal = ErrorResponse::new(Some(format!(
        r#"{{"error":"not_found","message":"WebSocket endpoint is {WS_PATH}"}}"#
    )));
    *refusal.status_mut() = StatusCode::NOT_FOUND;
    Err(refusal)
}

/// The handshake future [`WsAcceptor`] hands to the runtime.
pub type WsHandshake =
    Pin<Box<dyn Future<Output = longconn_core::Result<WsConnection>> + Send + 'static>>;

impl Listener for WsAcceptor {
    type Conn = WsConnection;
    type Handshake = WsHandshake;

    async fn accept(&mut self) -> std::io::Result<WsHandshake> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        #[cfg(feature = "tls")]
        let tls = self.tls.clone();
        let max_frame_size = self.max_frame_size;
        Ok(Box::pin(async move {
            #[cfg(feature = "tls")]
            let io: Box<dyn AsyncIo> = match tls {
                Some(tls) => Box::new(tls.accept(stream).await?),
                None => Box::new(stream),
            };
            #[cfg(not(feature = "tls"))]
            let io: Box<dyn AsyncIo> = Box::new(stream);
            let socket = tokio_tungstenite::accept_hdr_async_with_config(
                io,
                only_ws_path,
                Some(ws_config(max_frame_size)),
            )
            .await
            .map_err(ws_error)?;
            Ok(WsConnection::new(socket, peer, max_frame_size))
        }))
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebSocket
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// One WebSocket connection, server or client side.
pub struct WsConnection {
    socket: Socket,
    peer: SocketAddr,
    max_frame_size: usize,
}

impl std::fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl WsConnection {
    fn new(socket: Socket, peer: SocketAddr, max_frame_size: usize) -> Self {
        WsConnection {
            socket,
            peer,
            max_frame_size,
        }
    }

    /// Upgrades `url` (`ws://host:port/ws`) over an established TCP stream (a load
    /// generator connects from chosen source addresses this way).
    pub async fn over_tcp(
        stream: TcpStream,
        url: &str,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let peer = stream.peer_addr()?;
        stream.set_nodelay(true)?;
        let io: Box<dyn AsyncIo> = Box::new(stream);
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(url, io, Some(ws_config(max_frame_size)))
                .await
                .map_err(|e| crate::Error::WebSocket(e.to_string()))?;
        Ok(WsConnection::new(socket, peer, max_frame_size))
    }

    /// Connects to `addr` and upgrades `url` (`ws://host:port/ws`, or `wss://...` with
    /// `tls` = (server name, client config)).
    pub async fn connect(
        addr: SocketAddr,
        url: &str,
        #[cfg(feature = "tls")] tls: Option<(&str, Arc<rustls::ClientConfig>)>,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        #[cfg(feature = "tls")]
        let io: Box<dyn AsyncIo> = match tls {
            Some((name, config)) => {
                let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                    .map_err(|e| crate::Error::Tls(format!("server name `{name}`: {e}")))?;
                Box::new(
                    tokio_rustls::TlsConnector::from(config)
                        .connect(name, stream)
                        .await?,
                )
            }
            None => Box::new(stream),
        };
        #[cfg(not(feature = "tls"))]
        let io: Box<dyn AsyncIo> = Box::new(stream);
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(url, io, Some(ws_config(max_frame_size)))
                .await
                .map_err(|e| crate::Error::WebSocket(e.to_string()))?;
        Ok(WsConnection::new(socket, addr, max_frame_size))
    }
}

impl Connection for WsConnection {
    type Reader = WsReader;
    type Writer = WsWriter;

    fn split(self) -> (WsReader, WsWriter) {
        let (sink, stream) = self.socket.split();
        let text_received = Arc::new(AtomicBool::new(false));
        (
            WsReader {
                stream,
                codec: FrameCodec::new(self.max_frame_size),
                text_received: text_received.clone(),
            },
            WsWriter {
                sink,
                pending: VecDeque::new(),
                max_frame_size: self.max_frame_size,
                text_received,
            },
        )
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebSocket
    }
}

/// The receiving half of a [`WsConnection`].
pub struct WsReader {
    stream: SplitStream<Socket>,
    codec: FrameCodec,
    /// Set when a text message arrived, so the writer closes with status 1003.
    text_received: Arc<AtomicBool>,
}

impl std::fmt::Debug for WsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader").finish_non_exhaustive()
    }
}

impl FrameReader for WsReader {
    async fn recv(&mut self) -> longconn_core::Result<Option<Frame>> {
        loop {
            // `StreamExt::next` is cancel safe: a message is either returned or kept.
            match self.stream.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    return self.codec.decode_message(bytes).map(Some);
                }
                Some(Ok(Message::Text(_))) => {
                    self.text_received.store(true, Ordering::Relaxed);
                    return Err(longconn_core::Error::MalformedField {
                        tag: 0,
                        reason: "a WebSocket text message cannot carry a frame",
                    });
                }
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // tungstenite refuses a message over the frame size limit before it
                // reads it: report it as the frame-size error it is.
                Some(Err(WsError::Capacity(_))) => {
                    return Err(longconn_core::Error::FrameTooLarge {
                        len: self.codec.max_frame_size() as u64 + 1,
                        max: self.codec.max_frame_size(),
                    });
                }
                Some(Err(err)) => return Err(ws_error(err)),
            }
        }
    }
}

/// The sending half of a [`WsConnection`]: each frame becomes one binary message.
pub struct WsWriter {
    sink: SplitSink<Socket, Message>,
    pending: VecDeque<Message>,
    max_frame_size: usize,
    text_received: Arc<AtomicBool>,
}

impl std::fmt::Debug for WsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsWriter")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl WsWriter {
    /// Polls the pending messages into the socket and flushes it. A message leaves
    /// `pending` only once the sink is ready to take it, so nothing is lost when the
    /// caller stops polling.
    fn poll_flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<longconn_core::Result<()>> {
        while !self.pending.is_empty() {
            ready!(Pin::new(&mut self.sink).poll_ready(cx)).map_err(ws_error)?;
            if let Some(message) = self.pending.pop_front() {
                Pin::new(&mut self.sink)
                    .start_send(message)
                    .map_err(ws_error)?;
            }
        }
        ready!(Pin::new(&mut self.sink).poll_flush(cx)).map_err(ws_error)?;
        if self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl FrameWriter for WsWriter {
    fn send(&mut self, frame: Transmit) -> longconn_core::Result<()> {
        let bytes = match frame {
            Transmit::Frame(frame) => frame.to_bytes(self.max_frame_size)?,
            Transmit::Encoded(bytes) => bytes,
        };
        self.pending.push_back(Message::Binary(bytes));
        Ok(())
    }

    fn has_pending_writes(&self) -> bool {
        !self.pending.is_empty()
    }

    fn flush(&mut self) -> impl Future<Output = longconn_core::Result<()>> + Send {
        std::future::poll_fn(|cx| self.poll_flush_pending(cx))
    }

    async fn close(&mut self, reason: CloseReason) -> longconn_core::Result<()> {
        let status = if self.text_received.load(Ordering::Relaxed) {
            CloseCode::Unsupported
        } else {
            close_status(reason.code())
        };
        self.pending.push_back(Message::Close(Some(CloseFrame {
            code: status,
            reason: reason.code().name().into(),
        })));
        std::future::poll_fn(|cx| self.poll_flush_pending(cx)).await?;
        std::future::poll_fn(|cx| Pin::new(&mut self.sink).poll_close(cx))
            .await
            .map_err(ws_error)
    }
}

/// The WebSocket close status for a longconn close code (docs/PROTOCOL.md, section 9).
pub fn close_status(code: Code) -> CloseCode {
    match code {
        Code::Normal => CloseCode::Normal,
        Code::GoingAway => CloseCode::Away,
        Code::BadMagic
        | Code::UnsupportedVersion
        | Code::MalformedFrame
        | Code::UnexpectedFrame => CloseCode::Protocol,
        Code::FrameTooLarge => CloseCode::Size,
        other => CloseCode::from(4000u16.saturating_add(other.as_u16()).min(4999)),
    }
}

fn ws_error(err: WsError) -> longconn_core::Error {
    match err {
        WsError::Io(io) => longconn_core::Error::Io(io),
        other => longconn_core::Error::Io(std::io::Error::other(other)),
    }
}

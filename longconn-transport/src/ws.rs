//! WebSocket (`ws://`, and `wss://` with the `tls` feature): path `/ws`, one binary
//! message carries exactly one frame (docs/PROTOCOL.md, "Transport mappings").
//!
//! Built on tokio-tungstenite. The server reads the HTTP upgrade request itself so that
//! it can answer every refusal (tungstenite's handshake only lets a callback refuse a
//! request that is already a valid upgrade, and drops the others without a response):
//!
//! | request | answer |
//! |---|---|
//! | a valid WebSocket upgrade of `GET /ws` (a query string is allowed) | `101`, then frames |
//! | a `GET` for any other path | `404` with a short JSON body |
//! | an `Origin` header not in the acceptor's allowlist ([`WsAcceptor::allow_origins`]) | `403` with a short JSON body; a request without `Origin` (a native client) is not checked |
//! | `GET /ws` without a valid upgrade; anything that is not an HTTP/1.1 `GET` | `400` |
//!
//! # Memory
//! [`WebSocketConfig`] is set for many idle connections rather than bulk transfer
//! (the limits come from [`TransportConfig`]):
//! - `read_buffer_size` 128 B by default on the server
//!   ([`TransportConfig::ws_read_buffer_size`]; 512 B on the client side);
//!   tungstenite's default is 128 KiB, allocated when the connection is made and kept
//!   for the connection's life: ~138 KB per idle connection, against ~3.2 KB with 512 B
//!   and ~400 B less with 128 B; see ../shared/GUIDE.md and docs/BENCHMARKS.md). The
//!   buffer grows for a larger message and reads at most that many bytes per call, which
//!   costs more read calls for large client messages only.
//! - `write_buffer_size` 0: each message goes to the socket when it is queued.
//!   tungstenite's write buffer is a `Vec` that never shrinks, so a larger target would
//!   keep up to that many bytes per connection after its first burst; a frame is
//!   usually one push, so there is little to coalesce on this transport anyway.
//! - `max_message_size` and `max_frame_size` = [`TransportConfig::max_frame_size`], the
//!   session's maximum frame size: one
//!   message is one longconn frame, and tungstenite refuses a larger one from its header,
//!   before buffering it (reported as `frame_too_large`).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::stream::{SplitSink, SplitStream};
use futures::{Sink, StreamExt};
use longconn_core::Listener;
use longconn_core::connection::{Connection, FrameReader, FrameWriter, Joined, TransportKind};
use longconn_core::{CloseReason, Code, Frame, FrameCodec, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response, write_response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::TransportConfig;
use crate::stream::AsyncIo;

/// The only path that upgrades.
pub const WS_PATH: &str = "/ws";

/// Read buffer of client-side connections: one per device, which reads the pushes
/// (larger than what a client sends), so fewer, larger reads than the server's default.
const CLIENT_WS_READ_BUFFER: usize = 512;

/// Bytes added to the request-head buffer when it is full.
const REQUEST_HEAD_CHUNK: usize = 1024;

type Socket = WebSocketStream<Box<dyn AsyncIo>>;

fn ws_config(max_frame_size: usize, read_buffer_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer_size)
        .write_buffer_size(0)
        .max_message_size(Some(max_frame_size))
        .max_frame_size(Some(max_frame_size))
}

/// Accepts WebSocket connections on `/ws`, optionally over TLS (`wss`).
pub struct WsAcceptor {
    listener: tokio::net::TcpListener,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    /// Browser origins allowed to upgrade; `None`: all.
    origins: Option<std::sync::Arc<[String]>>,
}

/// What a server-side handshake needs from the [`TransportConfig`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame_size: usize,
    read_buffer_size: usize,
    max_request_head: usize,
}

impl Limits {
    fn new(config: &TransportConfig) -> Limits {
        Limits {
            max_frame_size: config.max_frame_size(),
            read_buffer_size: config.ws_read_buffer_size(),
            max_request_head: config.ws_max_request_head(),
        }
    }
}

impl std::fmt::Debug for WsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsAcceptor")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl WsAcceptor {
    /// Binds `addr` for plain `ws://` with `config`: its maximum frame size,
    /// `SO_REUSEPORT`, listen backlog, read buffer and request-head limit.
    pub fn bind_with(addr: SocketAddr, config: &TransportConfig) -> crate::Result<Self> {
        Ok(WsAcceptor {
            listener: crate::tcp::listen(addr, config)?,
            #[cfg(feature = "tls")]
            tls: None,
            limits: Limits::new(config),
            origins: None,
        })
    }

    /// Only browsers whose `Origin` header is one of `origins` (`scheme://host[:port]`,
    /// compared ASCII case-insensitively) may upgrade; others get `403`. A request
    /// without an `Origin` header (a native client) is not checked. `None` (the
    /// default): every origin may upgrade.
    #[must_use]
    pub fn allow_origins(mut self, origins: Option<Vec<String>>) -> Self {
        self.origins = normalize_origins(origins);
        self
    }

    /// Binds `addr` for plain `ws://`. With `reuse_port`, several processes can bind the
    /// same address (`SO_REUSEPORT`). Shorthand for [`WsAcceptor::bind_with`] with the
    /// other limits at their defaults.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if `max_frame_size` is out of range, or the bind's I/O
    /// error.
    pub fn bind(addr: SocketAddr, max_frame_size: usize, reuse_port: bool) -> crate::Result<Self> {
        Self::bind_with(addr, &crate::tcp::shorthand(max_frame_size, reuse_port)?)
    }

    /// Binds `addr` for `wss://` with `tls` (from
    /// [`crate::cert::TlsIdentity::server_config`]) and `config`.
    #[cfg(feature = "tls")]
    pub fn bind_tls_with(
        addr: SocketAddr,
        tls: std::sync::Arc<rustls::ServerConfig>,
        config: &TransportConfig,
    ) -> crate::Result<Self> {
        Ok(WsAcceptor {
            listener: crate::tcp::listen(addr, config)?,
            tls: Some(tokio_rustls::TlsAcceptor::from(tls)),
            limits: Limits::new(config),
            origins: None,
        })
    }

    /// Binds `addr` for `wss://` with `config` (from
    /// [`crate::cert::TlsIdentity::server_config`]). Shorthand for
    /// [`WsAcceptor::bind_tls_with`] with the other limits at their defaults.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if `max_frame_size` is out of range, or the bind's I/O
    /// error.
    #[cfg(feature = "tls")]
    pub fn bind_tls(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ServerConfig>,
        max_frame_size: usize,
        reuse_port: bool,
    ) -> crate::Result<Self> {
        Self::bind_tls_with(
            addr,
            config,
            &crate::tcp::shorthand(max_frame_size, reuse_port)?,
        )
    }
}

/// The handshake future [`WsAcceptor`] hands to the runtime: TLS (for `wss`), then the
/// HTTP upgrade. The runtime bounds it with its handshake timeout.
pub type WsHandshake = Pin<
    Box<
        dyn Future<Output = std::result::Result<WsConnection, longconn_core::ConnectionError>>
            + Send
            + 'static,
    >,
>;

impl Listener for WsAcceptor {
    type Conn = WsConnection;
    type Handshake = WsHandshake;

    async fn accept(&mut self) -> std::io::Result<WsHandshake> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        #[cfg(feature = "tls")]
        let tls = self.tls.clone();
        let limits = self.limits;
        let origins = self.origins.clone();
        Ok(Box::pin(async move {
            #[cfg(feature = "tls")]
            let io: Box<dyn AsyncIo> = match tls {
                Some(tls) => Box::new(tls.accept(stream).await?),
                None => Box::new(stream),
            };
            #[cfg(not(feature = "tls"))]
            let io: Box<dyn AsyncIo> = Box::new(stream);
            server_handshake(io, peer, limits, origins.as_deref()).await
        }))
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebSocket
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The allowlist as [`WsAcceptor::allow_origins`] stores it: no trailing `/`, lower case.
fn normalize_origins(origins: Option<Vec<String>>) -> Option<std::sync::Arc<[String]>> {
    origins.map(|o| {
        o.into_iter()
            .map(|s| s.trim_end_matches('/').to_ascii_lowercase())
            .collect()
    })
}

/// The HTTP upgrade, then the WebSocket stream over `io`.
async fn server_handshake(
    mut io: Box<dyn AsyncIo>,
    peer: SocketAddr,
    limits: Limits,
    origins: Option<&[String]>,
) -> std::result::Result<WsConnection, longconn_core::ConnectionError> {
    accept_upgrade(&mut io, limits.max_request_head, origins).await?;
    let config = ws_config(limits.max_frame_size, limits.read_buffer_size);
    let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    Ok(WsConnection::new(socket, peer, limits.max_frame_size))
}

/// The server side of the WebSocket handshake that [`WsAcceptor`] runs after accepting a
/// TCP (or TLS) stream, over any byte stream `io` (an in-memory `tokio::io::duplex` in
/// the fuzz target, fuzz/fuzz_targets/ws_upgrade.rs): the same request parsing, path and
/// `Origin` checks (`origins` as for [`WsAcceptor::allow_origins`]), limits from
/// `config`, and refusals. Not a stable API: it exists so that the real handshake code
/// can be driven without a socket.
///
/// # Errors
/// The refusal or I/O error that ended the handshake.
#[doc(hidden)]
pub async fn accept_stream<S: AsyncIo>(
    io: S,
    peer: SocketAddr,
    config: &TransportConfig,
    origins: Option<Vec<String>>,
) -> std::result::Result<WsConnection, longconn_core::ConnectionError> {
    let origins = normalize_origins(origins);
    server_handshake(Box::new(io), peer, Limits::new(config), origins.as_deref()).await
}

/// Reads the HTTP request and answers it: `101 Switching Protocols` for a valid upgrade
/// of [`WS_PATH`], otherwise the refusal in the module docs, after which it fails.
///
/// The request head is read into a buffer that is dropped on return; it may not exceed
/// `max_request_head` bytes, and the client may not send anything after it before the
/// response (RFC 6455, section 4.1).
async fn accept_upgrade(
    io: &mut Box<dyn AsyncIo>,
    max_request_head: usize,
    origins: Option<&[String]>,
) -> std::result::Result<(), longconn_core::ConnectionError> {
    let mut head = Vec::with_capacity(REQUEST_HEAD_CHUNK);
    let request = loop {
        if head.len() == head.capacity() {
            head.reserve(REQUEST_HEAD_CHUNK);
        }
        if io.read_buf(&mut head).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed during the WebSocket upgrade request",
            )
            .into());
        }
        match Request::try_parse(&head) {
            Ok(Some((len, request))) if len == head.len() => break request,
            Ok(Some(_)) => {
                return refuse(io, StatusCode::BAD_REQUEST, "data after the request").await;
            }
            Ok(None) if head.len() >= max_request_head => {
                return refuse(io, StatusCode::BAD_REQUEST, "request head too large").await;
            }
            Ok(None) => {}
            // Not HTTP/1.1, not a GET, or not HTTP at all.
            Err(_) => {
                return refuse(io, StatusCode::BAD_REQUEST, "expected GET /ws HTTP/1.1").await;
            }
        }
    };
    drop(head);
    if request.uri().path() != WS_PATH {
        return refuse(io, StatusCode::NOT_FOUND, "the WebSocket endpoint is /ws").await;
    }
    if let (Some(allowed), Some(origin)) = (origins, request.headers().get("origin")) {
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        if !allowed.contains(&origin) {
            return refuse(io, StatusCode::FORBIDDEN, "this Origin may not connect").await;
        }
    }
    let response = match create_response(&request) {
        Ok(response) => response,
        Err(_) => {
            return refuse(
                io,
                StatusCode::BAD_REQUEST,
                "expected a WebSocket upgrade (Upgrade: websocket, Sec-WebSocket-Version: 13)",
            )
            .await;
        }
    };
    let mut bytes = Vec::new();
    write_response(&mut bytes, &response).map_err(ws_error)?;
    io.write_all(&bytes).await?;
    io.flush().await?;
    Ok(())
}

/// Answers with `status` and a JSON body `{"error": <status name>, "message": message}`,
/// closes the stream and returns the error that ends the handshake. `message` is a
/// constant without characters that JSON would need escaped.
async fn refuse(
    io: &mut Box<dyn AsyncIo>,
    status: StatusCode,
    message: &'static str,
) -> std::result::Result<(), longconn_core::ConnectionError> {
    // A 400 names the WebSocket version this server speaks (RFC 6455, section 4.4).
    let (error, extra_header) = match status {
        StatusCode::NOT_FOUND => ("not_found", ""),
        StatusCode::FORBIDDEN => ("forbidden", ""),
        _ => ("bad_request", "Sec-WebSocket-Version: 13\r\n"),
    };
    let body = format!(r#"{{"error":"{error}","message":"{message}"}}"#);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         {extra_header}Connection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort: the peer may already be gone, and the handshake fails either way.
    if io.write_all(response.as_bytes()).await.is_ok() {
        let _ = io.shutdown().await;
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("WebSocket upgrade refused with {status}: {message}"),
    )
    .into())
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
        Self::upgrade(Box::new(stream), url, peer, max_frame_size).await
    }

    /// Connects to `addr` and upgrades `url` (`ws://host:port/ws`).
    pub async fn connect(
        addr: SocketAddr,
        url: &str,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Self::upgrade(Box::new(stream), url, addr, max_frame_size).await
    }

    /// Connects to `addr`, completes a TLS handshake for `server_name` with `config`
    /// (from [`crate::cert::Trust::client_config`]) and upgrades `url`
    /// (`wss://host:port/ws`).
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        addr: SocketAddr,
        url: &str,
        server_name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        Self::over_tls_tcp(stream, url, server_name, config, max_frame_size).await
    }

    /// [`WsConnection::connect_tls`] over an established TCP stream (see
    /// [`crate::tcp::dial`]).
    #[cfg(feature = "tls")]
    pub async fn over_tls_tcp(
        stream: TcpStream,
        url: &str,
        server_name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let addr = stream.peer_addr()?;
        stream.set_nodelay(true)?;
        let tls = crate::tls::handshake(stream, server_name, config).await?;
        Self::upgrade(Box::new(tls), url, addr, max_frame_size).await
    }

    async fn upgrade(
        io: Box<dyn AsyncIo>,
        url: &str,
        peer: SocketAddr,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let config = ws_config(max_frame_size, CLIENT_WS_READ_BUFFER);
        let (socket, _) = tokio_tungstenite::client_async_with_config(url, io, Some(config))
            .await
            .map_err(upgrade_error)?;
        Ok(WsConnection::new(socket, peer, max_frame_size))
    }
}

/// A failed client upgrade: the HTTP status when the server answered with another one
/// than 101, the socket error (a reset, a refused handshake of `wss://`) when there is
/// one, the handshake's text otherwise.
fn upgrade_error(err: WsError) -> crate::Error {
    match err {
        WsError::Http(response) => crate::Error::WebSocketStatus {
            status: response.status().as_u16(),
        },
        WsError::Io(io) => crate::Error::Io(io),
        other => crate::Error::WebSocket(other.to_string()),
    }
}

impl Connection for WsConnection {
    type Reader = WsReader;
    type Writer = WsWriter;
    type Joined = Joined<WsReader, WsWriter>;

    fn join(self) -> Self::Joined {
        let (reader, writer) = self.split();
        Joined::new(reader, writer)
    }

    fn split(self) -> (WsReader, WsWriter) {
        let (sink, stream) = self.socket.split();
        (
            WsReader {
                stream,
                codec: FrameCodec::new(self.max_frame_size),
            },
            WsWriter {
                sink,
                pending: VecDeque::new(),
                max_frame_size: u32::try_from(self.max_frame_size).unwrap_or(u32::MAX),
                unflushed: false,
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
}

impl std::fmt::Debug for WsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader").finish_non_exhaustive()
    }
}

impl FrameReader for WsReader {
    /// The next binary message, decoded as exactly one frame (zero-copy: the frame's
    /// fields and payload are slices of the message). A text message is
    /// [`longconn_core::DecodeError::UnsupportedMessage`]; a binary message that is not exactly
    /// one frame is the codec's error. WebSocket ping and pong are answered by
    /// tungstenite and skipped here.
    ///
    /// A message is taken from tungstenite only whole, so nothing is lost on `Pending`.
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<Option<Frame>, longconn_core::ConnectionError>> {
        loop {
            let message = match ready!(self.stream.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(bytes))) => {
                    return Poll::Ready(Ok(Some(self.codec.decode_message(bytes)?)));
                }
                Some(Ok(Message::Text(_))) => Err(longconn_core::DecodeError::UnsupportedMessage {
                    what: "a WebSocket text message",
                }
                .into()),
                Some(Ok(Message::Close(_))) => {
                    // tungstenite has queued its reply to the peer's close; one more poll
                    // writes it. Best effort, never waits: the session ends either way.
                    let _ = self.stream.poll_next_unpin(cx);
                    Ok(None)
                }
                None => Ok(None),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                // tungstenite refuses a message over the size limit from its header,
                // before reading it: report it as the frame-size error it is.
                Some(Err(WsError::Capacity(_))) => Err(longconn_core::DecodeError::FrameTooLarge {
                    len: self.codec.max_frame_size() as u64 + 1,
                    max: self.codec.max_frame_size(),
                }
                .into()),
                Some(Err(err)) => Err(ws_error(err)),
            };
            return Poll::Ready(message);
        }
    }
}

/// The sending half of a [`WsConnection`]: each frame becomes one binary message.
pub struct WsWriter {
    sink: SplitSink<Socket, Message>,
    /// Messages from [`FrameWriter::send`] that the socket has not taken yet.
    pending: VecDeque<Message>,
    /// `u32`, beside `unflushed` in 8 bytes: the writer is part of every idle
    /// connection's task, whose allocation grows in 128-byte steps.
    max_frame_size: u32,
    /// Messages were sent since the last completed flush. Stays set once `pending` is
    /// empty until the socket's flush completes too (tungstenite or TLS may still hold
    /// bytes it has taken).
    unflushed: bool,
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
    fn poll_flush_pending(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), longconn_core::ConnectionError>> {
        while !self.pending.is_empty() {
            ready!(Pin::new(&mut self.sink).poll_ready(cx)).map_err(ws_error)?;
            if let Some(message) = self.pending.pop_front() {
                Pin::new(&mut self.sink)
                    .start_send(message)
                    .map_err(ws_error)?;
            }
        }
        ready!(Pin::new(&mut self.sink).poll_flush(cx)).map_err(ws_error)?;
        self.unflushed = false;
        if self.pending.capacity() > 0 {
            // An idle connection keeps no queue memory.
            self.pending = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl FrameWriter for WsWriter {
    fn send(&mut self, frame: Transmit) -> std::result::Result<(), longconn_core::ConnectionError> {
        let bytes = match frame {
            Transmit::Frame(frame) => frame.to_bytes(self.max_frame_size as usize)?,
            Transmit::Encoded(bytes) => bytes,
        };
        self.pending.push_back(Message::Binary(bytes));
        self.unflushed = true;
        Ok(())
    }

    /// True from the first [`FrameWriter::send`] until a [`FrameWriter::flush`]
    /// completes, including while the socket still flushes messages it has taken.
    fn has_pending_writes(&self) -> bool {
        self.unflushed
    }

    /// A message moves from the local queue into tungstenite only when the socket is
    /// ready for it, and tungstenite keeps what it has taken until a later flush writes
    /// it.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), longconn_core::ConnectionError>> {
        self.poll_flush_pending(cx)
    }

    /// Flushes the pending messages, then sends a WebSocket close whose status is
    /// [`close_status`] of the reason's code, with the code's name as the reason text.
    async fn close(
        &mut self,
        reason: CloseReason,
    ) -> std::result::Result<(), longconn_core::ConnectionError> {
        let code = reason.code();
        self.pending.push_back(Message::Close(Some(CloseFrame {
            code: close_status(code),
            reason: code.name().into(),
        })));
        std::future::poll_fn(|cx| self.poll_flush_pending(cx)).await?;
        std::future::poll_fn(|cx| Pin::new(&mut self.sink).poll_close(cx))
            .await
            .map_err(ws_error)
    }
}

/// The WebSocket close status for a longconn close code (docs/PROTOCOL.md, section 9):
/// 1000 normal (also when the transport ended), 1001 going away, 1002 for protocol
/// errors, 1003 for an unsupported (text) message, 1009 for an oversized frame, and
/// 4000 + the code for everything else (kicks, timeouts, authentication failures).
pub fn close_status(code: Code) -> CloseCode {
    match code {
        Code::Normal => CloseCode::Normal,
        Code::GoingAway | Code::Draining => CloseCode::Away,
        Code::BadMagic
        | Code::UnsupportedVersion
        | Code::MalformedFrame
        | Code::UnexpectedFrame => CloseCode::Protocol,
        Code::UnsupportedMessage => CloseCode::Unsupported,
        Code::FrameTooLarge => CloseCode::Size,
        other => CloseCode::from(4000u16.saturating_add(other.as_u16()).min(4999)),
    }
}

fn ws_error(err: WsError) -> longconn_core::ConnectionError {
    match err {
        WsError::Io(io) => longconn_core::ConnectionError::Io(io),
        other => longconn_core::ConnectionError::Io(std::io::Error::other(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use longconn_core::connection::{Connection, FrameWriter};
    use longconn_core::{Frame, Transmit};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::{WsConnection, ws_config};
    use crate::config::DEFAULT_WS_READ_BUFFER;

    /// Never readable; takes every byte at once, but its flush stays pending (like a TLS
    /// stream over a full socket) until `flushable` is set.
    struct SlowFlush {
        flushable: Arc<AtomicBool>,
    }

    impl AsyncRead for SlowFlush {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for SlowFlush {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.flushable.load(Ordering::Relaxed) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Sends an upgrade request with a header of `padding` bytes to an acceptor bound
    /// with `config`; returns the status line of the answer.
    async fn upgrade_status(config: &crate::TransportConfig, padding: usize) -> String {
        use longconn_core::Listener;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut acceptor =
            super::WsAcceptor::bind_with("127.0.0.1:0".parse().unwrap(), config).unwrap();
        let addr = acceptor.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let handshake = acceptor.accept().await.unwrap();
            handshake.await.is_ok()
        });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             X-Padding: {}\r\n\r\n",
            "p".repeat(padding)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        let upgraded = server.await.unwrap();
        let status = String::from_utf8(answer).unwrap();
        assert_eq!(upgraded, status.ends_with("101"), "{status}");
        status
    }

    #[tokio::test]
    async fn the_request_head_limit_comes_from_the_transport_config() {
        let small = crate::TransportConfig::builder()
            .ws_max_request_head(1024)
            .build()
            .unwrap();
        assert_eq!(upgrade_status(&small, 2000).await, "HTTP/1.1 400");
        assert_eq!(upgrade_status(&small, 10).await, "HTTP/1.1 101");
        let default = crate::TransportConfig::default();
        assert_eq!(upgrade_status(&default, 2000).await, "HTTP/1.1 101");
    }

    /// The status an acceptor allowing `origins` answers to an upgrade with `origin`.
    async fn origin_status(origins: Option<Vec<String>>, origin: Option<&str>) -> String {
        use longconn_core::Listener;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut acceptor = super::WsAcceptor::bind_with(
            "127.0.0.1:0".parse().unwrap(),
            &crate::TransportConfig::default(),
        )
        .unwrap()
        .allow_origins(origins);
        let addr = acceptor.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let handshake = acceptor.accept().await.unwrap();
            handshake.await.is_ok()
        });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             {origin}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        let upgraded = server.await.unwrap();
        let status = String::from_utf8(answer).unwrap();
        assert_eq!(upgraded, status.ends_with("101"), "{status}");
        status
    }

    #[tokio::test]
    async fn origins_outside_the_allowlist_get_403_and_native_clients_pass() {
        let list = Some(vec![
            "https://app.example".to_owned(),
            "http://LOCALHOST:8080/".into(),
        ]);
        for (origin, status) in [
            (Some("https://app.example"), "HTTP/1.1 101"),
            (Some("HTTPS://App.Example"), "HTTP/1.1 101"),
            (Some("http://localhost:8080"), "HTTP/1.1 101"),
            (Some("https://evil.example"), "HTTP/1.1 403"),
            (Some("https://app.example.evil"), "HTTP/1.1 403"),
            (Some("null"), "HTTP/1.1 403"),
            (None, "HTTP/1.1 101"),
        ] {
            assert_eq!(
                origin_status(list.clone(), origin).await,
                status,
                "{origin:?}"
            );
        }
        // An empty list: browsers refused, native clients pass; no list: all pass.
        assert_eq!(
            origin_status(Some(vec![]), Some("https://app.example")).await,
            "HTTP/1.1 403"
        );
        assert_eq!(origin_status(Some(vec![]), None).await, "HTTP/1.1 101");
        assert_eq!(
            origin_status(None, Some("https://evil.example")).await,
            "HTTP/1.1 101"
        );
    }

    #[tokio::test]
    async fn a_cancelled_flush_leaves_the_writes_pending() {
        let flushable = Arc::new(AtomicBool::new(false));
        let io = SlowFlush {
            flushable: flushable.clone(),
        };
        let socket = WebSocketStream::from_raw_socket(
            Box::new(io) as _,
            Role::Server,
            Some(ws_config(1024, DEFAULT_WS_READ_BUFFER)),
        )
        .await;
        let conn = WsConnection::new(socket, "127.0.0.1:1".parse().unwrap(), 1024);
        let (_reader, mut writer) = conn.split();
        let ping = Frame::Ping {
            id: 1,
            payload: Bytes::new(),
        };
        writer.send(Transmit::Frame(ping)).unwrap();
        assert!(writer.has_pending_writes());

        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The message left the local queue, but the socket's flush is pending: the
        // caller drops the flush here and must still see pending writes.
        assert!(writer.poll_flush_pending(&mut cx).is_pending());
        assert!(writer.pending.is_empty());
        assert!(writer.has_pending_writes());

        flushable.store(true, Ordering::Relaxed);
        assert!(matches!(
            writer.poll_flush_pending(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(!writer.has_pending_writes());
    }
}

//! WebSocket (`ws://`, and `wss://` with the `tls` feature): path `/ws`, one binary
//! message carries exactly one frame (docs/PROTOCOL.md, "Transport mappings").
//!
//! The HTTP upgrade uses tungstenite's request and response parsing; the frames after
//! it are read and written by [`framing`] (tungstenite's frame header codec, this
//! crate's buffers). The server reads the HTTP upgrade request itself so that it can
//! answer every refusal (tungstenite's handshake only lets a callback refuse a request
//! that is already a valid upgrade, and drops the others without a response):
//!
//! | request | answer |
//! |---|---|
//! | a valid WebSocket upgrade of `GET /ws` (a query string is allowed) | `101`, then frames |
//! | a `GET` for any other path | `404` with a short JSON body |
//! | an `Origin` header not in the acceptor's allowlist ([`WsAcceptor::allow_origins`]) | `403` with a short JSON body; a request without `Origin` (a native client) is not checked |
//! | `GET /ws` without a valid upgrade; anything that is not an HTTP/1.1 `GET` | `400` |
//!
//! # Frames
//! - One binary message is one longconn frame. A message over
//!   [`TransportConfig::max_frame_size`] is refused from its WebSocket header, before it
//!   is buffered (`frame_too_large`, close status 1009); a text message is
//!   `unsupported_message` (1003).
//! - Pings are answered with pongs (none while 16 KiB wait to be written: a peer that
//!   pings without reading cannot grow the buffer), the peer's close with a close
//!   echoing its status (1007 if its reason is not UTF-8).
//!   A frame that breaks RFC 6455 (an unmasked frame from a client, reserved bits
//!   without an extension, a fragmented or oversized control frame, a continuation
//!   outside a message) is answered with close status 1002 and ends the connection.
//! - Fragmented binary messages are reassembled (up to the same size limit).
//! - No extension (permessage-deflate) and no subprotocol is negotiated.
//!
//! # Memory
//! An idle connection holds no buffer: the read buffer exists only while a frame is
//! partly received (the first read of each frame goes to the stack), and the write
//! buffer only until a flush completes, as for TCP ([`crate::stream`]). What a
//! WebSocket connection adds to a TCP one is its boxed byte stream and the fields of
//! [`WsJoined`].

mod client;
mod framing;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use longconn_core::Listener;
use longconn_core::connection::{Connection, FrameReader, FrameWriter, TransportKind};
use longconn_core::{CloseReason, Code, Frame, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{Request, create_response, write_response};
use tungstenite::http::StatusCode;
use tungstenite::protocol::frame::coding::CloseCode;

use framing::Role;
pub use framing::WsJoined;

use crate::TransportConfig;
use crate::stream::AsyncIo;

/// The only path that upgrades.
pub const WS_PATH: &str = "/ws";

/// Bytes added to the request-head buffer when it is full.
const REQUEST_HEAD_CHUNK: usize = 1024;

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
    max_request_head: usize,
}

impl Limits {
    fn new(config: &TransportConfig) -> Limits {
        Limits {
            max_frame_size: config.max_frame_size(),
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
    let joined = WsJoined::new(io, Role::Server, limits.max_frame_size, BytesMut::new());
    Ok(WsConnection { joined, peer })
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
    let mut line_ended = false;
    let request = loop {
        if head.len() == head.capacity() {
            head.reserve(REQUEST_HEAD_CHUNK);
        }
        let scanned = head.len();
        if io.read_buf(&mut head).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed during the WebSocket upgrade request",
            )
            .into());
        }
        let parse = worth_parsing(&head, scanned, line_ended);
        line_ended |= head.contains(&b'\n');
        let parsed = if parse {
            Request::try_parse(&head)
        } else {
            Ok(None)
        };
        match parsed {
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
    write_response(&mut bytes, &response).map_err(std::io::Error::other)?;
    io.write_all(&bytes).await?;
    io.flush().await?;
    Ok(())
}

/// Whether to parse `head` after a read that added the bytes after its first
/// `scanned`: on the first read (bytes that are not HTTP are refused at once, and a
/// request usually arrives whole), on the read that ends the first line (`line_ended`
/// is false until then: a request line that is not HTTP is refused there) and on the
/// read that ends the head. Parsing only then keeps a client that sends one byte per
/// segment from costing a parse of the whole head per byte.
fn worth_parsing(head: &[u8], scanned: usize, line_ended: bool) -> bool {
    let first_line_ended = !line_ended && head[scanned..].contains(&b'\n');
    let recent = &head[scanned.saturating_sub(2)..];
    let head_ended =
        recent.windows(2).any(|w| w == b"\n\n") || recent.windows(3).any(|w| w == b"\n\r\n");
    scanned == 0 || first_line_ended || head_ended
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

/// One WebSocket connection, server or client side, after its upgrade.
pub struct WsConnection {
    joined: WsJoined,
    peer: SocketAddr,
}

impl std::fmt::Debug for WsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl WsConnection {
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
        mut io: Box<dyn AsyncIo>,
        url: &str,
        peer: SocketAddr,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        let received = client::upgrade(&mut io, url).await?;
        let joined = WsJoined::new(io, Role::Client, max_frame_size, received);
        Ok(WsConnection { joined, peer })
    }
}

impl Connection for WsConnection {
    type Reader = WsReader;
    type Writer = WsWriter;
    type Joined = WsJoined;

    /// The connection as one value: no lock, no shared allocation.
    fn join(self) -> WsJoined {
        self.joined
    }

    /// Halves that share the connection behind a mutex (each poll takes it briefly),
    /// so that the reader can queue its answers to pings and closes with the writer's
    /// frames.
    fn split(self) -> (WsReader, WsWriter) {
        let shared = Arc::new(Mutex::new(Shared {
            joined: self.joined,
            flushing: None,
        }));
        (WsReader(shared.clone()), WsWriter(shared))
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebSocket
    }
}

/// What the halves of a split connection share.
#[derive(Debug)]
struct Shared {
    joined: WsJoined,
    /// The waker of a [`WsWriter::poll_flush`] that returned `Pending`. The stream keeps
    /// one waker per direction, and the reader writes too (its answers, and whatever is
    /// queued with them): when it does, it may replace the writer's waker there or
    /// complete the writer's flush, so it wakes this one (a writer polled from another
    /// task would otherwise wait forever).
    flushing: Option<Waker>,
}

impl Shared {
    /// Wakes a flush waiting in another task than `cx`'s.
    fn wake_flush(&mut self, cx: &Context<'_>) {
        if let Some(waker) = self.flushing.take()
            && !waker.will_wake(cx.waker())
        {
            waker.wake();
        }
    }

    /// Remembers (or forgets) the waker of a flush or shutdown that is `poll`.
    fn flush_polled<T>(&mut self, cx: &Context<'_>, poll: Poll<T>) -> Poll<T> {
        self.flushing = poll.is_pending().then(|| cx.waker().clone());
        poll
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The state stays consistent across a panic in another poll: every method
    // leaves it whole between statements that can panic.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The receiving half of a split [`WsConnection`]; see [`WsJoined`]'s
/// [`FrameReader::poll_recv`].
pub struct WsReader(Arc<Mutex<Shared>>);

impl std::fmt::Debug for WsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The mutex's own `Debug` does not wait for a lock held elsewhere.
        f.debug_tuple("WsReader").field(&self.0).finish()
    }
}

impl FrameReader for WsReader {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<Option<Frame>, longconn_core::ConnectionError>> {
        let mut shared = lock(&self.0);
        // Whether the reader may write (pending writes before) or did (after).
        let writing = shared.joined.has_pending_writes();
        let received = shared.joined.poll_recv(cx);
        if writing || shared.joined.has_pending_writes() {
            shared.wake_flush(cx);
        }
        received
    }
}

/// The sending half of a split [`WsConnection`]: each frame becomes one binary message.
pub struct WsWriter(Arc<Mutex<Shared>>);

impl std::fmt::Debug for WsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WsWriter").field(&self.0).finish()
    }
}

impl FrameWriter for WsWriter {
    fn send(&mut self, frame: Transmit) -> std::result::Result<(), longconn_core::ConnectionError> {
        lock(&self.0).joined.send(frame)
    }

    fn has_pending_writes(&self) -> bool {
        lock(&self.0).joined.has_pending_writes()
    }

    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), longconn_core::ConnectionError>> {
        let mut shared = lock(&self.0);
        let flushed = shared.joined.poll_flush(cx);
        shared.flush_polled(cx, flushed)
    }

    /// Flushes the pending messages, then sends a WebSocket close whose status is
    /// [`close_status`] of the reason's code, with the code's name as the reason text
    /// (nothing more if the peer's close was answered already), and closes the
    /// stream's sending side.
    async fn close(
        &mut self,
        reason: CloseReason,
    ) -> std::result::Result<(), longconn_core::ConnectionError> {
        lock(&self.0).joined.queue_close_for(&reason);
        std::future::poll_fn(|cx| {
            let mut shared = lock(&self.0);
            let shut = shared.joined.poll_shutdown(cx);
            shared.flush_polled(cx, shut)
        })
        .await
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};

    use super::{Role, WsConnection, WsJoined};
    use bytes::Bytes;
    use longconn_core::connection::{Connection, FrameWriter};
    use longconn_core::{Frame, Transmit};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

    #[test]
    fn the_head_is_parsed_at_its_first_line_and_at_its_end_only() {
        let request = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut parses = Vec::new();
        let mut line_ended = false;
        for end in 1..=request.len() {
            if super::worth_parsing(&request[..end], end - 1, line_ended) {
                parses.push(end);
            }
            line_ended |= request[..end].contains(&b'\n');
        }
        // The first byte, "GET /ws HTTP/1.1\r\n" and the final "\r\n\r\n".
        assert_eq!(parses, vec![1, 18, request.len()]);
        // Bare line feeds end a head too.
        assert!(super::worth_parsing(b"GET / HTTP/1.1\nA: b\n\n", 20, true));
    }

    /// A request sent one byte per write (a client trickling its head).
    async fn trickled_status(request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let config = crate::TransportConfig::default();
        let peer = "127.0.0.1:1".parse().unwrap();
        let accepting = tokio::spawn(async move {
            super::accept_stream(server, peer, &config, None)
                .await
                .is_ok()
        });
        for byte in request {
            if client.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut answer = [0u8; 12];
        client.read_exact(&mut answer).await.unwrap();
        let accepted = accepting.await.unwrap();
        let status = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(accepted, status.ends_with("101"), "{status}");
        status
    }

    #[tokio::test]
    async fn a_trickled_upgrade_is_accepted_and_a_bad_start_refused_at_once() {
        let upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(trickled_status(upgrade).await, "HTTP/1.1 101");
        // Not HTTP: refused at its first byte (a TLS ClientHello on a `ws://` port).
        assert_eq!(
            trickled_status(b"\x16\x03\x01\x02\x00").await,
            "HTTP/1.1 400"
        );
        // Refused at the end of its first line, without the rest.
        assert_eq!(
            trickled_status(b"GET /ws HTTP/1.1 x\r\n").await,
            "HTTP/1.1 400"
        );
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
        let joined = WsJoined::new(Box::new(io), Role::Server, 1024, bytes::BytesMut::new());
        let conn = WsConnection {
            joined,
            peer: "127.0.0.1:1".parse().unwrap(),
        };
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
        assert!(writer.poll_flush(&mut cx).is_pending());
        assert!(writer.has_pending_writes());

        flushable.store(true, Ordering::Relaxed);
        assert!(matches!(writer.poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert!(!writer.has_pending_writes());
    }
}

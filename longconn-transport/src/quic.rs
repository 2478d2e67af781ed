//! QUIC via quinn: ALPN `longconn`, TLS 1.3, one bidirectional stream per session that
//! carries the frames exactly as TCP does (docs/PROTOCOL.md, "Transport mappings").
//!
//! The stream is opened by the client; QUIC makes it visible to the gateway only once
//! the client sends on it, which its `Login` (or a `Ping`) does.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use longconn_core::Listener;
use longconn_core::connection::{Connection, FrameReader, FrameWriter, Joined, TransportKind};
use longconn_core::{CloseReason, Frame, Transmit};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, IdleTimeout, RecvStream, SendStream, VarInt};

use crate::TransportConfig;
use crate::cert::{ALPN_LONGCONN, TlsIdentity, Trust};
use crate::stream::{StreamReader, StreamWriter};

/// The transport settings of a client endpoint: [`quic_transport`] of the default
/// [`TransportConfig`].
pub fn transport_config() -> quinn::TransportConfig {
    quic_transport(&TransportConfig::default())
}

/// The quinn transport settings for `config`. Fixed for every longconn endpoint: one
/// bidirectional stream (the session's), no unidirectional streams, no datagrams and no
/// MTU discovery (quinn allocates for each up front, per connection). UDP segmentation
/// offload stays on: turning it off saved no measurable memory per idle connection
/// (docs/BENCHMARKS.md, "Idle memory, QUIC and WebSocket"). From `config`: the
/// idle timeout, QUIC keep-alives (off by default: longconn's heartbeats keep a session
/// busy) and the flow-control windows.
pub fn quic_transport(config: &TransportConfig) -> quinn::TransportConfig {
    let window = config.quic_stream_window();
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(window))
        .receive_window(VarInt::from_u32(window))
        .send_window(u64::from(window))
        .datagram_receive_buffer_size(None)
        .mtu_discovery_config(None)
        .keep_alive_interval(config.quic_keep_alive_interval())
        // `TransportConfig::build` checked that it fits in a QUIC varint.
        .max_idle_timeout(IdleTimeout::try_from(config.quic_idle_timeout()).ok());
    transport
}

/// Endpoint settings of a server with a configured stateless-reset key: quinn's
/// defaults, the key as an HMAC-SHA256 key, and at most one reset per millisecond
/// instead of quinn's 20 ms (a restarted gateway answers thousands of old connections
/// at once; a reset is always smaller than the packet that caused it, so it cannot
/// amplify).
fn endpoint_config(key: &crate::QuicResetKey) -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &key.0,
    )));
    config.min_reset_interval(std::time::Duration::from_millis(1));
    config.cid_generator(|| Box::new(RandomCids));
    config
}

/// Random 8-byte connection ids that every process of the gateway accepts as its own.
/// quinn sends a stateless reset only for packets whose connection id its generator
/// validates; its default generator signs ids with a random key per process, so a
/// restarted gateway would take its previous process's ids for foreign ones and stay
/// silent. This generator validates every id (quinn's default `validate`), so any
/// short-header packet for an unknown connection gets a reset (rate-limited above).
#[derive(Debug)]
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let cid: [u8; 8] = ring::rand::generate(&ring::rand::SystemRandom::new())
            .map(|n| n.expose())
            .unwrap_or_else(|_| {
                // The system RNG does not fail on supported systems; ids need only be
                // unique, not secret.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                t.to_le_bytes()
            });
        quinn::ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Accepts QUIC connections on one UDP socket.
#[derive(Debug)]
pub struct QuicAcceptor {
    endpoint: Endpoint,
    max_frame_size: usize,
    /// Set when the acceptor is dropped (the server stopped accepting): a handshake
    /// dropped after that was abandoned by the shutdown, not by the login timeout.
    stopped: Arc<AtomicBool>,
}

impl Drop for QuicAcceptor {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
    }
}

impl QuicAcceptor {
    /// Binds `addr` (UDP) and presents `identity` with ALPN `longconn`, with `config`'s
    /// maximum frame size and QUIC transport parameters ([`quic_transport`]).
    /// `SO_REUSEPORT` and the listen backlog do not apply to QUIC.
    pub fn bind_with(
        addr: SocketAddr,
        identity: &TlsIdentity,
        config: &TransportConfig,
    ) -> crate::Result<Self> {
        Self::bind_with_transport(addr, identity, config, quic_transport(config))
    }

    /// [`QuicAcceptor::bind_with`], with `transport` instead of [`quic_transport`] of
    /// `config` for the connections' quinn settings (`config` still gives the maximum
    /// frame size and the reset key), as [`QuicClient::with_transport`] does for
    /// clients. For experiments and A/B measurements of quinn's settings; the gateway
    /// uses [`QuicAcceptor::bind_with`].
    pub fn bind_with_transport(
        addr: SocketAddr,
        identity: &TlsIdentity,
        config: &TransportConfig,
        transport: quinn::TransportConfig,
    ) -> crate::Result<Self> {
        let tls = identity.server_config(&[ALPN_LONGCONN], true)?;
        let crypto =
            QuicServerConfig::try_from(tls).map_err(|e| crate::Error::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport));
        let endpoint = match config.quic_reset_key() {
            None => Endpoint::server(server, addr)?,
            Some(key) => {
                let socket = std::net::UdpSocket::bind(addr)?;
                let runtime = quinn::default_runtime()
                    .ok_or_else(|| std::io::Error::other("QUIC needs a tokio runtime"))?;
                Endpoint::new(endpoint_config(key), Some(server), socket, runtime)?
            }
        };
        Ok(QuicAcceptor {
            endpoint,
            max_frame_size: config.max_frame_size(),
            stopped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Binds `addr` (UDP) and presents `identity` with ALPN `longconn`. Shorthand for
    /// [`QuicAcceptor::bind_with`] with the other limits at their defaults.
    ///
    /// # Errors
    /// [`crate::Error::Config`] if `max_frame_size` is out of range, or the bind's error.
    pub fn bind(
        addr: SocketAddr,
        identity: &TlsIdentity,
        max_frame_size: usize,
    ) -> crate::Result<Self> {
        Self::bind_with(
            addr,
            identity,
            &crate::tcp::shorthand(max_frame_size, false)?,
        )
    }
}

/// The handshake future [`QuicAcceptor`] hands to the runtime.
pub type QuicHandshake = Pin<
    Box<
        dyn Future<Output = std::result::Result<QuicConnection, longconn_core::ConnectionError>>
            + Send
            + 'static,
    >,
>;

impl Listener for QuicAcceptor {
    type Conn = QuicConnection;
    type Handshake = QuicHandshake;

    async fn accept(&mut self) -> std::io::Result<QuicHandshake> {
        let incoming = self.endpoint.accept().await.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotConnected, "QUIC endpoint closed")
        })?;
        let max_frame_size = self.max_frame_size;
        let acceptor_stopped = self.stopped.clone();
        Ok(Box::pin(async move {
            let connection = incoming.await.map_err(io)?;
            let mut unopened = CloseUnlessOpened {
                connection: Some(connection.clone()),
                acceptor_stopped,
            };
            let (send, recv) = connection.accept_bi().await.map_err(io)?;
            unopened.connection = None;
            Ok(QuicConnection {
                peer: connection.remote_address(),
                connection,
                send,
                recv,
                max_frame_size,
            })
        }))
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// A client endpoint: one UDP socket that many connections can share (a load generator
/// opens thousands this way).
#[derive(Debug, Clone)]
pub struct QuicClient {
    endpoint: Endpoint,
}

impl QuicClient {
    /// A client endpoint bound to `bind` (for example `127.0.0.1:0`) trusting `trust`.
    pub fn new(bind: SocketAddr, trust: &Trust) -> crate::Result<Self> {
        Self::with_transport(bind, trust, transport_config())
    }

    /// A client endpoint bound to `bind` trusting `trust`, whose connections use
    /// `transport` (for example [`crate::dead_peer::quic_transport`]).
    pub fn with_transport(
        bind: SocketAddr,
        trust: &Trust,
        transport: quinn::TransportConfig,
    ) -> crate::Result<Self> {
        let tls = trust.client_config(&[ALPN_LONGCONN], true)?;
        let crypto =
            QuicClientConfig::try_from(tls).map_err(|e| crate::Error::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        let mut endpoint = Endpoint::client(bind)?;
        endpoint.set_default_client_config(config);
        Ok(QuicClient { endpoint })
    }

    /// Connects to `addr` as `server_name` and opens the session's stream.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        max_frame_size: usize,
    ) -> crate::Result<QuicConnection> {
        let connection = self
            .endpoint
            .connect(addr, server_name)
            .map_err(|e| crate::Error::Quic(with_sources(&e)))?
            .await
            .map_err(|e| crate::Error::Quic(with_sources(&e)))?;
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| crate::Error::Quic(with_sources(&e)))?;
        Ok(QuicConnection {
            peer: addr,
            connection,
            send,
            recv,
            max_frame_size,
        })
    }
}

/// One QUIC session: the connection and its one bidirectional stream.
#[derive(Debug)]
pub struct QuicConnection {
    connection: quinn::Connection,
    send: SendStream,
    recv: RecvStream,
    peer: SocketAddr,
    max_frame_size: usize,
}

impl QuicConnection {
    /// Writes raw bytes on the session stream before it is split (a client can send a
    /// `Ping` this way so that the stream exists for the gateway before it logs in).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> crate::Result<()> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| crate::Error::Quic(with_sources(&e)))
    }

    /// Reads exactly `buf.len()` raw bytes from the session stream before it is split.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> crate::Result<()> {
        self.recv
            .read_exact(buf)
            .await
            .map_err(|e| crate::Error::Quic(with_sources(&e)))
    }
}

impl Connection for QuicConnection {
    type Reader = QuicReader;
    type Writer = QuicWriter;
    type Joined = Joined<QuicReader, QuicWriter>;

    fn join(self) -> Self::Joined {
        let (reader, writer) = self.split();
        Joined::new(reader, writer)
    }

    fn split(self) -> (QuicReader, QuicWriter) {
        (
            QuicReader {
                inner: StreamReader::new(self.recv, self.max_frame_size),
            },
            QuicWriter {
                inner: StreamWriter::new(self.send, self.max_frame_size),
                connection: self.connection,
            },
        )
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }
}

/// The receiving half of a [`QuicConnection`].
#[derive(Debug)]
pub struct QuicReader {
    inner: StreamReader<RecvStream>,
}

impl FrameReader for QuicReader {
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<Option<Frame>, longconn_core::ConnectionError>> {
        self.inner.poll_recv(cx)
    }
}

/// The sending half of a [`QuicConnection`]; it owns the connection, which it closes
/// with the longconn code as the QUIC application error code.
#[derive(Debug)]
pub struct QuicWriter {
    inner: StreamWriter<SendStream>,
    connection: quinn::Connection,
}

impl FrameWriter for QuicWriter {
    fn send(&mut self, frame: Transmit) -> std::result::Result<(), longconn_core::ConnectionError> {
        self.inner.send(frame)
    }

    fn has_pending_writes(&self) -> bool {
        self.inner.has_pending_writes()
    }

    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), longconn_core::ConnectionError>> {
        self.inner.poll_flush(cx)
    }

    async fn close(
        &mut self,
        reason: CloseReason,
    ) -> std::result::Result<(), longconn_core::ConnectionError> {
        let flushed = self.inner.flush().await;
        // Finish the stream and wait until the peer has it all, so closing the
        // connection does not discard the last frames (the runtime bounds this wait).
        if flushed.is_ok() && self.inner.get_mut().finish().is_ok() {
            let _ = self.inner.get_mut().stopped().await;
        }
        let code = reason.code();
        self.connection.close(
            VarInt::from_u32(u32::from(code.as_u16())),
            code.name().as_bytes(),
        );
        flushed
    }
}

/// `err` and each error under it, joined with ": " (quinn's read and write errors say
/// only "connection lost"; the close code and reason are in the error underneath).
fn with_sources(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Closes a connection whose session stream has not arrived when its handshake future
/// is dropped, instead of quinn's implicit close with code 0 and no reason, so that the
/// client learns why: `going_away` once the acceptor is dropped (the server stopped
/// accepting and abandons the handshakes in progress), else `login_timeout` (the
/// server gave up waiting). Disarmed once the stream is there.
struct CloseUnlessOpened {
    connection: Option<quinn::Connection>,
    acceptor_stopped: Arc<AtomicBool>,
}

impl Drop for CloseUnlessOpened {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let code = if self.acceptor_stopped.load(Ordering::Acquire) {
                longconn_core::Code::GoingAway
            } else {
                longconn_core::Code::LoginTimeout
            };
            connection.close(
                VarInt::from_u32(u32::from(code.as_u16())),
                code.name().as_bytes(),
            );
        }
    }
}

fn io(err: impl std::error::Error + Send + Sync + 'static) -> longconn_core::ConnectionError {
    longconn_core::ConnectionError::Io(std::io::Error::other(err))
}

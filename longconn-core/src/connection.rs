//! The [`Connection`] trait: what the session runtime needs from a transport, and nothing
//! more; and the [`Listener`] trait that yields them on the server side. TCP, TLS, WebSocket and QUIC implement it in `longconn-transport`; [`memory`]
//! holds an in-memory pair for tests and for embedding.

pub mod memory;

use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use crate::error::ConnectionError;
use crate::protocol::Frame;
use crate::session::{CloseReason, Transmit};

/// Which transport a connection runs on; a label for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// In-process pair ([`memory`]).
    Memory,
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket (`ws://` or `wss://`).
    WebSocket,
    /// QUIC, one bidirectional stream.
    Quic,
    /// A third-party transport, named by its implementation.
    Other(&'static str),
}

impl TransportKind {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Memory => "memory",
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::WebSocket => "ws",
            TransportKind::Quic => "quic",
            TransportKind::Other(name) => name,
        }
    }
}

/// A message-oriented, full-duplex link to one peer: the session layer's view of a
/// transport, open to third-party implementations.
///
/// A connection splits into a [`FrameReader`] and a [`FrameWriter`] so that the runtime
/// can wait for the next frame while a flush is in progress. Implementations only move
/// frames; every protocol decision belongs to [`crate::Session`].
pub trait Connection: Send + 'static {
    /// The receiving half.
    type Reader: FrameReader;
    /// The sending half.
    type Writer: FrameWriter;
    /// Both directions as one value, for a runtime that polls reading and writing from
    /// one task (the server's driver).
    type Joined: FrameReader + FrameWriter;

    /// Splits the connection into its halves. Dropping both closes it.
    fn split(self) -> (Self::Reader, Self::Writer);

    /// The connection as one value that reads and writes frames. A transport whose
    /// halves must share state (TCP's share the socket through an `Arc`) can do without
    /// that here; any other returns [`Joined::new`] of its [`Connection::split`].
    /// Dropping it closes the connection.
    fn join(self) -> Self::Joined;

    /// The peer's address, where the transport has one.
    fn peer_addr(&self) -> Option<SocketAddr>;

    /// The transport's label.
    fn kind(&self) -> TransportKind;
}

/// The receiving half of a [`Connection`].
///
/// Poll-based, like `AsyncRead`: the runtime keeps no future for a read in progress,
/// so an idle connection's state is only the reader itself (the server's driver polls
/// the reader, its writer and its inbox from one hand-written poll function).
pub trait FrameReader: Send + 'static {
    /// Polls for the next frame from the peer; `Ok(None)` at a clean end of stream. A
    /// decode error is returned as [`ConnectionError::Decode`] (its `wire_code` goes
    /// into the session's `Close`); an I/O failure as [`ConnectionError::Io`].
    ///
    /// On `Pending` the waker of `cx` is registered with the transport (socket
    /// readiness, a channel, a QUIC stream), which wakes it when more can be read; the
    /// caller keeps nothing else between polls. Bytes already read and not yet a whole
    /// frame stay in the reader for the next call.
    ///
    /// # Backpressure
    /// Nothing is read from the transport until this is polled, so a peer that sends
    /// faster than the session handles frames is slowed down by the transport's own
    /// flow control (TCP window, QUIC stream credit).
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, ConnectionError>>;

    /// [`FrameReader::poll_recv`] as a future.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it completes loses no received byte;
    /// the next call continues where the dropped one stopped.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Frame>, ConnectionError>> + Send {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }
}

/// The sending half of a [`Connection`].
pub trait FrameWriter: Send + 'static {
    /// Appends one frame to the outgoing buffer without doing I/O. Call it once per frame
    /// to send many; [`FrameWriter::flush`] writes them together. Fails only if the frame
    /// cannot be encoded (larger than the connection's maximum frame size).
    ///
    /// # Backpressure
    /// `send` never waits and the buffer it appends to is not bounded here: the caller
    /// bounds it by not sending more while [`FrameWriter::has_pending_writes`] is true.
    /// The runtime does exactly that, so a slow peer fills that session's bounded push
    /// queue, where the slow-consumer policy applies.
    fn send(&mut self, frame: Transmit) -> Result<(), ConnectionError>;

    /// Whether [`FrameWriter::send`] has buffered frames that [`FrameWriter::poll_flush`]
    /// has not written yet.
    fn has_pending_writes(&self) -> bool;

    /// Polls everything buffered out, coalescing frames into as few writes as the
    /// transport allows; `Ready(Ok(()))` once the transport has accepted all of it.
    ///
    /// On `Pending` the waker of `cx` is registered with the transport, which wakes it
    /// when it can take more. Bytes leave the writer's buffer only once the transport
    /// took them, so a caller that stops polling loses nothing.
    ///
    /// # Backpressure
    /// Stays `Pending` while the transport's send buffer is full (the peer is not
    /// reading).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>>;

    /// [`FrameWriter::poll_flush`] as a future.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses no buffered byte; the next call continues
    /// where the dropped one stopped.
    fn flush(&mut self) -> impl Future<Output = Result<(), ConnectionError>> + Send {
        std::future::poll_fn(move |cx| self.poll_flush(cx))
    }

    /// Flushes what is buffered and closes the link (TCP FIN, a WebSocket close frame
    /// whose status is derived from `reason`, QUIC stream finish). Called at most once;
    /// the writer is not used afterwards.
    ///
    /// # Cancel safety
    /// Not cancel safe; the runtime bounds it with a timeout and then drops the writer.
    fn close(
        &mut self,
        reason: CloseReason,
    ) -> impl Future<Output = Result<(), ConnectionError>> + Send;
}

/// A [`FrameReader`] and a [`FrameWriter`] as one value ([`Connection::join`] of a
/// transport that has no cheaper joined form).
#[derive(Debug)]
pub struct Joined<R, W> {
    /// The receiving half.
    pub reader: R,
    /// The sending half.
    pub writer: W,
}

impl<R, W> Joined<R, W> {
    /// Joins the halves of a split connection.
    pub fn new(reader: R, writer: W) -> Joined<R, W> {
        Joined { reader, writer }
    }
}

impl<R: FrameReader, W: Send + 'static> FrameReader for Joined<R, W> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, ConnectionError>> {
        self.reader.poll_recv(cx)
    }
}

impl<R: Send + 'static, W: FrameWriter> FrameWriter for Joined<R, W> {
    fn send(&mut self, frame: Transmit) -> Result<(), ConnectionError> {
        self.writer.send(frame)
    }

    fn has_pending_writes(&self) -> bool {
        self.writer.has_pending_writes()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        self.writer.poll_flush(cx)
    }

    fn close(
        &mut self,
        reason: CloseReason,
    ) -> impl Future<Output = Result<(), ConnectionError>> + Send {
        self.writer.close(reason)
    }
}

/// A source of incoming connections for one transport (a bound socket or endpoint).
///
/// `accept` returns as soon as a peer is there; the returned handshake (TLS, WebSocket
/// upgrade, QUIC stream open) runs on the connection's own task, so one slow peer never
/// holds up the accept loop.
///
/// At shutdown the server drops the listener first, then the handshakes still in
/// progress: a handshake dropped after its listener was abandoned by the shutdown, one
/// dropped before it timed out.
pub trait Listener: Send + 'static {
    /// The connection type this listener yields.
    type Conn: Connection;
    /// Completes the transport handshake.
    type Handshake: Future<Output = Result<Self::Conn, ConnectionError>> + Send + 'static;

    /// Waits for the next peer. Errors are accept errors (too many open files, resets);
    /// the server retries them with backoff.
    ///
    /// # Cancel safety
    /// Must be cancel safe: the server selects it against shutdown.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Handshake>> + Send;

    /// The transport, as a label for logs and metrics.
    fn kind(&self) -> TransportKind;

    /// The bound address.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
}

//! An in-memory [`Connection`]: two sides joined by bounded channels. Tests use it to run the runtime without sockets; embedders can use it to
//! attach in-process clients.
//!
//! Outgoing frames are encoded with the real codec and decoded again on the other side,
//! so a frame that could not cross a socket cannot cross this pair either.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::channel::mpsc;

use super::{Connection, FrameReader, FrameWriter, Joined, TransportKind};
use crate::client_session::{ClientEvent, ClientSession, ClientSessionConfig};
use crate::error::ConnectionError;
use crate::protocol::{Frame, FrameCodec};
use crate::session::{CloseReason, Transmit};

/// Creates a connected pair of connections; what one side sends, the other receives.
/// `capacity` frames may wait in each direction; beyond that [`FrameWriter::flush`] waits.
pub fn pair(capacity: usize, max_frame_size: usize) -> (MemoryConnection, MemoryConnection) {
    let (a_tx, a_rx) = mpsc::channel(capacity);
    let (b_tx, b_rx) = mpsc::channel(capacity);
    let codec = FrameCodec::new(max_frame_size);
    let side = |tx, rx| MemoryConnection {
        reader: MemoryReader { rx, codec },
        writer: MemoryWriter {
            tx: Some(tx),
            pending: VecDeque::new(),
            codec,
        },
    };
    (side(a_tx, b_rx), side(b_tx, a_rx))
}

/// One side of a [`pair`].
#[derive(Debug)]
pub struct MemoryConnection {
    reader: MemoryReader,
    writer: MemoryWriter,
}

impl Connection for MemoryConnection {
    type Reader = MemoryReader;
    type Writer = MemoryWriter;
    type Joined = Joined<MemoryReader, MemoryWriter>;

    fn split(self) -> (MemoryReader, MemoryWriter) {
        (self.reader, self.writer)
    }

    fn join(self) -> Self::Joined {
        Joined::new(self.reader, self.writer)
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }

    fn kind(&self) -> TransportKind {
        TransportKind::Memory
    }
}

/// Receiving half of a [`MemoryConnection`].
#[derive(Debug)]
pub struct MemoryReader {
    rx: mpsc::Receiver<Bytes>,
    codec: FrameCodec,
}

impl FrameReader for MemoryReader {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, ConnectionError>> {
        // Decoding happens once the channel has handed the message over.
        match ready!(self.rx.poll_next_unpin(cx)) {
            Some(bytes) => Poll::Ready(Ok(Some(self.codec.decode_message(bytes)?))),
            None => Poll::Ready(Ok(None)),
        }
    }
}

/// Sending half of a [`MemoryConnection`].
#[derive(Debug)]
pub struct MemoryWriter {
    tx: Option<mpsc::Sender<Bytes>>,
    pending: VecDeque<Bytes>,
    codec: FrameCodec,
}

impl FrameWriter for MemoryWriter {
    /// [`Transmit::Encoded`] bytes travel as one message whatever they hold, so tests can
    /// send invalid frames.
    fn send(&mut self, frame: Transmit) -> Result<(), ConnectionError> {
        let bytes = match frame {
            Transmit::Frame(frame) => frame.to_bytes(self.codec.max_frame_size())?,
            Transmit::Encoded(bytes) => bytes,
        };
        self.pending.push_back(bytes);
        Ok(())
    }

    fn has_pending_writes(&self) -> bool {
        !self.pending.is_empty()
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectionError>> {
        let tx = self.tx.as_mut().ok_or_else(closed)?;
        // Room is reserved (`poll_ready`) before a frame leaves `pending`, so a caller
        // that stops polling while waiting for room loses nothing.
        while !self.pending.is_empty() {
            ready!(tx.poll_ready(cx)).map_err(|_| closed())?;
            if let Some(bytes) = self.pending.pop_front() {
                tx.start_send(bytes).map_err(|_| closed())?;
            }
        }
        Poll::Ready(Ok(()))
    }

    async fn close(&mut self, _reason: CloseReason) -> Result<(), ConnectionError> {
        let flushed = self.flush().await;
        self.tx = None;
        flushed
    }
}

fn closed() -> ConnectionError {
    ConnectionError::Io(std::io::ErrorKind::BrokenPipe.into())
}

/// A client speaking the protocol directly over one side of a [`pair`]: for tests and
/// in-process integrations that need no SDK. It does nothing on its own (no heartbeats,
/// no acks): what it sends and receives is exactly what the caller does.
#[derive(Debug)]
pub struct MemoryClient {
    reader: MemoryReader,
    writer: MemoryWriter,
}

impl MemoryClient {
    /// A client on `conn`, the side of a [`pair`] the server does not serve.
    pub fn new(conn: MemoryConnection) -> MemoryClient {
        MemoryClient {
            reader: conn.reader,
            writer: conn.writer,
        }
    }

    /// Sends one frame and waits until it is in the pipe.
    ///
    /// # Errors
    /// The frame does not encode, or the server side has gone.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        self.writer.send(Transmit::Frame(frame))?;
        self.writer.flush().await
    }

    /// The next frame from the server; `Ok(None)` once the server side has gone.
    ///
    /// # Cancel safety
    /// Cancel safe: a frame is taken from the pipe only when this returns it.
    pub async fn recv(&mut self) -> Result<Option<Frame>, ConnectionError> {
        self.reader.recv().await
    }

    /// Sends `Login` and waits for the answer: the connection id from `LoginAck`, or the
    /// frame that came instead (`Close` with the refusal code, say). The login is the
    /// client state machine's ([`ClientSession`]): the same `Login` frame and the same
    /// reading of the answer as the SDK's.
    ///
    /// # Errors
    /// The pipe closed, or a frame could not be decoded.
    pub async fn login(
        &mut self,
        app: &str,
        device: &str,
        token: Bytes,
    ) -> Result<Result<u64, Frame>, ConnectionError> {
        // The session's timers are not used here (the caller bounds the wait), so the
        // clock reading only anchors its deadlines.
        let now = std::time::Instant::now();
        let mut session = ClientSession::new(ClientSessionConfig::new(app, device), now, 0);
        session.connected(now);
        session.provide_token(now, token);
        while let Some(frame) = session.poll_transmit() {
            self.send(frame).await?;
        }
        let Some(answer) = self.recv().await? else {
            return Err(closed());
        };
        session.handle_frame(now, answer.clone());
        let logged_in = std::iter::from_fn(|| session.poll_event()).find_map(|e| match e {
            ClientEvent::LoggedIn { conn_id, .. } => Some(conn_id),
            _ => None,
        });
        Ok(logged_in.ok_or(answer))
    }
}

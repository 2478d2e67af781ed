//! Frame halves over byte streams, shared by every stream transport (TCP, TLS, QUIC).
//!
//! Both halves keep no buffer while the connection is idle: the read buffer is taken when
//! bytes arrive and given back once every buffered byte is decoded, and the write buffer
//! is given back after each completed flush. An idle connection costs its task and its
//! socket, nothing more.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use longconn_core::connection::{FrameReader, FrameWriter};
use longconn_core::{CloseReason, ConnectionError, Frame, FrameCodec, Transmit};

type Result<T, E = ConnectionError> = std::result::Result<T, E>;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::io::poll_read_buf;

/// A byte stream of either side, plain or TLS, boxed so that transports that accept both
/// (WebSocket with and without TLS) have one connection type.
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncIo for T {}

/// Bytes requested from the allocator when a read needs room.
pub(crate) const READ_CHUNK: usize = 1024;

/// Decodes frames from an owned, lazily allocated buffer.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buf: BytesMut,
    codec: FrameCodec,
}

impl ReadBuffer {
    pub(crate) fn new(max_frame_size: usize) -> ReadBuffer {
        ReadBuffer {
            buf: BytesMut::new(),
            codec: FrameCodec::new(max_frame_size),
        }
    }

    /// The next complete frame already buffered.
    pub(crate) fn decode(&mut self) -> Result<Option<Frame>> {
        let frame = self.codec.decode(&mut self.buf)?;
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            // Decoded frames keep their slices alive; the connection drops its share.
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }

    /// The stream ended: fine between frames, [`longconn_core::DecodeError::Truncated`] inside one.
    pub(crate) fn decode_eof(&mut self) -> Result<Option<Frame>> {
        Ok(self.codec.decode_eof(&mut self.buf)?)
    }

    /// Polls the next frame from `io` ([`poll_read_lazy`]: nothing but the bytes of a
    /// partial frame is held across a `Pending`).
    pub(crate) fn poll_frame(
        &mut self,
        io: &mut (impl AsyncRead + Unpin),
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>>> {
        loop {
            if let Some(frame) = self.decode()? {
                return Poll::Ready(Ok(Some(frame)));
            }
            if ready!(poll_read_lazy(&mut self.buf, io, cx))? == 0 {
                return Poll::Ready(self.decode_eof());
            }
        }
    }
}

/// Bytes read on the stack before a heap buffer is taken.
const FIRST_READ: usize = 512;

/// Reads more bytes from `io` into `buf`; `Ready(Ok(0))` at the end of the stream.
///
/// While `buf` is empty (between frames) the read goes into a stack buffer first, so a
/// connection waiting for its next frame holds no heap buffer (one taken before the
/// read would be kept for as long as the read is pending); `buf` is allocated only for
/// bytes that arrived. With bytes already buffered, it reads into `buf`'s spare room,
/// growing it by [`READ_CHUNK`] when little is left.
pub(crate) fn poll_read_lazy(
    buf: &mut BytesMut,
    io: &mut (impl AsyncRead + Unpin),
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let room = |buf: &mut BytesMut| {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
    };
    if buf.is_empty() {
        let mut stack = [0u8; FIRST_READ];
        let mut chunk = ReadBuf::new(&mut stack);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut chunk))?;
        if !chunk.filled().is_empty() {
            room(buf);
            buf.extend_from_slice(chunk.filled());
        }
        Poll::Ready(Ok(chunk.filled().len()))
    } else {
        room(buf);
        poll_read_buf(Pin::new(&mut *io), cx, buf)
    }
}

/// Writes `buf` to `io` and flushes `io`. Bytes leave `buf` only once `io` took them;
/// once all are written and flushed, `buf` is replaced by an unallocated one, so a
/// connection between bursts holds no write buffer.
pub(crate) fn poll_write_out(
    io: &mut (impl AsyncWrite + Unpin),
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<()>> {
    while !buf.is_empty() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, buf))?;
        if n == 0 {
            return Poll::Ready(Err(
                std::io::Error::from(std::io::ErrorKind::WriteZero).into()
            ));
        }
        buf.advance(n);
    }
    ready!(Pin::new(&mut *io).poll_flush(cx))?;
    *buf = BytesMut::new();
    Poll::Ready(Ok(()))
}

/// The receiving half over any [`AsyncRead`].
#[derive(Debug)]
pub struct StreamReader<R> {
    io: R,
    buffer: ReadBuffer,
}

impl<R> StreamReader<R> {
    /// A reader that accepts frames up to `max_frame_size` bytes.
    pub fn new(io: R, max_frame_size: usize) -> StreamReader<R> {
        StreamReader {
            io,
            buffer: ReadBuffer::new(max_frame_size),
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameReader for StreamReader<R> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>>> {
        self.buffer.poll_frame(&mut self.io, cx)
    }
}

/// The sending half over any [`AsyncWrite`]: frames are encoded into one buffer and
/// written together on flush.
#[derive(Debug)]
pub struct StreamWriter<W> {
    io: W,
    buf: BytesMut,
    /// The largest frame `send` encodes (`u32`: the field sits beside `unflushed` in
    /// 8 bytes, and no frame size limit comes near 4 GiB).
    max_frame_size: u32,
    /// Frames were sent since the last completed flush. Stays set after `buf` is written
    /// out until the stream's own flush completes too: a TLS stream takes the bytes but
    /// may still hold records it could not write yet.
    unflushed: bool,
}

impl<W> StreamWriter<W> {
    /// A writer that refuses to encode frames over `max_frame_size` bytes.
    pub fn new(io: W, max_frame_size: usize) -> StreamWriter<W> {
        StreamWriter {
            io,
            buf: BytesMut::new(),
            max_frame_size: u32::try_from(max_frame_size).unwrap_or(u32::MAX),
            unflushed: false,
        }
    }
}

impl<W> StreamWriter<W> {
    /// The underlying stream (for transport-specific closing).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWriter for StreamWriter<W> {
    fn send(&mut self, frame: Transmit) -> Result<()> {
        match frame {
            Transmit::Frame(frame) => frame.encode(&mut self.buf, self.max_frame_size as usize)?,
            Transmit::Encoded(bytes) => self.buf.extend_from_slice(&bytes),
        }
        self.unflushed = true;
        Ok(())
    }

    /// True from the first [`FrameWriter::send`] until a [`FrameWriter::flush`]
    /// completes, including while the stream itself still flushes bytes it has taken.
    fn has_pending_writes(&self) -> bool {
        self.unflushed
    }

    /// Bytes leave the buffer only once the stream took them.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        ready!(poll_write_out(&mut self.io, &mut self.buf, cx))?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    async fn close(&mut self, _reason: CloseReason) -> Result<()> {
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use longconn_core::connection::FrameWriter;
    use longconn_core::{Frame, Transmit};
    use tokio::io::AsyncWrite;

    use super::StreamWriter;

    /// Takes every byte at once, like a TLS stream with room in its buffer, but its
    /// flush stays pending (the socket under it is full) until `flushable`.
    #[derive(Default)]
    struct SlowFlush {
        written: Vec<u8>,
        flushable: bool,
    }

    impl AsyncWrite for SlowFlush {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.flushable {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_cancelled_flush_leaves_the_writes_pending() {
        let mut writer = StreamWriter::new(SlowFlush::default(), 1024);
        assert!(!writer.has_pending_writes());
        let ping = Frame::Ping {
            id: 1,
            payload: Bytes::new(),
        };
        writer.send(Transmit::Frame(ping)).unwrap();
        assert!(writer.has_pending_writes());

        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The bytes are taken but the stream's flush is pending: the caller drops the
        // flush here (another select! branch won) and must still see pending writes.
        assert!(writer.poll_flush(&mut cx).is_pending());
        assert!(!writer.get_mut().written.is_empty());
        assert!(writer.has_pending_writes());

        writer.get_mut().flushable = true;
        assert!(matches!(writer.poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert!(!writer.has_pending_writes());
    }

    #[tokio::test]
    async fn a_reader_waiting_for_its_next_frame_holds_no_buffer() {
        use longconn_core::connection::FrameReader;
        use tokio::io::AsyncWriteExt;

        let (client, server) = tokio::io::duplex(4096);
        let mut reader = super::StreamReader::new(server, 1024);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(reader.poll_recv(&mut cx).is_pending());
        assert_eq!(reader.buffer.buf.capacity(), 0, "nothing arrived yet");

        // Half a frame: the bytes that arrived are kept, in a heap buffer.
        let mut bytes = bytes::BytesMut::new();
        let ping = Frame::Ping {
            id: 7,
            payload: Bytes::from_static(b"hello"),
        };
        ping.clone().encode(&mut bytes, 1024).unwrap();
        let (head, tail) = bytes.split_at(4);
        let mut client = client;
        client.write_all(head).await.unwrap();
        assert!(reader.poll_recv(&mut cx).is_pending());
        assert!(reader.buffer.buf.capacity() > 0);

        client.write_all(tail).await.unwrap();
        assert_eq!(reader.recv().await.unwrap(), Some(ping));
        assert!(reader.poll_recv(&mut cx).is_pending());
        assert_eq!(reader.buffer.buf.capacity(), 0, "given back between frames");
    }
}

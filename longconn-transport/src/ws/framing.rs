//! RFC 6455 framing over a byte stream, with the buffers of the stream transports:
//! nothing is allocated while a connection is idle.
//!
//! tungstenite parses and formats the frame headers ([`FrameHeader`]); this module owns
//! the buffers around them. tokio-tungstenite's stream kept, per idle connection, a
//! read buffer grown to the largest message and never shrunk, a write buffer, two waker
//! proxies and (once split) a `BiLock` around all of it: ~700 B on top of a TCP
//! connection (docs/BENCHMARKS.md, "Idle memory").
//!
//! [`WsJoined`] is one connection's whole state: its byte stream, the bytes of a message
//! partly received and the bytes not yet written. The reader answers the peer's pings
//! and close itself, by queueing the answer in the same write buffer as the frames, so
//! the answer goes out in order with them; a split connection shares the state between
//! its halves behind a mutex ([`super::WsReader`], [`super::WsWriter`]).

use std::io::Cursor;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use longconn_core::connection::{FrameReader, FrameWriter};
use longconn_core::{CloseReason, ConnectionError, DecodeError, Frame, FrameCodec, Transmit};
use tokio::io::AsyncWrite;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::stream::{AsyncIo, poll_read_lazy, poll_write_out};

type Result<T, E = ConnectionError> = std::result::Result<T, E>;

/// Largest payload of a control frame (ping, pong, close), RFC 6455 section 5.5.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Pings are not answered while this many bytes wait to be written.
const MAX_UNWRITTEN_FOR_PONG: usize = 16 * 1024;

/// Which end of the connection this is: a client masks what it sends and expects
/// unmasked frames; a server the reverse (RFC 6455, section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Client,
}

/// One WebSocket connection's state: the byte stream and both directions' buffers. The
/// server's driver holds it as the connection ([`longconn_core::Connection::join`]).
pub struct WsJoined {
    io: Box<dyn AsyncIo>,
    /// Received bytes not yet decoded: empty and unallocated between frames.
    read: BytesMut,
    /// The fragments of a message whose last frame has not arrived (rare: clients send
    /// one frame per message), boxed so that it costs one pointer otherwise.
    fragments: Option<Box<BytesMut>>,
    codec: FrameCodec,
    /// Encoded frames not yet written: unallocated once a flush completed.
    write: BytesMut,
    /// `u32` beside the flags: this struct is part of every idle connection's task.
    max_frame_size: u32,
    role: Role,
    /// Frames were queued since the last completed flush (see
    /// [`FrameWriter::has_pending_writes`]).
    unflushed: bool,
    /// A close frame is queued or sent: no frame may follow it.
    close_sent: bool,
    /// Whether the stream has ended: the peer's close arrived, or it broke the protocol.
    end: End,
}

impl std::fmt::Debug for WsJoined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsJoined")
            .field("role", &self.role)
            .field("buffered_in", &self.read.len())
            .field("buffered_out", &self.write.len())
            .field("close_sent", &self.close_sent)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// What a complete WebSocket frame asks of the connection.
enum Inbound {
    /// A whole binary message.
    Message(Bytes),
    /// A ping, to be answered with a pong carrying its payload.
    Ping(Bytes),
    /// The peer's close frame, with its status if it has one.
    Close(Option<u16>),
}

/// The peer broke RFC 6455: answered with close status 1002 and this text.
struct Violation(&'static str);

impl WsJoined {
    /// The connection over `io` after a completed upgrade; `received` holds the bytes
    /// that arrived after the upgrade's HTTP head, if any.
    pub(crate) fn new(
        io: Box<dyn AsyncIo>,
        role: Role,
        max_frame_size: usize,
        received: BytesMut,
    ) -> WsJoined {
        WsJoined {
            io,
            read: if received.is_empty() {
                BytesMut::new()
            } else {
                received
            },
            fragments: None,
            codec: FrameCodec::new(max_frame_size),
            write: BytesMut::new(),
            max_frame_size: u32::try_from(max_frame_size).unwrap_or(u32::MAX),
            role,
            unflushed: false,
            close_sent: false,
            end: End::Open,
        }
    }

    /// The next complete frame in the read buffer, if any. Checks each header before
    /// its payload is buffered: a message over the maximum frame size is refused from
    /// its header.
    fn decode(&mut self) -> Result<Option<Inbound>, DecodeOrViolation> {
        loop {
            let mut cursor = Cursor::new(&self.read[..]);
            let Some((header, len)) =
                FrameHeader::parse(&mut cursor).map_err(|_| Violation("reserved opcode"))?
            else {
                return Ok(None);
            };
            let head_len = cursor.position() as usize;
            self.check(&header, len)?;
            let Some(needed) = usize::try_from(len)
                .ok()
                .and_then(|len| len.checked_add(head_len))
            else {
                return Err(Violation("frame length out of range").into());
            };
            if self.read.len() < needed {
                // One allocation for the rest of this frame.
                self.read.reserve(needed - self.read.len());
                return Ok(None);
            }
            self.read.advance(head_len);
            let mut payload = self.read.split_to(needed - head_len);
            if self.read.is_empty() {
                // Decoded payloads keep their slices alive; the connection drops its share.
                self.read = BytesMut::new();
            }
            if let Some(mask) = header.mask {
                apply_mask(&mut payload, mask);
            }
            match header.opcode {
                OpCode::Control(Control::Ping) => return Ok(Some(Inbound::Ping(payload.freeze()))),
                OpCode::Control(Control::Close) => {
                    let status = match payload.len() {
                        0 => None,
                        1 => return Err(Violation("close frame with a 1-byte payload").into()),
                        _ if std::str::from_utf8(&payload[2..]).is_err() => {
                            // RFC 6455, sections 5.5.1 and 8.1: fail the connection.
                            return Err(DecodeOrViolation::InvalidUtf8(
                                "close reason is not UTF-8",
                            ));
                        }
                        _ => Some(u16::from_be_bytes([payload[0], payload[1]])),
                    };
                    return Ok(Some(Inbound::Close(status)));
                }
                OpCode::Data(_) if header.is_final && self.fragments.is_none() => {
                    return Ok(Some(Inbound::Message(payload.freeze())));
                }
                OpCode::Data(_) => {
                    let fragments = self.fragments.get_or_insert_with(Default::default);
                    fragments.extend_from_slice(&payload);
                    if header.is_final {
                        let message = self.fragments.take().map(|f| f.freeze());
                        return Ok(message.map(Inbound::Message));
                    }
                }
                // Pongs (this side sends no pings) and anything `check` let through.
                OpCode::Control(_) => {}
            }
        }
    }

    /// Refuses a frame that breaks RFC 6455 or longconn's mapping, from its header.
    fn check(&self, header: &FrameHeader, len: u64) -> Result<(), DecodeOrViolation> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation("reserved bits set, no extension was negotiated").into());
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(Violation("unmasked frame from a client").into()),
            (Role::Client, true) => return Err(Violation("masked frame from a server").into()),
            _ => {}
        }
        let fragmented = self.fragments.as_ref().map(|f| f.len() as u64);
        match header.opcode {
            OpCode::Control(_) if !header.is_final || len > MAX_CONTROL_PAYLOAD => {
                Err(Violation("fragmented or oversized control frame").into())
            }
            OpCode::Control(_) => Ok(()),
            OpCode::Data(Data::Text) => Err(DecodeError::UnsupportedMessage {
                what: "a WebSocket text message",
            }
            .into()),
            OpCode::Data(Data::Binary) if fragmented.is_some() => {
                Err(Violation("a new message inside a fragmented one").into())
            }
            OpCode::Data(Data::Continue) if fragmented.is_none() => {
                Err(Violation("a continuation frame outside a message").into())
            }
            OpCode::Data(_) => {
                let total = fragmented.unwrap_or(0).saturating_add(len);
                let max = self.codec.max_frame_size();
                if total > max as u64 {
                    Err(DecodeError::FrameTooLarge { len: total, max }.into())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Appends one unfragmented frame with `payload` to the write buffer, masked with a
    /// fresh random key on the client side.
    fn queue(&mut self, opcode: OpCode, payload: &[u8]) {
        let filled = self.queue_with(opcode, payload.len(), |out| {
            out.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        });
        let Ok(()) = filled;
    }

    /// Appends one unfragmented frame whose `len`-byte payload `fill` writes straight
    /// after the header (one copy), masked on the client side. If `fill` fails, the
    /// write buffer is left as it was.
    fn queue_with<E>(
        &mut self,
        opcode: OpCode,
        len: usize,
        fill: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), E> {
        let header = self.header(opcode);
        let mark = self.write.len();
        self.write.reserve(header.len(len as u64) + len);
        write_header(&header, len as u64, &mut self.write);
        let start = self.write.len();
        if let Err(err) = fill(&mut self.write) {
            self.write.truncate(mark);
            return Err(err);
        }
        if let Some(mask) = header.mask {
            apply_mask(&mut self.write[start..], mask);
        }
        self.unflushed = true;
        Ok(())
    }

    fn header(&self, opcode: OpCode) -> FrameHeader {
        FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: (self.role == Role::Client).then(rand::random::<[u8; 4]>),
        }
    }

    /// Queues a close frame with `status` and `reason` (at most 123 bytes), unless one
    /// was queued already.
    fn queue_close(&mut self, status: u16, reason: &str) {
        if self.close_sent {
            return;
        }
        // Cut at a character boundary: the reason must stay UTF-8.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&status.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        self.queue(OpCode::Control(Control::Close), &payload);
        self.close_sent = true;
    }

    /// Writes the write buffer out and flushes the stream; bytes leave the buffer only
    /// once the stream took them.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        ready!(poll_write_out(&mut self.io, &mut self.write, cx))?;
        self.unflushed = false;
        Poll::Ready(Ok(()))
    }

    /// Writes the answers the reader queued (a pong, a close) without waiting: what the
    /// stream does not take now stays queued for the next flush, and an I/O error
    /// shows again there.
    fn answer(&mut self, cx: &mut Context<'_>) {
        let _ = self.poll_write_out(cx);
    }

    /// Fails the connection (RFC 6455, section 7.1.7): a close with `status` and `why`,
    /// then the error once the close is written (or the write failed): a runtime drops
    /// a connection whose transport failed, which would lose a close still queued.
    fn fail(
        &mut self,
        cx: &mut Context<'_>,
        status: u16,
        why: &'static str,
    ) -> Poll<Result<Option<Frame>>> {
        self.end = End::Failed;
        self.queue_close(status, why);
        let _ = ready!(self.poll_write_out(cx));
        Poll::Ready(Err(protocol_error(why)))
    }

    /// The end of the stream, reported once the close answering the peer's (and what was
    /// queued before it) is written: a runtime drops the connection when its stream ends
    /// (longconn-server's driver does not close a connection whose transport ended), so
    /// an answer still queued then would be lost. An I/O error ends the wait: nothing
    /// more can be sent.
    fn poll_answered_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>>> {
        let _ = ready!(self.poll_write_out(cx));
        Poll::Ready(Ok(None))
    }

    /// Closes the stream's sending side once everything queued is written.
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        ready!(self.poll_write_out(cx))?;
        ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Queues the close frame for `reason`: [`super::close_status`] of its code, the
    /// code's name as the text.
    pub(crate) fn queue_close_for(&mut self, reason: &CloseReason) {
        let code = reason.code();
        self.queue_close(u16::from(super::close_status(code)), code.name());
    }
}

impl FrameReader for WsJoined {
    /// The next binary message, decoded as exactly one frame (zero-copy: the frame's
    /// fields and payload are slices of the message). A text message is
    /// [`DecodeError::UnsupportedMessage`]; a binary message that is not exactly one
    /// frame is the codec's error; a message over the maximum frame size is
    /// [`DecodeError::FrameTooLarge`], from its header. Pings are answered with pongs
    /// and the peer's close with a close (its status echoed), then `Ok(None)` once that
    /// close is written. A frame that breaks RFC 6455 (unmasked from a client, reserved
    /// bits, a fragmented control frame) is answered with close status 1002 and fails
    /// the connection; a close whose reason is not UTF-8, with 1007.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>>> {
        match self.end {
            End::Open => {}
            End::Closed => return self.poll_answered_end(cx),
            End::Failed => {
                let _ = ready!(self.poll_write_out(cx));
                return Poll::Ready(Err(protocol_error("the peer broke the protocol")));
            }
        }
        // Pongs were queued by this call: written once, before it returns or reads.
        let mut ponged = false;
        loop {
            match self.decode() {
                Ok(Some(Inbound::Message(message))) => {
                    if ponged {
                        self.answer(cx);
                    }
                    return Poll::Ready(Ok(Some(self.codec.decode_message(message)?)));
                }
                Ok(Some(Inbound::Ping(payload))) => {
                    // A peer that pings without reading gets no more pongs once
                    // `MAX_UNWRITTEN_FOR_PONG` bytes wait: memory stays bounded (RFC
                    // 6455, 5.5.3, lets an endpoint answer only some pings).
                    if !self.close_sent && self.write.len() < MAX_UNWRITTEN_FOR_PONG {
                        // Written below, with the other pongs of this read.
                        self.queue(OpCode::Control(Control::Pong), &payload);
                        ponged = true;
                    }
                    continue;
                }
                Ok(Some(Inbound::Close(status))) => {
                    self.end = End::Closed;
                    self.queue_close(echo_status(status), "");
                    return self.poll_answered_end(cx);
                }
                Ok(None) => {}
                Err(DecodeOrViolation::Decode(err)) => return Poll::Ready(Err(err.into())),
                Err(DecodeOrViolation::Violation(Violation(why))) => {
                    return self.fail(cx, PROTOCOL_ERROR, why);
                }
                Err(DecodeOrViolation::InvalidUtf8(why)) => {
                    return self.fail(cx, INVALID_PAYLOAD, why);
                }
            }
            // Everything buffered is decoded. What waits to be written (the pongs just
            // queued, or what an earlier call could not write) is written now, so that
            // the stream wakes this task when it can take more: a caller whose writer
            // is idle polls only the reader (longconn-client's driver flushes only
            // after `has_pending_writes` was true at the top of its loop).
            if self.unflushed {
                self.answer(cx);
            }
            if ready!(poll_read_lazy(&mut self.read, &mut self.io, cx))? == 0 {
                let buffered = self.read.len() + self.fragments.as_ref().map_or(0, |f| f.len());
                return Poll::Ready(if buffered == 0 {
                    Ok(None)
                } else {
                    Err(DecodeError::Truncated { buffered }.into())
                });
            }
        }
    }
}

impl FrameWriter for WsJoined {
    /// Appends `frame` as one binary message. Fails once a close frame was queued
    /// (RFC 6455 allows no frame after it).
    fn send(&mut self, frame: Transmit) -> Result<()> {
        if self.close_sent {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the WebSocket close frame was already sent",
            )
            .into());
        }
        let binary = OpCode::Data(Data::Binary);
        match frame {
            Transmit::Encoded(bytes) => self.queue(binary, &bytes),
            Transmit::Frame(frame) => {
                let max = self.max_frame_size as usize;
                let len = frame.encoded_len()?;
                if len > max {
                    return Err(longconn_core::EncodeError::FrameTooLarge {
                        len: len as u64,
                        max,
                    }
                    .into());
                }
                self.queue_with(binary, len, |out| frame.encode(out, max))?;
            }
        }
        Ok(())
    }

    fn has_pending_writes(&self) -> bool {
        self.unflushed
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_write_out(cx)
    }

    /// Queues a close frame whose status is [`super::close_status`] of the reason's code
    /// (none if the peer's close was answered already), writes everything out and
    /// closes the stream's sending side.
    async fn close(&mut self, reason: CloseReason) -> Result<()> {
        self.queue_close_for(&reason);
        std::future::poll_fn(|cx| self.poll_shutdown(cx)).await
    }
}

/// Close status 1002: protocol error.
const PROTOCOL_ERROR: u16 = 1002;

/// Whether a connection's incoming stream has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// The peer's close arrived; it is answered.
    Closed,
    /// The peer broke RFC 6455; a close with 1002 or 1007 answers it.
    Failed,
}

fn protocol_error(why: &str) -> ConnectionError {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("WebSocket protocol error: {why}"),
    )
    .into()
}

/// Close status 1007: a payload is not what its type says (text that is not UTF-8).
const INVALID_PAYLOAD: u16 = 1007;

/// The status to answer a peer's close with: its own when it may be sent (RFC 6455,
/// section 7.4), 1000 when it sent none, 1002 for one that no endpoint may send.
fn echo_status(status: Option<u16>) -> u16 {
    match status {
        None => 1000,
        Some(s @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => s,
        Some(_) => PROTOCOL_ERROR,
    }
}

enum DecodeOrViolation {
    Decode(DecodeError),
    /// Answered with close status 1002.
    Violation(Violation),
    /// Text that must be UTF-8 is not: answered with close status 1007.
    InvalidUtf8(&'static str),
}

impl From<DecodeError> for DecodeOrViolation {
    fn from(err: DecodeError) -> Self {
        DecodeOrViolation::Decode(err)
    }
}

impl From<Violation> for DecodeOrViolation {
    fn from(v: Violation) -> Self {
        DecodeOrViolation::Violation(v)
    }
}

fn write_header(header: &FrameHeader, len: u64, out: &mut BytesMut) {
    // Formatting into memory cannot fail: a `BytesMut` writer takes every byte.
    let _ = header.format(len, &mut out.writer());
}

/// XORs `buf` with the 4-byte `mask`, starting at the mask's first byte (RFC 6455,
/// section 5.3).
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = buf.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let masked = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= m;
    }
}

#[cfg(test)]
mod tests;

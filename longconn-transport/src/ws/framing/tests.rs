//! The framing against frames built by tungstenite (an independent encoder), over an
//! in-memory stream.

use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use longconn_core::connection::{FrameReader, FrameWriter};
use longconn_core::{CloseReason, Code, ConnectionError, DecodeError, Frame, Transmit};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame as WsFrame, FrameHeader};

use super::{Role, WsJoined, apply_mask};

const MAX: usize = 1024;

/// A connection of `role` and the peer's end of its stream.
fn pair(role: Role) -> (WsJoined, DuplexStream) {
    let (near, far) = tokio::io::duplex(64 * 1024);
    (
        WsJoined::new(Box::new(near), role, MAX, BytesMut::new()),
        far,
    )
}

/// One frame as a client sends it (masked with `mask`, if any), encoded by tungstenite.
fn wire(opcode: OpCode, payload: &[u8], is_final: bool, mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = FrameHeader {
        is_final,
        opcode,
        mask,
        ..FrameHeader::default()
    };
    let frame = WsFrame::from_payload(header, Bytes::copy_from_slice(payload));
    let mut out = Vec::new();
    frame.format(&mut out).unwrap();
    out
}

const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);
const BINARY: OpCode = OpCode::Data(Data::Binary);

fn ping_frame(id: u32) -> Frame {
    Frame::Ping {
        id,
        payload: Bytes::from_static(b"hello"),
    }
}

fn encoded(frame: &Frame) -> Bytes {
    frame.to_bytes(MAX).unwrap()
}

/// Decodes every WebSocket frame in `bytes` (as the peer of `role` would).
fn parse_all(mut bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let mut cursor = std::io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let start = cursor.position() as usize;
        let mut payload = bytes[start..start + len as usize].to_vec();
        if let Some(mask) = header.mask {
            apply_mask(&mut payload, mask);
        }
        bytes = &bytes[start + len as usize..];
        frames.push((header, payload));
    }
    frames
}

/// Everything the connection has written so far (the peer reads without waiting).
async fn written(far: &mut DuplexStream) -> Vec<u8> {
    let mut out = vec![0u8; 64 * 1024];
    match tokio::time::timeout(std::time::Duration::from_millis(50), far.read(&mut out)).await {
        Ok(Ok(n)) => out.truncate(n),
        _ => out.clear(),
    }
    out
}

fn close_status(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

#[test]
fn the_mask_matches_a_byte_by_byte_xor() {
    let mask = [1, 2, 3, 0xff];
    for len in 0..40 {
        let original: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let mut fast = original.clone();
        apply_mask(&mut fast, mask);
        let slow: Vec<u8> = original
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(fast, slow, "length {len}");
    }
}

#[tokio::test]
async fn a_masked_message_is_one_frame_and_no_buffer_is_kept_between_frames() {
    let (mut conn, mut far) = pair(Role::Server);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(conn.poll_recv(&mut cx).is_pending());
    assert_eq!(conn.read.capacity(), 0, "nothing arrived yet");

    let bytes = wire(BINARY, &encoded(&ping_frame(1)), true, MASK);
    // Half a frame first: it is kept.
    far.write_all(&bytes[..5]).await.unwrap();
    assert!(conn.poll_recv(&mut cx).is_pending());
    assert!(conn.read.capacity() > 0);
    far.write_all(&bytes[5..]).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(ping_frame(1)));
    assert!(conn.poll_recv(&mut cx).is_pending());
    assert_eq!(conn.read.capacity(), 0, "given back between frames");
}

#[tokio::test]
async fn pings_are_answered_with_pongs_in_order_with_the_frames() {
    let (mut conn, mut far) = pair(Role::Server);
    conn.send(Transmit::Frame(ping_frame(2))).unwrap();
    let mut input = wire(OpCode::Control(Control::Ping), b"are you there", true, MASK);
    input.extend(wire(BINARY, &encoded(&ping_frame(3)), true, MASK));
    far.write_all(&input).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(ping_frame(3)));

    let frames = parse_all(&written(&mut far).await);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].0.opcode, BINARY);
    assert_eq!(frames[0].0.mask, None, "a server does not mask");
    assert_eq!(frames[0].1, encoded(&ping_frame(2)));
    assert_eq!(frames[1].0.opcode, OpCode::Control(Control::Pong));
    assert_eq!(frames[1].1, b"are you there");
}

#[tokio::test]
async fn the_peers_close_is_echoed_and_ends_the_stream() {
    let (mut conn, mut far) = pair(Role::Server);
    let mut payload = 4001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    let close = wire(OpCode::Control(Control::Close), &payload, true, MASK);
    far.write_all(&close).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), None);
    assert_eq!(conn.recv().await.unwrap(), None, "ended stays ended");

    let frames = parse_all(&written(&mut far).await);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0.opcode, OpCode::Control(Control::Close));
    assert_eq!(close_status(&frames[0].1), 4001);
    // Nothing may follow the close: not a frame, not a second close.
    assert!(conn.send(Transmit::Frame(ping_frame(4))).is_err());
    conn.close(CloseReason::TransportEnded).await.unwrap();
    assert!(written(&mut far).await.is_empty());
}

#[tokio::test]
async fn close_sends_the_status_of_the_reason() {
    let (mut conn, mut far) = pair(Role::Server);
    conn.send(Transmit::Frame(ping_frame(5))).unwrap();
    conn.close(CloseReason::Local(Code::Kicked)).await.unwrap();
    let mut out = Vec::new();
    far.read_to_end(&mut out).await.unwrap();
    let frames = parse_all(&out);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1].0.opcode, OpCode::Control(Control::Close));
    assert_eq!(close_status(&frames[1].1), 4003);
    assert_eq!(&frames[1].1[2..], Code::Kicked.name().as_bytes());
}

/// The bytes `input` make the server fail with close status `status`.
async fn assert_protocol_error(input: Vec<u8>, status: u16) {
    let (mut conn, mut far) = pair(Role::Server);
    far.write_all(&input).await.unwrap();
    match conn.recv().await {
        Err(ConnectionError::Io(err)) => {
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}")
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    let frames = parse_all(&written(&mut far).await);
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(close_status(&frames[0].1), status);
    assert!(conn.recv().await.is_err(), "a failed stream stays failed");
}

#[tokio::test]
async fn frames_that_break_the_protocol_are_closed_with_1002() {
    let message = encoded(&ping_frame(6));
    // Unmasked, from a client.
    assert_protocol_error(wire(BINARY, &message, true, None), 1002).await;
    // A reserved bit without an extension.
    let mut rsv = wire(BINARY, &message, true, MASK);
    rsv[0] |= 0x40;
    assert_protocol_error(rsv, 1002).await;
    // A fragmented control frame.
    assert_protocol_error(
        wire(OpCode::Control(Control::Ping), b"x", false, MASK),
        1002,
    )
    .await;
    // A continuation outside a message.
    assert_protocol_error(
        wire(OpCode::Data(Data::Continue), &message, true, MASK),
        1002,
    )
    .await;
    // A reserved opcode.
    let mut reserved = wire(BINARY, &message, true, MASK);
    reserved[0] = (reserved[0] & 0xf0) | 0x3;
    assert_protocol_error(reserved, 1002).await;
}

#[tokio::test]
async fn fragments_are_reassembled_around_a_ping() {
    let (mut conn, mut far) = pair(Role::Server);
    let message = encoded(&ping_frame(7));
    let (a, b) = message.split_at(10);
    let mut input = wire(BINARY, a, false, MASK);
    input.extend(wire(OpCode::Control(Control::Ping), b"p", true, MASK));
    input.extend(wire(OpCode::Data(Data::Continue), b, true, MASK));
    far.write_all(&input).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(ping_frame(7)));
    let frames = parse_all(&written(&mut far).await);
    assert_eq!(frames[0].0.opcode, OpCode::Control(Control::Pong));
}

#[tokio::test]
async fn a_message_over_the_limit_is_refused_from_its_header() {
    let (mut conn, mut far) = pair(Role::Server);
    // Only the header: the refusal does not wait for the payload.
    let header = wire(BINARY, &vec![0u8; MAX + 1], true, MASK);
    far.write_all(&header[..8]).await.unwrap();
    match conn.recv().await {
        Err(ConnectionError::Decode(DecodeError::FrameTooLarge { len, max })) => {
            assert_eq!((len, max), (MAX as u64 + 1, MAX));
        }
        other => panic!("expected frame_too_large, got {other:?}"),
    }
    // Fragments count together.
    let (mut conn, mut far) = pair(Role::Server);
    let mut input = wire(BINARY, &vec![0u8; MAX / 2 + 1], false, MASK);
    input.extend(wire(
        OpCode::Data(Data::Continue),
        &vec![0u8; MAX / 2],
        true,
        MASK,
    ));
    far.write_all(&input).await.unwrap();
    assert!(matches!(
        conn.recv().await,
        Err(ConnectionError::Decode(DecodeError::FrameTooLarge { .. }))
    ));
}

#[tokio::test]
async fn a_text_message_is_unsupported_and_an_unfinished_one_truncated() {
    let (mut conn, mut far) = pair(Role::Server);
    far.write_all(&wire(OpCode::Data(Data::Text), b"hi", true, MASK))
        .await
        .unwrap();
    assert!(matches!(
        conn.recv().await,
        Err(ConnectionError::Decode(
            DecodeError::UnsupportedMessage { .. }
        ))
    ));

    let (mut conn, mut far) = pair(Role::Server);
    let bytes = wire(BINARY, &encoded(&ping_frame(8)), true, MASK);
    far.write_all(&bytes[..bytes.len() - 1]).await.unwrap();
    drop(far);
    assert!(matches!(
        conn.recv().await,
        Err(ConnectionError::Decode(DecodeError::Truncated { .. }))
    ));
}

#[tokio::test]
async fn a_client_masks_what_it_sends_and_refuses_masked_frames() {
    let (mut conn, mut far) = pair(Role::Client);
    conn.send(Transmit::Frame(ping_frame(9))).unwrap();
    conn.send(Transmit::Encoded(encoded(&ping_frame(10))))
        .unwrap();
    conn.flush().await.unwrap();
    let frames = parse_all(&written(&mut far).await);
    assert_eq!(frames.len(), 2);
    for (frame, id) in frames.iter().zip([9, 10]) {
        assert!(frame.0.mask.is_some(), "a client masks every frame");
        assert_eq!(frame.1, encoded(&ping_frame(id)));
    }
    assert_ne!(frames[0].0.mask, frames[1].0.mask, "a fresh key per frame");

    far.write_all(&wire(BINARY, &encoded(&ping_frame(11)), true, None))
        .await
        .unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(ping_frame(11)));
    far.write_all(&wire(BINARY, &encoded(&ping_frame(12)), true, MASK))
        .await
        .unwrap();
    assert!(matches!(conn.recv().await, Err(ConnectionError::Io(_))));
}

#[tokio::test]
async fn a_frame_too_large_to_send_leaves_the_buffer_unchanged() {
    let (mut conn, mut far) = pair(Role::Server);
    let big = Frame::Ping {
        id: 1,
        payload: Bytes::from(vec![0u8; MAX]),
    };
    assert!(conn.send(Transmit::Frame(big)).is_err());
    assert!(!conn.has_pending_writes());
    conn.send(Transmit::Frame(ping_frame(13))).unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(conn.poll_flush(&mut cx), Poll::Ready(Ok(()))));
    let frames = parse_all(&written(&mut far).await);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1, encoded(&ping_frame(13)));
}

/// Never readable and never writable: what a peer that stopped reading looks like.
struct Stuck;

impl tokio::io::AsyncRead for Stuck {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

impl tokio::io::AsyncWrite for Stuck {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

#[test]
fn pings_from_a_peer_that_does_not_read_stop_being_answered() {
    let pings: Vec<u8> = (0..2_000)
        .flat_map(|_| wire(OpCode::Control(Control::Ping), &[7u8; 100], true, MASK))
        .collect();
    let mut conn = WsJoined::new(
        Box::new(Stuck),
        Role::Server,
        MAX,
        BytesMut::from(&pings[..]),
    );
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(conn.poll_recv(&mut cx).is_pending());
    assert!(conn.has_pending_writes());
    // 2,000 pongs would be 204,000 bytes.
    assert!(
        conn.write.len() < super::MAX_UNWRITTEN_FOR_PONG + 200,
        "{}",
        conn.write.len()
    );
}

/// A stream whose writes stay pending until [`Gate::open`]; like a tokio socket it keeps
/// only the waker of the most recent pending write. Reads return what was pushed.
#[derive(Clone, Default)]
struct Gate(std::sync::Arc<std::sync::Mutex<GateState>>);

#[derive(Default)]
struct GateState {
    input: Vec<u8>,
    output: Vec<u8>,
    writable: bool,
    write_waker: Option<std::task::Waker>,
    /// `poll_write` calls that took bytes.
    writes: usize,
}

impl Gate {
    fn push(&self, bytes: &[u8]) {
        self.0.lock().unwrap().input.extend_from_slice(bytes);
    }

    /// Makes the stream writable and wakes the one waker it kept.
    fn open(&self) {
        let mut state = self.0.lock().unwrap();
        state.writable = true;
        if let Some(waker) = state.write_waker.take() {
            waker.wake();
        }
    }

    fn output(&self) -> Vec<u8> {
        self.0.lock().unwrap().output.clone()
    }
}

impl tokio::io::AsyncRead for Gate {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut state = self.0.lock().unwrap();
        if state.input.is_empty() {
            return Poll::Pending;
        }
        let n = state.input.len().min(buf.remaining());
        buf.put_slice(&state.input[..n]);
        state.input.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Gate {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut state = self.0.lock().unwrap();
        if !state.writable {
            state.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        state.output.extend_from_slice(buf);
        state.writes += 1;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A pong the stream could not take at once is written by the next `poll_recv`: a driver
/// whose writer was idle when the ping arrived (longconn-client's `serve` only flushes
/// when `has_pending_writes` was true at the top of its loop) polls nothing else when the
/// stream becomes writable.
#[test]
fn a_pong_the_stream_did_not_take_is_written_by_the_next_poll_recv() {
    let gate = Gate::default();
    gate.push(&wire(OpCode::Control(Control::Ping), b"p", true, MASK));
    let mut conn = WsJoined::new(Box::new(gate.clone()), Role::Server, MAX, BytesMut::new());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(conn.poll_recv(&mut cx).is_pending());
    assert!(gate.output().is_empty());

    gate.open();
    assert!(conn.poll_recv(&mut cx).is_pending());
    let frames = parse_all(&gate.output());
    assert_eq!(frames.len(), 1, "the pong went out");
    assert_eq!(frames[0].0.opcode, OpCode::Control(Control::Pong));
    assert_eq!(frames[0].1, b"p");
    assert!(!conn.has_pending_writes());
}

/// Counts its wake-ups.
struct Counter(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counter {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn counting_waker() -> (std::sync::Arc<Counter>, std::task::Waker) {
    let counter = std::sync::Arc::new(Counter(Default::default()));
    (counter.clone(), std::task::Waker::from(counter))
}

/// Split halves polled from two tasks: the reader's pong write replaces the writer's
/// waker in the stream (a socket keeps one), so the reader must wake the writer when it
/// writes the shared buffer; otherwise the writer's flush never completes.
#[test]
fn a_flush_pending_in_another_task_is_woken_when_the_reader_writes() {
    use longconn_core::connection::Connection;

    let gate = Gate::default();
    let joined = WsJoined::new(Box::new(gate.clone()), Role::Server, MAX, BytesMut::new());
    let conn = crate::ws::WsConnection {
        joined,
        peer: "127.0.0.1:1".parse().unwrap(),
    };
    let (mut reader, mut writer) = conn.split();
    let (flushes, flush_waker) = counting_waker();
    let (_, read_waker) = counting_waker();
    let mut write_cx = Context::from_waker(&flush_waker);
    let mut read_cx = Context::from_waker(&read_waker);

    writer.send(Transmit::Frame(ping_frame(14))).unwrap();
    assert!(writer.poll_flush(&mut write_cx).is_pending());
    gate.push(&wire(OpCode::Control(Control::Ping), b"p", true, MASK));
    assert!(reader.poll_recv(&mut read_cx).is_pending());

    // The stream wakes the reader's task only; it writes the frame and the pong.
    gate.open();
    assert!(reader.poll_recv(&mut read_cx).is_pending());
    let frames = parse_all(&gate.output());
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(
        flushes.0.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the writer's task must be woken to see its flush complete"
    );
    assert!(matches!(
        writer.poll_flush(&mut write_cx),
        Poll::Ready(Ok(()))
    ));
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_fails_with_1007() {
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0xce, 0xba, 0xff, 0xfe]);
    let close = wire(OpCode::Control(Control::Close), &payload, true, MASK);
    assert_protocol_error(close, 1007).await;
}

/// Pings that arrive together are answered with one write: with `TCP_NODELAY`, a write
/// per pong would be a TCP segment per 6-byte ping (an amplification a peer controls).
#[test]
fn pings_that_arrive_together_are_answered_with_one_write() {
    let gate = Gate::default();
    gate.open();
    // 70 pings of 7 bytes: one read.
    let pings: Vec<u8> = (0..70u8)
        .flat_map(|i| wire(OpCode::Control(Control::Ping), &[i], true, MASK))
        .collect();
    gate.push(&pings);
    let mut conn = WsJoined::new(Box::new(gate.clone()), Role::Server, MAX, BytesMut::new());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(conn.poll_recv(&mut cx).is_pending());
    let frames = parse_all(&gate.output());
    assert_eq!(frames.len(), 70);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.1, [i as u8], "in order");
    }
    assert_eq!(gate.0.lock().unwrap().writes, 1);
    assert!(!conn.has_pending_writes());
}

/// The peer's close is answered behind frames the stream has not taken yet: the end of
/// the stream is reported only once the answer is written, because a runtime drops the
/// connection then (the server's driver does not close a transport that ended).
#[test]
fn the_end_after_the_peers_close_waits_for_the_answer_to_be_written() {
    let gate = Gate::default();
    let mut conn = WsJoined::new(Box::new(gate.clone()), Role::Server, MAX, BytesMut::new());
    conn.send(Transmit::Frame(ping_frame(15))).unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(conn.poll_flush(&mut cx).is_pending());
    gate.push(&wire(
        OpCode::Control(Control::Close),
        &1000u16.to_be_bytes(),
        true,
        MASK,
    ));
    assert!(
        conn.poll_recv(&mut cx).is_pending(),
        "the close answer is not written yet"
    );

    gate.open();
    assert!(matches!(conn.poll_recv(&mut cx), Poll::Ready(Ok(None))));
    let frames = parse_all(&gate.output());
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[1].0.opcode, OpCode::Control(Control::Close));
    assert_eq!(close_status(&frames[1].1), 1000);
}

#[test]
fn a_protocol_error_is_reported_once_its_close_is_written() {
    let gate = Gate::default();
    let mut conn = WsJoined::new(Box::new(gate.clone()), Role::Server, MAX, BytesMut::new());
    conn.send(Transmit::Frame(ping_frame(16))).unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(conn.poll_flush(&mut cx).is_pending());
    // Unmasked, from a client.
    gate.push(&wire(BINARY, &encoded(&ping_frame(17)), true, None));
    assert!(
        conn.poll_recv(&mut cx).is_pending(),
        "the 1002 close is not written yet"
    );

    gate.open();
    assert!(matches!(
        conn.poll_recv(&mut cx),
        Poll::Ready(Err(ConnectionError::Io(_)))
    ));
    let frames = parse_all(&gate.output());
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(close_status(&frames[1].1), 1002);
}

#[test]
fn a_long_close_reason_is_cut_at_a_character_boundary() {
    let gate = Gate::default();
    gate.open();
    let mut conn = WsJoined::new(Box::new(gate.clone()), Role::Server, MAX, BytesMut::new());
    // 61 two-byte characters and one more: byte 123 falls inside the last one.
    let reason = "é".repeat(62);
    conn.queue_close(1000, &reason);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(conn.poll_flush(&mut cx), Poll::Ready(Ok(()))));
    let frames = parse_all(&gate.output());
    let text = std::str::from_utf8(&frames[0].1[2..]).expect("the reason stays UTF-8");
    assert_eq!(text, "é".repeat(61));
}

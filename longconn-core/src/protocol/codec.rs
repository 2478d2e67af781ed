//! [`FrameCodec`]: frames on a byte stream, decoded from and encoded into a `BytesMut`.
//!
//! The codec is plain functions over buffers, so longconn-core needs no tokio. A transport
//! that wants `tokio_util::codec::Framed` wraps it in a two-line `Decoder` of its own.

use bytes::{Bytes, BytesMut};

use super::frame::{Frame, FrameType, HEADER_LEN, Header, MAGIC, VERSION};
use crate::error::{DecodeError, EncodeError};

/// Frames a byte stream (TCP, TLS, a QUIC stream) into [`Frame`]s and back.
///
/// Decoding first checks that a whole frame is buffered and only then parses it, so an
/// incomplete frame is `Ok(None)`, never an error. The parsed frame's byte fields are
/// slices of the read buffer: a decoded frame copies nothing and allocates nothing once the
/// buffer is shared. A clean end of stream between frames is `Ok(None)`; an end inside a
/// frame is [`DecodeError::Truncated`].
///
/// Bad input is reported as early as the bytes allow: a wrong magic after two bytes, a
/// wrong version after three, an oversized frame as soon as its header is in, without
/// waiting for (or buffering) the body.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_size: usize,
}

impl FrameCodec {
    /// A codec that accepts and emits frames of at most `max_frame_size` bytes (header
    /// included). Use a validated [`crate::SessionConfig::max_frame_size`].
    pub const fn new(max_frame_size: usize) -> FrameCodec {
        FrameCodec { max_frame_size }
    }

    /// The largest frame this codec accepts.
    pub const fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Decodes one complete frame held in `frame` (for message transports such as
    /// WebSocket, where one message is one frame). Trailing or missing bytes are errors.
    pub fn decode_message(&self, frame: Bytes) -> Result<Frame, DecodeError> {
        let header = self.peek_header(&frame)?.ok_or(DecodeError::Truncated {
            buffered: frame.len(),
        })?;
        let len = header.frame_len();
        if frame.len() < len {
            return Err(DecodeError::Truncated {
                buffered: frame.len(),
            });
        }
        if frame.len() > len {
            return Err(DecodeError::MalformedField {
                tag: 0,
                reason: "bytes after the end of the frame",
            });
        }
        Frame::from_parts(header, frame)
    }

    /// Checks what of the header is buffered; `Ok(None)` if the header is incomplete.
    #[inline]
    fn peek_header(&self, buf: &[u8]) -> Result<Option<Header>, DecodeError> {
        if buf.len() >= 2 {
            let magic = u16::from_be_bytes([buf[0], buf[1]]);
            if magic != MAGIC {
                return Err(DecodeError::BadMagic { found: magic });
            }
        }
        if buf.len() >= 3 && buf[2] != VERSION {
            return Err(DecodeError::UnsupportedVersion { version: buf[2] });
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        Header::parse(buf, self.max_frame_size).map(Some)
    }
}

/// A whole frame at the front of a buffer, its header checked and its fields not parsed
/// ([`FrameCodec::peek`]): for a reader that needs a frame's type, id or payload
/// without decoding it (a load generator counting pushes, a relay forwarding by type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameView<'a> {
    /// The frame type (from the header).
    pub frame_type: FrameType,
    /// The header's flags ([`super::FLAG_ACK_REQUIRED`] on a `Push`).
    pub flags: u8,
    /// The header's request or push id.
    pub id: u32,
    /// The encoded fields, unparsed.
    pub fields: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl FrameView<'_> {
    /// The frame's length in bytes, header included: what to advance the buffer by.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.fields.len() + self.payload.len()
    }

    /// Always `false`: a frame has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Stream decoding and encoding, with the same contract as tokio-util's `Decoder` and
/// `Encoder` (which a transport can implement by calling these).
impl FrameCodec {
    /// The frame at the front of `src` without decoding it: the header is checked as
    /// [`FrameCodec::decode`] checks it, the fields are not parsed (a frame whose fields
    /// are malformed is only found by `decode`). `Ok(None)` until the whole frame is in
    /// `src`; nothing is consumed (advance by [`FrameView::len`]).
    pub fn peek<'a>(&self, src: &'a [u8]) -> Result<Option<FrameView<'a>>, DecodeError> {
        let Some(header) = self.peek_header(src)? else {
            return Ok(None);
        };
        if src.len() < header.frame_len() {
            return Ok(None);
        }
        let fields_end = HEADER_LEN + header.fields_len;
        Ok(Some(FrameView {
            frame_type: header.frame_type,
            flags: header.flags,
            id: header.id,
            fields: &src[HEADER_LEN..fields_end],
            payload: &src[fields_end..header.frame_len()],
        }))
    }

    /// Takes the next whole frame off the front of `src`. `Ok(None)` means more bytes are
    /// needed (and `src` has reserved room for the rest of the frame when its header is
    /// in). The frame's fields are slices of the bytes split off `src`: no copy.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(header) = self.peek_header(src)? else {
            return Ok(None);
        };
        let len = header.frame_len();
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let frame = src.split_to(len).freeze();
        Frame::from_parts(header, frame).map(Some)
    }

    /// [`FrameCodec::decode`] at the end of the stream: what is left must be whole frames,
    /// else [`DecodeError::Truncated`].
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(DecodeError::Truncated {
                buffered: src.len(),
            }),
        }
    }

    /// Appends `frame`'s encoding to `dst`; fails (writing nothing) if it would exceed
    /// the maximum frame size.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        frame.encode(dst, self.max_frame_size)
    }

    /// Appends a pre-encoded frame (see [`Frame::to_bytes`]) unchanged.
    pub fn encode_bytes(&mut self, frame: &Bytes, dst: &mut BytesMut) {
        dst.extend_from_slice(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EncodeError;
    use crate::protocol::{Code, Metadata, Text};

    fn ping(payload: &'static [u8]) -> Frame {
        Frame::Ping {
            id: 7,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn partial_input_is_none_until_the_frame_completes() {
        let mut codec = FrameCodec::new(1024);
        let bytes = ping(b"hello").to_bytes(1024).unwrap();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let out = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(out.is_none(), "decoded early at byte {i}");
            } else {
                assert_eq!(out, Some(ping(b"hello")));
            }
        }
        assert!(buf.is_empty());
    }

    /// `peek` sees a frame only once it is whole, gives the header's values and the
    /// payload's bytes, consumes nothing, and refuses what `decode` refuses from the
    /// header.
    #[test]
    fn peek_views_a_whole_frame_without_consuming_it() {
        let codec = FrameCodec::new(1024);
        let push = Frame::Push {
            id: 9,
            ack_required: true,
            business: 3,
            group: Some(Text::from("g")),
            seq: Some(4),
            epoch: Some(1),
            meta: Metadata::default(),
            payload: Bytes::from_static(b"payload"),
        };
        let mut bytes = push.to_bytes(1024).unwrap().to_vec();
        for cut in 0..bytes.len() {
            assert_eq!(codec.peek(&bytes[..cut]).unwrap(), None, "at {cut}");
        }
        bytes.extend_from_slice(&ping(b"x").to_bytes(1024).unwrap());
        let view = codec.peek(&bytes).unwrap().unwrap();
        assert_eq!(view.frame_type, FrameType::Push);
        assert_eq!((view.id, view.flags), (9, super::super::FLAG_ACK_REQUIRED));
        assert_eq!(view.payload, b"payload");
        let mut decoder = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), Some(push));
        assert_eq!(view.len(), bytes.len() - buf.len());
        let next = codec.peek(&bytes[view.len()..]).unwrap().unwrap();
        assert_eq!(
            (next.frame_type, next.payload),
            (FrameType::Ping, &b"x"[..])
        );
        assert!(matches!(
            FrameCodec::new(16).peek(&bytes),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            codec.peek(b"XX"),
            Err(DecodeError::BadMagic { .. })
        ));
    }

    #[test]
    fn eof_between_frames_is_clean_and_inside_a_frame_is_truncated() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        let bytes = ping(b"abc").to_bytes(1024).unwrap();
        buf.extend_from_slice(&bytes[..bytes.len() - 1]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(DecodeError::Truncated { buffered }) if buffered == bytes.len() - 1
        ));
    }

    #[test]
    fn oversized_frames_fail_on_the_header_and_on_encode() {
        let mut codec = FrameCodec::new(32);
        let big = ping(&[0u8; 64]);
        assert!(matches!(
            big.to_bytes(32),
            Err(EncodeError::FrameTooLarge { len: 80, max: 32 })
        ));
        let bytes = big.to_bytes(1024).unwrap();
        let mut buf = BytesMut::from(&bytes[..HEADER_LEN]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { len: 80, max: 32 })
        ));
    }

    #[test]
    fn encoder_refuses_values_a_decoder_would_reject() {
        let frame = Frame::JoinGroup {
            id: 1,
            group: Text::new(),
            since: None,
        };
        assert!(matches!(
            frame.to_bytes(1024),
            Err(EncodeError::InvalidValue {
                what: "group id",
                ..
            })
        ));
        let close = Frame::Close {
            code: Code::Normal,
            message: Text::from("x".repeat(2000)),
        };
        assert!(close.to_bytes(1 << 20).is_err());
    }

    #[test]
    fn message_decoding_rejects_trailing_bytes() {
        let codec = FrameCodec::new(1024);
        let bytes = ping(b"x").to_bytes(1024).unwrap();
        assert_eq!(codec.decode_message(bytes.clone()).unwrap(), ping(b"x"));
        let mut extra = BytesMut::from(&bytes[..]);
        extra.extend_from_slice(b"!");
        assert!(codec.decode_message(extra.freeze()).is_err());
        assert!(matches!(
            codec.decode_message(bytes.slice(..10)),
            Err(DecodeError::Truncated { .. })
        ));
    }
}

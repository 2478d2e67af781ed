//! The [`Frame`] type and its byte layout: parsing a complete frame and encoding one.
//!
//! Layout (docs/PROTOCOL.md is normative), all integers big-endian:
//!
//! ```text
//! 0  magic        u16  0x4C43 ("LC")
//! 2  version      u8   1
//! 3  type         u8   FrameType
//! 4  flags        u8   bit 0 ACK_REQUIRED (Push only); other bits 0
//! 5  reserved     u8   0
//! 6  fields_len   u16  length of the fields section
//! 8  payload_len  u32  length of the payload
//! 12 id           u32  correlation id
//! 16 fields       fields_len bytes: tag u8, len u16, value
//!    payload      payload_len bytes, opaque
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::code::Code;
use super::fields::{MAX_ID_LEN, MAX_MESSAGE_LEN, MAX_NETWORK, MAX_TOKEN_LEN, Metadata, Text, tag};
use crate::error::{DecodeError, EncodeError};

/// The two magic bytes that start every frame: "LC".
pub const MAGIC: u16 = 0x4C43;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Flag bit: the client must answer this `Push` with a `PushAck` carrying its id.
pub const FLAG_ACK_REQUIRED: u8 = 0x01;

/// The frame type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client logs in.
    Login = 0x01,
    /// Server accepts a login.
    LoginAck = 0x02,
    /// Liveness probe, either direction.
    Ping = 0x03,
    /// Answer to a `Ping`.
    Pong = 0x04,
    /// Upstream business request.
    Request = 0x05,
    /// Answer to a `Request`.
    Response = 0x06,
    /// Downstream push.
    Push = 0x07,
    /// Client confirms an acked push.
    PushAck = 0x08,
    /// Client joins a group.
    JoinGroup = 0x09,
    /// Server confirms a join.
    JoinAck = 0x0A,
    /// Client leaves a group.
    LeaveGroup = 0x0B,
    /// Server confirms a leave.
    LeaveAck = 0x0C,
    /// Server says the token expires and asks for a new one.
    TokenExpiring = 0x0D,
    /// Client presents a new token.
    TokenRefresh = 0x0E,
    /// Server accepts a new token.
    TokenRefreshAck = 0x0F,
    /// Server ends the session on purpose.
    Kick = 0x10,
    /// Server is draining; reconnect after the hint.
    GoAway = 0x11,
    /// A frame failed; correlates by id.
    Error = 0x12,
    /// The sender is closing the connection.
    Close = 0x13,
    /// Client reports its connection quality (docs/PROTOCOL.md section 4.1).
    QualityReport = 0x14,
}

impl FrameType {
    /// The type for a wire byte.
    pub fn from_u8(value: u8) -> Result<FrameType, DecodeError> {
        use FrameType::*;
        Ok(match value {
            0x01 => Login,
            0x02 => LoginAck,
            0x03 => Ping,
            0x04 => Pong,
            0x05 => Request,
            0x06 => Response,
            0x07 => Push,
            0x08 => PushAck,
            0x09 => JoinGroup,
            0x0A => JoinAck,
            0x0B => LeaveGroup,
            0x0C => LeaveAck,
            0x0D => TokenExpiring,
            0x0E => TokenRefresh,
            0x0F => TokenRefreshAck,
            0x10 => Kick,
            0x11 => GoAway,
            0x12 => Error,
            0x13 => Close,
            0x14 => QualityReport,
            other => return Err(DecodeError::UnknownFrameType(other)),
        })
    }

    /// Whether frames of this type may carry a payload.
    pub fn has_payload(self) -> bool {
        matches!(
            self,
            FrameType::Ping
                | FrameType::Pong
                | FrameType::Request
                | FrameType::Response
                | FrameType::Push
                | FrameType::QualityReport
        )
    }
}

/// One protocol frame, decoded. Byte-valued fields are slices of the buffer the frame was
/// decoded from.
///
/// `id` is the correlation id: a client picks it for `Login`, `Ping`, `Request`,
/// `JoinGroup`, `LeaveGroup` and `TokenRefresh`, and the answer (ack, `Response`, `Pong`
/// or `Error`) carries the same id. A `Push` that needs an ack carries a non-zero id that
/// the `PushAck` repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Client logs in with a token for (app, device).
    Login {
        /// Correlation id, echoed by `LoginAck` or `Error`.
        id: u32,
        /// App id.
        app: Text,
        /// Device id.
        device: Text,
        /// Login token.
        token: Bytes,
        /// Client metadata (platform, SDK version, ...).
        meta: Metadata,
    },
    /// Server accepted the login.
    LoginAck {
        /// The `Login`'s id.
        id: u32,
        /// This connection's node-unique id.
        conn_id: u64,
        /// How often the client must send a `Ping`.
        heartbeat_ms: u32,
        /// When the token expires (Unix ms), if it does.
        expires_at_ms: Option<u64>,
    },
    /// Liveness probe; the peer answers with a `Pong` with the same id and payload.
    Ping {
        /// Correlation id.
        id: u32,
        /// Opaque bytes echoed back (a timestamp, usually).
        payload: Bytes,
    },
    /// Answer to a `Ping`.
    Pong {
        /// The `Ping`'s id.
        id: u32,
        /// The `Ping`'s payload.
        payload: Bytes,
    },
    /// Upstream request for the backend that serves `business`.
    Request {
        /// Request id chosen by the client.
        id: u32,
        /// Business id that selects the backend.
        business: u32,
        /// Request metadata passed to the backend.
        meta: Metadata,
        /// Opaque business payload.
        payload: Bytes,
    },
    /// A backend's answer to a `Request`.
    Response {
        /// The `Request`'s id.
        id: u32,
        /// The `Request`'s business id.
        business: u32,
        /// Response metadata from the backend.
        meta: Metadata,
        /// Opaque business payload.
        payload: Bytes,
    },
    /// Downstream push.
    Push {
        /// Push id; non-zero when `ack_required`.
        id: u32,
        /// The client must answer with `PushAck { id }`.
        ack_required: bool,
        /// Business id the push belongs to.
        business: u32,
        /// The group it was sent to, for group pushes.
        group: Option<Text>,
        /// Per-group sequence number, for group pushes: the push's offset in its
        /// group's log.
        seq: Option<u64>,
        /// The epoch of that log, for group pushes: sequence numbers compare only
        /// within one epoch.
        epoch: Option<u64>,
        /// Push metadata.
        meta: Metadata,
        /// Opaque business payload.
        payload: Bytes,
    },
    /// Client confirms a push.
    PushAck {
        /// The push's id.
        id: u32,
    },
    /// Client asks to join a group.
    JoinGroup {
        /// Correlation id.
        id: u32,
        /// Group id.
        group: Text,
        /// The last position the client saw in the group (`EPOCH` and `SEQ`): a rejoin
        /// that asks for the pushes published after it (recovery).
        since: Option<Position>,
    },
    /// Server confirms a join.
    JoinAck {
        /// The `JoinGroup`'s id.
        id: u32,
        /// Group id.
        group: Text,
        /// The group's last position when the join took effect (`EPOCH` and `SEQ`), for
        /// groups with history: live pushes follow it.
        position: Option<Position>,
        /// Answer to a `JoinGroup` with `since` (`RECOVERED`): `Some(true)` when the
        /// missed pushes follow this ack, `Some(false)` when they cannot be recovered.
        recovered: Option<bool>,
    },
    /// Client asks to leave a group.
    LeaveGroup {
        /// Correlation id.
        id: u32,
        /// Group id.
        group: Text,
    },
    /// Server confirms a leave.
    LeaveAck {
        /// The `LeaveGroup`'s id.
        id: u32,
        /// Group id.
        group: Text,
    },
    /// Server says the token has expired and the session closes unless the client sends a
    /// valid `TokenRefresh` before `deadline_ms`.
    TokenExpiring {
        /// Unix ms after which the session closes with `token_expired`.
        deadline_ms: u64,
    },
    /// Client presents a fresh token (at any time while logged in).
    TokenRefresh {
        /// Correlation id.
        id: u32,
        /// The new token.
        token: Bytes,
    },
    /// Server accepted the fresh token.
    TokenRefreshAck {
        /// The `TokenRefresh`'s id.
        id: u32,
        /// When the new token expires (Unix ms), if it does.
        expires_at_ms: Option<u64>,
    },
    /// Server ends the session on purpose (replaced, kicked, slow consumer).
    Kick {
        /// Why.
        code: Code,
        /// Optional human-readable detail.
        message: Text,
    },
    /// Server is draining: no new requests; reconnect after `retry_after_ms`.
    GoAway {
        /// Suggested reconnect delay in milliseconds.
        retry_after_ms: u32,
        /// Optional human-readable detail.
        message: Text,
    },
    /// The frame with this id failed; the session goes on.
    Error {
        /// The failed frame's id (0 when it had none).
        id: u32,
        /// Why.
        code: Code,
        /// Optional human-readable detail.
        message: Text,
    },
    /// The sender closes the connection after this frame.
    Close {
        /// Why.
        code: Code,
        /// Optional human-readable detail.
        message: Text,
    },
    /// Client reports connect and ping quality since its previous report. The payload
    /// is the report body of docs/PROTOCOL.md section 4.1 (see
    /// [`crate::protocol::QualityReport`]); the frame codec does not look into it.
    QualityReport {
        /// Correlation id; an `Error` for a refused body carries it.
        id: u32,
        /// The client's network type: 0 unknown, 1 wifi, 2 cellular, 3 wired
        /// ([`crate::protocol::MAX_NETWORK`] is the largest).
        network: u8,
        /// The report body.
        payload: Bytes,
    },
}

/// Where a validated field value sits in the frame buffer.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn slice(self, frame: &Bytes) -> Bytes {
        frame.slice(self.start as usize..self.end as usize)
    }
}

/// Field slots gathered from a fields section before a frame is built. Text and byte
/// fields are validated during the parse but kept as spans, so the slots stay small and
/// the frame takes one slice per field it uses.
#[derive(Default)]
struct Fields {
    seen: u32,
    app: Option<Span>,
    device: Option<Span>,
    token: Option<Span>,
    business: Option<u32>,
    meta: Option<Span>,
    group: Option<Span>,
    seq: Option<u64>,
    epoch: Option<u64>,
    code: Option<u16>,
    message: Option<Span>,
    retry_after_ms: Option<u32>,
    heartbeat_ms: Option<u32>,
    conn_id: Option<u64>,
    expires_at_ms: Option<u64>,
    recovered: Option<bool>,
    network: Option<u8>,
}

impl Fields {
    /// Parses and validates the fields section `frame[start..end]`.
    fn parse(frame: &[u8], start: usize, end: usize) -> Result<Fields, DecodeError> {
        let mut fields = Fields::default();
        let mut at = start;
        while at < end {
            if end - at < 3 {
                return Err(DecodeError::MalformedField {
                    tag: frame[at],
                    reason: "field header overruns the fields section",
                });
            }
            let tag = frame[at];
            let len = u16::from_be_bytes([frame[at + 1], frame[at + 2]]) as usize;
            let value_start = at + 3;
            if len > end - value_start {
                return Err(DecodeError::MalformedField {
                    tag,
                    reason: "field value overruns the fields section",
                });
            }
            at = value_start + len;
            let raw = &frame[value_start..at];
            // Frames are at most 16 MiB (MAX_FRAME_SIZE), so offsets fit in u32.
            let span = Span {
                start: value_start as u32,
                end: at as u32,
            };
            if (tag::APP..=tag::NETWORK).contains(&tag) {
                let bit = 1u32 << tag;
                if fields.seen & bit != 0 {
                    return Err(DecodeError::DuplicateField { tag });
                }
                fields.seen |= bit;
            }
            match tag {
                tag::APP => fields.app = Some(id_text(tag, raw, span)?),
                tag::DEVICE => fields.device = Some(id_text(tag, raw, span)?),
                tag::GROUP => fields.group = Some(id_text(tag, raw, span)?),
                tag::TOKEN => {
                    if raw.is_empty() || raw.len() > MAX_TOKEN_LEN {
                        return Err(DecodeError::MalformedField {
                            tag,
                            reason: "token must be 1..=2048 bytes",
                        });
                    }
                    fields.token = Some(span);
                }
                tag::MESSAGE => {
                    if raw.len() > MAX_MESSAGE_LEN {
                        return Err(DecodeError::MalformedField {
                            tag,
                            reason: "message longer than 1024 bytes",
                        });
                    }
                    fields.message = Some(text(tag, raw, span)?);
                }
                tag::META => {
                    Metadata::validate_wire(raw)?;
                    fields.meta = Some(span);
                }
                tag::BUSINESS => fields.business = Some(be_u32(tag, raw)?),
                tag::RETRY_AFTER_MS => fields.retry_after_ms = Some(be_u32(tag, raw)?),
                tag::HEARTBEAT_MS => fields.heartbeat_ms = Some(be_u32(tag, raw)?),
                tag::SEQ => fields.seq = Some(be_u64(tag, raw)?),
                tag::EPOCH => fields.epoch = Some(be_u64(tag, raw)?),
                tag::RECOVERED => {
                    fields.recovered = Some(match raw {
                        [0] => false,
                        [1] => true,
                        _ => {
                            return Err(DecodeError::MalformedField {
                                tag,
                                reason: "expected one byte, 0 or 1",
                            });
                        }
                    });
                }
                tag::CONN_ID => fields.conn_id = Some(be_u64(tag, raw)?),
                tag::EXPIRES_AT_MS => fields.expires_at_ms = Some(be_u64(tag, raw)?),
                tag::NETWORK => match raw {
                    [n] if *n <= MAX_NETWORK => fields.network = Some(*n),
                    [_] => {
                        return Err(DecodeError::MalformedField {
                            tag,
                            reason: "network must be 0..=3",
                        });
                    }
                    _ => {
                        return Err(DecodeError::MalformedField {
                            tag,
                            reason: "expected a 1-byte integer",
                        });
                    }
                },
                tag::CODE => {
                    let code =
                        <[u8; 2]>::try_from(raw).map_err(|_| DecodeError::MalformedField {
                            tag,
                            reason: "expected a 2-byte integer",
                        })?;
                    fields.code = Some(u16::from_be_bytes(code));
                }
                // Unknown tags are skipped so that version-1 peers can add fields.
                _ => {}
            }
        }
        Ok(fields)
    }
}

fn text(tag: u8, raw: &[u8], span: Span) -> Result<Span, DecodeError> {
    std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8 { tag })?;
    Ok(span)
}

fn id_text(tag: u8, raw: &[u8], span: Span) -> Result<Span, DecodeError> {
    if raw.is_empty() || raw.len() > MAX_ID_LEN {
        return Err(DecodeError::MalformedField {
            tag,
            reason: "id must be 1..=128 bytes",
        });
    }
    text(tag, raw, span)
}

fn be_u32(tag: u8, value: &[u8]) -> Result<u32, DecodeError> {
    <[u8; 4]>::try_from(value)
        .map(u32::from_be_bytes)
        .map_err(|_| DecodeError::MalformedField {
            tag,
            reason: "expected a 4-byte integer",
        })
}

fn be_u64(tag: u8, value: &[u8]) -> Result<u64, DecodeError> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| DecodeError::MalformedField {
            tag,
            reason: "expected an 8-byte integer",
        })
}

fn required<T>(value: Option<T>, frame: FrameType, tag: u8) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingField { frame, tag })
}

/// The fixed header, parsed and checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) frame_type: FrameType,
    pub(crate) flags: u8,
    pub(crate) fields_len: usize,
    pub(crate) payload_len: usize,
    pub(crate) id: u32,
}

impl Header {
    /// Parses and validates the header at the start of `buf` (at least [`HEADER_LEN`]
    /// bytes). Checks are ordered so the most basic failure is reported: magic, then
    /// version, then size, then type and reserved bits.
    #[inline]
    pub(crate) fn parse(buf: &[u8], max_frame_size: usize) -> Result<Header, DecodeError> {
        let magic = u16::from_be_bytes([buf[0], buf[1]]);
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        if buf[2] != VERSION {
            return Err(DecodeError::UnsupportedVersion { version: buf[2] });
        }
        let fields_len = u16::from_be_bytes([buf[6], buf[7]]) as usize;
        let payload_len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
        let total = (HEADER_LEN + fields_len) as u64 + payload_len as u64;
        if total > max_frame_size as u64 {
            return Err(DecodeError::FrameTooLarge {
                len: total,
                max: max_frame_size,
            });
        }
        let frame_type = FrameType::from_u8(buf[3])?;
        let (flags, reserved) = (buf[4], buf[5]);
        let allowed_flags = if frame_type == FrameType::Push {
            FLAG_ACK_REQUIRED
        } else {
            0
        };
        if flags & !allowed_flags != 0 || reserved != 0 {
            return Err(DecodeError::ReservedBits { flags, reserved });
        }
        if payload_len != 0 && !frame_type.has_payload() {
            return Err(DecodeError::MalformedField {
                tag: 0,
                reason: "this frame type carries no payload",
            });
        }
        Ok(Header {
            frame_type,
            flags,
            fields_len,
            payload_len,
            id: u32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]),
        })
    }

    #[inline]
    pub(crate) fn frame_len(&self) -> usize {
        HEADER_LEN + self.fields_len + self.payload_len
    }
}

impl Frame {
    /// Builds the frame from a checked header and the frame's complete bytes
    /// (`frame.len() == header.frame_len()`). Fields and payload stay slices of `frame`.
    pub(crate) fn from_parts(header: Header, frame: Bytes) -> Result<Frame, DecodeError> {
        let fields_end = HEADER_LEN + header.fields_len;
        let f = Fields::parse(&frame, HEADER_LEN, fields_end)?;
        let text = |span: Option<Span>| span.map(|s| Text::from_validated(s.slice(&frame)));
        let bytes = |span: Option<Span>| span.map(|s| s.slice(&frame));
        let (app, device, group, token) =
            (text(f.app), text(f.device), text(f.group), bytes(f.token));
        let meta = f
            .meta
            .map(|s| Metadata::from_validated_wire(s.slice(&frame)))
            .unwrap_or_default();
        let message = text(f.message).unwrap_or_default();
        // The frame's own handle becomes the payload: no extra reference count.
        let mut payload = frame;
        payload.advance(fields_end);
        let id = header.id;
        let ty = header.frame_type;
        let code = |c: Option<u16>| required(c, ty, tag::CODE).map(Code::from_u16);
        Ok(match ty {
            FrameType::Login => Frame::Login {
                id,
                app: required(app, ty, tag::APP)?,
                device: required(device, ty, tag::DEVICE)?,
                token: required(token, ty, tag::TOKEN)?,
                meta,
            },
            FrameType::LoginAck => Frame::LoginAck {
                id,
                conn_id: required(f.conn_id, ty, tag::CONN_ID)?,
                heartbeat_ms: required(f.heartbeat_ms, ty, tag::HEARTBEAT_MS)?,
                expires_at_ms: f.expires_at_ms,
            },
            FrameType::Ping => Frame::Ping { id, payload },
            FrameType::Pong => Frame::Pong { id, payload },
            FrameType::Request => Frame::Request {
                id,
                business: required(f.business, ty, tag::BUSINESS)?,
                meta,
                payload,
            },
            FrameType::Response => Frame::Response {
                id,
                business: required(f.business, ty, tag::BUSINESS)?,
                meta,
                payload,
            },
            FrameType::Push => Frame::Push {
                id,
                ack_required: header.flags & FLAG_ACK_REQUIRED != 0,
                business: required(f.business, ty, tag::BUSINESS)?,
                group,
                seq: f.seq,
                epoch: f.epoch,
                meta,
                payload,
            },
            FrameType::PushAck => Frame::PushAck { id },
            FrameType::JoinGroup => Frame::JoinGroup {
                id,
                group: required(group, ty, tag::GROUP)?,
                since: Position::from_fields(f.epoch, f.seq),
            },
            FrameType::JoinAck => Frame::JoinAck {
                id,
                group: required(group, ty, tag::GROUP)?,
                position: Position::from_fields(f.epoch, f.seq),
                recovered: f.recovered,
            },
            FrameType::LeaveGroup => Frame::LeaveGroup {
                id,
                group: required(group, ty, tag::GROUP)?,
            },
            FrameType::LeaveAck => Frame::LeaveAck {
                id,
                group: required(group, ty, tag::GROUP)?,
            },
            FrameType::TokenExpiring => Frame::TokenExpiring {
                deadline_ms: required(f.expires_at_ms, ty, tag::EXPIRES_AT_MS)?,
            },
            FrameType::TokenRefresh => Frame::TokenRefresh {
                id,
                token: required(token, ty, tag::TOKEN)?,
            },
            FrameType::TokenRefreshAck => Frame::TokenRefreshAck {
                id,
                expires_at_ms: f.expires_at_ms,
            },
            FrameType::Kick => Frame::Kick {
                code: code(f.code)?,
                message,
            },
            FrameType::GoAway => Frame::GoAway {
                retry_after_ms: required(f.retry_after_ms, ty, tag::RETRY_AFTER_MS)?,
                message,
            },
            FrameType::Error => Frame::Error {
                id,
                code: code(f.code)?,
                message,
            },
            FrameType::Close => Frame::Close {
                code: code(f.code)?,
                message,
            },
            FrameType::QualityReport => Frame::QualityReport {
                id,
                network: required(f.network, ty, tag::NETWORK)?,
                payload,
            },
        })
    }

    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Login { .. } => FrameType::Login,
            Frame::LoginAck { .. } => FrameType::LoginAck,
            Frame::Ping { .. } => FrameType::Ping,
            Frame::Pong { .. } => FrameType::Pong,
            Frame::Request { .. } => FrameType::Request,
            Frame::Response { .. } => FrameType::Response,
            Frame::Push { .. } => FrameType::Push,
            Frame::PushAck { .. } => FrameType::PushAck,
            Frame::JoinGroup { .. } => FrameType::JoinGroup,
            Frame::JoinAck { .. } => FrameType::JoinAck,
            Frame::LeaveGroup { .. } => FrameType::LeaveGroup,
            Frame::LeaveAck { .. } => FrameType::LeaveAck,
            Frame::TokenExpiring { .. } => FrameType::TokenExpiring,
            Frame::TokenRefresh { .. } => FrameType::TokenRefresh,
            Frame::TokenRefreshAck { .. } => FrameType::TokenRefreshAck,
            Frame::Kick { .. } => FrameType::Kick,
            Frame::GoAway { .. } => FrameType::GoAway,
            Frame::Error { .. } => FrameType::Error,
            Frame::Close { .. } => FrameType::Close,
            Frame::QualityReport { .. } => FrameType::QualityReport,
        }
    }

    /// The correlation id written in the header (0 for types without one).
    pub fn id(&self) -> u32 {
        match self {
            Frame::Login { id, .. }
            | Frame::LoginAck { id, .. }
            | Frame::Ping { id, .. }
            | Frame::Pong { id, .. }
            | Frame::Request { id, .. }
            | Frame::Response { id, .. }
            | Frame::Push { id, .. }
            | Frame::PushAck { id }
            | Frame::JoinGroup { id, .. }
            | Frame::JoinAck { id, .. }
            | Frame::LeaveGroup { id, .. }
            | Frame::LeaveAck { id, .. }
            | Frame::TokenRefresh { id, .. }
            | Frame::TokenRefreshAck { id, .. }
            | Frame::Error { id, .. }
            | Frame::QualityReport { id, .. } => *id,
            Frame::TokenExpiring { .. }
            | Frame::Kick { .. }
            | Frame::GoAway { .. }
            | Frame::Close { .. } => 0,
        }
    }

    /// Calls `f(tag, value)` for each field in ascending tag order (the canonical order).
    fn for_each_field(&self, mut f: impl FnMut(u8, FieldValue<'_>)) {
        use FieldValue::*;
        let message = |f: &mut dyn FnMut(u8, FieldValue<'_>), m: &Text| {
            if !m.is_empty() {
                f(tag::MESSAGE, Raw(m.as_bytes()));
            }
        };
        let meta = |f: &mut dyn FnMut(u8, FieldValue<'_>), m: &Metadata| {
            if !m.is_empty() {
                f(tag::META, Raw(m.as_wire()));
            }
        };
        match self {
            Frame::Login {
                app,
                device,
                token,
                meta: m,
                ..
            } => {
                f(tag::APP, Raw(app.as_bytes()));
                f(tag::DEVICE, Raw(device.as_bytes()));
                f(tag::TOKEN, Raw(token));
                meta(&mut f, m);
            }
            Frame::LoginAck {
                conn_id,
                heartbeat_ms,
                expires_at_ms,
                ..
            } => {
                f(tag::HEARTBEAT_MS, U32(*heartbeat_ms));
                f(tag::CONN_ID, U64(*conn_id));
                if let Some(at) = expires_at_ms {
                    f(tag::EXPIRES_AT_MS, U64(*at));
                }
            }
            Frame::Ping { .. } | Frame::Pong { .. } | Frame::PushAck { .. } => {}
            Frame::Request {
                business, meta: m, ..
            }
            | Frame::Response {
                business, meta: m, ..
            } => {
                f(tag::BUSINESS, U32(*business));
                meta(&mut f, m);
            }
            Frame::Push {
                business,
                group,
                seq,
                epoch,
                meta: m,
                ..
            } => {
                f(tag::BUSINESS, U32(*business));
                meta(&mut f, m);
                if let Some(g) = group {
                    f(tag::GROUP, Raw(g.as_bytes()));
                }
                if let Some(s) = seq {
                    f(tag::SEQ, U64(*s));
                }
                if let Some(e) = epoch {
                    f(tag::EPOCH, U64(*e));
                }
            }
            Frame::JoinGroup { group, since, .. } => {
                f(tag::GROUP, Raw(group.as_bytes()));
                if let Some(p) = since {
                    f(tag::SEQ, U64(p.seq));
                    f(tag::EPOCH, U64(p.epoch));
                }
            }
            Frame::JoinAck {
                group,
                position,
                recovered,
                ..
            } => {
                f(tag::GROUP, Raw(group.as_bytes()));
                if let Some(p) = position {
                    f(tag::SEQ, U64(p.seq));
                    f(tag::EPOCH, U64(p.epoch));
                }
                if let Some(r) = recovered {
                    f(tag::RECOVERED, U8(u8::from(*r)));
                }
            }
            Frame::LeaveGroup { group, .. } | Frame::LeaveAck { group, .. } => {
                f(tag::GROUP, Raw(group.as_bytes()))
            }
            Frame::TokenExpiring { deadline_ms } => f(tag::EXPIRES_AT_MS, U64(*deadline_ms)),
            Frame::TokenRefresh { token, .. } => f(tag::TOKEN, Raw(token)),
            Frame::TokenRefreshAck { expires_at_ms, .. } => {
                if let Some(at) = expires_at_ms {
                    f(tag::EXPIRES_AT_MS, U64(*at));
                }
            }
            Frame::Kick { code, message: m }
            | Frame::Error {
                code, message: m, ..
            }
            | Frame::Close { code, message: m } => {
                f(tag::CODE, U16(code.as_u16()));
                message(&mut f, m);
            }
            Frame::GoAway {
                retry_after_ms,
                message: m,
            } => {
                message(&mut f, m);
                f(tag::RETRY_AFTER_MS, U32(*retry_after_ms));
            }
            Frame::QualityReport { network, .. } => f(tag::NETWORK, U8(*network)),
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Frame::Ping { payload, .. }
            | Frame::Pong { payload, .. }
            | Frame::Request { payload, .. }
            | Frame::Response { payload, .. }
            | Frame::Push { payload, .. }
            | Frame::QualityReport { payload, .. } => payload,
            _ => &[],
        }
    }

    fn flags(&self) -> u8 {
        match self {
            Frame::Push {
                ack_required: true, ..
            } => FLAG_ACK_REQUIRED,
            _ => 0,
        }
    }

    /// Length of the fields section, or an error if a field value breaks its documented
    /// length limit (so that we never send what a conforming decoder must reject).
    fn fields_len(&self) -> Result<usize, EncodeError> {
        let mut len = 0usize;
        let mut invalid = None;
        self.for_each_field(|tag, value| {
            let n = value.len();
            let bad = match tag {
                tag::APP | tag::DEVICE | tag::GROUP => !(1..=MAX_ID_LEN).contains(&n),
                tag::TOKEN => !(1..=MAX_TOKEN_LEN).contains(&n),
                tag::MESSAGE => n > MAX_MESSAGE_LEN,
                tag::NETWORK => !matches!(value, FieldValue::U8(v) if v <= MAX_NETWORK),
                _ => n > u16::MAX as usize,
            };
            if bad && invalid.is_none() {
                invalid = Some(tag);
            }
            len += 3 + n;
        });
        if let Some(tag) = invalid {
            return Err(EncodeError::InvalidValue {
                what: field_name(tag),
                reason: "length outside the documented limit",
            });
        }
        if len > u16::MAX as usize {
            return Err(EncodeError::InvalidValue {
                what: "fields",
                reason: "the fields section exceeds 65535 bytes",
            });
        }
        Ok(len)
    }

    /// The encoded length in bytes.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(HEADER_LEN + self.fields_len()? + self.payload().len())
    }

    /// Appends the encoded frame to `dst`. Fails if the frame is larger than
    /// `max_frame_size` or a field exceeds its wire width; `dst` is unchanged then.
    pub fn encode(&self, dst: &mut BytesMut, max_frame_size: usize) -> Result<(), EncodeError> {
        let fields_len = self.fields_len()?;
        let payload = self.payload();
        let total = (HEADER_LEN + fields_len) as u64 + payload.len() as u64;
        if total > max_frame_size as u64 || payload.len() > u32::MAX as usize {
            return Err(EncodeError::FrameTooLarge {
                len: total,
                max: max_frame_size,
            });
        }
        dst.reserve(total as usize);
        dst.put_u16(MAGIC);
        dst.put_u8(VERSION);
        dst.put_u8(self.frame_type() as u8);
        dst.put_u8(self.flags());
        dst.put_u8(0);
        dst.put_u16(fields_len as u16);
        dst.put_u32(payload.len() as u32);
        dst.put_u32(self.id());
        self.for_each_field(|tag, value| {
            dst.put_u8(tag);
            dst.put_u16(value.len() as u16);
            value.put(dst);
        });
        dst.put_slice(payload);
        Ok(())
    }

    /// Encodes the frame into one shared buffer: clone the result (a refcount bump) to send
    /// the same frame to many connections.
    pub fn to_bytes(&self, max_frame_size: usize) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode(&mut buf, max_frame_size)?;
        Ok(buf.freeze())
    }
}

fn field_name(t: u8) -> &'static str {
    match t {
        tag::APP => "app id",
        tag::DEVICE => "device id",
        tag::GROUP => "group id",
        tag::TOKEN => "token",
        tag::MESSAGE => "message",
        tag::META => "metadata",
        tag::NETWORK => "network (0..=3)",
        _ => "field",
    }
}

/// A field value on its way out.
enum FieldValue<'a> {
    Raw(&'a [u8]),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
}

impl FieldValue<'_> {
    fn len(&self) -> usize {
        match self {
            FieldValue::Raw(b) => b.len(),
            FieldValue::U8(_) => 1,
            FieldValue::U16(_) => 2,
            FieldValue::U32(_) => 4,
            FieldValue::U64(_) => 8,
        }
    }

    fn put(&self, dst: &mut BytesMut) {
        match self {
            FieldValue::Raw(b) => dst.put_slice(b),
            FieldValue::U8(v) => dst.put_u8(*v),
            FieldValue::U16(v) => dst.put_u16(*v),
            FieldValue::U32(v) => dst.put_u32(*v),
            FieldValue::U64(v) => dst.put_u64(*v),
        }
    }
}

/// A position in a group's log: `(EPOCH, SEQ)` (docs/PROTOCOL.md, "Recovery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    /// The log's epoch; `seq` values compare only within one epoch.
    pub epoch: u64,
    /// The offset in the epoch (0: before the first push).
    pub seq: u64,
}

impl Position {
    /// Both fields or no position: a lone `EPOCH` or `SEQ` is ignored.
    fn from_fields(epoch: Option<u64>, seq: Option<u64>) -> Option<Position> {
        Some(Position {
            epoch: epoch?,
            seq: seq?,
        })
    }
}

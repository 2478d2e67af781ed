//! Errors, one type per thing that can fail.
//!
//! longconn-core is several small layers (a codec, a token scheme, config builders, the
//! `Connection` trait), and a caller of one of them can only meet that layer's failures.
//! So each API returns its own enum instead of one crate-wide one: a decode handler
//! matches [`DecodeError`] and nothing else.
//!
//! | error | returned by |
//! |---|---|
//! | [`DecodeError`] | [`crate::FrameCodec`] decode, [`crate::protocol::decode_message`], [`crate::Frame::from_parts`] |
//! | [`EncodeError`] | encoders and field constructors whose value does not fit the protocol |
//! | [`TokenError`] | [`crate::TokenKeys::verify`], [`crate::TokenKey::new`] |
//! | [`ConfigError`] | every `*ConfigBuilder::build` |
//! | [`ConnectionError`] | the [`crate::Connection`] halves and listener handshakes: a decode, encode or I/O failure |

use crate::protocol::{Code, FrameType};

/// A byte sequence that is not a valid frame.
///
/// "Need more bytes" is never an error: the codec returns `Ok(None)` for that. Every
/// decode error is fatal for the connection it came from, and [`DecodeError::wire_code`]
/// names the code the receiver sends in its `Close` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first two bytes were not the magic `4C 43` ("LC").
    #[error("bad magic 0x{found:04x}, expected 0x4c43")]
    BadMagic {
        /// The two bytes found, big-endian.
        found: u16,
    },
    /// The frame's protocol version is not one this build speaks.
    #[error("unsupported protocol version {version}")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// The header announces a frame larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Total frame length announced (header + fields + payload).
        len: u64,
        /// The configured maximum frame size.
        max: usize,
    },
    /// The frame type byte is not in the registry.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A reserved header bit or byte is not zero, or a flag is set on a frame type that
    /// does not define it.
    #[error("reserved header bits set: flags 0x{flags:02x}, reserved 0x{reserved:02x}")]
    ReservedBits {
        /// The flags byte.
        flags: u8,
        /// The reserved byte.
        reserved: u8,
    },
    /// A field's value is not valid for its tag (wrong width, out-of-range length, bad
    /// metadata entry, or a length that runs past the fields section).
    #[error("malformed field 0x{tag:02x}: {reason}")]
    MalformedField {
        /// The field's tag.
        tag: u8,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A text field is not valid UTF-8.
    #[error("field 0x{tag:02x} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field's tag.
        tag: u8,
    },
    /// The same tag appears twice in one frame.
    #[error("field 0x{tag:02x} appears more than once")]
    DuplicateField {
        /// The repeated tag.
        tag: u8,
    },
    /// A field that the frame type requires is absent.
    #[error("{frame:?} frame lacks required field 0x{tag:02x}")]
    MissingField {
        /// The frame type.
        frame: FrameType,
        /// The missing field's tag.
        tag: u8,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// How many bytes of the unfinished frame were buffered.
        buffered: usize,
    },
    /// The transport delivered a message that cannot carry a frame, such as a WebSocket
    /// text message.
    #[error("unsupported message: {what}")]
    UnsupportedMessage {
        /// What was received.
        what: &'static str,
    },
}

impl DecodeError {
    /// The wire code a receiver sends (in a `Close` frame) when this error ends a
    /// connection.
    pub fn wire_code(&self) -> Code {
        match self {
            DecodeError::BadMagic { .. } => Code::BadMagic,
            DecodeError::UnsupportedVersion { .. } => Code::UnsupportedVersion,
            DecodeError::FrameTooLarge { .. } => Code::FrameTooLarge,
            DecodeError::UnknownFrameType(_)
            | DecodeError::ReservedBits { .. }
            | DecodeError::MalformedField { .. }
            | DecodeError::InvalidUtf8 { .. }
            | DecodeError::DuplicateField { .. }
            | DecodeError::MissingField { .. }
            | DecodeError::Truncated { .. } => Code::MalformedFrame,
            DecodeError::UnsupportedMessage { .. } => Code::UnsupportedMessage,
        }
    }
}

/// A value that does not fit the protocol: a frame larger than the maximum, or a field
/// value out of its documented range. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Encoded length.
        len: u64,
        /// The configured maximum frame size.
        max: usize,
    },
    /// A field value is out of range.
    #[error("invalid value for {what}: {reason}")]
    InvalidValue {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// A login token that does not verify, or a token key that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is malformed, signed by an unknown key, or its signature is wrong.
    #[error("invalid token: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token was valid but has expired.
    #[error("token expired at {expires_unix_s} (Unix seconds)")]
    Expired {
        /// When it expired, Unix seconds.
        expires_unix_s: u64,
    },
    /// A key id or secret is not acceptable.
    #[error("invalid token key: {reason}")]
    BadKey {
        /// Why.
        reason: &'static str,
    },
    /// A bucket name to mint with is empty or too long.
    #[error("token bucket of {len} bytes, expected 1..={max}")]
    BadBucket {
        /// Its length in bytes.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
}

impl TokenError {
    /// The wire code a login refused for this reason is closed with.
    pub fn wire_code(&self) -> Code {
        match self {
            TokenError::Invalid { .. }
            | TokenError::BadKey { .. }
            | TokenError::BadBucket { .. } => Code::InvalidToken,
            TokenError::Expired { .. } => Code::ExpiredToken,
        }
    }
}

/// A configuration value outside its documented range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config `{field}`: {reason}")]
pub struct ConfigError {
    /// The config field.
    pub field: &'static str,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// What ends an established connection's read or write: a frame that does not decode, a
/// frame that cannot be encoded, or the transport's I/O failing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer sent bytes that are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame handed to the writer cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The transport failed (reset, broken pipe, TLS or WebSocket protocol error).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl ConnectionError {
    /// The wire code to close with when this error ends a connection.
    pub fn wire_code(&self) -> Code {
        match self {
            ConnectionError::Decode(e) => e.wire_code(),
            ConnectionError::Encode(_) | ConnectionError::Io(_) => Code::Internal,
        }
    }

    /// The decode error inside, if this is one.
    pub fn as_decode(&self) -> Option<&DecodeError> {
        match self {
            ConnectionError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

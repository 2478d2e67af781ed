//! The crate's one error type.

use crate::protocol::{Code, FrameType};

/// Everything that can go wrong in `longconn-core`.
///
/// Decoding never reports "need more bytes" as an error: the codec returns `Ok(None)` for
/// that. Every decode error is fatal for the connection it came from, and
/// [`Error::wire_code`] names the code the receiver sends in its `Close` frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// A value given to an encoder or constructor does not fit the protocol's limits.
    #[error("invalid value for {what}: {reason}")]
    InvalidValue {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A login token is malformed, signed by an unknown key, or its signature is wrong.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A login token was valid but has expired.
    #[error("token expired at {expires_unix_s} (Unix seconds)")]
    ExpiredToken {
        /// When it expired, Unix seconds.
        expires_unix_s: u64,
    },
    /// A configuration value is out of its documented range.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig {
        /// The config field.
        field: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An I/O error from the stream a codec reads or writes.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The route store failed during a batched push.
    #[error(transparent)]
    RouteStore(#[from] crate::runtime::RouteStoreError),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The wire code a receiver sends (in a `Close` frame) when this error ends a
    /// connection.
    pub fn wire_code(&self) -> Code {
        match self {
            Error::BadMagic { .. } => Code::BadMagic,
            Error::UnsupportedVersion { .. } => Code::UnsupportedVersion,
            Error::FrameTooLarge { .. } => Code::FrameTooLarge,
            Error::UnknownFrameType(_)
            | Error::ReservedBits { .. }
            | Error::MalformedField { .. }
            | Error::InvalidUtf8 { .. }
            | Error::DuplicateField { .. }
            | Error::MissingField { .. }
            | Error::Truncated { .. }
            | Error::InvalidValue { .. } => Code::MalformedFrame,
            Error::UnsupportedMessage { .. } => Code::UnsupportedMessage,
            Error::InvalidToken { .. } => Code::InvalidToken,
            Error::ExpiredToken { .. } => Code::ExpiredToken,
            Error::InvalidConfig { .. } | Error::Io(_) | Error::RouteStore(_) => Code::Internal,
        }
    }
}

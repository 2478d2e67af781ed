//! The registry of wire codes carried by `Error`, `Kick` and `Close` frames.
//!
//! One code space serves all three frame types so that a client needs one table. The
//! numbering groups codes by who caused them; docs/PROTOCOL.md ("Codes") is the normative
//! list and this enum must match it.

use std::fmt;

/// A documented wire code (the `CODE` field, `u16` big-endian).
///
/// Unknown values received from a peer are kept as [`Code::Other`] so that a newer peer
/// never makes an older one fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 0: orderly close requested by the application of either side.
    Normal,
    /// 1: the server is shutting down or draining; reconnect later (see `GoAway`).
    GoingAway,
    /// 2: a newer login of the same (app, device) replaced this session.
    Replaced,
    /// 3: kicked by an operator or a backend.
    Kicked,
    /// 4: no successful login before the login deadline.
    LoginTimeout,
    /// 5: nothing received for longer than the idle timeout (missed heartbeats).
    IdleTimeout,
    /// 6: the token expired and no valid `TokenRefresh` arrived within the grace period.
    TokenExpired,
    /// 7: the connection's outbound queue overflowed under the disconnect policy.
    SlowConsumer,
    /// The gateway takes no more connections right now (over its accept rate); the
    /// `Close` message is `retry_after_ms=<N>`: reconnect after that many milliseconds.
    TryLater,
    /// The source address holds as many connections as it may.
    SourceLimit,
    /// 100: the frame did not start with the magic bytes `4C 43`.
    BadMagic,
    /// 101: the frame's protocol version is not supported.
    UnsupportedVersion,
    /// 102: the frame is larger than the receiver's maximum frame size.
    FrameTooLarge,
    /// 103: the frame is structurally invalid (unknown type, reserved bits, bad field).
    MalformedFrame,
    /// 104: a valid frame that is not allowed in the session's state or from this side.
    UnexpectedFrame,
    /// 105: a transport message that cannot carry a frame, such as a WebSocket text
    /// message.
    UnsupportedMessage,
    /// 200: the login or refresh token failed verification.
    InvalidToken,
    /// 201: the token is well formed but expired.
    ExpiredToken,
    /// 202: the token is valid but not for this app or device.
    Forbidden,
    /// More login attempts for this device in a minute than the gateway allows; the
    /// login is refused with `Close`, the client retries with backoff.
    LoginRateLimited,
    /// 300: no backend serves the request's business id.
    UnknownBusiness,
    /// 301: the backend did not answer in time.
    BackendTimeout,
    /// 302: the backend failed.
    BackendError,
    /// 303: the backend or this connection has too many requests in flight.
    Busy,
    /// 304: the server is draining and takes no new requests.
    Draining,
    /// 310: the connection is in as many groups as it may be.
    GroupLimit,
    /// 311: the group has as many members as it may have.
    GroupFull,
    /// 312: the connection may not join this group.
    GroupForbidden,
    /// 320: a `QualityReport` body breaks docs/PROTOCOL.md section 4.1 (the session
    /// stays open).
    MalformedReport,
    /// More upstream requests per second than the connection may send
    /// (`SessionConfig::max_requests_per_second`); the request is refused, the
    /// connection goes on.
    RateLimited,
    /// A `Login` whose metadata is larger than `SessionConfig::max_login_meta_size`; the
    /// login is refused with `Close`.
    MetadataTooLarge,
    /// 500: an internal server error.
    Internal,
    /// Any other value, kept verbatim.
    Other(u16),
}

impl Code {
    /// The code's numeric wire value.
    pub const fn as_u16(self) -> u16 {
        match self {
            Code::Normal => 0,
            Code::GoingAway => 1,
            Code::Replaced => 2,
            Code::Kicked => 3,
            Code::LoginTimeout => 4,
            Code::IdleTimeout => 5,
            Code::TokenExpired => 6,
            Code::SlowConsumer => 7,
            Code::TryLater => 8,
            Code::SourceLimit => 9,
            Code::BadMagic => 100,
            Code::UnsupportedVersion => 101,
            Code::FrameTooLarge => 102,
            Code::MalformedFrame => 103,
            Code::UnexpectedFrame => 104,
            Code::UnsupportedMessage => 105,
            Code::InvalidToken => 200,
            Code::ExpiredToken => 201,
            Code::Forbidden => 202,
            Code::LoginRateLimited => 203,
            Code::UnknownBusiness => 300,
            Code::BackendTimeout => 301,
            Code::BackendError => 302,
            Code::Busy => 303,
            Code::Draining => 304,
            Code::GroupLimit => 310,
            Code::GroupFull => 311,
            Code::GroupForbidden => 312,
            Code::MalformedReport => 320,
            Code::RateLimited => 330,
            Code::MetadataTooLarge => 331,
            Code::Internal => 500,
            Code::Other(v) => v,
        }
    }

    /// The code for a wire value; values outside the registry become [`Code::Other`].
    pub const fn from_u16(value: u16) -> Code {
        match value {
            0 => Code::Normal,
            1 => Code::GoingAway,
            2 => Code::Replaced,
            3 => Code::Kicked,
            4 => Code::LoginTimeout,
            5 => Code::IdleTimeout,
            6 => Code::TokenExpired,
            7 => Code::SlowConsumer,
            8 => Code::TryLater,
            9 => Code::SourceLimit,
            100 => Code::BadMagic,
            101 => Code::UnsupportedVersion,
            102 => Code::FrameTooLarge,
            103 => Code::MalformedFrame,
            104 => Code::UnexpectedFrame,
            105 => Code::UnsupportedMessage,
            200 => Code::InvalidToken,
            201 => Code::ExpiredToken,
            202 => Code::Forbidden,
            203 => Code::LoginRateLimited,
            300 => Code::UnknownBusiness,
            301 => Code::BackendTimeout,
            302 => Code::BackendError,
            303 => Code::Busy,
            304 => Code::Draining,
            310 => Code::GroupLimit,
            311 => Code::GroupFull,
            312 => Code::GroupForbidden,
            320 => Code::MalformedReport,
            330 => Code::RateLimited,
            331 => Code::MetadataTooLarge,
            500 => Code::Internal,
            other => Code::Other(other),
        }
    }

    /// The stable snake_case name used in docs, logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Code::Normal => "normal",
            Code::GoingAway => "going_away",
            Code::Replaced => "replaced",
            Code::Kicked => "kicked",
            Code::LoginTimeout => "login_timeout",
            Code::IdleTimeout => "idle_timeout",
            Code::TokenExpired => "token_expired",
            Code::SlowConsumer => "slow_consumer",
            Code::TryLater => "try_later",
            Code::SourceLimit => "source_limit",
            Code::BadMagic => "bad_magic",
            Code::UnsupportedVersion => "unsupported_version",
            Code::FrameTooLarge => "frame_too_large",
            Code::MalformedFrame => "malformed_frame",
            Code::UnexpectedFrame => "unexpected_frame",
            Code::UnsupportedMessage => "unsupported_message",
            Code::InvalidToken => "invalid_token",
            Code::ExpiredToken => "expired_token",
            Code::Forbidden => "forbidden",
            Code::LoginRateLimited => "login_rate_limited",
            Code::UnknownBusiness => "unknown_business",
            Code::BackendTimeout => "backend_timeout",
            Code::BackendError => "backend_error",
            Code::Busy => "busy",
            Code::Draining => "draining",
            Code::GroupLimit => "group_limit",
            Code::GroupFull => "group_full",
            Code::GroupForbidden => "group_forbidden",
            Code::MalformedReport => "malformed_report",
            Code::RateLimited => "rate_limited",
            Code::MetadataTooLarge => "metadata_too_large",
            Code::Internal => "internal",
            Code::Other(_) => "other",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn every_registered_code_round_trips_and_others_are_kept() {
        for value in 0..=u16::MAX {
            let code = Code::from_u16(value);
            assert_eq!(code.as_u16(), value);
            if !matches!(code, Code::Other(_)) {
                assert_ne!(code.name(), "other");
            }
        }
        assert_eq!(Code::from_u16(9999), Code::Other(9999));
    }
}

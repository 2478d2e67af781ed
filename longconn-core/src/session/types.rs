//! The values that cross the session's boundary: states, events out, commands in,
//! frames to transmit and close reasons.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{Code, Frame, Metadata, Position, QualityReport, Text};

/// The session's state (docs/PROTOCOL.md, "Session states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Connected; waiting for `Login` until the login deadline.
    AwaitingLogin,
    /// `Login` received; the application is checking the token.
    Authenticating,
    /// Logged in: requests, pushes and heartbeats flow.
    Active,
    /// `GoAway` sent: no new requests; queued output is flushed until the drain deadline.
    Draining,
    /// Finished; see [`super::Session::close_reason`].
    Closed,
}

/// Why a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// This side closed and told the peer so with `code` (in a `Close` or `Kick` frame).
    Local(Code),
    /// The peer sent `Close` with `code`.
    Peer(Code),
    /// The stream ended without a `Close` frame.
    TransportEnded,
    /// The transport failed (I/O error, reset).
    TransportFailed,
}

impl CloseReason {
    /// The wire code that best describes the close (`normal` for a bare end of stream,
    /// `internal` for a transport failure).
    pub fn code(self) -> Code {
        match self {
            CloseReason::Local(code) | CloseReason::Peer(code) => code,
            CloseReason::TransportEnded => Code::Normal,
            CloseReason::TransportFailed => Code::Internal,
        }
    }
}

/// How the transport ended, for [`super::Session::handle_transport_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportEnd {
    /// Clean end of stream.
    Eof,
    /// An I/O error.
    Failed,
}

/// A token's expiry, on the session's clock and as Unix time for the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry {
    /// When the token expires, on the clock the session's `now` values come from.
    pub at: Instant,
    /// The same moment as Unix milliseconds (sent in `LoginAck` and `TokenRefreshAck`).
    pub unix_ms: u64,
}

/// What the application must act on. Drain with [`super::Session::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Check this login; answer with [`Command::AuthAccepted`] or
    /// [`Command::AuthRejected`].
    Authenticate {
        /// App id from `Login`.
        app: Text,
        /// Device id from `Login`.
        device: Text,
        /// The token to verify.
        token: Bytes,
        /// Client metadata from `Login`.
        meta: Metadata,
    },
    /// The login completed and `LoginAck` is queued. The identity is the one from the
    /// preceding [`Event::Authenticate`].
    LoggedIn {
        /// The connection id sent in `LoginAck`.
        conn_id: u64,
    },
    /// Route this request; answer with [`Command::Respond`] or [`Command::RequestFailed`].
    Request {
        /// Request id.
        id: u32,
        /// Business id.
        business: u32,
        /// Request metadata.
        meta: Metadata,
        /// Opaque payload.
        payload: Bytes,
    },
    /// The client acknowledged the push with this id.
    PushAcked {
        /// Push id.
        id: u32,
    },
    /// The client asks to join a group; answer with [`Command::GroupJoined`] or
    /// [`Command::GroupRejected`].
    JoinGroup {
        /// Correlation id.
        id: u32,
        /// Group id.
        group: Text,
        /// The last position the client saw: it asks for the pushes after it.
        since: Option<Position>,
    },
    /// The client asks to leave a group; answer with [`Command::GroupLeft`] or
    /// [`Command::GroupRejected`].
    LeaveGroup {
        /// Correlation id.
        id: u32,
        /// Group id.
        group: Text,
    },
    /// Check this fresh token; answer with [`Command::RefreshAccepted`] or
    /// [`Command::RefreshRejected`].
    RefreshToken {
        /// Correlation id.
        id: u32,
        /// The new token.
        token: Bytes,
    },
    /// The client reported an error for one of our frames (a push it could not take).
    PeerError {
        /// The id of our frame.
        id: u32,
        /// The client's code.
        code: Code,
        /// The client's message.
        message: Text,
    },
    /// The client sent a valid quality report (docs/PROTOCOL.md section 4.1). Nothing
    /// to answer; aggregate it or drop it.
    QualityReport {
        /// The client's network type: 0 unknown, 1 wifi, 2 cellular, 3 wired.
        network: u8,
        /// The decoded report body.
        report: QualityReport,
    },
    /// The session closed. Emitted exactly once, last.
    Closed(CloseReason),
}

/// Input from the application. Apply with [`super::Session::handle_command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The login token is valid: send `LoginAck` and become active.
    AuthAccepted {
        /// This connection's node-unique id, sent in `LoginAck`.
        conn_id: u64,
        /// When the token expires, if it does.
        expiry: Option<TokenExpiry>,
    },
    /// The login token is not acceptable; close with `code` (`invalid_token`,
    /// `expired_token` or `forbidden`).
    AuthRejected {
        /// The close code.
        code: Code,
    },
    /// A refresh token is valid: send `TokenRefreshAck` and move the expiry.
    RefreshAccepted {
        /// The `TokenRefresh`'s id.
        id: u32,
        /// The new expiry.
        expiry: Option<TokenExpiry>,
    },
    /// A refresh token is not acceptable: send `Error { id, code }`; the grace period runs
    /// on.
    RefreshRejected {
        /// The `TokenRefresh`'s id.
        id: u32,
        /// Why.
        code: Code,
    },
    /// A backend answered a request.
    Respond {
        /// Request id.
        id: u32,
        /// Business id.
        business: u32,
        /// Response metadata.
        meta: Metadata,
        /// Response payload.
        payload: Bytes,
    },
    /// A request failed: send `Error { id, code, message }`.
    RequestFailed {
        /// Request id.
        id: u32,
        /// Why (`unknown_business`, `backend_timeout`, ...).
        code: Code,
        /// Detail for the client.
        message: Text,
    },
    /// The join succeeded: send `JoinAck`.
    GroupJoined {
        /// The `JoinGroup`'s id.
        id: u32,
        /// Group id.
        group: Text,
        /// The group's last position at the join (groups with history).
        position: Option<Position>,
        /// Answer to a join with `since`: whether the missed pushes follow.
        recovered: Option<bool>,
    },
    /// The leave succeeded: send `LeaveAck`.
    GroupLeft {
        /// The `LeaveGroup`'s id.
        id: u32,
        /// Group id.
        group: Text,
    },
    /// A join or leave failed: send `Error { id, code }`.
    GroupRejected {
        /// The request's id.
        id: u32,
        /// Why (`group_limit`, `group_full`, `group_forbidden`).
        code: Code,
    },
    /// End the session on purpose: send `Kick { code, message }` and close.
    Kick {
        /// Why (`replaced`, `kicked`, ...).
        code: Code,
        /// Detail for the client.
        message: Text,
    },
    /// Start draining: send `GoAway` and refuse new requests until the drain deadline.
    BeginDrain {
        /// Reconnect hint sent in `GoAway`.
        retry_after: Duration,
    },
    /// Close now: send `Close { code }`.
    Close {
        /// Why.
        code: Code,
    },
}

/// An outgoing frame, either to be encoded or already encoded (shared between many
/// connections by a fan-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Encode this frame.
    Frame(Frame),
    /// Send these bytes as they are: one complete encoded frame.
    Encoded(Bytes),
}

/// What became of a push handed to [`super::Session::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for transmission.
    Queued,
    /// The queue was full and the policy is drop-newest: the push was discarded.
    Dropped,
    /// The queue was full and the policy is disconnect: the session is closing with
    /// `slow_consumer`.
    Disconnected,
    /// The session is not logged in (or already closed): the push was discarded.
    NotActive,
}

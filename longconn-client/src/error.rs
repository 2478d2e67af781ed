//! The SDK's one error type.

use longconn_core::Code;
use longconn_transport::ConnectFailure;

/// What went wrong, in a form callers can match on.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint URL is not one the SDK understands.
    #[error("bad endpoint `{url}`: {reason}")]
    BadEndpoint {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// No answer within the call's timeout.
    #[error("timed out")]
    Timeout,
    /// The gateway refused the login (`invalid_token`, `expired_token`, `forbidden`).
    #[error("login refused: {0:?}")]
    AuthRejected(Code),
    /// The gateway answered the call with an `Error` frame.
    #[error("request failed: {code:?} {message}")]
    Failed {
        /// The wire code.
        code: Code,
        /// The gateway's detail.
        message: String,
    },
    /// The session is not connected (reconnecting, or stopped for good).
    #[error("not connected")]
    NotConnected,
    /// The client stopped for good: closed by the application, kicked, or out of
    /// reconnect attempts.
    #[error("closed: {0}")]
    Closed(String),
    /// The control layer could not be reached, refused the request, or answered
    /// nothing usable.
    #[error("control layer: {0}")]
    Control(String),
    /// The gateway or the network broke the protocol (a frame that could not be decoded,
    /// a transport error).
    #[error("protocol or transport error: {0}")]
    Transport(String),
    /// No connection attempt has succeeded: `last` says why the last one failed
    /// (refused port, TLS failure, WebSocket path answered 404, ...). Returned by
    /// [`crate::Client::wait_connected`] when its timeout passes after failed attempts
    /// (the client goes on retrying), and as the stop error when the client stopped for
    /// good on a permanent failure ([`ConnectFailure::is_permanent`]) or ran out of
    /// attempts.
    #[error("gateway unreachable after {attempts} failed attempts: {last}")]
    Unreachable {
        /// The last attempt's failure.
        last: ConnectFailure,
        /// Failed attempts in a row (since the last successful login).
        attempts: u32,
    },
}

//! The SDK's one error type.

use longconn_core::Code;

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
}

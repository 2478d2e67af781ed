//! The crate's one error type.

/// Everything that can go wrong setting up `longconn-http`'s parts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A callback URL could not be parsed or uses an unsupported scheme.
    #[error("invalid callback url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    /// The TLS trust for `https://` callbacks could not be set up (an unreadable
    /// `ca_file`, no root certificates at all).
    #[error("callback tls: {0}")]
    Tls(String),
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

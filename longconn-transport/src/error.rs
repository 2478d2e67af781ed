//! The crate's one error type.

/// Everything that can go wrong while setting a transport up (binding, loading
/// certificates, connecting). Errors of an established connection are
/// [`longconn_core::ConnectionError`]s, as the `Connection` trait requires.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`crate::TransportConfig`] value is outside its documented range.
    #[error("transport config: {0}")]
    Config(#[from] longconn_core::ConfigError),
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A certificate or key file could not be read, parsed or generated.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The TLS configuration was refused by rustls.
    #[error("tls: {0}")]
    Tls(String),
    /// A WebSocket handshake failed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// A QUIC connection could not be set up.
    #[error("quic: {0}")]
    Quic(String),
    /// An established connection failed (a frame did not decode, or its I/O failed), for
    /// example while a client waits for its first frame.
    #[error(transparent)]
    Connection(#[from] longconn_core::ConnectionError),
    /// A host name did not resolve (or resolved to no address).
    #[error("resolving `{host}`: {message}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's answer.
        message: String,
    },
    /// A WebSocket upgrade was answered with another HTTP status than 101 (404 for a
    /// wrong path).
    #[error("websocket upgrade answered HTTP {status}")]
    WebSocketStatus {
        /// The HTTP status.
        status: u16,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

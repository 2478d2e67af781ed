//! [`ConnectFailure`]: why a dial failed, as a value a client can match on and
//! decide with (retry with backoff, or stop for good).
//!
//! [`crate::Error::connect_failure`] classifies any error of
//! [`crate::dial::Dialer::connect`]; the typed variants of [`crate::Error`] that feed it
//! (`Resolve`, `Tls` for a handshake the peer or the certificate check refused,
//! `WebSocketStatus` for an upgrade answered with another status than 101) are set
//! where the failure happens, so nothing is guessed from message text.

use std::io::ErrorKind;

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing listens on the port (`ECONNREFUSED`): a wrong port, or a gateway that is
    /// restarting. Transient.
    #[error("connection refused")]
    Refused,
    /// The host name did not resolve. Transient (the network may come back).
    #[error("name resolution failed: {0}")]
    Dns(String),
    /// Another socket error (unreachable network or host, reset, ...). Transient.
    #[error("i/o error ({kind}): {message}")]
    Io {
        /// The error's kind.
        kind: ErrorKind,
        /// Its text.
        message: String,
    },
    /// The TLS handshake failed: the certificate was not trusted (wrong CA, wrong name,
    /// expired) or the peer refused the handshake. Transient by default (certificates
    /// get fixed and rotated, captive portals intercept TLS): see
    /// [`ConnectFailure::is_permanent`].
    #[error("tls handshake failed: {0}")]
    Tls(String),
    /// The WebSocket upgrade was answered with this HTTP status instead of 101
    /// (404: a wrong path; 403: an Origin the gateway does not allow).
    #[error("websocket upgrade refused with HTTP {status}")]
    WsRejected {
        /// The HTTP status.
        status: u16,
    },
    /// The WebSocket handshake failed otherwise (the peer did not speak HTTP, or its
    /// answer was not a valid upgrade).
    #[error("websocket handshake failed: {0}")]
    WsHandshake(String),
    /// The QUIC connection could not be set up (its TLS handshake included).
    #[error("quic: {0}")]
    Quic(String),
    /// The attempt took longer than the connect timeout.
    #[error("connect timed out")]
    Timeout,
    /// The connection was made but ended before the login was answered (the gateway
    /// closed it, or stopped answering).
    #[error("connection ended before the login was answered: {0}")]
    Ended(String),
    /// Anything else (an in-memory connector's error, a transport not built in).
    #[error("{0}")]
    Other(String),
}

impl ConnectFailure {
    /// Whether retrying cannot help until someone changes a configuration: only a
    /// WebSocket upgrade answered with a 4xx status other than 408 (timeout) and 429
    /// (too many requests): a wrong path (404), a forbidden Origin (403), a bad
    /// request (400). Everything else is transient, TLS failures included (a
    /// certificate gets renewed, a captive portal intercepts TLS until the user logs
    /// in), and a refused port (a gateway that is restarting).
    pub fn is_permanent(&self) -> bool {
        matches!(self, ConnectFailure::WsRejected { status }
            if (400..500).contains(status) && *status != 408 && *status != 429)
    }

    /// The failure behind a socket error.
    pub fn from_io(err: &std::io::Error) -> ConnectFailure {
        match err.kind() {
            ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            ErrorKind::TimedOut => ConnectFailure::Timeout,
            kind => ConnectFailure::Io {
                kind,
                message: err.to_string(),
            },
        }
    }
}

impl crate::Error {
    /// The typed cause of a dial failure.
    pub fn connect_failure(&self) -> ConnectFailure {
        match self {
            crate::Error::Io(err) => ConnectFailure::from_io(err),
            crate::Error::Connection(longconn_core::ConnectionError::Io(err)) => {
                ConnectFailure::from_io(err)
            }
            crate::Error::Resolve { host, message } => {
                ConnectFailure::Dns(format!("{host}: {message}"))
            }
            crate::Error::Tls(message) | crate::Error::Certificate(message) => {
                ConnectFailure::Tls(message.clone())
            }
            crate::Error::WebSocketStatus { status } => {
                ConnectFailure::WsRejected { status: *status }
            }
            crate::Error::WebSocket(message) => ConnectFailure::WsHandshake(message.clone()),
            crate::Error::Quic(message) => ConnectFailure::Quic(message.clone()),
            other => ConnectFailure::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_upgrade_is_permanent() {
        for status in [400, 403, 404, 426] {
            assert!(
                ConnectFailure::WsRejected { status }.is_permanent(),
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(
                !ConnectFailure::WsRejected { status }.is_permanent(),
                "{status}"
            );
        }
        assert!(!ConnectFailure::Refused.is_permanent());
        assert!(!ConnectFailure::Tls("unknown issuer".into()).is_permanent());
        assert!(!ConnectFailure::Timeout.is_permanent());
    }

    #[test]
    fn errors_classify_by_kind() {
        let refused: crate::Error = std::io::Error::from(ErrorKind::ConnectionRefused).into();
        assert_eq!(refused.connect_failure(), ConnectFailure::Refused);
        let slow: crate::Error = std::io::Error::from(ErrorKind::TimedOut).into();
        assert_eq!(slow.connect_failure(), ConnectFailure::Timeout);
        let status = crate::Error::WebSocketStatus { status: 404 };
        assert_eq!(
            status.connect_failure(),
            ConnectFailure::WsRejected { status: 404 }
        );
        let dns = crate::Error::Resolve {
            host: "nowhere.invalid".into(),
            message: "no such host".into(),
        };
        assert!(matches!(dns.connect_failure(), ConnectFailure::Dns(m) if m.contains("nowhere")));
    }
}

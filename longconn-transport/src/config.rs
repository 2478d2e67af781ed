//! [`TransportConfig`]: the limits every acceptor shares, with documented defaults,
//! validated once when built (in the style of tungstenite's `WebSocketConfig`).
//!
//! One value configures every listener of a gateway: the same maximum frame size reaches
//! TCP, TLS, WebSocket and QUIC, and the handshake limits of each transport live here
//! instead of as constants in the acceptors. What is not a limit but a property of the
//! protocol stays fixed in the transport (QUIC's one bidirectional stream, no datagrams
//! and no MTU discovery; WebSocket's unbuffered writes): see each module's docs.
//!
//! ```
//! use std::time::Duration;
//! use longconn_transport::TransportConfig;
//!
//! let config = TransportConfig::builder()
//!     .max_frame_size(256 * 1024)
//!     .reuse_port(true)
//!     .quic_idle_timeout(Duration::from_secs(90))
//!     .build()
//!     .unwrap();
//! assert_eq!(config.max_frame_size(), 256 * 1024);
//! assert!(TransportConfig::builder().max_frame_size(10).build().is_err());
//! ```

use std::time::Duration;

use longconn_core::ConfigError;
use longconn_core::config::{MAX_FRAME_SIZE, MIN_FRAME_SIZE};

/// Default [`TransportConfig::listen_backlog`].
pub(crate) const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Default [`TransportConfig::ws_max_request_head`].
pub(crate) const DEFAULT_WS_MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Default [`TransportConfig::quic_idle_timeout`].
pub(crate) const DEFAULT_QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default [`TransportConfig::quic_stream_window`].
pub(crate) const DEFAULT_QUIC_STREAM_WINDOW: u32 = 256 * 1024;

/// Largest idle timeout QUIC can carry: a variable-length integer of milliseconds.
const QUIC_MAX_IDLE_MS: u128 = (1 << 62) - 1;

/// The limits every acceptor shares. Build with [`TransportConfig::builder`];
/// `TransportConfig::default()` holds the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    max_frame_size: usize,
    reuse_port: bool,
    listen_backlog: u32,
    ws_max_request_head: usize,
    quic_idle_timeout: Duration,
    quic_keep_alive_interval: Option<Duration>,
    quic_stream_window: u32,
    quic_reset_key: Option<QuicResetKey>,
}

/// The key a QUIC server endpoint derives its stateless-reset tokens from (32 bytes,
/// used as an HMAC-SHA256 key). A server that restarts with the same key answers
/// packets of its previous process's connections with a stateless reset the clients
/// accept, so they reconnect at once instead of waiting for their idle timeout.
/// `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct QuicResetKey(pub [u8; 32]);

impl std::fmt::Debug for QuicResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuicResetKey(..)")
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_size: longconn_core::SessionConfig::default().max_frame_size(),
            reuse_port: false,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            ws_max_request_head: DEFAULT_WS_MAX_REQUEST_HEAD,
            quic_idle_timeout: DEFAULT_QUIC_IDLE_TIMEOUT,
            quic_keep_alive_interval: None,
            quic_stream_window: DEFAULT_QUIC_STREAM_WINDOW,
            quic_reset_key: None,
        }
    }
}

impl TransportConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> TransportConfigBuilder {
        TransportConfigBuilder {
            config: TransportConfig::default(),
        }
    }

    /// A builder starting from this config's values.
    pub fn to_builder(&self) -> TransportConfigBuilder {
        TransportConfigBuilder {
            config: self.clone(),
        }
    }

    /// Largest frame a connection accepts or sends, header included; a larger one is
    /// refused with `frame_too_large` as soon as its header (or WebSocket message header)
    /// is read. Set it to the sessions' `SessionConfig::max_frame_size`. Default
    /// `SessionConfig`'s default, 65,536; range 256..=16,777,216
    /// ([`MIN_FRAME_SIZE`]..=[`MAX_FRAME_SIZE`]).
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Bind TCP-based listeners (TCP, TLS, WebSocket) with `SO_REUSEPORT`, so several
    /// processes (or acceptors) can bind one address and the kernel spreads connections
    /// over them. QUIC listeners ignore it. Default `false`.
    pub fn reuse_port(&self) -> bool {
        self.reuse_port
    }

    /// Length of the kernel's queue of accepted connections not yet taken by the accept
    /// loop (`listen(2)` backlog; the kernel caps it at `net.core.somaxconn`). TCP-based
    /// listeners only. Default 4,096; at least 1.
    pub fn listen_backlog(&self) -> u32 {
        self.listen_backlog
    }

    /// Largest HTTP request head (request line and headers) of a WebSocket upgrade,
    /// bytes; a larger one is answered with `400`. The buffer is dropped once the upgrade
    /// is answered. Default 8,192; 1,024..=1,048,576.
    pub fn ws_max_request_head(&self) -> usize {
        self.ws_max_request_head
    }

    /// QUIC closes a connection without any traffic for this long. longconn's own
    /// heartbeats keep a live session busy (every 30 s by default) and the session's idle
    /// timeout (75 s) acts first; keep this above the session's heartbeat interval.
    /// Default 120 s; more than zero, at most 2^62 - 1 ms.
    pub fn quic_idle_timeout(&self) -> Duration {
        self.quic_idle_timeout
    }

    /// Interval of QUIC-level keep-alive packets; `None` sends none (longconn's
    /// heartbeats do that job). Default `None`; when set, more than zero and shorter than
    /// [`TransportConfig::quic_idle_timeout`].
    pub fn quic_keep_alive_interval(&self) -> Option<Duration> {
        self.quic_keep_alive_interval
    }

    /// QUIC flow-control windows (the session stream's receive window, the connection's
    /// receive and send windows), bytes: room for a few maximum-size frames in flight on
    /// long-lived, mostly idle sessions, not for bulk transfer. Default 262,144; at least
    /// 1,024.
    pub fn quic_stream_window(&self) -> u32 {
        self.quic_stream_window
    }

    /// The QUIC server's stateless-reset key ([`QuicResetKey`]); `None` draws a random
    /// one per process (connections of a previous process are then not reset and wait
    /// for their idle timeout). Default `None`; the gateway binary always sets one
    /// (docs/GATEWAY.md, `--quic-reset-secret`).
    pub fn quic_reset_key(&self) -> Option<&QuicResetKey> {
        self.quic_reset_key.as_ref()
    }
}

/// Builder for [`TransportConfig`]; [`TransportConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct TransportConfigBuilder {
    config: TransportConfig,
}

impl TransportConfigBuilder {
    /// See [`TransportConfig::max_frame_size`].
    pub fn max_frame_size(mut self, value: usize) -> Self {
        self.config.max_frame_size = value;
        self
    }
    /// See [`TransportConfig::reuse_port`].
    pub fn reuse_port(mut self, value: bool) -> Self {
        self.config.reuse_port = value;
        self
    }
    /// See [`TransportConfig::listen_backlog`].
    pub fn listen_backlog(mut self, value: u32) -> Self {
        self.config.listen_backlog = value;
        self
    }
    /// See [`TransportConfig::ws_max_request_head`].
    pub fn ws_max_request_head(mut self, value: usize) -> Self {
        self.config.ws_max_request_head = value;
        self
    }
    /// See [`TransportConfig::quic_idle_timeout`].
    pub fn quic_idle_timeout(mut self, value: Duration) -> Self {
        self.config.quic_idle_timeout = value;
        self
    }
    /// See [`TransportConfig::quic_keep_alive_interval`].
    pub fn quic_keep_alive_interval(mut self, value: Option<Duration>) -> Self {
        self.config.quic_keep_alive_interval = value;
        self
    }
    /// See [`TransportConfig::quic_stream_window`].
    pub fn quic_stream_window(mut self, value: u32) -> Self {
        self.config.quic_stream_window = value;
        self
    }
    /// See [`TransportConfig::quic_reset_key`].
    pub fn quic_reset_key(mut self, value: Option<QuicResetKey>) -> Self {
        self.config.quic_reset_key = value;
        self
    }

    /// Checks every value against its documented range.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the first value out of range.
    pub fn build(self) -> crate::Result<TransportConfig> {
        let c = self.config;
        let check = |ok: bool, field, reason| {
            if ok {
                Ok(())
            } else {
                Err(crate::Error::Config(ConfigError { field, reason }))
            }
        };
        check(
            (MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&c.max_frame_size),
            "max_frame_size",
            "must be 256..=16777216 bytes",
        )?;
        check(
            c.listen_backlog >= 1,
            "listen_backlog",
            "must be at least 1",
        )?;
        check(
            (1024..=1 << 20).contains(&c.ws_max_request_head),
            "ws_max_request_head",
            "must be 1024..=1048576 bytes",
        )?;
        check(
            !c.quic_idle_timeout.is_zero() && c.quic_idle_timeout.as_millis() <= QUIC_MAX_IDLE_MS,
            "quic_idle_timeout",
            "must be more than zero and at most 2^62 - 1 ms",
        )?;
        if let Some(interval) = c.quic_keep_alive_interval {
            check(
                !interval.is_zero() && interval < c.quic_idle_timeout,
                "quic_keep_alive_interval",
                "must be more than zero and shorter than quic_idle_timeout",
            )?;
        }
        check(
            c.quic_stream_window >= 1024,
            "quic_stream_window",
            "must be at least 1024 bytes",
        )?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let built = TransportConfig::builder().build().unwrap();
        assert_eq!(built, TransportConfig::default());
        assert_eq!(
            built.max_frame_size(),
            longconn_core::SessionConfig::default().max_frame_size()
        );
        assert!(!built.reuse_port());
        assert_eq!(built.listen_backlog(), 4096);
        assert_eq!(built.ws_max_request_head(), 8 * 1024);
        assert_eq!(built.quic_idle_timeout(), Duration::from_secs(120));
        assert_eq!(built.quic_keep_alive_interval(), None);
        assert_eq!(built.quic_stream_window(), 256 * 1024);
        assert_eq!(built.to_builder().build().unwrap(), built);
    }

    #[test]
    fn out_of_range_values_are_named() {
        let cases = [
            (
                TransportConfig::builder().max_frame_size(255),
                "max_frame_size",
            ),
            (
                TransportConfig::builder().max_frame_size(MAX_FRAME_SIZE + 1),
                "max_frame_size",
            ),
            (
                TransportConfig::builder().listen_backlog(0),
                "listen_backlog",
            ),
            (
                TransportConfig::builder().ws_max_request_head(100),
                "ws_max_request_head",
            ),
            (
                TransportConfig::builder().quic_idle_timeout(Duration::ZERO),
                "quic_idle_timeout",
            ),
            (
                TransportConfig::builder().quic_keep_alive_interval(Some(Duration::from_secs(120))),
                "quic_keep_alive_interval",
            ),
            (
                TransportConfig::builder().quic_keep_alive_interval(Some(Duration::ZERO)),
                "quic_keep_alive_interval",
            ),
            (
                TransportConfig::builder().quic_stream_window(1023),
                "quic_stream_window",
            ),
        ];
        for (builder, field) in cases {
            match builder.build() {
                Err(crate::Error::Config(err)) => assert_eq!(err.field, field),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
        assert!(
            TransportConfig::builder()
                .quic_keep_alive_interval(Some(Duration::from_secs(15)))
                .build()
                .is_ok()
        );
    }
}

//! Transports of the longconn gateway framework: thin adapters that move frames between a
//! socket and the runtime in `longconn_core`. Session logic lives only in the core; each
//! module here implements [`longconn_core::connection::Connection`] and
//! [`longconn_core::Listener`] for one transport, server and client side.
//!
//! The byte-level mappings are specified in docs/PROTOCOL.md ("Transport mappings").
//!
//! # Layout
//! - [`config`]: [`TransportConfig`], the limits every acceptor shares (maximum frame
//!   size, `SO_REUSEPORT`, listen backlog, WebSocket upgrade limits, QUIC transport
//!   parameters); each acceptor has a `bind_with` constructor taking it.
//! - [`stream`]: frame reader and writer halves over any byte stream, with buffers that
//!   are only held while bytes are in flight.
//! - [`tcp`] (feature `tcp`, default): [`tcp::TcpAcceptor`] and [`tcp::TcpConnection`].
//! - [`cert`] (feature `tls`): [`cert::TlsIdentity`] (PEM files or a generated
//!   development certificate) and client [`cert::Trust`], shared by TLS, `wss` and QUIC.
//! - [`tls`] (feature `tls`): [`tls::TlsAcceptor`] and [`tls::TlsConnection`], TCP
//!   with TLS 1.2/1.3.
//! - [`ws`] (feature `ws`; `wss://` when `tls` is enabled too, or with feature `wss`):
//!   [`ws::WsAcceptor`] and [`ws::WsConnection`] at path `/ws` (other paths get HTTP
//!   404, a request that is not a valid upgrade 400): tungstenite's HTTP and frame
//!   header parsing, this crate's buffers (no buffer held while idle), one binary
//!   message per frame, a WebSocket close status derived from the session's close code.
//! - [`quic`] (feature `quic`): [`quic::QuicAcceptor`], [`quic::QuicClient`] and
//!   [`quic::QuicConnection`], quinn with ALPN `longconn` and one bidirectional stream.
//! - [`dial`]: the client side of every transport: [`dial::Endpoint`] URLs and
//!   [`dial::Dialer`] (resolve, source IP, trust, timeout; TLS config and QUIC endpoint
//!   kept across reconnects).
//! - [`dead_peer`]: TCP keep-alive, `TCP_USER_TIMEOUT` and QUIC keep-alive / idle
//!   timeout for client connections, from one dead-peer timeout ([`dial::DialOptions`]).
//! - [`error`]: the crate's error type for setting transports up, [`Error`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

#[cfg(feature = "tls")]
pub mod cert;
pub mod config;
pub mod dead_peer;
pub mod dial;
pub mod error;
pub mod failure;
#[cfg(feature = "quic")]
pub mod quic;
pub mod stream;
#[cfg(feature = "tcp")]
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "ws")]
pub mod ws;

pub use config::{QuicResetKey, TransportConfig, TransportConfigBuilder};
pub use error::{Error, Result};
pub use failure::ConnectFailure;

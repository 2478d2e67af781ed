//! Core of the longconn gateway framework: the wire protocol, the sans-IO session state
//! machine, and the traits a transport implements. No runtime: nothing here spawns, reads
//! a clock or touches a socket, and tokio is not a dependency.
//!
//! [`protocol`] and [`session`] do no I/O and read no clock: the session is a pure state
//! machine, driven by whoever owns the socket. `longconn-server` is that owner for a
//! server: it runs one task per connection over the [`Connection`] trait, which
//! `longconn-transport` implements for TCP, TLS, WebSocket and QUIC (and anyone can
//! implement for another transport).
//!
//! ```
//! use std::{sync::Arc, time::Instant};
//! use bytes::Bytes;
//! use longconn_core::{Command, Event, Frame, Session, SessionConfig, Transmit, Metadata};
//!
//! let now = Instant::now();
//! let mut session = Session::new(Arc::new(SessionConfig::default()), now);
//! session.handle_frame(now, Frame::Login {
//!     id: 1,
//!     app: "demo".into(),
//!     device: "phone-1".into(),
//!     token: Bytes::from_static(b"token"),
//!     meta: Metadata::new(),
//! });
//! assert!(matches!(session.poll_event(), Some(Event::Authenticate { .. })));
//! session.handle_command(now, Command::AuthAccepted { conn_id: 42, expiry: None });
//! assert!(matches!(
//!     session.poll_transmit(),
//!     Some(Transmit::Frame(Frame::LoginAck { id: 1, conn_id: 42, .. }))
//! ));
//! ```
//!
//! # Layout
//! - [`protocol`]: frame layout ([`Frame`], [`FrameType`]), field values ([`Text`],
//!   [`Metadata`]), the wire code registry ([`Code`]) and the tokio-util codec
//!   ([`FrameCodec`]). docs/PROTOCOL.md is its specification.
//! - [`session`]: the per-connection state machine ([`Session`]) with its inputs
//!   ([`Command`]), outputs ([`Event`], [`Transmit`]) and [`CloseReason`].
//! - [`client_session`]: the client's state machine ([`ClientSession`]): login, calls by
//!   id, heartbeats, token refresh, and the reconnect decision ([`Reconnect`]) when a
//!   connection ends; the SDK's async loop and the test clients drive it.
//! - [`config`]: [`SessionConfig`], every per-connection limit and timer.
//! - [`connection`]: the [`Connection`] trait (a transport, split into a
//!   [`connection::FrameReader`] and a [`connection::FrameWriter`]), the server-side
//!   [`Listener`] trait, and an in-memory implementation, [`connection::memory`].
//! - [`token`]: the default HMAC-SHA256 token scheme, [`TokenKeys`].
//! - [`error`]: one error type per API: [`DecodeError`], [`EncodeError`], [`TokenError`],
//!   [`ConfigError`], [`ConnectionError`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod client_session;
pub mod config;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod session;
pub mod token;

pub use client_session::ClientPolicy;
pub use client_session::{
    Backoff, CallError, ClientEvent, ClientSession, ClientSessionConfig, ClientState, ClientStats,
    EndReason, Reconnect, StopReason,
};
pub use config::{SessionConfig, SessionConfigBuilder, SlowConsumerPolicy};
pub use connection::{Connection, Listener, TransportKind};
pub use error::{ConfigError, ConnectionError, DecodeError, EncodeError, TokenError};
pub use protocol::{Code, Frame, FrameCodec, FrameType, Metadata, Text};
pub use session::{
    CloseReason, Command, Event, PushOutcome, Session, State, TokenExpiry, Transmit, TransportEnd,
};
pub use token::{TokenClaims, TokenKey, TokenKeys};

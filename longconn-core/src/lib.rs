//! Core of the longconn gateway framework: the wire protocol, the sans-IO session state
//! machine, and the access-layer runtime that drives sessions over any transport.
//!
//! [`protocol`] and [`session`] do no I/O and read no clock: the session is a pure state
//! machine, driven by whoever owns the socket. [`runtime`] is that owner for a server: it
//! runs one task per connection over the [`Connection`] trait, which
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
//! - [`config`]: [`SessionConfig`], every per-connection limit and timer.
//! - [`connection`]: the [`Connection`] trait (a transport, split into a
//!   [`connection::FrameReader`] and a [`connection::FrameWriter`]) and an in-memory
//!   implementation, [`connection::memory`].
//! - [`runtime`]: [`runtime::Server`] (listeners, admission limit, two-phase shutdown),
//!   [`runtime::Hub`] (connections by id and by device), the per-connection driver and
//!   the forwarding [`runtime::Router`] with its [`runtime::Backend`]s, the push API
//!   ([`runtime::Pusher`]), device routes ([`runtime::RouteStore`]) and the seam to the
//!   group layer ([`runtime::GroupMembership`]).
//! - [`auth`]: the [`Authenticator`] trait and the default HMAC-SHA256 token scheme,
//!   [`TokenKeys`].
//! - [`error`]: the crate's one error type, [`Error`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod auth;
pub mod config;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod runtime;
pub mod session;

pub use auth::{AuthGrant, Authenticator, LoginRequest, TokenClaims, TokenKey, TokenKeys};
pub use config::{SessionConfig, SessionConfigBuilder, SlowConsumerPolicy};
pub use connection::{Connection, TransportKind};
pub use error::{Error, Result};
pub use protocol::{Code, Frame, FrameCodec, FrameType, Metadata, Text};
pub use session::{
    CloseReason, Command, Event, PushOutcome, Session, State, TokenExpiry, Transmit, TransportEnd,
};

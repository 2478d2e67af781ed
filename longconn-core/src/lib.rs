//! Core of the longconn gateway framework: the wire protocol and the sans-IO session
//! state machine that every transport (TCP, WebSocket, QUIC) drives.
//!
//! Nothing in this crate does I/O or reads a clock. Transports live in
//! `longconn-transport`; they decode frames with [`FrameCodec`], feed them to a
//! [`Session`] and write out what [`Session::poll_transmit`] returns.
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
//! - [`error`]: the crate's one error type, [`Error`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod config;
pub mod error;
pub mod protocol;
pub mod session;

pub use config::{SessionConfig, SessionConfigBuilder, SlowConsumerPolicy};
pub use error::{Error, Result};
pub use protocol::{Code, Frame, FrameCodec, FrameType, Metadata, Text};
pub use session::{
    CloseReason, Command, Event, PushOutcome, Session, State, TokenExpiry, Transmit,
    TransportEnd,
};

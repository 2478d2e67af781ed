//! Client SDK for longconn gateways.
//!
//! A [`Client`] connects over TCP, TLS, WebSocket (`ws`/`wss`) or QUIC, named by the
//! endpoint URL's scheme; logs in with a token from a [`TokenProvider`]; keeps the
//! session alive with heartbeats at the interval the gateway advertises; answers token
//! refreshes; and reconnects after loss with exponential backoff and full jitter,
//! honouring `GoAway` hints and never looping on a `replaced` kick. It is built on
//! `longconn-core`'s codec and the transports of `longconn-transport`: there is no
//! second parser.
//!
//! ```no_run
//! # async fn demo() -> Result<(), longconn_client::ClientError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use longconn_client::{Client, ClientConfig, StaticToken};
//!
//! let token = Arc::new(StaticToken(Bytes::from("lc1.dev....")));
//! let client = Client::connect(ClientConfig::new("tcp://127.0.0.1:7100", "demo", "phone-1", token)?);
//! client.wait_connected(Duration::from_secs(5)).await?;
//! let answer = client.request(1, Bytes::from_static(b"hello")).await?;
//! assert_eq!(answer.payload, "hello");
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`client`]: [`Client`], the handle, and what it returns ([`Response`], [`Push`],
//!   [`ConnState`], [`Quality`]).
//! - [`config`]: [`ClientConfig`], [`Endpoint`] URL parsing, [`TokenProvider`].
//! - [`backoff`]: [`Backoff`], full-jitter reconnect delays.
//! - `driver` (private): the background task that owns the connection.
//! - [`error`] holds [`ClientError`], the one error type.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod backoff;
pub mod client;
pub mod config;
mod driver;
pub mod error;

pub use backoff::Backoff;
pub use client::{Client, ConnState, Push, Quality, Response};
pub use config::{ClientConfig, Endpoint, Scheme, StaticToken, TokenProvider};
pub use error::ClientError;
pub use longconn_transport::cert::Trust;

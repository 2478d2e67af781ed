//! Client SDK for longconn gateways.
//!
//! A [`Client`] connects over TCP, TLS, WebSocket (`ws`/`wss`) or QUIC, named by the
//! endpoint URL's scheme; logs in with a token from a [`TokenProvider`]; keeps the
//! session alive with heartbeats at the interval the gateway advertises; answers token
//! refreshes; and reconnects after loss with exponential backoff and full jitter,
//! honouring `GoAway` hints, never looping on a `replaced` kick, and stopping with
//! [`ClientError::AuthRejected`] when the gateway refuses its token for good. The
//! protocol logic is `longconn-core`'s [`longconn_core::ClientSession`] (a sans-IO state
//! machine tested on a simulated clock); this crate is the async loop around it, over
//! the dialer of `longconn-transport`: there is no second parser and no second login.
//!
//! Instead of a fixed endpoint and token, a client can bootstrap from a control layer
//! (longconn-control, docs/CONTROL.md) with [`ClientConfig::from_control`]: it asks
//! where to connect, falls back through the answer's endpoints and transports, renews
//! its token in band before it expires, and asks again after repeated failures.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use longconn_client::{Client, ClientConfig, StaticToken};
//! use longconn_server::{Router, Listener, Server, ServerConfig};
//! use longconn_core::{TokenKey, TokenKeys};
//! use longconn_transport::tcp::TcpAcceptor;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // A gateway in this process (normally the `gateway` binary, elsewhere).
//! let keys = TokenKeys::new(TokenKey::new("k1", b"a secret of 16+ bytes").unwrap());
//! let token = Bytes::from(keys.mint("demo", "phone-1", u64::MAX / 2));
//! let server = Server::new(ServerConfig::default(), Arc::new(keys), Arc::new(Router::echo()));
//! let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap(), 65_536, false).unwrap();
//! let url = format!("tcp://{}", acceptor.local_addr().unwrap());
//! server.serve(acceptor);
//!
//! // The client: connect, log in, call the echo backend (business 1).
//! let config = ClientConfig::new(&url, "demo", "phone-1", Arc::new(StaticToken(token)))?;
//! let client = Client::connect(config);
//! client.wait_connected(Duration::from_secs(5)).await?;
//! let answer = client.request(1, Bytes::from_static(b"hello")).await?;
//! assert_eq!(answer.payload, "hello");
//! client.close().await;
//! # Ok::<(), longconn_client::ClientError>(())
//! # }).unwrap();
//! ```
//!
//! # Layout
//! - [`client`]: [`Client`], the handle, and what it returns ([`Response`], [`Push`],
//!   [`ConnState`], [`Quality`]).
//! - [`config`]: [`ClientConfig`], [`TokenProvider`]; [`Endpoint`] and [`Scheme`] are
//!   the transport dialer's, re-exported.
//! - [`backoff`]: [`Backoff`], full-jitter reconnect delays (core's rule, re-exported).
//! - [`bootstrap`]: asking a control layer where to connect ([`ClientConfig::from_control`]):
//!   `/v1/access`, the endpoint walk, token renewal, asking again after failures.
//! - `driver` (private): the background task: dial, feed the `ClientSession`, move its
//!   frames and events; the token provider runs beside the frame loop, never in it.
//! - [`error`] holds [`ClientError`], the one error type.
//! - [`recovery`]: [`Rejoin`], whether a rejoin after a reconnect recovered the
//!   group's missed pushes ([`Client::rejoins`]).
//!
//! # Connect failures
//! Every failed attempt is recorded with a typed cause, a [`ConnectFailure`] (from
//! `longconn-transport`): `Refused` (nothing listens: a wrong port, or a gateway that
//! is restarting), `Dns`, `Io`, `Tls` (an untrusted certificate, a refused handshake),
//! `WsRejected {status}` (the WebSocket upgrade answered 404 for a wrong path, 403 for
//! a forbidden Origin), `WsHandshake`, `Quic`, `Timeout`, `Ended` (connected, but the
//! login was never answered). [`Client::last_connect_error`] returns the last one as
//! soon as it happens, while the client retries; [`Client::wait_connected`] returns
//! [`ClientError::Unreachable`] `{last, attempts}` instead of a bare `Timeout` when its
//! timeout passes after failed attempts.
//!
//! Permanent and transient: only a WebSocket upgrade answered 4xx (other than 408 and
//! 429) stops the client at once ([`ConnectFailure::is_permanent`]; the stop error is
//! `Unreachable`), since retrying a wrong path or a forbidden Origin cannot succeed;
//! [`ClientConfig::retry_permanent_failures`] keeps retrying those too (a proxy that
//! answers 404 while its backend restarts). Everything else is retried with backoff:
//! a refused port (a restarting gateway refuses briefly), and TLS failures too
//! (certificates get fixed and rotated without the client's involvement, and a
//! captive portal intercepts TLS until the user logs in). A refused login stops the
//! client as before ([`ClientError::AuthRejected`]).
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod backoff;
pub mod bootstrap;
pub mod client;
pub mod config;
mod driver;
pub mod error;
mod failures;
pub mod recovery;

pub use backoff::Backoff;
pub use bootstrap::AccessAnswer;
pub use client::{Client, ConnState, Push, Quality, Response};
pub use config::{
    ClientConfig, ControlSettings, Endpoint, FromControl, PushHandler, Scheme, StaticToken,
    TokenProvider,
};
pub use error::ClientError;
pub use longconn_transport::ConnectFailure;
pub use longconn_transport::cert::Trust;
pub use recovery::{Rejoin, Rejoins};

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
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod backoff;
pub mod bootstrap;
pub mod client;
pub mod config;
mod driver;
pub mod error;
pub mod recovery;

pub use backoff::Backoff;
pub use bootstrap::AccessAnswer;
pub use client::{Client, ConnState, Push, Quality, Response};
pub use config::{
    ClientConfig, ControlSettings, Endpoint, FromControl, PushHandler, Scheme, StaticToken,
    TokenProvider,
};
pub use error::ClientError;
pub use longconn_transport::cert::Trust;
pub use recovery::{Rejoin, Rejoins};

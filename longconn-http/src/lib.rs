//! HTTP integrations of the longconn gateway framework, kept out of `longconn-core`:
//!
//! - [`callback::HttpBackend`]: a forwarding-router [`Backend`](longconn_server::Backend)
//!   that POSTs each request to a URL (common parameters in headers, the payload as the
//!   body) and turns the reply into the `Response` frame; it can also POST connection
//!   events (connected, disconnected with the close reason) as JSON.
//! - [`api::push_api`]: the push HTTP API as an axum `Router` (batched unicast, group
//!   push, presence, kick), mounted by the reference gateway and by any embedder.
//!
//! # Layout
//! - [`callback`]: the HTTP callback backend and its wire format.
//! - [`api`]: the push API routes, request bodies and JSON errors.
//! - [`auth`]: API keys (`Authorization: Bearer`) and the middleware that checks them.
//! - [`error`]: the crate's one error type, [`Error`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod api;
pub mod auth;
pub mod callback;
pub mod error;
mod metrics;
mod tls;

pub use api::{ApiLimits, CLUSTER_RETRY_AFTER, PushApi, push_api};
pub use auth::{ApiKeyError, ApiKeys};
pub use callback::{HttpBackend, HttpBackendConfig};
pub use error::{Error, Result};

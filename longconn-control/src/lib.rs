//! The longconn control layer: the HTTP service a client asks before it connects.
//!
//! `POST /v1/access` tells a device which access nodes and transports to use (live,
//! non-draining nodes, least loaded first, spread per device by weighted rendezvous
//! hashing), gives it a login token (HMAC, `lc2`, verifiable by every gateway holding
//! the keys), and the heartbeat and reconnect policy it must follow. Small-traffic
//! (canary) rules in the TOML config decide per device, by app, platform, network,
//! versions, allow/deny lists and a salted percentage, which node set, transports and
//! flags it gets. `POST /v1/token/refresh` renews a token; `GET /v1/rules` shows the
//! rules in force; `GET /healthz` is for load balancers. The config reloads on change
//! or SIGHUP; a bad file is refused and the rules in force stay. docs/CONTROL.md is the
//! user's guide.
//!
//! ```
//! use longconn_control::{AccessRequest, Control, Network};
//!
//! // Embedded defaults: one node on the reference gateway's default ports.
//! let control = Control::embedded();
//! let answer = control
//!     .access(
//!         &AccessRequest {
//!             app: "demo".into(),
//!             device: "phone-1".into(),
//!             platform: "android".into(),
//!             app_version: "2.3.1".into(),
//!             sdk_version: "0.1.0".into(),
//!             network: Network::Wifi,
//!             quality: Default::default(),
//!         },
//!         1_000_000,
//!     )
//!     .unwrap();
//! assert_eq!(answer.endpoints[0].url, "tcp://127.0.0.1:7100");
//! assert_eq!(answer.bucket, "default");
//! let claims = control.policy().keys().verify(answer.token.as_bytes(), 1_000_000).unwrap();
//! assert_eq!(claims.bucket.as_deref(), Some("default"));
//! ```
//!
//! # Layout
//! - [`config`]: [`ControlConfig`] (the TOML file, every limit documented) and
//!   [`Policy`], its validated, compiled form that a reload swaps.
//! - [`rules`]: the small-traffic rule language ([`RuleSet`], [`Version`],
//!   [`percent_point`]).
//! - [`nodes`]: [`Transport`], [`Node`], the [`NodeSource`] trait, [`StaticNodes`] and,
//!   with the `registry` feature, `RegistryNodes` (a cached view of longconn-cluster's
//!   Redis node registry).
//! - [`select`]: endpoint choice by weighted rendezvous hashing.
//! - [`ratelimit`]: per-IP token buckets.
//! - [`api`]: the JSON shapes and [`ApiError`] with its documented codes.
//! - [`service`]: [`Control`]: request logic, router, serving, reloads.
//! - [`reload`]: the file watcher (mtime poll and SIGHUP).
//! - [`error`]: [`ConfigError`] and [`Error`].
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod api;
pub mod config;
pub mod error;
pub mod nodes;
pub mod ratelimit;
pub mod reload;
pub mod rules;
pub mod select;
pub mod service;

pub use api::{
    AccessAnswer, AccessRequest, ApiError, ErrorCode, ProtocolQuality, ReconnectPolicy,
    RefreshAnswer, RefreshRequest,
};
pub use config::{ControlConfig, DEFAULT_CONFIG_TOML, Policy};
pub use error::{ConfigError, Error, Result};
pub use nodes::{Node, NodeAddr, NodeSource, SharedNodes, StaticNodes, Transport};
#[cfg(feature = "registry")]
pub use nodes::{NodeLister, RegistryNodes};
pub use rules::{Network, RuleSet, Version, VersionRange, percent_point};
pub use select::Endpoint;
pub use service::{Control, ReloadError};

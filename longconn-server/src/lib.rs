//! The server side of the longconn gateway framework: the access-layer runtime that drives
//! longconn-core's sans-IO [`longconn_core::Session`] over any
//! [`longconn_core::Connection`]. Listeners with admission control, the connection
//! [`Hub`], one driver task per connection, the forwarding [`Router`], the push API
//! ([`Pusher`]), device routes ([`RouteStore`]), the seams to the group layer
//! ([`GroupMembership`], [`GroupLog`]) and to other nodes ([`Relay`], [`RelayInbox`]),
//! login checks ([`Authenticator`]) and two-phase graceful shutdown.
//!
//! ```text
//! Listener::accept ──► admission permit ──► handshake ──► driver task (Session + Connection)
//!                                                              ▲   │
//!       Pusher / group fan-out ──► ConnHandle::push / command ──┘   ├──► Authenticator
//!                                                                  ├──► Router ──► Backend
//!                                                                  ├──► GroupMembership
//!                                                                  └──► RouteSync ──► RouteStore
//!
//! Pusher (route to another node) ──► Relay ──► (other node) RelayInbox ──► Hub / groups
//! ```
//!
//! # Layout
//! - `server`: [`Server`], [`ServerBuilder`], [`ServerConfig`], [`ShutdownReport`]:
//!   accept loops, admission, serving in-memory connections, two-phase shutdown.
//! - `hub`: [`Hub`], [`ConnHandle`], [`DeviceKey`]: this node's connections, and the
//!   handle other tasks push and kick through.
//! - `driver` (private): one task per connection, between the transport and the session.
//! - `router`: [`Router`], [`Backend`] and its adapters: upstream requests by business
//!   id, connection events to subscribers.
//! - `push`: [`Pusher`], [`BatchReport`]: single, acked and batched pushes, and kicks,
//!   on this node or through the relay.
//! - `route_store`: [`RouteStore`], [`MemoryRouteStore`]: device → (connection, node),
//!   fed in the background by one sync task per server.
//! - `relay`: [`Relay`], [`LocalRelay`], [`RelayInbox`]: delivery between nodes.
//! - `groups`: [`GroupMembership`], [`NoGroups`]: the seam to the group layer.
//! - `group_log`: [`GroupLog`], [`LocalGroupLog`]: who numbers group publishes.
//! - `auth`: [`Authenticator`]: login checks.
//! - `metrics`: handles for the `metrics` facade (docs/METRICS.md), the push
//!   counters the group layer shares, and the `/proc` process collector.
//! - `shard`: [`ShardedMap`], the sharded map behind the hub, routes and groups.
//! - `quality`: [`QualityBoard`], [`QualityConfig`]: client quality reports aggregated
//!   by network bucket and transport.
//! - `timers` (private): one task per server firing every connection's session
//!   deadline (a min-heap of (deadline, connection id)), instead of a timer per task.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod admission_limits;
mod auth;
mod device_key;
mod driver;
mod error;
mod group_log;
mod groups;
mod hub;
mod login_limit;
pub mod metrics;
mod push;
mod quality;
mod recovery;
mod relay;
mod route_store;
mod router;
mod server;
mod shard;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use auth::{AuthGrant, Authenticator, LoginRequest};
#[doc(hidden)]
pub use driver::future_sizes;
pub use error::{Error, Result};
pub use group_log::{GroupLog, GroupLogError, GroupPosition, LocalGroupLog};
pub use groups::{GroupDelivery, GroupMembership, JoinRecovery, NoGroups};
pub use hub::{CONN_ID_COUNTER_BITS, ConnHandle, DeviceKey, Hub, node_of};
pub use longconn_core::Listener;
pub use push::{BatchReport, PushMessage, PushResult, Pusher, Target};
pub use quality::{
    CellSummary, NetworkBucket, OPEN_BUCKET_MS, Percentiles, QualityBoard, QualityConfig,
    QualityConfigBuilder, QualitySummary, ReportCount, network_name,
};
pub use relay::{
    BatchFrames, GroupMessage, GroupPresence, KickRequest, KickTarget, LocalRelay, Relay,
    RelayBatch, RelayInbox, RelayResult, RelayTarget, RemoteGroupReport, RemotePresence,
};
pub use route_store::{MemoryRouteStore, Route, RouteStore, RouteStoreError};
pub use router::{
    Backend, BackendError, BackendLimits, BackendReply, BackendRequest, ConnectionEvent,
    ECHO_BUSINESS, EVENT_QUEUE, EchoBackend, FnBackend, Router, RouterBuilder, ServiceBackend,
};
pub use server::{Server, ServerBuilder, ServerConfig, ServerConfigBuilder, ShutdownReport};
pub use shard::{MapHasher, Shard, ShardedMap};

use longconn_core::config::SessionConfig;

/// What every driver of one server shares.
pub(crate) struct Shared {
    pub(crate) hub: Arc<Hub>,
    pub(crate) session_config: Arc<SessionConfig>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    pub(crate) router: Arc<Router>,
    pub(crate) groups: Arc<dyn GroupMembership>,
    pub(crate) relay: Arc<dyn relay::Relay>,
    /// Bound on every wait for another node ([`ServerConfig::relay_timeout`]).
    pub(crate) relay_timeout: Duration,
    pub(crate) routes: route_store::RouteSync,
    pub(crate) acks: push::PendingAcks,
    pub(crate) close_linger: Duration,
    pub(crate) stats: Stats,
    pub(crate) metrics: metrics::ServerMetrics,
    /// Cancelled when shutdown begins; connections admitted after that drain at once.
    pub(crate) shutting_down: tokio_util::sync::CancellationToken,
    /// Client quality reports ([`QualityBoard`]).
    pub(crate) quality: Arc<QualityBoard>,
    /// Every connection's session deadlines, fired by one task.
    pub(crate) timers: timers::Timers,
    /// One permit per connection up to `max_connections`; a driver holds one (taken and
    /// forgotten when it was admitted) and adds it back when it is dropped.
    pub(crate) admission: Arc<tokio::sync::Semaphore>,
    /// The accept rate and per-IP limits; a driver gives its IP's count back when it
    /// is dropped.
    pub(crate) limits: admission_limits::AdmissionLimits,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("hub", &self.hub)
            .field("session_config", &self.session_config)
            .finish_non_exhaustive()
    }
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Frames written by sessions in `Draining`.
    pub(crate) drain_flushed: AtomicU64,
    /// Pushes still queued when their connection closed.
    pub(crate) dropped_at_close: AtomicU64,
}

impl Stats {
    pub(crate) fn record_close(&self, dropped: u64) {
        self.dropped_at_close.fetch_add(dropped, Ordering::Relaxed);
    }
}

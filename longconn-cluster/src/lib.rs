//! The routing layer and cluster of longconn on Redis.
//!
//! It plugs into the seams of `longconn-server` without changing the server:
//!
//! - [`RedisRouteStore`] implements [`longconn_server::RouteStore`]: device routes
//!   `(app, device) -> (connection id, node)` as string keys with a TTL; every call on a
//!   batch is one pipeline (one round trip).
//! - [`RedisGroupLog`] implements [`longconn_server::GroupLog`]: one counter and one
//!   epoch per group, so every node numbers one publish the same way.
//! - [`NodeRegistry`] keeps one key per live access node (addresses, connection count,
//!   start time, draining flag), refreshed by a heartbeat task a [`NodeLease`] owns.
//! - [`RedisRelay`] implements [`longconn_server::Relay`]: one sharded pub/sub inbox
//!   channel per node (`SPUBLISH`/`SSUBSCRIBE`, Redis >= 7), request/answer with
//!   correlation ids and a bounded wait, and per group the set of nodes with members.
//! - [`ClusterNode`] is what a gateway holds: one [`ClusterNode::start`] builds all of
//!   the above from a [`ClusterConfig`], and the node keeps its connection count, its
//!   draining flag and, after a Redis restart, its routes and group memberships in Redis.
//!
//! Each works on one Redis ([`connect`], a [`redis::aio::ConnectionManager`]) or on a
//! Redis Cluster ([`connect_cluster`], a [`RedisClusterConnection`] that sends a batch
//! as one pipeline per shard); [`RedisConnection`] holds either.
//!
//! The key schema, TTLs and encodings are in `docs/CLUSTER.md`.
//!
//! Every type here talks to Redis through a [`redis::aio::ConnectionLike`] that is
//! `Clone` (default [`redis::aio::ConnectionManager`], which reconnects on its own; see
//! [`connect`]). Scripts run with `EVALSHA`; a server that does not know a script (it
//! restarted, or was flushed) gets it loaded and the call retried once, so only the
//! first call after that costs more than one round trip.
//!
//! # Layout
//! - `keys`: the key schema and the route value encoding.
//! - `route_store`: [`RedisRouteStore`].
//! - `group_log`: [`RedisGroupLog`].
//! - `registry`: [`NodeRegistry`], [`NodeLease`], [`NodeInfo`], [`NodeAnnouncement`].
//! - `relay`: [`RedisRelay`], [`RelayConfig`], [`RelayLag`]; `relay::subscriber`, the
//!   inbox subscription and its push-message handler; `relay::wire`, the binary message
//!   encoding.
//! - `cluster`: [`connect_cluster`], [`RedisClusterConnection`], [`RedisConnection`].
//! - `slot`: Redis Cluster hash slots.
//! - `node`: [`ClusterNode`], [`ClusterConfig`], [`RedisTarget`]: one call to join a
//!   cluster (all of the above), its lifecycle, and its state written again after a
//!   Redis restart.
//! - `script`: `EVALSHA` in pipelines, with one reload on `NOSCRIPT`.
//! - `error`: [`Error`], one enum for the crate.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod cluster;
mod error;
mod group_log;
mod history;
mod keys;
mod metrics;
mod node;
mod registry;
mod relay;
mod route_store;
mod script;
mod slot;

use std::time::Duration;

pub use cluster::{RedisClusterConnection, RedisConnection, connect_cluster};
pub use error::{Error, Result};
pub use group_log::RedisGroupLog;
pub use history::RedisHistory;
pub use keys::{DEFAULT_PREFIX, decode_route, encode_route};
pub use node::{ClusterConfig, ClusterNode, RedisTarget};
pub use redis;
pub use registry::{NodeAnnouncement, NodeInfo, NodeLease, NodeRegistry};
pub use relay::{RedisRelay, RelayConfig, RelayLag};
pub use route_store::RedisRouteStore;

/// How often `longconn-server`'s route sync task re-registers every local route with
/// the default route TTL: a third of [`RedisRouteStore::DEFAULT_TTL`] (the store answers
/// `RouteStore::refresh_interval` with a third of its TTL, whatever it is).
pub const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Bound on one reply from Redis for connections made by [`connect`].
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one connection attempt for connections made by [`connect`].
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the Redis at `url` (`redis://host:port/db`) with a
/// [`redis::aio::ConnectionManager`]: multiplexed (one socket for every caller, so
/// concurrent calls pipeline on it), cheap to clone, and reconnecting in the background
/// after an I/O error. Replies are bounded by [`RESPONSE_TIMEOUT`], connection attempts
/// by [`CONNECTION_TIMEOUT`]. Build a `ConnectionManager` yourself for other settings.
///
/// # Cancel safety
/// Cancel safe: dropping the future abandons the connection attempt.
pub async fn connect(url: &str) -> Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT));
    Ok(redis::aio::ConnectionManager::new_with_config(client, config).await?)
}

/// Whole milliseconds of `ttl` for `PX`/`PEXPIRE`, or an error for a TTL under 1 ms.
pub(crate) fn ttl_millis(ttl: Duration, what: &'static str) -> Result<u64> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(Error::Config(what));
    }
    Ok(ms)
}

//! [`ClusterNode`]: what a gateway holds to be one node of a cluster on Redis.
//!
//! One call, [`ClusterNode::start`], connects to Redis, takes the node id (a live holder
//! is refused with [`Error::NodeIdTaken`]), and builds the route store, group log and
//! relay the server and group layer take. The node then keeps itself in the cluster:
//!
//! - its registry entry's connection count follows the attached server's hub;
//! - it watches Redis (every heartbeat interval): when Redis comes back with a new run
//!   id (restarted, so its data is gone), or after the watch found it unreachable (group
//!   hints sent meanwhile were lost), it writes every local route and every local group
//!   membership (`{prefix}gn:{group}`) again at once, instead of waiting for the next
//!   route refresh (TTL/3) or group refresh (`RelayConfig::group_refresh`). An outage
//!   shorter than one watch period goes unseen: its lost hints come back with those
//!   refreshes (docs/CLUSTER.md).
//!   The node entry comes back with the next heartbeat, the relay re-subscribes by
//!   itself, and group positions start a new epoch.
//!
//! Lifecycle, in the gateway's two-phase shutdown: [`ClusterNode::drain`] sets the
//! draining flag (the control layer stops sending clients here), the server drains
//! (its route sync task unregisters every route with compare-and-delete before its
//! shutdown returns), then [`ClusterNode::shutdown`] stops the relay (the node is
//! `Offline` to the others from then on) and deregisters the node entry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use longconn_server::{GroupLog, Relay, Route, RouteStore, Server};
use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::keys::DEFAULT_PREFIX;
use crate::{
    Error, NodeAnnouncement, NodeLease, NodeRegistry, RedisConnection, RedisGroupLog, RedisRelay,
    RedisRouteStore, RelayConfig, Result, connect_cluster,
};

/// Where the cluster's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis (or a primary behind a stable address): `redis://host:port/db`.
    Single(String),
    /// The seed nodes of a Redis Cluster (`redis://host:port` each; the others are
    /// discovered). Redis >= 7 (the relay uses sharded pub/sub).
    Cluster(Vec<String>),
}

/// How a node joins a cluster. Build with [`ClusterConfig::new`] and change the public
/// fields; [`ClusterConfig::validate`] (also run by [`ClusterNode::start`]) checks every
/// limit.
///
/// Every node of one cluster must use the same `target`, `key_prefix` and `route_ttl`
/// (docs/CLUSTER.md, "TTL relations").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis holding the cluster's state.
    pub target: RedisTarget,
    /// This node's id: the top 16 bits of its connection ids, and its name in the
    /// registry and the relay. Unique per cluster: a live holder makes
    /// [`ClusterNode::start`] fail with [`Error::NodeIdTaken`]. Must equal the server's
    /// `ServerConfig::node_id`.
    pub node_id: u16,
    /// Addresses clients reach this node at, per transport (`"tcp" -> "10.0.0.5:7100"`),
    /// written into the node's registry entry for the control layer. At most 16 entries,
    /// names and addresses non-empty and at most 256 bytes.
    pub advertise: BTreeMap<String, String>,
    /// Prefix of every key and channel. Default [`DEFAULT_PREFIX`] (`lc:`); 1 to 64
    /// bytes, no whitespace.
    pub key_prefix: String,
    /// Route TTL. Default [`ClusterConfig::DEFAULT_ROUTE_TTL`] (30 s); the server
    /// refreshes every route each third of it, and a dead node's routes are gone at most
    /// this long after its last refresh. From 30 ms to 1 hour.
    pub route_ttl: Duration,
    /// Node entry TTL. Default [`ClusterConfig::DEFAULT_NODE_TTL`] (15 s); the heartbeat
    /// (and the Redis watch) run every third of it. From 30 ms to 1 hour.
    pub node_ttl: Duration,
    /// Bound on one relay call's wait for the other node's answer. Default
    /// [`ClusterConfig::DEFAULT_RELAY_TIMEOUT`] (2 s); keep it below the server's
    /// `relay_timeout` (default 5 s) so the relay answers `Unknown` itself. From 1 ms to
    /// 60 s.
    pub relay_timeout: Duration,
}

impl ClusterConfig {
    /// Default [`ClusterConfig::route_ttl`]: 30 s ([`RedisRouteStore::DEFAULT_TTL`]).
    pub const DEFAULT_ROUTE_TTL: Duration = RedisRouteStore::DEFAULT_TTL;
    /// Default [`ClusterConfig::node_ttl`]: 15 s ([`NodeRegistry::DEFAULT_TTL`]).
    pub const DEFAULT_NODE_TTL: Duration = NodeRegistry::DEFAULT_TTL;
    /// Default [`ClusterConfig::relay_timeout`]: 2 s ([`RedisRelay::DEFAULT_TIMEOUT`]).
    pub const DEFAULT_RELAY_TIMEOUT: Duration = RedisRelay::DEFAULT_TIMEOUT;
    /// Shortest route or node TTL accepted (tests use short ones; a third of it is the
    /// refresh or heartbeat period).
    pub const MIN_TTL: Duration = Duration::from_millis(30);
    /// Longest route or node TTL accepted.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);
    /// Longest relay timeout accepted.
    pub const MAX_RELAY_TIMEOUT: Duration = Duration::from_secs(60);
    /// Most advertised addresses.
    pub const MAX_ADVERTISED: usize = 16;

    /// A config for node `node_id` on `target`, with every other value at its default
    /// (no advertised address: the gateway fills in its bound listeners).
    pub fn new(target: RedisTarget, node_id: u16) -> ClusterConfig {
        ClusterConfig {
            target,
            node_id,
            advertise: BTreeMap::new(),
            key_prefix: DEFAULT_PREFIX.to_owned(),
            route_ttl: Self::DEFAULT_ROUTE_TTL,
            node_ttl: Self::DEFAULT_NODE_TTL,
            relay_timeout: Self::DEFAULT_RELAY_TIMEOUT,
        }
    }

    /// Checks every limit of the field documentation.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first value out of range.
    pub fn validate(&self) -> Result<()> {
        let check =
            |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(Error::Config(what)) };
        match &self.target {
            RedisTarget::Single(url) => check(!url.is_empty(), "the redis url is empty")?,
            RedisTarget::Cluster(urls) => check(
                !urls.is_empty() && urls.iter().all(|u| !u.is_empty()),
                "redis cluster needs at least one non-empty seed url",
            )?,
        }
        let ttl_ok = |ttl: Duration| (Self::MIN_TTL..=Self::MAX_TTL).contains(&ttl);
        check(
            ttl_ok(self.route_ttl),
            "route ttl must be from 30 ms to 1 hour",
        )?;
        check(
            ttl_ok(self.node_ttl),
            "node ttl must be from 30 ms to 1 hour",
        )?;
        check(
            (Duration::from_millis(1)..=Self::MAX_RELAY_TIMEOUT).contains(&self.relay_timeout),
            "relay timeout must be from 1 ms to 60 s",
        )?;
        check(
            !self.key_prefix.is_empty()
                && self.key_prefix.len() <= 64
                && !self.key_prefix.chars().any(char::is_whitespace),
            "key prefix must be 1 to 64 bytes without whitespace",
        )?;
        check(
            self.advertise.len() <= Self::MAX_ADVERTISED,
            "at most 16 advertised addresses",
        )?;
        check(
            self.advertise.iter().all(|(name, addr)| {
                !name.is_empty() && !addr.is_empty() && name.len() <= 256 && addr.len() <= 256
            }),
            "advertised transport names and addresses must be 1 to 256 bytes",
        )?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connection attempts after the first when Redis is lost: one, 100 ms later. A call
/// made while Redis is down waits for the attempts in progress, so they are few: a push
/// that needs Redis fails within about one connection timeout
/// ([`crate::CONNECTION_TIMEOUT`]; at once when the port refuses), instead of after
/// redis-rs's default six attempts over about six seconds. The next call tries again,
/// and so does the watch task every heartbeat interval.
const RECONNECT_RETRIES: usize = 1;
/// Wait before the retry of [`RECONNECT_RETRIES`].
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// How the relay is started once the node id is taken.
enum StartRelay {
    Single(redis::Client, ConnectionManager),
    Cluster(crate::RedisClusterConnection),
}

/// A [`ConnectionManager`] like [`crate::connect`]'s, with few reconnection attempts per
/// outage call ([`RECONNECT_RETRIES`]).
async fn connect_failing_fast(client: redis::Client) -> Result<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(crate::RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(crate::CONNECTION_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(RECONNECT_DELAY)
        .set_max_delay(RECONNECT_DELAY * 4);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// What the node and its watch task share.
#[derive(Debug)]
struct NodeShared {
    node_id: u16,
    conn: RedisConnection,
    routes: Arc<RedisRouteStore<RedisConnection>>,
    relay: Arc<RedisRelay>,
    lease: Arc<NodeLease<RedisConnection>>,
    /// The attached server (for the connection count and a resync).
    server: OnceLock<Server>,
    /// Whether the last look at Redis succeeded.
    redis_up: AtomicBool,
    /// Times Redis came back (restarted, or after an outage) and this node wrote its
    /// state again.
    resyncs: AtomicU64,
}

/// Most commands in one pipeline of a resync.
const RESYNC_BATCH: usize = 512;

/// One node of a cluster on Redis: its registry lease, its route store, group log and
/// relay, and a task that keeps its state in Redis. See the [module docs](self).
#[derive(Debug)]
pub struct ClusterNode {
    shared: Arc<NodeShared>,
    group_log: Arc<RedisGroupLog<RedisConnection>>,
    stop: CancellationToken,
    watch: Mutex<Option<JoinHandle<()>>>,
    /// The key prefix (for the group history).
    prefix: String,
}

impl ClusterNode {
    /// Validates `config`, connects to Redis, registers the node (its heartbeat starts),
    /// starts the relay (subscribed to this node's inbox), and starts the watch task, all
    /// on the current runtime. Give [`ClusterNode::route_store`],
    /// [`ClusterNode::group_log`] and [`ClusterNode::relay`] to the server and group
    /// layer, then [`ClusterNode::attach`] the server.
    ///
    /// # Errors
    /// [`Error::Config`] for a value out of range, [`Error::Redis`] if Redis cannot be reached,
    /// [`Error::NodeIdTaken`] if a live node holds `node_id`.
    ///
    /// # Cancel safety
    /// If cancelled after the registration, the node entry expires after one node TTL
    /// (the id stays taken until then); nothing else is left behind.
    pub async fn start(config: ClusterConfig) -> Result<ClusterNode> {
        config.validate()?;
        let prefix = config.key_prefix.as_str();
        let relay_config = RelayConfig {
            prefix: prefix.to_owned(),
            timeout: config.relay_timeout,
            ..RelayConfig::default()
        };
        // The relay starts last (it subscribes to this node's inbox, which must not
        // happen for a node id another node holds); its `start` consumes a connection.
        let (conn, start_relay): (RedisConnection, StartRelay) = match &config.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let conn = connect_failing_fast(client.clone()).await?;
                (conn.clone().into(), StartRelay::Single(client, conn))
            }
            RedisTarget::Cluster(urls) => {
                let conn = connect_cluster(urls).await?;
                (conn.clone().into(), StartRelay::Cluster(conn))
            }
        };
        let lease = NodeRegistry::new(conn.clone())
            .with_prefix(prefix)
            .with_ttl(config.node_ttl)?
            .register(NodeAnnouncement {
                id: config.node_id,
                addrs: config.advertise.clone(),
            })
            .await?;
        let routes = RedisRouteStore::new(conn.clone())
            .with_prefix(prefix)
            .with_ttl(config.route_ttl)?
            .with_multi_key_refresh(matches!(config.target, RedisTarget::Single(_)));
        let group_log = RedisGroupLog::new(conn.clone()).with_prefix(prefix);
        let started = match start_relay {
            StartRelay::Single(client, manager) => {
                RedisRelay::start_with_config(client, manager, config.node_id, relay_config).await
            }
            StartRelay::Cluster(cluster) => {
                RedisRelay::start_cluster_with(cluster, config.node_id, relay_config).await
            }
        };
        let relay = match started {
            Ok(relay) => relay,
            Err(err) => {
                // Free the id now rather than one TTL later.
                if let Err(undo) = lease.deregister().await {
                    warn!(error = %undo, "node entry not removed after a failed start");
                }
                return Err(err);
            }
        };
        let shared = Arc::new(NodeShared {
            node_id: config.node_id,
            conn,
            routes: Arc::new(routes),
            relay: Arc::new(relay),
            lease: Arc::new(lease),
            server: OnceLock::new(),
            redis_up: AtomicBool::new(true),
            resyncs: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let period = (config.node_ttl / 3).max(Duration::from_millis(10));
        let watch = tokio::spawn(watch(shared.clone(), period, stop.clone()));
        info!(
            node = config.node_id,
            route_ttl_ms = config.route_ttl.as_millis() as u64,
            node_ttl_ms = config.node_ttl.as_millis() as u64,
            "joined the cluster"
        );
        Ok(ClusterNode {
            shared,
            group_log: Arc::new(group_log),
            stop,
            watch: Mutex::new(Some(watch)),
            prefix: config.key_prefix.clone(),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> u16 {
        self.shared.node_id
    }

    /// The shared route store, for `ServerBuilder::route_store`.
    pub fn route_store(&self) -> Arc<dyn RouteStore> {
        self.shared.routes.clone()
    }

    /// The shared group log, for `GroupRegistry::with_group_log`.
    pub fn group_log(&self) -> Arc<dyn GroupLog> {
        self.group_log.clone()
    }

    /// A group history in Redis Streams with `config`'s rules, on this node's
    /// connection and key prefix, for `GroupRegistry::with_history`: a client that
    /// reconnects to any node recovers from it.
    ///
    /// # Errors
    /// [`Error::Config`] when a rule is out of range.
    pub fn history(
        &self,
        config: longconn_group::HistoryConfig,
    ) -> Result<Arc<dyn longconn_group::GroupHistory>> {
        let history =
            crate::RedisHistory::new(self.shared.conn.clone(), config)?.with_prefix(&self.prefix);
        Ok(Arc::new(history))
    }

    /// The relay, for both `ServerBuilder::relay` and `GroupRegistry::with_relay` (one
    /// relay, so that group hints and deliveries reach the same nodes).
    pub fn relay(&self) -> Arc<dyn Relay> {
        self.shared.relay.clone()
    }

    /// Connects the node to its server: relay messages for this node go to the server's
    /// `RelayInbox`, the registry entry's connection count follows the server's hub, and
    /// a Redis restart re-writes the server's routes. Once: later calls are ignored.
    pub fn attach(&self, server: &Server) {
        if server.config().node_id() != self.shared.node_id {
            warn!(
                cluster = self.shared.node_id,
                server = server.config().node_id(),
                "cluster node attached to a server with another node id"
            );
        }
        self.shared.relay.attach(server.relay_inbox());
        let _ = self.shared.server.set(server.clone());
    }

    /// Whether the last look at Redis (every heartbeat interval) succeeded.
    pub fn redis_available(&self) -> bool {
        self.shared.redis_up.load(Ordering::Relaxed)
    }

    /// Times Redis came back (with a new run id, or after the watch found it
    /// unreachable) and this node wrote its routes and group memberships again.
    pub fn resyncs(&self) -> u64 {
        self.shared.resyncs.load(Ordering::Relaxed)
    }

    /// Whether another instance took this node's id (after this one's entry expired):
    /// the node should stop serving.
    pub fn lease_lost(&self) -> bool {
        self.shared.lease.is_lost()
    }

    /// Phase 1 of a shutdown: marks the node draining in the registry, at once.
    ///
    /// # Errors
    /// Redis could not be reached (the flag is written by the next heartbeat), or
    /// another instance holds the id.
    ///
    /// # Cancel safety
    /// Cancel safe (see `NodeLease::set_draining`).
    pub async fn drain(&self) -> Result<()> {
        self.shared.lease.set_draining(true).await
    }

    /// The end of a shutdown, after the server's (which unregistered its routes): stops
    /// the watch task, stops the relay (unsubscribes: this node is `Offline` to the
    /// others from then on), and removes the node's registry entry.
    ///
    /// # Errors
    /// The entry could not be removed (it then expires after one node TTL).
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled shutdown may leave the entry to expire on its own.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        let watch = lock(&self.watch).take();
        if let Some(watch) = watch {
            let _ = watch.await;
        }
        self.shared.relay.shutdown().await;
        let shared = self.shared.clone();
        drop(self);
        // The watch task has ended, so the node holds the only handle to the lease
        // unless a clone of the shared state is still alive somewhere.
        match Arc::try_unwrap(shared).map(|shared| Arc::try_unwrap(shared.lease)) {
            Ok(Ok(lease)) => lease.deregister().await,
            _ => {
                warn!("node lease still shared at shutdown; its entry expires after one TTL");
                Ok(())
            }
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Every `period`: feeds the connection count to the lease, and looks at Redis's run
/// id; a new one after a known one means Redis restarted and lost this node's state,
/// which is written again at once.
async fn watch(shared: Arc<NodeShared>, period: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known_run_id: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Some(server) = shared.server.get() {
            shared.lease.set_connections(server.hub().len() as u64);
        }
        let run_id = tokio::select! {
            _ = stop.cancelled() => return,
            run_id = redis_run_id(&shared.conn) => run_id,
        };
        match run_id {
            Ok(run_id) => {
                let was_down = !shared.redis_up.swap(true, Ordering::Relaxed);
                if was_down {
                    info!("redis reachable again");
                }
                let restarted = known_run_id
                    .as_ref()
                    .is_some_and(|known| run_id.as_ref() != Some(known));
                // After an outage without a restart, group hints sent meanwhile were
                // lost (and routes may have expired): write the state again as well.
                if restarted || was_down {
                    warn!(
                        restarted,
                        "redis back after an outage: writing this node's state again"
                    );
                    match resync(&shared).await {
                        Ok(()) => {
                            shared.resyncs.fetch_add(1, Ordering::Relaxed);
                        }
                        // Keep the old run id: the next tick tries again.
                        Err(err) => {
                            warn!(error = %err, "resync failed; retrying next period");
                            continue;
                        }
                    }
                }
                known_run_id = run_id;
            }
            Err(err) => {
                if shared.redis_up.swap(false, Ordering::Relaxed) {
                    warn!(error = %err, "redis unreachable; remote pushes fail until it is back");
                }
            }
        }
    }
}

/// The crate's error inside a [`longconn_server::RouteStoreError`] from our own store.
fn from_store(err: longconn_server::RouteStoreError) -> Error {
    match err.0.downcast::<Error>() {
        Ok(err) => *err,
        Err(other) => Error::Malformed {
            key: "routes".into(),
            reason: other.to_string(),
        },
    }
}

/// Redis's `run_id` (`INFO server`): a new value means a new process, without the old
/// one's data unless it persisted them.
///
/// On a Redis Cluster the command reaches one node of many, so its run id says nothing:
/// there the watch only sees outages (`PING`), and a restarted shard's lost state comes
/// back with the route refresh (TTL/3) and the relay's group refresh.
async fn redis_run_id(conn: &RedisConnection) -> Result<Option<String>> {
    let mut conn = conn.clone();
    if matches!(conn, RedisConnection::Cluster(_)) {
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        return Ok(None);
    }
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(|id| Some(id.trim().to_owned()))
        .ok_or_else(|| Error::Malformed {
            key: "INFO server".into(),
            reason: "no run_id".into(),
        })
}

/// Writes every local route (the refresh script: only where absent or ours) and every
/// local group membership again, a pipeline per [`RESYNC_BATCH`].
async fn resync(shared: &NodeShared) -> Result<()> {
    if let Some(server) = shared.server.get() {
        let node = shared.node_id;
        let routes: Vec<_> = server
            .hub()
            .devices()
            .into_iter()
            .map(|(device, conn_id)| (device, Route { conn_id, node }))
            .collect();
        for chunk in routes.chunks(RESYNC_BATCH) {
            shared.routes.refresh(chunk).await.map_err(from_store)?;
        }
    }
    let groups = shared.relay.refresh_groups().await?;
    info!(groups, "node state written again after a redis restart");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> ClusterConfig {
        ClusterConfig::new(RedisTarget::Single("redis://127.0.0.1:6379/".into()), 3)
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = single();
        config.validate().unwrap();
        assert_eq!(config.route_ttl, Duration::from_secs(30));
        assert!(
            config.route_ttl <= Duration::from_secs(30),
            "issue 13: at most 30 s"
        );
        assert_eq!(config.node_ttl, Duration::from_secs(15));
        assert_eq!(config.relay_timeout, Duration::from_secs(2));
        assert_eq!(config.key_prefix, "lc:");
        assert!(config.advertise.is_empty());
    }

    #[test]
    fn values_out_of_range_are_named() {
        type Change = fn(&mut ClusterConfig);
        let cases: [(Change, &str); 8] = [
            (|c| c.route_ttl = Duration::from_millis(29), "route ttl"),
            (|c| c.route_ttl = Duration::from_secs(3601), "route ttl"),
            (|c| c.node_ttl = Duration::ZERO, "node ttl"),
            (|c| c.relay_timeout = Duration::ZERO, "relay timeout"),
            (|c| c.key_prefix = "a b".into(), "key prefix"),
            (
                |c| c.target = RedisTarget::Single(String::new()),
                "redis url",
            ),
            (|c| c.target = RedisTarget::Cluster(Vec::new()), "seed url"),
            (
                |c| {
                    c.advertise.insert("tcp".into(), String::new());
                },
                "advertised",
            ),
        ];
        for (change, named) in cases {
            let mut config = single();
            change(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(named), "{err} should name {named}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_redis_cluster_is_a_redis_error() {
        let mut config = single();
        config.target = RedisTarget::Cluster(vec!["redis://127.0.0.1:1/".into()]);
        let err = ClusterNode::start(config).await.unwrap_err();
        assert!(matches!(err, Error::Redis(_)), "{err}");
    }
}

//! [`NodeRegistry`]: which access nodes are live, where they listen, how loaded they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Pipeline, Script};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::script::query_scripted;
use crate::{Error, Result, ttl_millis};

/// KEYS[1]: the node's key; KEYS[2]: the node set. ARGV[1]: the entry (JSON); ARGV[2]:
/// this instance's token; ARGV[3]: TTL ms; ARGV[4]: node id. Writes the entry if the key
/// is absent (expired, or Redis lost it) or ours; returns 0, writing nothing, if another
/// instance holds the id.
const HEARTBEAT: &str = r"
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['instance'] ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
";

/// KEYS[1]: the node's key; KEYS[2]: the node set. ARGV[1]: this instance's token;
/// ARGV[2]: node id. Deletes the entry and the id only if they are ours.
const DEREGISTER: &str = r"
local v = redis.call('GET', KEYS[1])
if v and cjson.decode(v)['instance'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// What a node says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeAnnouncement {
    /// The node id (the top 16 bits of its connection ids; `ServerConfig::node_id`).
    pub id: u16,
    /// Advertised address per transport, e.g. `"tcp" -> "10.0.0.1:7100"`,
    /// `"ws" -> "ws://10.0.0.1:7101/ws"`: what the control layer hands to clients.
    pub addrs: BTreeMap<String, String>,
}

/// A live node's entry, as [`NodeRegistry::list`] reads it. Stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node id.
    pub id: u16,
    /// Advertised address per transport.
    pub addrs: BTreeMap<String, String>,
    /// Connections it held at its last heartbeat.
    pub connections: u64,
    /// When it registered, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Whether it is draining: the control layer sends no new clients there.
    pub draining: bool,
    /// A random token of the process that registered (hex): tells a restarted node from
    /// the old one whose entry has not expired yet.
    pub instance: String,
}

/// Live access nodes in Redis: one key per node with a TTL, kept alive by the heartbeat
/// of the [`NodeLease`] that [`NodeRegistry::register`] returns.
#[derive(Clone)]
pub struct NodeRegistry<C = ConnectionManager> {
    conn: C,
    keys: Keys,
    ttl_ms: u64,
    heartbeat: Script,
    deregister: Script,
}

impl<C> std::fmt::Debug for NodeRegistry<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRegistry")
            .field("keys", &self.keys)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl NodeRegistry {
    /// A node's entry outlives its last heartbeat by this much unless set: 15 s. The
    /// heartbeat runs every third of the TTL (5 s), so two missed beats in a row do not
    /// make a live node disappear; a dead node is gone at most 15 s after its last beat.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
}

impl<C> NodeRegistry<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A registry on `conn` with the default prefix and TTL.
    pub fn new(conn: C) -> NodeRegistry<C> {
        NodeRegistry {
            conn,
            keys: Keys::new(DEFAULT_PREFIX),
            ttl_ms: NodeRegistry::DEFAULT_TTL.as_millis() as u64,
            heartbeat: Script::new(HEARTBEAT),
            deregister: Script::new(DEREGISTER),
        }
    }

    /// Sets the entry TTL (at least 3 ms); the heartbeat runs every third of it.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<NodeRegistry<C>> {
        let ms = ttl_millis(ttl, "node ttl must be at least 3 ms")?;
        if ms < 3 {
            return Err(Error::Config("node ttl must be at least 3 ms"));
        }
        self.ttl_ms = ms;
        Ok(self)
    }

    /// Sets the key prefix (default [`DEFAULT_PREFIX`]).
    pub fn with_prefix(mut self, prefix: &str) -> NodeRegistry<C> {
        self.keys = Keys::new(prefix);
        self
    }

    /// How often a lease's heartbeat refreshes its entry: a third of the TTL.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.ttl_ms / 3)
    }

    /// Registers a node and starts its heartbeat (a task on the current runtime, owned
    /// by the returned lease). One round trip: `SET NX PX` of the entry, and the id into
    /// the node set. Fails with [`Error::NodeIdTaken`] if a live node holds the id.
    ///
    /// # Cancel safety
    /// If cancelled after Redis took the entry, the entry expires after one TTL with no
    /// heartbeat; the id stays taken until then.
    pub async fn register(&self, node: NodeAnnouncement) -> Result<NodeLease<C>> {
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let info = NodeInfo {
            id: node.id,
            addrs: node.addrs,
            connections: 0,
            started_at_ms,
            draining: false,
            instance: format!("{:016x}", fastrand::u64(..)),
        };
        let key = self.keys.node(node.id);
        let mut pipe = Pipeline::with_capacity(3);
        pipe.cmd("SET")
            .arg(&key)
            .arg(to_json(&info))
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms)
            .cmd("GET")
            .arg(&key)
            .cmd("SADD")
            .arg(self.keys.nodes())
            .arg(node.id)
            .ignore();
        let mut conn = self.conn.clone();
        let (set, current): (Option<String>, Option<String>) = pipe.query_async(&mut conn).await?;
        if set.is_none() {
            let holder_instance = current
                .and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok())
                .map(|holder| holder.instance)
                .unwrap_or_default();
            return Err(Error::NodeIdTaken {
                node: node.id,
                holder_instance,
            });
        }
        let shared = Arc::new(LeaseShared {
            registry: self.clone(),
            info: std::sync::Mutex::new(info),
            connections: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(heartbeat(shared.clone(), stop.clone()));
        Ok(NodeLease {
            shared,
            stop,
            task: Some(task),
        })
    }

    /// The live nodes, by id. Two round trips (`SMEMBERS` of the node set, `MGET` of
    /// their entries); ids whose entry expired are pruned from the set (a third).
    pub async fn list(&self) -> Result<Vec<NodeInfo>> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<u16> = redis::cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort_unstable();
        let keys: Vec<String> = ids.iter().map(|&id| self.keys.node(id)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut live = Vec::with_capacity(ids.len());
        let mut dead = Vec::new();
        for ((id, key), value) in ids.into_iter().zip(&keys).zip(values) {
            match value {
                Some(value) => {
                    let info = serde_json::from_str(&value).map_err(|err| Error::Malformed {
                        key: key.clone(),
                        reason: err.to_string(),
                    })?;
                    live.push(info);
                }
                None => dead.push(id),
            }
        }
        if !dead.is_empty() {
            // A node that registers again re-adds itself, so a race here loses nothing
            // for longer than one heartbeat.
            redis::cmd("SREM")
                .arg(self.keys.nodes())
                .arg(&dead)
                .exec_async(&mut conn)
                .await?;
        }
        Ok(live)
    }

    /// Writes `info` if the id is free or ours: `Ok(false)` if another instance holds it.
    async fn beat(&self, info: &NodeInfo) -> Result<bool> {
        let key = self.keys.node(info.id);
        let mut pipe = Pipeline::with_capacity(1);
        pipe.cmd("EVALSHA")
            .arg(self.heartbeat.get_hash())
            .arg(2)
            .arg(&key)
            .arg(self.keys.nodes())
            .arg(to_json(info))
            .arg(&info.instance)
            .arg(self.ttl_ms)
            .arg(info.id);
        let mut conn = self.conn.clone();
        let (written,): (bool,) = query_scripted(&mut conn, &self.heartbeat, &pipe).await?;
        Ok(written)
    }

    async fn remove(&self, info: &NodeInfo) -> Result<bool> {
        let mut pipe = Pipeline::with_capacity(1);
        pipe.cmd("EVALSHA")
            .arg(self.deregister.get_hash())
            .arg(2)
            .arg(self.keys.node(info.id))
            .arg(self.keys.nodes())
            .arg(&info.instance)
            .arg(info.id);
        let mut conn = self.conn.clone();
        let (removed,): (bool,) = query_scripted(&mut conn, &self.deregister, &pipe).await?;
        Ok(removed)
    }
}

fn to_json(info: &NodeInfo) -> String {
    serde_json::to_string(info).expect("a NodeInfo always serializes")
}

/// What a lease and its heartbeat task share.
struct LeaseShared<C> {
    registry: NodeRegistry<C>,
    /// The entry as last written (id, addresses, start, instance never change).
    info: std::sync::Mutex<NodeInfo>,
    connections: AtomicU64,
    draining: AtomicBool,
    /// Another instance took the id: the heartbeat stopped.
    lost: AtomicBool,
}

impl<C> LeaseShared<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn current(&self) -> NodeInfo {
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        info.connections = self.connections.load(Ordering::Relaxed);
        info.draining = self.draining.load(Ordering::Relaxed);
        info.clone()
    }

    /// One heartbeat; `false` once the id is lost.
    async fn beat(&self) -> Result<bool> {
        if self.lost.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let written = self.registry.beat(&self.current()).await?;
        if !written {
            self.lost.store(true, Ordering::Relaxed);
            let id = self.current().id;
            warn!(
                node = id,
                "node id taken by another instance; heartbeat stopped"
            );
        }
        Ok(written)
    }
}

async fn heartbeat<C>(shared: Arc<LeaseShared<C>>, stop: CancellationToken)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let period = shared.registry.heartbeat_interval();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => match shared.beat().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => warn!(error = %err, "node heartbeat failed; retrying next period"),
            },
        }
    }
}

/// A registered node: its heartbeat task, and the values the heartbeat writes. Dropping
/// it stops the heartbeat (the entry then expires after one TTL); [`NodeLease::stop`]
/// also waits for the task, [`NodeLease::deregister`] also removes the entry.
pub struct NodeLease<C = ConnectionManager>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    shared: Arc<LeaseShared<C>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl<C> std::fmt::Debug for NodeLease<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLease")
            .field("info", &self.shared.current())
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

impl<C> NodeLease<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// The entry as the next heartbeat writes it.
    pub fn info(&self) -> NodeInfo {
        self.shared.current()
    }

    /// Sets the connection count the next heartbeat writes.
    pub fn set_connections(&self, connections: u64) {
        self.shared
            .connections
            .store(connections, Ordering::Relaxed);
    }

    /// Whether another instance took the node id (after this one's entry expired): the
    /// heartbeat has stopped and this node should stop serving under that id.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// Marks the node draining (or not) and writes the entry now, so the control layer
    /// stops sending clients here without waiting for a heartbeat.
    ///
    /// # Cancel safety
    /// Cancel safe: the flag is set at once, and the next heartbeat writes it if this
    /// write was cancelled.
    pub async fn set_draining(&self, draining: bool) -> Result<()> {
        self.shared.draining.store(draining, Ordering::Relaxed);
        if self.shared.beat().await? {
            Ok(())
        } else {
            let node = self.shared.current().id;
            Err(Error::NodeIdTaken {
                node,
                holder_instance: String::new(),
            })
        }
    }

    /// Stops the heartbeat and waits for its task; the entry stays until its TTL runs
    /// out (what a crashed node leaves behind).
    pub async fn stop(mut self) {
        self.stop_task().await;
    }

    /// Stops the heartbeat, waits for its task, and removes the entry (if this instance
    /// still holds it). The end of a drain.
    pub async fn deregister(mut self) -> Result<()> {
        self.stop_task().await;
        self.shared.registry.remove(&self.shared.current()).await?;
        Ok(())
    }

    async fn stop_task(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl<C> Drop for NodeLease<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

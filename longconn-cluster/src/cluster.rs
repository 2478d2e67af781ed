//! [`RedisClusterConnection`]: the crate's types on a Redis Cluster, batches split by
//! shard.
//!
//! redis-rs's cluster connection (`cluster-async`) routes one command by its key and
//! follows `MOVED`/`ASK`, but sends a whole pipeline to the node of its first key and
//! refuses a pipeline whose keys lie in different slots (`CROSSSLOT`). The route store's
//! batches touch one key per device, spread over every slot; so this wrapper groups a
//! pipeline's commands by the shard that owns their slot (from its own copy of the slot
//! map, `CLUSTER SLOTS`), sends one pipeline per shard, all at once, and puts the answers
//! back in order: one round trip per shard touched, whatever the batch size. A
//! multi-key `MGET` is split the same way (one `MGET` per slot, as Redis Cluster
//! requires, in one pipeline per shard).
//!
//! The slot map here only groups commands: each shard's pipeline is routed by the slot of
//! its first command, and redis-rs (whose map follows `MOVED`) picks the node. After a
//! failed shard request the map is read again before the next batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Arg, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::slot::{SLOTS, key_slot};
use crate::{CONNECTION_TIMEOUT, Error, RESPONSE_TIMEOUT, Result};

/// Connects to the Redis Cluster that `urls` (`redis://host:port`, one or more of its
/// nodes) belong to, and reads its slot map. The connection is cloneable and shared;
/// give it to [`crate::RedisRouteStore::new`], [`crate::RedisGroupLog::new`],
/// [`crate::NodeRegistry::new`] and [`crate::RedisRelay::start_cluster`]. Replies are
/// bounded by [`RESPONSE_TIMEOUT`], connection attempts by [`CONNECTION_TIMEOUT`].
///
/// # Cancel safety
/// Cancel safe: dropping the future abandons the connection attempt.
pub async fn connect_cluster<S: AsRef<str>>(urls: &[S]) -> Result<RedisClusterConnection> {
    let urls: Vec<String> = urls.iter().map(|u| u.as_ref().to_owned()).collect();
    if urls.is_empty() {
        return Err(Error::Config("a Redis Cluster needs at least one node url"));
    }
    let client = ClusterClientBuilder::new(urls.clone())
        .connection_timeout(CONNECTION_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .build()?;
    let conn = client.get_async_connection().await?;
    let connection = RedisClusterConnection {
        inner: conn,
        shared: Arc::new(Shared {
            urls,
            map: RwLock::new(None),
            stale: AtomicBool::new(true),
            shard_requests: AtomicU64::new(0),
        }),
    };
    connection.slot_map().await?;
    Ok(connection)
}

/// A multiplexed connection to a Redis Cluster (one socket per node, shared by every
/// clone) that sends a batch as one pipeline per shard. Made by [`connect_cluster`].
#[derive(Clone)]
pub struct RedisClusterConnection {
    inner: ClusterConnection,
    shared: Arc<Shared>,
}

struct Shared {
    /// The urls it was made from: the relay's subscriber connects with them.
    urls: Vec<String>,
    map: RwLock<Option<Arc<SlotMap>>>,
    /// Read the map again before the next batch.
    stale: AtomicBool,
    shard_requests: AtomicU64,
}

/// Which shard (master) serves each slot.
struct SlotMap {
    /// Per slot, an index into the shards (`u16::MAX`: no master serves it).
    shard_of: Vec<u16>,
    shards: usize,
}

impl std::fmt::Debug for RedisClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterConnection")
            .field("urls", &self.shared.urls)
            .field("shards", &self.shards())
            .finish_non_exhaustive()
    }
}

impl RedisClusterConnection {
    /// The node urls it was made from.
    pub fn urls(&self) -> &[String] {
        &self.shared.urls
    }

    /// How many shards (masters) its slot map knows; 0 before it has read one.
    pub fn shards(&self) -> usize {
        read(&self.shared.map).as_ref().map_or(0, |m| m.shards)
    }

    /// Requests sent to Redis since it was made: one per single command, one per shard
    /// pipeline of a batch (a batch over three shards counts three).
    pub fn requests_sent(&self) -> u64 {
        self.shared.shard_requests.load(Ordering::Relaxed)
    }

    /// The slot map, read from the cluster first if it is stale.
    async fn slot_map(&self) -> RedisResult<Arc<SlotMap>> {
        if !self.shared.stale.load(Ordering::Acquire)
            && let Some(map) = read(&self.shared.map).clone()
        {
            return Ok(map);
        }
        let mut conn = self.inner.clone();
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await?;
        let map = Arc::new(parse_cluster_slots(reply)?);
        *self.shared.map.write().unwrap_or_else(|e| e.into_inner()) = Some(map.clone());
        self.shared.stale.store(false, Ordering::Release);
        Ok(map)
    }

    fn mark_stale(&self) {
        self.shared.stale.store(true, Ordering::Release);
    }

    /// Sends the commands of `pipeline` (answers `offset..offset + count` of a
    /// non-transaction pipeline are all of them) grouped by shard.
    async fn split_pipeline(&mut self, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
        let map = self.slot_map().await?;
        let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
        let slots: Vec<Option<u16>> = commands.iter().map(|cmd| command_slot(cmd)).collect();
        // Commands without a key go with the first command that has one.
        let default_slot = slots.iter().flatten().next().copied();
        let Some(default_slot) = default_slot else {
            self.shared.shard_requests.fetch_add(1, Ordering::Relaxed);
            return self
                .inner
                .req_packed_commands(pipeline, 0, commands.len())
                .await;
        };
        // shard -> (slot to route by, indexes of its commands)
        let mut groups: BTreeMap<u16, (u16, Vec<usize>)> = BTreeMap::new();
        for (i, slot) in slots.iter().enumerate() {
            let slot = slot.unwrap_or(default_slot);
            let shard = map.shard_of[usize::from(slot)];
            groups.entry(shard).or_insert((slot, Vec::new())).1.push(i);
        }
        let sends = groups.into_values().map(|(slot, indexes)| {
            let mut sub = Pipeline::with_capacity(indexes.len());
            for &i in &indexes {
                sub.add_command(commands[i].clone());
            }
            let mut conn = self.inner.clone();
            let n = indexes.len();
            async move {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                (indexes, conn.route_pipeline(sub, 0, n, route).await)
            }
        });
        self.shared
            .shard_requests
            .fetch_add(sends.len() as u64, Ordering::Relaxed);
        let mut answers = vec![Value::Nil; commands.len()];
        let mut failure = None;
        for (indexes, result) in futures::future::join_all(sends).await {
            match result {
                Ok(values) => {
                    for (i, value) in indexes.into_iter().zip(values) {
                        answers[i] = value;
                    }
                }
                Err(err) => failure = Some(err),
            }
        }
        if let Some(err) = failure {
            self.mark_stale();
            return Err(err);
        }
        Ok(answers)
    }

    /// `MGET` over several slots: one `MGET` per slot, in one pipeline per shard.
    async fn split_mget(&mut self, keys: Vec<&[u8]>) -> RedisResult<Value> {
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_slot.entry(key_slot(key)).or_default().push(i);
        }
        let mut pipe = Pipeline::with_capacity(by_slot.len());
        for indexes in by_slot.values() {
            pipe.cmd("MGET");
            for &i in indexes {
                pipe.arg(keys[i]);
            }
        }
        let replies = self.split_pipeline(&pipe).await?;
        let mut values = vec![Value::Nil; keys.len()];
        for (indexes, reply) in by_slot.into_values().zip(replies) {
            let Value::Array(found) = reply.extract_error()? else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Parse,
                    "MGET did not answer an array",
                )));
            };
            for (i, value) in indexes.into_iter().zip(found) {
                values[i] = value;
            }
        }
        Ok(Value::Array(values))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// The slot of the key a command touches, for the commands this crate sends (the first
/// argument after the name; the first key of `EVAL`/`EVALSHA`; the channel of
/// `SPUBLISH`); `None` for a command without a key.
fn command_slot(cmd: &Cmd) -> Option<u16> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        let _script = args.next()?;
        let numkeys = args.next()?;
        if numkeys == b"0" {
            return None;
        }
        return args.next().map(key_slot);
    }
    if name.eq_ignore_ascii_case(b"PING")
        || name.eq_ignore_ascii_case(b"SCRIPT")
        || name.eq_ignore_ascii_case(b"CLUSTER")
        || name.eq_ignore_ascii_case(b"INFO")
    {
        return None;
    }
    args.next().map(key_slot)
}

/// `MGET`'s keys, if `cmd` is an `MGET` over more than one slot.
fn multi_slot_mget(cmd: &Cmd) -> Option<Vec<&[u8]>> {
    let mut args = cmd.args_iter().filter_map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    if !args.next()?.eq_ignore_ascii_case(b"MGET") {
        return None;
    }
    let keys: Vec<&[u8]> = args.collect();
    let first = key_slot(keys.first()?);
    keys.iter()
        .any(|key| key_slot(key) != first)
        .then_some(keys)
}

/// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ..], replicas..], ..]`.
fn parse_cluster_slots(reply: Value) -> RedisResult<SlotMap> {
    let bad = |what: &'static str| redis::RedisError::from((redis::ErrorKind::Parse, what));
    let Value::Array(ranges) = reply else {
        return Err(bad("CLUSTER SLOTS did not answer an array"));
    };
    let mut shard_of = vec![u16::MAX; usize::from(SLOTS)];
    let mut masters: Vec<Vec<u8>> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad("a CLUSTER SLOTS range is not an array"));
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad("a CLUSTER SLOTS range lacks start, end or master"));
        };
        // The node id if there is one, else host and port: what tells masters apart.
        let name = match (master.first(), master.get(1), master.get(2)) {
            (_, _, Some(Value::BulkString(id))) => id.clone(),
            (Some(Value::BulkString(host)), Some(Value::Int(port)), _) => {
                let mut name = host.clone();
                name.extend_from_slice(format!(":{port}").as_bytes());
                name
            }
            _ => return Err(bad("a CLUSTER SLOTS master has no id or address")),
        };
        let index = match masters.iter().position(|m| *m == name) {
            Some(index) => index,
            None => {
                masters.push(name);
                masters.len() - 1
            }
        };
        let (start, end) = (*start, *end);
        if !(0..i64::from(SLOTS)).contains(&start) || !(start..i64::from(SLOTS)).contains(&end) {
            return Err(bad("a CLUSTER SLOTS range is out of bounds"));
        }
        for slot in start..=end {
            shard_of[slot as usize] = index as u16;
        }
    }
    Ok(SlotMap {
        shard_of,
        shards: masters.len(),
    })
}

impl ConnectionLike for RedisClusterConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            if let Some(keys) = multi_slot_mget(cmd) {
                return self.split_mget(keys).await;
            }
            self.shared.shard_requests.fetch_add(1, Ordering::Relaxed);
            let result = self.inner.req_packed_command(cmd).await;
            if result.is_err() {
                self.mark_stale();
            }
            result
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            if pipeline.is_transaction() {
                // A transaction must stay on one slot: redis-rs routes it as it is.
                self.shared.shard_requests.fetch_add(1, Ordering::Relaxed);
                return self
                    .inner
                    .req_packed_commands(pipeline, offset, count)
                    .await;
            }
            self.split_pipeline(pipeline).await
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// One Redis or a Redis Cluster behind one type, for callers that pick at run time:
/// every type of this crate takes it (`RedisRouteStore<RedisConnection>`, ...).
#[derive(Clone, Debug)]
pub enum RedisConnection {
    /// One Redis: redis-rs's reconnecting multiplexed connection ([`crate::connect`]).
    Single(ConnectionManager),
    /// A Redis Cluster ([`connect_cluster`]).
    Cluster(RedisClusterConnection),
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> RedisConnection {
        RedisConnection::Single(conn)
    }
}

impl From<RedisClusterConnection> for RedisConnection {
    fn from(conn: RedisClusterConnection) -> RedisConnection {
        RedisConnection::Cluster(conn)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(conn) => conn.get_db(),
            RedisConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: i64, end: i64, id: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(id.as_bytes().to_vec()),
            ]),
        ])
    }

    #[test]
    fn cluster_slots_map_every_slot_to_its_master() {
        let reply = Value::Array(vec![
            range(0, 5460, "a", 7000),
            range(10923, 16383, "c", 7002),
            range(5461, 10922, "b", 7001),
        ]);
        let map = parse_cluster_slots(reply).unwrap();
        assert_eq!(map.shards, 3);
        assert_eq!(map.shard_of[0], 0);
        assert_eq!(map.shard_of[5461], 2);
        assert_eq!(map.shard_of[16383], 1);
        assert!(parse_cluster_slots(Value::Array(vec![range(0, 16384, "a", 1)])).is_err());
        assert!(parse_cluster_slots(Value::Nil).is_err());
    }

    #[test]
    fn commands_are_routed_by_their_key() {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg("abc").arg(2).arg("lc:{nodes}:n:1").arg("x");
        assert_eq!(command_slot(&evalsha), Some(key_slot(b"nodes")));
        let mut set = redis::cmd("SET");
        set.arg("lc:r:3:app:phone").arg("1:1");
        assert_eq!(command_slot(&set), Some(key_slot(b"lc:r:3:app:phone")));
        assert_eq!(command_slot(&redis::cmd("PING")), None);
        let mut mget = redis::cmd("MGET");
        mget.arg("{a}1").arg("{a}2");
        assert!(multi_slot_mget(&mget).is_none(), "one slot: sent as it is");
        mget.arg("{b}3");
        assert_eq!(multi_slot_mget(&mget).unwrap().len(), 3);
    }
}

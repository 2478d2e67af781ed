//! [`RedisRelay`]: delivery between access nodes over Redis sharded pub/sub.

mod subscriber;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use longconn_server::{
    GroupDelivery, GroupMessage, KickRequest, Relay, RelayBatch, RelayInbox, RelayResult,
    RemoteGroupReport, RemotePresence,
};
use redis::Pipeline;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::cluster::{RedisClusterConnection, RedisConnection};
use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::{Error, Result};
pub use subscriber::RelayLag;
use subscriber::{LagCounters, Queued, Source};
use wire::{Body, Message};

/// Requests received and not yet handled before new ones are dropped (their senders
/// get `Unknown` at their timeout); see also `subscriber::MAX_QUEUED_BYTES`.
const REQUEST_QUEUE: usize = 4096;
/// Group hints waiting for Redis before new ones are dropped (and counted).
const HINT_QUEUE: usize = 65_536;
/// Most hints (or group refreshes) applied in one pipeline.
const HINT_BATCH: usize = 512;

/// A hint from the group layer, applied in order.
#[derive(Debug)]
enum Hint {
    Active(String),
    Inactive(String),
}

/// Settings of a [`RedisRelay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Key and channel prefix (default [`DEFAULT_PREFIX`]); the same on every node.
    pub prefix: String,
    /// Bound on one call's wait for its answer (at least 1 ms; default
    /// [`RedisRelay::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// How often the node adds itself again to the node set of every group it has
    /// members in, and extends the set's TTL (at least 1 ms; default
    /// [`RedisRelay::DEFAULT_GROUP_REFRESH`]). The set's TTL is three times this.
    pub group_refresh: Duration,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: RedisRelay::DEFAULT_TIMEOUT,
            group_refresh: RedisRelay::DEFAULT_GROUP_REFRESH,
        }
    }
}

/// What the relay's tasks share.
struct Inner {
    node: u16,
    keys: Keys,
    conn: RedisConnection,
    timeout: Duration,
    group_refresh: Duration,
    next_id: AtomicU64,
    /// Calls waiting for an answer, by correlation id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Body>>>,
    /// This node's server, once attached.
    inbox: OnceLock<RelayInbox>,
    hints: mpsc::Sender<Hint>,
    hints_dropped: AtomicU64,
    /// Groups with members on this node (from the hints), refreshed in Redis by the hint
    /// task every `group_refresh`.
    local_groups: Mutex<HashSet<String>>,
    lag: LagCounters,
    /// Node ids removed from group sets because they were not in the node registry.
    pruned: AtomicU64,
    /// Times the inbox was subscribed again after Redis or the connection ended it.
    resubscribed: AtomicU64,
    stop: CancellationToken,
}

/// A [`Relay`] over Redis sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`, Redis >= 7), one
/// inbox channel per node (`{prefix}relay:{<node>}`, hash-tagged by the node id), on one
/// Redis or a Redis Cluster.
///
/// A call publishes one binary message (docs/CLUSTER.md "Relay messages") to the target
/// node's channel with a fresh correlation id and waits, at most the relay timeout
/// (default [`RedisRelay::DEFAULT_TIMEOUT`]), for the answer that node publishes to this
/// node's channel. `SPUBLISH` says how many subscribers got the message: 0 means no node
/// listens there (it does not exist or is down), which is answered `Offline` at once;
/// no answer in time is `Unknown`. Requests are handled in arrival order by one task, so
/// messages from one node to another are applied in the order they were sent.
///
/// The inbox is read on a dedicated RESP3 connection whose push messages are handled as
/// redis-rs reads them (answers to their calls, requests into a bounded queue), so a
/// slow handler never makes Redis's pub/sub output buffer grow; [`RedisRelay::lag`] says
/// how far behind the handler is.
///
/// `group_active` / `group_inactive` maintain a Redis set per group (`{prefix}gn:{group}`)
/// of the nodes with members, from a background task, in order; the same task adds the
/// node again to the sets of all its groups every [`RelayConfig::group_refresh`] and
/// extends their TTL. `publish_group` sends the message to every other node in that set
/// at once, and `group_members` (presence) asks each of them for its local member count
/// the same way; a node without a subscriber whose node registry entry is gone is
/// removed from the set.
///
/// Build it with [`RedisRelay::start`] (one Redis) or [`RedisRelay::start_cluster`],
/// give it to the server (and group layer), then [`RedisRelay::attach`] the server's
/// [`RelayInbox`]. [`RedisRelay::shutdown`] stops its tasks and waits for them.
pub struct RedisRelay {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRelay")
            .field("node", &self.inner.node)
            .field("keys", &self.inner.keys)
            .field("timeout", &self.inner.timeout)
            .field("lag", &self.lag())
            .finish_non_exhaustive()
    }
}

/// Removes a call's pending entry however the call ends (answer, timeout, cancel).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a call ended.
enum Reply {
    Answer(Body),
    /// Nobody subscribes to that node's channel.
    NoNode,
    /// Sent (or maybe sent), no answer in time.
    NoAnswer,
}

impl RedisRelay {
    /// Bound on one call's wait for its answer unless set: 2 s, below the server's and
    /// the group layer's default `relay_timeout` (5 s), so the relay answers `Unknown`
    /// itself.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// How often a node re-adds itself to the node sets of its groups unless set: 30 s
    /// (the sets' TTL is three times that, 90 s, like the route TTL).
    pub const DEFAULT_GROUP_REFRESH: Duration = Duration::from_secs(30);

    /// One Redis (>= 7): subscribes to this node's inbox with `SSUBSCRIBE` on a RESP3
    /// connection of its own made from `client`'s address, and starts the relay's tasks
    /// on the current runtime: the subscriber, the request handler and the group-hint
    /// writer. Publishes and hints go through `conn`. Messages for this node that arrive
    /// before [`RedisRelay::attach`] are answered `Offline`.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled start drops its connection and spawns nothing.
    pub async fn start(
        client: redis::Client,
        conn: ConnectionManager,
        node: u16,
    ) -> Result<RedisRelay> {
        RedisRelay::start_with(client, conn, node, DEFAULT_PREFIX, Self::DEFAULT_TIMEOUT).await
    }

    /// [`RedisRelay::start`] with a key prefix and a call timeout (at least 1 ms).
    pub async fn start_with(
        client: redis::Client,
        conn: ConnectionManager,
        node: u16,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisRelay> {
        let config = RelayConfig {
            prefix: prefix.to_owned(),
            timeout,
            ..RelayConfig::default()
        };
        RedisRelay::start_with_config(client, conn, node, config).await
    }

    /// [`RedisRelay::start`] with every setting.
    pub async fn start_with_config(
        client: redis::Client,
        conn: ConnectionManager,
        node: u16,
        config: RelayConfig,
    ) -> Result<RedisRelay> {
        let source = Source::Single(subscriber::resp3(&client)?);
        RedisRelay::start_on(source, RedisConnection::Single(conn), node, config).await
    }

    /// A Redis Cluster (>= 7): like [`RedisRelay::start`], with the inbox subscribed on
    /// the shard that owns its channel's slot, through a dedicated RESP3 cluster
    /// connection made from `conn`'s urls (one connection per Redis node, however many
    /// channels); publishes and hints go through `conn` (see
    /// [`crate::connect_cluster`]).
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled start drops its connection and spawns nothing.
    pub async fn start_cluster(conn: RedisClusterConnection, node: u16) -> Result<RedisRelay> {
        RedisRelay::start_cluster_with(conn, node, RelayConfig::default()).await
    }

    /// [`RedisRelay::start_cluster`] with every setting.
    pub async fn start_cluster_with(
        conn: RedisClusterConnection,
        node: u16,
        config: RelayConfig,
    ) -> Result<RedisRelay> {
        let source = Source::Cluster(conn.urls().to_vec());
        RedisRelay::start_on(source, RedisConnection::Cluster(conn), node, config).await
    }

    async fn start_on(
        source: Source,
        conn: RedisConnection,
        node: u16,
        config: RelayConfig,
    ) -> Result<RedisRelay> {
        if config.timeout < Duration::from_millis(1) {
            return Err(Error::Config("relay timeout must be at least 1 ms"));
        }
        if config.group_refresh < Duration::from_millis(1) {
            return Err(Error::Config("relay group refresh must be at least 1 ms"));
        }
        let (hints, hint_rx) = mpsc::channel(HINT_QUEUE);
        let (requests, request_rx) = mpsc::channel(REQUEST_QUEUE);
        let inner = Arc::new(Inner {
            node,
            keys: Keys::new(&config.prefix),
            conn,
            timeout: config.timeout,
            group_refresh: config.group_refresh,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            inbox: OnceLock::new(),
            hints,
            hints_dropped: AtomicU64::new(0),
            local_groups: Mutex::new(HashSet::new()),
            lag: LagCounters::default(),
            pruned: AtomicU64::new(0),
            resubscribed: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        let supervisor = subscriber::subscribe(inner.clone(), source, requests).await?;
        let tasks = vec![
            tokio::spawn(supervisor),
            tokio::spawn(handle_requests(inner.clone(), request_rx)),
            tokio::spawn(apply_hints(inner.clone(), hint_rx)),
        ];
        Ok(RedisRelay {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// Delivers the messages addressed to this node to `inbox` (the server's
    /// [`longconn_server::Server::relay_inbox`]). Once: later calls are ignored.
    pub fn attach(&self, inbox: RelayInbox) {
        if inbox.node_id() != self.inner.node {
            warn!(
                relay = self.inner.node,
                server = inbox.node_id(),
                "relay attached to a server with another node id"
            );
        }
        let _ = self.inner.inbox.set(inbox);
    }

    /// This relay's node id.
    pub fn node_id(&self) -> u16 {
        self.inner.node
    }

    /// Group hints lost to a full queue.
    pub fn hints_dropped(&self) -> u64 {
        self.inner.hints_dropped.load(Ordering::Relaxed)
    }

    /// How far behind the request handler is: requests read from Redis and not yet
    /// handled (count and bytes), and requests dropped because the queue was full.
    pub fn lag(&self) -> RelayLag {
        self.inner.lag.snapshot()
    }

    /// Node ids this relay removed from group node sets because they had no inbox
    /// subscriber and no node registry entry.
    pub fn pruned_nodes(&self) -> u64 {
        self.inner.pruned.load(Ordering::Relaxed)
    }

    /// Times the inbox was subscribed again after Redis ended the subscription (its slot
    /// moved) or the connection dropped.
    pub fn resubscribed(&self) -> u64 {
        self.inner.resubscribed.load(Ordering::Relaxed)
    }

    /// Writes this node into the node set of every group it has members in now, rather
    /// than at the next periodic refresh: for a node that saw Redis come back without
    /// its data. Answers how many groups were written.
    ///
    /// # Errors
    /// Redis could not be reached; the periodic refresh tries again.
    pub async fn refresh_groups(&self) -> Result<usize> {
        write_group_sets(&self.inner).await
    }

    /// Stops the relay: unsubscribes, applies the group hints already queued, and waits
    /// for its tasks. Calls in progress end `Unknown` at their timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: the stop is signalled before the first await, and the tasks end on
    /// their own; a later call waits for none of them (they were taken).
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Sends `body` to `node` and waits for its answer.
    async fn call(&self, node: u16, body: Body) -> Reply {
        let inner = &*self.inner;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&inner.pending).insert(id, tx);
        let _guard = PendingGuard { inner, id };
        let message = Message {
            from: inner.node,
            id,
            body,
        }
        .encode();
        let mut conn = inner.conn.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
            .arg(inner.keys.relay(node))
            .arg(&message[..])
            .query_async(&mut conn)
            .await;
        match sent {
            Ok(0) => return Reply::NoNode,
            Ok(_) => {}
            Err(err) => {
                warn!(error = %err, node, "relay publish failed");
                return Reply::NoAnswer;
            }
        }
        match tokio::time::timeout(inner.timeout, rx).await {
            Ok(Ok(answer)) => Reply::Answer(answer),
            _ => Reply::NoAnswer,
        }
    }

    /// Sends `body` to each of `others` (nodes of `group`'s node set) at once and
    /// answers their replies in the same order. Nodes nobody listens for (`NoNode`)
    /// hold no members: they are removed from the set if the registry has no entry for
    /// them (`prune_dead_nodes`) and callers do not count them.
    async fn ask_group_nodes(&self, group: &str, others: &[u16], body: Body) -> Vec<Reply> {
        let calls = others.iter().map(|&node| self.call(node, body.clone()));
        let replies = futures::future::join_all(calls).await;
        let silent: Vec<u16> = replies
            .iter()
            .zip(others)
            .filter(|(reply, _)| matches!(reply, Reply::NoNode))
            .map(|(_, &node)| node)
            .collect();
        if !silent.is_empty() {
            prune_dead_nodes(&self.inner, group, &silent).await;
        }
        replies
    }
}

impl Drop for RedisRelay {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

#[async_trait]
impl Relay for RedisRelay {
    async fn push_batch(&self, node: u16, batch: &RelayBatch) -> Vec<RelayResult> {
        let n = batch.targets.len();
        match self.call(node, Body::PushBatch(batch.clone())).await {
            Reply::Answer(Body::PushAnswer(mut results)) => {
                results.resize(n, RelayResult::Unknown);
                results
            }
            Reply::NoNode => vec![RelayResult::Offline; n],
            _ => vec![RelayResult::Unknown; n],
        }
    }

    async fn publish_group(&self, message: &GroupMessage) -> RemoteGroupReport {
        let Some(others) = self.other_group_nodes(&message.group).await else {
            return RemoteGroupReport::default();
        };
        let body = Body::Group(message.clone());
        let mut report = RemoteGroupReport::default();
        for reply in self.ask_group_nodes(&message.group, &others, body).await {
            match reply {
                Reply::Answer(Body::GroupAnswer(delivery)) => {
                    report.nodes += 1;
                    report.delivery += delivery;
                }
                Reply::NoNode => {}
                _ => report.unknown_nodes += 1,
            }
        }
        report
    }

    async fn group_members(&self, group: &str) -> RemotePresence {
        let Some(others) = self.other_group_nodes(group).await else {
            return RemotePresence {
                incomplete: true,
                ..RemotePresence::default()
            };
        };
        let body = Body::Presence(group.to_owned());
        let mut presence = RemotePresence::default();
        for reply in self.ask_group_nodes(group, &others, body).await {
            match reply {
                Reply::Answer(Body::PresenceAnswer(members)) => {
                    presence.nodes += 1;
                    presence.members += usize::try_from(members).unwrap_or(usize::MAX);
                }
                Reply::NoNode => {}
                _ => presence.unknown_nodes += 1,
            }
        }
        presence
    }

    async fn kick(&self, node: u16, request: &KickRequest) -> RelayResult {
        match self.call(node, Body::Kick(request.clone())).await {
            Reply::Answer(Body::KickAnswer(result)) => result,
            Reply::NoNode => RelayResult::Offline,
            _ => RelayResult::Unknown,
        }
    }

    fn group_active(&self, group: &str) {
        lock(&self.inner.local_groups).insert(group.to_owned());
        self.hint(Hint::Active(group.to_owned()));
    }

    fn group_inactive(&self, group: &str) {
        lock(&self.inner.local_groups).remove(group);
        self.hint(Hint::Inactive(group.to_owned()));
    }
}

impl RedisRelay {
    /// The other nodes in `group`'s node set; `None` if Redis could not be read.
    async fn other_group_nodes(&self, group: &str) -> Option<Vec<u16>> {
        let inner = &*self.inner;
        let mut conn = inner.conn.clone();
        match redis::cmd("SMEMBERS")
            .arg(inner.keys.group_nodes(group))
            .query_async::<Vec<u16>>(&mut conn)
            .await
        {
            Ok(nodes) => Some(nodes.into_iter().filter(|&n| n != inner.node).collect()),
            Err(err) => {
                warn!(error = %err, group, "group nodes unreadable");
                None
            }
        }
    }

    fn hint(&self, hint: Hint) {
        if self.inner.hints.try_send(hint).is_err() {
            self.inner.hints_dropped.fetch_add(1, Ordering::Relaxed);
            warn!("group hint queue full or closed; hint dropped");
        }
    }
}

/// Removes from `group`'s node set the `nodes` that no subscriber listens for and that
/// have no node registry entry (dead for longer than the node TTL). A node that only
/// lost its subscription for a moment keeps its registry entry and stays; a node that
/// is removed wrongly (its registry entry expired during a pause) adds itself again at
/// its next group refresh.
async fn prune_dead_nodes(inner: &Inner, group: &str, nodes: &[u16]) {
    let mut conn = inner.conn.clone();
    let entries: Vec<String> = nodes.iter().map(|&n| inner.keys.node(n)).collect();
    // The entries share one hash tag: one `MGET` on one shard.
    let found: Vec<Option<Vec<u8>>> = match redis::cmd("MGET")
        .arg(&entries)
        .query_async(&mut conn)
        .await
    {
        Ok(found) => found,
        Err(err) => {
            warn!(error = %err, "node registry unreadable; group set not pruned");
            return;
        }
    };
    let dead: Vec<u16> = nodes
        .iter()
        .zip(found)
        .filter(|(_, entry)| entry.is_none())
        .map(|(&n, _)| n)
        .collect();
    if dead.is_empty() {
        return;
    }
    match redis::cmd("SREM")
        .arg(inner.keys.group_nodes(group))
        .arg(&dead)
        .query_async::<u64>(&mut conn)
        .await
    {
        Ok(removed) => {
            inner.pruned.fetch_add(removed, Ordering::Relaxed);
            warn!(group, ?dead, "dead nodes removed from the group's node set");
        }
        Err(err) => warn!(error = %err, "group set not pruned"),
    }
}

/// Handles requests for this node in arrival order and publishes each answer to the
/// sender's channel. Ends when the subscriber does.
async fn handle_requests(inner: Arc<Inner>, mut requests: mpsc::Receiver<Queued>) {
    while let Some(Queued {
        message: request,
        bytes,
        read_at,
    }) = requests.recv().await
    {
        inner.lag.dequeued(bytes);
        let metrics = crate::metrics::relay_metrics();
        metrics.queued.decrement(1.0);
        metrics.lag_seconds.record(read_at.elapsed().as_secs_f64());
        let inbox = inner.inbox.get();
        let body = match (&request.body, inbox) {
            (Body::PushBatch(batch), Some(inbox)) => Body::PushAnswer(inbox.push_batch(batch)),
            (Body::PushBatch(batch), None) => {
                Body::PushAnswer(vec![RelayResult::Offline; batch.targets.len()])
            }
            (Body::Group(message), Some(inbox)) => {
                Body::GroupAnswer(inbox.publish_group(message).await)
            }
            (Body::Group(_), None) => Body::GroupAnswer(GroupDelivery::default()),
            (Body::Kick(kick), Some(inbox)) => Body::KickAnswer(inbox.kick(kick)),
            (Body::Kick(_), None) => Body::KickAnswer(RelayResult::Offline),
            (Body::Presence(group), Some(inbox)) => {
                Body::PresenceAnswer(inbox.group_members(group) as u64)
            }
            (Body::Presence(_), None) => Body::PresenceAnswer(0),
            _ => continue,
        };
        let answer = Message {
            from: inner.node,
            id: request.id,
            body,
        }
        .encode();
        let mut conn = inner.conn.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("SPUBLISH")
            .arg(inner.keys.relay(request.from))
            .arg(&answer[..])
            .query_async(&mut conn)
            .await;
        if let Err(err) = sent {
            warn!(error = %err, node = request.from, "relay answer not sent");
        }
    }
}

/// The group node sets' TTL: three group refreshes.
fn group_set_ttl_ms(inner: &Inner) -> u64 {
    (inner.group_refresh.as_millis() as u64).saturating_mul(3)
}

/// Applies group hints in order, a pipeline per run (`SADD` + `PEXPIRE`, or `SREM`);
/// every `group_refresh`, adds the node again to the sets of all its groups. At the
/// relay's stop, applies the hints already queued, then ends.
async fn apply_hints(inner: Arc<Inner>, mut hints: mpsc::Receiver<Hint>) {
    let ttl_ms = group_set_ttl_ms(&inner);
    let mut batch = Vec::with_capacity(HINT_BATCH);
    let period = inner.group_refresh;
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `inner` holds a sender, so `recv_many` never reports a closed channel.
        let (stopping, refreshing) = tokio::select! {
            _ = hints.recv_many(&mut batch, HINT_BATCH) => (false, false),
            _ = refresh.tick() => (false, true),
            _ = inner.stop.cancelled() => (true, false),
        };
        if stopping {
            while let Ok(hint) = hints.try_recv() {
                batch.push(hint);
            }
        }
        if !batch.is_empty() {
            let mut pipe = Pipeline::with_capacity(batch.len() * 2);
            for hint in batch.drain(..) {
                match hint {
                    Hint::Active(group) => add_to_group(&mut pipe, &inner, &group, ttl_ms),
                    Hint::Inactive(group) => {
                        pipe.cmd("SREM")
                            .arg(inner.keys.group_nodes(&group))
                            .arg(inner.node)
                            .ignore();
                    }
                }
            }
            let mut conn = inner.conn.clone();
            if let Err(err) = pipe.exec_async(&mut conn).await {
                warn!(error = %err, "group hints not applied");
            }
        }
        if refreshing {
            if let Err(err) = write_group_sets(&inner).await {
                warn!(error = %err, "group sets not refreshed");
            }
        }
        if stopping {
            return;
        }
    }
}

/// Adds the node again to the set of every group it has members in (a snapshot of
/// them), a pipeline per [`HINT_BATCH`] groups; answers how many groups it wrote. A
/// group that went inactive after the snapshot may be written back: its set then names
/// this node until the set expires (a publish to it reaches nobody here: harmless).
async fn write_group_sets(inner: &Inner) -> Result<usize> {
    let ttl_ms = group_set_ttl_ms(inner);
    let groups: Vec<String> = lock(&inner.local_groups).iter().cloned().collect();
    for chunk in groups.chunks(HINT_BATCH) {
        let mut pipe = Pipeline::with_capacity(chunk.len() * 2);
        for group in chunk {
            add_to_group(&mut pipe, inner, group, ttl_ms);
        }
        let mut conn = inner.conn.clone();
        pipe.exec_async(&mut conn).await?;
    }
    Ok(groups.len())
}

fn add_to_group(pipe: &mut Pipeline, inner: &Inner, group: &str, ttl_ms: u64) {
    let key = inner.keys.group_nodes(group);
    pipe.cmd("SADD").arg(&key).arg(inner.node).ignore();
    pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
}

//! [`RedisRelay`]: delivery between access nodes over Redis pub/sub.

mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use longconn_server::{
    GroupDelivery, GroupMessage, KickRequest, Relay, RelayBatch, RelayInbox, RelayResult,
    RemoteGroupReport,
};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::keys::{DEFAULT_PREFIX, Keys};
use crate::{Error, Result};
use wire::{Body, Message};

/// Requests received and not yet handled before new ones are dropped (their senders
/// get `Unknown` at their timeout).
const REQUEST_QUEUE: usize = 4096;
/// Group hints waiting for Redis before new ones are dropped (and counted).
const HINT_QUEUE: usize = 65_536;
/// Most hints applied in one pipeline.
const HINT_BATCH: usize = 512;

/// A hint from the group layer, applied in order.
#[derive(Debug)]
enum Hint {
    Active(String),
    Inactive(String),
}

/// What the relay's tasks share.
struct Inner {
    node: u16,
    keys: Keys,
    conn: ConnectionManager,
    timeout: Duration,
    next_id: AtomicU64,
    /// Calls waiting for an answer, by correlation id.
    pending: Mutex<HashMap<u64, oneshot::Sender<Body>>>,
    /// This node's server, once attached.
    inbox: OnceLock<RelayInbox>,
    hints: mpsc::Sender<Hint>,
    hints_dropped: AtomicU64,
}

/// A [`Relay`] over Redis pub/sub, one inbox channel per node (`{prefix}relay:{node}`).
///
/// A call publishes one binary message (docs/CLUSTER.md "Relay messages") to the target
/// node's channel with a fresh correlation id and waits, at most the relay timeout
/// (default [`RedisRelay::DEFAULT_TIMEOUT`]), for the answer that node publishes to this
/// node's channel. `PUBLISH` says how many subscribers got the message: 0 means no node
/// listens there (it does not exist or is down), which is answered `Offline` at once;
/// no answer in time is `Unknown`. Requests are handled in arrival order by one task, so
/// messages from one node to another are applied in the order they were sent.
///
/// `group_active` / `group_inactive` maintain a Redis set per group (`{prefix}gn:{group}`)
/// of the nodes with members, from a background task, in order; `publish_group` sends
/// the message to every other node in that set at once.
///
/// Build it with [`RedisRelay::start`], give it to the server (and group layer), then
/// [`RedisRelay::attach`] the server's [`RelayInbox`]. [`RedisRelay::shutdown`] stops
/// its tasks and waits for them.
pub struct RedisRelay {
    inner: Arc<Inner>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RedisRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRelay")
            .field("node", &self.inner.node)
            .field("keys", &self.inner.keys)
            .field("timeout", &self.inner.timeout)
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

    /// Subscribes to this node's channel on a connection of its own from `client`
    /// (pub/sub needs one), and starts the relay's tasks on the current runtime: the
    /// subscriber, the request handler and the group-hint writer. Publishes and hints go
    /// through `conn`. Messages for this node that arrive before
    /// [`RedisRelay::attach`] are answered `Offline`.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled start drops its pub/sub connection and spawns nothing.
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
        if timeout < Duration::from_millis(1) {
            return Err(Error::Config("relay timeout must be at least 1 ms"));
        }
        let keys = Keys::new(prefix);
        let channel = keys.relay(node);
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        let (hints, hint_rx) = mpsc::channel(HINT_QUEUE);
        let (requests, request_rx) = mpsc::channel(REQUEST_QUEUE);
        let inner = Arc::new(Inner {
            node,
            keys,
            conn,
            timeout,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            inbox: OnceLock::new(),
            hints,
            hints_dropped: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(subscriber(
                inner.clone(),
                client,
                pubsub,
                requests,
                stop.clone(),
            )),
            tokio::spawn(handle_requests(inner.clone(), request_rx)),
            tokio::spawn(apply_hints(inner.clone(), hint_rx, stop.clone())),
        ];
        Ok(RedisRelay {
            inner,
            stop,
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

    /// Stops the relay: unsubscribes, applies the group hints already queued, and waits
    /// for its tasks. Calls in progress end `Unknown` at their timeout.
    ///
    /// # Cancel safety
    /// Cancel safe: the stop is signalled before the first await, and the tasks end on
    /// their own; a later call waits for none of them (they were taken).
    pub async fn shutdown(&self) {
        self.stop.cancel();
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
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
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
}

impl Drop for RedisRelay {
    fn drop(&mut self) {
        self.stop.cancel();
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
        let inner = &*self.inner;
        let mut conn = inner.conn.clone();
        let nodes: Vec<u16> = match redis::cmd("SMEMBERS")
            .arg(inner.keys.group_nodes(&message.group))
            .query_async(&mut conn)
            .await
        {
            Ok(nodes) => nodes,
            Err(err) => {
                warn!(error = %err, group = %message.group, "group nodes unreadable");
                return RemoteGroupReport::default();
            }
        };
        let calls = nodes
            .into_iter()
            .filter(|&node| node != inner.node)
            .map(|node| self.call(node, Body::Group(message.clone())));
        let mut report = RemoteGroupReport::default();
        for reply in futures::future::join_all(calls).await {
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

    async fn kick(&self, node: u16, request: &KickRequest) -> RelayResult {
        match self.call(node, Body::Kick(request.clone())).await {
            Reply::Answer(Body::KickAnswer(result)) => result,
            Reply::NoNode => RelayResult::Offline,
            _ => RelayResult::Unknown,
        }
    }

    fn group_active(&self, group: &str) {
        self.hint(Hint::Active(group.to_owned()));
    }

    fn group_inactive(&self, group: &str) {
        self.hint(Hint::Inactive(group.to_owned()));
    }
}

impl RedisRelay {
    fn hint(&self, hint: Hint) {
        if self.inner.hints.try_send(hint).is_err() {
            self.inner.hints_dropped.fetch_add(1, Ordering::Relaxed);
            warn!("group hint queue full or closed; hint dropped");
        }
    }
}

/// Reads this node's channel: answers go to their waiting call, requests to the
/// handler. Re-subscribes (with backoff) if the pub/sub connection ends; unsubscribes
/// at the stop, so that from then on a `PUBLISH` to this node reaches nobody.
async fn subscriber(
    inner: Arc<Inner>,
    client: redis::Client,
    pubsub: redis::aio::PubSub,
    requests: mpsc::Sender<Message>,
    stop: CancellationToken,
) {
    let channel = inner.keys.relay(inner.node);
    let mut subscription = Some(pubsub.split());
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some((sink, messages)) = subscription.as_mut() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            match resubscribe(&client, &channel).await {
                Ok(pubsub) => {
                    subscription = Some(pubsub.split());
                    backoff = Duration::from_millis(50);
                }
                Err(err) => warn!(error = %err, "relay re-subscribe failed"),
            }
            continue;
        };
        let next = tokio::select! {
            _ = stop.cancelled() => {
                let unsubscribed = tokio::time::timeout(inner.timeout, sink.unsubscribe(&channel));
                if !matches!(unsubscribed.await, Ok(Ok(()))) {
                    warn!(channel, "relay unsubscribe failed; the connection closes instead");
                }
                return;
            }
            next = messages.next() => next,
        };
        let Some(msg) = next else {
            warn!(channel, "relay subscription ended; re-subscribing");
            subscription = None;
            continue;
        };
        let Some(message) = Message::decode(Bytes::copy_from_slice(msg.get_payload_bytes())) else {
            warn!(channel, "malformed relay message ignored");
            continue;
        };
        if message.body.is_answer() {
            if let Some(tx) = lock(&inner.pending).remove(&message.id) {
                let _ = tx.send(message.body);
            }
        } else if requests.try_send(message).is_err() {
            warn!("relay request queue full; request dropped (its sender sees Unknown)");
        }
    }
}

async fn resubscribe(client: &redis::Client, channel: &str) -> Result<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Handles requests for this node in arrival order and publishes each answer to the
/// sender's channel. Ends when the subscriber does.
async fn handle_requests(inner: Arc<Inner>, mut requests: mpsc::Receiver<Message>) {
    while let Some(request) = requests.recv().await {
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
            _ => continue,
        };
        let answer = Message {
            from: inner.node,
            id: request.id,
            body,
        }
        .encode();
        let mut conn = inner.conn.clone();
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(inner.keys.relay(request.from))
            .arg(&answer[..])
            .query_async(&mut conn)
            .await;
        if let Err(err) = sent {
            warn!(error = %err, node = request.from, "relay answer not sent");
        }
    }
}

/// Applies group hints in order, a pipeline per run. At the relay's stop, applies the
/// hints already queued, then ends.
async fn apply_hints(inner: Arc<Inner>, mut hints: mpsc::Receiver<Hint>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(HINT_BATCH);
    loop {
        // `inner` holds a sender, so `recv_many` never reports a closed channel.
        let stopping = tokio::select! {
            _ = hints.recv_many(&mut batch, HINT_BATCH) => false,
            _ = stop.cancelled() => true,
        };
        if stopping {
            while let Ok(hint) = hints.try_recv() {
                batch.push(hint);
            }
        }
        if !batch.is_empty() {
            let mut pipe = redis::Pipeline::with_capacity(batch.len());
            for hint in batch.drain(..) {
                let (cmd, group) = match hint {
                    Hint::Active(group) => ("SADD", group),
                    Hint::Inactive(group) => ("SREM", group),
                };
                pipe.cmd(cmd)
                    .arg(inner.keys.group_nodes(&group))
                    .arg(inner.node)
                    .ignore();
            }
            let mut conn = inner.conn.clone();
            if let Err(err) = pipe.exec_async(&mut conn).await {
                warn!(error = %err, "group hints not applied");
            }
        }
        if stopping {
            return;
        }
    }
}

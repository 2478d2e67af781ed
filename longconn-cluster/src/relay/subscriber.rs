//! The relay's inbox: a sharded pub/sub subscription (`SSUBSCRIBE`) on a dedicated RESP3
//! connection whose push messages are handled as they are read.
//!
//! redis-rs reads the socket in its connection task and hands each push message to a
//! push sender, synchronously. The relay's push sender ([`PushHandler`]) never waits:
//! an answer goes straight to the call waiting for it, a request into the bounded
//! request queue (or is dropped and counted when the queue is full), so the socket is
//! always read at once and Redis's pub/sub output buffer for this client stays empty
//! however slow the handler is. [`RelayLag`] tells how much is queued.
//!
//! The supervisor task re-subscribes when Redis ends the subscription (`sunsubscribe`
//! push: the slot moved to another shard) or the connection drops (`disconnection`
//! push), with backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::wire::Message;
use super::{Inner, lock};
use crate::{CONNECTION_TIMEOUT, Error, RESPONSE_TIMEOUT, Result};

/// Most bytes of received requests waiting for the handler before new ones are dropped
/// (with the count bound, `REQUEST_QUEUE`, whichever is hit first).
pub(super) const MAX_QUEUED_BYTES: u64 = 64 << 20;

/// How far behind the relay's request handler is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayLag {
    /// Requests from other nodes read from Redis and not yet handled.
    pub queued_requests: u64,
    /// Their size in bytes (the encoded messages).
    pub queued_bytes: u64,
    /// Requests dropped since the start because the queue was full (their senders see
    /// `Unknown` at their timeout).
    pub dropped_requests: u64,
}

/// Counters behind [`RelayLag`].
#[derive(Debug, Default)]
pub(super) struct LagCounters {
    pub(super) queued_requests: AtomicU64,
    pub(super) queued_bytes: AtomicU64,
    pub(super) dropped_requests: AtomicU64,
}

impl LagCounters {
    pub(super) fn snapshot(&self) -> RelayLag {
        RelayLag {
            queued_requests: self.queued_requests.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            dropped_requests: self.dropped_requests.load(Ordering::Relaxed),
        }
    }

    /// A request left the queue.
    pub(super) fn dequeued(&self, bytes: u64) {
        self.queued_requests.fetch_sub(1, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A request waiting for the handler, with its size for the lag.
pub(super) struct Queued {
    pub(super) message: Message,
    pub(super) bytes: u64,
    /// When the subscriber read it (for `longconn_cluster_subscriber_lag_seconds`).
    pub(super) read_at: std::time::Instant,
}

/// Where the subscriber connects.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// One Redis (>= 7): a multiplexed RESP3 connection from this client.
    Single(redis::Client),
    /// A Redis Cluster: redis-rs's cluster connection (one RESP3 connection per node).
    Cluster(Vec<String>),
}

/// The subscriber connection.
enum Subscription {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// What the push sender tells the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Redis ended the subscription (the slot moved): subscribe again.
    Unsubscribed,
    /// The connection with this generation closed.
    Disconnected(u64),
}

/// Handles push messages as redis-rs reads them; never blocks.
pub(super) struct PushHandler {
    inner: Arc<Inner>,
    channel: Vec<u8>,
    requests: mpsc::Sender<Queued>,
    events: mpsc::UnboundedSender<Event>,
}

impl PushHandler {
    fn on_push(&self, generation: u64, info: PushInfo) {
        match info.kind {
            PushKind::SMessage | PushKind::Message => {
                let mut data = info.data.into_iter();
                let (Some(_channel), Some(Value::BulkString(payload))) = (data.next(), data.next())
                else {
                    warn!("relay push without a payload ignored");
                    return;
                };
                self.on_message(Bytes::from(payload));
            }
            PushKind::SUnsubscribe => {
                let ours =
                    matches!(info.data.first(), Some(Value::BulkString(c)) if *c == self.channel);
                if ours && !self.inner.stop.is_cancelled() {
                    let _ = self.events.send(Event::Unsubscribed);
                }
            }
            PushKind::Disconnection if !self.inner.stop.is_cancelled() => {
                let _ = self.events.send(Event::Disconnected(generation));
            }
            _ => {}
        }
    }

    fn on_message(&self, payload: Bytes) {
        let bytes = payload.len() as u64;
        let Some(message) = Message::decode(payload) else {
            warn!("malformed relay message ignored");
            return;
        };
        if message.body.is_answer() {
            if let Some(tx) = lock(&self.inner.pending).remove(&message.id) {
                let _ = tx.send(message.body);
            }
            return;
        }
        let lag = &self.inner.lag;
        crate::metrics::relay_metrics().messages.increment(1);
        if lag.queued_bytes.load(Ordering::Relaxed) + bytes > MAX_QUEUED_BYTES {
            self.drop_request();
            return;
        }
        // Counted before the send so the handler's decrement never goes below zero.
        lag.queued_requests.fetch_add(1, Ordering::Relaxed);
        lag.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let queued = Queued {
            message,
            bytes,
            read_at: std::time::Instant::now(),
        };
        if self.requests.try_send(queued).is_err() {
            lag.dequeued(bytes);
            self.drop_request();
        } else {
            crate::metrics::relay_metrics().queued.increment(1.0);
        }
    }

    fn drop_request(&self) {
        self.inner
            .lag
            .dropped_requests
            .fetch_add(1, Ordering::Relaxed);
        crate::metrics::relay_metrics().dropped.increment(1);
        warn!("relay request queue full; request dropped (its sender sees Unknown)");
    }
}

/// Connects the subscriber and subscribes to this node's inbox; returns the supervisor
/// task's future.
pub(super) async fn subscribe(
    inner: Arc<Inner>,
    source: Source,
    requests: mpsc::Sender<Queued>,
) -> Result<impl Future<Output = ()> + Send + 'static> {
    let channel = inner.keys.relay(inner.node);
    let (events, event_rx) = mpsc::unbounded_channel();
    let handler = Arc::new(PushHandler {
        inner: inner.clone(),
        channel: channel.clone().into_bytes(),
        requests,
        events,
    });
    let mut generation = 0;
    let subscription = connect(&source, &handler, generation).await?;
    let mut subscription = subscription;
    ssubscribe(&mut subscription, &channel)
        .await
        .map_err(|err| match err {
            Error::Redis(e)
                if e.to_string()
                    .to_ascii_lowercase()
                    .contains("unknown command") =>
            {
                Error::Unsupported(format!(
                    "the relay needs sharded pub/sub (SSUBSCRIBE, Redis >= 7.0): {e}"
                ))
            }
            other => other,
        })?;
    Ok(async move {
        let mut events = event_rx;
        let stop = inner.stop.clone();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => {
                    let unsubscribed = tokio::time::timeout(inner.timeout, sunsubscribe(&mut subscription, &channel));
                    if !matches!(unsubscribed.await, Ok(Ok(()))) {
                        warn!(channel, "relay unsubscribe failed; the connection closes instead");
                    }
                    return;
                }
                event = events.recv() => event,
            };
            let Some(event) = event else { return };
            let mut reconnect = matches!(event, Event::Disconnected(g) if g == generation);
            while let Ok(event) = events.try_recv() {
                reconnect |= matches!(event, Event::Disconnected(g) if g == generation);
            }
            if matches!(event, Event::Disconnected(g) if g != generation) && !reconnect {
                continue; // an older connection's close
            }
            // A cluster connection reconnects on its own: subscribing again is enough.
            reconnect &= matches!(source, Source::Single(_));
            warn!(
                channel,
                reconnect, "relay subscription lost; subscribing again"
            );
            let mut backoff = Duration::from_millis(50);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                if reconnect {
                    match connect(&source, &handler, generation + 1).await {
                        Ok(fresh) => {
                            generation += 1;
                            subscription = fresh;
                            reconnect = false;
                        }
                        Err(err) => {
                            warn!(error = %err, "relay reconnect failed");
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                    }
                }
                match ssubscribe(&mut subscription, &channel).await {
                    Ok(()) => {
                        inner.resubscribed.fetch_add(1, Ordering::Relaxed);
                        debug!(channel, "relay subscribed again");
                        break;
                    }
                    Err(err) => {
                        warn!(error = %err, "relay re-subscribe failed");
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    })
}

async fn connect(
    source: &Source,
    handler: &Arc<PushHandler>,
    generation: u64,
) -> Result<Subscription> {
    let handler = handler.clone();
    let push = move |info: PushInfo| {
        handler.on_push(generation, info);
        Ok::<(), std::convert::Infallible>(())
    };
    Ok(match source {
        Source::Single(client) => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECTION_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_push_sender(push);
            Subscription::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        }
        Source::Cluster(urls) => {
            let client = ClusterClientBuilder::new(urls.clone())
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(CONNECTION_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .push_sender(push)
                .build()?;
            Subscription::Cluster(client.get_async_connection().await?)
        }
    })
}

/// `client` with RESP3 (push messages on a multiplexed connection need it).
pub(super) fn resp3(client: &redis::Client) -> Result<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(redis::Client::open(info.set_redis_settings(settings))?)
}

async fn ssubscribe(subscription: &mut Subscription, channel: &str) -> Result<()> {
    match subscription {
        Subscription::Single(conn) => {
            redis::cmd("SSUBSCRIBE")
                .arg(channel)
                .exec_async(conn)
                .await?
        }
        Subscription::Cluster(conn) => conn.ssubscribe(channel).await?,
    }
    Ok(())
}

async fn sunsubscribe(subscription: &mut Subscription, channel: &str) -> Result<()> {
    match subscription {
        Subscription::Single(conn) => {
            redis::cmd("SUNSUBSCRIBE")
                .arg(channel)
                .exec_async(conn)
                .await?
        }
        Subscription::Cluster(conn) => conn.sunsubscribe(channel).await?,
    }
    Ok(())
}

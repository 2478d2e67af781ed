//! The in-process push API: [`Pusher`], from [`crate::Server::pusher`].
//!
//! - one connection or one device: [`Pusher::push`], and with delivery confirmation,
//!   [`Pusher::push_acked`];
//! - a batch of devices with one payload, encoded once: [`Pusher::push_devices`];
//! - a batch with a payload per device: [`Pusher::push_each`].
//!
//! Group pushes are `longconn-group`'s `GroupRegistry::publish`. Every push is queued
//! without waiting; a full queue is a [`PushResult::Dropped`] (or a disconnect, under
//! that slow-consumer policy), never a stall.
//!
//! Batches look each device up in this node's hub first, then ask the
//! [`crate::RouteStore`] for the rest. Devices whose route names another node are
//! grouped by node and sent through the [`crate::Relay`], one message per node, all
//! nodes at once; each node's answer is merged into the [`BatchReport`]. A node that
//! does not answer within [`crate::ServerConfig::relay_timeout`] leaves its devices in
//! [`BatchReport::unknown`]. [`Pusher::kick`] reaches other nodes the same way; single
//! pushes ([`Pusher::push`], [`Pusher::push_acked`]) are for this node's connections.

use crate::metrics::{PushMode, PushOutcomeLabel, PushTally};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::Shared;
use crate::error::Result;
use crate::hub::{ConnHandle, node_of};
use crate::relay::{BatchFrames, KickRequest, KickTarget, RelayBatch, RelayResult, RelayTarget};
use crate::shard::ShardedMap;
use longconn_core::protocol::{Code, Frame, Metadata, Text};
use longconn_core::session::{PushOutcome, Transmit};

/// What to push: a business id, metadata and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushMessage {
    /// Business id the client routes the push by.
    pub business: u32,
    /// Push metadata.
    pub meta: Metadata,
    /// Opaque payload.
    pub payload: Bytes,
}

impl PushMessage {
    /// A push of `payload` for `business`, without metadata.
    pub fn new(business: u32, payload: impl Into<Bytes>) -> PushMessage {
        PushMessage {
            business,
            meta: Metadata::new(),
            payload: payload.into(),
        }
    }

    /// The `Push` frame for this message (id 0, no ack, no group).
    pub fn frame(&self) -> Frame {
        Frame::Push {
            id: 0,
            ack_required: false,
            business: self.business,
            group: None,
            seq: None,
            epoch: None,
            meta: self.meta.clone(),
            payload: self.payload.clone(),
        }
    }
}

/// Who a single push or kick goes to. [`Pusher::push`] and [`Pusher::push_acked`] reach
/// this node's connections only; [`Pusher::kick`] reaches any node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A connection, by id (its node is in the id's top 16 bits).
    Conn(u64),
    /// The connection logged in as (app, device).
    Device {
        /// App id.
        app: &'a str,
        /// Device id.
        device: &'a str,
    },
}

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushResult {
    /// In the connection's queue.
    Queued,
    /// No such connection or device on this node.
    Offline,
    /// The connection's queue was full: dropped by its slow-consumer policy.
    Dropped,
    /// The client acknowledged it (acked pushes only).
    Delivered,
    /// Queued, but no `PushAck` came within the timeout (acked pushes only).
    TimedOut,
}

impl PushResult {
    fn from_outcome(outcome: PushOutcome) -> PushResult {
        match outcome {
            PushOutcome::Queued => PushResult::Queued,
            PushOutcome::Dropped | PushOutcome::Disconnected => PushResult::Dropped,
            PushOutcome::NotActive => PushResult::Offline,
        }
    }
}

/// Per-device results of a batch, over every node the batch reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Pushes queued (here, or on the node holding the device).
    pub queued: usize,
    /// Devices with no connection anywhere (no route, or the route's node does not
    /// know them).
    pub offline: Vec<String>,
    /// Devices whose queue was full.
    pub dropped: Vec<String>,
    /// Devices on another node that did not answer in time: maybe queued, maybe not.
    pub unknown: Vec<String>,
}

impl BatchReport {
    fn record(&mut self, device: &str, result: RelayResult) {
        match result {
            RelayResult::Queued => self.queued += 1,
            RelayResult::Offline => self.offline.push(device.to_owned()),
            RelayResult::Dropped => self.dropped.push(device.to_owned()),
            RelayResult::Unknown => self.unknown.push(device.to_owned()),
        }
    }
}

/// Pushes to this node's connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pusher {
    pub(crate) shared: Arc<Shared>,
}

impl Pusher {
    fn find(&self, target: Target<'_>) -> Option<ConnHandle> {
        match target {
            Target::Conn(id) => self.shared.hub.get(id),
            Target::Device { app, device } => self.shared.hub.find_device(app, device),
        }
    }

    /// Counts one push of `mode` in `longconn_pushes_total` and passes its outcome on.
    fn counted(&self, mode: PushMode, outcome: PushOutcome) -> PushOutcome {
        let pushes = &self.shared.metrics.pushes;
        pushes.record(mode, PushOutcomeLabel::of(outcome), 1);
        outcome
    }

    fn count_offline(&self, mode: PushMode, n: u64) {
        if n > 0 {
            let pushes = &self.shared.metrics.pushes;
            pushes.record(mode, PushOutcomeLabel::Offline, n);
        }
    }

    /// Queues `message` for one connection or device.
    pub fn push(&self, target: Target<'_>, message: &PushMessage) -> PushResult {
        match self.find(target) {
            Some(conn) => PushResult::from_outcome(self.counted(
                PushMode::Unicast,
                conn.push(Transmit::Frame(message.frame())),
            )),
            None => {
                self.count_offline(PushMode::Unicast, 1);
                PushResult::Offline
            }
        }
    }

    /// Queues `message` with the ack flag set and waits up to `timeout` for the client's
    /// `PushAck`: [`PushResult::Delivered`], or [`PushResult::TimedOut`] (at the timeout,
    /// or as soon as the connection closes without acking), or at once `Offline` /
    /// `Dropped`.
    pub async fn push_acked(
        &self,
        target: Target<'_>,
        message: &PushMessage,
        timeout: Duration,
    ) -> PushResult {
        let Some(conn) = self.find(target) else {
            self.count_offline(PushMode::Unicast, 1);
            return PushResult::Offline;
        };
        let id = self.shared.acks.next_id();
        let acked = self.shared.acks.expect(conn.id(), id);
        let frame = Frame::Push {
            id,
            ack_required: true,
            business: message.business,
            group: None,
            seq: None,
            epoch: None,
            meta: message.meta.clone(),
            payload: message.payload.clone(),
        };
        let outcome = self.counted(PushMode::Unicast, conn.push(Transmit::Frame(frame)));
        let result = PushResult::from_outcome(outcome);
        if result != PushResult::Queued {
            self.shared.acks.forget(conn.id(), id);
            return result;
        }
        match tokio::time::timeout(timeout, acked).await {
            Ok(Ok(())) => PushResult::Delivered,
            _ => {
                self.shared.acks.forget(conn.id(), id);
                PushResult::TimedOut
            }
        }
    }

    /// Queues one `message`, encoded once, for each of `devices` of `app`.
    ///
    /// # Errors
    /// The message does not fit the maximum frame size, or the route store failed.
    pub async fn push_devices<S: AsRef<str>>(
        &self,
        app: &str,
        devices: &[S],
        message: &PushMessage,
    ) -> Result<BatchReport> {
        let encoded = message
            .frame()
            .to_bytes(self.shared.session_config.max_frame_size())?;
        self.deliver(
            app,
            devices,
            |_| Transmit::Encoded(encoded.clone()),
            |_| Ok(BatchFrames::Shared(encoded.clone())),
        )
        .await
    }

    /// Queues a message per device: `messages` holds (device id, message) pairs of `app`.
    ///
    /// # Errors
    /// A message does not fit the maximum frame size (nothing is sent then), or the route
    /// store failed.
    pub async fn push_each<S: AsRef<str>>(
        &self,
        app: &str,
        messages: &[(S, PushMessage)],
    ) -> Result<BatchReport> {
        let max = self.shared.session_config.max_frame_size();
        for (_, message) in messages {
            message.frame().encoded_len().and_then(|len| {
                if len > max {
                    Err(longconn_core::EncodeError::FrameTooLarge {
                        len: len as u64,
                        max,
                    })
                } else {
                    Ok(())
                }
            })?;
        }
        let devices: Vec<&str> = messages.iter().map(|(d, _)| d.as_ref()).collect();
        self.deliver(
            app,
            &devices,
            |i| Transmit::Frame(messages[i].1.frame()),
            |indices| {
                let frames = indices
                    .iter()
                    .map(|&i| messages[i].1.frame().to_bytes(max))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(BatchFrames::Each(frames))
            },
        )
        .await
    }

    /// Kicks a connection or device wherever it is connected: the session sends
    /// `Kick { code, message }` and closes. A connection id of another node (its top 16
    /// bits), or a device whose route names another node, is kicked through the relay
    /// (`Code::Replaced` there is how a cluster ends a duplicate login on another node).
    ///
    /// Returns [`RelayResult::Queued`] (the kick is queued), `Offline` (nobody to kick)
    /// or `Unknown` (the other node did not answer in time).
    ///
    /// # Errors
    /// The route store failed (device targets not on this node only).
    pub async fn kick(&self, target: Target<'_>, code: Code, message: &str) -> Result<RelayResult> {
        let local = |conn: Option<ConnHandle>| match conn {
            Some(conn) if conn.kick(code, Text::from(message)) => RelayResult::Queued,
            _ => RelayResult::Offline,
        };
        let hub = &self.shared.hub;
        let (node, target) = match target {
            Target::Conn(id) if node_of(id) == hub.node_id() => return Ok(local(hub.get(id))),
            Target::Conn(id) => (node_of(id), KickTarget::Conn(id)),
            Target::Device { app, device } => {
                if let Some(conn) = hub.find_device(app, device) {
                    return Ok(local(Some(conn)));
                }
                let route = self.shared.routes.store().lookup(app, &[device]).await?;
                match route.into_iter().next().flatten() {
                    None => return Ok(RelayResult::Offline),
                    Some(route) if route.node == hub.node_id() => {
                        return Ok(local(hub.get(route.conn_id)));
                    }
                    Some(route) => (
                        route.node,
                        KickTarget::Device {
                            app: app.to_owned(),
                            device: device.to_owned(),
                        },
                    ),
                }
            }
        };
        let request = KickRequest {
            target,
            code,
            message: message.to_owned(),
        };
        let relayed = self.shared.relay.kick(node, &request);
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(self.shared.relay_timeout, relayed).await;
        let relay_ops = &self.shared.metrics.relay;
        relay_ops.record("kick", started.elapsed(), answered.is_err());
        Ok(answered.unwrap_or(RelayResult::Unknown))
    }

    /// Pushes `transmit(i)` to device `devices[i]`: local hub first, then the route
    /// store; devices on other nodes get `encoded(their indices)` through the relay, one
    /// batch per node, every node at once.
    async fn deliver<S: AsRef<str>>(
        &self,
        app: &str,
        devices: &[S],
        transmit: impl Fn(usize) -> Transmit,
        encoded: impl Fn(&[usize]) -> Result<BatchFrames>,
    ) -> Result<BatchReport> {
        let hub = &self.shared.hub;
        // One result per device, reported in the devices' order at the end.
        let mut results = vec![RelayResult::Offline; devices.len()];
        let mut unresolved = Vec::new();
        let mut tally = PushTally::default();
        let stamp = crate::metrics::queue_stamp();
        for (i, device) in devices.iter().enumerate() {
            match hub.find_device(app, device.as_ref()) {
                Some(conn) => {
                    let outcome = conn.push_stamped(transmit(i), stamp);
                    tally.add(PushOutcomeLabel::of(outcome));
                    results[i] = RelayResult::from(outcome);
                }
                None => unresolved.push(i),
            }
        }
        tally.flush(&self.shared.metrics.pushes, PushMode::Batched);
        if !unresolved.is_empty() {
            let names: Vec<&str> = unresolved.iter().map(|&i| devices[i].as_ref()).collect();
            let started = std::time::Instant::now();
            let routes = self.shared.routes.store().lookup(app, &names).await;
            crate::metrics::route_store_ops().record("lookup", started.elapsed(), routes.is_err());
            let routes = routes?;
            let mut offline = 0;
            // Node -> (device index, connection id) of the devices it holds.
            let mut remote: BTreeMap<u16, Vec<(usize, u64)>> = BTreeMap::new();
            for (&i, route) in unresolved.iter().zip(routes) {
                match route {
                    Some(route) if route.node != hub.node_id() => {
                        let on_node = remote.entry(route.node).or_default();
                        on_node.push((i, route.conn_id));
                    }
                    Some(route) => {
                        if let Some(conn) = hub.get(route.conn_id) {
                            let outcome = self.counted(PushMode::Batched, conn.push(transmit(i)));
                            results[i] = RelayResult::from(outcome);
                        } else {
                            offline += 1;
                        }
                    }
                    None => offline += 1,
                }
            }
            self.count_offline(PushMode::Batched, offline);
            self.relay_batches(app, devices, remote, &encoded, &mut results)
                .await?;
        }
        let mut report = BatchReport::default();
        for (device, result) in devices.iter().zip(results) {
            report.record(device.as_ref(), result);
        }
        Ok(report)
    }

    /// Sends each node its devices' pushes through the relay, every node at once, and
    /// writes the answers into `results`.
    async fn relay_batches<S: AsRef<str>>(
        &self,
        app: &str,
        devices: &[S],
        remote: BTreeMap<u16, Vec<(usize, u64)>>,
        encoded: &impl Fn(&[usize]) -> Result<BatchFrames>,
        results: &mut [RelayResult],
    ) -> Result<()> {
        let mut calls = Vec::with_capacity(remote.len());
        for (node, targets) in remote {
            let indices: Vec<usize> = targets.iter().map(|&(i, _)| i).collect();
            let batch = RelayBatch {
                app: app.to_owned(),
                targets: targets
                    .iter()
                    .map(|&(i, conn_id)| RelayTarget {
                        device: devices[i].as_ref().to_owned(),
                        conn_id,
                    })
                    .collect(),
                frames: encoded(&indices)?,
            };
            let relay = &self.shared.relay;
            let timeout = self.shared.relay_timeout;
            let relay_ops = &self.shared.metrics.relay;
            calls.push(async move {
                let started = std::time::Instant::now();
                let answered = tokio::time::timeout(timeout, relay.push_batch(node, &batch)).await;
                relay_ops.record("push", started.elapsed(), answered.is_err());
                (indices, answered.unwrap_or_default())
            });
        }
        for (indices, answers) in futures::future::join_all(calls).await {
            for (k, i) in indices.into_iter().enumerate() {
                // A short answer (or none, at the timeout) leaves the rest unknown.
                results[i] = answers.get(k).copied().unwrap_or(RelayResult::Unknown);
            }
        }
        Ok(())
    }
}

/// Acked pushes waiting for their `PushAck`: connection id -> (push id, waiter).
#[derive(Debug, Default)]
pub(crate) struct PendingAcks {
    next_id: AtomicU32,
    waiting: ShardedMap<u64, Vec<(u32, oneshot::Sender<()>)>>,
}

impl PendingAcks {
    /// A non-zero push id (ids only need to be unique among one connection's pending
    /// acks; the counter wraps after 2^32 - 1 pushes).
    fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    fn expect(&self, conn_id: u64, id: u32) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .shard(&conn_id)
            .entry(conn_id)
            .or_default()
            .push((id, tx));
        rx
    }

    /// Removes the waiter for (`conn_id`, `id`), if it is still there.
    fn take(&self, conn_id: u64, id: u32) -> Option<oneshot::Sender<()>> {
        let mut shard = self.waiting.shard(&conn_id);
        let waiters = shard.get_mut(&conn_id)?;
        let pos = waiters.iter().position(|(pending, _)| *pending == id)?;
        let (_, tx) = waiters.swap_remove(pos);
        if waiters.is_empty() {
            shard.remove(&conn_id);
        }
        Some(tx)
    }

    fn forget(&self, conn_id: u64, id: u32) {
        self.take(conn_id, id);
    }

    /// Called by the driver when `PushAck { id }` arrives on `conn_id`.
    pub(crate) fn acked(&self, conn_id: u64, id: u32) {
        if let Some(tx) = self.take(conn_id, id) {
            let _ = tx.send(());
        }
    }

    /// Called by the driver when `conn_id` closes: its waiters stop waiting at once.
    pub(crate) fn closed(&self, conn_id: u64) {
        self.waiting.shard(&conn_id).remove(&conn_id);
    }
}

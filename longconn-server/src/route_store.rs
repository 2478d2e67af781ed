//! Device routes: (app, device) -> (connection id, node). The routing layer of the
//! source design, behind the [`RouteStore`] trait so that a shared store (Redis, in the
//! routing-layer crate) can replace the in-memory default without API changes.
//!
//! Drivers never wait for the store: logins and closes are queued to one
//! [`RouteSync`] task per server, which applies them in order and in batches (what a
//! networked store wants: one round trip for many devices) and, for a store whose entries
//! expire, refreshes every local route each [`RouteStore::refresh_interval`] (the store
//! knows its TTL, so it says how often; a store that does not expire is never refreshed).
//!
//! A login that replaces a route to another node (the device was connected there: a
//! duplicate login across nodes) has that connection kicked with `replaced` through the
//! [`crate::Relay`], from the same task, as soon as the store reports the replaced route
//! ([`RouteStore::register_replacing`]). Duplicates on this node are the hub's business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tracing::warn;

use crate::hub::{DeviceKey, Hub};
use crate::relay::{KickRequest, KickTarget, Relay};
use crate::shard::ShardedMap;
use longconn_core::protocol::Code;

/// Where a device is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Its connection id (the node id is also in its top 16 bits).
    pub conn_id: u64,
    /// The access node holding the connection.
    pub node: u16,
}

/// A route store failed (unreachable, timed out, refused).
#[derive(Debug, thiserror::Error)]
#[error("route store: {0}")]
pub struct RouteStoreError(pub Box<dyn std::error::Error + Send + Sync>);

/// Device routes, batch-first. Implementations must be safe to call from many tasks.
#[async_trait]
pub trait RouteStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records these devices' routes, replacing older ones.
    async fn register(&self, routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError>;

    /// [`RouteStore::register`], returning for each device the route it replaced
    /// (`None`: there was none, or the store cannot tell), in order. A shared store does
    /// both in one atomic step (Redis `SET ... GET`), so that two nodes logging one device
    /// in at once see each other. The server calls this one; the default calls
    /// `register` and reports nothing replaced.
    async fn register_replacing(
        &self,
        routes: &[(DeviceKey, Route)],
    ) -> Result<Vec<Option<Route>>, RouteStoreError> {
        self.register(routes).await?;
        Ok(vec![None; routes.len()])
    }

    /// Removes these devices' routes, each only if it still points at the given
    /// connection id (a newer login elsewhere keeps its route).
    async fn unregister(&self, routes: &[(DeviceKey, u64)]) -> Result<(), RouteStoreError>;

    /// Confirms that these routes are still live. A store whose entries expire extends
    /// them (and re-creates those it lost); one whose entries do not may ignore the call.
    async fn refresh(&self, routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError>;

    /// How often the server refreshes every local route ([`RouteStore::refresh`]), or
    /// `None` for never. A store whose entries expire answers well below its TTL (a
    /// third of it lets a live route survive two failed refreshes), so that its entries
    /// outlive a live node and expire soon after a dead one. The default is `None`: a
    /// store whose entries do not expire (as [`MemoryRouteStore`]) needs no refresh.
    /// Read once, when the server's route sync task starts.
    fn refresh_interval(&self) -> Option<Duration> {
        None
    }

    /// The route of each of `devices` of `app`, in the same order (`None`: offline).
    async fn lookup(
        &self,
        app: &str,
        devices: &[&str],
    ) -> Result<Vec<Option<Route>>, RouteStoreError>;
}

/// The default [`RouteStore`]: a sharded map in this process. Routes never expire;
/// `refresh` is a no-op and never scheduled ([`RouteStore::refresh_interval`] is `None`).
#[derive(Debug, Default)]
pub struct MemoryRouteStore {
    routes: ShardedMap<DeviceKey, Route>,
}

impl MemoryRouteStore {
    /// An empty store.
    pub fn new() -> MemoryRouteStore {
        MemoryRouteStore::default()
    }

    /// Number of routes held.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether no route is held.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[async_trait]
impl RouteStore for MemoryRouteStore {
    async fn register(&self, routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        self.register_replacing(routes).await.map(drop)
    }

    async fn register_replacing(
        &self,
        routes: &[(DeviceKey, Route)],
    ) -> Result<Vec<Option<Route>>, RouteStoreError> {
        Ok(routes
            .iter()
            .map(|(device, route)| self.routes.shard(device).insert(device.clone(), *route))
            .collect())
    }

    async fn unregister(&self, routes: &[(DeviceKey, u64)]) -> Result<(), RouteStoreError> {
        for (device, conn_id) in routes {
            let mut shard = self.routes.shard(device);
            if shard.get(device).is_some_and(|r| r.conn_id == *conn_id) {
                shard.remove(device);
            }
        }
        Ok(())
    }

    async fn refresh(&self, _routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        Ok(())
    }

    async fn lookup(
        &self,
        app: &str,
        devices: &[&str],
    ) -> Result<Vec<Option<Route>>, RouteStoreError> {
        Ok(devices
            .iter()
            .map(|device| {
                DeviceKey::with_joined(app, device, |key| self.routes.shard(key).get(key).copied())
            })
            .collect())
    }
}

/// The routes of a server without a store of its own: its hub's device map, read in
/// place. Registering and removing are no-ops (the hub's login and close are the
/// registration), so a single node keeps one map of its logged-in devices, not two
/// (a second map cost ~60-70 B per idle connection; docs/BENCHMARKS.md, "Idle memory,
/// TCP, second pass").
#[derive(Debug)]
pub(crate) struct HubRoutes {
    hub: Arc<Hub>,
}

impl HubRoutes {
    pub(crate) fn new(hub: Arc<Hub>) -> HubRoutes {
        HubRoutes { hub }
    }
}

#[async_trait]
impl RouteStore for HubRoutes {
    async fn register(&self, _routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        Ok(())
    }

    async fn unregister(&self, _routes: &[(DeviceKey, u64)]) -> Result<(), RouteStoreError> {
        Ok(())
    }

    async fn refresh(&self, _routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError> {
        Ok(())
    }

    async fn lookup(
        &self,
        app: &str,
        devices: &[&str],
    ) -> Result<Vec<Option<Route>>, RouteStoreError> {
        let node = self.hub.node_id();
        Ok(devices
            .iter()
            .map(|device| {
                let conn_id = self.hub.device_conn(app, device)?;
                Some(Route { conn_id, node })
            })
            .collect())
    }
}

/// A queued change to the store, or the request to stop after the ones before it.
#[derive(Debug)]
enum RouteChange {
    Register(DeviceKey, Route),
    Unregister(DeviceKey, u64),
    Stop,
}

/// What the route sync task did over its life, as [`RouteSync::finish`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouteSyncReport {
    /// Changes the store accepted.
    pub(crate) applied: u64,
    /// Changes lost: the queue was full or closed, or the store refused them.
    pub(crate) dropped: u64,
}

/// Where the route sync task sends what it learns: the store, and for routes replaced
/// on other nodes, the relay.
#[derive(Debug, Clone)]
pub(crate) struct RouteSinks {
    pub(crate) store: Arc<dyn RouteStore>,
    pub(crate) relay: Arc<dyn Relay>,
    pub(crate) relay_timeout: Duration,
}

/// Feeds a server's logins and closes to its [`RouteStore`] from one background task.
#[derive(Debug)]
pub(crate) struct RouteSync {
    sinks: RouteSinks,
    hub: Arc<Hub>,
    queue: OnceLock<mpsc::Sender<RouteChange>>,
    /// The task applying the queue; taken by [`RouteSync::finish`].
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<RouteSyncReport>>>,
    /// Changes that never reached the task (queue full, or sent after `finish`).
    not_queued: AtomicU64,
    /// The store is [`HubRoutes`]: nothing to queue, no task.
    hub_only: bool,
}

impl RouteSync {
    /// Shortest refresh period honoured, whatever the store asks: a refresh pass walks
    /// every local connection.
    const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(10);
    /// Changes waiting for the store before new ones are dropped; the next refresh
    /// re-registers what a dropped registration missed.
    const QUEUE: usize = 65_536;
    /// Most changes applied in one store call.
    const BATCH: usize = 512;

    pub(crate) fn new(sinks: RouteSinks, hub: Arc<Hub>, hub_only: bool) -> RouteSync {
        RouteSync {
            sinks,
            hub,
            queue: OnceLock::new(),
            task: std::sync::Mutex::new(None),
            not_queued: AtomicU64::new(0),
            hub_only,
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn RouteStore> {
        &self.sinks.store
    }

    pub(crate) fn register(&self, device: DeviceKey, conn_id: u64) {
        let route = Route {
            conn_id,
            node: self.hub.node_id(),
        };
        self.send(RouteChange::Register(device, route));
    }

    pub(crate) fn unregister(&self, device: DeviceKey, conn_id: u64) {
        self.send(RouteChange::Unregister(device, conn_id));
    }

    fn send(&self, change: RouteChange) {
        if self.hub_only {
            return;
        }
        // Started on first use, from a driver, so it runs on the server's runtime.
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(Self::QUEUE);
            let task = tokio::spawn(apply_changes(self.sinks.clone(), self.hub.clone(), rx));
            *crate::shard::lock(&self.task) = Some(task);
            tx
        });
        if queue.try_send(change).is_err() {
            self.not_queued.fetch_add(1, Ordering::Relaxed);
            warn!("route change queue full or closed; the next refresh repairs the store");
        }
    }

    /// Stops the task once it has applied every change queued before this call, and
    /// says what it applied and what was lost. Called by shutdown after the last
    /// connection departed, so every unregister is either in the store or counted.
    pub(crate) async fn finish(&self) -> RouteSyncReport {
        let task = crate::shard::lock(&self.task).take();
        let mut report = match (task, self.queue.get()) {
            (Some(task), Some(queue)) => {
                // Waits for room: `Stop` must not be lost to a full queue.
                let _ = queue.send(RouteChange::Stop).await;
                task.await.unwrap_or_default()
            }
            _ => RouteSyncReport::default(),
        };
        report.dropped += self.not_queued.load(Ordering::Relaxed);
        report
    }
}

/// Applies queued changes in order, batching runs of the same kind, and refreshes every
/// local route periodically. Ends when the server (holding the sender) is dropped.
async fn apply_changes(
    sinks: RouteSinks,
    hub: Arc<Hub>,
    mut changes: mpsc::Receiver<RouteChange>,
) -> RouteSyncReport {
    let mut report = RouteSyncReport::default();
    // No refresh for a store that does not ask for one: a timer that never fires.
    let period = sinks
        .store
        .refresh_interval()
        .map(|p| p.max(RouteSync::MIN_REFRESH_INTERVAL));
    let mut refresh = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    let mut batch = Vec::with_capacity(RouteSync::BATCH);
    loop {
        tokio::select! {
            received = changes.recv_many(&mut batch, RouteSync::BATCH) => {
                if received == 0 {
                    return report;
                }
                let stop = batch.iter().position(|c| matches!(c, RouteChange::Stop));
                if let Some(at) = stop {
                    // Whatever was queued after `Stop` is late: count it as lost.
                    report.dropped += (batch.len() - at - 1) as u64;
                    batch.truncate(at);
                }
                apply_batch(&sinks, hub.node_id(), &mut batch, &mut report).await;
                if stop.is_some() {
                    changes.close();
                    while changes.try_recv().is_ok() {
                        report.dropped += 1;
                    }
                    return report;
                }
            }
            () = tick_or_never(&mut refresh, period.is_some()) => {
                let node = hub.node_id();
                let routes: Vec<_> = hub
                    .devices()
                    .into_iter()
                    .map(|(device, conn_id)| (device, Route { conn_id, node }))
                    .collect();
                for chunk in routes.chunks(RouteSync::BATCH) {
                    if let Err(err) = sinks.store.refresh(chunk).await {
                        warn!(error = %err, "route refresh failed");
                    }
                }
            }
        }
    }
}

/// The next tick of `refresh`, or never when refreshing is off.
///
/// # Cancel safety
/// Cancel safe, as `Interval::tick`.
async fn tick_or_never(refresh: &mut tokio::time::Interval, enabled: bool) {
    if enabled {
        refresh.tick().await;
    } else {
        std::future::pending::<()>().await;
    }
}

async fn apply_batch(
    sinks: &RouteSinks,
    node: u16,
    batch: &mut Vec<RouteChange>,
    report: &mut RouteSyncReport,
) {
    let store = &*sinks.store;
    let mut register = Vec::new();
    let mut unregister = Vec::new();
    // Runs of one kind go in one call; a change of kind ends the run, keeping order.
    for change in batch.drain(..) {
        match change {
            RouteChange::Register(device, route) => {
                flush_unregister(store, &mut unregister, report).await;
                register.push((device, route));
            }
            RouteChange::Unregister(device, conn_id) => {
                flush_register(sinks, node, &mut register, report).await;
                unregister.push((device, conn_id));
            }
            RouteChange::Stop => {}
        }
    }
    flush_register(sinks, node, &mut register, report).await;
    flush_unregister(store, &mut unregister, report).await;
}

fn count(report: &mut RouteSyncReport, n: usize, result: Result<(), RouteStoreError>, what: &str) {
    match result {
        Ok(()) => report.applied += n as u64,
        Err(err) => {
            report.dropped += n as u64;
            warn!(error = %err, count = n, "route {what} failed");
        }
    }
}

async fn flush_register(
    sinks: &RouteSinks,
    node: u16,
    routes: &mut Vec<(DeviceKey, Route)>,
    report: &mut RouteSyncReport,
) {
    if routes.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let result = sinks.store.register_replacing(routes).await;
    crate::metrics::route_store_ops().record("register", started.elapsed(), result.is_err());
    let replaced = result.as_ref().map(|r| r.as_slice()).unwrap_or_default();
    // The device's older connection on another node: a duplicate login there.
    let kicks = routes
        .iter()
        .zip(replaced)
        .filter_map(|((_, route), old)| {
            old.filter(|old| old.node != node && old.conn_id != route.conn_id)
        })
        .map(|old| {
            let request = KickRequest {
                target: KickTarget::Conn(old.conn_id),
                code: Code::Replaced,
                message: "logged in elsewhere".to_owned(),
            };
            async move {
                let kicked = sinks.relay.kick(old.node, &request);
                if tokio::time::timeout(sinks.relay_timeout, kicked)
                    .await
                    .is_err()
                {
                    warn!(
                        node = old.node,
                        "duplicate login: the other node did not answer the kick"
                    );
                }
            }
        });
    futures::future::join_all(kicks).await;
    count(report, routes.len(), result.map(drop), "registration");
    routes.clear();
}

async fn flush_unregister(
    store: &dyn RouteStore,
    routes: &mut Vec<(DeviceKey, u64)>,
    report: &mut RouteSyncReport,
) {
    if !routes.is_empty() {
        let started = std::time::Instant::now();
        let result = store.unregister(routes).await;
        let ops = crate::metrics::route_store_ops();
        ops.record("unregister", started.elapsed(), result.is_err());
        count(report, routes.len(), result, "removal");
        routes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_registers_looks_up_and_keeps_newer_routes() {
        let store = MemoryRouteStore::new();
        let phone = DeviceKey::new("app", "phone");
        let tablet = DeviceKey::new("app", "tablet");
        let route = |conn_id| Route { conn_id, node: 1 };
        store
            .register(&[(phone.clone(), route(1)), (tablet.clone(), route(2))])
            .await
            .unwrap();
        // A newer login of the phone replaces its route; removing the old one is a no-op.
        store.register(&[(phone.clone(), route(3))]).await.unwrap();
        store.unregister(&[(phone.clone(), 1)]).await.unwrap();
        let found = store
            .lookup("app", &["phone", "tablet", "watch"])
            .await
            .unwrap();
        assert_eq!(found, vec![Some(route(3)), Some(route(2)), None]);
        store.unregister(&[(tablet, 2)]).await.unwrap();
        assert_eq!(store.lookup("app", &["tablet"]).await.unwrap(), vec![None]);
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn hub_routes_answer_from_the_hub_and_ignore_changes() {
        let hub = Arc::new(Hub::new(7));
        let store = HubRoutes::new(hub.clone());
        let phone = DeviceKey::new("app", "phone");
        let conn_id = hub.next_conn_id();
        // Registering does not make a route: only the hub's login does.
        let route = Route { conn_id, node: 7 };
        store.register(&[(phone.clone(), route)]).await.unwrap();
        assert_eq!(store.lookup("app", &["phone"]).await.unwrap(), vec![None]);
        assert!(hub.bind_device(phone.clone(), conn_id).is_none());
        let found = store.lookup("app", &["phone", "watch"]).await.unwrap();
        assert_eq!(found, vec![Some(route), None]);
        hub.remove(conn_id, Some(&phone));
        assert_eq!(store.lookup("app", &["phone"]).await.unwrap(), vec![None]);
    }
}

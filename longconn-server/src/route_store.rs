//! Device routes: (app, device) -> (connection id, node). The routing layer of the
//! source design, behind the [`RouteStore`] trait so that a shared store (Redis, in the
//! routing-layer crate) can replace the in-memory default without API changes.
//!
//! Drivers never wait for the store: logins and closes are queued to one
//! [`RouteSync`] task per server, which applies them in order and in batches (what a
//! networked store wants: one round trip for many devices) and refreshes every local
//! route each [`RouteSync::REFRESH_INTERVAL`] (what a store with expiring entries wants).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tracing::warn;

use crate::hub::{DeviceKey, Hub};
use crate::shard::ShardedMap;

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

    /// Removes these devices' routes, each only if it still points at the given
    /// connection id (a newer login elsewhere keeps its route).
    async fn unregister(&self, routes: &[(DeviceKey, u64)]) -> Result<(), RouteStoreError>;

    /// Confirms that these routes are still live. A store whose entries expire extends
    /// them; one whose entries do not may ignore the call.
    async fn refresh(&self, routes: &[(DeviceKey, Route)]) -> Result<(), RouteStoreError>;

    /// The route of each of `devices` of `app`, in the same order (`None`: offline).
    async fn lookup(
        &self,
        app: &str,
        devices: &[&str],
    ) -> Result<Vec<Option<Route>>, RouteStoreError>;
}

/// The default [`RouteStore`]: a sharded map in this process. Routes never expire;
/// `refresh` is a no-op.
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
        for (device, route) in routes {
            self.routes.shard(device).insert(device.clone(), *route);
        }
        Ok(())
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
                let key = DeviceKey::new(app, device);
                self.routes.shard(&key).get(&key).copied()
            })
            .collect())
    }
}

/// A queued change to the store.
#[derive(Debug)]
enum RouteChange {
    Register(DeviceKey, Route),
    Unregister(DeviceKey, u64),
}

/// Feeds a server's logins and closes to its [`RouteStore`] from one background task.
#[derive(Debug)]
pub(crate) struct RouteSync {
    store: Arc<dyn RouteStore>,
    hub: Arc<Hub>,
    queue: OnceLock<mpsc::Sender<RouteChange>>,
}

impl RouteSync {
    /// How often every local route is refreshed.
    pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
    /// Changes waiting for the store before new ones are dropped; the next refresh
    /// re-registers what a dropped registration missed.
    const QUEUE: usize = 65_536;
    /// Most changes applied in one store call.
    const BATCH: usize = 512;

    pub(crate) fn new(store: Arc<dyn RouteStore>, hub: Arc<Hub>) -> RouteSync {
        RouteSync {
            store,
            hub,
            queue: OnceLock::new(),
        }
    }

    pub(crate) fn store(&self) -> &Arc<dyn RouteStore> {
        &self.store
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
        // Started on first use, from a driver, so it runs on the server's runtime.
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(Self::QUEUE);
            tokio::spawn(apply_changes(self.store.clone(), self.hub.clone(), rx));
            tx
        });
        if queue.try_send(change).is_err() {
            warn!("route change queue full; the next refresh repairs the store");
        }
    }
}

/// Applies queued changes in order, batching runs of the same kind, and refreshes every
/// local route periodically. Ends when the server (holding the sender) is dropped.
async fn apply_changes(
    store: Arc<dyn RouteStore>,
    hub: Arc<Hub>,
    mut changes: mpsc::Receiver<RouteChange>,
) {
    let mut refresh = tokio::time::interval(RouteSync::REFRESH_INTERVAL);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    let mut batch = Vec::with_capacity(RouteSync::BATCH);
    loop {
        tokio::select! {
            received = changes.recv_many(&mut batch, RouteSync::BATCH) => {
                if received == 0 {
                    return;
                }
                apply_batch(&*store, &mut batch).await;
            }
            _ = refresh.tick() => {
                let node = hub.node_id();
                let routes: Vec<_> = hub
                    .devices()
                    .into_iter()
                    .map(|(device, conn_id)| (device, Route { conn_id, node }))
                    .collect();
                for chunk in routes.chunks(RouteSync::BATCH) {
                    if let Err(err) = store.refresh(chunk).await {
                        warn!(error = %err, "route refresh failed");
                    }
                }
            }
        }
    }
}

async fn apply_batch(store: &dyn RouteStore, batch: &mut Vec<RouteChange>) {
    let mut register = Vec::new();
    let mut unregister = Vec::new();
    // Runs of one kind go in one call; a change of kind ends the run, keeping order.
    for change in batch.drain(..) {
        match change {
            RouteChange::Register(device, route) => {
                flush_unregister(store, &mut unregister).await;
                register.push((device, route));
            }
            RouteChange::Unregister(device, conn_id) => {
                flush_register(store, &mut register).await;
                unregister.push((device, conn_id));
            }
        }
    }
    flush_register(store, &mut register).await;
    flush_unregister(store, &mut unregister).await;
}

async fn flush_register(store: &dyn RouteStore, routes: &mut Vec<(DeviceKey, Route)>) {
    if !routes.is_empty() {
        if let Err(err) = store.register(routes).await {
            warn!(error = %err, count = routes.len(), "route registration failed");
        }
        routes.clear();
    }
}

async fn flush_unregister(store: &dyn RouteStore, routes: &mut Vec<(DeviceKey, u64)>) {
    if !routes.is_empty() {
        if let Err(err) = store.unregister(routes).await {
            warn!(error = %err, count = routes.len(), "route removal failed");
        }
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
}

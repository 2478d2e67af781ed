//! Where access nodes come from: the [`NodeSource`] trait, a fixed list
//! ([`StaticNodes`], from the config) and, with the `registry` feature, a cached view of
//! longconn-cluster's Redis node registry ([`RegistryNodes`]).
//!
//! A source is read on every `/v1/access` request, so reading must be a pointer copy:
//! [`NodeSource::nodes`] returns the current `Arc<[Node]>`. A source that lives elsewhere
//! (Redis) refreshes that list in the background; no request ever waits on it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// A client transport, as the gateway's listeners and the SDK's URL schemes name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// QUIC.
    Quic,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Transport; 5] = [
        Transport::Tcp,
        Transport::Tls,
        Transport::Ws,
        Transport::Wss,
        Transport::Quic,
    ];

    /// The lowercase name, which is also the URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
            Transport::Quic => "quic",
        }
    }

    /// The transport named `name` (lowercase), if any.
    pub fn parse(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One advertised listener of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeAddr {
    /// A URL the SDK dials (`tcp://10.0.0.1:7100`, `ws://10.0.0.1:7101/ws`).
    pub url: String,
    /// The `host:port` part of it.
    pub address: String,
}

impl NodeAddr {
    /// Normalises an advertised address: a bare `host:port` becomes
    /// `<transport>://host:port` (with the gateway's `/ws` path for WebSocket); a URL is
    /// kept if its scheme is the transport's. `None` for anything else.
    pub fn new(transport: Transport, advertised: &str) -> Option<NodeAddr> {
        let advertised = advertised.trim();
        let url = match advertised.split_once("://") {
            Some((scheme, _)) if scheme == transport.as_str() => advertised.to_owned(),
            Some(_) => return None,
            None => match transport {
                Transport::Ws | Transport::Wss => format!("{transport}://{advertised}/ws"),
                _ => format!("{transport}://{advertised}"),
            },
        };
        let rest = &url[transport.as_str().len() + 3..];
        let address = rest.split('/').next().unwrap_or_default().to_owned();
        if address.is_empty() || !address.contains(':') {
            return None;
        }
        Some(NodeAddr { url, address })
    }
}

/// An access node as the control layer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The node id (the top 16 bits of its connection ids).
    pub id: u16,
    /// Its listeners, by transport.
    pub addrs: BTreeMap<Transport, NodeAddr>,
    /// Connections it holds (its last report).
    pub connections: u64,
    /// A draining node gets no new clients.
    pub draining: bool,
}

/// Supplies the current node list. Called on every access request: it must not block
/// or do I/O.
pub trait NodeSource: Send + Sync + fmt::Debug + 'static {
    /// The nodes now, live and draining alike (the selector skips draining ones).
    fn nodes(&self) -> Arc<[Node]>;
}

/// A fixed node list (from the config's `[[nodes]]`, or given in code).
#[derive(Debug, Clone)]
pub struct StaticNodes {
    nodes: Arc<[Node]>,
}

impl StaticNodes {
    /// A source that always answers `nodes`.
    pub fn new(nodes: Vec<Node>) -> StaticNodes {
        StaticNodes {
            nodes: nodes.into(),
        }
    }
}

impl NodeSource for StaticNodes {
    fn nodes(&self) -> Arc<[Node]> {
        self.nodes.clone()
    }
}

/// A node list that something else keeps current: [`RegistryNodes`] writes it, requests
/// read it.
#[derive(Debug, Default)]
pub struct SharedNodes {
    nodes: RwLock<Arc<[Node]>>,
}

impl SharedNodes {
    /// Replaces the list.
    pub fn replace(&self, nodes: Vec<Node>) {
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = nodes.into();
    }
}

impl NodeSource for SharedNodes {
    fn nodes(&self) -> Arc<[Node]> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(feature = "registry")]
pub use registry::{NodeLister, RegistryNodes};

#[cfg(feature = "registry")]
mod registry {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use longconn_cluster::NodeInfo;
    use tokio::task::JoinHandle;
    use tokio_util::sync::CancellationToken;
    use tracing::warn;

    use super::{Node, NodeAddr, NodeSource, SharedNodes, Transport};

    /// Lists the live nodes of a cluster; [`longconn_cluster::NodeRegistry`] is the one
    /// implementation that matters, tests use fakes.
    pub trait NodeLister: Send + Sync + 'static {
        /// One listing (a Redis round trip or two).
        fn list(&self) -> impl std::future::Future<Output = Result<Vec<NodeInfo>, String>> + Send;
    }

    impl<C> NodeLister for longconn_cluster::NodeRegistry<C>
    where
        C: longconn_cluster::redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    {
        async fn list(&self) -> Result<Vec<NodeInfo>, String> {
            longconn_cluster::NodeRegistry::list(self)
                .await
                .map_err(|e| e.to_string())
        }
    }

    /// The registry's live nodes, cached: a background task lists them every `refresh`
    /// and requests read the last listing. When a listing fails, the previous one stays
    /// in use (a Redis outage does not empty the answer) and the failure is logged and
    /// counted.
    #[derive(Debug)]
    pub struct RegistryNodes {
        shared: Arc<SharedNodes>,
        stats: Arc<RefreshStats>,
        stop: CancellationToken,
        task: Option<JoinHandle<()>>,
    }

    /// Counters of the refresh task.
    #[derive(Debug, Default)]
    struct RefreshStats {
        listings: AtomicU64,
        failures: AtomicU64,
        last_ok_ms: AtomicU64,
    }

    impl RegistryNodes {
        /// Lists once (so the first request already has nodes; a failure is logged and
        /// the list starts empty), then spawns the refresh task on the current runtime.
        pub async fn start<L: NodeLister>(lister: L, refresh: Duration) -> RegistryNodes {
            let shared = Arc::new(SharedNodes::default());
            let stats = Arc::new(RefreshStats::default());
            refresh_once(&lister, &shared, &stats).await;
            let stop = CancellationToken::new();
            let task = tokio::spawn({
                let (shared, stats, stop) = (shared.clone(), stats.clone(), stop.clone());
                async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(refresh) => {}
                        }
                        refresh_once(&lister, &shared, &stats).await;
                    }
                }
            });
            RegistryNodes {
                shared,
                stats,
                stop,
                task: Some(task),
            }
        }

        /// Registry listings made so far (each one is a Redis round trip or two).
        pub fn listings(&self) -> u64 {
            self.stats.listings.load(Ordering::Relaxed)
        }

        /// Listings that failed (the previous list stayed in use).
        pub fn failures(&self) -> u64 {
            self.stats.failures.load(Ordering::Relaxed)
        }

        /// When the last listing succeeded, Unix milliseconds (0: never).
        pub fn last_ok_ms(&self) -> u64 {
            self.stats.last_ok_ms.load(Ordering::Relaxed)
        }

        /// Stops the refresh task and waits for it.
        pub async fn shutdown(mut self) {
            self.stop.cancel();
            if let Some(task) = self.task.take() {
                let _ = task.await;
            }
        }
    }

    impl Drop for RegistryNodes {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    impl NodeSource for RegistryNodes {
        fn nodes(&self) -> Arc<[Node]> {
            self.shared.nodes()
        }
    }

    async fn refresh_once<L: NodeLister>(lister: &L, shared: &SharedNodes, stats: &RefreshStats) {
        stats.listings.fetch_add(1, Ordering::Relaxed);
        match lister.list().await {
            Ok(infos) => {
                shared.replace(infos.iter().map(node_of).collect());
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                stats.last_ok_ms.store(now_ms, Ordering::Relaxed);
            }
            Err(err) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(%err, "node registry listing failed; keeping the previous node list");
            }
        }
    }

    /// A registry entry as a [`Node`]; advertised addresses of unknown transports or
    /// in a shape the SDK cannot dial are skipped (and logged).
    pub(crate) fn node_of(info: &NodeInfo) -> Node {
        let mut addrs = std::collections::BTreeMap::new();
        for (name, advertised) in &info.addrs {
            match Transport::parse(name).and_then(|t| Some((t, NodeAddr::new(t, advertised)?))) {
                Some((t, addr)) => {
                    addrs.insert(t, addr);
                }
                None => warn!(
                    node = info.id,
                    transport = %name,
                    address = %advertised,
                    "skipping an advertised address the SDK cannot dial"
                ),
            }
        }
        Node {
            id: info.id,
            addrs,
            connections: info.connections,
            draining: info.draining,
        }
    }

    #[cfg(test)]
    mod tests {
        use std::collections::BTreeMap;
        use std::sync::atomic::AtomicUsize;

        use super::*;

        /// A lister that counts its calls and fails when told to.
        struct Fake {
            calls: Arc<AtomicUsize>,
            fail: Arc<std::sync::atomic::AtomicBool>,
            connections: Arc<AtomicU64>,
        }

        impl NodeLister for Fake {
            async fn list(&self) -> Result<Vec<NodeInfo>, String> {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.fail.load(Ordering::SeqCst) {
                    return Err("redis down".into());
                }
                Ok(vec![NodeInfo {
                    id: 7,
                    addrs: BTreeMap::from([
                        ("tcp".into(), "10.0.0.7:7100".into()),
                        ("ws".into(), "ws://10.0.0.7:7101/ws".into()),
                        ("carrier-pigeon".into(), "coop:1".into()),
                    ]),
                    connections: self.connections.load(Ordering::SeqCst),
                    started_at_ms: 1,
                    draining: false,
                    instance: "abc".into(),
                }])
            }
        }

        #[tokio::test(start_paused = true)]
        async fn reads_never_reach_the_registry_and_failures_keep_the_last_list() {
            let calls = Arc::new(AtomicUsize::new(0));
            let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let connections = Arc::new(AtomicU64::new(5));
            let nodes = RegistryNodes::start(
                Fake {
                    calls: calls.clone(),
                    fail: fail.clone(),
                    connections: connections.clone(),
                },
                Duration::from_secs(2),
            )
            .await;
            for _ in 0..10_000 {
                assert_eq!(nodes.nodes().len(), 1);
            }
            assert_eq!(
                calls.load(Ordering::SeqCst),
                1,
                "one listing, not one per read"
            );
            let node = &nodes.nodes()[0];
            assert_eq!(node.addrs[&Transport::Tcp].url, "tcp://10.0.0.7:7100");
            assert_eq!(node.addrs[&Transport::Ws].address, "10.0.0.7:7101");
            assert_eq!(node.addrs.len(), 2, "the unknown transport is skipped");

            connections.store(9, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2_100)).await;
            assert_eq!(nodes.nodes()[0].connections, 9);
            fail.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2_000)).await;
            assert!(nodes.failures() >= 1);
            assert_eq!(nodes.nodes()[0].connections, 9, "the last good list stays");
            nodes.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_become_dialable_urls() {
        let ws = NodeAddr::new(Transport::Ws, "127.0.0.1:7101").unwrap();
        assert_eq!(ws.url, "ws://127.0.0.1:7101/ws");
        assert_eq!(ws.address, "127.0.0.1:7101");
        let quic = NodeAddr::new(Transport::Quic, "quic://gw.example.com:443").unwrap();
        assert_eq!(quic.address, "gw.example.com:443");
        assert_eq!(NodeAddr::new(Transport::Tcp, "ws://x:1/ws"), None);
        assert_eq!(NodeAddr::new(Transport::Tcp, "no-port"), None);
    }
}

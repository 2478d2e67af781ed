//! The control layer over longconn-cluster's Redis node registry: nodes registered by
//! gateways are handed out, a draining node stops being offered, and requests never
//! wait on Redis (the listing count follows the refresh period, not the requests).
#![cfg(feature = "registry")]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use longconn_cluster::{NodeAnnouncement, NodeRegistry};
use longconn_control::{AccessRequest, Control, RegistryNodes};

/// A redis-server on a free loopback port, killed on drop.
struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts one, or prints a skip notice (a failure under `CI=true`) if redis-server is
/// not installed.
fn redis() -> Option<Redis> {
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("redis-server is not installed, and CI=true: install redis-server");
        }
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
        return None;
    }
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = Redis(child, port);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("redis-server did not start on any of 5 ports");
}

fn request(device: &str) -> AccessRequest {
    AccessRequest {
        app: "demo".into(),
        device: device.into(),
        platform: "ios".into(),
        app_version: "1.0".into(),
        sdk_version: "0.1.0".into(),
        network: Default::default(),
        quality: Default::default(),
    }
}

fn announcement(id: u16) -> NodeAnnouncement {
    NodeAnnouncement {
        id,
        addrs: BTreeMap::from([
            ("tcp".to_owned(), format!("10.0.0.{id}:7100")),
            ("ws".to_owned(), format!("ws://10.0.0.{id}:7101/ws")),
        ]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_nodes_are_offered_and_draining_ones_are_not() {
    let Some(redis) = redis() else { return };
    let url = format!("redis://127.0.0.1:{}/", redis.1);
    let conn = longconn_cluster::connect(&url).await.unwrap();
    let registry = NodeRegistry::new(conn);
    let _one = registry.register(announcement(1)).await.unwrap();
    let two = registry.register(announcement(2)).await.unwrap();

    let nodes = Arc::new(RegistryNodes::start(registry.clone(), Duration::from_millis(100)).await);
    let control = Control::embedded().with_node_source(nodes.clone());
    let answer = control.access(&request("d"), 1).unwrap();
    let mut offered: Vec<u16> = answer.endpoints.iter().map(|e| e.node).collect();
    offered.dedup();
    offered.sort_unstable();
    assert_eq!(offered, [1, 2]);
    assert!(
        answer
            .endpoints
            .iter()
            .any(|e| e.url == "tcp://10.0.0.2:7100")
    );
    assert!(
        answer
            .endpoints
            .iter()
            .any(|e| e.url == "ws://10.0.0.1:7101/ws")
    );

    // Many requests, few listings: requests read the cached list.
    let listings_before = nodes.listings();
    let started = Instant::now();
    for i in 0..5_000 {
        control.access(&request(&format!("d{i}")), 1).unwrap();
    }
    let periods = started.elapsed().as_millis() as u64 / 100 + 2;
    assert!(
        nodes.listings() - listings_before <= periods,
        "{} listings for 5,000 requests in {:?}",
        nodes.listings() - listings_before,
        started.elapsed()
    );

    two.set_draining(true).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = control.access(&request("d"), 1).unwrap();
        if answer.endpoints.iter().all(|e| e.node == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the draining node is still offered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(redis);
}

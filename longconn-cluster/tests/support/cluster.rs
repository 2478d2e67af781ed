//! A private 3-master Redis Cluster per test: three `redis-server --cluster-enabled yes`
//! on free loopback ports (each with its cluster bus on port + 10000) and a temp dir for
//! their node files, joined by `redis-cli --cluster create`; killed and removed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use longconn_cluster::RedisClusterConnection;
use longconn_cluster::redis;

use super::{installed_or_skip, wait_for_pong};

/// Three masters, no replicas.
pub(crate) struct RedisCluster {
    children: Vec<Child>,
    pub(crate) ports: Vec<u16>,
    dir: PathBuf,
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// Starts one and waits until every node reports `cluster_state:ok`. Without
    /// `redis-server` or `redis-cli`, prints a skip notice and returns `None`, unless
    /// `CI=true`, where that is a failure.
    pub(crate) fn start() -> Option<RedisCluster> {
        if !installed_or_skip("redis-server", "redis-server")
            || !installed_or_skip("redis-cli", "redis-tools")
        {
            return None;
        }
        for _ in 0..5 {
            if let Some(cluster) = RedisCluster::try_start() {
                return Some(cluster);
            }
        }
        panic!("no Redis Cluster came up in 5 attempts");
    }

    fn try_start() -> Option<RedisCluster> {
        let dir = std::env::temp_dir().join(format!(
            "longconn-cluster-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = free_port_pair();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", "5000"])
                .args(["--dir", &cluster.dir.to_string_lossy()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let up = wait_for_pong(port, &mut child);
            cluster.children.push(child);
            cluster.ports.push(port);
            if !up {
                return None; // dropped: killed and removed
            }
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let created = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        if !created.success() {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if cluster.ports.iter().all(|&p| {
                cluster_info(p).contains("cluster_state:ok")
                    && cluster_info(p).contains("cluster_slots_ok:16384")
            }) {
                return Some(cluster);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// A fresh cluster connection.
    pub(crate) async fn connect(&self) -> RedisClusterConnection {
        longconn_cluster::connect_cluster(&self.urls())
            .await
            .unwrap()
    }

    /// Runs one command on one node (by index), not through the cluster.
    pub(crate) async fn node_cmd<T: redis::FromRedisValue>(&self, node: usize, args: &[&str]) -> T {
        let url = format!("redis://127.0.0.1:{}/", self.ports[node]);
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// The calls of `command` (lowercase, e.g. `spublish`) each master counted in
    /// `INFO commandstats` since its last `CONFIG RESETSTAT`.
    pub(crate) async fn calls(&self, command: &str) -> Vec<u64> {
        let mut calls = Vec::new();
        for node in 0..self.ports.len() {
            let info: String = self.node_cmd(node, &["INFO", "commandstats"]).await;
            calls.push(command_calls(&info, command));
        }
        calls
    }

    /// `CONFIG RESETSTAT` on every master.
    pub(crate) async fn reset_stats(&self) {
        for node in 0..self.ports.len() {
            let () = self.node_cmd(node, &["CONFIG", "RESETSTAT"]).await;
        }
    }

    /// The node id of the master at `node` (index).
    pub(crate) async fn node_id(&self, node: usize) -> String {
        self.node_cmd::<String>(node, &["CLUSTER", "MYID"]).await
    }
}

/// `calls=` of `cmdstat_{command}` in an `INFO commandstats` reply (0 if absent).
pub(crate) fn command_calls(info: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn cluster_info(port: u16) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

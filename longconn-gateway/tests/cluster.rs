//! Gateways as one cluster on Redis (issue 13): the real `gateway` binary where a process
//! must die (SIGKILL, SIGTERM), in-process gateways where Redis is the one restarted.
//! Each test starts its own redis-server (skipped with a notice when it is not
//! installed, a failure when CI=true) and uses short TTLs.

mod common;
#[path = "../../longconn-cluster/tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use longconn_cluster::{ClusterConfig, RedisTarget};
use longconn_core::{Code, Frame, FrameCodec, Metadata};
use longconn_gateway::Gateway;
use longconn_server::ServerConfig;
use serde_json::{Value, json};
use support::cluster::RedisCluster;
use support::{RedisServer, STEP};

const APP: &str = "cluster-gw";
/// Route TTL of the tests: a dead node's routes are gone this long after its last
/// refresh (every third of it).
const ROUTE_TTL: Duration = Duration::from_millis(1500);
/// Node entry TTL of the tests: heartbeat and Redis watch every third of it.
const NODE_TTL: Duration = Duration::from_millis(900);
/// The set of registered node ids (docs/CLUSTER.md, key schema).
const NODE_IDS: &str = "lc:{nodes}:ids";

/// The Redis the tests' gateway processes share: one server, or a 3-master cluster.
enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Store {
    /// The gateway flag and value that join this Redis.
    fn flag(&self) -> [String; 2] {
        match self {
            Store::Single(redis) => ["--redis".into(), redis.url()],
            Store::Cluster(cluster) => ["--redis-cluster".into(), cluster.urls().join(",")],
        }
    }

    /// One command, routed by its key on a cluster.
    async fn cmd<T: longconn_cluster::redis::FromRedisValue>(&self, args: &[&str]) -> T {
        match self {
            Store::Single(redis) => redis.cmd(args).await,
            Store::Cluster(cluster) => {
                let mut conn = cluster.connect().await;
                let mut cmd = longconn_cluster::redis::cmd(args[0]);
                for arg in &args[1..] {
                    cmd.arg(*arg);
                }
                cmd.query_async(&mut conn).await.unwrap()
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// A gateway process.

struct Node {
    child: Child,
    id: u16,
    tcp: SocketAddr,
    http: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[cluster]` file with the tests' TTLs (and a short drain deadline).
fn config_file(name: &str, route_ttl: Duration) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lc-gw-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[cluster]\nroute_ttl_ms = {}\nnode_ttl_ms = {}\nrelay_timeout_ms = 1000\n\
             [shutdown]\ndeadline_ms = 2000\n",
            route_ttl.as_millis(),
            NODE_TTL.as_millis()
        ),
    )
    .unwrap();
    path
}

fn gateway_command(store: &Store, id: u16, config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .args(["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--ws", "off", "--quic", "off"])
        .args(["--node-id", &id.to_string()])
        .args(store.flag())
        .args([
            "--token-key-id",
            "k",
            "--token-secret",
            "cluster-test-secret-0123",
        ])
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

/// Starts node `id` on `redis` and reads its bound addresses from its log.
fn start_node(store: &Store, id: u16, config: &std::path::Path) -> Node {
    let mut child = gateway_command(store, id, config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway binary starts");
    let bound = common::read_listening(&mut child).bound;
    Node {
        child,
        id,
        tcp: bound["tcp"],
        http: bound["http"],
    }
}

/// Sends SIGTERM to `node`'s process.
fn sigterm(node: &Node) {
    let status = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the process to exit, at most [`STEP`].
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "gateway did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------
// Clients and HTTP, blocking.

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        Client {
            stream,
            buf: BytesMut::new(),
            codec: FrameCodec::new(65_536),
        }
    }

    /// Connects to `addr` and logs in as `device`.
    fn login(addr: SocketAddr, device: &str) -> Client {
        let mut client = Client::connect(addr);
        client.send(&Frame::Login {
            id: 1,
            app: APP.into(),
            device: device.into(),
            token: support::token(APP, device),
            meta: Metadata::new(),
        });
        match client.recv() {
            Some(Frame::LoginAck { id: 1, .. }) => client,
            other => panic!("{device}: expected LoginAck, got {other:?}"),
        }
    }

    fn join(&mut self, group: &str) {
        self.send(&Frame::JoinGroup {
            id: 2,
            group: group.into(),
            since: None,
        });
        match self.recv() {
            Some(Frame::JoinAck { id: 2, .. }) => {}
            other => panic!("expected JoinAck, got {other:?}"),
        }
    }

    fn send(&mut self, frame: &Frame) {
        let bytes = frame.to_bytes(65_536).unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                // A killed peer may reset the connection rather than close it.
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(err) => panic!("no frame in time: {err}"),
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next push, skipping pings; its payload, group, seq and epoch.
    fn next_push(&mut self) -> (Bytes, Option<String>, Option<u64>, Option<u64>) {
        loop {
            match self.recv() {
                Some(Frame::Push {
                    payload,
                    group,
                    seq,
                    epoch,
                    ..
                }) => return (payload, group.map(|g| g.as_str().to_owned()), seq, epoch),
                Some(Frame::Ping { .. }) => {}
                other => panic!("expected a push, got {other:?}"),
            }
        }
    }
}

fn http_post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Pushes `payload` to `devices` through `node`'s push API.
fn push(http: SocketAddr, devices: &[&str], payload: &[u8]) -> (u16, Value) {
    use base64::Engine;
    let payload_b64 = base64::engine::general_purpose::STANDARD.encode(payload);
    http_post(
        http,
        "/v1/push/devices",
        &json!({"app": APP, "business": 5, "devices": devices, "payload_b64": payload_b64}),
    )
}

/// `lc:r:{app len}:{app}:{device}`.
fn route_key(device: &str) -> String {
    format!("lc:r:{}:{APP}:{device}", APP.len())
}

/// Blocks on an async Redis command from a synchronous test.
fn redis_cmd<T: longconn_cluster::redis::FromRedisValue>(store: &Store, args: &[&str]) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(store.cmd(args))
}

/// Polls `check` every 20 ms for at most [`STEP`].
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn route_of(store: &Store, device: &str) -> Option<String> {
    redis_cmd(store, &["GET", &route_key(device)])
}

// ---------------------------------------------------------------------------------
// Acceptance, SIGKILL, SIGTERM, node ids.

/// Issue 13's acceptance on one Redis with three gateway processes.
#[test]
fn three_gateways_on_one_redis_act_as_one() {
    if let Some(redis) = RedisServer::start() {
        three_gateways_act_as_one(&Store::Single(redis), "three");
    }
}

/// Issue 13's acceptance on a 3-master Redis Cluster with three gateway processes.
#[test]
fn three_gateways_on_a_redis_cluster_act_as_one() {
    if let Some(cluster) = RedisCluster::start() {
        three_gateways_act_as_one(&Store::Cluster(cluster), "three-cluster");
    }
}

fn three_gateways_act_as_one(redis: &Store, name: &str) {
    let config = config_file(name, ROUTE_TTL);
    let mut nodes: Vec<Node> = (1..=3).map(|id| start_node(redis, id, &config)).collect();
    let (n1, n2, n3) = (nodes[0].http, nodes[1].tcp, nodes[2].tcp);
    let registered: Vec<u16> = redis_cmd(redis, &["SMEMBERS", NODE_IDS]);
    assert_eq!(registered.len(), 3, "{registered:?}");

    // A device on node 3 receives a push sent through node 1's API.
    let mut phone = Client::login(n3, "phone");
    wait_until("phone's route", || {
        route_of(redis, "phone").is_some_and(|r| r.starts_with("3:"))
    });
    let (status, body) = push(n1, &["phone"], b"via node 1");
    assert_eq!((status, &body["queued"]), (200, &json!(1)), "{body}");
    assert_eq!(phone.next_push().0, "via node 1");

    // A group with members on the three nodes: one publish from node 1, one (epoch,
    // seq) everywhere.
    let mut members: Vec<Client> = nodes
        .iter()
        .map(|node| {
            let mut member = Client::login(node.tcp, &format!("member-{}", node.id));
            member.join("room");
            member
        })
        .collect();
    wait_until("room on three nodes", || {
        redis_cmd::<u64>(redis, &["SCARD", "lc:gn:room"]) == 3
    });
    let (status, body) = http_post(
        n1,
        "/v1/push/groups/room",
        &json!({"business": 5, "payload_b64": "cm9vbQ=="}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"], json!(3), "{body}");
    assert_eq!(body["remote_nodes"], json!(2), "{body}");
    let pushes: Vec<_> = members.iter_mut().map(Client::next_push).collect();
    for (payload, group, seq, epoch) in &pushes {
        assert_eq!(payload, "room");
        assert_eq!(group.as_deref(), Some("room"));
        assert_eq!((*seq, *epoch), (pushes[0].2, pushes[0].3));
        assert_eq!(seq.map(|s| json!(s)), Some(body["seq"].clone()));
    }

    // Presence through any node counts the members on all three.
    for node in &nodes {
        let (status, body) = http_get(node.http, "/v1/groups/room");
        assert_eq!(
            (status, body),
            (
                200,
                json!({"group": "room", "members": 3, "local_members": 1, "remote_nodes": 2, "unknown_nodes": 0})
            )
        );
    }

    // A second login of one device on another node kicks the first (duplicate login).
    let mut first = Client::login(nodes[0].tcp, "twice");
    wait_until("twice's route", || route_of(redis, "twice").is_some());
    let _second = Client::login(n2, "twice");
    loop {
        match first.recv() {
            Some(Frame::Kick { code, .. }) => {
                assert_eq!(code, Code::Replaced);
                break;
            }
            Some(Frame::Ping { .. }) => {}
            other => panic!("expected the duplicate-login kick, got {other:?}"),
        }
    }

    // SIGKILL of node 3: its keys are gone within the TTL, its devices are offline,
    // and reconnected to node 2 they receive pushes there.
    let killed = Instant::now();
    nodes[2].child.kill().unwrap();
    nodes[2].child.wait().unwrap();
    wait_until("node 3's route and node keys to expire", || {
        route_of(redis, "phone").is_none()
            && redis_cmd::<Option<String>>(redis, &["GET", "lc:{nodes}:n:3"]).is_none()
    });
    let gone_after = killed.elapsed();
    assert!(
        // The margin covers the polling (a fresh Redis connection per look).
        gone_after <= ROUTE_TTL + Duration::from_millis(750),
        "node 3's routes took {gone_after:?} to expire (TTL {ROUTE_TTL:?})"
    );
    assert!(phone.recv().is_none(), "node 3's connections died with it");
    let (status, body) = push(n1, &["phone"], b"nobody");
    assert_eq!(
        (status, &body["offline"]),
        (200, &json!(["phone"])),
        "{body}"
    );
    let mut phone = Client::login(n2, "phone");
    wait_until("phone's route on node 2", || {
        route_of(redis, "phone").is_some_and(|r| r.starts_with("2:"))
    });
    let (status, body) = push(n1, &["phone"], b"on node 2");
    assert_eq!((status, &body["queued"]), (200, &json!(1)), "{body}");
    assert_eq!(phone.next_push().0, "on node 2");
}

/// SIGTERM: the node marks itself draining, drains, unregisters its routes and its
/// entry, then exits; with a 30 s route TTL, expiry cannot explain the keys' absence.
#[test]
fn sigterm_deregisters_routes_and_the_node_before_exit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let redis = Store::Single(redis);
    let config = config_file("sigterm", Duration::from_secs(30));
    let mut node = start_node(&redis, 4, &config);
    let mut devices: Vec<Client> = (0..3)
        .map(|i| Client::login(node.tcp, &format!("term-{i}")))
        .collect();
    wait_until("three routes", || {
        (0..3).all(|i| route_of(&redis, &format!("term-{i}")).is_some())
    });
    let ttl_ms: i64 = redis_cmd(&redis, &["PTTL", &route_key("term-0")]);
    assert!(ttl_ms > 20_000, "route TTL {ttl_ms} ms");
    sigterm(&node);
    // Each client is told to go away, then the node closes it.
    for device in &mut devices {
        loop {
            match device.recv() {
                Some(Frame::GoAway { .. }) => break,
                Some(Frame::Ping { .. }) => {}
                other => panic!("expected GoAway, got {other:?}"),
            }
        }
    }
    drop(devices);
    let status = wait_exit(&mut node.child);
    assert!(status.success(), "{status:?}");
    for i in 0..3 {
        assert_eq!(route_of(&redis, &format!("term-{i}")), None, "term-{i}");
    }
    let entry: Option<String> = redis_cmd(&redis, &["GET", "lc:{nodes}:n:4"]);
    assert_eq!(entry, None, "the node entry is removed at exit");
    let registered: Vec<u16> = redis_cmd(&redis, &["SMEMBERS", NODE_IDS]);
    assert!(registered.is_empty(), "{registered:?}");
}

/// A node id held by a live node is refused at start: exit code 3 and a message.
#[test]
fn a_live_node_id_is_refused_at_start() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let redis = Store::Single(redis);
    let config = config_file("taken", ROUTE_TTL);
    let _first = start_node(&redis, 5, &config);
    let output = gateway_command(&redis, 5, &config)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node id 5 is already live"), "{stderr}");
    assert!(stderr.contains("--node-id"), "{stderr}");
}

// ---------------------------------------------------------------------------------
// Redis restarted, with in-process gateways.

async fn in_process_node(redis: &RedisServer, id: u16) -> Gateway {
    let mut cluster = ClusterConfig::new(RedisTarget::Single(redis.url()), id);
    cluster.route_ttl = ROUTE_TTL;
    cluster.node_ttl = NODE_TTL;
    cluster.relay_timeout = Duration::from_secs(1);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Gateway::builder()
        .server_config(ServerConfig::builder().node_id(id).build().unwrap())
        .authenticator(support::keys())
        .http(any)
        .cluster(cluster)
        .start()
        .await
        .unwrap()
}

async fn http_post_async(
    addr: SocketAddr,
    path: &'static str,
    body: Value,
) -> (u16, Value, String) {
    tokio::task::spawn_blocking(move || {
        let body = body.to_string();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let status = text[9..12].parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (
            status,
            serde_json::from_str(body).unwrap_or(Value::Null),
            head.to_ascii_lowercase(),
        )
    })
    .await
    .unwrap()
}

fn device_push(device: &str, payload_b64: &str) -> Value {
    json!({"app": APP, "business": 5, "devices": [device], "payload_b64": payload_b64})
}

/// The next push on an in-memory client, skipping pings.
async fn next_push(
    client: &mut longconn_core::connection::memory::MemoryClient,
) -> (Bytes, Option<u64>) {
    loop {
        match tokio::time::timeout(STEP, client.recv()).await {
            Ok(Ok(Some(Frame::Push { payload, seq, .. }))) => return (payload, seq),
            Ok(Ok(Some(Frame::Ping { .. }))) => {}
            other => panic!("expected a push, got {other:?}"),
        }
    }
}

/// Redis killed and started again, empty, on the same port: while it is down, pushes to
/// this node's devices work and pushes that need the cluster are a counted 503
/// `cluster_unavailable`; once it is back, every node's entry, routes and group
/// memberships are written again, the relay is subscribed again, and remote pushes and
/// group publishes reach the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_write_their_state_again_after_a_redis_restart() {
    // Logs show with --nocapture or when the test fails.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let one = in_process_node(&redis, 1).await;
    let two = in_process_node(&redis, 2).await;
    let http = one
        .local_addr(longconn_gateway::ListenerKind::Http)
        .unwrap();
    let (mut here, _) = support::login(one.server(), APP, "here").await;
    let (mut there, _) = support::login(two.server(), APP, "there").await;
    there
        .send(Frame::JoinGroup {
            id: 2,
            group: "lobby".into(),
            since: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        tokio::time::timeout(STEP, there.recv()).await,
        Ok(Ok(Some(Frame::JoinAck { id: 2, .. })))
    ));
    support::until("the route and group set", async || {
        redis
            .cmd::<Option<String>>(&["GET", &route_key("there")])
            .await
            .is_some()
            && redis.cmd::<u64>(&["SCARD", "lc:gn:lobby"]).await == 1
    })
    .await;

    redis.kill();
    // Local delivery keeps working.
    let (status, body, _) =
        http_post_async(http, "/v1/push/devices", device_push("here", "aGVyZQ==")).await;
    assert_eq!((status, &body["queued"]), (200, &json!(1)), "{body}");
    assert_eq!(next_push(&mut here).await.0, "here");
    // A push that needs the route store fails fast with a clear, counted 503.
    let asked = Instant::now();
    let (status, body, head) =
        http_post_async(http, "/v1/push/devices", device_push("there", "dGhlcmU=")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], json!("cluster_unavailable"), "{body}");
    assert_eq!(body["retry_after_ms"], json!(1000), "{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "took {:?}",
        asked.elapsed()
    );
    let health = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(http).unwrap();
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap();
    assert!(health.contains("\"cluster_unavailable\":1"), "{health}");

    redis.restart();
    support::until("the nodes' state written again", async || {
        let routes = redis
            .cmd::<Option<String>>(&["GET", &route_key("there")])
            .await;
        let here = redis
            .cmd::<Option<String>>(&["GET", &route_key("here")])
            .await;
        let nodes = redis.cmd::<u64>(&["SCARD", NODE_IDS]).await;
        let lobby: Vec<u16> = redis.cmd(&["SMEMBERS", "lc:gn:lobby"]).await;
        routes.is_some_and(|r| r.starts_with("2:"))
            && here.is_some_and(|r| r.starts_with("1:"))
            && nodes == 2
            && lobby == [2]
    })
    .await;
    assert!(two.cluster().unwrap().resyncs() >= 1);
    assert!(two.cluster().unwrap().redis_available());
    // The heartbeat writes the entry again, with the hub's connection count.
    support::until("node 2's entry with its connection", async || {
        let entry: Option<String> = redis.cmd(&["GET", "lc:{nodes}:n:2"]).await;
        entry.is_some_and(|e| e.contains("\"connections\":1"))
    })
    .await;
    // Remote pushes go through again once node 2's relay has subscribed again.
    support::until("a remote push after the restart", async || {
        let (status, body, _) =
            http_post_async(http, "/v1/push/devices", device_push("there", "YmFjaw==")).await;
        status == 200 && body["queued"] == json!(1)
    })
    .await;
    assert_eq!(next_push(&mut there).await.0, "back");
    let (status, body, _) = http_post_async(
        http,
        "/v1/push/groups/lobby",
        json!({"business": 5, "payload_b64": "bG9iYnk="}),
    )
    .await;
    assert_eq!((status, &body["remote_nodes"]), (200, &json!(1)), "{body}");
    let (payload, seq) = next_push(&mut there).await;
    assert_eq!(payload, "lobby");
    assert_eq!(seq.map(|s| json!(s)), Some(body["seq"].clone()));

    // Phase 1 of a shutdown marks the node draining at once.
    two.cluster().unwrap().drain().await.unwrap();
    let entry: String = redis.cmd(&["GET", "lc:{nodes}:n:2"]).await;
    assert!(entry.contains("\"draining\":true"), "{entry}");
    one.shutdown().await;
    two.shutdown().await;
    // Node 1's connection may have been re-made by a push on its HTTP thread: the HTTP side stops
    // after the node, or this removal would fail.
    let nodes: u64 = redis.cmd(&["SCARD", NODE_IDS]).await;
    assert_eq!(nodes, 0, "both entries removed at shutdown");
}

//! `loadgen` end to end: every subcommand, a scenario file and a two-process run, each
//! a few hundred connections against a gateway started in this test.

use std::process::Command;

use longconn_gateway::Gateway;
use serde_json::Value;

mod common;

async fn gateway() -> (Gateway, String, String) {
    common::start_gateway("127.0.0.1:0", &[]).await
}

/// Runs loadgen to completion on a blocking thread; returns the JSON of the last stdout
/// line.
async fn loadgen(target: &str, api: &str, args: &[&str]) -> Value {
    common::finish(common::spawn_loadgen(target, api, args)).await
}

fn assert_complete(summary: &Value, connections: u64) {
    for key in [
        "scenario",
        "target",
        "connections",
        "established",
        "failed",
        "sent",
        "received",
        "reach_rate",
        "latency_us",
        "throughput_per_s",
        "reconnects",
        "connected_at_end",
        "duration_s",
    ] {
        assert!(
            summary.get(key).is_some(),
            "summary lacks `{key}`: {summary}"
        );
    }
    assert_eq!(summary["reach_rate"], 1.0, "{summary}");
    assert_eq!(summary["established"], connections, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_reaches_everyone() {
    let (gateway, target, api) = gateway().await;

    let s = loadgen(
        &target,
        &api,
        &[
            "connect",
            "--connections",
            "300",
            "--rate",
            "2000",
            "--hold",
            "0.5",
        ],
    )
    .await;
    assert_complete(&s, 300);
    assert_eq!(s["connected_at_end"], 300);

    let s = loadgen(
        &target,
        &api,
        &[
            "unicast",
            "--devices",
            "300",
            "--messages",
            "3",
            "--rate",
            "20000",
        ],
    )
    .await;
    assert_complete(&s, 300);
    assert_eq!(
        (s["sent"].as_u64(), s["received"].as_u64()),
        (Some(900), Some(900))
    );
    assert!(s["latency_us"]["p50"].as_u64().unwrap() > 0, "{s}");

    let s = loadgen(
        &target,
        &api,
        &[
            "multicast",
            "--members",
            "300",
            "--groups",
            "3",
            "--messages",
            "4",
            "--rate",
            "100",
        ],
    )
    .await;
    assert_complete(&s, 300);
    assert_eq!(
        (s["sent"].as_u64(), s["received"].as_u64()),
        (Some(12), Some(1200))
    );

    let s = loadgen(
        &target,
        &api,
        &["request", "--connections", "50", "--requests", "20"],
    )
    .await;
    assert_complete(&s, 50);
    assert_eq!(s["received"], 1000);

    // The raw-protocol client: logins, closed-loop and open-loop requests.
    let raw = target.replacen("tcp://", "raw://", 1);
    let s = loadgen(
        &raw,
        &api,
        &[
            "connect",
            "--connections",
            "20",
            "--rate",
            "1000",
            "--hold",
            "0.2",
        ],
    )
    .await;
    assert_complete(&s, 20);
    assert_eq!(s["connected_at_end"], 20, "{s}");
    let s = loadgen(
        &raw,
        &api,
        &["request", "--connections", "10", "--requests", "20"],
    )
    .await;
    assert_complete(&s, 10);
    assert_eq!(s["received"], 200, "{s}");
    let s = loadgen(
        &raw,
        &api,
        &[
            "request",
            "--connections",
            "10",
            "--requests",
            "20",
            "--rate",
            "1000",
        ],
    )
    .await;
    assert_eq!(
        (s["sent"].as_u64(), s["received"].as_u64()),
        (Some(200), Some(200)),
        "{s}"
    );
    assert!(s["latency_us"]["p50"].as_u64().unwrap() > 0, "{s}");

    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/small-scenario.toml");
    let s = loadgen(&target, &api, &["--procs", "2", "scenario", scenario]).await;
    assert_eq!(s["procs"], 2);
    assert_eq!(s["scenario"], "small");
    assert_eq!(s["phases"].as_array().unwrap().len(), 3, "{s}");
    for phase in s["phases"].as_array().unwrap() {
        assert_eq!(phase["reach_rate"], 1.0, "{phase}");
    }
    assert!(s["load_cpu_s"].as_f64().unwrap() > 0.0);

    // A request to an unrouted business is an error, not a reach.
    let s = loadgen(
        &target,
        &api,
        &[
            "request",
            "--connections",
            "5",
            "--requests",
            "2",
            "--business",
            "999",
        ],
    )
    .await;
    assert_eq!(
        (s["errors"].as_u64(), s["received"].as_u64()),
        (Some(10), Some(0))
    );
    assert_eq!(s["reach_rate"], 0.0);

    gateway.shutdown().await;
}

#[test]
fn a_bad_scenario_file_fails_with_its_reason() {
    let dir = std::env::temp_dir().join(format!("lc-loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\n[[phases]]\nkind = \"connect\"\nconnections = 0\nrate = 1\nhold = 1\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["scenario", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("connections"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "no summary for a run that never started"
    );
}

/// The raw-protocol subscribers of `benches/fanout-overload.sh`, small: 50 members, 20
/// publishes over 4 HTTP connections in about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_subscribers_receive_every_publish() {
    let (gateway, target, api) = gateway().await;
    let raw = target.replace("tcp://", "raw://");
    let s = loadgen(
        &raw,
        &api,
        &[
            "--publishers",
            "4",
            "multicast",
            "--members",
            "50",
            "--groups",
            "1",
            "--messages",
            "20",
            "--rate",
            "20",
        ],
    )
    .await;
    assert_complete(&s, 50);
    assert_eq!(
        (s["sent"].as_u64(), s["received"].as_u64()),
        (Some(20), Some(1000))
    );
    let phase = &s["phases"][0];
    assert!(phase["latency_us"]["p50"].as_u64().unwrap() > 0, "{s}");
    assert!(phase["publish_rtt_us"]["p50"].as_u64().unwrap() > 0, "{s}");
    gateway.shutdown().await;
}

/// Two separate single-node gateways (memory routes, no cluster): connections are
/// spread by device index, pushes go to the APIs in turn, and each gateway can reach
/// only its own devices. The accounting has to show exactly that: half of every push
/// round is offline, and each target receives the rounds sent through its own API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_targets_split_devices_and_apis_take_turns() {
    let (a, target_a, api_a) = gateway().await;
    let (b, target_b, api_b) = gateway().await;
    let targets = format!("{target_a},{target_b}");
    let apis = format!("{api_a},{api_b}");

    let s = loadgen(
        &targets,
        &apis,
        &["connect", "--connections", "101", "--hold", "0.3"],
    )
    .await;
    assert_complete(&s, 101);
    let per_target = s["phases"][0]["per_target"].as_array().unwrap();
    assert_eq!(per_target.len(), 2, "{s}");
    assert_eq!(per_target[0]["target"], target_a.as_str());
    assert_eq!(
        (
            per_target[0]["established"].as_u64(),
            per_target[1]["established"].as_u64()
        ),
        (Some(51), Some(50)),
        "device i on target i mod 2: {s}"
    );

    // 300 devices in one batch per round; rounds 0 and 2 go through A, 1 and 3 through B.
    let s = loadgen(
        &targets,
        &apis,
        &[
            "--procs",
            "2",
            "unicast",
            "--devices",
            "300",
            "--messages",
            "4",
            "--rate",
            "20000",
        ],
    )
    .await;
    assert_eq!(s["established"], 300, "{s}");
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["expected"].as_u64(),
            s["received"].as_u64()
        ),
        (Some(1200), Some(1200), Some(600)),
        "{s}"
    );
    assert_eq!(
        s["errors"], 600,
        "the other node's devices are offline: {s}"
    );
    assert_eq!(s["reach_rate"], 0.5);
    for t in s["phases"][0]["per_target"].as_array().unwrap() {
        assert_eq!(
            (
                t["established"].as_u64(),
                t["received"].as_u64(),
                t["expected"].as_u64()
            ),
            (Some(150), Some(300), Some(600)),
            "{t}"
        );
        assert_eq!(t["reach_rate"], 0.5, "{t}");
    }

    // Through one API only: only that node's devices are reached.
    let s = loadgen(
        &targets,
        &api_b,
        &[
            "unicast",
            "--devices",
            "300",
            "--messages",
            "2",
            "--rate",
            "20000",
        ],
    )
    .await;
    let per_target = s["phases"][0]["per_target"].as_array().unwrap();
    assert_eq!(
        (
            per_target[0]["received"].as_u64(),
            per_target[1]["received"].as_u64()
        ),
        (Some(0), Some(300)),
        "{s}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A redis-server on a free loopback port, killed on drop; `None` (with a visible
/// notice) when it is not installed, unless `CI=true`.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Redis> {
        use std::io::{Read, Write};
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok();
        if !installed {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "redis-server is not installed, and CI=true"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let redis = Redis { child, port };
        for _ in 0..200 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut reply = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() {
                    assert_eq!(&reply, b"+PONG\r\n");
                    return Some(redis);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("redis-server did not answer PING on port {port}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn cluster_node(redis: &Redis, node: u16) -> (Gateway, String, String) {
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let node = node.to_string();
    common::start_gateway("127.0.0.1:0", &["--node-id", &node, "--redis", &url]).await
}

/// Two gateways on one Redis: devices spread over both, every push sent through node
/// 1's API; the devices on node 2 are reached through the relay, and the accounting
/// shows full reach on each target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_one_node_reaches_devices_on_every_node() {
    let Some(redis) = Redis::start() else { return };
    let (a, target_a, api_a) = cluster_node(&redis, 1).await;
    let (b, target_b, _) = cluster_node(&redis, 2).await;
    let targets = format!("{target_a},{target_b}");

    let s = loadgen(
        &targets,
        &api_a,
        &[
            "unicast",
            "--devices",
            "300",
            "--messages",
            "3",
            "--rate",
            "20000",
        ],
    )
    .await;
    assert_complete(&s, 300);
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["received"].as_u64(),
            s["unknown"].as_u64()
        ),
        (Some(900), Some(900), Some(0)),
        "{s}"
    );
    for t in s["phases"][0]["per_target"].as_array().unwrap() {
        assert_eq!(
            (t["established"].as_u64(), t["received"].as_u64()),
            (Some(150), Some(450)),
            "{t}"
        );
    }

    let s = loadgen(
        &targets,
        &api_a,
        &[
            "multicast",
            "--members",
            "200",
            "--groups",
            "3",
            "--messages",
            "3",
            "--rate",
            "30",
        ],
    )
    .await;
    assert_complete(&s, 200);
    assert_eq!(
        (
            s["sent"].as_u64(),
            s["expected"].as_u64(),
            s["received"].as_u64()
        ),
        (Some(9), Some(600), Some(600)),
        "group i mod 3 has members on both nodes (device i on node i mod 2); each counts once per publish: {s}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// `--api-key` reaches a gateway whose push API needs a key; without it every publish
/// is refused (401) and counted as an error. And `--procs 2 --quiet` after the
/// subcommand runs (it failed in every worker: "--quiet cannot be used multiple times").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_sent_and_quiet_works_with_procs() {
    const SECRET: &str = "loadgen-api-secret-0123456789";
    let key = format!("lg:{SECRET}");
    let (gateway, target, api) = common::start_gateway("127.0.0.1:0", &["--api-key", &key]).await;
    let unicast = ["unicast", "--devices", "20", "--messages", "2"];
    let with_key: Vec<&str> = unicast
        .iter()
        .copied()
        .chain(["--procs", "2", "--quiet", "--api-key", SECRET])
        .collect();
    let s = loadgen(&target, &api, &with_key).await;
    assert_complete(&s, 20);
    assert_eq!(s["procs"], 2);
    assert_eq!(
        (s["sent"].as_u64(), s["received"].as_u64()),
        (Some(40), Some(40)),
        "{s}"
    );

    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command
        .args([
            "--target", &target, "--api", &api, "--quiet", "--drain", "1",
        ])
        .args(unicast);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        all.contains("401"),
        "a publish without the key is refused: {all}"
    );
    gateway.shutdown().await;
}

/// `--metrics ADDR`: the load tool's own Prometheus endpoint shows connections, reach,
/// latency histograms and errors while it runs (scraped during a final hold phase).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_reach_latency_and_connections() {
    let (gateway, target, api) = gateway().await;
    let dir = std::env::temp_dir().join(format!("lc-loadgen-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("scenario.toml");
    std::fs::write(
        &scenario,
        "name = \"metrics\"\n\
         [[phases]]\nkind = \"request\"\nconnections = 20\nrequests = 5\nbusiness = 1\n\
         [[phases]]\nkind = \"connect\"\nconnections = 10\nrate = 1000\nhold = 4.0\n",
    )
    .unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--target", &target, "--api", &api, "--quiet", "--drain", "1",
        ])
        .args([
            "--metrics",
            &metrics_addr,
            "scenario",
            scenario.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = metrics_addr.clone();
    let scrape = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            assert!(std::time::Instant::now() < deadline, "no scrape with reach");
            std::thread::sleep(std::time::Duration::from_millis(100));
            let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
                continue;
            };
            let _ = write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            );
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            // The request phase is over once its reach is set.
            if text.contains("loadgen_reach_ratio ") && text.contains("loadgen_connected 10") {
                return text;
            }
        }
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    drop(gateway);
    let value = |name: &str| -> f64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{scrape}"))
    };
    assert_eq!(value("loadgen_reach_ratio"), 1.0);
    assert_eq!(value("loadgen_expected_total"), 100.0);
    assert_eq!(value("loadgen_received_total"), 100.0);
    assert_eq!(value("loadgen_latency_seconds_count"), 100.0);
    assert!(value("loadgen_connect_latency_seconds_count") >= 30.0);
    assert_eq!(value("loadgen_connected"), 10.0);
    assert!(
        scrape.contains("loadgen_latency_seconds_bucket{le=\"0.0001\"}"),
        "{scrape}"
    );
    assert!(
        scrape.contains("# HELP loadgen_errors_total") || !scrape.contains("loadgen_errors_total")
    );
}

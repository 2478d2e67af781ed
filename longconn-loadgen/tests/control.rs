//! `loadgen --control`: every device asks an in-process control layer where to go,
//! then logs in there; the summary reports the access latency and the spread of the
//! devices over the two gateways the control layer knows.

use std::process::Command;

use longconn_control::{Control, ControlConfig, DEFAULT_CONFIG_TOML};
use longconn_gateway::Gateway;
use serde_json::Value;

mod common;

/// A gateway on a random port and its TCP address (`ip:port`).
async fn gateway() -> (Gateway, String) {
    let (gateway, target, _) = common::start_gateway("127.0.0.1:0", &[]).await;
    let tcp = target.trim_start_matches("tcp://").to_owned();
    (gateway, tcp)
}

/// The embedded defaults with these tcp nodes and the per-IP rate limit off (every
/// simulated device comes from one IP).
fn control_config(nodes: &[&str]) -> String {
    let start = DEFAULT_CONFIG_TOML.find("[[nodes]]").unwrap();
    let end = DEFAULT_CONFIG_TOML
        .find("# The answer for every device")
        .unwrap();
    let mut text = DEFAULT_CONFIG_TOML[..start].to_owned();
    for (i, tcp) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "[[nodes]]\nid = {}\naddrs = {{ tcp = \"{tcp}\" }}\n",
            i + 1
        ));
    }
    text.push_str(&DEFAULT_CONFIG_TOML[end..]);
    text.replace(
        "transports = [\"tcp\", \"ws\", \"quic\"]",
        "transports = [\"tcp\"]",
    )
    .replace("per_second = 50.0", "per_second = 0.0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_bootstrap_through_the_control_layer_and_spread_over_nodes() {
    let (_a, tcp_a) = gateway().await;
    let (_b, tcp_b) = gateway().await;
    let control =
        Control::new(ControlConfig::load(&control_config(&[&tcp_a, &tcp_b]), 1, "test").unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { control.serve(listener, std::future::pending()).await });

    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command
        .args(["--control", &url, "--quiet", "--drain", "1", "--procs", "2"])
        .args(["--app", "demo", "--target", "tcp://127.0.0.1:1"])
        .args(["connect", "--connections", "200", "--hold", "0.3"]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let s: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let phase = &s["phases"][0];
    assert_eq!(phase["established"], 200, "{s}");
    let access = &phase["access"];
    assert_eq!(access["answered"], 200, "{s}");
    assert_eq!(access["failed"], 0, "{s}");
    assert!(access["latency_us"]["p99"].as_u64().unwrap() > 0, "{s}");
    let per_node = access["per_node"].as_object().unwrap();
    assert_eq!(per_node.len(), 2, "{s}");
    for (node, n) in per_node {
        let n = n.as_u64().unwrap();
        assert!(
            node.ends_with(&tcp_a) || node.ends_with(&tcp_b),
            "unknown node {node}"
        );
        // 200 devices over 2 equal nodes: far from all on one.
        assert!((50..=150).contains(&n), "{node}: {n} devices: {s}");
    }
}

//! `loadgen` under the reconnect-storm and slow-consumer benches (issue 16 items 2 and
//! 3), small: a connect phase's timeline over a gateway restart and its accept limiter,
//! and multicast with members that stop reading.

use std::process::Command;
use std::time::Duration;

use longconn_gateway::Gateway;
use serde_json::Value;

mod common;

/// A gateway with `config` (TOML) and `extra` flags; its TCP target and API base.
async fn gateway(name: &str, config: &str, tcp: &str, extra: &[&str]) -> (Gateway, String, String) {
    let path = std::env::temp_dir().join(format!("lg-storm-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    common::start_gateway(tcp, &args).await
}

/// Connections the gateway at `api` holds, from its `/healthz`.
async fn connections(api: &str) -> u64 {
    let Ok(answer) = reqwest::get(format!("{api}/healthz")).await else {
        return 0;
    };
    let body: Value =
        serde_json::from_str(&answer.text().await.unwrap_or_default()).unwrap_or_default();
    body["connections"].as_u64().unwrap_or(0)
}

fn sum(v: &Value) -> u64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum()
}

/// 40 clients over two worker processes against a gateway admitting 20 connects per
/// second: the refusals show in the timeline as `try_later`; then the gateway goes away
/// and another starts on the same port: the timeline shows the loss and every client
/// logging in again, and the recovery says when all were back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeline_shows_refusals_the_loss_and_the_way_back() {
    let quick_drain = "[shutdown]\nretry_after_ms = 100\ndeadline_ms = 500\n";
    let (first, target, api) = gateway(
        "a",
        quick_drain,
        "127.0.0.1:0",
        &["--max-accept-rate", "20"],
    )
    .await;
    let tcp = target.trim_start_matches("tcp://").to_owned();
    let child = common::spawn_loadgen(
        &target,
        &api,
        &[
            "--procs",
            "2",
            "connect",
            "--connections",
            "40",
            "--rate",
            "400",
            "--hold",
            "7",
        ],
    );
    // All 40 in (the limiter lets 20 per second through), then the gateway goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while connections(&api).await < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never all connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.shutdown().await;
    let (second, _, _) = gateway("b", quick_drain, &tcp, &["--max-accept-rate", "off"]).await;
    let s = common::finish(child).await;
    let p = &s["phases"][0];
    let t = &p["connect_timeline"];
    assert_eq!(t["bucket_ms"], 100, "{p}");
    let logins = sum(&t["logins"]);
    assert_eq!(
        logins,
        40 + p["reconnects"].as_u64().unwrap(),
        "first logins and reconnects: {p}"
    );
    assert_eq!(p["reconnects"], 40, "every client came back once: {p}");
    assert_eq!(sum(&t["drops"]), 40, "{p}");
    assert!(sum(&t["try_later"]) >= 10, "the limiter refused some: {p}");
    let r = &p["recovery"];
    assert_eq!(
        (r["before"].as_u64(), r["lost"].as_u64()),
        (Some(40), Some(40)),
        "{p}"
    );
    let after = r["all_back_after_s"].as_f64().expect("all back");
    assert!(after > 0.0 && after < 5.0, "{r}");
    assert!(r["peak_connects_per_s"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(p["connected_at_end"], 40, "{p}");
    second.shutdown().await;
}

/// 50 raw members, 2 of them slow, against a gateway that disconnects slow consumers
/// after 8 queued pushes: the 48 others get every publish and the summary's reach and
/// latency are theirs; the 2 slow ones are reported apart, kicked with slow_consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_members_are_kicked_and_counted_apart_from_the_rest() {
    let config = "[session]\nslow_consumer_policy = \"disconnect\"\nmax_queued_pushes = 8\n";
    let (gateway, target, api) = gateway("slow", config, "127.0.0.1:0", &[]).await;
    let raw = target.replace("tcp://", "raw://");
    let child = common::spawn_loadgen(
        &raw,
        &api,
        &[
            "--procs",
            "2",
            "--payload-size",
            "4000",
            "--publishers",
            "2",
            "multicast",
            "--members",
            "50",
            "--groups",
            "1",
            "--messages",
            "150",
            "--rate",
            "150",
            "--slow-members",
            "2",
        ],
    );
    let s = common::finish(child).await;
    let p = &s["phases"][0];
    assert_eq!(p["sent"], 150, "{p}");
    assert_eq!(p["expected"], 48 * 150, "the reading members only: {p}");
    assert_eq!(p["received"], 48 * 150, "{p}");
    assert_eq!(p["reach_rate"], 1.0, "{p}");
    let slow = &p["slow_members"];
    assert_eq!(slow["members"], 2, "{p}");
    assert_eq!(slow["slow_consumer_kicks"], 2, "both kicked: {p}");
    assert_eq!(slow["still_open"], 0, "{p}");
    assert!(
        slow["received"].as_u64().unwrap() < 2 * 150,
        "they missed pushes: {p}"
    );
    let when = slow["closed_after_s"].as_array().expect("close times");
    assert!(
        when[2].as_f64().unwrap() < 1.5,
        "kicked during the second of publishing: {p}"
    );
    gateway.shutdown().await;
}

/// `--slow-members` needs the raw subscribers, and fewer slow members than members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_members_are_refused_where_they_cannot_work() {
    let (gateway, target, api) = gateway("refuse", "", "127.0.0.1:0", &[]).await;
    for (t, args) in [
        (target.as_str(), ["--members", "10", "--slow-members", "1"]),
        (
            &*target.replace("tcp://", "raw://"),
            ["--members", "10", "--slow-members", "10"],
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--target", t, "--api", &api, "--quiet", "multicast"])
            .args(args)
            .args(["--messages", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(err.contains("slow"), "{args:?}: {err}");
    }
    gateway.shutdown().await;
}

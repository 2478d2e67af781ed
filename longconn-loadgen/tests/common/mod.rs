//! What the loadgen test files share: the gateway they run against (started in the
//! test's process) and the loadgen binary's runner. Each file uses a part of it.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use clap::Parser;
use longconn_gateway::{Cli, Gateway, GatewaySettings, ListenerKind};
use serde_json::Value;

/// Starts a gateway with plain TCP on `tcp` (`127.0.0.1:0` for a random port), the HTTP
/// API on a random port, WebSocket and QUIC off, and `extra` flags (for example
/// `--config FILE` or a limit). Returns it with its TCP target (`tcp://ip:port`) and its
/// API base (`http://ip:port`).
pub(crate) async fn start_gateway(tcp: &str, extra: &[&str]) -> (Gateway, String, String) {
    let mut args = vec![
        "gateway",
        "--tcp",
        tcp,
        "--http",
        "127.0.0.1:0",
        "--ws",
        "off",
        "--quic",
        "off",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).unwrap();
    let gateway = Gateway::start(GatewaySettings::resolve(cli).unwrap())
        .await
        .unwrap();
    let target = format!("tcp://{}", gateway.local_addr(ListenerKind::Tcp).unwrap());
    let api = format!("http://{}", gateway.local_addr(ListenerKind::Http).unwrap());
    (gateway, target, api)
}

/// Starts the loadgen binary against `target` and `api` (quiet, `--drain 3`, source
/// addresses 127.0.0.2-127.0.0.5) with `args`; [`finish`] waits for it.
pub(crate) fn spawn_loadgen(target: &str, api: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", target, "--api", api, "--quiet", "--drain", "3"])
        .args(["--source-ips", "127.0.0.2-127.0.0.5"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a loadgen started by [`spawn_loadgen`] (on a blocking thread), checks that
/// it succeeded and returns the JSON of its last stdout line.
pub(crate) async fn finish(child: Child) -> Value {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed: {stderr}");
    let last = stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line not JSON ({e}): {last}"))
}

//! The gateway the loadgen tests run against, started in the test's process.

use clap::Parser;
use longconn_gateway::{Cli, Gateway, GatewaySettings, ListenerKind};

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

//! `gateway`: the longconn reference gateway. Runs on embedded defaults with no
//! arguments; `--help` lists every setting. A thin command line over
//! [`longconn_gateway::GatewayBuilder`]: flags and the TOML file resolve to settings, the
//! settings to builder calls.

use clap::Parser;
use longconn_gateway::{Cli, GatewayError, GatewaySettings, stop_signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let started = match GatewaySettings::resolve(Cli::parse()).and_then(|s| s.into_builder()) {
        Ok(builder) => builder.start().await,
        Err(err) => Err(err),
    };
    let gateway = match started {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("gateway: {err}");
            // Settings out of range or inconsistent: 2, as for a bad flag. A node id
            // another live node holds: 3. Anything else (a bind, Redis unreachable): 1.
            let status = match &err {
                GatewayError::Config(_) => 2,
                GatewayError::Cluster(longconn_cluster::Error::NodeIdTaken { .. }) => {
                    eprintln!(
                        "gateway: every node of a cluster needs its own --node-id; this one \
                         is free again once its holder stops (or one node TTL after it died)"
                    );
                    3
                }
                GatewayError::Cluster(longconn_cluster::Error::Config(_)) => 2,
                _ => 1,
            };
            return std::process::ExitCode::from(status);
        }
    };
    if let Err(err) = stop_signal().await {
        eprintln!("gateway: cannot listen for signals: {err}");
    }
    tracing::info!("stop signal received; draining");
    let report = gateway.shutdown().await;
    tracing::info!(
        connections = report.connections,
        frames_flushed = report.frames_flushed,
        pushes_dropped = report.pushes_dropped,
        forced = report.forced,
        "gateway stopped"
    );
    std::process::ExitCode::SUCCESS
}

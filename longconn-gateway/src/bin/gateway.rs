//! `gateway`: the longconn reference gateway. Runs on embedded defaults with no
//! arguments; `--help` lists every setting.

use clap::Parser;
use longconn_gateway::{Cli, Gateway, GatewaySettings, stop_signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let settings = match GatewaySettings::resolve(Cli::parse()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("gateway: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let gateway = match Gateway::start(settings).await {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("gateway: {err}");
            return std::process::ExitCode::FAILURE;
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

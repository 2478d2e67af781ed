//! `gateway`: the longconn reference gateway. Runs on embedded defaults with no
//! arguments; `--help` lists every setting. A thin command line over
//! [`longconn_gateway::GatewayBuilder`]: flags and the TOML file resolve to settings, the
//! settings to builder calls.

use clap::Parser;
use longconn_gateway::config::LogFormat;
use longconn_gateway::{Cli, GatewayError, GatewaySettings, stop_signal};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .init(),
    }
    // The recorder goes in before anything is built: the libraries take their metric
    // handles when the server, router and groups are built.
    let metrics = if cli.no_metrics {
        None
    } else {
        match longconn_gateway::metrics::install_prometheus() {
            Ok(handle) => Some(handle),
            Err(err) => {
                eprintln!("gateway: {err}");
                return std::process::ExitCode::from(1);
            }
        }
    };
    let started = match GatewaySettings::resolve(cli).and_then(|s| s.into_builder()) {
        Ok(builder) => match metrics {
            Some(handle) => builder.metrics(handle).start().await,
            None => builder.start().await,
        },
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

//! `control`: the reference control-layer server (longconn-control).
//!
//! ```text
//! cargo run --release --bin control                     # embedded defaults
//! cargo run --release --bin control -- --config control.toml --listen 0.0.0.0:7190
//! curl -s -XPOST 127.0.0.1:7190/v1/access -d '{"app":"demo","device":"d1",
//!   "platform":"android","app_version":"1.0","sdk_version":"0.1.0"}'
//! ```
//!
//! Without `--config` it serves the embedded defaults: one static node on the reference
//! gateway's default ports (127.0.0.1:7100 tcp, 7101 ws, 7102 quic) and the development
//! token key, which the gateway also uses when it has no key configured. With a config
//! file, the file is reloaded when it changes or on SIGHUP; a `[registry]` section takes
//! the nodes from the Redis node registry instead of `[[nodes]]`. Ctrl-C stops it after
//! the requests in flight.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use longconn_cluster::NodeRegistry;
use longconn_control::{Control, NodeSource, RegistryNodes};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "control",
    version,
    about = "longconn control layer (access dispatch, tokens, canary rules)"
)]
struct Args {
    /// Config file (TOML, docs/CONTROL.md) [default: the embedded defaults].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address [default: the config's `listen`, 127.0.0.1:7190].
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("control: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut control = match &args.config {
        Some(path) => Control::from_file(path)?,
        None => {
            warn!("no --config: embedded defaults with the DEVELOPMENT token key");
            Control::embedded()
        }
    };
    let policy = control.policy();
    let mut registry = None;
    if let Some(reg) = &policy.config.registry {
        let conn = longconn_cluster::connect(&reg.url)
            .await
            .map_err(|e| longconn_control::Error::Registry(e.to_string()))?;
        let mut lister = NodeRegistry::new(conn);
        if let Some(prefix) = &reg.prefix {
            lister = lister.with_prefix(prefix);
        }
        let nodes =
            Arc::new(RegistryNodes::start(lister, Duration::from_millis(reg.refresh_ms)).await);
        info!(url = %reg.url, nodes = nodes.nodes().len(), "nodes from the Redis registry");
        control = control.with_node_source(nodes.clone());
        registry = Some(nodes);
    }
    let listen = args.listen.unwrap_or(policy.config.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| longconn_control::Error::Bind {
            addr: listen,
            source,
        })?;
    info!(
        %listen,
        rules_version = policy.version,
        source = %policy.source,
        "control layer serving /v1/access, /v1/token/refresh, /v1/rules, /healthz"
    );
    let stop = CancellationToken::new();
    let watcher = longconn_control::reload::watch(control.clone(), stop.clone());
    let shutdown = {
        let stop = stop.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            info!("stopping after the requests in flight");
            stop.cancel();
        }
    };
    control.serve(listener, shutdown).await?;
    stop.cancel();
    let _ = watcher.await;
    drop(registry);
    Ok(())
}

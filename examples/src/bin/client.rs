//! `client`: a scripted longconn client. Connects, logs in, sends requests, prints
//! pushes and what it measured.
//!
//! ```text
//! cargo run --release --bin client -- --url tcp://127.0.0.1:7100 --request 1:hello
//! cargo run --release --bin client -- --url quic://localhost:7102 \
//!     --ca /tmp/longconn-dev-cert-quic-127.0.0.1-7102/cert.pem --listen 30
//! ```
//!
//! Without `--token` it mints one with the gateway's development secret (or
//! `--token-secret`), which only works against a gateway that uses the same secret.
//!
//! With `--control http://127.0.0.1:7190` it asks the control layer (the `control`
//! binary) where to connect and for its token instead: `--url` and the token flags are
//! not used.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use longconn_client::{Client, ClientConfig, ClientError, StaticToken, Trust};
use longconn_core::token::{DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET};
use longconn_core::{TokenKey, TokenKeys};

#[derive(Debug, Parser)]
#[command(name = "client", version, about = "longconn scripted client")]
struct Args {
    /// Gateway endpoint: tcp://, tls://, ws://, wss:// or quic://host:port[/ws].
    #[arg(long, default_value = "tcp://127.0.0.1:7100")]
    url: String,
    /// App id.
    #[arg(long, default_value = "demo")]
    app: String,
    /// Device id.
    #[arg(long, default_value = "cli-1")]
    device: String,
    /// Bootstrap from this control layer (http://host:port) instead of --url and a
    /// local token.
    #[arg(long, value_name = "URL", conflicts_with = "token")]
    control: Option<String>,
    /// Platform reported to the control layer's rules [default: this OS].
    #[arg(long, requires = "control")]
    platform: Option<String>,
    /// App version reported to the control layer's rules.
    #[arg(long, requires = "control", default_value = "1.0.0")]
    app_version: String,
    /// Login token; minted locally from --token-secret when absent.
    #[arg(long)]
    token: Option<String>,
    /// Secret to mint a token with [default: the gateway's development secret].
    #[arg(long)]
    token_secret: Option<String>,
    /// Key id of --token-secret [default: k1, or dev for the development secret].
    #[arg(long)]
    token_key_id: Option<String>,
    /// PEM file of the certificate (or CA) to trust for tls://, wss:// and quic://.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Skip certificate verification. DEVELOPMENT ONLY: anyone on the path can read and
    /// change the session.
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// A request to send, as BUSINESS:PAYLOAD (repeatable).
    #[arg(long = "request", value_name = "BUSINESS:PAYLOAD")]
    requests: Vec<String>,
    /// Seconds to stay connected printing pushes.
    #[arg(long, default_value_t = 0)]
    listen: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("client: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let token = match &args.token {
        Some(token) => Bytes::from(token.clone()),
        None => {
            let (id, secret) = match &args.token_secret {
                Some(secret) => (
                    args.token_key_id.as_deref().unwrap_or("k1"),
                    secret.as_str(),
                ),
                None => (DEV_TOKEN_KEY_ID, DEV_TOKEN_SECRET),
            };
            let keys =
                TokenKeys::new(TokenKey::new(id, secret.as_bytes()).map_err(|e| e.to_string())?);
            let exp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs()
                + 3600;
            Bytes::from(keys.mint(&args.app, &args.device, exp))
        }
    };
    let mut config = match &args.control {
        Some(control) => {
            let mut config = ClientConfig::from_control(control, &args.app, &args.device)
                .map_err(|e| e.to_string())?;
            if let Some(settings) = config.control.as_mut() {
                if let Some(platform) = &args.platform {
                    settings.platform = platform.clone();
                }
                settings.app_version = args.app_version.clone();
            }
            config
        }
        None => ClientConfig::new(
            &args.url,
            &args.app,
            &args.device,
            Arc::new(StaticToken(token)),
        )
        .map_err(|e| e.to_string())?,
    };
    if let Some(path) = &args.ca {
        config.trust = Trust::from_pem_file(path).map_err(|e| e.to_string())?;
    }
    if args.insecure {
        eprintln!(
            "client: WARNING --insecure: the server certificate is NOT verified; use this \
             against a development gateway only"
        );
        config.trust = Trust::InsecureSkipVerify;
    }
    let client = Client::connect(config);
    let mut pushes = client.pushes().ok_or("push stream already taken")?;
    // A refused token stops the client at once (it is not retried): say which flag to
    // look at instead of waiting for a timeout.
    let conn_id = client
        .wait_connected(Duration::from_secs(10))
        .await
        .map_err(|e| match e {
            ClientError::AuthRejected(code) => format!(
                "the gateway refused the token ({}): check --token or --token-secret",
                code.name()
            ),
            other => other.to_string(),
        })?;
    match client.access_answer() {
        Some(answer) => println!(
            "connected: conn_id {conn_id:#x} via control {} (bucket {}, flags {:?}, endpoints {:?})",
            args.control.as_deref().unwrap_or_default(),
            answer.bucket,
            answer.flags,
            answer
                .endpoints
                .iter()
                .map(|e| e.url.as_str())
                .collect::<Vec<_>>()
        ),
        None => println!("connected: conn_id {conn_id:#x} via {}", args.url),
    }
    for spec in &args.requests {
        let (business, payload) = spec
            .split_once(':')
            .ok_or_else(|| format!("request `{spec}`: expected BUSINESS:PAYLOAD"))?;
        let business: u32 = business
            .parse()
            .map_err(|_| format!("request `{spec}`: business is not a number"))?;
        match client
            .request(business, Bytes::from(payload.to_owned()))
            .await
        {
            Ok(response) => println!(
                "response business {business}: {}",
                String::from_utf8_lossy(&response.payload)
            ),
            Err(err) => println!("request business {business} failed: {err}"),
        }
    }
    let listen = tokio::time::sleep(Duration::from_secs(args.listen));
    tokio::pin!(listen);
    loop {
        tokio::select! {
            () = &mut listen => break,
            push = pushes.recv() => match push {
                Some(push) => println!(
                    "push business {} group {:?} epoch {:?} seq {:?}: {}",
                    push.business, push.group, push.epoch, push.seq,
                    String::from_utf8_lossy(&push.payload)
                ),
                None => break,
            },
        }
    }
    let quality = client.quality();
    println!(
        "quality: connect {}/{} (last {:?}), pings {}/{} (last rtt {:?})",
        quality.connect_successes,
        quality.connect_attempts,
        quality.last_connect_latency,
        quality.pongs_received,
        quality.pings_sent,
        quality.last_rtt
    );
    client.close().await;
    Ok(())
}

//! `loadgen`: simulated users against a longconn gateway. See
//! `longconn_loadgen` and docs/LOADGEN.md.
//!
//! ```text
//! cargo run --release --bin loadgen -- multicast --members 1000 --groups 1 --messages 20 --rate 10
//! ```

use clap::Parser;
use longconn_loadgen::{self as loadgen, cli::Cli};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(loadgen::runtime_threads(&cli.common))
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(err) => {
            eprintln!("loadgen: cannot start the runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match loadgen::run(cli).await {
        Ok(Some(summary)) => {
            match serde_json::to_string(&summary) {
                Ok(json) => println!("{json}"),
                Err(err) => {
                    eprintln!("loadgen: {err}");
                    return std::process::ExitCode::FAILURE;
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadgen: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

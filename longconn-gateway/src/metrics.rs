//! The gateway's Prometheus side: the recorder (metrics-exporter-prometheus) that the
//! library crates' `metrics` facade records into, and `GET /metrics` on the HTTP
//! listener (Prometheus text, open without auth, like `/healthz`). Names and labels:
//! docs/METRICS.md.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::GatewayError;

/// Histogram buckets of every `_seconds` histogram: 100 µs to 10 s, about three per
/// decade (a gateway's answers run from sub-millisecond pushes to multi-second backend
/// timeouts).
pub const HISTOGRAM_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes
/// (memory stays bounded between scrapes).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder, describes every library metric, and
/// starts the upkeep thread. Call it before the gateway is built: the libraries
/// register their handles at build time, and handles taken before a recorder is
/// installed record nothing.
///
/// # Errors
/// [`GatewayError::Config`] if a recorder is already installed in this process.
pub fn install_prometheus() -> Result<PrometheusHandle, GatewayError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&HISTOGRAM_BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| GatewayError::Config(format!("metrics recorder: {e}")))?;
    longconn_server::metrics::describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })?;
    Ok(handle)
}

/// `GET /metrics`: the recorder's scrape plus the process collector
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
/// `process_max_fds`) and the runtime collector ([`runtime_metrics_text`]). With metrics
/// off (`None`), a JSON 404 `metrics_off`.
///
/// Call it on the connections' runtime: the scrape runs on the HTTP thread's own
/// runtime, and `longconn_runtime_alive_tasks` counts the tasks of the runtime `routes`
/// was called on (the connections', where a task leak would be).
pub fn routes(handle: Option<PrometheusHandle>) -> Router {
    let runtime = tokio::runtime::Handle::try_current().ok();
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((handle, runtime))
}

async fn scrape(
    State((handle, runtime)): State<(Option<PrometheusHandle>, Option<tokio::runtime::Handle>)>,
) -> Response {
    let Some(handle) = handle else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": "metrics_off",
                "message": "metrics are switched off on this gateway (--no-metrics)"
            })),
        )
            .into_response();
    };
    let mut body = handle.render();
    if !body.is_empty() && !body.ends_with("\n\n") {
        body.push('\n');
    }
    body.push_str(&longconn_server::metrics::process_metrics_text());
    if let Some(runtime) = &runtime {
        body.push_str(&runtime_metrics_text(runtime));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The runtime collector, read at scrape time from `runtime` (one counter read):
/// `longconn_runtime_alive_tasks`, the tasks spawned on it and not yet finished (each
/// connection's driver is one, so the figure follows the sessions; a count that stays up
/// after the sessions are gone is a task leak, which the soak, `benches/soak.sh`,
/// watches).
pub fn runtime_metrics_text(runtime: &tokio::runtime::Handle) -> String {
    let alive = runtime.metrics().num_alive_tasks();
    format!(
        "# HELP longconn_runtime_alive_tasks Tokio tasks alive in the gateway's connection runtime.\n\
         # TYPE longconn_runtime_alive_tasks gauge\n\
         longconn_runtime_alive_tasks {alive}\n\n"
    )
}

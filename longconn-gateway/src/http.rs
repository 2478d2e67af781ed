//! The gateway's HTTP side: `GET /healthz`, the push API of `longconn-http`
//! (`/v1/...`), and JSON errors for everything else.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use longconn_http::{PushApi, push_api};
use longconn_server::Server;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The router: `/healthz` answers 200 with the node id, the connection count and the
/// device pushes refused because the cluster was unreachable (`cluster_unavailable`),
/// the push API serves `/v1/...`; anything else is a JSON 404 (or 405 for a wrong
/// method).
pub fn router(server: Server, api: PushApi) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state((server.clone(), api.clone()))
        .merge(push_api(api))
        .merge(crate::quality::routes(server))
        .fallback(not_found)
}

async fn healthz(State((server, api)): State<(Server, PushApi)>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "node_id": server.config().node_id(),
        "connections": server.hub().len(),
        "cluster_unavailable": api.cluster_unavailable(),
    }))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "message": "no such endpoint"})),
    )
        .into_response()
}

/// Serves the router on `addr` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    // The assembled router: [`router`], plus the demo's routes when it is on.
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    // Every bodiless 405 (any route, merged ones too) gets a JSON error body.
    let app = app.layer(axum::middleware::map_response(
        longconn_http::api::json_method_not_allowed,
    ));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Serves the router on a thread of its own (`longconn-http`, a current-thread tokio
/// runtime) until `stop` is cancelled; the receiver resolves with the result when the
/// thread is done.
///
/// The push API is the control side of the gateway and must answer in bounded time
/// whatever the connections are doing. On the connections' runtime an HTTP request is
/// read only after every connection task woken before it has run: with 10,000 members
/// woken by each group publish, that is one whole round of writes per publish, so the
/// publish rate was capped by the round and each round carried one push per member
/// (issue 19, docs/BENCHMARKS.md "Fan-out overload"). On its own thread the API is
/// scheduled by the kernel next to the connections' runtime; publishes keep arriving
/// while drivers are queued, and each driver writes everything queued for it at once.
///
/// # Errors
/// The listener cannot be moved to the new runtime, or the thread cannot start.
pub fn spawn_thread(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>> {
    let listener = listener.into_std()?;
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("longconn-http".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        serve(listener, app, stop).await
                    })
                });
            let _ = done.send(served);
        })?;
    Ok(result)
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

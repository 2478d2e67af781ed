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

/// The router: `/healthz` answers 200 with the connection count, the push API serves
/// `/v1/...`; anything else is a JSON 404 (or 405 for a wrong method).
pub fn router(server: Server, api: PushApi) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(server)
        .merge(push_api(api))
        .fallback(not_found)
}

async fn healthz(State(server): State<Server>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "node_id": server.config().node_id(),
        "connections": server.hub().len(),
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
    server: Server,
    api: PushApi,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(server, api))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

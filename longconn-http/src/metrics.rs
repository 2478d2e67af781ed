//! The push API's metrics (docs/METRICS.md): `longconn_http_requests_total{route,
//! status}` and `longconn_http_request_duration_seconds{route}`. Routes are the API's
//! route patterns (`/v1/push/groups/{group}`, never a group id), so the labels stay
//! bounded.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, histogram};

/// Middleware (`route_layer`) that counts and times each API request by route pattern
/// and status code.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let route = route_of(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("longconn_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    counter!("longconn_http_requests_total", "route" => route, "status" => status).increment(1);
    response
}

/// The route pattern of a matched path (the layer runs for matched routes only).
fn route_of(path: &str) -> &'static str {
    if path.starts_with("/v1/push/groups/") {
        "/v1/push/groups/{group}"
    } else if path.starts_with("/v1/groups/") {
        "/v1/groups/{group}"
    } else if path == "/v1/push/devices" {
        "/v1/push/devices"
    } else if path == "/v1/kick" {
        "/v1/kick"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_ids_never_become_labels() {
        assert_eq!(
            super::route_of("/v1/push/groups/room-42"),
            "/v1/push/groups/{group}"
        );
        assert_eq!(super::route_of("/v1/groups/x"), "/v1/groups/{group}");
        assert_eq!(super::route_of("/v1/kick"), "/v1/kick");
        assert_eq!(super::route_of("/v1/new"), "other");
    }
}

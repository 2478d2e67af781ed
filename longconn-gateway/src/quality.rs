//! `GET /v1/quality`: the client quality table of the server's
//! [`longconn_server::QualityBoard`] as JSON (docs/GATEWAY.md, "Client quality").
//!
//! The answer has the source design's table: for each network bucket (columns) and
//! protocol, the connect success rate and connect latency percentiles (rows), under
//! `table`; `cells` has every number per (bucket, transport), `reports` the reports by
//! bucket and network type, and `thresholds` the bucketing in use.

use axum::Router;
use axum::extract::State;
use axum::response::Json;
use axum::routing::get;
use longconn_server::{
    CellSummary, NetworkBucket, Percentiles, QualitySummary, Server, network_name,
};
use serde_json::{Map, Value, json};

/// The route `GET /v1/quality`.
pub fn routes(server: Server) -> Router {
    Router::new()
        .route("/v1/quality", get(quality))
        .with_state(server)
}

async fn quality(State(server): State<Server>) -> Json<Value> {
    let board = server.quality();
    let c = board.config();
    let mut body = summary_json(&board.summary());
    body["thresholds"] = json!({
        "good_loss": c.good_loss(),
        "good_rtt_ms": c.good_rtt_ms(),
        "weak_loss": c.weak_loss(),
        "weak_rtt_ms": c.weak_rtt_ms(),
    });
    Json(body)
}

fn percentiles(p: &Percentiles) -> Value {
    json!({ "p50": p.p50, "p90": p.p90, "p99": p.p99 })
}

fn cell_json(c: &CellSummary) -> Value {
    json!({
        "bucket": c.bucket.name(),
        "transport": c.transport.name(),
        "connect_attempts": c.connect_attempts,
        "connect_successes": c.connect_successes,
        "connect_success_rate": c.connect_success_rate,
        "connect_latency_ms": percentiles(&c.connect_latency),
        "pings": c.pings,
        "pongs": c.pongs,
        "ping_success_rate": c.ping_success_rate,
        "ping_rtt_ms": percentiles(&c.rtt),
    })
}

/// The JSON body for a summary (without `thresholds`).
pub fn summary_json(s: &QualitySummary) -> Value {
    // table.<row>.<bucket>.<transport>: the seed's table, one column per bucket.
    let mut success = Map::new();
    let mut latency = Map::new();
    let mut rtt = Map::new();
    for bucket in NetworkBucket::ALL {
        let cells = s.cells.iter().filter(|c| c.bucket == bucket);
        let (mut ok, mut lat, mut ping) = (Map::new(), Map::new(), Map::new());
        for c in cells {
            let name = c.transport.name().to_owned();
            ok.insert(name.clone(), json!(c.connect_success_rate));
            lat.insert(name.clone(), percentiles(&c.connect_latency));
            ping.insert(
                name,
                json!({ "success_rate": c.ping_success_rate, "rtt_ms": percentiles(&c.rtt) }),
            );
        }
        if !ok.is_empty() {
            success.insert(bucket.name().into(), Value::Object(ok));
            latency.insert(bucket.name().into(), Value::Object(lat));
            rtt.insert(bucket.name().into(), Value::Object(ping));
        }
    }
    json!({
        "table": {
            "connect_success_rate": success,
            "connect_latency_ms": latency,
            "ping": rtt,
        },
        "reports": s.reports.iter().map(|r| json!({
            "bucket": r.bucket.name(),
            "network": network_name(r.network),
            "reports": r.reports,
        })).collect::<Vec<_>>(),
        "cells": s.cells.iter().map(cell_json).collect::<Vec<_>>(),
    })
}

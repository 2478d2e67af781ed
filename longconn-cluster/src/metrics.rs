//! The cluster layer's metrics (docs/METRICS.md): how far behind this node's Redis
//! subscriber and its request handler are. Handles are registered at first use, so
//! install a recorder before the relay starts.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

#[derive(Debug)]
pub(crate) struct RelayMetrics {
    /// `longconn_cluster_subscriber_lag_seconds`: from the subscriber reading a request
    /// off Redis to the handler taking it.
    pub(crate) lag_seconds: Histogram,
    /// `longconn_cluster_subscriber_messages_total`.
    pub(crate) messages: Counter,
    /// `longconn_cluster_subscriber_queued_requests`.
    pub(crate) queued: Gauge,
    /// `longconn_cluster_subscriber_dropped_total`.
    pub(crate) dropped: Counter,
}

pub(crate) fn relay_metrics() -> &'static RelayMetrics {
    static METRICS: OnceLock<RelayMetrics> = OnceLock::new();
    METRICS.get_or_init(|| RelayMetrics {
        lag_seconds: histogram!("longconn_cluster_subscriber_lag_seconds"),
        messages: counter!("longconn_cluster_subscriber_messages_total"),
        queued: gauge!("longconn_cluster_subscriber_queued_requests"),
        dropped: counter!("longconn_cluster_subscriber_dropped_total"),
    })
}

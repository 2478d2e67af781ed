//! deploy/grafana/longconn.json: valid JSON, and every panel's queries name metrics the
//! gateway exports (`longconn_server::metrics::METRICS` and the process collector), so a
//! renamed metric cannot leave a dead panel behind.

use std::collections::BTreeSet;

/// The process collector's names (`longconn_server::metrics::process_metrics_text`).
const PROCESS: [&str; 4] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
];

/// Metric names in a PromQL expression: identifiers that start like ours, with a
/// histogram's series suffix mapped back to the histogram.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
            continue;
        }
        let word = std::mem::take(&mut current);
        if (word.starts_with("longconn_") || word.starts_with("process_")) && c != '=' {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .unwrap_or(&word);
            names.push(base.to_owned());
        }
    }
    names
}

#[test]
fn every_panel_queries_exported_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/longconn.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let exported: BTreeSet<&str> = longconn_server::metrics::METRICS
        .iter()
        .map(|(name, _, _)| *name)
        .chain(PROCESS)
        .collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("an expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: `{expr}` names no metric");
            for name in names {
                assert!(
                    exported.contains(name.as_str()),
                    "{title}: `{name}` is not an exported metric"
                );
                used.insert(name);
            }
        }
    }
    // The source design's server-monitoring table: sessions, upstream requests, pushes,
    // resources.
    for needed in [
        "longconn_sessions_online",
        "longconn_upstream_requests_total",
        "longconn_upstream_request_duration_seconds",
        "longconn_pushes_total",
        "longconn_push_queue_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "longconn_sent_bytes_total",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.5, sum by (le) (rate(longconn_x_seconds_bucket{instance=~"$instance"}[5m])))"#
        ),
        ["longconn_x_seconds"]
    );
    assert_eq!(
        metric_names("sum(a) / process_open_fds + longconn_y_total"),
        ["process_open_fds", "longconn_y_total"]
    );
}

//! deploy/grafana/pushgate.json and deploy/prometheus/alerts.yml against
//! the real binary: the dashboard is JSON Grafana can import (its data
//! source an input), and every metric either file names is one a real
//! server serves on /metrics — one with `--data-dir` for the store's, one
//! with `--broker` on a real Redis for the broker's. A renamed metric
//! would otherwise leave an empty panel or an alert that never fires.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

mod common;
use common::{Proc, TempDir};

#[path = "../../pushgate-server/tests/support/redis.rs"]
mod redis_server;
use redis_server::Redis;

fn deploy_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The metric names in a PromQL expression (or any text): words that
/// begin `pushgate_` or `process_`.
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for word in text.split(|c: char| !is_name(c)) {
        if word.starts_with("pushgate_") || word.starts_with("process_") {
            into.insert(word.to_string());
        }
    }
}

/// Every `expr` of the dashboard's panels, and its variables' queries.
fn dashboard_exprs(v: &Value, into: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => into.push(s.clone()),
                    _ => dashboard_exprs(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, into)),
        _ => {}
    }
}

/// The names a server's /metrics serves: every sample's, and for each
/// `# TYPE` line the family's (with a histogram's `_bucket`, `_sum`,
/// `_count`), so that a labelled family with no sample yet still counts.
fn served_names(exposition: &str, into: &mut BTreeSet<String>) {
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            into.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    into.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') {
            if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
                into.insert(name.to_string());
            }
        }
    }
}

async fn metrics_of(proc: &Proc) -> String {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    common::metrics_text(&http, &format!("http://{}", proc.addr())).await
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_served_metrics() {
    let dashboard: Value = serde_json::from_str(&deploy_file("grafana/pushgate.json"))
        .expect("deploy/grafana/pushgate.json is JSON");
    assert_eq!(
        dashboard["__inputs"][0]["name"], "DS_PROMETHEUS",
        "the dashboard asks for its Prometheus as an input on import"
    );
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], &mut exprs);
    assert!(exprs.len() >= 20, "the dashboard's queries: {exprs:?}");
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {}: its data source is the input",
                panel["title"]
            );
        }
    }
    dashboard_exprs(&dashboard["templating"], &mut exprs);

    let mut named = BTreeSet::new();
    for e in &exprs {
        metric_names(e, &mut named);
    }
    metric_names(&deploy_file("prometheus/alerts.yml"), &mut named);
    // Labels stay bounded: nothing groups or filters by channel or user.
    for e in &exprs {
        assert!(
            !e.contains("channel=") && !e.contains("user="),
            "a query by channel or user: {e}"
        );
    }

    let mut served = BTreeSet::new();
    let data = TempDir::new("monitoring");
    let store_node = Proc::serve([std::ffi::OsStr::new("--data-dir"), data.0.as_os_str()]);
    served_names(&metrics_of(&store_node).await, &mut served);
    drop(store_node);
    let broker_checked = match Redis::start().await {
        Some(redis) => {
            let broker_node = Proc::serve(["--broker", &redis.url()]);
            served_names(&metrics_of(&broker_node).await, &mut served);
            true
        }
        None => false,
    };

    let mut missing = Vec::new();
    for name in &named {
        if !served.contains(name) && (broker_checked || !name.starts_with("pushgate_broker_")) {
            missing.push(name.as_str());
        }
    }
    assert!(
        missing.is_empty(),
        "deploy/grafana/pushgate.json or deploy/prometheus/alerts.yml names metrics no server serves: {missing:?}"
    );
}

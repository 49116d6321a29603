//! `GET /metrics`: Prometheus text exposition of this server's runs: what
//! [`belt_core::metrics::Metrics`] aggregates from their events (runs by status, provider
//! calls, tokens, cost, step and run latency histograms, per provider and model call
//! latency and token histograms and rate-limit (429) answers, circuit breaker states), and
//! what only the server knows: runs running and queued now, webhook deliveries, and, read
//! from the store at each scrape, what each budget pool has spent this day and month.
//!
//! The same snapshot is what OTLP metrics export sends ([`Server::metrics_snapshot`]): this
//! module only writes it out as text.
//!
//! [`Server::metrics_snapshot`]: crate::Server::metrics_snapshot

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use belt_core::Event;
use belt_core::metrics::{Histogram, Metric, MetricKind, Metrics, Value};

use crate::AppState;
use crate::manager::EventObserver;

/// The engine's metrics, fed by every run's events.
#[derive(Default)]
pub struct ServerMetrics(pub(crate) Metrics);

impl EventObserver for ServerMetrics {
    fn on_event(&self, event: &Arc<Event>) {
        self.0.on_event(event);
    }

    /// Counted under one lock per batch.
    fn on_events(&self, events: &[Arc<Event>]) {
        self.0.on_events(events.iter().map(|e| &**e));
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(point: &[(&'static str, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in point.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}{k}=\"{}\"", label(v));
    }
    out
}

fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (le, n) in h.bounds.iter().zip(&h.counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

/// Metrics as Prometheus text (version 0.0.4): a counter's name gets `_total`.
pub fn render(metrics: &[Metric]) -> String {
    let mut o = String::with_capacity(4096);
    for m in metrics {
        let (name, kind) = match m.kind {
            MetricKind::Counter => (format!("{}_total", m.name), "counter"),
            MetricKind::Gauge => (m.name.to_string(), "gauge"),
            MetricKind::Histogram => (m.name.to_string(), "histogram"),
        };
        let _ = writeln!(o, "# HELP {name} {}\n# TYPE {name} {kind}", m.help);
        for p in &m.points {
            let l = labels(&p.labels);
            match &p.value {
                Value::Number(v) if l.is_empty() => {
                    let _ = writeln!(o, "{name} {v}");
                }
                Value::Number(v) => {
                    let _ = writeln!(o, "{name}{{{l}}} {v}");
                }
                Value::Histogram(h) => write_histogram(&mut o, &name, &l, h),
            }
        }
    }
    o
}

/// What each budget pool has spent in its current day and month.
pub(crate) fn pool_metrics(pools: &[belt_core::shared::PoolState]) -> [Metric; 2] {
    let mut usd = Metric::new(
        "belt_budget_pool_spent_usd",
        MetricKind::Gauge,
        "USD",
        "Spent by a shared budget pool in its current period (day or month).",
    );
    let mut calls = Metric::new(
        "belt_budget_pool_spent_calls",
        MetricKind::Gauge,
        "{call}",
        "Calls made from a shared budget pool in its current period.",
    );
    for p in pools {
        let l = vec![("pool", p.pool.clone()), ("period", p.period.clone())];
        usd = usd.number(l.clone(), p.spent.cost_usd);
        calls = calls.number(l, p.spent.calls as f64);
    }
    [usd, calls]
}

/// What only the server knows, read now: runs running and queued, webhook deliveries.
pub(crate) fn server_metrics(running: usize, queued: usize, (delivered, failed): (u64, u64)) -> [Metric; 3] {
    use MetricKind::{Counter, Gauge};
    [
        Metric::new("belt_runs_running", Gauge, "{run}", "Runs executing now.")
            .number(Vec::new(), running as f64),
        Metric::new("belt_runs_queued", Gauge, "{run}", "Runs waiting for a slot.")
            .number(Vec::new(), queued as f64),
        Metric::new(
            "belt_webhook_deliveries",
            Counter,
            "{delivery}",
            "Webhook events delivered or given up on.",
        )
        .number(vec![("outcome", "delivered".into())], delivered as f64)
        .number(vec![("outcome", "failed".into())], failed as f64),
    ]
}

/// Every metric of the server now: the engine's, the server's, and the budget pools'
/// (a store that does not answer within 2 s leaves the pools out).
pub(crate) async fn snapshot(app: &AppState) -> Vec<Metric> {
    let (running, queued) = app.manager.load();
    let mut metrics = app.metrics.0.snapshot();
    metrics.extend(server_metrics(running, queued, app.webhooks.totals()));
    if let Some(pools) = app.store.budget_pools() {
        match tokio::time::timeout(std::time::Duration::from_secs(2), pools.pools()).await {
            Ok(Ok(pools)) => metrics.extend(pool_metrics(&pools)),
            Ok(Err(e)) => tracing::debug!("metrics: cannot read the budget pools: {e}"),
            Err(_) => tracing::debug!("metrics: the budget pools did not answer within 2s"),
        }
    }
    metrics
}

pub(crate) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let text = render(&snapshot(&app).await);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::over(&belt_core::metrics::SECONDS_BUCKETS);
        h.observe(0.07);
        h.observe(3.0);
        let mut out = String::new();
        write_histogram(&mut out, "x", "tier=\"worker\"", &h);
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"0.05\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"0.1\"} 1\n"));
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"5\"} 2\n"));
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("x_count{tier=\"worker\"} 2\n"));
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    fn counters_get_total_and_labels_are_escaped() {
        let m =
            Metric::new("belt_x", MetricKind::Counter, "1", "X.").number(vec![("model", "a\"b".into())], 2.0);
        let text = render(&[m, Metric::new("belt_y", MetricKind::Gauge, "1", "Y.").number(Vec::new(), 1.5)]);
        assert!(text.contains("# TYPE belt_x_total counter\nbelt_x_total{model=\"a\\\"b\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE belt_y gauge\nbelt_y 1.5\n"), "{text}");
    }
}

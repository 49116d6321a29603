//! `GET /metrics`: Prometheus text exposition of this server's runs, from their events:
//! runs by status, provider calls, tokens, cost, step and run latency histograms, circuit
//! breaker states, webhook deliveries, and runs running and queued now.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use belt_core::{Event, EventKind};

use crate::AppState;
use crate::manager::EventObserver;

/// Upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Counters {
    runs: BTreeMap<String, u64>,
    steps: BTreeMap<(String, String), u64>,
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    step_seconds: BTreeMap<String, Histogram>,
    run_seconds: Histogram,
    /// Model -> open (1) or closed (0).
    breakers: BTreeMap<String, u8>,
}

/// Aggregates events into counters; an [`EventObserver`] of the run manager.
#[derive(Default)]
pub struct Metrics {
    c: Mutex<Counters>,
}

fn tier(t: &belt_core::Tier) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl EventObserver for Metrics {
    fn on_event(&self, event: &Arc<Event>) {
        let mut c = self.c.lock().unwrap_or_else(|p| p.into_inner());
        match &event.kind {
            EventKind::StepCompleted { tier: t, outcome: o, .. } => {
                *c.steps.entry((tier(t), "completed".into())).or_default() += 1;
                if !o.replayed && !o.cached {
                    c.calls += u64::from(o.attempts);
                }
                c.input_tokens += o.usage.input_tokens;
                c.output_tokens += o.usage.output_tokens;
                c.cost_usd += o.cost_usd;
                c.step_seconds.entry(tier(t)).or_default().observe(o.duration_ms as f64 / 1000.0);
            }
            EventKind::StepFailed { tier: t, attempts, .. } => {
                *c.steps.entry((tier(t), "failed".into())).or_default() += 1;
                c.calls += u64::from(*attempts);
            }
            EventKind::StepSkipped { tier: t, .. } => {
                *c.steps.entry((tier(t), "skipped".into())).or_default() += 1;
            }
            EventKind::BreakerOpened { model, .. } => {
                c.breakers.insert(model.to_string(), 1);
            }
            EventKind::BreakerClosed { model } => {
                c.breakers.insert(model.to_string(), 0);
            }
            EventKind::RunFinished { status, duration_ms, .. } => {
                *c.runs.entry(status.to_string()).or_default() += 1;
                c.run_seconds.observe(*duration_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }
}

impl Metrics {
    /// The exposition text; `running`, `queued` and webhook totals are read at the time.
    pub fn render(&self, running: usize, queued: usize, webhooks: (u64, u64)) -> String {
        let c = self.c.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = String::with_capacity(4096);
        let _ = writeln!(o, "# HELP belt_runs_total Runs of this server that finished, by status.");
        let _ = writeln!(o, "# TYPE belt_runs_total counter");
        for (status, n) in &c.runs {
            let _ = writeln!(o, "belt_runs_total{{status=\"{}\"}} {n}", label(status));
        }
        let _ = writeln!(
            o,
            "# HELP belt_runs_running Runs executing now.\n# TYPE belt_runs_running gauge\nbelt_runs_running {running}"
        );
        let _ = writeln!(
            o,
            "# HELP belt_runs_queued Runs waiting for a slot.\n# TYPE belt_runs_queued gauge\nbelt_runs_queued {queued}"
        );
        let _ = writeln!(
            o,
            "# HELP belt_steps_total Steps that ended, by tier and outcome.\n# TYPE belt_steps_total counter"
        );
        for ((t, outcome), n) in &c.steps {
            let _ = writeln!(o, "belt_steps_total{{tier=\"{}\",outcome=\"{outcome}\"}} {n}", label(t));
        }
        let _ = writeln!(
            o,
            "# HELP belt_llm_calls_total Provider calls made, retries included.\n# TYPE belt_llm_calls_total counter\nbelt_llm_calls_total {}",
            c.calls
        );
        let _ = writeln!(
            o,
            "# HELP belt_tokens_total Tokens used, by direction.\n# TYPE belt_tokens_total counter"
        );
        let _ = writeln!(o, "belt_tokens_total{{direction=\"input\"}} {}", c.input_tokens);
        let _ = writeln!(o, "belt_tokens_total{{direction=\"output\"}} {}", c.output_tokens);
        let _ = writeln!(
            o,
            "# HELP belt_cost_usd_total Cost of completed steps in US dollars.\n# TYPE belt_cost_usd_total counter\nbelt_cost_usd_total {}",
            c.cost_usd
        );
        let _ = writeln!(
            o,
            "# HELP belt_step_duration_seconds Duration of completed steps, by tier.\n# TYPE belt_step_duration_seconds histogram"
        );
        for (t, h) in &c.step_seconds {
            h.write(&mut o, "belt_step_duration_seconds", &format!("tier=\"{}\"", label(t)));
        }
        let _ = writeln!(
            o,
            "# HELP belt_run_duration_seconds Duration of finished runs.\n# TYPE belt_run_duration_seconds histogram"
        );
        c.run_seconds.write(&mut o, "belt_run_duration_seconds", "");
        let _ = writeln!(
            o,
            "# HELP belt_breaker_open Circuit breaker of a model: 1 open, 0 closed again.\n# TYPE belt_breaker_open gauge"
        );
        for (model, open) in &c.breakers {
            let _ = writeln!(o, "belt_breaker_open{{model=\"{}\"}} {open}", label(model));
        }
        let _ = writeln!(
            o,
            "# HELP belt_webhook_deliveries_total Webhook events delivered or given up on.\n# TYPE belt_webhook_deliveries_total counter"
        );
        let _ = writeln!(o, "belt_webhook_deliveries_total{{outcome=\"delivered\"}} {}", webhooks.0);
        let _ = writeln!(o, "belt_webhook_deliveries_total{{outcome=\"failed\"}} {}", webhooks.1);
        o
    }
}

pub(crate) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let (running, queued) = app.manager.load();
    let text = app.metrics.render(running, queued, app.webhooks.totals());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.07);
        h.observe(3.0);
        let mut out = String::new();
        h.write(&mut out, "x", "tier=\"worker\"");
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"0.05\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"0.1\"} 1\n"));
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"5\"} 2\n"));
        assert!(out.contains("x_bucket{tier=\"worker\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("x_count{tier=\"worker\"} 2\n"));
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}

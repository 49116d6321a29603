//! `GET /metrics`: Prometheus text exposition of this server's runs, from their events:
//! runs by status, provider calls, tokens, cost, step and run latency histograms, per
//! provider and model call latency and token histograms and rate-limit (429) answers,
//! circuit breaker states, webhook deliveries, and runs running and queued now; and, read
//! from the store at each scrape, what each budget pool has spent this day and month.

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

/// Upper bounds of the token histograms (tokens of one call).
const TOKEN_BUCKETS: [f64; 10] =
    [16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 131072.0, 262144.0, 1048576.0];

#[derive(Clone)]
struct Histogram {
    buckets: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::over(&BUCKETS)
    }
}

impl Histogram {
    fn over(buckets: &'static [f64]) -> Self {
        Histogram { buckets, counts: vec![0; buckets.len()], count: 0, sum: 0.0 }
    }

    fn observe(&mut self, seconds: f64) {
        for (i, le) in self.buckets.iter().enumerate() {
            if seconds <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, le) in self.buckets.iter().enumerate() {
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
    /// Per (provider, model): completed calls' time, retries and waits included.
    call_seconds: BTreeMap<(String, String), Histogram>,
    /// Per (provider, model, direction): tokens of one completed call.
    call_tokens: BTreeMap<(String, String, &'static str), Histogram>,
    /// Per (provider, model): attempts the provider refused as rate limited (HTTP 429).
    rate_limited: BTreeMap<(String, String), u64>,
    /// The model each step in flight called (a retry's event does not name it).
    in_flight: std::collections::HashMap<(Arc<str>, belt_core::StepId), Arc<str>>,
}

/// `openai/gpt-4o` → (`openai`, `gpt-4o`).
fn provider_model(model: &str) -> (String, String) {
    let (provider, name) = model.split_once('/').unwrap_or(("", model));
    (provider.to_string(), name.to_string())
}

/// Steps in flight remembered at most (a run whose steps never end cannot grow the map
/// without bound; past it, a retry's model is `unknown`).
const MAX_IN_FLIGHT: usize = 100_000;

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
        c.per_model(event);
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

impl Counters {
    /// The per provider and model figures: call latency and tokens, rate limiting.
    fn per_model(&mut self, event: &Event) {
        let Some(step) = &event.step else { return };
        let key = (event.run_id.clone(), step.clone());
        match &event.kind {
            EventKind::StepStarted { model, .. }
                if !model.is_empty() && self.in_flight.len() < MAX_IN_FLIGHT =>
            {
                self.in_flight.insert(key, model.clone());
            }
            EventKind::StepFallback { to, .. } => {
                if let Some(m) = self.in_flight.get_mut(&key) {
                    *m = to.clone();
                }
            }
            EventKind::StepRetrying { error_kind, .. } if error_kind == "rate_limited" => {
                let model = self.in_flight.get(&key).map_or("unknown", |m| &**m);
                *self.rate_limited.entry(provider_model(model)).or_default() += 1;
            }
            EventKind::StepFailed { error_kind, .. } => {
                let model = self.in_flight.remove(&key);
                if error_kind == "rate_limited" {
                    let model = model.as_deref().unwrap_or("unknown");
                    *self.rate_limited.entry(provider_model(model)).or_default() += 1;
                }
            }
            EventKind::StepSkipped { .. } => {
                self.in_flight.remove(&key);
            }
            EventKind::StepCompleted { outcome: o, .. } => {
                self.in_flight.remove(&key);
                if o.model.is_empty() || o.replayed || o.cached {
                    return;
                }
                let (provider, model) = provider_model(&o.model);
                let key = (provider.clone(), model.clone());
                self.call_seconds.entry(key).or_default().observe(o.duration_ms as f64 / 1000.0);
                for (direction, n) in [("input", o.usage.input_tokens), ("output", o.usage.output_tokens)] {
                    let key = (provider.clone(), model.clone(), direction);
                    let h = self.call_tokens.entry(key).or_insert_with(|| Histogram::over(&TOKEN_BUCKETS));
                    h.observe(n as f64);
                }
            }
            _ => {}
        }
    }

    fn render_per_model(&self, o: &mut String) {
        let labels = |(p, m): &(String, String)| format!("provider=\"{}\",model=\"{}\"", label(p), label(m));
        let _ = writeln!(
            o,
            "# HELP belt_llm_call_duration_seconds Time of completed provider calls (retries and waits included), by provider and model.\n# TYPE belt_llm_call_duration_seconds histogram"
        );
        for (k, h) in &self.call_seconds {
            h.write(o, "belt_llm_call_duration_seconds", &labels(k));
        }
        let _ = writeln!(
            o,
            "# HELP belt_llm_call_tokens Tokens of one completed provider call, by provider, model and direction.\n# TYPE belt_llm_call_tokens histogram"
        );
        for ((p, m, direction), h) in &self.call_tokens {
            let l = format!("{},direction=\"{direction}\"", labels(&(p.clone(), m.clone())));
            h.write(o, "belt_llm_call_tokens", &l);
        }
        let _ = writeln!(
            o,
            "# HELP belt_llm_rate_limited_total Provider answers refusing a call as rate limited (HTTP 429), by provider and model.\n# TYPE belt_llm_rate_limited_total counter"
        );
        for (k, n) in &self.rate_limited {
            let _ = writeln!(o, "belt_llm_rate_limited_total{{{}}} {n}", labels(k));
        }
    }
}

/// What each budget pool has spent in its current day and month.
pub(crate) fn render_pools(o: &mut String, pools: &[belt_core::shared::PoolState]) {
    let _ = writeln!(
        o,
        "# HELP belt_budget_pool_spent_usd Spent by a shared budget pool in its current period (day or month).\n# TYPE belt_budget_pool_spent_usd gauge"
    );
    for p in pools {
        let _ = writeln!(
            o,
            "belt_budget_pool_spent_usd{{pool=\"{}\",period=\"{}\"}} {}",
            label(&p.pool),
            label(&p.period),
            p.spent.cost_usd
        );
    }
    let _ = writeln!(
        o,
        "# HELP belt_budget_pool_spent_calls Calls made from a shared budget pool in its current period.\n# TYPE belt_budget_pool_spent_calls gauge"
    );
    for p in pools {
        let _ = writeln!(
            o,
            "belt_budget_pool_spent_calls{{pool=\"{}\",period=\"{}\"}} {}",
            label(&p.pool),
            label(&p.period),
            p.spent.calls
        );
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
        c.render_per_model(&mut o);
        o
    }
}

pub(crate) async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let (running, queued) = app.manager.load();
    let mut text = app.metrics.render(running, queued, app.webhooks.totals());
    if let Some(pools) = app.store.budget_pools() {
        // Bounded: a store that does not answer in time leaves the pools out of this scrape.
        match tokio::time::timeout(std::time::Duration::from_secs(2), pools.pools()).await {
            Ok(Ok(pools)) => render_pools(&mut text, &pools),
            Ok(Err(e)) => tracing::debug!("/metrics: cannot read the budget pools: {e}"),
            Err(_) => tracing::debug!("/metrics: the budget pools did not answer within 2s"),
        }
    }
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

    fn event(step: &str, kind: EventKind) -> Arc<Event> {
        let step = Some(belt_core::StepId::new(step));
        Arc::new(Event { seq: 1, ts: chrono::Utc::now(), run_id: Arc::from("r"), step, kind })
    }

    #[test]
    fn calls_are_counted_per_provider_and_model_with_their_429s() {
        let m = Metrics::default();
        let tier = belt_core::Tier::Worker;
        let model: Arc<str> = Arc::from("openai/gpt-4o");
        m.on_event(&event("w/1", EventKind::StepStarted { tier: tier.clone(), model: model.clone() }));
        let retry = EventKind::StepRetrying {
            tier: tier.clone(),
            attempt: 1,
            error: "429".into(),
            error_kind: "rate_limited".into(),
            delay_ms: 10,
        };
        m.on_event(&event("w/1", retry));
        let mut outcome =
            belt_core::StepOutcome { model, duration_ms: 700, attempts: 2, ..Default::default() };
        outcome.usage.input_tokens = 300;
        outcome.usage.output_tokens = 20;
        m.on_event(&event("w/1", EventKind::StepCompleted { tier, outcome, recorded_cost_usd: None }));
        let text = m.render(0, 0, (0, 0));
        let l = "provider=\"openai\",model=\"gpt-4o\"";
        assert!(text.contains(&format!("belt_llm_rate_limited_total{{{l}}} 1\n")), "{text}");
        assert!(
            text.contains(&format!("belt_llm_call_duration_seconds_bucket{{{l},le=\"0.5\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("belt_llm_call_duration_seconds_bucket{{{l},le=\"1\"}} 1\n")),
            "{text}"
        );
        let input = format!("belt_llm_call_tokens_bucket{{{l},direction=\"input\",le=\"256\"}} 0\n");
        assert!(text.contains(&input), "{text}");
        assert!(
            text.contains(&format!("belt_llm_call_tokens_sum{{{l},direction=\"input\"}} 300\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("belt_llm_call_tokens_bucket{{{l},direction=\"output\",le=\"64\"}} 1\n"))
        );
        assert!(m.c.lock().unwrap().in_flight.is_empty());
    }
}

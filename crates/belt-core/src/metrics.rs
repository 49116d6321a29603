//! Metrics aggregated from runs' events: [`Metrics`] counts what the events say (runs by
//! status, steps by tier and outcome, provider calls, tokens, cost, latency and token
//! histograms per provider and model, rate-limited answers, breaker states) and
//! [`Metrics::snapshot`] hands them out as plain values, [`Metric`]s.
//!
//! Why here and in this shape: `belt serve` renders them as Prometheus text on `/metrics`
//! and the OpenTelemetry exporter sends the same values over OTLP (`belt run` and `belt
//! serve` alike), so the aggregation is written once, over events only, and each front end
//! only translates a snapshot into its format. A front end adds what only it knows (runs
//! queued, webhook deliveries, budget pools) as more [`Metric`]s of the same shape.
//!
//! ```
//! use belt_core::metrics::{Metrics, MetricKind};
//!
//! let metrics = Metrics::default();
//! // metrics.on_event(&event) for each event of each run…
//! let snapshot = metrics.snapshot();
//! assert!(snapshot.iter().any(|m| m.name == "belt_llm_calls" && m.kind == MetricKind::Counter));
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::event::{Event, EventKind};
use crate::step::StepId;

/// Upper bounds of the latency histograms, in seconds.
pub const SECONDS_BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Upper bounds of the token histograms (tokens of one call).
pub const TOKEN_BUCKETS: [f64; 10] =
    [16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 131072.0, 262144.0, 1048576.0];

/// Steps that fell back remembered at most (a run whose steps never end cannot grow the
/// map without bound; past it, a failure is counted against the model the step asked for).
const MAX_FELL_BACK: usize = 100_000;

/// What a metric's points mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows (Prometheus `counter`, whose name gets `_total`; an OTLP monotonic sum).
    Counter,
    /// A value now (Prometheus and OTLP `gauge`).
    Gauge,
    /// A distribution over fixed buckets (Prometheus and OTLP `histogram`).
    Histogram,
}

/// One metric: its name (without Prometheus' `_total` of counters), its help text, its unit
/// (UCUM, as OTLP wants: `s`, `{token}`, `USD`, `{call}`) and its points, one per set of
/// labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: &'static str,
    pub kind: MetricKind,
    pub points: Vec<Point>,
}

impl Metric {
    /// A metric with no points yet.
    pub fn new(name: &'static str, kind: MetricKind, unit: &'static str, help: &'static str) -> Metric {
        Metric { name, help, unit, kind, points: Vec::new() }
    }

    /// Add a number point.
    pub fn number(mut self, labels: Labels, value: f64) -> Metric {
        self.points.push(Point { labels, value: Value::Number(value) });
        self
    }
}

/// A point's labels (attributes, in OTLP's words), in a fixed order.
pub type Labels = Vec<(&'static str, String)>;

/// One value of a metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub labels: Labels,
    pub value: Value,
}

/// A point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Histogram),
}

/// Counts of observations per bucket. `counts[i]` counts the values in
/// `(bounds[i-1], bounds[i]]`, and the last one those over every bound (OTLP's layout;
/// Prometheus' cumulative buckets are its running sums).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn over(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], count: 0, sum: 0.0 }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.iter().position(|le| value <= *le).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum += value;
    }
}

/// A model's full name (`openai/gpt-4o`): the key of the per-model figures, split into
/// provider and model only when a snapshot is taken, so counting a call allocates nothing
/// once its model has been seen.
type ModelName = String;

/// A model's completed calls: their time and their tokens (input, output).
#[derive(Clone)]
struct Calls {
    seconds: Histogram,
    tokens: [Histogram; 2],
}

/// Outcomes of a tier's steps, in the order a snapshot lists them.
const OUTCOMES: [&str; 3] = ["completed", "failed", "skipped"];

#[derive(Default)]
struct Counters {
    runs: BTreeMap<String, u64>,
    run_seconds: Option<Histogram>,
    /// Per tier: its steps by outcome ([`OUTCOMES`]).
    steps: BTreeMap<String, [u64; 3]>,
    step_seconds: BTreeMap<String, Histogram>,
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    /// Model -> open (1) or closed (0).
    breakers: BTreeMap<String, u8>,
    /// Per model: completed calls' time (retries and waits included) and tokens.
    calls_by_model: BTreeMap<ModelName, Calls>,
    /// Per model: attempts the provider refused as rate limited (HTTP 429).
    rate_limited: BTreeMap<ModelName, u64>,
    /// The model each step that fell back to another model of its chain turned to, until
    /// the step ends.
    fell_back: HashMap<(Arc<str>, StepId), Arc<str>>,
}

/// Aggregates the events of any number of runs. Cheap per event: a lock and a few map
/// updates. See the [module docs](self).
#[derive(Default)]
pub struct Metrics {
    c: Mutex<Counters>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `openai/gpt-4o` → the labels `provider="openai", model="gpt-4o"`.
fn provider_model(model: &str) -> Labels {
    let (provider, name) = model.split_once('/').unwrap_or(("", model));
    vec![("provider", provider.to_string()), ("model", name.to_string())]
}

/// `map[key]`, made with `new` the first time: the key is copied only then.
fn entry<'m, V>(map: &'m mut BTreeMap<String, V>, key: &str, new: impl FnOnce() -> V) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), new());
    }
    // Just inserted when it was missing.
    map.get_mut(key).unwrap_or_else(|| unreachable!("inserted above"))
}

impl Metrics {
    /// Count one event (of any run).
    pub fn on_event(&self, event: &Event) {
        let mut c = self.c.lock().unwrap_or_else(|p| p.into_inner());
        c.per_model(event);
        c.totals(event);
    }

    /// Count events, taking the lock once.
    pub fn on_events<'e>(&self, events: impl IntoIterator<Item = &'e Event>) {
        let mut c = self.c.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            c.per_model(event);
            c.totals(event);
        }
    }

    /// What has been counted so far.
    pub fn snapshot(&self) -> Vec<Metric> {
        self.c.lock().unwrap_or_else(|p| p.into_inner()).snapshot()
    }
}

impl Counters {
    fn totals(&mut self, event: &Event) {
        match &event.kind {
            EventKind::StepCompleted { tier, outcome: o, .. } => {
                self.step_ended(tier.as_str(), 0);
                if !o.replayed && !o.cached {
                    self.calls += u64::from(o.attempts);
                }
                self.input_tokens += o.usage.input_tokens;
                self.output_tokens += o.usage.output_tokens;
                self.cost_usd += o.cost_usd;
                entry(&mut self.step_seconds, tier.as_str(), || Histogram::over(&SECONDS_BUCKETS))
                    .observe(o.duration_ms as f64 / 1000.0);
            }
            EventKind::StepFailed { tier, attempts, .. } => {
                self.step_ended(tier.as_str(), 1);
                self.calls += u64::from(*attempts);
            }
            EventKind::StepSkipped { tier, .. } => {
                self.step_ended(tier.as_str(), 2);
            }
            EventKind::BreakerOpened { model, .. } => {
                self.breakers.insert(model.to_string(), 1);
            }
            EventKind::BreakerClosed { model } => {
                self.breakers.insert(model.to_string(), 0);
            }
            EventKind::RunFinished { status, duration_ms, .. } => {
                *self.runs.entry(status.to_string()).or_default() += 1;
                self.run_seconds
                    .get_or_insert_with(|| Histogram::over(&SECONDS_BUCKETS))
                    .observe(*duration_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }

    /// The per provider and model figures: call latency and tokens, rate limiting.
    fn per_model(&mut self, event: &Event) {
        let Some(step) = &event.step else { return };
        // A step that fell back to another model of its chain: the rare case where its
        // failure's model is not the one its `step_failed` names. Only those are kept.
        let key = || (event.run_id.clone(), step.clone());
        match &event.kind {
            EventKind::StepFallback { to, .. } if self.fell_back.len() < MAX_FELL_BACK => {
                self.fell_back.insert(key(), to.clone());
            }
            EventKind::StepRetrying { error_kind, model, .. } if error_kind == "rate_limited" => {
                self.rate_limited(model);
            }
            EventKind::StepFailed { error_kind, model, .. } => {
                let fell_back = self.fell_back.remove(&key());
                if error_kind == "rate_limited" {
                    self.rate_limited(fell_back.as_ref().unwrap_or(model));
                }
            }
            EventKind::StepSkipped { .. } if !self.fell_back.is_empty() => {
                self.fell_back.remove(&key());
            }
            EventKind::StepCompleted { outcome: o, .. } => {
                if !self.fell_back.is_empty() {
                    self.fell_back.remove(&key());
                }
                if o.model.is_empty() || o.replayed || o.cached {
                    return;
                }
                let calls = entry(&mut self.calls_by_model, &o.model, || Calls {
                    seconds: Histogram::over(&SECONDS_BUCKETS),
                    tokens: [Histogram::over(&TOKEN_BUCKETS), Histogram::over(&TOKEN_BUCKETS)],
                });
                calls.seconds.observe(o.duration_ms as f64 / 1000.0);
                calls.tokens[0].observe(o.usage.input_tokens as f64);
                calls.tokens[1].observe(o.usage.output_tokens as f64);
            }
            _ => {}
        }
    }

    /// One more answer refusing a call to `model` as rate limited.
    fn rate_limited(&mut self, model: &str) {
        let model = if model.is_empty() { "unknown" } else { model };
        *entry(&mut self.rate_limited, model, || 0) += 1;
    }

    /// One more step of `tier` ended with outcome `OUTCOMES[outcome]`.
    fn step_ended(&mut self, tier: &str, outcome: usize) {
        entry(&mut self.steps, tier, || [0; 3])[outcome] += 1;
    }

    fn snapshot(&self) -> Vec<Metric> {
        use MetricKind::{Counter, Gauge};
        let hist = |labels: Labels, h: &Histogram| Point { labels, value: Value::Histogram(h.clone()) };
        let mut runs = Metric::new("belt_runs", Counter, "{run}", "Runs that finished, by status.");
        for (status, n) in &self.runs {
            runs = runs.number(vec![("status", status.clone())], *n as f64);
        }
        let mut steps =
            Metric::new("belt_steps", Counter, "{step}", "Steps that ended, by tier and outcome.");
        for (tier, counts) in &self.steps {
            for (outcome, n) in OUTCOMES.iter().zip(counts).filter(|(_, n)| **n > 0) {
                steps =
                    steps.number(vec![("tier", tier.clone()), ("outcome", outcome.to_string())], *n as f64);
            }
        }
        let mut step_seconds =
            histogram("belt_step_duration_seconds", "Duration of completed steps, by tier.");
        step_seconds.points =
            self.step_seconds.iter().map(|(t, h)| hist(vec![("tier", t.clone())], h)).collect();
        let mut run_seconds = histogram("belt_run_duration_seconds", "Duration of finished runs.");
        let empty = Histogram::over(&SECONDS_BUCKETS);
        run_seconds.points = vec![hist(Vec::new(), self.run_seconds.as_ref().unwrap_or(&empty))];
        let mut breakers = Metric::new(
            "belt_breaker_open",
            Gauge,
            "1",
            "Circuit breaker of a model: 1 open, 0 closed again.",
        );
        for (model, open) in &self.breakers {
            breakers = breakers.number(vec![("model", model.clone())], f64::from(*open));
        }
        let mut call_seconds = histogram(
            "belt_llm_call_duration_seconds",
            "Time of completed provider calls (retries and waits included), by provider and model.",
        );
        call_seconds.points =
            self.calls_by_model.iter().map(|(m, c)| hist(provider_model(m), &c.seconds)).collect();
        let mut call_tokens = Metric::new(
            "belt_llm_call_tokens",
            MetricKind::Histogram,
            "{token}",
            "Tokens of one completed provider call, by provider, model and direction.",
        );
        call_tokens.points = (self.calls_by_model.iter())
            .flat_map(|(m, c)| {
                ["input", "output"].into_iter().zip(&c.tokens).map(|(direction, h)| {
                    let mut labels = provider_model(m);
                    labels.push(("direction", direction.to_string()));
                    hist(labels, h)
                })
            })
            .collect();
        let mut rate_limited = Metric::new(
            "belt_llm_rate_limited",
            Counter,
            "{answer}",
            "Provider answers refusing a call as rate limited (HTTP 429), by provider and model.",
        );
        for (k, n) in &self.rate_limited {
            rate_limited = rate_limited.number(provider_model(k), *n as f64);
        }
        vec![
            runs,
            run_seconds,
            steps,
            step_seconds,
            Metric::new("belt_llm_calls", Counter, "{call}", "Provider calls made, retries included.")
                .number(Vec::new(), self.calls as f64),
            Metric::new("belt_tokens", Counter, "{token}", "Tokens used, by direction.")
                .number(vec![("direction", "input".into())], self.input_tokens as f64)
                .number(vec![("direction", "output".into())], self.output_tokens as f64),
            Metric::new("belt_cost_usd", Counter, "USD", "Cost of completed steps in US dollars.")
                .number(Vec::new(), self.cost_usd),
            breakers,
            call_seconds,
            call_tokens,
            rate_limited,
        ]
    }
}

fn histogram(name: &'static str, help: &'static str) -> Metric {
    Metric::new(name, MetricKind::Histogram, "s", help)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StepOutcome;

    fn event(step: &str, kind: EventKind) -> Event {
        let step = Some(StepId::new(step));
        Event { seq: 1, ts: chrono::Utc::now(), run_id: Arc::from("r"), step, kind }
    }

    fn find<'a>(snapshot: &'a [Metric], name: &str) -> &'a Metric {
        snapshot.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no metric {name}"))
    }

    #[test]
    fn buckets_count_each_value_once() {
        let mut h = Histogram::over(&SECONDS_BUCKETS);
        h.observe(0.07);
        h.observe(3.0);
        h.observe(1000.0);
        assert_eq!(h.counts.len(), SECONDS_BUCKETS.len() + 1);
        assert_eq!(h.counts[2], 1, "0.07 is in (0.05, 0.1]");
        assert_eq!(h.counts[7], 1, "3 is in (2.5, 5]");
        assert_eq!(h.counts[12], 1, "1000 is over every bound");
        assert_eq!((h.count, h.sum), (3, 1003.07));
    }

    #[test]
    fn calls_are_counted_per_provider_and_model_with_their_429s() {
        let m = Metrics::default();
        let tier = crate::Tier::Worker;
        let model: Arc<str> = Arc::from("openai/gpt-4o");
        m.on_event(&event("w/1", EventKind::StepStarted { tier: tier.clone(), model: model.clone() }));
        let retry = EventKind::StepRetrying {
            tier: tier.clone(),
            attempt: 1,
            error: "429".into(),
            error_kind: "rate_limited".into(),
            delay_ms: 10,
            model: model.clone(),
        };
        m.on_event(&event("w/1", retry));
        let mut outcome = StepOutcome { model, duration_ms: 700, attempts: 2, ..Default::default() };
        outcome.usage.input_tokens = 300;
        outcome.usage.output_tokens = 20;
        m.on_event(&event("w/1", EventKind::StepCompleted { tier, outcome, recorded_cost_usd: None }));

        let s = m.snapshot();
        let labels = vec![("provider", "openai".to_string()), ("model", "gpt-4o".to_string())];
        let limited = find(&s, "belt_llm_rate_limited");
        assert_eq!(limited.points, vec![Point { labels: labels.clone(), value: Value::Number(1.0) }]);
        assert_eq!(find(&s, "belt_llm_calls").points[0].value, Value::Number(2.0));
        let Value::Histogram(h) = &find(&s, "belt_llm_call_duration_seconds").points[0].value else {
            panic!("a histogram")
        };
        assert_eq!((h.count, h.counts[5]), (1, 1), "0.7 s is in (0.5, 1]");
        let tokens = find(&s, "belt_llm_call_tokens");
        assert_eq!(tokens.points.len(), 2, "input and output");
        assert!(m.c.lock().unwrap_or_else(|p| p.into_inner()).fell_back.is_empty());
        let steps = find(&s, "belt_steps");
        assert_eq!(steps.points[0].labels, vec![("tier", "worker".into()), ("outcome", "completed".into())]);
    }

    #[test]
    fn a_failure_after_a_fallback_counts_against_the_model_that_failed() {
        let m = Metrics::default();
        let tier = crate::Tier::Worker;
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("openai/gpt-4o"), Arc::from("anthropic/claude"));
        let fallback =
            EventKind::StepFallback { tier: tier.clone(), from: a.clone(), to: b, error: "down".into() };
        m.on_event(&event("w/1", fallback));
        let failed = EventKind::StepFailed {
            tier,
            error: "429".into(),
            error_kind: "rate_limited".into(),
            attempts: 3,
            model: a,
        };
        m.on_event(&event("w/1", failed));
        let s = m.snapshot();
        let labels = vec![("provider", "anthropic".to_string()), ("model", "claude".to_string())];
        assert_eq!(
            find(&s, "belt_llm_rate_limited").points,
            vec![Point { labels, value: Value::Number(1.0) }]
        );
        assert!(m.c.lock().unwrap_or_else(|p| p.into_inner()).fell_back.is_empty());
    }
}

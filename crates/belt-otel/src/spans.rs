//! A run's events turned into GenAI spans: [`RunTracer`].
//!
//! The engine already says everything a trace needs, in order, in its events; building the
//! spans from them (instead of instrumenting `Ctx`) keeps the engine's hot path as it is
//! and gives served runs, workers and `belt run` one implementation.
//!
//! The shape, following the OpenTelemetry GenAI conventions:
//!
//! ```text
//! invoke_workflow cascade                 the run (one per segment: a resume is a new root)
//! ├── plan                                the `decompose` step (or the given plan)
//! │   └── chat simulated/default          each provider attempt of it
//! ├── invoke_agent worker/001             a worker, synthesizer or executive step
//! │   ├── chat …  (attempt 1, error)      a failed attempt, then the retry
//! │   └── chat …  (attempt 2)
//! └── invoke_agent worker/003             an agent with tools: its rounds and tool calls
//!     ├── chat …  (worker/003/round/01)
//!     ├── execute_tool add (…/round/01/tool/1)
//!     └── chat …  (worker/003/round/02)
//! ```
//!
//! Ids are derived, not drawn: the trace id is the xxh3-128 of the run id, so every segment
//! of a resumed run lands in the same trace, and a span's id is a hash of the run, the
//! segment and the step, so a child names its parent without the tracer keeping the parent.
//! A resumed segment's root also links to the first segment's root.

use std::collections::HashMap;
use std::sync::Arc;

use belt_core::event::{Event, EventKind};
use belt_core::{StepId, StepOutcome, Tier};
use chrono::{DateTime, Utc};

use crate::proto::{self, Attributes, KeyValue, Name, Span, SpanEvent, Text};

/// What a finished span still needs from the run's record before it is sent (the record
/// holds what the events do not carry: a tool's name, a model's output).
#[derive(Debug, Clone, PartialEq)]
pub enum Enrich {
    /// A tool call: its name and id from its round's record (`round`, call `index`, 1-based),
    /// and with content on, its arguments and result.
    Tool { round: StepId, index: usize, step: StepId },
    /// With content on: the step's output.
    Output { step: StepId },
}

/// A finished span, and what it may still get from the run's record.
#[derive(Debug, Clone)]
pub struct Finished {
    pub span: Span,
    pub enrich: Option<Enrich>,
}

/// What kind of work a step is, read from its id and first event.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// The decomposition (tier `decomposer`): `plan`, its attempts as `chat`.
    Plan,
    /// A step that is one LLM call: `invoke_agent`, its attempts as `chat`.
    Agent,
    /// One model turn of an agent's tool loop (`…/round/NN`): `chat` under the agent.
    Round,
    /// One tool call of a loop (`…/round/NN/tool/N`): `execute_tool` under the agent.
    Tool,
    /// Other recorded work (`Ctx::step`): an internal span under the run.
    Work,
}

/// An agent whose rounds and tool calls have no event of their own: its span spans them.
#[derive(Debug, Default)]
struct AgentAgg {
    tier: Option<Tier>,
    start: u64,
    end: u64,
    model: Option<Arc<str>>,
    input: u64,
    output: u64,
    cost: f64,
    rounds: u32,
    /// A round or tool call of it ran in this segment (else all were replayed).
    ran: bool,
    failed: Option<(String, String)>,
}

/// A step between its start and its end.
#[derive(Debug)]
struct Live {
    start: u64,
    attempt_start: u64,
    attempt: u32,
    model: Arc<str>,
}

/// The root span of the segment being traced.
#[derive(Debug)]
struct Root {
    id: [u8; 8],
    start: u64,
    pattern: String,
    attributes: Vec<KeyValue>,
    events: Vec<SpanEvent>,
}

/// Root events kept at most (budget warnings, breakers): a run cannot grow its root span
/// without bound.
const MAX_ROOT_EVENTS: usize = 128;

/// Turns one run's events, in order, into finished spans. Keeps only what is in flight:
/// the steps started and not finished, and the tool-loop agents (ended with the run).
#[derive(Debug)]
pub struct RunTracer {
    run_id: Arc<str>,
    trace_id: [u8; 16],
    content: bool,
    segment: u64,
    root: Option<Root>,
    live: HashMap<StepId, Live>,
    agents: HashMap<Arc<str>, AgentAgg>,
    plan_step_seen: bool,
    last_ts: u64,
    /// The caller's span the run's root span is under (its `traceparent`), if any.
    caller: Option<[u8; 8]>,
}

/// The trace id of a run: the same for every segment of it, and computable from the run id
/// alone (a user can find the trace of `belt runs show ID`).
pub fn trace_id(run_id: &str) -> [u8; 16] {
    let id = xxhash_rust::xxh3::xxh3_128(run_id.as_bytes()).to_be_bytes();
    // All zeros is an invalid trace id; xxh3 gives it for no realistic input, but never send it.
    if id == [0; 16] { [1; 16] } else { id }
}

/// The id of a span: a hash of what names it.
fn span_id(parts: &[&str]) -> [u8; 8] {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    let id = h.digest().to_be_bytes();
    if id == [0; 8] { [1; 8] } else { id }
}

fn nanos(ts: &DateTime<Utc>) -> u64 {
    ts.timestamp_nanos_opt().map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

/// `openai/gpt-4o` → (`openai`, `gpt-4o`), with belt's provider names mapped to the
/// conventions' well-known values where they differ.
pub fn provider_and_model(model: &str) -> (&str, &str) {
    let (provider, name) = model.split_once('/').unwrap_or(("", model));
    let provider = match provider {
        "xai" => "x_ai",
        "mistral" => "mistral_ai",
        "gemini" | "google" => "gcp.gemini",
        "bedrock" => "aws.bedrock",
        "azure" => "azure.ai.openai",
        p => p,
    };
    (provider, name)
}

/// Where `/round/` starts in a step id. (A plain scan: ids are short, and `str::find`
/// sets up a substring searcher on every call, which showed in the exporter's profile.)
fn round_at(id: &str) -> Option<usize> {
    id.as_bytes().windows(7).position(|w| w == b"/round/")
}

fn classify(step: &StepId, tier: &Tier, model: &str) -> Class {
    let id = step.as_str();
    match round_at(id) {
        Some(at) if id.as_bytes()[at + 7..].windows(6).any(|w| w == b"/tool/") => Class::Tool,
        Some(_) => Class::Round,
        None if *tier == Tier::Decomposer => Class::Plan,
        None if model.is_empty() => Class::Work,
        None => Class::Agent,
    }
}

/// The agent a round or tool step belongs to: the id before `/round/`.
fn agent_of(step: &StepId) -> &str {
    let id = step.as_str();
    round_at(id).map_or(id, |at| &id[..at])
}

impl RunTracer {
    /// A tracer of run `run_id`; `content` puts the task on the root span (outputs come
    /// from the record, see [`Enrich`]).
    pub fn new(run_id: &str, content: bool) -> Self {
        RunTracer {
            run_id: Arc::from(run_id),
            trace_id: trace_id(run_id),
            content,
            segment: 0,
            root: None,
            live: HashMap::new(),
            agents: HashMap::new(),
            plan_step_seen: false,
            last_ts: 0,
            caller: None,
        }
    }

    /// The run's trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The id of the root span of the segment that began with the `run_started` of
    /// sequence number `seq` (1 for a run's first segment).
    pub fn root_span_id(&self, seq: u64) -> [u8; 8] {
        span_id(&[&self.run_id, &seq.to_string(), "run"])
    }

    /// A span's id in this segment: hashed in place (one per span, so no allocations).
    fn id(&self, parts: &[&str]) -> [u8; 8] {
        self.id_n(parts, 0)
    }

    /// [`RunTracer::id`] with a number (an attempt) among what names it.
    fn id_n(&self, parts: &[&str], n: u32) -> [u8; 8] {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(self.run_id.as_bytes());
        h.update(&self.segment.to_le_bytes());
        for p in parts {
            h.update(&[0]);
            h.update(p.as_bytes());
        }
        h.update(&n.to_le_bytes());
        let id = h.digest().to_be_bytes();
        if id == [0; 8] { [1; 8] } else { id }
    }

    fn root_id(&self) -> [u8; 8] {
        self.root.as_ref().map_or_else(|| self.root_span_id(self.segment), |r| r.id)
    }

    fn agent_span_id(&self, agent: &str) -> [u8; 8] {
        self.id(&["agent", agent])
    }

    fn span(&self, name: Name, id: [u8; 8], parent: [u8; 8], (start, end): (u64, u64)) -> Span {
        Span {
            trace_id: self.trace_id,
            span_id: id,
            parent_span_id: Some(parent),
            name,
            kind: proto::KIND_INTERNAL,
            start_time_unix_nano: start,
            end_time_unix_nano: end.max(start),
            attributes: {
                // Room for what the common spans carry (~400 bytes): one allocation per span.
                let mut a = Attributes::with_capacity(512);
                a.str("belt.run_id", &self.run_id);
                a
            },
            events: Vec::new(),
            links: Vec::new(),
            status: None,
        }
    }

    /// Feed the next event; finished spans are appended to `out`. Returns true when the
    /// event ended the run's segment (`run_finished`).
    pub fn on_event(&mut self, e: &Event, out: &mut Vec<Finished>) -> bool {
        let ts = nanos(&e.ts);
        self.last_ts = self.last_ts.max(ts);
        match (&e.kind, &e.step) {
            (EventKind::RunStarted { pattern, task, agents, concurrency, simulated, traceparent }, _) => {
                self.join_caller(traceparent.as_deref());
                self.start_segment(e.seq, ts, pattern, task, (*agents, *concurrency, *simulated));
            }
            (EventKind::PlanReady { subtasks, shape, source }, _) => {
                self.plan_ready(ts, *subtasks, shape, source, out)
            }
            (EventKind::StepStarted { tier, model }, Some(step)) => self.started(step, tier, model, ts),
            (EventKind::StepRetrying { tier, attempt, error, error_kind, delay_ms, .. }, Some(step)) => {
                self.retrying(step, tier, *attempt, (error, error_kind), ts, *delay_ms, out);
            }
            (EventKind::StepFallback { to, .. }, Some(step)) => {
                if let Some(live) = self.live.get_mut(step) {
                    live.model = to.clone();
                }
            }
            (EventKind::StepCompleted { tier, outcome, recorded_cost_usd }, Some(step)) => {
                self.completed(step, tier, outcome, *recorded_cost_usd, ts, out);
            }
            (EventKind::StepFailed { tier, error, error_kind, attempts, .. }, Some(step)) => {
                self.failed(step, tier, (error, error_kind), *attempts, ts, out);
            }
            (EventKind::StepSkipped { tier, reason }, Some(step)) => {
                self.skipped(step, tier, reason, ts, out)
            }
            (
                EventKind::RunFinished {
                    status,
                    stop_reason,
                    cost_usd,
                    input_tokens,
                    output_tokens,
                    calls,
                    ..
                },
                _,
            ) => {
                let status = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string));
                let status = status.unwrap_or_default();
                let attrs = vec![
                    KeyValue::str("belt.status", status.clone()),
                    KeyValue::str("belt.stop_reason", stop_reason.clone()),
                    KeyValue::double("belt.cost_usd", *cost_usd),
                    KeyValue::int("gen_ai.usage.input_tokens", *input_tokens as i64),
                    KeyValue::int("gen_ai.usage.output_tokens", *output_tokens as i64),
                    KeyValue::int("belt.calls", *calls as i64),
                ];
                let failed = matches!(status.as_str(), "failed" | "cancelled" | "interrupted");
                self.end_segment(ts, attrs, failed.then_some(stop_reason.as_str()), out);
                return true;
            }
            (kind, step) => self.root_event(ts, kind, step.as_ref()),
        }
        false
    }

    /// The stream ended without `run_finished` (the process is stopping, the run was
    /// handed over): what is open is ended now, as interrupted.
    pub fn finish(&mut self, out: &mut Vec<Finished>) {
        if self.root.is_none() && self.live.is_empty() && self.agents.is_empty() {
            return;
        }
        let end = self.last_ts;
        let live: Vec<(StepId, Live)> = self.live.drain().collect();
        for (step, live) in live {
            let parent = self.root_id();
            let mut span = self.span(
                Name::new("invoke_agent", &step),
                self.id(&["open", step.as_str()]),
                parent,
                (live.start, end),
            );
            span.attributes.str("belt.step", step.as_str());
            set_error(&mut span, "interrupted", "the run stopped while this step was in flight");
            out.push(Finished { span, enrich: None });
        }
        self.end_segment(end, Vec::new(), Some("the run's events ended before run_finished"), out);
    }

    /// A run started with the caller's trace context joins the caller's trace, under the
    /// caller's span; a context that does not parse is ignored (the front ends check it
    /// before the run starts, so only a hand-made `RunOptions` can get here with one).
    fn join_caller(&mut self, traceparent: Option<&str>) {
        let Some(Ok(t)) = traceparent.map(belt_core::event::TraceParent::parse) else { return };
        self.trace_id = t.trace_id;
        self.caller = Some(t.span_id);
    }

    fn start_segment(
        &mut self,
        seq: u64,
        ts: u64,
        pattern: &str,
        task: &str,
        (agents, concurrency, simulated): (Option<usize>, usize, bool),
    ) {
        self.segment = seq;
        self.plan_step_seen = false;
        let mut attributes = vec![
            KeyValue::lit("gen_ai.operation.name", "invoke_workflow"),
            KeyValue::str("gen_ai.workflow.name", pattern),
            KeyValue::int("belt.concurrency", concurrency as i64),
            KeyValue::bool("belt.simulated", simulated),
            KeyValue::int("belt.segment", seq as i64),
        ];
        if let Some(n) = agents {
            attributes.push(KeyValue::int("belt.agents", n as i64));
        }
        if self.content {
            attributes.push(KeyValue::str("gen_ai.input.messages", messages("user", task, None)));
        }
        self.root = Some(Root {
            id: self.root_span_id(seq),
            start: ts,
            pattern: pattern.to_string(),
            attributes,
            events: Vec::new(),
        });
    }

    fn end_segment(&mut self, ts: u64, attrs: Vec<KeyValue>, error: Option<&str>, out: &mut Vec<Finished>) {
        let agents: Vec<(Arc<str>, AgentAgg)> = self.agents.drain().collect();
        for (agent, agg) in agents {
            out.push(Finished { span: self.agent_span(&agent, agg), enrich: None });
        }
        let Some(root) = self.root.take() else { return };
        let mut span =
            self.span(Name::new("invoke_workflow", root.pattern), root.id, [0; 8], (root.start, ts));
        span.parent_span_id = self.caller;
        span.attributes.extend(root.attributes);
        span.attributes.extend(attrs);
        span.events = root.events;
        if self.segment > 1 {
            // A resumed segment: the same trace, and a link to where the run began.
            span.attributes.bool("belt.resumed", true);
            span.links.push(proto::Link {
                trace_id: self.trace_id,
                span_id: self.root_span_id(1),
                attributes: vec![KeyValue::lit("belt.link", "first_segment")],
            });
        }
        match error {
            Some(message) => set_error(&mut span, "run_failed", message),
            None => span.status = Some(proto::Status { message: String::new(), code: proto::STATUS_OK }),
        }
        out.push(Finished { span, enrich: None });
    }

    fn agent_span(&self, agent: &Arc<str>, agg: AgentAgg) -> Span {
        let mut span = self.span(
            Name::new("invoke_agent", agent),
            self.agent_span_id(agent),
            self.root_id(),
            (agg.start, agg.end),
        );
        let tier = agg.tier.as_ref().map_or("agent", Tier::as_str);
        agent_attributes(&mut span.attributes, agent, tier);
        if let Some(model) = &agg.model {
            model_attributes(&mut span, model);
        }
        span.attributes.extend([
            KeyValue::int("gen_ai.usage.input_tokens", agg.input as i64),
            KeyValue::int("gen_ai.usage.output_tokens", agg.output as i64),
            KeyValue::double("belt.cost_usd", agg.cost),
            KeyValue::int("belt.rounds", i64::from(agg.rounds)),
        ]);
        if !agg.ran {
            span.attributes.bool("belt.replayed", true);
        }
        if let Some((kind, message)) = &agg.failed {
            set_error(&mut span, kind, message);
        }
        span
    }

    fn plan_ready(
        &mut self,
        ts: u64,
        subtasks: usize,
        shape: &[usize],
        source: &belt_core::PlanSource,
        out: &mut Vec<Finished>,
    ) {
        let source = serde_json::to_value(source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let attrs = [
            KeyValue::int("belt.plan.subtasks", subtasks as i64),
            KeyValue::str("belt.plan.source", source),
            KeyValue::str(
                "belt.plan.shape",
                shape.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
            ),
        ];
        if self.plan_step_seen {
            self.push_root_event(ts, "plan_ready", attrs.to_vec());
            return;
        }
        // No decomposition step (a given plan): the plan span is the moment it was ready.
        let start = self.root.as_ref().map_or(ts, |r| r.start);
        let mut span = self.span(Name::op("plan"), self.id(&["plan"]), self.root_id(), (start, ts));
        span.attributes.push(KeyValue::lit("gen_ai.operation.name", "plan"));
        span.attributes.extend(attrs);
        out.push(Finished { span, enrich: None });
    }

    fn started(&mut self, step: &StepId, tier: &Tier, model: &Arc<str>, ts: u64) {
        let class = classify(step, tier, model);
        if class == Class::Plan {
            self.plan_step_seen = true;
        }
        if matches!(class, Class::Round | Class::Tool) {
            let agg = self
                .agents
                .entry(Arc::from(agent_of(step)))
                .or_insert_with(|| AgentAgg { start: ts, ..AgentAgg::default() });
            agg.start = agg.start.min(ts);
            agg.ran = true;
            agg.tier.get_or_insert_with(|| tier.clone());
        }
        self.live
            .insert(step.clone(), Live { start: ts, attempt_start: ts, attempt: 1, model: model.clone() });
    }

    #[allow(clippy::too_many_arguments)]
    fn retrying(
        &mut self,
        step: &StepId,
        tier: &Tier,
        attempt: u32,
        (error, kind): (&str, &str),
        ts: u64,
        delay_ms: u64,
        out: &mut Vec<Finished>,
    ) {
        let Some(live) = self.live.get_mut(step) else { return };
        let (model, start) = (live.model.clone(), live.attempt_start);
        live.attempt = attempt + 1;
        live.attempt_start = ts.saturating_add(delay_ms.saturating_mul(1_000_000));
        let class = classify(step, tier, &model);
        if matches!(class, Class::Tool | Class::Work) {
            return;
        }
        let mut span = self.chat_span(step, tier, class, &model, attempt, (start, ts));
        set_error(&mut span, kind, error);
        span.attributes.int("belt.retry_delay_ms", delay_ms as i64);
        out.push(Finished { span, enrich: None });
    }

    fn chat_span(
        &self,
        step: &StepId,
        tier: &Tier,
        class: Class,
        model: &Arc<str>,
        attempt: u32,
        times: (u64, u64),
    ) -> Span {
        let parent = match class {
            Class::Round => self.agent_span_id(agent_of(step)),
            Class::Plan => self.id(&["plan"]),
            _ => self.agent_span_id(step.as_str()),
        };
        let id = self.id_n(&["chat", step.as_str()], attempt);
        let name = Text::part_of(model, provider_and_model(model).1);
        let mut span = self.span(Name::new("chat", name), id, parent, times);
        span.kind = proto::KIND_CLIENT;
        let a = &mut span.attributes;
        a.str("gen_ai.operation.name", "chat");
        a.str("belt.step", step.as_str());
        a.str("belt.tier", tier.as_str());
        a.int("belt.attempt", i64::from(attempt));
        model_attributes(&mut span, model);
        span
    }

    fn completed(
        &mut self,
        step: &StepId,
        tier: &Tier,
        outcome: &StepOutcome,
        recorded: Option<f64>,
        ts: u64,
        out: &mut Vec<Finished>,
    ) {
        let live = self.live.remove(step).unwrap_or(Live {
            start: ts.saturating_sub(outcome.duration_ms.saturating_mul(1_000_000)),
            attempt_start: ts,
            attempt: outcome.attempts.max(1),
            model: outcome.model.clone(),
        });
        let class = classify(step, tier, if outcome.model.is_empty() { &live.model } else { &outcome.model });
        if class == Class::Plan {
            self.plan_step_seen = true;
        }
        self.aggregate(step, tier, class, outcome, (live.start, ts), None);
        if outcome.replayed {
            out.push(self.replayed(step, tier, class, outcome, recorded, ts));
            return;
        }
        let call = matches!(class, Class::Plan | Class::Agent | Class::Round);
        if call {
            let model = if outcome.model.is_empty() { &live.model } else { &outcome.model };
            let mut chat =
                self.chat_span(step, tier, class, &live.model, live.attempt, (live.attempt_start, ts));
            outcome_attributes(&mut chat, outcome, model);
            chat.status = Some(proto::Status { message: String::new(), code: proto::STATUS_OK });
            let enrich = self.content.then(|| Enrich::Output { step: step.clone() });
            out.push(Finished { span: chat, enrich });
        }
        if class == Class::Round {
            return;
        }
        let (mut span, enrich) = self.outer_span(step, tier, class, &live, ts);
        if call {
            outcome_attributes(&mut span, outcome, &live.model);
        }
        span.attributes.int("belt.attempts", i64::from(outcome.attempts));
        span.status = Some(proto::Status { message: String::new(), code: proto::STATUS_OK });
        out.push(Finished { span, enrich });
    }

    /// The span around a step's attempts: `plan`, `invoke_agent`, `execute_tool` or work.
    fn outer_span(
        &self,
        step: &StepId,
        tier: &Tier,
        class: Class,
        live: &Live,
        ts: u64,
    ) -> (Span, Option<Enrich>) {
        let times = (live.start, ts);
        let root = self.root_id();
        let (mut span, enrich) = match class {
            Class::Plan => {
                let mut s = self.span(Name::op("plan"), self.id(&["plan"]), root, times);
                s.attributes.push(KeyValue::lit("gen_ai.operation.name", "plan"));
                (s, None)
            }
            Class::Tool => {
                let agent = agent_of(step);
                let mut s = self.span(
                    Name::op("execute_tool"),
                    self.id(&["tool", step.as_str()]),
                    self.agent_span_id(agent),
                    times,
                );
                s.attributes.str("gen_ai.operation.name", "execute_tool");
                s.attributes.str("gen_ai.tool.type", "function");
                s.attributes.str("gen_ai.agent.name", agent);
                (s, tool_enrich(step))
            }
            Class::Work => {
                let mut s =
                    self.span(Name::new("step", step), self.id(&["work", step.as_str()]), root, times);
                s.attributes.str("belt.tier", tier.as_str());
                (s, None)
            }
            Class::Agent | Class::Round => {
                let mut s = self.span(
                    Name::new("invoke_agent", step),
                    self.agent_span_id(step.as_str()),
                    root,
                    times,
                );
                agent_attributes(&mut s.attributes, step.as_str(), tier.as_str());
                (s, self.content.then(|| Enrich::Output { step: step.clone() }))
            }
        };
        span.attributes.str("belt.step", step.as_str());
        if class != Class::Agent {
            span.attributes.str("belt.tier", tier.as_str());
        }
        (span, enrich)
    }

    /// A step whose output came from the run's record: one span, marked, no call under it.
    fn replayed(
        &self,
        step: &StepId,
        tier: &Tier,
        class: Class,
        outcome: &StepOutcome,
        recorded: Option<f64>,
        ts: u64,
    ) -> Finished {
        let live = Live { start: ts, attempt_start: ts, attempt: 0, model: outcome.model.clone() };
        let (mut span, enrich) = match class {
            Class::Round => {
                let mut s = self.chat_span(step, tier, class, &outcome.model, 0, (ts, ts));
                s.kind = proto::KIND_INTERNAL;
                (s, None)
            }
            _ => self.outer_span(step, tier, class, &live, ts),
        };
        span.attributes.bool("belt.replayed", true);
        if let Some(cost) = recorded {
            span.attributes.double("belt.recorded_cost_usd", cost);
        }
        if !outcome.model.is_empty() {
            model_attributes(&mut span, &outcome.model);
        }
        Finished { span, enrich: if class == Class::Tool { enrich } else { None } }
    }

    fn failed(
        &mut self,
        step: &StepId,
        tier: &Tier,
        (error, kind): (&str, &str),
        attempts: u32,
        ts: u64,
        out: &mut Vec<Finished>,
    ) {
        let live = self.live.remove(step).unwrap_or(Live {
            start: ts,
            attempt_start: ts,
            attempt: attempts.max(1),
            model: Arc::from(""),
        });
        let class = classify(step, tier, &live.model);
        self.aggregate(step, tier, class, &StepOutcome::default(), (live.start, ts), Some((kind, error)));
        let call = matches!(class, Class::Plan | Class::Agent | Class::Round);
        if call && attempts > 0 {
            let mut chat =
                self.chat_span(step, tier, class, &live.model, live.attempt, (live.attempt_start, ts));
            set_error(&mut chat, kind, error);
            out.push(Finished { span: chat, enrich: None });
        }
        if class == Class::Round {
            return;
        }
        let (mut span, enrich) = self.outer_span(step, tier, class, &live, ts);
        if !live.model.is_empty() {
            model_attributes(&mut span, &live.model);
        }
        span.attributes.int("belt.attempts", i64::from(attempts));
        set_error(&mut span, kind, error);
        out.push(Finished { span, enrich: if class == Class::Tool { enrich } else { None } });
    }

    fn skipped(&mut self, step: &StepId, tier: &Tier, reason: &str, ts: u64, out: &mut Vec<Finished>) {
        let live = self.live.remove(step).unwrap_or(Live {
            start: ts,
            attempt_start: ts,
            attempt: 0,
            model: Arc::from(""),
        });
        let class = match classify(step, tier, "x") {
            Class::Round => Class::Agent,
            c => c,
        };
        let (mut span, _) = self.outer_span(step, tier, class, &live, ts);
        span.attributes
            .extend([KeyValue::bool("belt.skipped", true), KeyValue::str("belt.skip_reason", reason)]);
        out.push(Finished { span, enrich: None });
    }

    /// Rounds and tool calls add to their agent's span.
    fn aggregate(
        &mut self,
        step: &StepId,
        tier: &Tier,
        class: Class,
        outcome: &StepOutcome,
        (start, end): (u64, u64),
        failed: Option<(&str, &str)>,
    ) {
        if !matches!(class, Class::Round | Class::Tool) {
            return;
        }
        let agg = self
            .agents
            .entry(Arc::from(agent_of(step)))
            .or_insert_with(|| AgentAgg { start, ..AgentAgg::default() });
        agg.start = agg.start.min(start);
        agg.end = agg.end.max(end);
        agg.tier.get_or_insert_with(|| tier.clone());
        agg.input += outcome.usage.input_tokens;
        agg.output += outcome.usage.output_tokens;
        agg.cost += outcome.cost_usd;
        agg.ran |= !outcome.replayed;
        if class == Class::Round {
            agg.rounds += 1;
            if !outcome.model.is_empty() {
                agg.model = Some(outcome.model.clone());
            }
        }
        if let Some((kind, message)) = failed
            && class == Class::Round
        {
            agg.failed = Some((kind.to_string(), message.to_string()));
        }
    }

    fn root_event(&mut self, ts: u64, kind: &EventKind, step: Option<&StepId>) {
        let attrs: Vec<KeyValue> = match kind {
            EventKind::BudgetWarning { limit, used, max }
            | EventKind::BudgetExhausted { limit, used, max, .. } => vec![
                KeyValue::str("belt.budget.limit", limit.clone()),
                KeyValue::double("belt.budget.used", *used),
                KeyValue::double("belt.budget.max", *max),
                KeyValue::double("belt.budget.left", (max - used).max(0.0)),
            ],
            EventKind::BreakerOpened { model, .. } | EventKind::BreakerClosed { model } => {
                vec![KeyValue::str("gen_ai.request.model", &**model)]
            }
            EventKind::PlanFallback { reason, templated } => {
                vec![
                    KeyValue::str("belt.reason", reason.clone()),
                    KeyValue::int("belt.templated", *templated as i64),
                ]
            }
            EventKind::StepTruncated { .. } | EventKind::UsageOverreported { .. } => match step {
                Some(step) => vec![KeyValue::str("belt.step", step)],
                None => return,
            },
            EventKind::Custom { name, .. } => vec![KeyValue::str("belt.event.name", name.clone())],
            EventKind::HumanRequested { id, .. } => vec![KeyValue::str("belt.hitl.id", id.clone())],
            EventKind::HumanAnswered { id, by, .. } => {
                vec![KeyValue::str("belt.hitl.id", id.clone()), KeyValue::lit("belt.hitl.by", by.as_str())]
            }
            _ => return,
        };
        self.push_root_event(ts, kind.type_name(), attrs);
    }

    fn push_root_event(&mut self, ts: u64, name: &'static str, attributes: Vec<KeyValue>) {
        if let Some(root) = self.root.as_mut()
            && root.events.len() < MAX_ROOT_EVENTS
        {
            root.events.push(SpanEvent { time_unix_nano: ts, name, attributes });
        }
    }
}

fn tool_enrich(step: &StepId) -> Option<Enrich> {
    let id = step.as_str();
    let at = id.rfind("/tool/")?;
    let index = id[at + 6..].parse().ok()?;
    Some(Enrich::Tool { round: StepId::new(&id[..at]), index, step: step.clone() })
}

fn agent_attributes(a: &mut Attributes, agent: &str, tier: &str) {
    a.str("gen_ai.operation.name", "invoke_agent");
    a.str("gen_ai.agent.name", agent);
    a.str("gen_ai.agent.id", agent);
    a.str("belt.tier", tier);
}

/// The provider and requested model, once per span.
fn model_attributes(span: &mut Span, model: &str) {
    if model.is_empty() || span.attributes.model {
        return;
    }
    let (provider, name) = provider_and_model(model);
    span.attributes.str("gen_ai.provider.name", provider);
    span.attributes.str("gen_ai.request.model", name);
    span.attributes.model = true;
}

/// What an answered call reports: the answering model, tokens, cost, finish reason.
fn outcome_attributes(span: &mut Span, outcome: &StepOutcome, requested: &Arc<str>) {
    model_attributes(span, requested);
    let u = &outcome.usage;
    span.attributes.int("gen_ai.usage.input_tokens", u.input_tokens as i64);
    span.attributes.int("gen_ai.usage.output_tokens", u.output_tokens as i64);
    span.attributes.double("belt.cost_usd", outcome.cost_usd);
    if !outcome.model.is_empty() {
        span.attributes.str("gen_ai.response.model", provider_and_model(&outcome.model).1);
    }
    if u.cache_read_tokens > 0 {
        span.attributes
            .push(KeyValue::int("gen_ai.usage.cache_read.input_tokens", u.cache_read_tokens as i64));
    }
    if u.cache_write_tokens > 0 {
        span.attributes
            .push(KeyValue::int("gen_ai.usage.cache_creation.input_tokens", u.cache_write_tokens as i64));
    }
    if u.reasoning_tokens > 0 {
        span.attributes
            .push(KeyValue::int("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens as i64));
    }
    if let Some(reason) = &outcome.finish_reason {
        span.attributes.push(KeyValue {
            key: "gen_ai.response.finish_reasons",
            value: proto::Value::Strings(vec![Text::Shared(reason.clone())]),
        });
    }
    if outcome.cached {
        span.attributes.bool("belt.cached", true);
    }
    if outcome.unpriced {
        span.attributes.bool("belt.unpriced", true);
    }
    if outcome.limit_wait_ms > 0 {
        span.attributes.int("belt.limit_wait_ms", i64::from(outcome.limit_wait_ms));
    }
}

/// The span failed: its `error.type` (once: a span is failed once) and its status.
fn set_error(span: &mut Span, kind: &str, message: &str) {
    if !span.attributes.error {
        span.attributes.str("error.type", if kind.is_empty() { "_OTHER" } else { kind });
        span.attributes.error = true;
    }
    span.status = Some(proto::Status { message: cut(message, 1024).to_string(), code: proto::STATUS_ERROR });
}

pub(crate) use belt_core::words::cut;

/// Content of one message in the conventions' JSON shape (`gen_ai.input.messages` /
/// `gen_ai.output.messages`), cut to 16 KiB.
pub(crate) fn messages(role: &str, text: &str, finish_reason: Option<&str>) -> String {
    let mut message = serde_json::json!({
        "role": role,
        "parts": [{"type": "text", "content": cut(text, 16 * 1024)}],
    });
    if let Some(reason) = finish_reason {
        message["finish_reason"] = reason.into();
    }
    serde_json::Value::Array(vec![message]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_so_a_resumed_run_shares_its_trace() {
        assert_eq!(trace_id("run-1"), trace_id("run-1"));
        assert_ne!(trace_id("run-1"), trace_id("run-2"));
        let a = RunTracer::new("run-1", false);
        assert_eq!(a.root_span_id(1), RunTracer::new("run-1", true).root_span_id(1));
        assert_ne!(a.root_span_id(1), a.root_span_id(40));
    }

    #[test]
    fn steps_are_classified_by_id_tier_and_model() {
        let c = |id: &str, tier: Tier, model: &str| classify(&StepId::new(id), &tier, model);
        assert_eq!(c("decompose", Tier::Decomposer, "t/m"), Class::Plan);
        assert_eq!(c("worker/003", Tier::Worker, "t/m"), Class::Agent);
        assert_eq!(c("worker/003/round/01", Tier::Worker, "t/m"), Class::Round);
        assert_eq!(c("worker/003/round/01/tool/2", Tier::Worker, ""), Class::Tool);
        assert_eq!(c("fetch", Tier::Agent, ""), Class::Work);
        assert_eq!(agent_of(&StepId::new("synth/1/002/round/03/tool/1")), "synth/1/002");
        assert_eq!(
            tool_enrich(&StepId::new("w/1/round/02/tool/3")),
            Some(Enrich::Tool {
                round: StepId::new("w/1/round/02"),
                index: 3,
                step: StepId::new("w/1/round/02/tool/3")
            })
        );
    }

    #[test]
    fn provider_names_follow_the_conventions_well_known_values() {
        assert_eq!(provider_and_model("openai/gpt-4o"), ("openai", "gpt-4o"));
        assert_eq!(provider_and_model("xai/grok-4"), ("x_ai", "grok-4"));
        assert_eq!(provider_and_model("openrouter/meta/llama"), ("openrouter", "meta/llama"));
        assert_eq!(cut("héllo", 2), "h");
    }
}

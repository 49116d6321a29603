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

use std::sync::Arc;

use belt_core::event::{Event, EventKind};
use belt_core::{StepId, StepOutcome, Tier};
use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;

use crate::proto::{self, KeyValue, SpanEvent, SpanHead, SpanWriter};

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

/// The tracer's output: finished spans, encoded where they are built
/// ([`proto::SpanWriter`]), ready to be sent as they are.
#[derive(Debug, Default)]
pub struct Spans {
    /// Spans ready to send, back to back (each one `ScopeSpans.spans` field).
    pub bytes: Vec<u8>,
    /// How many spans `bytes` holds.
    pub count: usize,
    /// Spans that wait for the run's record (see [`Enrich`]), each in a buffer of its own;
    /// only while `hold` is set, and at most [`MAX_HELD`] (past it they are sent without).
    pub held: Vec<Held>,
    /// Hold the spans that want something from the run's record (the caller will read it
    /// and complete them with [`SpanWriter::reopen`]).
    pub hold: bool,
}

/// A span held back for the run's record: one encoded span (an `execute_tool` span
/// without its name, which is the tool's), and what it waits for.
#[derive(Debug)]
pub struct Held {
    pub bytes: Vec<u8>,
    pub enrich: Enrich,
}

/// Spans held at most while they wait for the run's record.
pub const MAX_HELD: usize = 50_000;

impl Spans {
    /// A span's writer: at the end of `bytes`, or in a held buffer of its own when it waits
    /// for the record. Says which.
    fn open(&mut self, head: &SpanHead, enrich: Option<Enrich>) -> (SpanWriter<'_>, bool) {
        match enrich {
            Some(enrich) if self.hold && self.held.len() < MAX_HELD => {
                let i = self.held.len();
                self.held.push(Held { bytes: Vec::with_capacity(1024), enrich });
                (SpanWriter::open(&mut self.held[i].bytes, head), true)
            }
            _ => {
                self.count += 1;
                (SpanWriter::open(&mut self.bytes, head), false)
            }
        }
    }
}

/// A step as the tracer's span builders see it.
#[derive(Debug, Clone, Copy)]
struct Step<'a> {
    id: &'a StepId,
    tier: &'a Tier,
    class: Class,
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
    /// `belt.run_id`, which every span has, encoded once.
    run_id_attribute: Vec<u8>,
    trace_id: [u8; 16],
    content: bool,
    segment: u64,
    root: Option<Root>,
    live: FxHashMap<StepId, Live>,
    agents: FxHashMap<Arc<str>, AgentAgg>,
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
            run_id_attribute: proto::attribute_bytes(&KeyValue::str("belt.run_id", run_id)),
            trace_id: trace_id(run_id),
            content,
            segment: 0,
            root: None,
            live: FxHashMap::default(),
            agents: FxHashMap::default(),
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
        // The bytes put together and hashed at once (on the stack when they fit): the
        // streaming hasher's set-up and buffering cost more than the hash. The same bytes
        // as ever, so the same ids.
        let len = self.run_id.len() + 8 + parts.iter().map(|p| 1 + p.len()).sum::<usize>() + 4;
        let (mut stack, mut heap) = ([0u8; 256], Vec::new());
        let bytes: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        let mut at = 0;
        let mut put = |b: &[u8]| {
            bytes[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(self.run_id.as_bytes());
        put(&self.segment.to_le_bytes());
        for p in parts {
            put(&[0]);
            put(p.as_bytes());
        }
        put(&n.to_le_bytes());
        let id = xxhash_rust::xxh3::xxh3_64(bytes);
        let id = id.to_be_bytes();
        if id == [0; 8] { [1; 8] } else { id }
    }

    fn root_id(&self) -> [u8; 8] {
        self.root.as_ref().map_or_else(|| self.root_span_id(self.segment), |r| r.id)
    }

    fn agent_span_id(&self, agent: &str) -> [u8; 8] {
        self.id(&["agent", agent])
    }

    /// Open a span under `parent` (None: a root), with the attribute every span has.
    fn open<'o>(
        &self,
        out: &'o mut Spans,
        (id, parent): ([u8; 8], Option<[u8; 8]>),
        kind: i32,
        (start, end): (u64, u64),
        enrich: Option<Enrich>,
    ) -> (SpanWriter<'o>, bool) {
        let head = SpanHead {
            trace_id: self.trace_id,
            span_id: id,
            parent_span_id: parent,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
        };
        let (mut w, held) = out.open(&head, enrich);
        w.raw(&self.run_id_attribute);
        (w, held)
    }

    /// [`RunTracer::open`] for the spans that never wait for the record.
    fn internal<'o>(
        &self,
        out: &'o mut Spans,
        ids: ([u8; 8], Option<[u8; 8]>),
        times: (u64, u64),
    ) -> SpanWriter<'o> {
        self.open(out, ids, proto::KIND_INTERNAL, times, None).0
    }

    /// Feed the next event; finished spans are appended to `out`. Returns true when the
    /// event ended the run's segment (`run_finished`).
    pub fn on_event(&mut self, e: &Event, out: &mut Spans) -> bool {
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
    pub fn finish(&mut self, out: &mut Spans) {
        if self.root.is_none() && self.live.is_empty() && self.agents.is_empty() {
            return;
        }
        let end = self.last_ts;
        let live: Vec<(StepId, Live)> = self.live.drain().collect();
        for (step, live) in live {
            let ids = (self.id(&["open", step.as_str()]), Some(self.root_id()));
            let mut w = self.internal(out, ids, (live.start, end));
            w.name("invoke_agent", Some(step.as_str()));
            w.str("belt.step", step.as_str());
            set_error(&mut w, "interrupted", "the run stopped while this step was in flight");
            w.finish();
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

    fn end_segment(&mut self, ts: u64, attrs: Vec<KeyValue>, error: Option<&str>, out: &mut Spans) {
        let agents: Vec<(Arc<str>, AgentAgg)> = self.agents.drain().collect();
        for (agent, agg) in agents {
            self.agent_span(out, &agent, agg);
        }
        let Some(root) = self.root.take() else { return };
        let mut w = self.internal(out, (root.id, self.caller), (root.start, ts));
        w.name("invoke_workflow", Some(&root.pattern));
        w.extend(&root.attributes);
        w.extend(&attrs);
        root.events.iter().for_each(|e| w.event(e));
        if self.segment > 1 {
            // A resumed segment: the same trace, and a link to where the run began.
            w.bool("belt.resumed", true);
            w.link(&proto::Link {
                trace_id: self.trace_id,
                span_id: self.root_span_id(1),
                attributes: vec![KeyValue::lit("belt.link", "first_segment")],
            });
        }
        match error {
            Some(message) => set_error(&mut w, "run_failed", message),
            None => w.status(proto::STATUS_OK, ""),
        }
        w.finish();
    }

    fn agent_span(&self, out: &mut Spans, agent: &Arc<str>, agg: AgentAgg) {
        let ids = (self.agent_span_id(agent), Some(self.root_id()));
        let mut w = self.internal(out, ids, (agg.start, agg.end));
        w.name("invoke_agent", Some(agent));
        let tier = agg.tier.as_ref().map_or("agent", Tier::as_str);
        agent_attributes(&mut w, agent, tier);
        if let Some(model) = &agg.model {
            model_attributes(&mut w, model);
        }
        w.int("gen_ai.usage.input_tokens", agg.input as i64);
        w.int("gen_ai.usage.output_tokens", agg.output as i64);
        w.double("belt.cost_usd", agg.cost);
        w.int("belt.rounds", i64::from(agg.rounds));
        if !agg.ran {
            w.bool("belt.replayed", true);
        }
        if let Some((kind, message)) = &agg.failed {
            set_error(&mut w, kind, message);
        }
        w.finish();
    }

    fn plan_ready(
        &mut self,
        ts: u64,
        subtasks: usize,
        shape: &[usize],
        source: &belt_core::PlanSource,
        out: &mut Spans,
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
        let mut w = self.internal(out, (self.id(&["plan"]), Some(self.root_id())), (start, ts));
        w.name("plan", None);
        w.str("gen_ai.operation.name", "plan");
        w.extend(&attrs);
        w.finish();
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
        out: &mut Spans,
    ) {
        let Some(live) = self.live.get_mut(step) else { return };
        let (model, start) = (live.model.clone(), live.attempt_start);
        live.attempt = attempt + 1;
        live.attempt_start = ts.saturating_add(delay_ms.saturating_mul(1_000_000));
        let class = classify(step, tier, &model);
        if matches!(class, Class::Tool | Class::Work) {
            return;
        }
        let s = Step { id: step, tier, class };
        let (mut w, _) = self.chat_span(out, s, &model, attempt, (start, ts), None);
        set_error(&mut w, kind, error);
        w.int("belt.retry_delay_ms", delay_ms as i64);
        w.finish();
    }

    /// One provider attempt (`chat`), under its agent or plan; attempt 0 is a replayed
    /// round, which made no call (an internal span, not a client's). With it, where the
    /// attributes it shares with the agent span around it are (`belt.run_id` through the
    /// model's: see [`RunTracer::agent_of_one_call`]).
    fn chat_span<'o>(
        &self,
        out: &'o mut Spans,
        s: Step<'_>,
        model: &Arc<str>,
        attempt: u32,
        times: (u64, u64),
        enrich: Option<Enrich>,
    ) -> (SpanWriter<'o>, std::ops::Range<usize>) {
        let parent = match s.class {
            Class::Round => self.agent_span_id(agent_of(s.id)),
            Class::Plan => self.id(&["plan"]),
            _ => self.agent_span_id(s.id.as_str()),
        };
        let id = self.id_n(&["chat", s.id.as_str()], attempt);
        let kind = if attempt == 0 { proto::KIND_INTERNAL } else { proto::KIND_CLIENT };
        let (mut w, _) = self.open(out, (id, Some(parent)), kind, times, enrich);
        w.str("belt.step", s.id.as_str());
        w.str("belt.tier", s.tier.as_str());
        model_attributes(&mut w, model);
        let shared = w.after_head()..w.at();
        w.name("chat", Some(provider_and_model(model).1));
        w.str("gen_ai.operation.name", "chat");
        w.int("belt.attempt", i64::from(attempt));
        (w, shared)
    }

    /// The commonest step, an agent that is one call, with contents off: its span says
    /// what its `chat` span says (run, step, tier, model, outcome), so it copies those
    /// bytes from it rather than encoding them again; it adds only its own.
    fn agent_of_one_call(&self, out: &mut Spans, s: Step<'_>, live: &Live, outcome: &StepOutcome, ts: u64) {
        let times = (live.attempt_start, ts);
        let (mut w, shared) = self.chat_span(out, s, &live.model, live.attempt, times, None);
        let outcome_from = w.at();
        outcome_attributes(&mut w, outcome);
        let outcome_range = outcome_from..w.at();
        w.status(proto::STATUS_OK, "");
        w.finish();
        let head = SpanHead {
            trace_id: self.trace_id,
            span_id: self.agent_span_id(s.id.as_str()),
            parent_span_id: Some(self.root_id()),
            kind: proto::KIND_INTERNAL,
            start_time_unix_nano: live.start,
            end_time_unix_nano: ts,
        };
        let (mut w, _) = out.open(&head, None);
        w.copy(shared);
        w.copy(outcome_range);
        w.name("invoke_agent", Some(s.id.as_str()));
        w.str("gen_ai.operation.name", "invoke_agent");
        w.str("gen_ai.agent.name", s.id.as_str());
        w.str("gen_ai.agent.id", s.id.as_str());
        w.int("belt.attempts", i64::from(outcome.attempts));
        w.status(proto::STATUS_OK, "");
        w.finish();
    }

    fn completed(
        &mut self,
        step: &StepId,
        tier: &Tier,
        outcome: &StepOutcome,
        recorded: Option<f64>,
        ts: u64,
        out: &mut Spans,
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
        let s = Step { id: step, tier, class };
        if outcome.replayed {
            self.replayed(out, s, outcome, recorded, ts);
            return;
        }
        if class == Class::Agent && !self.content {
            self.agent_of_one_call(out, s, &live, outcome, ts);
            return;
        }
        let call = matches!(class, Class::Plan | Class::Agent | Class::Round);
        if call {
            let enrich = self.content.then(|| Enrich::Output { step: step.clone() });
            let times = (live.attempt_start, ts);
            let (mut w, _) = self.chat_span(out, s, &live.model, live.attempt, times, enrich);
            outcome_attributes(&mut w, outcome);
            w.status(proto::STATUS_OK, "");
            w.finish();
        }
        if class == Class::Round {
            return;
        }
        let mut w = self.outer_span(out, s, &live, ts, true);
        if call {
            model_attributes(&mut w, &live.model);
            outcome_attributes(&mut w, outcome);
        }
        w.int("belt.attempts", i64::from(outcome.attempts));
        w.status(proto::STATUS_OK, "");
        w.finish();
    }

    /// The span around a step's attempts: `plan`, `invoke_agent`, `execute_tool` or work.
    /// A tool's span waits for its name from the record; with `output` (and content on),
    /// an agent's waits for its output.
    fn outer_span<'o>(
        &self,
        out: &'o mut Spans,
        s: Step<'_>,
        live: &Live,
        ts: u64,
        output: bool,
    ) -> SpanWriter<'o> {
        let (step, times, root) = (s.id, (live.start, ts), Some(self.root_id()));
        let mut w = match s.class {
            Class::Plan => {
                let mut w = self.internal(out, (self.id(&["plan"]), root), times);
                w.name("plan", None);
                w.str("gen_ai.operation.name", "plan");
                w
            }
            Class::Tool => {
                let agent = agent_of(step);
                let ids = (self.id(&["tool", step.as_str()]), Some(self.agent_span_id(agent)));
                let (mut w, held) = self.open(out, ids, proto::KIND_INTERNAL, times, tool_enrich(step));
                if !held {
                    // Held: named when the record says which tool it called.
                    w.name("execute_tool", None);
                }
                w.str("gen_ai.operation.name", "execute_tool");
                w.str("gen_ai.tool.type", "function");
                w.str("gen_ai.agent.name", agent);
                w
            }
            Class::Work => {
                let mut w = self.internal(out, (self.id(&["work", step.as_str()]), root), times);
                w.name("step", Some(step.as_str()));
                w
            }
            Class::Agent | Class::Round => {
                let enrich = (output && self.content).then(|| Enrich::Output { step: step.clone() });
                let ids = (self.agent_span_id(step.as_str()), root);
                let (mut w, _) = self.open(out, ids, proto::KIND_INTERNAL, times, enrich);
                w.name("invoke_agent", Some(step.as_str()));
                agent_attributes(&mut w, step.as_str(), s.tier.as_str());
                w
            }
        };
        w.str("belt.step", step.as_str());
        if !matches!(s.class, Class::Agent | Class::Round) {
            w.str("belt.tier", s.tier.as_str());
        }
        w
    }

    /// A step whose output came from the run's record: one span, marked, no call under it.
    fn replayed(&self, out: &mut Spans, s: Step<'_>, outcome: &StepOutcome, recorded: Option<f64>, ts: u64) {
        let live = Live { start: ts, attempt_start: ts, attempt: 0, model: outcome.model.clone() };
        let mut w = match s.class {
            Class::Round => self.chat_span(out, s, &outcome.model, 0, (ts, ts), None).0,
            _ => self.outer_span(out, s, &live, ts, false),
        };
        w.bool("belt.replayed", true);
        if let Some(cost) = recorded {
            w.double("belt.recorded_cost_usd", cost);
        }
        if !outcome.model.is_empty() {
            model_attributes(&mut w, &outcome.model);
        }
        w.finish();
    }

    fn failed(
        &mut self,
        step: &StepId,
        tier: &Tier,
        (error, kind): (&str, &str),
        attempts: u32,
        ts: u64,
        out: &mut Spans,
    ) {
        let live = self.live.remove(step).unwrap_or(Live {
            start: ts,
            attempt_start: ts,
            attempt: attempts.max(1),
            model: Arc::from(""),
        });
        let class = classify(step, tier, &live.model);
        self.aggregate(step, tier, class, &StepOutcome::default(), (live.start, ts), Some((kind, error)));
        let s = Step { id: step, tier, class };
        let call = matches!(class, Class::Plan | Class::Agent | Class::Round);
        if call && attempts > 0 {
            let times = (live.attempt_start, ts);
            let (mut w, _) = self.chat_span(out, s, &live.model, live.attempt, times, None);
            set_error(&mut w, kind, error);
            w.finish();
        }
        if class == Class::Round {
            return;
        }
        let mut w = self.outer_span(out, s, &live, ts, false);
        if !live.model.is_empty() {
            model_attributes(&mut w, &live.model);
        }
        w.int("belt.attempts", i64::from(attempts));
        set_error(&mut w, kind, error);
        w.finish();
    }

    fn skipped(&mut self, step: &StepId, tier: &Tier, reason: &str, ts: u64, out: &mut Spans) {
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
        let mut w = self.outer_span(out, Step { id: step, tier, class }, &live, ts, false);
        w.bool("belt.skipped", true);
        w.str("belt.skip_reason", reason);
        w.finish();
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

fn agent_attributes(w: &mut SpanWriter<'_>, agent: &str, tier: &str) {
    w.str("gen_ai.operation.name", "invoke_agent");
    w.str("gen_ai.agent.name", agent);
    w.str("gen_ai.agent.id", agent);
    w.str("belt.tier", tier);
}

/// The provider and requested model, once per span.
fn model_attributes(w: &mut SpanWriter<'_>, model: &str) {
    if model.is_empty() || w.model {
        return;
    }
    let (provider, name) = provider_and_model(model);
    w.str("gen_ai.provider.name", provider);
    w.str("gen_ai.request.model", name);
    w.model = true;
}

/// What an answered call reports: the answering model, tokens, cost, finish reason.
fn outcome_attributes(w: &mut SpanWriter<'_>, outcome: &StepOutcome) {
    let u = &outcome.usage;
    w.int("gen_ai.usage.input_tokens", u.input_tokens as i64);
    w.int("gen_ai.usage.output_tokens", u.output_tokens as i64);
    w.double("belt.cost_usd", outcome.cost_usd);
    if !outcome.model.is_empty() {
        w.str("gen_ai.response.model", provider_and_model(&outcome.model).1);
    }
    if u.cache_read_tokens > 0 {
        w.int("gen_ai.usage.cache_read.input_tokens", u.cache_read_tokens as i64);
    }
    if u.cache_write_tokens > 0 {
        w.int("gen_ai.usage.cache_creation.input_tokens", u.cache_write_tokens as i64);
    }
    if u.reasoning_tokens > 0 {
        w.int("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens as i64);
    }
    if let Some(reason) = &outcome.finish_reason {
        w.strs("gen_ai.response.finish_reasons", &[reason]);
    }
    if outcome.cached {
        w.bool("belt.cached", true);
    }
    if outcome.unpriced {
        w.bool("belt.unpriced", true);
    }
    if outcome.limit_wait_ms > 0 {
        w.int("belt.limit_wait_ms", i64::from(outcome.limit_wait_ms));
    }
}

/// The span failed: its `error.type` (once: a span is failed once) and its status.
fn set_error(w: &mut SpanWriter<'_>, kind: &str, message: &str) {
    if !w.error {
        w.str("error.type", if kind.is_empty() { "_OTHER" } else { kind });
        w.error = true;
    }
    w.status(proto::STATUS_ERROR, cut(message, 1024));
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
    fn span_ids_are_the_hash_of_what_names_them_however_long() {
        let t = RunTracer::new("run-1", false);
        let reference = |parts: &[&str], n: u32| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(b"run-1");
            h.update(&0u64.to_le_bytes());
            for p in parts {
                h.update(&[0]);
                h.update(p.as_bytes());
            }
            h.update(&n.to_le_bytes());
            h.digest().to_be_bytes()
        };
        let long = "w/".repeat(200);
        for parts in [&["chat", "worker/001"][..], &["chat", long.as_str()][..]] {
            assert_eq!(t.id_n(parts, 2), reference(parts, 2));
        }
        assert_ne!(t.id_n(&["chat", "worker/001"], 1), t.id_n(&["chat", "worker/001"], 2));
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

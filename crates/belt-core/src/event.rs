//! Events: what a run reports while it works.
//!
//! One enum, [`EventKind`], wrapped in [`Event`] with a per-run sequence number, a
//! timestamp, the run id and the StepId where it concerns one step. Its JSON (tagged by
//! `type`) is the single format for every consumer: the CLI progress display, the JSONL
//! log, SSE (whose `event:` is the `type`), webhooks and MCP progress. Orchestrators add
//! their own with [`crate::Ctx::emit`] (`type` `custom`, with a `name` and JSON `data`).
//!
//! Delivery: [`EventBus::emit`] assigns the sequence number and hands the event to every
//! subscriber's unbounded channel under one lock, so all subscribers see the same strictly
//! increasing order and none can lose an event. Emitting never waits on a consumer and
//! never does I/O: slow consumers (a file writer, a terminal) drain their channel at their
//! own pace on their own task.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::reply::StepOutcome;
use crate::step::{StepId, Tier};

/// One event of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Per run, strictly increasing from 1.
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub run_id: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepId>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    RunStarted {
        pattern: String,
        task: String,
        /// Number of workers asked for, where the pattern has that notion.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agents: Option<usize>,
        concurrency: usize,
        simulated: bool,
        /// The caller's W3C trace context ([`crate::RunOptions::traceparent`]): a trace
        /// exporter puts the run under that span.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    PlanReady {
        subtasks: usize,
        /// Steps per tier, from workers up: e.g. `[1000, 200, 40, 8, 1]`.
        shape: Vec<usize>,
        source: PlanSource,
    },
    PlanFallback {
        reason: String,
        /// How many subtasks came from templates instead of the model.
        templated: usize,
    },
    // Smarter decomposition (issue 16): the strategy, the quality check, the repair.
    /// The decomposition strategy the plan follows (`research`, `software`, `analysis`,
    /// `planning`); `auto` when the decomposer chose it from the task (`--strategy auto`).
    StrategyChosen {
        strategy: String,
        auto: bool,
    },
    /// The decomposer's plan failed the quality check (duplicate or empty subtasks). After
    /// attempt 1 the decomposer is asked once more, with the problems stated; after
    /// attempt 2 the bad subtasks are dropped and templates fill in (`plan_fallback`).
    PlanRejected {
        reason: String,
        attempt: u32,
    },
    /// Dependencies of the decomposer's plan that could not stand were removed: on an
    /// unknown or dropped subtask, on itself, or closing a cycle. The run goes on.
    PlanRepaired {
        reason: String,
        /// `[subtask, dependency]` pairs removed.
        removed: Vec<(String, String)>,
    },
    StepStarted {
        tier: Tier,
        model: Arc<str>,
    },
    StepRetrying {
        tier: Tier,
        /// The attempt that failed (1 = first).
        attempt: u32,
        error: String,
        error_kind: String,
        delay_ms: u64,
        /// The model whose attempt failed (empty for a step that calls no model). Named
        /// here so that a consumer (metrics of 429s per model) needs no memory of each
        /// step's start; absent from events recorded before it existed.
        #[serde(default)]
        model: Arc<str>,
    },
    StepCompleted {
        tier: Tier,
        /// Model, tokens, cost, time, attempts; `cached` when the output came from the
        /// response cache. For a step `replayed` from the run's record its tokens and cost
        /// are 0 — nothing was paid again — so the costs of a run's events add up to the
        /// run's cost across resumes; what the step cost when it ran is `recorded_cost_usd`.
        #[serde(flatten)]
        outcome: StepOutcome,
        /// For a replayed step: its cost when it ran, in an earlier segment of the run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recorded_cost_usd: Option<f64>,
    },
    /// A provider reported more tokens than the request allowed: more output than its
    /// `max_tokens`, or more input than the request's upper bound. The call is booked at
    /// `booked` (the reported figures cut to those limits); `stops_run` when the run has a
    /// budget and the report is past any honest miscount (see [`crate::budget`]).
    UsageOverreported {
        tier: Tier,
        model: Arc<str>,
        // Boxed: a rare event, and every event is as large as the largest kind.
        reported: Box<crate::usage::Usage>,
        booked: Box<crate::usage::Usage>,
        stops_run: bool,
    },
    /// The model stopped at the step's token cap (`finish_reason` `length`): its output is
    /// cut off. The step still completed; the result and the report mark it.
    StepTruncated {
        tier: Tier,
        model: Arc<str>,
        /// The cap it hit.
        max_tokens: u32,
    },
    StepFailed {
        tier: Tier,
        error: String,
        error_kind: String,
        attempts: u32,
        /// The model the step asked for (a fallback chain's first; `step_fallback` events
        /// say which took over), empty for a step that calls no model; absent from events
        /// recorded before it existed.
        #[serde(default)]
        model: Arc<str>,
    },
    StepSkipped {
        tier: Tier,
        reason: String,
    },
    /// Text a step's model has written since the last `step_delta` (at most about ten a
    /// second per step; only when the run asked for them).
    StepDelta {
        text: String,
    },
    /// The step's model kept failing (or its breaker is open): the next model of its
    /// fallback chain takes over.
    StepFallback {
        tier: Tier,
        from: Arc<str>,
        to: Arc<str>,
        error: String,
    },
    /// A model failed too many times in a row: calls to it fail at once for a while.
    BreakerOpened {
        model: Arc<str>,
        failures: u32,
    },
    /// A model answered again after its breaker opened.
    BreakerClosed {
        model: Arc<str>,
    },
    TierStarted {
        tier: Tier,
        /// 0 for workers, 1.. for synthesizer levels.
        level: usize,
        count: usize,
    },
    TierCompleted {
        tier: Tier,
        level: usize,
        succeeded: usize,
        failed: usize,
        /// Not run: inputs missing, or the run was stopping.
        #[serde(default)]
        skipped: usize,
    },
    BudgetWarning {
        /// Which limit: `cost_usd`, `tokens` or `calls`.
        limit: String,
        used: f64,
        max: f64,
    },
    BudgetExhausted {
        limit: String,
        used: f64,
        max: f64,
        /// What the refused call would have needed at most.
        needed: f64,
    },
    DocumentWritten {
        format: String,
        path: String,
    },
    /// The run fell to a simpler form (`degrade`), or a tier switched models under load
    /// (`fast_model`); the result's `degradations` lists them too.
    Degraded {
        // Boxed: a rare event, and every event is as large as the largest kind.
        #[serde(flatten)]
        degradation: Box<crate::result::Degradation>,
    },
    RunFinished {
        status: crate::result::RunStatus,
        stop_reason: String,
        cost_usd: f64,
        input_tokens: u64,
        output_tokens: u64,
        calls: u64,
        duration_ms: u64,
    },

    // What orchestrators and people say (issue 16): events of a pattern's own, and the
    // questions for people opening and closing, so that subscribers need not poll.
    /// An event of a pattern's or a custom orchestrator's own ([`crate::Ctx::emit`]): its
    /// `name` (e.g. `debug`, `agent_progress`, `review_required`) and any JSON `data`. The
    /// `type` stays `custom`, so a name can never pass for one of the engine's events.
    Custom {
        name: String,
        #[serde(default)]
        data: serde_json::Value,
    },
    /// A question for a person opened (its step is `hitl/{name}`): it waits for an answer
    /// under `id` (over HTTP at `POST /v1/runs/{run}/approvals/{id}`) for `timeout_ms`, then
    /// takes `default`.
    HumanRequested {
        id: String,
        // Boxed: a rare event (see the size test below).
        question: Box<crate::human::Question>,
        prompt: String,
        timeout_ms: u64,
        default: Box<crate::human::Answer>,
    },
    /// The question `id` closed: answered by a person, or its default taken (`by` says which).
    HumanAnswered {
        id: String,
        answer: Box<crate::human::Answer>,
        by: crate::human::AnsweredBy,
    },
}

/// Where a plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlanSource {
    /// The decomposer model wrote it.
    Model,
    /// Given by the caller (`--plan FILE`, the API).
    Given,
    /// Template subtasks, because the model's reply was unusable.
    Template,
    /// Written by a custom orchestrator's `decompose`.
    Orchestrator,
}

/// A W3C trace context (`traceparent`: `00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>`), the one format every tracing system propagates: how a caller's trace reaches
/// a run ([`crate::RunOptions::traceparent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parse a `traceparent` value; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<TraceParent, String> {
        let bad = |why: &str| {
            let shown: String = text.chars().take(80).collect();
            format!(
                "`{shown}` is not a W3C traceparent ({why}); expected 00-<32 hex digits>-<16 hex digits>-<2 hex digits>, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )
        };
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [version, trace, span, flags, ..] = parts[..] else { return Err(bad("not four parts")) };
        if version.len() != 2 || version == "ff" || u8::from_str_radix(version, 16).is_err() {
            return Err(bad("a bad version"));
        }
        if version == "00" && parts.len() != 4 {
            return Err(bad("version 00 has four parts"));
        }
        let hex = |s: &str, out: &mut [u8]| -> bool {
            s.len() == out.len() * 2
                && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && out
                    .iter_mut()
                    .enumerate()
                    .all(|(i, o)| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map(|v| *o = v).is_ok())
        };
        let (mut trace_id, mut span_id, mut flag) = ([0u8; 16], [0u8; 8], [0u8; 1]);
        if !hex(trace, &mut trace_id) || trace_id == [0; 16] {
            return Err(bad("the trace id is not 32 lowercase hex digits, not all zero"));
        }
        if !hex(span, &mut span_id) || span_id == [0; 8] {
            return Err(bad("the span id is not 16 lowercase hex digits, not all zero"));
        }
        if !hex(flags, &mut flag) {
            return Err(bad("the flags are not 2 hex digits"));
        }
        Ok(TraceParent { trace_id, span_id, flags: flag[0] })
    }
}

impl EventKind {
    /// Every `type` tag (what webhooks filter on), in the order of the enum.
    pub const TYPES: &'static [&'static str] = &[
        "run_started",
        "plan_ready",
        "plan_fallback",
        "strategy_chosen",
        "plan_rejected",
        "plan_repaired",
        "step_started",
        "step_retrying",
        "step_completed",
        "usage_overreported",
        "step_truncated",
        "step_failed",
        "step_skipped",
        "step_delta",
        "step_fallback",
        "breaker_opened",
        "breaker_closed",
        "tier_started",
        "tier_completed",
        "budget_warning",
        "budget_exhausted",
        "document_written",
        "degraded",
        "run_finished",
        "custom",
        "human_requested",
        "human_answered",
    ];

    /// The `type` tag as it appears in JSON.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "run_started",
            EventKind::PlanReady { .. } => "plan_ready",
            EventKind::PlanFallback { .. } => "plan_fallback",
            EventKind::StrategyChosen { .. } => "strategy_chosen",
            EventKind::PlanRejected { .. } => "plan_rejected",
            EventKind::PlanRepaired { .. } => "plan_repaired",
            EventKind::StepStarted { .. } => "step_started",
            EventKind::StepRetrying { .. } => "step_retrying",
            EventKind::StepCompleted { .. } => "step_completed",
            EventKind::StepTruncated { .. } => "step_truncated",
            EventKind::StepFailed { .. } => "step_failed",
            EventKind::StepSkipped { .. } => "step_skipped",
            EventKind::StepFallback { .. } => "step_fallback",
            EventKind::StepDelta { .. } => "step_delta",
            EventKind::BreakerOpened { .. } => "breaker_opened",
            EventKind::BreakerClosed { .. } => "breaker_closed",
            EventKind::TierStarted { .. } => "tier_started",
            EventKind::TierCompleted { .. } => "tier_completed",
            EventKind::BudgetWarning { .. } => "budget_warning",
            EventKind::UsageOverreported { .. } => "usage_overreported",
            EventKind::BudgetExhausted { .. } => "budget_exhausted",
            EventKind::DocumentWritten { .. } => "document_written",
            EventKind::Degraded { .. } => "degraded",
            EventKind::RunFinished { .. } => "run_finished",
            EventKind::Custom { .. } => "custom",
            EventKind::HumanRequested { .. } => "human_requested",
            EventKind::HumanAnswered { .. } => "human_answered",
        }
    }
}

/// How long [`EventStream::recv_batch`] lets events accumulate between batches.
pub const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// A subscriber's end: events in sequence order. Ends when the run is over.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Arc<Event>>,
    closed: CancellationToken,
    pause_next: bool,
}

impl EventStream {
    /// The next event; `None` once the run is over and every event was received.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        self.rx.try_recv().ok()
    }

    /// Append the waiting events (at least one, at most `limit`) to `buf` and return how
    /// many; 0 once the run is over. After a batch that took every waiting event it pauses
    /// [`BATCH_PAUSE`] (cut short when the run ends), so a busy run wakes this consumer at
    /// most ~50 times a second instead of once per event — the difference between a few
    /// microseconds of engine time per step and a cross-thread wake-up per event. Use it in
    /// consumers that write files, sockets or terminals.
    ///
    /// A full batch (`limit` events) is followed by the next at once: pausing after it too
    /// capped a consumer at `limit` events per pause (204,800 a second for 4,096), below
    /// what a large fan-out emits (~250,000 a second on this project's 2-core VM), and the
    /// events it had not taken yet piled up in memory — 1,000,000 workers on SQLite held a
    /// third of a GiB of them at the end of the worker tier.
    pub async fn recv_batch(&mut self, buf: &mut Vec<Arc<Event>>, limit: usize) -> usize {
        if self.pause_next {
            tokio::select! {
                _ = tokio::time::sleep(BATCH_PAUSE) => {}
                _ = self.closed.cancelled() => {}
            }
        }
        let limit = limit.max(1);
        let n = self.rx.recv_many(buf, limit).await;
        self.pause_next = n > 0 && n < limit;
        n
    }
}

/// Fans a run's events out to its subscribers in one global order.
pub struct EventBus {
    run_id: Arc<str>,
    inner: Mutex<BusInner>,
    closed: CancellationToken,
}

struct BusInner {
    seq: u64,
    subscribers: Vec<mpsc::UnboundedSender<Arc<Event>>>,
}

impl EventBus {
    /// A bus whose first event will carry `last_seq + 1` (resume continues a sequence).
    pub fn new(run_id: &str, last_seq: u64) -> Self {
        EventBus {
            run_id: Arc::from(run_id),
            inner: Mutex::new(BusInner { seq: last_seq, subscribers: Vec::new() }),
            closed: CancellationToken::new(),
        }
    }

    /// A new subscriber; it sees every event emitted from now on.
    pub fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        if !self.closed.is_cancelled() {
            inner.subscribers.push(tx);
        }
        EventStream { rx, closed: self.closed.clone(), pause_next: false }
    }

    /// Stamp and deliver an event; returns its sequence number.
    pub fn emit(&self, step: Option<&StepId>, kind: EventKind) -> u64 {
        let ts = crate::clock::now_utc();
        let mut inner = self.lock();
        inner.seq += 1;
        let event =
            Arc::new(Event { seq: inner.seq, ts, run_id: self.run_id.clone(), step: step.cloned(), kind });
        let mut gone = false;
        for tx in &inner.subscribers {
            gone |= tx.send(event.clone()).is_err();
        }
        if gone {
            inner.subscribers.retain(|tx| !tx.is_closed());
        }
        event.seq
    }

    /// Drop every subscriber's sender, so their streams end once drained.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.subscribers.clear();
        self.closed.cancel();
    }

    pub fn last_seq(&self) -> u64 {
        self.lock().seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusInner> {
        // A panic while holding this lock cannot leave BusInner half-updated in a way that
        // matters (a counter and a list), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod traceparent_tests {
    use super::TraceParent;

    #[test]
    fn a_traceparent_is_read_or_refused_with_the_format() {
        let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.span_id[7], 0xb7);
        assert_eq!(t.flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
        ] {
            let err = TraceParent::parse(bad).unwrap_err();
            assert!(err.contains("00-<32 hex digits>"), "{bad}: {err}");
        }
        // A later version may add parts after the flags.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event is as large as the largest kind, and a run keeps two per step: no kind
    /// may be larger than the per-step `step_completed` (box the rare ones' payloads).
    #[test]
    fn no_kind_is_larger_than_step_completed() {
        let step_completed = std::mem::size_of::<Tier>()
            + std::mem::size_of::<crate::reply::StepOutcome>()
            + std::mem::size_of::<Option<f64>>();
        assert!(
            std::mem::size_of::<EventKind>() <= step_completed + 8,
            "EventKind is {} bytes, step_completed's fields {step_completed}",
            std::mem::size_of::<EventKind>()
        );
    }

    /// A consumer that falls behind catches up without pausing: batches follow each other
    /// at once while they come back full, and the pause returns once it has taken all.
    #[tokio::test(start_paused = true)]
    async fn a_full_batch_is_followed_by_the_next_without_a_pause() {
        let bus = EventBus::new("r", 0);
        let mut rx = bus.subscribe();
        for _ in 0..10_000 {
            bus.emit(None, EventKind::Custom { name: "tick".into(), data: serde_json::Value::Null });
        }
        let start = tokio::time::Instant::now();
        let mut batch = Vec::new();
        let mut got = [0usize; 3];
        for n in &mut got {
            batch.clear();
            *n = rx.recv_batch(&mut batch, 4096).await;
        }
        assert_eq!(got, [4096, 4096, 1808], "every waiting event, in full batches first");
        assert_eq!(start.elapsed(), Duration::ZERO, "no pause while the batches came back full");
        assert_eq!(batch.last().map(|e| e.seq), Some(10_000));
        // The last batch drained the channel: the next waits out the pause.
        bus.emit(None, EventKind::Custom { name: "tick".into(), data: serde_json::Value::Null });
        batch.clear();
        assert_eq!(rx.recv_batch(&mut batch, 4096).await, 1);
        assert!(start.elapsed() >= BATCH_PAUSE, "paused {:?}", start.elapsed());
    }

    #[test]
    fn events_serialize_with_type_seq_and_step() {
        let bus = EventBus::new("run-1", 0);
        let mut rx = bus.subscribe();
        bus.emit(None, EventKind::PlanFallback { reason: "bad json".into(), templated: 3 });
        bus.emit(
            Some(&StepId::new("worker/001")),
            EventKind::StepStarted { tier: Tier::Worker, model: "simulated/default".into() },
        );
        let a = rx.try_recv().unwrap();
        let b = rx.try_recv().unwrap();
        let ja: serde_json::Value = serde_json::to_value(&*a).unwrap();
        let jb: serde_json::Value = serde_json::to_value(&*b).unwrap();
        assert_eq!(ja["type"], "plan_fallback");
        assert_eq!(ja["seq"], 1);
        assert!(ja.get("step").is_none());
        assert_eq!(jb["type"], "step_started");
        assert_eq!(jb["seq"], 2);
        assert_eq!(jb["step"], "worker/001");
        assert_eq!(jb["run_id"], "run-1");
        assert_eq!(jb["tier"], "worker");
        // And back.
        let back: Event = serde_json::from_value(jb).unwrap();
        assert_eq!(&back, &*b);
    }

    #[test]
    fn custom_and_human_events_serialize_with_their_type_and_read_back() {
        use crate::human::{Answer, AnsweredBy, Question};
        let kinds = [
            EventKind::Custom {
                name: "agent_progress".into(),
                data: serde_json::json!({"done": 2, "of": 5}),
            },
            EventKind::HumanRequested {
                id: "r:hitl/plan".into(),
                question: Box::new(Question::Select { options: vec!["a".into(), "b".into()] }),
                prompt: "Which?".into(),
                timeout_ms: 60_000,
                default: Box::new(Answer::Select(1)),
            },
            EventKind::HumanAnswered {
                id: "r:hitl/plan".into(),
                answer: Box::new(Answer::Approve(true)),
                by: AnsweredBy::Timeout,
            },
        ];
        for kind in kinds {
            let json = serde_json::to_value(&kind).unwrap();
            assert_eq!(json["type"], kind.type_name());
            assert!(EventKind::TYPES.contains(&kind.type_name()), "{} is listed", kind.type_name());
            assert_eq!(serde_json::from_value::<EventKind>(json).unwrap(), kind);
        }
        let custom =
            serde_json::to_value(EventKind::Custom { name: "debug".into(), data: "x".into() }).unwrap();
        assert_eq!(custom, serde_json::json!({"type": "custom", "name": "debug", "data": "x"}));
        // A custom event without data reads as null data.
        let bare: EventKind = serde_json::from_str(r#"{"type": "custom", "name": "tick"}"#).unwrap();
        assert_eq!(bare, EventKind::Custom { name: "tick".into(), data: serde_json::Value::Null });
    }

    #[test]
    fn sequence_continues_after_resume_and_is_shared_by_subscribers() {
        let bus = EventBus::new("r", 41);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        bus.emit(None, EventKind::PlanFallback { reason: String::new(), templated: 0 });
        assert_eq!(a.try_recv().unwrap().seq, 42);
        assert_eq!(b.try_recv().unwrap().seq, 42);
        drop(a);
        bus.emit(None, EventKind::PlanFallback { reason: String::new(), templated: 0 });
        assert_eq!(b.try_recv().unwrap().seq, 43);
        bus.close();
        assert!(b.try_recv().is_none());
    }
}

//! Starting and driving a run: [`run`], [`RunOptions`], [`RunHandle`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::budget::{Amount, Budget, Ledger};
use crate::ctx::{Ctx, Shared, StepError, Stop};
use crate::event::{EventBus, EventKind, EventStream, PlanSource};
use crate::llm::Providers;
use crate::orchestrator::{AgentOutput, Orchestrator, Outcome, combine_outputs};
use crate::plan::{PlanError, Subtask, Task, normalize_plan};
use crate::policy::Policies;
use crate::result::{AgentStatus, RunResult, RunStatus, Segment};
use crate::step::{StepId, StepSpec, Tier, index_width};
use crate::store::{LEASE_TTL, Lease, MemoryStore, RunRecord, RunStore, StoreError};
use crate::usage::UsageMeter;

/// How a run is run. Serializable (for the run's record) except for the providers and
/// the store, which are the environment it runs in.
#[derive(Clone, Serialize, Deserialize)]
pub struct RunOptions {
    /// Reuse an id (resume); a new UUIDv7 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Most steps in flight at once (LLM calls and subtasks).
    pub concurrency: usize,
    /// False runs subtasks one at a time, in priority order.
    pub parallel: bool,
    pub budget: Budget,
    pub policies: Policies,
    /// Below this fraction of successful subtasks the run fails without paying for synthesis.
    pub min_success: f64,
    /// A plan given by the caller; decomposition is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<Subtask>>,
    /// Serve identical requests (same model, messages and parameters) from the store's
    /// response cache for this long; hits cost nothing and are marked in events.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::policy::opt_duration_ms")]
    pub cache_ttl: Option<std::time::Duration>,
    /// What to record as the run's definition (JSON), for a caller that resumes runs from
    /// its own description of them (the CLI records its arguments). Default: these options.
    #[serde(skip)]
    pub definition: Option<String>,
    /// Emit `step_delta` events with the text of streaming replies as it arrives (coalesced
    /// to about ten a second per step), for live views.
    #[serde(default)]
    pub stream_deltas: bool,
    /// Who drives the run, as recorded in its lease (default: `pid:<pid>:<nonce>`).
    #[serde(skip)]
    pub owner: Option<String>,
    /// The owner of an expired-looking lease that the caller knows is dead (its process is
    /// gone), so a resume right after a crash need not wait for the lease to expire.
    #[serde(skip)]
    pub replace_owner: Option<String>,
    #[serde(skip)]
    pub providers: Providers,
    #[serde(skip)]
    pub store: Option<Arc<dyn RunStore>>,
    /// Writes the run's documents (reports) once it has a result, before `run_finished`.
    #[serde(skip)]
    pub documents: Option<Arc<dyn DocumentWriter>>,
    /// Where the run's questions for people go ([`Ctx::human`]): a terminal prompt, a web
    /// inbox… Default: nobody, so every question takes its default at once.
    #[serde(skip)]
    pub human: Option<crate::human::Human>,
    /// A budget pool every call of the run also reserves in (see [`crate::shared`]).
    #[serde(skip)]
    pub budget_pool: Option<crate::shared::BudgetPool>,
    /// Ask a person ([`Ctx::human`], question `hitl/plan`) to approve the plan before any
    /// subtask runs: the work is seen before it is paid for. Rejected, or unanswered within
    /// [`PLAN_REVIEW_TIMEOUT`] (or the human channel's `max_wait`), the run fails without
    /// running a subtask.
    #[serde(default)]
    pub review_plan: bool,
    /// The tools each tier's agents may call: their LLM calls run the agent loop
    /// ([`crate::tools::Toolbox`]).
    #[serde(skip)]
    pub tools: crate::tools::Toolbox,
    /// The caller's W3C trace context (a `traceparent` header's value,
    /// `00-<trace id>-<span id>-<flags>`), carried by the `run_started` event: an
    /// OpenTelemetry exporter (belt-otel) then puts the run's spans under the caller's span,
    /// in the caller's trace, instead of a trace of the run's own. Check it with
    /// [`crate::event::TraceParent::parse`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,

    // Time and limits (issue 16).
    /// The fraction of a budget cap (0 < f <= 1) at which a `budget_warning` fires, once per
    /// cap. Default: [`crate::budget::WARN_AT`] (0.8).
    #[serde(default = "default_warn_at")]
    pub budget_warn_at: f64,
    /// The whole run's deadline, from when this process starts driving it (a resumed run gets
    /// it afresh): then no new step starts, the calls in flight are cancelled (recorded with
    /// status `timed_out`), and the run ends `partial` with what it has, the deadline named
    /// in its stop reason (`failed` when nothing had completed).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::policy::opt_duration_ms")]
    pub deadline: Option<std::time::Duration>,
    /// Switch a tier to a faster model when its provider signals load ([`crate::load`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_switch: Option<crate::load::LoadSwitch>,
}

fn default_warn_at() -> f64 {
    crate::budget::WARN_AT
}

/// How long a plan review waits for an answer before it takes its default, rejection.
pub const PLAN_REVIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Renders a finished run into documents (files, blobs). Called once per run, on a
/// blocking thread, after synthesis and before `run_finished`; each document becomes a
/// `document_written` event and an entry in [`RunResult::documents`]. This is how the
/// core hands results to file-writing code without doing I/O itself.
pub trait DocumentWriter: Send + Sync + 'static {
    fn write(&self, result: &RunResult) -> Result<Vec<crate::result::Document>, String>;
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_id: None,
            concurrency: 16,
            parallel: true,
            budget: Budget::default(),
            policies: Policies::default(),
            min_success: 0.5,
            plan: None,
            cache_ttl: None,
            definition: None,
            stream_deltas: false,
            owner: None,
            replace_owner: None,
            providers: Providers::default(),
            store: None,
            documents: None,
            human: None,
            budget_pool: None,
            review_plan: false,
            tools: Default::default(),
            traceparent: None,
            budget_warn_at: crate::budget::WARN_AT,
            deadline: None,
            load_switch: None,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("run_id", &self.run_id)
            .field("concurrency", &self.concurrency)
            .field("parallel", &self.parallel)
            .field("budget", &self.budget)
            .field("min_success", &self.min_success)
            .field("plan", &self.plan.as_ref().map(Vec::len))
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    pub fn with_provider(mut self, provider: Arc<dyn crate::llm::LlmProvider>) -> Self {
        self.providers.insert(provider);
        self
    }
    /// Give each tier's agents tools ([`crate::tools::Toolbox`]).
    pub fn with_tools(mut self, tools: crate::tools::Toolbox) -> Self {
        self.tools = tools;
        self
    }
    pub fn with_providers(mut self, providers: Providers) -> Self {
        self.providers = providers;
        self
    }
    pub fn with_store(mut self, store: Arc<dyn RunStore>) -> Self {
        self.store = Some(store);
        self
    }
    pub fn with_documents(mut self, writer: Arc<dyn DocumentWriter>) -> Self {
        self.documents = Some(writer);
        self
    }
    /// Send the run's questions for people to `human` (see [`crate::patterns::hitl`]).
    pub fn with_human(mut self, human: crate::human::Human) -> Self {
        self.human = Some(human);
        self
    }
    pub fn with_plan(mut self, plan: Vec<Subtask>) -> Self {
        self.plan = Some(plan);
        self
    }
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }
}

/// A run that could not start. Nothing was called.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("the task is empty; describe what the agents should do")]
    EmptyTask,
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
    #[error("budget {limit} must be a positive number, got {value}")]
    BadBudget { limit: &'static str, value: String },
    #[error("min_success must be between 0 and 1, got {0}")]
    BadMinSuccess(f64),
    #[error("budget_warn_at must be above 0 and at most 1 (a fraction of each cap), got {0}")]
    BadWarnAt(f64),
    #[error("the deadline must be longer than zero")]
    ZeroDeadline,
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    #[error("no LLM provider is configured")]
    NoProviders,
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A started run: its events, a way to cancel it, and its result.
pub struct RunHandle {
    run_id: String,
    events: Option<EventStream>,
    ctx: Ctx,
    join: JoinHandle<RunResult>,
}

impl RunHandle {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Every event of the run from the first one, in order. Available once.
    pub fn events(&mut self) -> Option<EventStream> {
        self.events.take()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> EventStream {
        self.ctx.shared.bus.subscribe()
    }

    /// Stop scheduling, drop in-flight calls; the result says `cancelled` and keeps what
    /// finished.
    pub fn cancel(&self) {
        self.ctx.cancel();
    }

    /// A token that cancels the run when cancelled.
    pub fn cancellation(&self) -> CancellationToken {
        self.ctx.cancellation()
    }

    /// What stops the run from elsewhere, kept after [`RunHandle::result`] took the handle.
    pub fn control(&self) -> RunControl {
        RunControl { ctx: self.ctx.clone() }
    }

    /// Wait for the run to end.
    pub async fn result(self) -> RunResult {
        match self.join.await {
            Ok(r) => r,
            // The driver itself panicked: report a failed run rather than propagating
            // the panic into the caller.
            Err(e) => fallback_result(&self.ctx, format!("internal error in the run driver: {e}")),
        }
    }
}

/// Stops a run from outside it: see [`RunHandle::control`].
#[derive(Clone)]
pub struct RunControl {
    ctx: Ctx,
}

impl RunControl {
    /// [`RunHandle::cancel`].
    pub fn cancel(&self) {
        self.ctx.cancel();
    }

    /// Give the run back to the store's queue: the calls in flight finish and are recorded,
    /// nothing new starts, and the run ends `interrupted` here and `queued` in the store,
    /// for another driver to resume from its record. How a worker stops without losing or
    /// repeating work.
    pub fn hand_back(&self) {
        self.ctx.stop(Stop::HandedBack);
    }
}

/// Check the options, then start the run on the current tokio runtime.
///
/// Everything checkable is checked before any call: an empty task, zero concurrency, a
/// negative budget, a plan with a cycle or an unknown dependency, a model whose provider is
/// unknown. Resume: pass the `run_id` of a recorded run and the same store; its completed
/// steps are replayed from the record instead of being called again.
pub async fn run<O: Orchestrator>(
    orchestrator: O,
    task: Task,
    mut options: RunOptions,
) -> Result<RunHandle, RunError> {
    if task.description.trim().is_empty() {
        return Err(RunError::EmptyTask);
    }
    if options.concurrency == 0 {
        return Err(RunError::ZeroConcurrency);
    }
    let b = &options.budget;
    if let Some(v) = b.max_cost_usd
        && !(v.is_finite() && v > 0.0)
    {
        return Err(RunError::BadBudget { limit: "max_cost_usd", value: v.to_string() });
    }
    if b.max_tokens == Some(0) {
        return Err(RunError::BadBudget { limit: "max_tokens", value: "0".into() });
    }
    if b.max_calls == Some(0) {
        return Err(RunError::BadBudget { limit: "max_calls", value: "0".into() });
    }
    if !(0.0..=1.0).contains(&options.min_success) {
        return Err(RunError::BadMinSuccess(options.min_success));
    }
    if !(options.budget_warn_at > 0.0 && options.budget_warn_at <= 1.0) {
        return Err(RunError::BadWarnAt(options.budget_warn_at));
    }
    if options.deadline.is_some_and(|d| d.is_zero()) {
        return Err(RunError::ZeroDeadline);
    }
    if let Some(plan) = options.plan.as_mut() {
        normalize_plan(plan)?;
    }
    if options.providers.is_empty() {
        return Err(RunError::NoProviders);
    }
    orchestrator.validate(&options.providers).map_err(RunError::Config)?;

    let store: Arc<dyn RunStore> = options.store.clone().unwrap_or_else(|| Arc::new(MemoryStore::new()));
    let run_id = options.run_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // Only one process drives a run: take its lease first (refused while another live
    // process holds it), and keep it fresh with a heartbeat until the run ends.
    let owner = options
        .owner
        .clone()
        .unwrap_or_else(|| format!("pid:{}:{}", std::process::id(), uuid::Uuid::now_v7()));
    store.claim(&run_id, &owner, LEASE_TTL, options.replace_owner.as_deref()).await?;
    let replay: HashMap<StepId, _> =
        store.load_steps(&run_id).await?.into_iter().map(|r| (r.step.clone(), r)).collect();
    let last_seq = store.last_seq(&run_id).await?;
    let previous = store.get_run(&run_id).await?;
    let earlier = earlier_segments(&*store, &run_id, last_seq).await;
    // JSON text, not a `serde_json::Value` tree: a given plan of 100,000 subtasks would
    // otherwise cost more to record than to run.
    let definition: Arc<str> = match (&options.definition, &previous) {
        (Some(d), _) => Arc::from(d.as_str()),
        (None, Some(p)) => p.definition.clone(),
        (None, None) => Arc::from(serde_json::to_string(&options).unwrap_or_else(|_| "null".into())),
    };
    store
        .put_run(&RunRecord {
            run_id: run_id.clone(),
            pattern: orchestrator.name().to_string(),
            task: task.description.clone(),
            status: RunStatus::Running,
            started_at: previous.as_ref().map_or_else(Utc::now, |p| p.started_at),
            definition,
        })
        .await?;
    let heartbeat_done = CancellationToken::new();

    // A resumed run's recorded steps count once: in its totals and against its budget.
    let (mut recorded, usage) = (Amount::default(), UsageMeter::default());
    for r in replay.values() {
        recorded.calls += u64::from(r.reply.outcome.attempts);
        recorded.tokens += r.reply.outcome.usage.total();
        recorded.cost_usd += r.reply.outcome.cost_usd;
        usage.add(&r.reply.outcome.usage, r.reply.outcome.unpriced);
    }
    usage.count_calls(recorded.calls);
    let ledger = Ledger::new(options.budget).warn_at(options.budget_warn_at);
    ledger.preload(recorded);
    let bus = EventBus::new(&run_id, last_seq);
    let events = bus.subscribe();
    let persisted = bus.subscribe();
    let ctx = Ctx::new(Shared {
        run_id: Arc::from(run_id.as_str()),
        context: task.context.clone(),
        metadata: Mutex::new(HashMap::new()),
        providers: options.providers.clone(),
        store: store.clone(),
        bus,
        ledger,
        pool: options.budget_pool.clone(),
        cache_ttl: options.cache_ttl,
        stream_deltas: options.stream_deltas,
        limiter: Semaphore::new(options.concurrency),
        concurrency: options.concurrency,
        cancel: CancellationToken::new(),
        stop: Mutex::new(None),
        stopping: AtomicBool::new(false),
        policies: options.policies.clone(),
        tools: options.tools.clone(),
        agents: Mutex::new(Vec::new()),
        replay,
        plan: Mutex::new(None),
        started: Instant::now(),
        started_at: Utc::now(),
        earlier,
        simulated: AtomicBool::new(false),
        usage,
        human: options.human.clone().unwrap_or_else(crate::human::Human::unattended),
        caps: Mutex::new(Vec::new()),
        sources: Mutex::new(Vec::new()),
        windows: Mutex::new(HashMap::new()),
        degradations: Mutex::new(Vec::new()),
        load: options.load_switch.clone().map(crate::load::LoadWatch::new),
    });
    tokio::spawn(heartbeat(ctx.clone(), owner.clone(), heartbeat_done.clone()));
    if let Some(deadline) = options.deadline {
        tokio::spawn(enforce_deadline(ctx.clone(), deadline, heartbeat_done.clone()));
    }
    // Events reach the store from their own task, in batches, so emitting stays cheap.
    let writer = tokio::spawn(persist_events(store.clone(), run_id.clone(), persisted));
    let driver_ctx = ctx.clone();
    let join = tokio::spawn(async move {
        let documents = options.documents.clone();
        // Tokio's cooperative budget is made for tasks that each wait on a few resources.
        // The driver polls every in-flight step of the run from one task, and under the
        // budget a `FuturesUnordered` of 40,000 waiting steps was re-polled ~70 times per
        // step (quadratic); unconstrained, each step is polled exactly twice. Fairness is
        // kept by the scheduler yielding on its own every few hundred completions.
        //
        // Cancelling drops the driver future, and with it every in-flight step: no step
        // has to watch for cancellation itself (a dropped call records itself as
        // cancelled), and a custom orchestrator's own awaits are cancelled too.
        let cancel = driver_ctx.shared.cancel.clone();
        let (pattern, description) = (orchestrator.name().to_string(), task.description.clone());
        let mut result = tokio::select! {
            biased;
            _ = cancel.cancelled() => cancelled_result(&driver_ctx, &pattern, Task::new(description)),
            r = tokio::task::unconstrained(drive(orchestrator, driver_ctx.clone(), task, options)) => r,
        };
        if let Some(writer) = documents {
            result = write_documents(&driver_ctx, writer, result).await;
        }
        driver_ctx.emit_event(
            None,
            EventKind::RunFinished {
                status: result.status,
                stop_reason: result.stop_reason.clone(),
                cost_usd: result.cost_usd,
                input_tokens: result.usage.input_tokens,
                output_tokens: result.usage.output_tokens,
                calls: result.usage.calls,
                duration_ms: result.duration_ms,
            },
        );
        driver_ctx.shared.bus.close();
        let _ = writer.await;
        heartbeat_done.cancel();
        record_end(&*store, &driver_ctx, &owner, &result).await;
        result
    });
    Ok(RunHandle { run_id, events: Some(events), ctx, join })
}

/// A resumed run's segments so far, from its recorded events (resuming is rare, so reading
/// them all is affordable). Unreadable events cost the history, not the run.
async fn earlier_segments(store: &dyn RunStore, run_id: &str, last_seq: u64) -> Vec<Segment> {
    if last_seq == 0 {
        return Vec::new();
    }
    match store.events(run_id, 0).await {
        Ok(events) => segments_of(&events),
        Err(e) => {
            tracing::warn!("could not read the earlier segments of run {run_id}: {e}");
            Vec::new()
        }
    }
}

/// The segments a run's events tell of: each `run_started` begins one, which lasts until the
/// last event before the next one (a killed process's segment ends at its last recorded
/// event).
fn segments_of(events: &[Arc<crate::event::Event>]) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for e in events {
        if matches!(e.kind, EventKind::RunStarted { .. }) {
            segments.push(Segment { started_at: e.ts, duration_ms: 0 });
        } else if let Some(last) = segments.last_mut() {
            let ms = (e.ts - last.started_at).num_milliseconds();
            last.duration_ms = last.duration_ms.max(u64::try_from(ms).unwrap_or(0));
        }
    }
    segments
}

/// When the run first started, how long it has run in all, and its segments (the earlier
/// ones and this one, so far).
fn timing(ctx: &Ctx) -> (Option<chrono::DateTime<Utc>>, u64, Vec<Segment>) {
    let now = Segment {
        started_at: ctx.shared.started_at,
        duration_ms: ctx.shared.started.elapsed().as_millis() as u64,
    };
    let mut segments = ctx.shared.earlier.clone();
    segments.push(now);
    let first = segments.first().map(|s| s.started_at);
    (first, segments.iter().map(|s| s.duration_ms).sum(), segments)
}

/// A failed RunResult from what the context knows, for when the driver could not finish.
fn fallback_result(ctx: &Ctx, reason: String) -> RunResult {
    let (started_at, duration_ms, segments) = timing(ctx);
    let agents = ctx.take_agents();
    RunResult {
        agent_totals: crate::result::agent_totals(&agents),
        run_id: ctx.run_id().to_string(),
        status: RunStatus::Failed,
        stop_reason: reason,
        pattern: String::new(),
        task: String::new(),
        plan: Vec::new(),
        agents,
        final_output: None,
        usage: ctx.usage(),
        cost_usd: ctx.cost_usd(),
        duration_ms,
        documents: Vec::new(),
        simulated: ctx.shared.simulated.load(Ordering::Relaxed),
        shape: Vec::new(),
        started_at,
        segments,
        caps: Vec::new(),
        sources: Vec::new(),
        degradations: take_degradations(ctx),
    }
}

/// The run's degradations, for its result.
fn take_degradations(ctx: &Ctx) -> Vec<crate::result::Degradation> {
    std::mem::take(&mut *ctx.shared.degradations.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Keep the run's lease fresh until `done`, and act on what the store says back: a cancel
/// requested by another process cancels the run; a lease another driver took stops it. A
/// driver that cannot renew its lease for most of its term (the store unreachable) stops
/// too, before the lease can expire under it: another driver may take the run then, and two
/// must never call the same step.
async fn heartbeat(ctx: Ctx, owner: String, done: CancellationToken) {
    let run_id = ctx.run_id().to_string();
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(LEASE_TTL / 5) => {
                let lost = match ctx.shared.store.heartbeat(&run_id, &owner).await {
                    Ok(Lease { held: false, .. }) => Some("another driver took the run over".to_string()),
                    Ok(lease) => {
                        renewed = tokio::time::Instant::now();
                        if lease.cancel_requested {
                            ctx.cancel();
                        }
                        None
                    }
                    Err(e) if renewed.elapsed() >= LEASE_TTL * 7 / 10 => Some(format!(
                        "its lease could not be renewed for {:.0} s ({e}), so another driver may take it",
                        renewed.elapsed().as_secs_f64()
                    )),
                    Err(e) => {
                        tracing::warn!("could not renew the lease of run {run_id}: {e}");
                        None
                    }
                };
                if let Some(why) = lost {
                    tracing::warn!("run {run_id}: {why}; stopping here");
                    ctx.stop(Stop::LeaseLost(why));
                    ctx.shared.cancel.cancel();
                    return;
                }
            }
        }
    }
}

/// At `deadline` (unless the run ended first): stop starting work and cancel the calls in
/// flight, through the same path as a user's cancel; the stop reason makes the run `partial`
/// rather than `cancelled` (see [`Finish::build`]).
async fn enforce_deadline(ctx: Ctx, deadline: std::time::Duration, done: CancellationToken) {
    tokio::select! {
        _ = done.cancelled() => {}
        _ = tokio::time::sleep(deadline) => {
            ctx.stop(Stop::Deadline(deadline));
            ctx.shared.cancel.cancel();
        }
    }
}

/// Record how the run ended: its result; or, handed back, its return to the queue; or,
/// taken over by another driver, nothing (the run is that driver's now); or, the store
/// failing, nothing either: the run stays as recorded, `interrupted` once its lease
/// expires, for `belt resume` or any worker to continue.
async fn record_end(store: &dyn RunStore, ctx: &Ctx, owner: &str, result: &RunResult) {
    let outcome = match ctx.stopping() {
        Some(Stop::LeaseLost(_) | Stop::Store(_)) => return,
        Some(Stop::HandedBack) => store.release(&result.run_id, owner).await.map(drop),
        _ => store.finish_run(result).await,
    };
    if let Err(e) = outcome {
        tracing::warn!("could not record the end of run {}: {e}", result.run_id);
    }
}

async fn write_documents(ctx: &Ctx, writer: Arc<dyn DocumentWriter>, result: RunResult) -> RunResult {
    let outcome = tokio::task::spawn_blocking(move || {
        let docs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.write(&result)))
            .unwrap_or_else(|_| Err("the document writer panicked".to_string()));
        (result, docs)
    })
    .await;
    match outcome {
        Ok((mut result, Ok(docs))) => {
            for d in &docs {
                ctx.emit_event(
                    None,
                    EventKind::DocumentWritten { format: d.format.clone(), path: d.path.clone() },
                );
            }
            result.documents = docs;
            result
        }
        Ok((mut result, Err(e))) => {
            // The run's work is intact; only the document is missing. Say so in the result.
            result.stop_reason = format!("{}; writing documents failed: {e}", result.stop_reason);
            if result.status == RunStatus::Completed {
                result.status = RunStatus::Partial;
            }
            result
        }
        Err(e) => fallback_result(ctx, format!("writing documents was interrupted: {e}")),
    }
}

async fn persist_events(store: Arc<dyn RunStore>, run_id: String, mut rx: EventStream) {
    let mut batch = Vec::with_capacity(1024);
    while rx.recv_batch(&mut batch, 4096).await > 0 {
        if let Err(e) = store.append_events(&run_id, &batch).await {
            tracing::warn!("could not record events of run {run_id}: {e}");
        }
        batch.clear();
    }
}
pub const EVENT_BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

async fn drive<O: Orchestrator>(orch: O, ctx: Ctx, task: Task, mut options: RunOptions) -> RunResult {
    let simulated = options.providers_simulated();
    ctx.emit_event(
        None,
        EventKind::RunStarted {
            pattern: orch.name().to_string(),
            task: task.description.clone(),
            agents: orch.agents().or(options.plan.as_ref().map(Vec::len)),
            concurrency: options.concurrency,
            simulated,
            traceparent: options.traceparent.clone(),
        },
    );
    let mut finish = Finish { ctx: &ctx, task: &task, pattern: orch.name(), shape: Vec::new() };

    // 1. The plan. Taken out of the options rather than copied: a given plan of 1,000,000
    // subtasks is ~300 MB, and the options live as long as this future.
    let plan = match options.plan.take() {
        Some(plan) => Ok((plan, PlanSource::Given)),
        None => match orch.decompose(&ctx, &task).await {
            Ok(p) => {
                let mut subtasks = p.subtasks;
                normalize_plan(&mut subtasks)
                    .map(|()| (subtasks, p.source))
                    .map_err(|e| format!("invalid plan: {e}"))
            }
            Err(e) => Err(format!("decomposition failed: {e}")),
        },
    };
    let (plan, source) = match plan {
        Ok(p) => p,
        Err(reason) => return finish.done(Vec::new(), None, Some(reason)),
    };
    finish.shape = orch.shape(plan.len());
    // One record per step is coming: reserve for the tiers at once rather than regrow.
    let steps: usize = finish.shape.iter().sum();
    ctx.shared.agents.lock().unwrap_or_else(|p| p.into_inner()).reserve(steps + 1);
    // Shared with a cancel, which builds the result without this future.
    let plan = Arc::new(plan);
    *ctx.shared.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some((plan.clone(), finish.shape.clone()));
    ctx.emit_event(None, EventKind::PlanReady { subtasks: plan.len(), shape: finish.shape.clone(), source });
    if options.review_plan
        && let Err(reason) = review_plan(&ctx, &task, &plan).await
    {
        return finish.done(take_plan(&ctx, plan), None, Some(reason));
    }

    // 2. The subtasks, by dependency and priority.
    ctx.emit_event(None, EventKind::TierStarted { tier: Tier::Worker, level: 0, count: plan.len() });
    let limit = if options.parallel { options.concurrency } else { 1 };
    let outcomes = schedule(&orch, &ctx, &task, &plan, limit).await;
    let succeeded = outcomes.iter().filter(|o| o.is_ok()).count();
    let skipped = outcomes.iter().filter(|o| matches!(o, Err(StepError::Skipped { .. }))).count();
    ctx.emit_event(
        None,
        EventKind::TierCompleted {
            tier: Tier::Worker,
            level: 0,
            succeeded,
            failed: outcomes.len() - succeeded - skipped,
            skipped,
        },
    );

    // 3. Synthesis, unless the run is stopping or too few subtasks succeeded.
    if ctx.stopping().is_some() {
        let text = (succeeded > 0).then(|| combine_outputs(&plan, &outcomes));
        return finish.done(take_plan(&ctx, plan), text, None);
    }
    let needed = (options.min_success * plan.len() as f64).ceil() as usize;
    if succeeded < needed {
        let reason = format!(
            "only {succeeded} of {} subtasks succeeded, below min_success {} ({needed} needed); synthesis skipped",
            plan.len(),
            options.min_success
        );
        return match orch.rescue(&ctx, &task, &plan, &outcomes, &reason).await {
            None => finish.done(take_plan(&ctx, plan), None, Some(reason)),
            Some(Ok(s)) => {
                let short = format!("only {succeeded} of {} subtasks succeeded", plan.len());
                finish.build(take_plan(&ctx, plan), Some(s.text), None, Some(short))
            }
            Some(Err(e)) => finish.done(take_plan(&ctx, plan), None, Some(format!("{reason}; then {e}"))),
        };
    }
    match orch.synthesize(&ctx, &task, &plan, &outcomes).await {
        Ok(s) => finish.done(take_plan(&ctx, plan), Some(s.text), None),
        Err(e) => {
            let text = combine_outputs(&plan, &outcomes);
            let reason = format!("synthesis failed ({e}); the final output combines the subtask outputs");
            finish.build(take_plan(&ctx, plan), Some(text), None, Some(reason))
        }
    }
}

/// Ask the run's human to approve the plan; `Err` says why the run must not go on.
async fn review_plan(ctx: &Ctx, task: &Task, plan: &[Subtask]) -> Result<(), String> {
    const SHOWN: usize = 20;
    let mut prompt =
        format!("Run this plan of {} subtasks for the task \"{}\"?\n", plan.len(), task.description.trim());
    for (i, s) in plan.iter().take(SHOWN).enumerate() {
        prompt.push_str(&format!("  {}. {}\n", i + 1, s.description.trim()));
    }
    if plan.len() > SHOWN {
        prompt.push_str(&format!("  … and {} more\n", plan.len() - SHOWN));
    }
    let decision = ctx
        .human()
        .approve(ctx, "plan", prompt, PLAN_REVIEW_TIMEOUT, false)
        .await
        .map_err(|e| format!("the plan review failed: {e}"))?;
    if decision.value {
        return Ok(());
    }
    Err(match decision.by {
        crate::human::AnsweredBy::Human => "the plan was rejected; nothing was run".to_string(),
        crate::human::AnsweredBy::Timeout => {
            "the plan was not approved in time (the default is to reject); nothing was run".to_string()
        }
        crate::human::AnsweredBy::Unattended => {
            "the plan needs approval but nobody was there to answer (an unattended run); nothing was run"
                .to_string()
        }
    })
}

/// The plan back out of its shared slot, without a copy when nothing else holds it.
fn take_plan(ctx: &Ctx, plan: Arc<Vec<Subtask>>) -> Vec<Subtask> {
    ctx.shared.plan.lock().unwrap_or_else(|p| p.into_inner()).take();
    Arc::try_unwrap(plan).unwrap_or_else(|p| (*p).clone())
}

/// The result of a cancelled run, from what its context holds: the completed steps'
/// records, and the workers' outputs combined as the final output. Subtasks that never
/// started are recorded as skipped.
fn cancelled_result(ctx: &Ctx, pattern: &str, task: Task) -> RunResult {
    ctx.stop(Stop::Cancelled);
    let (plan, shape) = ctx.shared.plan.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
    let plan = Arc::try_unwrap(plan).unwrap_or_else(|p| (*p).clone());
    let width = index_width(plan.len());
    let not_started = match ctx.stopping() {
        Some(stop @ Stop::Deadline(_)) => format!("not started: {}", stop.describe()),
        _ => "not started: cancelled".to_string(),
    };
    // Completed workers' outputs, and which workers have a record at all.
    let mut done: HashMap<StepId, (Arc<str>, Arc<str>)> = HashMap::new();
    let mut seen: HashSet<StepId> = HashSet::new();
    for a in
        ctx.shared.agents.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|a| a.tier == Tier::Worker)
    {
        seen.insert(a.step.clone());
        if let (AgentStatus::Completed, Some(text)) = (a.status, &a.output) {
            done.insert(a.step.clone(), (text.clone(), a.outcome.model.clone()));
        }
    }
    let outcomes: Vec<Outcome> = plan
        .iter()
        .enumerate()
        .map(|(i, subtask)| {
            let step = StepId::indexed("worker", i + 1, width);
            match done.remove(&step) {
                Some((text, model)) => Ok(AgentOutput { subtask_id: subtask.id.clone(), step, text, model }),
                None if seen.contains(&step) => Err(StepError::Cancelled { step }),
                None => Err(ctx.skip(StepSpec::new(step, Tier::Worker), "", not_started.clone())),
            }
        })
        .collect();
    let text = outcomes.iter().any(Result::is_ok).then(|| combine_outputs(&plan, &outcomes));
    let finish = Finish { ctx, task: &task, pattern, shape };
    finish.done(plan, text, None)
}

/// Run subtasks as their dependencies complete, highest priority first among the ready
/// ones, at most `limit` at a time. Only the running subtasks exist as futures, so memory
/// stays flat however long the plan is. A subtask whose dependency failed is skipped.
async fn schedule<O: Orchestrator>(
    orch: &O,
    ctx: &Ctx,
    task: &Task,
    plan: &[Subtask],
    limit: usize,
) -> Vec<Outcome> {
    let n = plan.len();
    let width = index_width(n);
    let index: rustc_hash::FxHashMap<&str, usize> =
        plan.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    // Flat adjacency lists: a few bytes per subtask instead of two vectors each.
    let deps = Adjacency::build(n, |i| plan[i].dependencies.iter().map(|d| index[d.as_str()]).collect());
    // Ids are only needed to resolve dependencies; free them before the run's long wait.
    drop(index);
    let dependents = deps.reversed();
    let mut waiting: Vec<u32> = (0..n).map(|i| deps.of(i).len() as u32).collect();
    let step_of = |i: usize| StepId::indexed("worker", i + 1, width);
    let mut ready = ReadyQueue::default();
    for i in (0..n).filter(|&i| waiting[i] == 0) {
        ready.push(plan[i].priority, i);
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut running = FuturesUnordered::new();
    let mut completed = 0usize;
    loop {
        while running.len() < limit {
            let Some(i) = ready.pop() else { break };
            let my_deps = deps.of(i).iter().map(|&d| d as usize);
            let spec = StepSpec::new(step_of(i), Tier::Worker).inputs(my_deps.clone().map(step_of).collect());
            let failed: Vec<&str> = my_deps
                .clone()
                .filter(|&d| !matches!(outcomes[d], Some(Ok(_))))
                .map(|d| plan[d].id.as_str())
                .collect();
            if !failed.is_empty() {
                let reason = format!("dependencies failed: {}", failed.join(", "));
                let err = ctx.skip(spec, "", reason);
                outcomes[i] = Some(Err(err));
                release(i, &dependents, &mut waiting, &mut ready, plan);
                continue;
            }
            // A boxed slice and a u32 index: the future below is what every running subtask
            // holds (with its queue entry, 240 bytes a subtask at 10,000 in flight).
            let dep_outputs: Box<[AgentOutput]> =
                my_deps.filter_map(|d| outcomes[d].as_ref().and_then(|o| o.as_ref().ok()).cloned()).collect();
            let subtask = &plan[i];
            let at = i as u32;
            running.push(async move { (at, orch.execute(ctx, &spec, task, subtask, &dep_outputs).await) });
        }
        let Some((i, outcome)) = running.next().await else { break };
        let i = i as usize;
        outcomes[i] = Some(outcome);
        completed += 1;
        if completed.is_multiple_of(YIELD_EVERY) {
            // The driver runs unconstrained (see `run`); let other tasks in.
            tokio::task::yield_now().await;
        }
        release(i, &dependents, &mut waiting, &mut ready, plan);
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every subtask is scheduled once its dependencies are done"))
        .collect()
}

/// Completions after which the scheduler yields to other tasks.
const YIELD_EVERY: usize = 256;

/// Subtask `i` ended: its dependents each wait for one fewer; those waiting for none are
/// ready.
fn release(i: usize, dependents: &Adjacency, waiting: &mut [u32], ready: &mut ReadyQueue, plan: &[Subtask]) {
    for &d in dependents.of(i) {
        let d = d as usize;
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.push(plan[d].priority, d);
        }
    }
}

/// Ready subtasks: highest priority first, first come first served within a priority.
/// One bucket per priority, so the usual plan (one priority) pops in O(1).
#[derive(Default)]
struct ReadyQueue {
    buckets: BTreeMap<Reverse<i32>, VecDeque<usize>>,
}

impl ReadyQueue {
    fn push(&mut self, priority: i32, i: usize) {
        self.buckets.entry(Reverse(priority)).or_default().push_back(i);
    }

    fn pop(&mut self) -> Option<usize> {
        let mut first = self.buckets.first_entry()?;
        let i = first.get_mut().pop_front();
        if first.get().is_empty() {
            first.remove();
        }
        i
    }
}

/// Adjacency lists of `n` nodes in two flat arrays (compressed sparse rows).
struct Adjacency {
    start: Vec<u32>,
    edges: Vec<u32>,
}

impl Adjacency {
    fn build(n: usize, mut of: impl FnMut(usize) -> Vec<usize>) -> Self {
        let mut start = Vec::with_capacity(n + 1);
        let mut edges = Vec::new();
        for i in 0..n {
            start.push(edges.len() as u32);
            edges.extend(of(i).into_iter().map(|e| e as u32));
        }
        start.push(edges.len() as u32);
        Adjacency { start, edges }
    }

    fn of(&self, i: usize) -> &[u32] {
        &self.edges[self.start[i] as usize..self.start[i + 1] as usize]
    }

    /// The same edges pointing the other way, each list in node order.
    fn reversed(&self) -> Adjacency {
        let n = self.start.len() - 1;
        let mut start = vec![0u32; n + 1];
        for &e in &self.edges {
            start[e as usize + 1] += 1;
        }
        for k in 1..=n {
            start[k] += start[k - 1];
        }
        let mut fill = start.clone();
        let mut edges = vec![0u32; self.edges.len()];
        for i in 0..n {
            for &e in self.of(i) {
                edges[fill[e as usize] as usize] = i as u32;
                fill[e as usize] += 1;
            }
        }
        Adjacency { start, edges }
    }
}

/// Builds the RunResult (`run_finished` is emitted by the caller, after documents).
struct Finish<'a> {
    ctx: &'a Ctx,
    task: &'a Task,
    pattern: &'a str,
    shape: Vec<usize>,
}

impl Finish<'_> {
    /// `failure` set: the run failed for that reason. Otherwise the status follows from
    /// the stop reason and the steps' outcomes.
    fn done(self, plan: Vec<Subtask>, final_output: Option<String>, failure: Option<String>) -> RunResult {
        self.build(plan, final_output, failure, None)
    }

    /// `partial` set: the run produced `final_output` but is partial for that reason.
    fn build(
        self,
        plan: Vec<Subtask>,
        final_output: Option<String>,
        failure: Option<String>,
        partial: Option<String>,
    ) -> RunResult {
        let ctx = self.ctx;
        let agents = ctx.take_agents();
        let bad = agents.iter().filter(|a| a.status != AgentStatus::Completed).count();
        if ctx.shared.cancel.is_cancelled() {
            ctx.stop(Stop::Cancelled);
        }
        let (status, stop_reason) = match (ctx.stopping(), failure) {
            (Some(Stop::Cancelled), _) => (RunStatus::Cancelled, "cancelled by the user".to_string()),
            (Some(Stop::Budget(r)), _) => (RunStatus::BudgetExhausted, format!("budget exhausted: {r}")),
            (Some(Stop::UntrustedUsage(r)), _) => (RunStatus::BudgetExhausted, r),
            // Partial when some work was done before the model went away, else failed.
            (Some(stop @ Stop::Unreachable(_)), None) if bad < agents.len() => {
                (RunStatus::Partial, stop.describe())
            }
            (Some(stop @ Stop::Unreachable(_)), reason) => (
                RunStatus::Failed,
                reason.map_or_else(|| stop.describe(), |r| format!("{r}; {}", stop.describe())),
            ),
            // The deadline: partial with what was done, failed when nothing was.
            (Some(stop @ Stop::Deadline(_)), _) if final_output.is_some() => {
                (RunStatus::Partial, stop.describe())
            }
            (Some(stop @ (Stop::HandedBack | Stop::LeaseLost(_) | Stop::Store(_))), _) => {
                (RunStatus::Interrupted, stop.describe())
            }
            (Some(stop), _) => (RunStatus::Failed, stop.describe()),
            (None, Some(reason)) => (RunStatus::Failed, reason),
            (None, None) => match partial {
                Some(reason) => (RunStatus::Partial, reason),
                None if bad > 0 => {
                    (RunStatus::Partial, format!("{bad} of {} steps failed or were skipped", agents.len()))
                }
                None => (RunStatus::Completed, "all steps completed".to_string()),
            },
        };
        let caps = std::mem::take(&mut *ctx.shared.caps.lock().unwrap_or_else(|p| p.into_inner()));
        let stop_reason = match caps.as_slice() {
            [] => stop_reason,
            [hit] => format!("{stop_reason}; {hit}"),
            [hit, more @ ..] => format!("{stop_reason}; {hit} (and {} more caps)", more.len()),
        };
        let degradations = take_degradations(ctx);
        let stop_reason = match degradations.as_slice() {
            [] => stop_reason,
            all => {
                let falls: Vec<String> = all.iter().map(ToString::to_string).collect();
                format!("{stop_reason}; degraded: {}", falls.join("; "))
            }
        };
        let usage = ctx.usage();
        let cost_usd = ctx.cost_usd();
        let (started_at, duration_ms, segments) = timing(ctx);
        RunResult {
            agent_totals: crate::result::agent_totals(&agents),
            run_id: ctx.run_id().to_string(),
            status,
            stop_reason,
            pattern: self.pattern.to_string(),
            task: self.task.description.clone(),
            plan,
            agents,
            final_output,
            usage,
            cost_usd,
            duration_ms,
            documents: Vec::new(),
            simulated: ctx.shared.simulated.load(Ordering::Relaxed),
            shape: self.shape,
            started_at,
            segments,
            caps,
            sources: std::mem::take(&mut *ctx.shared.sources.lock().unwrap_or_else(|p| p.into_inner())),
            degradations,
        }
    }
}

impl RunOptions {
    fn providers_simulated(&self) -> bool {
        // Known before any call: a run whose only providers are simulated is simulated.
        !self.providers.is_empty() && self.providers.all_simulated()
    }
}

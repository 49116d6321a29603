//! The durable step context: every call that costs money or has effects goes through
//! [`Ctx`], which gives it resilience, limits, budget, events and a record — once, for
//! every pattern.
//!
//! For each step the context
//! 1. looks its [`StepId`] up in the run's record: a step completed before returns its
//!    recorded output at once (resume), after checking that the request hashes the same;
//! 2. otherwise waits for a slot under the run's concurrency limit, reserves the call's
//!    worst-case cost in the [`Ledger`], calls the provider under the step's timeout,
//!    settles the real cost, retries retryable errors with backoff (releasing its slot
//!    while it waits), records the output in the [`RunStore`] before returning it, and
//!    emits events throughout.
//!
//! When the budget refuses a reservation, or the store fails, the context enters a
//! *stopping* state: every later step is skipped without a call. Cancelling a run drops
//! the futures of its steps (see [`crate::run`]); a call dropped in flight records itself
//! as cancelled and returns its budget reservation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::budget::{Amount, Ledger, Refusal};
use crate::event::{EventBus, EventKind};
use crate::limits::Slot;
use crate::limits::{BreakerChange, BreakerWait};
use crate::llm::{CallInfo, Link, LlmError, LlmReply, LlmRequest, ModelError, Price, Providers};
use crate::policy::Policies;
use crate::reply::StepOutcome;
pub use crate::reply::StepReply;
use crate::result::{AgentRecord, AgentStatus};
use crate::step::{StepId, StepSpec};
use crate::store::{DeadLetter, InputHash, LetterWork, RunStore, StepRecord, StoreError};
use crate::usage::{Usage, UsageMeter, UsageTotals};

/// Why a step did not produce an output.
///
/// The larger causes are boxed, so that a step's result (`Result<_, StepError>`) is not sized
/// by its rarest case: a run holds one [`crate::Outcome`] per subtask from the start of its
/// workers to the end of its synthesis (72 bytes each instead of 96).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    #[error("{step}: {error} (after {attempts} attempt(s))")]
    Llm { step: StepId, error: Box<LlmError>, attempts: u32 },
    #[error("{step}: {refusal}")]
    BudgetExhausted { step: StepId, refusal: String },
    #[error("{step}: not started because the run is stopping ({reason})")]
    Stopped { step: StepId, reason: String },
    #[error("{step}: cancelled")]
    Cancelled { step: StepId },
    #[error(
        "{step}: non-determinism: the recorded step had input hash {recorded}, the code now asks with {now}; \
         the run's code or options changed since it was recorded — start a new run instead of resuming"
    )]
    NonDeterminism { step: StepId, recorded: InputHash, now: InputHash },
    #[error("{step}: {error}")]
    Model { step: StepId, error: Box<ModelError> },
    #[error("{step}: {error}")]
    Store { step: StepId, error: Box<StoreError> },
    #[error("{step}: skipped: {reason}")]
    Skipped { step: StepId, reason: String },
    #[error("{step}: {message}")]
    Failed { step: StepId, message: String },
    #[error("{step}: timed out after {after:.1?} (after {attempts} attempt(s))")]
    TimedOut { step: StepId, after: std::time::Duration, attempts: u32 },
    /// Still running when the run's deadline came ([`crate::RunOptions::deadline`]).
    #[error("{step}: cut off by the run's deadline of {}", crate::words::seconds(*deadline))]
    Deadline { step: StepId, deadline: std::time::Duration },
}

impl StepError {
    /// A short machine-readable class, as in events.
    pub fn kind(&self) -> &'static str {
        match self {
            StepError::Llm { error, .. } => error.kind(),
            StepError::BudgetExhausted { .. } => "budget_exhausted",
            StepError::Stopped { .. } => "stopped",
            StepError::Cancelled { .. } => "cancelled",
            StepError::NonDeterminism { .. } => "non_determinism",
            StepError::Model { .. } => "unknown_model",
            StepError::Store { .. } => "store",
            StepError::Skipped { .. } => "skipped",
            StepError::Failed { .. } => "failed",
            StepError::TimedOut { .. } => "timeout",
            StepError::Deadline { .. } => "deadline",
        }
    }

    /// The step ran out of time: its attempts timed out, or the run's deadline cut it off.
    pub fn timed_out(&self) -> bool {
        match self {
            StepError::TimedOut { .. } | StepError::Deadline { .. } => true,
            StepError::Llm { error, .. } => matches!(**error, LlmError::Timeout(_)),
            _ => false,
        }
    }

    pub fn step(&self) -> &StepId {
        match self {
            StepError::Llm { step, .. }
            | StepError::BudgetExhausted { step, .. }
            | StepError::Stopped { step, .. }
            | StepError::Cancelled { step }
            | StepError::NonDeterminism { step, .. }
            | StepError::Model { step, .. }
            | StepError::Store { step, .. }
            | StepError::Skipped { step, .. }
            | StepError::Failed { step, .. }
            | StepError::TimedOut { step, .. }
            | StepError::Deadline { step, .. } => step,
        }
    }
}

/// Why the run stopped starting new work. The first one wins.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Stop {
    Budget(String),
    Cancelled,
    Store(String),
    NonDeterminism(String),
    /// A provider reported usage that no honest count explains, in a run with a budget:
    /// the budget could no longer be kept on its word (see [`crate::budget`]).
    UntrustedUsage(String),
    /// The driver is stopping (a worker's SIGTERM): in-flight calls finish and are
    /// recorded, nothing new starts, and the run goes back to the queue for another driver
    /// to resume ([`crate::RunHandle::hand_back`]).
    HandedBack,
    /// Another driver took the run over (this one's lease expired), or may (its lease could
    /// not be renewed): stop at once, record nothing more about the run as a whole.
    LeaseLost(String),
    /// A model stayed unreachable past its provider's `breaker_max_wait` with no fallback
    /// left: nothing new starts (every step would wait the same way), and the run ends
    /// partial, to be finished by `belt resume --retry-failed` once the model is back.
    Unreachable(String),
    /// The run's deadline came ([`crate::RunOptions::deadline`]): nothing new starts, the
    /// calls in flight are cancelled, and the run ends partial with what it has.
    Deadline(std::time::Duration),
}

impl Stop {
    pub fn describe(&self) -> String {
        match self {
            Stop::Budget(r) => format!("budget exhausted: {r}"),
            Stop::Cancelled => "cancelled".to_string(),
            Stop::Store(e) => format!(
                "the run store failed: {e}; the run is left unfinished, to be resumed from its record \
                 (`belt resume`, or a worker) once the store works"
            ),
            Stop::NonDeterminism(e) | Stop::UntrustedUsage(e) => e.clone(),
            Stop::Unreachable(model) => format!(
                "{model} did not answer again within its breaker_max_wait; once it is back, \
                 `belt resume --retry-failed RUN_ID` runs the failed and skipped steps again"
            ),
            Stop::HandedBack => {
                "handed back: its driver stopped; another one resumes it from its record".into()
            }
            Stop::LeaseLost(why) => {
                format!("interrupted here: {why}; another driver resumes it from its record")
            }
            Stop::Deadline(after) => format!(
                "the run's deadline of {} was reached: no new step started and the calls in flight \
                 were cancelled; the result holds what was done by then",
                crate::words::seconds(*after)
            ),
        }
    }
}

/// How long the engine waits before each retry of a step's record the store refused.
const RECORD_RETRY_DELAYS: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(3),
];

/// A run's plan and tier shape, as shared with its cancel path.
pub(crate) type PlanSlot = (Arc<Vec<crate::plan::Subtask>>, Vec<usize>);

/// Everything a run's steps share.
pub(crate) struct Shared {
    pub run_id: Arc<str>,
    /// The task's context ([`crate::Task::context`]), for patterns to read.
    pub context: Option<serde_json::Value>,
    /// What orchestrators attached to steps ([`Ctx::set_metadata`]).
    pub metadata: Mutex<HashMap<StepId, serde_json::Value>>,
    pub providers: Providers,
    pub store: Arc<dyn RunStore>,
    pub bus: EventBus,
    pub ledger: Ledger,
    /// The budget pool every call also reserves in, if the run draws from one.
    pub pool: Option<crate::shared::BudgetPool>,
    pub cache_ttl: Option<std::time::Duration>,
    pub stream_deltas: bool,
    pub limiter: Semaphore,
    pub concurrency: usize,
    pub cancel: CancellationToken,
    pub stop: Mutex<Option<Stop>>,
    /// Set once `stop` holds a reason: the hot path reads this, not the mutex.
    pub stopping: AtomicBool,
    pub policies: Policies,
    pub tools: crate::tools::Toolbox,
    pub agents: Mutex<Vec<AgentRecord>>,
    pub replay: HashMap<StepId, StepRecord>,
    /// The plan and tier shape once known, for building the result of a cancelled run.
    pub plan: Mutex<Option<PlanSlot>>,
    pub started: Instant,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The segments of the run before this one (a resumed run's), oldest first.
    pub earlier: Vec<crate::result::Segment>,
    pub simulated: AtomicBool,
    /// Tokens and calls, this segment's and the replayed record's.
    pub usage: UsageMeter,
    pub human: crate::human::Human,
    /// Caps that stopped a pattern, in the order they were hit.
    pub caps: Mutex<Vec<crate::caps::CapHit>>,
    /// What tools read for the run ([`Ctx::cite`]), first use first.
    pub sources: Mutex<Vec<crate::tools::Source>>,
    /// Context windows models reported in their `prompt_too_long` answers
    /// ([`Ctx::learn_window`]), by model chain.
    pub windows: Mutex<HashMap<Arc<str>, u64>>,
    // Degradation (issue 16).
    /// How the run degraded so far ([`Ctx::degrade`]), in order.
    pub degradations: Mutex<Vec<crate::result::Degradation>>,
    /// The tier that switches models under load, and its count of signs.
    pub load: Option<crate::load::LoadWatch>,
}

/// A provider call in flight. Cancelling a run drops the futures of its steps; a call
/// dropped before it returned is recorded here as cancelled, and its reservation is
/// given back. Forgotten (not dropped) once the call returns.
struct InFlightCall<'a> {
    ctx: &'a Ctx,
    call: &'a Call<'a>,
    at: &'a Attempt,
    worst: Amount,
    pool: Option<i64>,
}

impl Drop for InFlightCall<'_> {
    fn drop(&mut self) {
        let s = &*self.ctx.shared;
        self.ctx.book_reservation(self.worst, self.pool, Amount { calls: 1, ..Amount::default() });
        s.usage.count_calls(1);
        self.ctx.stop(Stop::Cancelled);
        // The run's deadline cancels calls too: such a step ran out of time.
        let err = match self.ctx.stopping() {
            Some(Stop::Deadline(deadline)) => {
                StepError::Deadline { step: self.call.spec.id.clone(), deadline }
            }
            _ => StepError::Cancelled { step: self.call.spec.id.clone() },
        };
        self.ctx.fail(self.call.spec, self.call.request.model.clone(), self.at, err);
    }
}

/// What is known of a step while it runs.
pub(crate) struct Attempt {
    started: Instant,
    pub attempts: u32,
    /// Milliseconds the attempts waited for the provider's limits.
    limit_wait_ms: u32,
}

/// What the phases of one call share: the step, its request and its hash.
struct Call<'a> {
    spec: &'a StepSpec,
    request: &'a LlmRequest,
    hash: InputHash,
}

/// How one model of the chain served a call.
enum Served {
    Reply(StepReply),
    /// The model failed (retries spent, breaker open, unpriced): the next one may serve.
    Failed(LlmError),
    /// The step ended (stopping, budget, cancelled) and is recorded: no fallback.
    Ended(StepError),
}

/// The outcome of admission for one attempt.
enum Admitted<'c, 'm> {
    /// Admitted: the run's slot, the provider's, and the budget pool's reservation if any.
    Go(tokio::sync::SemaphorePermit<'c>, Slot<'m>, Option<i64>),
    /// The provider's limits refused the model (its breaker is open).
    Refused(LlmError),
    Ended(StepError),
}

/// A run's context. Cheap to clone; every clone is the same run.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) shared: Arc<Shared>,
}

impl Ctx {
    pub(crate) fn new(shared: Shared) -> Self {
        Ctx { shared: Arc::new(shared) }
    }

    pub fn run_id(&self) -> &str {
        &self.shared.run_id
    }

    /// The run's context (the task's, [`crate::Task::context`]), if it has one: what a
    /// router may route on ([`crate::patterns::router::Choose::Context`]) and a loop's
    /// condition may read ([`crate::patterns::iterative::Refine::until_context`]).
    pub fn context(&self) -> Option<&serde_json::Value> {
        self.shared.context.as_ref()
    }

    /// The value at `path` in the run's context ([`crate::plan::context_at`]).
    pub fn context_at(&self, path: &str) -> Option<&serde_json::Value> {
        self.context().and_then(|c| crate::plan::context_at(c, path))
    }

    /// Where the run's questions for people go (see [`crate::patterns::hitl`]): the channel
    /// given in [`crate::RunOptions::human`], or nobody (defaults are taken at once).
    pub fn human(&self) -> &crate::human::Human {
        &self.shared.human
    }

    /// The run's concurrency limit.
    pub fn concurrency(&self) -> usize {
        self.shared.concurrency
    }

    /// Emit an event of the orchestrator's own: `type` `custom`, with `name` (e.g.
    /// `agent_progress`, `review_required`, `debug`) and any JSON `data`. It reaches every
    /// consumer of the run's events — the JSONL log, SSE, webhooks, MCP progress — and the
    /// store, like the engine's own; returns its sequence number.
    ///
    /// ```
    /// # async fn f(ctx: belt_core::Ctx) {
    /// ctx.emit("agent_progress", serde_json::json!({"agent": "critic", "done": 2, "of": 5}));
    /// # }
    /// ```
    pub fn emit(&self, name: impl Into<String>, data: serde_json::Value) -> u64 {
        self.shared.bus.emit(None, EventKind::Custom { name: name.into(), data })
    }

    /// Emit one of the engine's events that is not about one step's call (tiers, plans,
    /// documents).
    pub fn emit_event(&self, step: Option<&StepId>, kind: EventKind) -> u64 {
        self.shared.bus.emit(step, kind)
    }

    /// Why the run is stopping, if it is.
    pub fn stopping(&self) -> Option<Stop> {
        if !self.shared.stopping.load(Ordering::Acquire) {
            return None;
        }
        self.lock_stop().clone()
    }

    /// Stop starting new work, for `stop` (the first reason given is kept).
    pub fn stop(&self, stop: Stop) {
        let mut s = self.lock_stop();
        if s.is_none() {
            *s = Some(stop);
            self.shared.stopping.store(true, Ordering::Release);
        }
    }

    /// Cancel the run: in-flight calls are dropped, no new ones start.
    pub fn cancel(&self) {
        self.stop(Stop::Cancelled);
        self.shared.cancel.cancel();
    }

    /// A token that is cancelled with the run.
    pub fn cancellation(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }

    /// Run futures with at most [`Ctx::concurrency`] of them alive at once, and return their
    /// outputs in the order given. The futures are created lazily from the iterator, so a
    /// fan-out over 100,000 items holds only a window of them in memory.
    pub async fn all<I, F>(&self, futures: I) -> Vec<F::Output>
    where
        I: IntoIterator<Item = F>,
        F: Future,
    {
        futures::stream::iter(futures).buffered(self.shared.concurrency.max(1)).collect().await
    }

    /// One LLM call as a durable step. See the module docs for what happens.
    ///
    /// `request.model` may be a fallback chain, `a/x,b/y`: when a model keeps failing (its
    /// retries are spent) or its circuit breaker is open, the next one serves.
    ///
    /// The call goes through phases, each its own function: replay ([`Ctx::replay`]) and
    /// the response cache ([`Ctx::cached`]); for each model of the chain, admission
    /// ([`Ctx::admit`]: the run's permit, the budget's reservation, the provider's limits),
    /// one attempt ([`Ctx::attempt`]), settlement ([`Ctx::settle`]) and retries
    /// ([`Ctx::serve`]); then fallback to the next model, or the dead-letter queue.
    ///
    /// (Written as a function returning an `async move` block rather than an `async fn`:
    /// an `async fn` keeps a second copy of its by-value arguments in its state, and this
    /// state is what every waiting step holds. The phases take references for the same
    /// reason, and the rare ones are boxed.)
    #[allow(clippy::manual_async_fn)] // deliberate: see above
    pub fn llm(
        &self,
        spec: StepSpec,
        request: LlmRequest,
    ) -> impl Future<Output = Result<StepReply, StepError>> + Send + '_ {
        use futures::future::Either;
        // A tier with tools runs the agent loop (see `tools::Toolbox`); a request that
        // carries tools already is a loop's round. Either keeps the plain call unboxed.
        if !self.shared.tools.is_empty()
            && request.tools.is_empty()
            && let Some(tools) = self.shared.tools.for_tier(&spec.tier)
        {
            let looping: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
                Box::pin(self.llm_with_tools(spec, request, tools));
            return Either::Left(looping);
        }
        Either::Right(self.call_model(spec, request))
    }

    /// One LLM call as a recorded step: what [`Ctx::llm`] does for a tier without tools,
    /// and each round of the agent loop.
    #[allow(clippy::manual_async_fn)] // deliberate: see `llm`
    pub(crate) fn call_model(
        &self,
        spec: StepSpec,
        request: LlmRequest,
    ) -> impl Future<Output = Result<StepReply, StepError>> + Send + '_ {
        async move {
            if let Some(rec) = self.recorded(&spec.id) {
                return self.replay(spec, rec, request_hash(&request));
            }
            // Only this small log lives across the awaits below; the step's full record is
            // built when it ends. With 100,000 branches in flight, every byte here counts:
            // the hash lives only in `call`, the model's name is the request's, and of the
            // chain only the link being tried is kept (the next one is resolved again after a
            // failure, which is rare).
            let mut at = self.begin();
            if let Some(stop) = self.stopping() {
                return Err(self.refuse_start(&spec, request.model.clone(), &at, stop));
            }
            // The models as routed when the call starts: a fallback takes the next of these.
            let models = self.route(&spec, &request.model);
            let (mut link, links) = match self.shared.providers.chain(models) {
                Ok(chain) => (chain[0], chain.len()),
                Err(error) => {
                    let err = StepError::Model { step: spec.id.clone(), error: Box::new(error) };
                    return Err(self.fail(&spec, request.model.clone(), &at, err));
                }
            };
            let call = Call { spec: &spec, request: &request, hash: request_hash(&request) };
            // A reply goes into `complete`'s boxed future before that is awaited, never into
            // a local that lives across the await: this future's state is what every waiting
            // step holds, and a 160-byte reply kept there (and the padding the layout adds
            // around it) made every step's state larger while it waits for its provider.
            if self.shared.cache_ttl.is_some() {
                let hit = Box::pin(self.cached(&spec, call.hash, &call.request.model)).await;
                if let Some(done) = hit.map(|hit| Box::pin(self.complete(&spec, &at, call.hash, hit))) {
                    return done.await;
                }
            }
            // Only the last model's error is kept, and only once the chain is spent.
            let mut index = 0;
            let error = loop {
                let last = index + 1 == links;
                let done = match self.serve(&call, &link, &mut at, last).await {
                    Served::Reply(reply) => Box::pin(self.complete(&spec, &at, call.hash, reply)),
                    Served::Ended(err) => return Err(err),
                    Served::Failed(error) => {
                        let next =
                            self.shared.providers.chain(models).ok().and_then(|c| c.get(index + 1).copied());
                        self.fall_back(&spec, &link, next.as_ref(), &error);
                        match next {
                            Some(next) => {
                                (link, index) = (next, index + 1);
                                continue;
                            }
                            None => break error,
                        }
                    }
                };
                return done.await;
            };
            if spec.resizable && matches!(error, LlmError::PromptTooLong { .. }) {
                return Err(self.hand_back_oversized(&spec, &request.model, error, &at));
            }
            let err = StepError::Llm { step: spec.id.clone(), error: Box::new(error), attempts: at.attempts };
            let model = request.model.clone();
            // Kept with its request, so it can be retried later (`belt dlq retry`).
            Box::pin(self.dead_letter(&spec, LetterWork::Llm(request), &err, at.attempts)).await;
            Err(self.fail(&spec, model, &at, err))
        }
    }

    /// Say that `spec` tries again after `error` (its attempt `attempt`), in `delay_ms`.
    /// `model` is the one whose attempt failed ("" for work that calls none).
    pub(crate) fn retrying(
        &self,
        spec: &StepSpec,
        model: &str,
        attempt: u32,
        (error, kind): (&str, &str),
        delay_ms: u64,
    ) {
        self.shared.bus.emit(
            Some(&spec.id),
            EventKind::StepRetrying {
                tier: spec.tier.clone(),
                attempt,
                error: error.to_string(),
                error_kind: kind.to_string(),
                delay_ms,
                model: Arc::from(model),
            },
        );
    }

    /// A resizable step's prompt did not fit its model: said in a `step_retrying` event (the
    /// pattern asks again, smaller) and handed back without a record of failure.
    fn hand_back_oversized(&self, spec: &StepSpec, model: &str, error: LlmError, at: &Attempt) -> StepError {
        self.retrying(spec, model, at.attempts, (&error.to_string(), error.kind()), 0);
        StepError::Llm { step: spec.id.clone(), error: Box::new(error), attempts: at.attempts }
    }

    /// What `models` (a model or a fallback chain) can do and hold: the first model's
    /// capabilities, with the smallest context window any model of the chain reports (a
    /// prompt sized for it fits them all). `None` when no provider knows anything.
    /// A window this run learned from the model itself ([`Ctx::learn_window`]) wins.
    pub async fn capabilities(&self, models: &str) -> Option<crate::llm::Capabilities> {
        let smaller = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let learned = self.shared.windows.lock().unwrap_or_else(|p| p.into_inner()).get(models).copied();
        let chain = self.shared.providers.chain(models).ok()?;
        let mut found: Option<crate::llm::Capabilities> = None;
        for link in &chain {
            let Some(caps) = link.provider.capabilities(link.model).await else { continue };
            let f = found.get_or_insert(caps);
            f.context_window = smaller(f.context_window, caps.context_window);
        }
        if learned.is_some() {
            let caps = found.get_or_insert_with(Default::default);
            caps.context_window = smaller(caps.context_window, learned);
        }
        found
    }

    /// Remember the context window `models` reported (a `prompt_too_long` answer that said
    /// it), so the rest of the run sizes its prompts for it without being refused first.
    pub fn learn_window(&self, models: &str, window: u64) {
        let mut windows = self.shared.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry(Arc::from(models)).or_insert(window);
        *w = (*w).min(window);
    }

    /// The response cache's answer to this request, if it has one (it costs nothing).
    async fn cached(&self, spec: &StepSpec, hash: InputHash, model_name: &Arc<str>) -> Option<StepReply> {
        let mut hit = self.shared.store.cache_get(hash).await.ok().flatten()?;
        self.shared.bus.emit(
            Some(&spec.id),
            EventKind::StepStarted { tier: spec.tier.clone(), model: model_name.clone() },
        );
        let model = std::mem::take(&mut hit.outcome.model);
        hit.outcome = StepOutcome { model, cached: true, ..StepOutcome::default() };
        hit.outcome.unpriced = false;
        Some(hit)
    }

    /// One model of the chain: admission, attempts and settlement, retrying what is worth
    /// retrying under the tier's policy.
    ///
    /// The `last` model of the chain waits out an outage instead of failing: while its
    /// breaker is open, admission waits for the half-open trial to succeed (up to the
    /// provider's `breaker_max_wait`, counted from the step's first failure in the outage),
    /// and a refused or broken connection while the breaker is open is part of that outage
    /// — it spends none of the step's retries (when it has any). Earlier models of a chain
    /// fail fast to the next one, as before.
    ///
    /// (A function returning an `async move` block, as [`Ctx::llm`] is, so that its
    /// arguments are kept once; the price is asked again at settlement rather than held
    /// across the attempt: both are bytes of every waiting step's state.)
    #[allow(clippy::manual_async_fn)] // deliberate: see above
    fn serve<'a>(
        &'a self,
        call: &'a Call<'a>,
        link: &'a Link<'a>,
        at: &'a mut Attempt,
        last: bool,
    ) -> impl Future<Output = Served> + Send + 'a {
        async move {
            if link.provider.is_simulated() {
                self.shared.simulated.store(true, Ordering::Relaxed);
            }
            let worst = match self.worst_case(call, link) {
                Ok(worst) => worst,
                Err(error) => return Served::Failed(error),
            };
            let policy = self.shared.policies.for_tier(&call.spec.tier);
            let max_wait = || link.limiter.limits().breaker_max_wait;
            let mut tries = 0;
            // When this step's wait for the model to come back ends (set at its first failure
            // during an outage, so that outage after outage cannot keep it waiting forever).
            let mut outage_until: Option<tokio::time::Instant> = None;
            loop {
                let wait = match (last, outage_until) {
                    (false, _) => BreakerWait::FailFast,
                    (true, Some(until)) => BreakerWait::Until(until),
                    (true, None) => BreakerWait::For(max_wait()),
                };
                let (permit, slot, pool) = match self.admit(call, link, at, worst, wait).await {
                    Admitted::Go(permit, slot, pool) => (permit, slot, pool),
                    Admitted::Refused(error) => {
                        return Served::Failed(self.refused(link, error, last, max_wait()));
                    }
                    Admitted::Ended(err) => return Served::Ended(err),
                };
                at.attempts += 1;
                at.limit_wait_ms = at.limit_wait_ms.saturating_add(slot.waited_ms);
                tries += 1;
                // The outcome lives in this block only: a local of the loop's body would be
                // kept (144 bytes) across the awaits below, in every waiting step's state.
                let settling = {
                    let began = self.shared.load.as_ref().map(|_| Instant::now());
                    let outcome = self.attempt(call, link, at, (worst, pool), policy.timeout).await;
                    if let Some(began) = began {
                        self.watch_load(call, &outcome, began.elapsed());
                    }
                    drop(permit);
                    self.shared.usage.count_calls(1);
                    let used = outcome.as_ref().map_or(0, |r| r.usage.total());
                    if let Some(change) = link.limiter.settle(slot, used, outcome.as_ref().map(|_| ())) {
                        self.report_breaker(call.spec, link.full, change);
                    }
                    // Boxed: settlement's state (the reply, the booked usage, the step's reply
                    // while it is cached) would otherwise sit in every waiting step's future.
                    let price = link.provider.price(link.model);
                    outcome.map(|reply| Box::pin(self.settle(call, price, (worst, pool), reply)))
                };
                let error = match settling {
                    Ok(settling) => return Served::Reply(settling.await),
                    Err(error) => error,
                };
                self.book_reservation(worst, pool, Amount { calls: 1, ..Amount::default() });
                if last
                    && policy.retries > 0
                    && self.stopping().is_none()
                    && matches!(error, LlmError::Connection(_))
                    && link.limiter.breaker_open(link.model)
                {
                    // The server is unreachable and the breaker already knows: this step's try
                    // is not spent (the outage counts once, not once per step); it waits the
                    // outage out in admission. A step allowed no retries gets none.
                    tries -= 1;
                    outage_until.get_or_insert_with(|| tokio::time::Instant::now() + max_wait());
                    self.retrying(call.spec, link.full, at.attempts, (&error.to_string(), error.kind()), 0);
                    continue;
                }
                if !(error.is_retryable() && tries <= policy.retries && self.stopping().is_none()) {
                    return Served::Failed(error);
                }
                let delay = policy.backoff(&call.spec.id, at.attempts, error.retry_after());
                let delay_ms = delay.as_millis() as u64;
                self.retrying(
                    call.spec,
                    link.full,
                    at.attempts,
                    (&error.to_string(), error.kind()),
                    delay_ms,
                );
                // Boxed: a rare path, kept out of every step's future.
                Box::pin(tokio::time::sleep(delay)).await;
            }
        }
    }

    /// The most a call to `link` can spend (what admission reserves): the request's bound
    /// on input tokens, its output limit, and their price. A model without a known price
    /// is refused when the run has a USD budget, which it could not keep.
    fn worst_case(&self, call: &Call<'_>, link: &Link<'_>) -> Result<Amount, LlmError> {
        let request = call.request;
        let price = link.provider.price(link.model);
        // A USD budget cannot be kept with a model whose price is unknown: that model is
        // refused before any call (the next one of the chain may serve).
        if price.is_none() && self.shared.ledger.budget().max_cost_usd.is_some() {
            return Err(LlmError::InvalidRequest(format!(
                "{} has no known price, so the USD budget cannot be kept with it; set its price \
                 in belt.toml ([prices.\"{}\"] input = …, output = … per million tokens) or run \
                 without a USD budget",
                link.full, link.full
            )));
        }
        let bound = request.input_token_bound();
        Ok(Amount {
            calls: 1,
            tokens: bound + request.max_tokens as u64,
            cost_usd: price.map_or(0.0, |p| p.cost_of(bound, request.max_tokens as u64)),
        })
    }

    /// Admission of one attempt: a slot under the run's concurrency limit, the run not
    /// stopping, the budget's reservation of the call's worst case, and a place under the
    /// provider's own limits (shared by every run of the process), waited for before the
    /// call's timeout starts.
    async fn admit<'m>(
        &self,
        call: &Call<'_>,
        link: &Link<'m>,
        at: &Attempt,
        worst: Amount,
        wait: BreakerWait,
    ) -> Admitted<'_, 'm> {
        let s = &*self.shared;
        let (spec, model_name) = (call.spec, &call.request.model);
        let Some(permit) = self.permit().await else {
            return Admitted::Ended(self.refuse_start(spec, model_name.clone(), at, Stop::Cancelled));
        };
        if let Some(stop) = self.stopping() {
            drop(permit);
            if at.attempts == 0 {
                return Admitted::Ended(self.refuse_start(spec, model_name.clone(), at, stop));
            }
            let err = stop_error(&spec.id, stop);
            return Admitted::Ended(self.fail(spec, model_name.clone(), at, err));
        }
        if let Err(refusal) = s.ledger.reserve(worst) {
            drop(permit);
            // This step fails with `budget_exhausted`; the steps after it find the run
            // stopping and are skipped without trying.
            let (limit, reason) = (refusal.limit.to_string(), refusal.to_string());
            self.exhaust_budget(&spec.id, limit, &refusal, reason.clone());
            let err = StepError::BudgetExhausted { step: spec.id.clone(), refusal: reason };
            return Admitted::Ended(self.fail(spec, model_name.clone(), at, err));
        }
        let pool = match &s.pool {
            None => None,
            // Boxed: only runs that draw from a pool wait on it.
            Some(pool) => match Box::pin(self.reserve_in_pool(spec, pool, worst)).await {
                Ok(id) => Some(id),
                Err(err) => {
                    drop(permit);
                    s.ledger.settle(worst, Amount::default());
                    return Admitted::Ended(self.fail(spec, model_name.clone(), at, err));
                }
            },
        };
        if at.attempts == 0 {
            s.bus.emit(
                Some(&spec.id),
                EventKind::StepStarted { tier: spec.tier.clone(), model: model_name.clone() },
            );
        }
        if link.limiter.server_slots_unknown() {
            // Once per provider: boxed, out of every step's future.
            Box::pin(link.limiter.adopt_server_slots(link.provider.name(), link.provider.server_slots()))
                .await;
        }
        let mut slot = match link.limiter.acquire_until(link.model, worst.tokens, wait).await {
            Ok(slot) => slot,
            Err(open) => {
                self.book_reservation(worst, pool, Amount::default());
                return Admitted::Refused(open);
            }
        };
        if link.limiter.is_shared()
            && let Err(unavailable) = Box::pin(link.limiter.acquire_shared(&mut slot)).await
        {
            let error = StoreError::Backend(unavailable.to_string());
            // The limits cannot be kept without the store: the run stops, resumable.
            drop(slot);
            self.book_reservation(worst, pool, Amount::default());
            self.stop(Stop::Store(error.to_string()));
            let err = StepError::Store { step: spec.id.clone(), error: Box::new(error) };
            return Admitted::Ended(self.fail(spec, model_name.clone(), at, err));
        }
        Admitted::Go(permit, slot, pool)
    }

    /// One provider call under the step's timeout, streaming deltas to the run's events
    /// when asked to.
    ///
    /// (An `async move` block whose guard is made before it, so the call's reservation is
    /// held once, in the guard, rather than in both the arguments and the guard. The block
    /// is awaited as soon as it is made.)
    #[allow(clippy::manual_async_fn)] // deliberate: see above
    fn attempt<'a>(
        &'a self,
        call: &'a Call<'a>,
        link: &'a Link<'a>,
        at: &'a Attempt,
        (worst, pool): (Amount, Option<i64>),
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<LlmReply, LlmError>> + Send + 'a {
        // Cancelling a run drops its futures; this guard records a call dropped mid-flight
        // and gives its budget reservation back.
        let guard = InFlightCall { ctx: self, call, at, worst, pool };
        async move {
            let info = CallInfo {
                step: guard.call.spec.id.clone(),
                attempt: guard.at.attempts,
                run_id: self.shared.run_id.clone(),
            };
            let call_future = link.provider.complete(link.model, guard.call.request, &info);
            let outcome = if self.shared.stream_deltas {
                // Boxed: only runs that stream pay for the sink in their futures.
                let (sink, flush) = self.delta_sink(&guard.call.spec.id);
                let r =
                    Box::pin(tokio::time::timeout(timeout, crate::llm::with_delta_sink(sink, call_future)))
                        .await;
                flush();
                r
            } else {
                tokio::time::timeout(timeout, call_future).await
            }
            .unwrap_or(Err(LlmError::Timeout(timeout)));
            std::mem::forget(guard);
            outcome
        }
    }

    /// Settlement of an answered call: its real cost booked in place of the reservation
    /// (with the budget's warnings), its usage counted, the reply cached when asked to.
    async fn settle(
        &self,
        call: &Call<'_>,
        price: Option<Price>,
        (worst, pool): (Amount, Option<i64>),
        reply: LlmReply,
    ) -> StepReply {
        let s = &*self.shared;
        let (usage, reported_usage) = self.book(call, &reply.model, reply.usage, worst);
        let cost = price.map_or(0.0, |p| p.cost(usage));
        let actual = Amount { calls: 1, tokens: usage.total(), cost_usd: cost };
        self.book_reservation(worst, pool, actual);
        s.usage.add(&usage, price.is_none());
        let model = if reply.model == *call.request.model {
            call.request.model.clone()
        } else {
            Arc::from(reply.model)
        };
        let out = StepReply {
            text: Arc::from(reply.text),
            outcome: StepOutcome {
                model,
                usage,
                cost_usd: cost,
                reported_usage,
                finish_reason: reply.finish_reason.map(crate::reply::finish_reason),
                unpriced: price.is_none(),
                ..StepOutcome::default()
            },
            simulated: reply.simulated,
            tool_calls: reply.tool_calls,
        };
        if out.outcome.truncated() {
            s.bus.emit(
                Some(&call.spec.id),
                EventKind::StepTruncated {
                    tier: call.spec.tier.clone(),
                    model: out.outcome.model.clone(),
                    max_tokens: call.request.max_tokens,
                },
            );
        }
        if let Some(ttl) = s.cache_ttl
            && let Err(e) = Box::pin(s.store.cache_put(call.hash, &out, ttl)).await
        {
            tracing::warn!("could not cache the reply of {}: {e}", call.spec.id);
        }
        out
    }

    /// What an answered call is booked at: the usage its provider reported, or — when that
    /// is more than the request allowed (`worst`: the input bound plus `max_tokens`) — the
    /// report cut to those limits, with the report kept beside it and said in a
    /// `usage_overreported` event. A run with a budget stops when the report is past any
    /// honest miscount: more output than `max_tokens`, which providers enforce, or more
    /// than twice the input bound and a hidden preamble's allowance (tool-use system
    /// prompts are billed as input the request does not show).
    fn book(
        &self,
        call: &Call<'_>,
        model: &str,
        reported: Usage,
        worst: Amount,
    ) -> (Usage, Option<Box<Usage>>) {
        let max_output = call.request.max_tokens as u64;
        let bound = worst.tokens.saturating_sub(max_output);
        let Some(booked) = reported.capped(bound, max_output) else { return (reported, None) };
        const PREAMBLE: u64 = 1024;
        let honest_input = bound.saturating_mul(2).saturating_add(PREAMBLE);
        let untrusted = reported.output_tokens > max_output || reported.input_tokens > honest_input;
        let stops_run = untrusted && !self.shared.ledger.budget().is_unlimited();
        let spec = call.spec;
        self.shared.bus.emit(
            Some(&spec.id),
            EventKind::UsageOverreported {
                tier: spec.tier.clone(),
                model: Arc::from(model),
                reported: Box::new(reported),
                booked: Box::new(booked),
                stops_run,
            },
        );
        if stops_run {
            self.stop(Stop::UntrustedUsage(format!(
                "{model} reported {} input and {} output tokens for {} (allowed at most {bound} input and \
                 {max_output} output), so its usage reports cannot keep the budget; the call was booked \
                 at its limits and the run stopped. Check the provider's base URL and its billing before \
                 resuming",
                reported.input_tokens, reported.output_tokens, spec.id
            )));
        }
        (booked, Some(Box::new(reported)))
    }

    /// The error of a model whose breaker refused the call: named in full (`provider/model`,
    /// which the limiter does not know). For the last model of the chain the refusal means
    /// it stayed down past `breaker_max_wait`: the run stops starting new work.
    fn refused(
        &self,
        link: &Link<'_>,
        error: LlmError,
        last: bool,
        max_wait: std::time::Duration,
    ) -> LlmError {
        match error {
            LlmError::CircuitOpen { failures, .. } => {
                if last {
                    self.stop(Stop::Unreachable(link.full.to_string()));
                }
                LlmError::CircuitOpen {
                    model: link.full.to_string(),
                    failures,
                    waited: last.then_some(max_wait),
                }
            }
            other => other,
        }
    }

    /// The models a call of `spec` goes to: the request's, unless its tier switched to a
    /// faster model under load ([`crate::load`]).
    fn route<'a>(&'a self, spec: &StepSpec, requested: &'a str) -> &'a str {
        match self.shared.load.as_ref().and_then(|w| w.route(&spec.tier)) {
            Some(faster) => faster,
            None => requested,
        }
    }

    /// Count the signs of load of an attempt of the watched tier (a 429, a slow answer), and
    /// switch the tier when they reach the threshold.
    fn watch_load(&self, call: &Call<'_>, outcome: &Result<LlmReply, LlmError>, took: std::time::Duration) {
        let Some(watch) = &self.shared.load else { return };
        if call.spec.tier != watch.switch.tier {
            return;
        }
        let sign = match outcome {
            Err(LlmError::RateLimited { .. }) => crate::load::Sign::RateLimited,
            Ok(_) if watch.switch.slow.is_some_and(|slow| took > slow) => crate::load::Sign::Slow,
            _ => return,
        };
        if let Some(reason) = watch.note(sign) {
            self.degrade(crate::result::Degradation {
                kind: crate::result::DegradeKind::Model,
                tier: Some(call.spec.tier.clone()),
                from: call.request.model.to_string(),
                to: watch.switch.to.to_string(),
                reason,
            });
        }
    }

    /// Say that the run degrades — a pattern falling to a simpler form, a tier switching
    /// models under load: a `degraded` event, and an entry of the result's `degradations`
    /// (and so a line of its report).
    pub fn degrade(&self, degradation: crate::result::Degradation) {
        self.shared.bus.emit(None, EventKind::Degraded { degradation: Box::new(degradation.clone()) });
        self.shared.degradations.lock().unwrap_or_else(|p| p.into_inner()).push(degradation);
    }

    /// Say in the run's events that the next model of the chain takes over.
    fn fall_back(&self, spec: &StepSpec, from: &Link<'_>, to: Option<&Link<'_>>, error: &LlmError) {
        if let Some(next) = to
            && self.stopping().is_none()
        {
            self.shared.bus.emit(
                Some(&spec.id),
                EventKind::StepFallback {
                    tier: spec.tier.clone(),
                    from: Arc::from(from.full),
                    to: Arc::from(next.full),
                    error: error.to_string(),
                },
            );
        }
    }

    /// One LLM call for a structured reply: asks for JSON matching the schema of `T`
    /// ([`LlmRequest::json_schema_for`]) and parses the reply into a `T`. A reply that does
    /// not parse fails the step's caller with [`StepError::Failed`] (the call itself is
    /// recorded, so a resumed run does not pay for it again).
    pub async fn llm_typed<T>(&self, spec: StepSpec, request: LlmRequest) -> Result<(T, StepReply), StepError>
    where
        T: schemars::JsonSchema + DeserializeOwned,
    {
        let id = spec.id.clone();
        let reply = self.llm(spec, request.json_schema_for::<T>()).await?;
        match serde_json::from_str::<T>(&reply.text) {
            Ok(value) => Ok((value, reply)),
            Err(e) => Err(StepError::Failed {
                step: id,
                message: format!(
                    "the reply is not a valid {} ({e}); it was: {}",
                    T::schema_name(),
                    reply.text.chars().take(200).collect::<String>()
                ),
            }),
        }
    }

    /// A sink that turns a call's streamed text into `step_delta` events, at most one per
    /// 100 ms, and a flush for what is left when the call ends.
    fn delta_sink(&self, step: &StepId) -> (crate::llm::DeltaSink, impl FnOnce() + use<>) {
        const EVERY: std::time::Duration = std::time::Duration::from_millis(100);
        let pending: Arc<Mutex<(String, Option<Instant>)>> = Arc::new(Mutex::new((String::new(), None)));
        let emit = {
            let ctx = self.clone();
            let step = step.clone();
            move |text: String| {
                ctx.shared.bus.emit(Some(&step), EventKind::StepDelta { text });
            }
        };
        let sink = {
            let pending = pending.clone();
            let emit = emit.clone();
            Arc::new(move |text: &str| {
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                p.0.push_str(text);
                if p.1.is_none_or(|at| at.elapsed() >= EVERY) {
                    p.1 = Some(Instant::now());
                    emit(std::mem::take(&mut p.0));
                }
            }) as crate::llm::DeltaSink
        };
        let flush = move || {
            let rest = std::mem::take(&mut pending.lock().unwrap_or_else(|e| e.into_inner()).0);
            if !rest.is_empty() {
                emit(rest);
            }
        };
        (sink, flush)
    }

    /// Say in the run's events that a model's breaker opened or closed.
    fn report_breaker(&self, spec: &StepSpec, model: &str, change: BreakerChange) {
        let kind = match change {
            BreakerChange::Opened { failures, .. } => {
                EventKind::BreakerOpened { model: Arc::from(model), failures }
            }
            BreakerChange::Closed { .. } => EventKind::BreakerClosed { model: Arc::from(model) },
        };
        self.shared.bus.emit(Some(&spec.id), kind);
    }

    pub(crate) async fn dead_letter(
        &self,
        spec: &StepSpec,
        work: LetterWork,
        err: &StepError,
        attempts: u32,
    ) {
        let s = &*self.shared;
        let letter = DeadLetter {
            id: 0,
            run_id: s.run_id.to_string(),
            step: spec.id.clone(),
            tier: spec.tier.clone(),
            error: err.to_string(),
            error_kind: err.kind().to_string(),
            attempts,
            work,
            created_at: chrono::Utc::now(),
        };
        if let Err(e) = s.store.put_dead_letter(&letter).await {
            tracing::warn!("could not record the failed step {} for a later retry: {e}", spec.id);
        }
    }

    /// A slot under the run's concurrency limit (`None` only if the limiter is closed).
    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let s = &*self.shared;
        // Most calls find a free slot at once. Waiting is the rare path: it is boxed so its
        // state does not enlarge every step's future.
        match s.limiter.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => Box::pin(s.limiter.acquire()).await.ok(),
        }
    }

    /// Record that a step was not run, with the reason (its inputs failed, say).
    pub fn skip(&self, spec: StepSpec, model: &str, reason: impl Into<String>) -> StepError {
        let reason = reason.into();
        let mut record = self.unfinished(&spec, Arc::from(model), &self.begin(), AgentStatus::Skipped);
        record.error = Some(reason.clone());
        self.shared
            .bus
            .emit(Some(&spec.id), EventKind::StepSkipped { tier: spec.tier, reason: reason.clone() });
        self.push(record);
        StepError::Skipped { step: spec.id, reason }
    }

    /// Note documents a tool read for the run (each listed once, in the result and report).
    /// Replayed tool calls cite theirs again, so a resumed run lists them all.
    pub fn cite(&self, sources: &[crate::tools::Source]) {
        if sources.is_empty() {
            return;
        }
        let mut all = self.shared.sources.lock().unwrap_or_else(|p| p.into_inner());
        for source in sources {
            if !all.iter().any(|s| s.url == source.url) {
                all.push(source.clone());
            }
        }
    }

    /// Totals so far.
    pub fn usage(&self) -> UsageTotals {
        self.shared.usage.totals()
    }

    /// Cost booked so far, in USD.
    pub fn cost_usd(&self) -> f64 {
        self.shared.ledger.spent().cost_usd
    }

    /// The recorded outcome of `step`, when resuming a run that completed it.
    pub(crate) fn recorded(&self, step: &StepId) -> Option<&StepRecord> {
        // A fresh run has nothing recorded: skip hashing the id.
        if self.shared.replay.is_empty() { None } else { self.shared.replay.get(step) }
    }

    pub(crate) fn replay(
        &self,
        spec: StepSpec,
        rec: &StepRecord,
        hash: InputHash,
    ) -> Result<StepReply, StepError> {
        let s = &*self.shared;
        if rec.input_hash != hash {
            let err =
                StepError::NonDeterminism { step: spec.id.clone(), recorded: rec.input_hash, now: hash };
            self.stop(Stop::NonDeterminism(err.to_string()));
            return Err(self.fail(&spec, rec.reply.outcome.model.clone(), &self.begin(), err));
        }
        if rec.reply.simulated {
            s.simulated.store(true, Ordering::Relaxed);
        }
        let mut reply = rec.reply.clone();
        reply.outcome.replayed = true;
        reply.outcome.cached = false;
        // Nothing is spent again: the event says so, and keeps what the step cost then.
        let spent_now = StepOutcome { usage: Default::default(), cost_usd: 0.0, ..reply.outcome.clone() };
        s.bus.emit(
            Some(&spec.id),
            EventKind::StepCompleted {
                tier: spec.tier.clone(),
                outcome: spent_now,
                recorded_cost_usd: Some(reply.outcome.cost_usd),
            },
        );
        let mut record = self.record(&spec, &self.begin(), AgentStatus::Completed, reply.outcome.clone());
        record.output = Some(reply.text.clone());
        self.push(record);
        Ok(reply)
    }

    /// Write a step's record again after the store failed to (a dropped connection, a
    /// database restarting): a call paid for is worth a few seconds of waiting. Only
    /// [`StoreError::Backend`] is retried; a damaged or busy store will not heal by itself.
    async fn retry_record(&self, record: &StepRecord) -> Result<(), StoreError> {
        let mut outcome = Err(StoreError::Backend(String::new()));
        for delay in RECORD_RETRY_DELAYS {
            tokio::time::sleep(delay).await;
            outcome = self.shared.store.put_step(&self.shared.run_id, record).await;
            match &outcome {
                Err(StoreError::Backend(e)) => {
                    tracing::warn!(
                        "run {}: recording step {} failed ({e}); retrying",
                        self.run_id(),
                        record.step
                    )
                }
                _ => return outcome,
            }
        }
        outcome
    }

    /// The end of a step that produced `reply`: its outcome completed (time, attempts),
    /// recorded durably, announced and reported, in that order.
    pub(crate) async fn complete(
        &self,
        spec: &StepSpec,
        at: &Attempt,
        hash: InputHash,
        mut reply: StepReply,
    ) -> Result<StepReply, StepError> {
        let s = &*self.shared;
        reply.outcome.duration_ms = at.started.elapsed().as_millis() as u64;
        reply.outcome.attempts = at.attempts;
        reply.outcome.limit_wait_ms = at.limit_wait_ms;
        // The reply goes into the record and comes back out once it is written: no copy.
        let step_record =
            StepRecord { step: spec.id.clone(), tier: spec.tier.clone(), input_hash: hash, reply };
        // The record is durable before the output is used downstream (see store docs).
        let mut written = s.store.put_step(&s.run_id, &step_record).await;
        if let Err(StoreError::Backend(_)) = written {
            // Boxed: the retries' state stays out of every step's future.
            written = Box::pin(self.retry_record(&step_record)).await;
        }
        let reply = step_record.reply;
        if let Err(error) = written {
            self.stop(Stop::Store(error.to_string()));
            let err = StepError::Store { step: spec.id.clone(), error: Box::new(error) };
            return Err(self.fail(spec, reply.outcome.model, at, err));
        }
        s.bus.emit(
            Some(&spec.id),
            EventKind::StepCompleted {
                tier: spec.tier.clone(),
                outcome: reply.outcome.clone(),
                recorded_cost_usd: None,
            },
        );
        let mut record = self.record(spec, at, AgentStatus::Completed, reply.outcome.clone());
        record.output = Some(reply.text.clone());
        self.push(record);
        Ok(reply)
    }

    pub(crate) fn begin(&self) -> Attempt {
        Attempt { started: Instant::now(), attempts: 0, limit_wait_ms: 0 }
    }

    fn record(
        &self,
        spec: &StepSpec,
        at: &Attempt,
        status: AgentStatus,
        outcome: StepOutcome,
    ) -> AgentRecord {
        AgentRecord {
            step: spec.id.clone(),
            tier: spec.tier.clone(),
            status,
            inputs: spec.inputs.clone(),
            output: None,
            error: None,
            outcome,
            // Milliseconds since the run started: derived, not kept in every waiting step.
            started_ms: at.started.saturating_duration_since(self.shared.started).as_millis() as u64,
            metadata: None,
        }
    }

    /// The record of a step that ended without an output: what it spent trying.
    fn unfinished(&self, spec: &StepSpec, model: Arc<str>, at: &Attempt, status: AgentStatus) -> AgentRecord {
        let outcome = StepOutcome { attempts: at.attempts, ..StepOutcome::of(model) };
        self.record(spec, at, status, outcome)
    }

    pub(crate) fn fail(&self, spec: &StepSpec, model: Arc<str>, at: &Attempt, err: StepError) -> StepError {
        let status = if err.timed_out() { AgentStatus::TimedOut } else { AgentStatus::Failed };
        let mut record = self.unfinished(spec, model, at, status);
        record.error = Some(err.to_string());
        record.outcome.duration_ms = at.started.elapsed().as_millis() as u64;
        self.shared.bus.emit(
            Some(&spec.id),
            EventKind::StepFailed {
                tier: spec.tier.clone(),
                error: err.to_string(),
                error_kind: err.kind().to_string(),
                attempts: at.attempts,
                model: record.outcome.model.clone(),
            },
        );
        self.push(record);
        err
    }

    /// The run is stopping before this step made any call: it is skipped, not failed.
    pub(crate) fn refuse_start(
        &self,
        spec: &StepSpec,
        model: Arc<str>,
        at: &Attempt,
        stop: Stop,
    ) -> StepError {
        let err =
            StepError::Skipped { step: spec.id.clone(), reason: format!("not started: {}", stop.describe()) };
        let mut record = self.unfinished(spec, model, at, AgentStatus::Skipped);
        record.error = Some(err.to_string());
        self.shared.bus.emit(
            Some(&spec.id),
            EventKind::StepSkipped { tier: spec.tier.clone(), reason: err.to_string() },
        );
        self.push(record);
        err
    }

    /// Settle an attempt's reservation `worst` to `actual`: in the run's ledger (with its
    /// 80% warnings) and, in the background, in the budget pool it was also reserved in.
    fn book_reservation(&self, worst: Amount, pool: Option<i64>, actual: Amount) {
        let s = &*self.shared;
        for w in s.ledger.settle(worst, actual) {
            s.bus.emit(None, EventKind::BudgetWarning { limit: w.limit.into(), used: w.used, max: w.max });
        }
        if let (Some(id), Some(pool)) = (pool, s.pool.clone()) {
            // The call's end does not wait on the store; until the settlement lands the pool
            // keeps the (larger) reservation, which errs on the safe side.
            tokio::spawn(async move {
                if let Err(e) = pool.pools.settle(&pool.name, id, actual).await {
                    tracing::warn!("could not settle a reservation in budget pool {}: {e}", pool.name);
                }
            });
        }
    }

    /// Reserve an attempt's worst case in the run's budget pool: its id, or the step's error
    /// (the pool's cap, which stops the run as its own budget would; or the store's failure,
    /// which leaves it resumable).
    async fn reserve_in_pool(
        &self,
        spec: &StepSpec,
        pool: &crate::shared::BudgetPool,
        worst: Amount,
    ) -> Result<i64, StepError> {
        match pool.pools.reserve(&pool.name, &pool.caps, worst).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(refused)) => {
                let limit =
                    format!("pool {} per {}: {}", refused.pool, refused.period, refused.refusal.limit);
                let reason = refused.to_string();
                self.exhaust_budget(&spec.id, limit, &refused.refusal, reason.clone());
                Err(StepError::BudgetExhausted { step: spec.id.clone(), refusal: reason })
            }
            Err(unavailable) => {
                let error = StoreError::Backend(unavailable.to_string());
                self.stop(Stop::Store(error.to_string()));
                Err(StepError::Store { step: spec.id.clone(), error: Box::new(error) })
            }
        }
    }

    /// Stop the run for a refused reservation (`limit` names the cap, `reason` says it all).
    fn exhaust_budget(&self, step: &StepId, limit: String, refusal: &Refusal, reason: String) {
        let first = {
            let mut s = self.lock_stop();
            let first = s.is_none();
            if first {
                *s = Some(Stop::Budget(reason));
                self.shared.stopping.store(true, Ordering::Release);
            }
            first
        };
        if first {
            self.shared.bus.emit(
                Some(step),
                EventKind::BudgetExhausted {
                    limit,
                    used: refusal.used,
                    max: refusal.max,
                    needed: refusal.needed,
                },
            );
        }
    }

    fn push(&self, record: AgentRecord) {
        self.shared.agents.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    }

    fn lock_stop(&self) -> std::sync::MutexGuard<'_, Option<Stop>> {
        self.shared.stop.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The records so far, in report order (tier, then StepId).
    /// Attach free JSON to `step`'s record in the RunResult (`agents[].metadata`): what an
    /// orchestrator knows of the step that the engine does not (a score, a source, the
    /// route taken…). Objects attached to one step merge key by key; anything else
    /// replaces what was there. Not recorded in the journal: a resumed run's code attaches
    /// it again as it runs.
    pub fn set_metadata(&self, step: &StepId, metadata: serde_json::Value) {
        let mut all = self.shared.metadata.lock().unwrap_or_else(|p| p.into_inner());
        match (all.get_mut(step), metadata) {
            (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) => old.extend(new),
            (_, metadata) => {
                all.insert(step.clone(), metadata);
            }
        }
    }

    pub(crate) fn take_agents(&self) -> Vec<AgentRecord> {
        let mut agents = std::mem::take(&mut *self.shared.agents.lock().unwrap_or_else(|p| p.into_inner()));
        let mut metadata =
            std::mem::take(&mut *self.shared.metadata.lock().unwrap_or_else(|p| p.into_inner()));
        // (A lookup in an empty map still hashes the key: most runs attach no metadata.)
        if !metadata.is_empty() {
            for a in &mut agents {
                if let Some(m) = metadata.remove(&a.step) {
                    a.metadata = Some(Box::new(m));
                }
            }
        }
        sort_records(&mut agents);
        agents
    }
}

/// Records in report order: by tier from workers up, then by step; records that tie keep
/// the order they were made in.
///
/// A stable sort of the records themselves borrows a scratch buffer of half of them (150 MB
/// for a 1,000,000-worker cascade, at the moment the run's memory peaks); this sorts their
/// indices (4 bytes each, ties broken by index, so the order is the stable sort's) and then
/// moves each record into place by following the permutation's cycles.
fn sort_records(agents: &mut [AgentRecord]) {
    let Ok(n) = u32::try_from(agents.len()) else {
        return agents.sort_by(|a, b| report_key(a).cmp(&report_key(b)));
    };
    let key = |i: u32| report_key(&agents[i as usize]);
    let mut order: Vec<u32> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)));
    // Position `i` takes the record at `order[i]`; a visited position is marked by
    // `order[i] == i`.
    for start in 0..agents.len() {
        let mut at = start;
        loop {
            let from = order[at] as usize;
            order[at] = at as u32;
            if from == start {
                break;
            }
            agents.swap(at, from);
            at = from;
        }
    }
}

/// Where a record goes in the report: its tier's rank, then its step.
fn report_key(a: &AgentRecord) -> (u8, &StepId) {
    (a.tier.rank(), &a.step)
}

fn stop_error(step: &StepId, stop: Stop) -> StepError {
    match stop {
        Stop::Cancelled => StepError::Cancelled { step: step.clone() },
        Stop::Budget(refusal) => StepError::BudgetExhausted { step: step.clone(), refusal },
        other => StepError::Stopped { step: step.clone(), reason: other.describe() },
    }
}

/// A stable hash of everything that determines a call's answer.
///
/// The fields are framed (length-prefixed) into one buffer and hashed in one pass: xxh3's
/// streaming interface costs several times more than the one-shot function on inputs of a
/// few hundred bytes. The buffer is reused per thread.
pub fn request_hash(r: &LlmRequest) -> InputHash {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        frame_request(r, buf);
        let hash = InputHash::new(xxhash_rust::xxh3::xxh3_128(buf));
        // Do not keep a huge prompt's buffer alive in every worker thread.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        hash
    })
}

fn frame_request(r: &LlmRequest, buf: &mut Vec<u8>) {
    let mut field = |bytes: &[u8]| {
        buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        buf.extend_from_slice(bytes);
    };
    field(r.model.as_bytes());
    field(r.system.as_deref().unwrap_or("\u{0}").as_bytes());
    for m in &r.messages {
        field(match m.role {
            crate::llm::Role::User => b"u",
            crate::llm::Role::Assistant => b"a",
            crate::llm::Role::Tool => b"t",
        });
        field(m.content.as_bytes());
        // Tool turns (framed only when present, like the fields below).
        for call in &m.tool_calls {
            field(b"call");
            field(call.id.as_bytes());
            field(call.name.as_bytes());
            field(call.arguments.to_string().as_bytes());
        }
        if let Some(id) = &m.tool_call_id {
            field(b"result");
            field(id.as_bytes());
            field(&[m.is_error as u8]);
        }
    }
    field(&r.max_tokens.to_le_bytes());
    field(&r.temperature.map_or(u32::MAX, f32::to_bits).to_le_bytes());
    field(&[r.json as u8]);
    // Fields added later are framed only when set, so that the requests of runs recorded
    // before them keep their hashes (and resume).
    if let Some(schema) = &r.json_schema {
        field(b"json_schema");
        field(schema.name.as_bytes());
        field(&[schema.strict as u8]);
        field(schema.schema.to_string().as_bytes());
    }
    for tool in &r.tools {
        field(b"tool");
        field(tool.name.as_bytes());
        field(tool.description.as_bytes());
        field(&[tool.strict as u8]);
        field(tool.parameters.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::Tier;

    /// A subtask's outcome is held for each of a run's subtasks until its synthesis ends:
    /// no larger than its output (the boxed causes of `StepError` keep it so).
    #[test]
    fn an_outcome_is_as_large_as_its_output() {
        assert_eq!(
            std::mem::size_of::<crate::orchestrator::Outcome>(),
            std::mem::size_of::<crate::orchestrator::AgentOutput>()
        );
    }

    /// `sort_records` gives the stable sort's order, ties included: every arrangement of
    /// records drawn from few tiers and few step ids (so most keys repeat), up to 200 long.
    #[test]
    fn records_sort_as_a_stable_sort_would() {
        let tiers = [Tier::Executive, Tier::Worker, Tier::Agent, Tier::Custom("x".into()), Tier::Synthesizer];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for len in (0..40).chain([97, 200]) {
            for _ in 0..20 {
                let records: Vec<AgentRecord> = (0..len)
                    .map(|i| AgentRecord {
                        step: StepId::new(format!("s{}", next(4))),
                        tier: tiers[next(5) as usize].clone(),
                        status: AgentStatus::Completed,
                        inputs: Vec::new(),
                        output: None,
                        error: None,
                        outcome: StepOutcome::default(),
                        // Where it was made: the tie-break a stable sort keeps.
                        started_ms: i,
                        metadata: None,
                    })
                    .collect();
                let mut stable = records.clone();
                stable.sort_by(|a, b| (a.tier.rank(), &a.step).cmp(&(b.tier.rank(), &b.step)));
                let mut sorted = records;
                sort_records(&mut sorted);
                assert_eq!(sorted, stable, "{len} records");
            }
        }
    }
}

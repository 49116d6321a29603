//! Where runs are recorded: the [`RunStore`] trait and the in-memory store.
//!
//! The engine records every completed step (StepId, input hash, output, usage, cost) and
//! every event through this trait. A persistent store (SQLite, PostgreSQL) implements the
//! same trait; the engine loads a run's step records once when it starts, so looking a
//! step up during the run costs a hash-map probe, never a query.
//!
//! Ordering guarantee the engine relies on: [`RunStore::put_step`] returns only once the
//! record is durable (for a persistent store), and the engine awaits it before the step's
//! output is handed downstream. A crash therefore loses at most the calls in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::llm::LlmRequest;
use crate::reply::StepReply;
use crate::result::{RunResult, RunStatus};
use crate::step::{StepId, Tier};

/// The record of one completed step, enough to replay it without a call: the step, the
/// hash of what it asked, and its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: StepId,
    pub tier: Tier,
    /// Hash of everything that determines the call (model, prompts, parameters). A replay
    /// whose request hashes differently is a non-determinism error.
    pub input_hash: InputHash,
    #[serde(flatten)]
    pub reply: StepReply,
}

/// A 128-bit hash of a step's input, shown and stored as 32 hex digits.
///
/// Kept as two `u64`s rather than a `u128`: a `u128` is 16-byte aligned, which padded every
/// in-flight step's future by hundreds of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputHash([u64; 2]);

impl InputHash {
    pub fn new(value: u128) -> Self {
        InputHash([(value >> 64) as u64, value as u64])
    }
    pub fn value(&self) -> u128 {
        (u128::from(self.0[0]) << 64) | u128::from(self.0[1])
    }
}

impl std::fmt::Display for InputHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.value())
    }
}

impl Serialize for InputHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InputHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map(InputHash::new).map_err(serde::de::Error::custom)
    }
}

/// A run as the store knows it: enough to list it and to run it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pattern: String,
    pub task: String,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    /// The run's full definition (options, plan) as JSON text, for resume.
    pub definition: Arc<str>,
}

impl RunRecord {
    /// [`RunResult::not_started`] of this run.
    pub fn not_started(&self, status: RunStatus, reason: &str) -> RunResult {
        RunResult::not_started(&self.run_id, &self.pattern, &self.task, self.started_at, status, reason)
    }
}

/// A run as listed by [`RunStore::list_runs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub pattern: String,
    pub task: String,
    /// `running` only while a live process drives the run; `interrupted` when its driver's
    /// lease expired without finishing it.
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    /// Steps recorded (completed) so far.
    pub steps: u64,
    pub cost_usd: f64,
    pub duration_ms: Option<u64>,
    /// Who holds the run's lease, while one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A step that failed for good, kept with its request so it can be retried later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Assigned by the store.
    #[serde(default)]
    pub id: u64,
    pub run_id: String,
    pub step: StepId,
    pub tier: Tier,
    pub error: String,
    pub error_kind: String,
    pub attempts: u32,
    /// What to run again. Serialized as `request`, as before tools had letters: an LLM
    /// call's letter reads as it always did.
    #[serde(rename = "request", alias = "work")]
    pub work: LetterWork,
    pub created_at: DateTime<Utc>,
}

/// What a dead letter runs again: an LLM call, a tool call, or a step of the program's
/// own (which only the program can run: `belt resume --retry-failed` does).
///
/// Stored as JSON; an LLM call is stored as its request alone, as before tools had letters,
/// so older letters read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LetterWork {
    Tool { tool_call: crate::llm::ToolCall },
    Step { input: serde_json::Value },
    Llm(LlmRequest),
}

impl LetterWork {
    /// The LLM request, when the letter is an LLM call.
    pub fn request(&self) -> Option<&LlmRequest> {
        match self {
            LetterWork::Llm(request) => Some(request),
            _ => None,
        }
    }
}

/// A store operation failed. The run stops scheduling and ends with this error; records
/// already written stay intact.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("run `{0}` is not in the store")]
    UnknownRun(String),
    #[error(
        "run `{run_id}` is being driven by another process ({owner}, last heartbeat {age_ms} ms ago); \
         wait for it to finish, or stop that process first"
    )]
    Busy { run_id: String, owner: String, age_ms: u64 },
    #[error("the run store failed: {0}")]
    Backend(String),
    /// A record the store holds does not read back as what was written (a disk fault, a
    /// stray write into the file): a text that is not UTF-8, a negative count, an unknown
    /// status. Nothing was changed; the records of other runs are not affected.
    #[error("{}", damaged_message(run_id.as_deref(), store, detail))]
    Damaged {
        /// The run the record belongs to, when that much could be read.
        run_id: Option<String>,
        /// Where the store is (its file).
        store: String,
        /// What does not read: the column, the step, why.
        detail: String,
    },
}

fn damaged_message(run_id: Option<&str>, store: &str, detail: &str) -> String {
    match run_id {
        Some(id) => format!(
            "run {id}'s record in {store} is damaged ({detail}); remove the run with `belt runs rm {id}` \
             or restore the file from a backup"
        ),
        None => format!(
            "a record in {store} is damaged ({detail}); restore the file from a backup, or move it away \
             to start an empty store"
        ),
    }
}

/// How long a driver's lease on a run lasts without a heartbeat. A run whose lease
/// expired while it was running is `interrupted`; anyone may then resume it.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// What a driver learns when it renews its lease ([`RunStore::heartbeat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// The caller still holds the lease. False when another driver took the run over (this
    /// one's heartbeats stopped reaching the store for longer than [`LEASE_TTL`]): the
    /// caller must stop driving it, so that two drivers never call the same step.
    pub held: bool,
    /// Someone asked for the run to be cancelled ([`RunStore::request_cancel`]), from any
    /// process sharing the store.
    pub cancel_requested: bool,
}

/// The answer to [`RunStore::request_cancel`]: where the run was when it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelRequest {
    /// It was queued; no driver will take it now. The caller records it as cancelled.
    WasQueued,
    /// It was running; its driver sees the request at its next heartbeat and cancels it.
    WasRunning,
    /// It had already finished (or was never recorded): nothing to cancel.
    NotLive,
}

/// How often [`RunStore::wait_events`] looks for new events by default.
pub const EVENT_POLL: Duration = Duration::from_millis(200);

/// Persistence for runs, steps and events.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Record a new run, or mark an existing one as running again (resume).
    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Every completed step of the run, for replay.
    async fn load_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError>;
    /// Record a completed step; durable when it returns.
    async fn put_step(&self, run_id: &str, record: &StepRecord) -> Result<(), StoreError>;
    /// Append events (already in sequence order).
    async fn append_events(&self, run_id: &str, events: &[Arc<Event>]) -> Result<(), StoreError>;
    /// Events with `seq > after`, in order.
    async fn events(&self, run_id: &str, after: u64) -> Result<Vec<Arc<Event>>, StoreError>;
    /// The highest event sequence number recorded for the run (0 if none).
    async fn last_seq(&self, run_id: &str) -> Result<u64, StoreError>;
    /// Record the final result (and release the run's lease).
    async fn finish_run(&self, result: &RunResult) -> Result<(), StoreError>;
    async fn get_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError>;

    /// Take the lease on a run for `owner`: refused with [`StoreError::Busy`] while another
    /// owner's lease is younger than `ttl`, unless that owner is `replace` (one the caller
    /// knows is dead). Only one process drives a run at a time.
    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        ttl: Duration,
        replace: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Renew `owner`'s lease, and learn whether it still holds it and whether the run is to
    /// be cancelled.
    async fn heartbeat(&self, run_id: &str, owner: &str) -> Result<Lease, StoreError>;
    /// Take up to `limit` runs that nobody drives, for `owner`: queued runs, and running runs
    /// whose driver's lease expired (it died), the oldest first; never a run whose
    /// cancellation was requested. Each run returned is `running` under `owner`'s lease, and
    /// no other caller gets it (PostgreSQL: `FOR UPDATE SKIP LOCKED`). What a worker calls.
    async fn take_runs(&self, owner: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
    /// Give a run back: `owner`'s lease ends and the run is queued again, for any driver to
    /// take and resume from its record. False when `owner` did not hold it.
    async fn release(&self, run_id: &str, owner: &str) -> Result<bool, StoreError>;
    /// Ask whoever drives the run to cancel it. Atomic with [`RunStore::take_runs`]: a run
    /// queued when asked is never taken afterwards.
    async fn request_cancel(&self, run_id: &str) -> Result<CancelRequest, StoreError>;
    /// Provider limits summed over every process of this store, if it is shared by several
    /// (see [`crate::shared`]). None by default: one process, whose own limiters suffice.
    fn shared_limits(&self) -> Option<Arc<dyn crate::limits::SharedLimits>> {
        None
    }
    /// Budget pools kept in this store for every process, if it is shared by several.
    fn budget_pools(&self) -> Option<Arc<dyn crate::shared::BudgetPools>> {
        None
    }
    /// Events with `seq > after`, waiting up to `wait` for the first one when there is
    /// none yet: how a process that does not drive a run follows it. The default polls;
    /// PostgreSQL is woken by `LISTEN/NOTIFY`.
    async fn wait_events(
        &self,
        run_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let events = self.events(run_id, after).await?;
            let now = tokio::time::Instant::now();
            if !events.is_empty() || now >= deadline {
                return Ok(events);
            }
            tokio::time::sleep(EVENT_POLL.min(deadline - now)).await;
        }
    }
    /// The most recent runs first.
    async fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError>;
    /// Runs recorded as [`RunStatus::Queued`] (accepted, not started), the oldest first: the
    /// order they were accepted in.
    async fn queued_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError>;
    /// Take a queued run for `owner`, in one step: the run becomes `running` under `owner`'s
    /// lease. False when it is not queued (any more): another process took it, it was
    /// cancelled or removed. Whoever gets true starts it (with the same `owner`, whose
    /// [`RunStore::claim`] then succeeds); nobody else does.
    async fn take_queued(&self, run_id: &str, owner: &str) -> Result<bool, StoreError>;
    /// Remove a run with its steps, events and dead letters; false if it did not exist.
    async fn delete_run(&self, run_id: &str) -> Result<bool, StoreError>;

    /// Keep a step that failed for good; returns its id.
    async fn put_dead_letter(&self, letter: &DeadLetter) -> Result<u64, StoreError>;
    /// The dead letters not yet resolved, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError>;
    /// Drop a dead letter once its step succeeded on retry.
    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError>;

    /// A cached reply for a request hash, if one younger than its TTL exists.
    async fn cache_get(&self, key: InputHash) -> Result<Option<StepReply>, StoreError>;
    async fn cache_put(&self, key: InputHash, reply: &StepReply, ttl: Duration) -> Result<(), StoreError>;
}

/// Keeps everything in process memory; the default when nothing persistent is configured.
#[derive(Default)]
pub struct MemoryStore {
    // Fx: the map is probed on every step; its keys are our own run ids, not hostile input.
    runs: Mutex<rustc_hash::FxHashMap<String, RunData>>,
    dead: Mutex<Vec<DeadLetter>>,
    cache: Mutex<rustc_hash::FxHashMap<InputHash, (StepReply, Instant)>>,
}

#[derive(Default)]
struct RunData {
    record: Option<RunRecord>,
    /// Appended in completion order; a step is recorded once per run.
    steps: Vec<StepRecord>,
    /// Where each step is in `steps`.
    step_index: rustc_hash::FxHashMap<StepId, usize>,
    events: Vec<Arc<Event>>,
    result: Option<RunResult>,
    lease: Option<(String, Instant)>,
    cancel_requested: bool,
}

impl RunData {
    /// Nobody drives the run: no lease, or one older than [`LEASE_TTL`].
    fn unleased(&self) -> bool {
        self.lease.as_ref().is_none_or(|(_, at)| at.elapsed() >= LEASE_TTL)
    }
}

/// What a [`MemoryStore`] keeps ([`MemoryStore::held`]): everything it was given stays
/// until the run is deleted, as in a persistent store, but in the process's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryHeld {
    pub runs: usize,
    /// Step records (the journal a resumed run replays).
    pub steps: usize,
    pub events: usize,
    /// Finished runs' results (each a copy of the RunResult its run returned).
    pub results: usize,
    /// Bytes they take, estimated from the records' and events' own sizes and the texts
    /// they hold (an output shared by a step's record and its result counts once per
    /// holder): a lower bound of the store's share of the process's memory.
    pub bytes: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How much this store keeps, for a caller deciding whether a run is too large for
    /// memory (a 1,000,000-step run keeps about 1 GB here: use a persistent store).
    pub fn held(&self) -> MemoryHeld {
        use std::mem::size_of;
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let mut held = MemoryHeld { runs: runs.len(), ..MemoryHeld::default() };
        let mut bytes = 0usize;
        for d in runs.values() {
            held.steps += d.steps.len();
            held.events += d.events.len();
            // The record, its text and id, its index entry (key, position, table overhead).
            bytes += d.steps.iter().map(|s| size_of::<StepRecord>() + s.reply.text.len()).sum::<usize>();
            bytes += d.step_index.len() * (size_of::<(StepId, usize)>() + 1);
            // Each event: its pointer here and the event itself (16 bytes of Arc counts).
            bytes += d.events.len() * (size_of::<Arc<Event>>() + size_of::<Event>() + 16);
            if let Some(r) = &d.result {
                held.results += 1;
                bytes += size_of::<RunResult>()
                    + r.agents
                        .iter()
                        .map(|a| size_of::<crate::AgentRecord>() + a.output.as_ref().map_or(0, |o| o.len()))
                        .sum::<usize>()
                    + r.plan.len() * size_of::<crate::Subtask>()
                    + r.final_output.as_ref().map_or(0, String::len);
            }
            bytes += d.record.as_ref().map_or(0, |r| size_of::<RunRecord>() + r.definition.len());
        }
        held.bytes = bytes as u64;
        held
    }

    fn with<T>(&self, run_id: &str, f: impl FnOnce(&mut RunData) -> T) -> T {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        // Look up before inserting, so the common case allocates no key.
        if let Some(data) = runs.get_mut(run_id) {
            return f(data);
        }
        f(runs.entry(run_id.to_string()).or_default())
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.with(&run.run_id, |d| {
            // A resumed run keeps the time it first started, as the persistent stores do.
            let started_at = d.record.as_ref().map_or(run.started_at, |r| r.started_at);
            d.record = Some(RunRecord { started_at, ..run.clone() });
        });
        Ok(())
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.with(run_id, |d| d.record.clone()))
    }
    async fn load_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        Ok(self.with(run_id, |d| d.steps.clone()))
    }
    async fn put_step(&self, run_id: &str, record: &StepRecord) -> Result<(), StoreError> {
        self.with(run_id, |d| match d.step_index.get(&record.step) {
            // Recorded again: the new record replaces the old one, as the persistent stores do.
            Some(&i) => d.steps[i] = record.clone(),
            None => {
                d.step_index.insert(record.step.clone(), d.steps.len());
                d.steps.push(record.clone());
            }
        });
        Ok(())
    }
    async fn append_events(&self, run_id: &str, events: &[Arc<Event>]) -> Result<(), StoreError> {
        self.with(run_id, |d| d.events.extend(events.iter().cloned()));
        Ok(())
    }
    async fn events(&self, run_id: &str, after: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        Ok(self.with(run_id, |d| {
            let start = d.events.partition_point(|e| e.seq <= after);
            d.events[start..].to_vec()
        }))
    }
    async fn last_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        Ok(self.with(run_id, |d| d.events.last().map_or(0, |e| e.seq)))
    }
    async fn finish_run(&self, result: &RunResult) -> Result<(), StoreError> {
        self.with(&result.run_id, |d| {
            if let Some(r) = d.record.as_mut() {
                r.status = result.status;
            }
            d.result = Some(result.clone());
            d.lease = None;
            d.cancel_requested = false;
        });
        Ok(())
    }
    async fn get_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError> {
        Ok(self.with(run_id, |d| d.result.clone()))
    }
    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        ttl: Duration,
        replace: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(run_id, |d| match &d.lease {
            Some((other, at)) if other != owner && Some(other.as_str()) != replace && at.elapsed() < ttl => {
                Err(StoreError::Busy {
                    run_id: run_id.to_string(),
                    owner: other.clone(),
                    age_ms: at.elapsed().as_millis() as u64,
                })
            }
            _ => {
                d.lease = Some((owner.to_string(), Instant::now()));
                Ok(())
            }
        })
    }
    async fn heartbeat(&self, run_id: &str, owner: &str) -> Result<Lease, StoreError> {
        Ok(self.with(run_id, |d| {
            let held = match d.lease.as_mut() {
                Some((o, at)) if o == owner => {
                    *at = Instant::now();
                    true
                }
                _ => false,
            };
            Lease { held, cancel_requested: d.cancel_requested }
        }))
    }
    async fn take_runs(&self, owner: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let mut free: Vec<&mut RunData> = runs
            .values_mut()
            .filter(|d| {
                d.record.as_ref().is_some_and(|r| matches!(r.status, RunStatus::Queued | RunStatus::Running))
                    && !d.cancel_requested
                    && d.unleased()
            })
            .collect();
        free.sort_by(|a, b| {
            let key = |d: &RunData| d.record.as_ref().map(|r| (r.started_at, r.run_id.clone()));
            key(a).cmp(&key(b))
        });
        Ok(free
            .into_iter()
            .take(limit)
            .filter_map(|d| {
                d.lease = Some((owner.to_string(), Instant::now()));
                let r = d.record.as_mut()?;
                r.status = RunStatus::Running;
                Some(r.clone())
            })
            .collect())
    }
    async fn release(&self, run_id: &str, owner: &str) -> Result<bool, StoreError> {
        Ok(self.with(run_id, |d| match (&d.lease, d.record.as_mut()) {
            (Some((o, _)), Some(r)) if o == owner && r.status == RunStatus::Running => {
                // Cancelled while handed back: no driver would take it from the queue.
                r.status = if d.cancel_requested { RunStatus::Cancelled } else { RunStatus::Queued };
                d.lease = None;
                true
            }
            _ => false,
        }))
    }
    async fn request_cancel(&self, run_id: &str) -> Result<CancelRequest, StoreError> {
        Ok(self.with(run_id, |d| match d.record.as_ref().map(|r| r.status) {
            Some(RunStatus::Queued) => {
                d.cancel_requested = true;
                CancelRequest::WasQueued
            }
            Some(RunStatus::Running) => {
                d.cancel_requested = true;
                CancelRequest::WasRunning
            }
            _ => CancelRequest::NotLive,
        }))
    }
    async fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<RunSummary> = runs
            .values()
            .filter_map(|d| {
                let r = d.record.as_ref()?;
                let live = d.lease.as_ref().is_some_and(|(_, at)| at.elapsed() < LEASE_TTL);
                let status = match r.status {
                    RunStatus::Running if !live => RunStatus::Interrupted,
                    s => s,
                };
                Some(RunSummary {
                    run_id: r.run_id.clone(),
                    pattern: r.pattern.clone(),
                    task: r.task.clone(),
                    status,
                    started_at: r.started_at,
                    steps: d.steps.len() as u64,
                    cost_usd: d.result.as_ref().map_or_else(
                        || d.steps.iter().map(|s| s.reply.outcome.cost_usd).sum(),
                        |x| x.cost_usd,
                    ),
                    duration_ms: d.result.as_ref().map(|x| x.duration_ms),
                    owner: d.lease.as_ref().map(|(o, _)| o.clone()),
                })
            })
            .collect();
        list.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        list.truncate(limit);
        Ok(list)
    }
    async fn queued_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let mut queued: Vec<RunRecord> = runs
            .values()
            .filter_map(|d| d.record.clone())
            .filter(|r| r.status == RunStatus::Queued)
            .collect();
        // Run ids are UUIDv7s: after the time, they keep the order of acceptance.
        queued.sort_by(|a, b| (a.started_at, &a.run_id).cmp(&(b.started_at, &b.run_id)));
        queued.truncate(limit);
        Ok(queued)
    }
    async fn take_queued(&self, run_id: &str, owner: &str) -> Result<bool, StoreError> {
        Ok(self.with(run_id, |d| match d.record.as_mut() {
            // Not while another driver holds a live lease (see the SQLite store).
            Some(_) if d.lease.as_ref().is_some_and(|(o, at)| o != owner && at.elapsed() < LEASE_TTL) => {
                false
            }
            Some(r) if r.status == RunStatus::Queued && !d.cancel_requested => {
                r.status = RunStatus::Running;
                d.lease = Some((owner.to_string(), Instant::now()));
                true
            }
            _ => false,
        }))
    }
    async fn delete_run(&self, run_id: &str) -> Result<bool, StoreError> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).retain(|l| l.run_id != run_id);
        Ok(self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id)
            .is_some_and(|d| d.record.is_some()))
    }
    async fn put_dead_letter(&self, letter: &DeadLetter) -> Result<u64, StoreError> {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        let id = dead.iter().map(|l| l.id).max().unwrap_or(0) + 1;
        dead.push(DeadLetter { id, ..letter.clone() });
        Ok(id)
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).retain(|l| l.id != id);
        Ok(())
    }
    async fn cache_get(&self, key: InputHash) -> Result<Option<StepReply>, StoreError> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        Ok(cache.get(&key).filter(|(_, expires)| Instant::now() < *expires).map(|(r, _)| r.clone()))
    }
    async fn cache_put(&self, key: InputHash, reply: &StepReply, ttl: Duration) -> Result<(), StoreError> {
        // A TTL longer than the clock can count means "never expires" (a century), not a panic.
        let now = Instant::now();
        let expires =
            now.checked_add(ttl).or_else(|| now.checked_add(Duration::from_secs(100 * 366 * 86_400)));
        let Some(expires) = expires else { return Ok(()) };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (reply.clone(), expires));
        Ok(())
    }
}

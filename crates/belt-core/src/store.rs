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

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::llm::Usage;
use crate::result::{RunResult, RunStatus};
use crate::step::{StepId, Tier};

/// The recorded outcome of one completed step, enough to replay it without a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: StepId,
    pub tier: Tier,
    /// Hash of everything that determines the call (model, prompts, parameters). A replay
    /// whose request hashes differently is a non-determinism error.
    pub input_hash: InputHash,
    pub output: Arc<str>,
    pub model: Arc<str>,
    pub usage: Usage,
    pub cost_usd: f64,
    pub attempts: u32,
    pub duration_ms: u64,
    #[serde(default)]
    pub simulated: bool,
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

/// A store operation failed. The run stops scheduling and ends with this error; records
/// already written stay intact.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("run `{0}` is not in the store")]
    UnknownRun(String),
    #[error("the run store failed: {0}")]
    Backend(String),
}

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
    /// Record the final result.
    async fn finish_run(&self, result: &RunResult) -> Result<(), StoreError>;
    async fn get_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError>;
}

/// Keeps everything in process memory; the default when nothing persistent is configured.
#[derive(Default)]
pub struct MemoryStore {
    // Fx: the map is probed on every step; its keys are our own run ids, not hostile input.
    runs: Mutex<rustc_hash::FxHashMap<String, RunData>>,
}

#[derive(Default)]
struct RunData {
    record: Option<RunRecord>,
    /// Appended in completion order; a step is recorded once per run.
    steps: Vec<StepRecord>,
    events: Vec<Arc<Event>>,
    result: Option<RunResult>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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
        self.with(&run.run_id, |d| d.record = Some(run.clone()));
        Ok(())
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.with(run_id, |d| d.record.clone()))
    }
    async fn load_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        Ok(self.with(run_id, |d| d.steps.clone()))
    }
    async fn put_step(&self, run_id: &str, record: &StepRecord) -> Result<(), StoreError> {
        self.with(run_id, |d| d.steps.push(record.clone()));
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
        });
        Ok(())
    }
    async fn get_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError> {
        Ok(self.with(run_id, |d| d.result.clone()))
    }
}

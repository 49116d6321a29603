//! What a run returns: [`RunResult`], one [`AgentRecord`] per step, totals and status.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::plan::Subtask;
use crate::reply::StepOutcome;
use crate::step::{StepId, Tier};
pub use crate::usage::UsageTotals;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Accepted and recorded with its whole definition, waiting for a run slot; no process
    /// drives it yet (it has no lease). Whoever takes it from the store
    /// ([`crate::store::RunStore::take_queued`]) starts it: the server that accepted it, the
    /// same server restarted, or `belt resume`.
    Queued,
    /// Still running (only seen in stored records and live views).
    Running,
    /// Every step succeeded.
    Completed,
    /// A final output exists, but some steps failed or were skipped.
    Partial,
    /// No usable final output (too few workers succeeded, or the orchestration failed).
    Failed,
    /// A budget cap stopped new calls; the output is what existed then.
    BudgetExhausted,
    /// Stopped by the user.
    Cancelled,
    /// Its process died while running it (its lease expired); `belt resume` continues it.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::BudgetExhausted => "budget_exhausted",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentStatus {
    Completed,
    Failed,
    /// Not run: its inputs failed, or the run was stopping.
    Skipped,
    /// Failed because it ran out of time: its attempts timed out (the tier's timeout), or it
    /// was still running when the run's deadline came. Stored results from before this
    /// status say `failed` for such steps, and still read.
    TimedOut,
}

impl AgentStatus {
    /// The step tried and ended without an output: failed, or timed out.
    pub fn is_failure(self) -> bool {
        matches!(self, AgentStatus::Failed | AgentStatus::TimedOut)
    }
}

/// One step of a run, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub step: StepId,
    pub tier: Tier,
    pub status: AgentStatus,
    /// Steps whose outputs this step consumed.
    pub inputs: Vec<StepId>,
    pub output: Option<Arc<str>>,
    pub error: Option<String>,
    /// Model, tokens, cost, time and attempts (for a step that failed: what it spent
    /// trying), as its `step_completed` event said.
    #[serde(flatten)]
    pub outcome: StepOutcome,
    /// When the step started, in milliseconds since the run started (for timelines).
    pub started_ms: u64,
    /// Free JSON the orchestrator attached to the step ([`crate::Ctx::set_metadata`]).
    /// Boxed: rarely set, and a JSON value is 72 bytes that every one of a run's records
    /// would otherwise carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<serde_json::Value>>,
}

impl AgentRecord {
    /// The agent a step belongs to, for [`agent_totals`]: its tier (a cascade's
    /// `decomposer`, `worker`, `synthesizer`, `executive`; a workflow's agent id), or for a
    /// pattern's steps of tier `agent`, the pattern's scope (`pipeline`, `router`…).
    pub fn agent(&self) -> &str {
        match self.tier {
            Tier::Agent => self.step.as_str().split('/').next().unwrap_or("agent"),
            _ => self.tier.as_str(),
        }
    }
}

/// One agent's totals over a run's steps ([`agent_totals`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTotals {
    /// The agent ([`AgentRecord::agent`]).
    pub agent: String,
    pub steps: usize,
    pub completed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The share of its steps that completed, 0 to 1.
    pub success_rate: f64,
    /// Provider calls (attempts, retries included; a replayed step counts its recorded ones).
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What its priced calls cost; `unpriced_calls` says how many had no known price.
    pub cost_usd: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unpriced_calls: u64,
    /// The time its steps took, added up (busy time, not wall time).
    pub duration_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Totals per agent over `agents` (a run's step records), in order of each agent's first
/// step: what the RunResult's `agent_totals`, the summary and every report format show.
pub fn agent_totals(agents: &[AgentRecord]) -> Vec<AgentTotals> {
    let mut totals: Vec<AgentTotals> = Vec::new();
    for a in agents {
        let name = a.agent();
        let t = match totals.iter().position(|t| t.agent == name) {
            Some(i) => &mut totals[i],
            None => {
                totals.push(AgentTotals {
                    agent: name.to_string(),
                    steps: 0,
                    completed: 0,
                    failed: 0,
                    skipped: 0,
                    success_rate: 0.0,
                    calls: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    cost_usd: 0.0,
                    unpriced_calls: 0,
                    duration_ms: 0,
                });
                let last = totals.len() - 1;
                &mut totals[last]
            }
        };
        t.steps += 1;
        match a.status {
            AgentStatus::Completed => t.completed += 1,
            AgentStatus::Failed => t.failed += 1,
            _ => t.skipped += 1,
        }
        let o = &a.outcome;
        t.calls += u64::from(o.attempts);
        t.input_tokens += o.usage.input_tokens;
        t.output_tokens += o.usage.output_tokens;
        t.cost_usd += o.cost_usd;
        if o.unpriced {
            t.unpriced_calls += 1;
        }
        t.duration_ms += o.duration_ms;
    }
    for t in &mut totals {
        t.success_rate = t.completed as f64 / t.steps.max(1) as f64;
    }
    totals
}

/// A fall of the run to a simpler form, or a switch of a tier's model under load: each a
/// `degraded` event and a line of the report, in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    pub kind: DegradeKind,
    /// The tier whose model switched (`model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// What ran before: `full`, `simplified`, or a model.
    pub from: String,
    /// What runs after: `simplified`, `single-agent`, or a model.
    pub to: String,
    pub reason: String,
}

/// What degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DegradeKind {
    /// The pattern fell a level: the full cascade → a simplified one (no synthesizer tier)
    /// → a single agent.
    Orchestration,
    /// A tier's calls moved to a faster model because its provider signalled load.
    Model,
}

impl std::fmt::Display for Degradation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind, &self.tier) {
            (DegradeKind::Model, Some(tier)) => {
                write!(f, "{tier} model {} → {}: {}", self.from, self.to, self.reason)
            }
            _ => write!(f, "{} → {}: {}", self.from, self.to, self.reason),
        }
    }
}

/// One stretch of a run, in one process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: u64,
}

/// A document the run wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub format: String,
    pub path: String,
}

/// Everything about a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    pub status: RunStatus,
    pub stop_reason: String,
    pub pattern: String,
    pub task: String,
    pub plan: Vec<Subtask>,
    pub agents: Vec<AgentRecord>,
    pub final_output: Option<String>,
    pub usage: UsageTotals,
    pub cost_usd: f64,
    pub duration_ms: u64,
    pub documents: Vec<Document>,
    /// True when any output came from the simulated provider.
    pub simulated: bool,
    /// Steps per tier from workers up, e.g. `[12, 2, 1]`.
    #[serde(default)]
    pub shape: Vec<usize>,
    /// When the run first started (its first segment, for a resumed run).
    #[serde(default)]
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The stretches the run ran in, one per process that drove it: one for a run that was
    /// never interrupted, one more per `belt resume`. `duration_ms` is their sum (the time
    /// spent running, not the time between the first start and the end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    /// Loop and round caps that stopped a pattern in this run: which cap and where (each
    /// also a skipped step in `agents`, and named in `stop_reason`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<crate::caps::CapHit>,
    /// What the run's tools read on its behalf (pages fetched, search results), first use
    /// first, each once: the sources a report lists beside the links its text cites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::tools::Source>,
    /// How the run degraded (`degrade`, `fast_model`), in order: the cascade falling to a
    /// simpler form, a tier switching models under load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degradations: Vec<Degradation>,
    /// Totals per agent (tier): steps, success rate, calls, tokens, cost, time
    /// ([`agent_totals`] of `agents`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_totals: Vec<AgentTotals>,
}

impl RunResult {
    /// The result of a run that never started (cancelled while queued, or its definition
    /// no longer prepares): its status and why, nothing run.
    pub fn not_started(
        run_id: &str,
        pattern: &str,
        task: &str,
        started_at: chrono::DateTime<chrono::Utc>,
        status: RunStatus,
        reason: &str,
    ) -> RunResult {
        RunResult {
            run_id: run_id.to_string(),
            status,
            stop_reason: reason.to_string(),
            pattern: pattern.to_string(),
            task: task.to_string(),
            plan: Vec::new(),
            agents: Vec::new(),
            final_output: None,
            usage: Default::default(),
            cost_usd: 0.0,
            duration_ms: 0,
            documents: Vec::new(),
            simulated: false,
            shape: Vec::new(),
            started_at: Some(started_at),
            segments: Vec::new(),
            caps: Vec::new(),
            sources: Vec::new(),
            degradations: Vec::new(),
            agent_totals: Vec::new(),
        }
    }

    /// The records of one tier, in step order.
    pub fn tier<'a>(&'a self, tier: &'a Tier) -> impl Iterator<Item = &'a AgentRecord> + 'a {
        self.agents.iter().filter(move |a| &a.tier == tier)
    }

    /// How many steps of a tier ended with `status`.
    pub fn count(&self, tier: &Tier, status: AgentStatus) -> usize {
        self.tier(tier).filter(|a| a.status == status).count()
    }
}

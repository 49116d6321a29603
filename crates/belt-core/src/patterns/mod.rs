//! Orchestration patterns: short functions and types over [`crate::Ctx`]. None of them
//! contains retry, timeout, budget or accounting code: the engine does that for all.
//!
//! Every pattern runs its work as [`Agent`]s — an LLM call with a role, or any async
//! function over the context — under deterministic StepIds (`pipeline/02-summarize`,
//! `dag/fetch`, `router/classify`), so a resumed run replays what completed instead of
//! paying for it again. Every loop a pattern runs has a cap; when one stops the pattern,
//! its result holds a [`CapHit`] saying which cap and where, and the run's record holds a
//! skipped step at that place with the same words.
//!
//! A StepId names one piece of work, so a pattern used several times in one run needs a
//! scope per use (`Pipeline::new(format!("doc/{i}"))`, `router.in_scope(..)`).
//!
//! A pattern that is a whole run is an [`crate::Orchestrator`] ([`Cascade`], [`Swarm`],
//! [`Dynamic`]); the others are called from inside one. [`Flow`] turns any async function
//! over the context into a run, which is how the examples and tests drive them.
//!
//! | family | module | main types |
//! |---|---|---|
//! | sequential / pipeline | [`pipeline`] | [`Pipeline`], [`Stage`], [`OnError`] |
//! | fan-out / fan-in | [`parallel`] | [`Parallel`] |
//! | conditional / router | [`router`] | [`Router`], [`Choose`] |
//! | iterative refinement | [`iterative`] | [`Refine`] |
//! | DAG | [`dag`] | [`Dag`] |
//! | state machine | [`state_machine`] | [`StateMachine`], [`Transition`] |
//! | saga | [`saga`] | [`Saga`] |
//! | supervisor | [`supervisor`] | [`Supervisor`] |
//! | blackboard | [`blackboard`] | [`Blackboard`], [`Session`] |
//! | event-driven | [`event_driven`] | [`Reactor`] |
//! | load balancing, priority, batching | [`balance`] | [`LoadBalancer`], [`WorkQueue`], [`run_batches`] |
//! | human in the loop | [`hitl`] | [`Human`] |
//! | swarm | [`swarm`] | [`Swarm`] |
//! | dynamic agents | [`dynamic`] | [`Dynamic`], [`AgentRegistry`] |
//! | orchestrator of orchestrators | [`conductor`] | [`Conductor`] |

pub mod agent;
pub mod balance;
pub mod blackboard;
pub mod cascade;
pub mod conductor;
pub mod dag;
pub mod dynamic;
pub mod event_driven;
pub mod flow;
pub mod hitl;
pub mod iterative;
pub mod parallel;
pub mod pipeline;
pub mod router;
pub mod saga;
pub mod state_machine;
pub mod supervisor;
pub mod swarm;

#[cfg(test)]
pub(crate) mod testkit;

pub use agent::{Agent, AgentFuture};
pub use balance::{LoadBalancer, PriorityQueue, WorkQueue, run_batches};
pub use blackboard::{Blackboard, Contributor, Session};
pub use cascade::{Cascade, SynthesizeMode, TierSettings};
pub use conductor::Conductor;
pub use dag::Dag;
pub use dynamic::{AgentRegistry, Dynamic};
pub use event_driven::{Reactor, Shutdown};
pub use flow::Flow;
pub use hitl::Human;
pub use iterative::Refine;
pub use parallel::Parallel;
pub use pipeline::{OnError, Pipeline, Stage};
pub use router::{Choose, Router};
pub use saga::Saga;
pub use state_machine::{StateMachine, Transition};
pub use supervisor::Supervisor;
pub use swarm::Swarm;

use serde::{Deserialize, Serialize};

use crate::ctx::Ctx;
use crate::step::StepId;
use crate::step::StepSpec;

/// One entry of the pattern library, for listings (`belt patterns`, the MCP `list_patterns`
/// tool): its name, what it does in a line, whether a task alone is enough to run it
/// (`belt run --pattern NAME`), and its `pattern:` value in workflow files, if they have it.
/// The rest run from Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PatternInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub from_task: bool,
    pub workflow: Option<&'static str>,
}

/// The pattern library, in the order the README's table lists it.
pub const CATALOG: &[PatternInfo] = &[
    PatternInfo {
        name: "cascade",
        from_task: true,
        summary: "workers -> a synthesizer per group of 5 -> an executive; --refine N adds critique-and-revise rounds",
        workflow: Some("cascade"),
    },
    PatternInfo {
        name: "swarm",
        from_task: true,
        summary: "specialists by domain (news, academic, product...), results grouped by domain and deduplicated",
        workflow: Some("swarm"),
    },
    PatternInfo {
        name: "iterative",
        from_task: true,
        summary: "draft -> judge -> revise until the judge accepts or --refine N drafts",
        workflow: Some("iterative"),
    },
    PatternInfo {
        name: "dynamic",
        from_task: true,
        summary: "the LLM designs a team of agents (name, role, system prompt) for the task",
        workflow: None,
    },
    PatternInfo {
        name: "pipeline",
        from_task: false,
        summary: "stages in order, each fed the previous output; per-stage on_error; fan-out stages",
        workflow: Some("sequential"),
    },
    PatternInfo {
        name: "parallel",
        from_task: false,
        summary: "fan-out / fan-in with required and optional branches",
        workflow: None,
    },
    PatternInfo {
        name: "router",
        from_task: false,
        summary: "one agent chosen by a value, a predicate or an LLM classifier; unknown routes list the valid ones",
        workflow: Some("conditional"),
    },
    PatternInfo {
        name: "dag",
        from_task: false,
        summary: "steps with dependencies; cycles rejected with their path; dependents of a failure skipped",
        workflow: Some("dag"),
    },
    PatternInfo {
        name: "state_machine",
        from_task: false,
        summary: "guarded transitions with actions; invalid ones name both states; history recorded",
        workflow: None,
    },
    PatternInfo {
        name: "saga",
        from_task: false,
        summary: "steps with compensations, undone in reverse order on failure",
        workflow: None,
    },
    PatternInfo {
        name: "supervisor",
        from_task: false,
        summary: "tasks routed by capability, success recorded per agent, fallback to another capable agent",
        workflow: None,
    },
    PatternInfo {
        name: "blackboard",
        from_task: false,
        summary: "shared keyed state with atomic updates; contributors woken when a key they watch changes",
        workflow: None,
    },
    PatternInfo {
        name: "event_driven",
        from_task: false,
        summary: "handlers subscribed to event types, a bounded queue, drain or cancel with a deadline",
        workflow: None,
    },
    PatternInfo {
        name: "balance",
        from_task: false,
        summary: "least-loaded capable agent, priority queue (FIFO within a priority), batches",
        workflow: None,
    },
    PatternInfo {
        name: "hitl",
        from_task: false,
        summary: "approval, selection and free input with stable ids, timeouts and defaults",
        workflow: None,
    },
    PatternInfo {
        name: "conductor",
        from_task: false,
        summary: "an LLM plans phases, each run by a named sub-orchestrator in its own scope",
        workflow: None,
    },
    PatternInfo {
        name: "flow",
        from_task: false,
        summary: "any async function over the context, as a whole run",
        workflow: None,
    },
];

/// A loop or round cap that stopped a pattern: which cap, its limit, and the step that
/// would have run next (recorded in the run as skipped, with this text as its reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapHit {
    /// The cap's name as the pattern's builder calls it: `max_iterations`, `max_rounds`…
    pub cap: String,
    pub limit: usize,
    /// The step that did not run because of the cap.
    pub at: StepId,
}

impl std::fmt::Display for CapHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cap {} = {} reached; {} not run", self.cap, self.limit, self.at)
    }
}

impl CapHit {
    /// Record that `cap` (at `limit`) stopped the pattern before `next` ran: the step is
    /// recorded as skipped, with the cap as its reason, so the RunResult says which and where.
    pub fn record(ctx: &Ctx, cap: &str, limit: usize, next: StepSpec, model: &str) -> CapHit {
        let hit = CapHit { cap: cap.to_string(), limit, at: next.id.clone() };
        ctx.skip(next, model, hit.to_string());
        ctx.shared.caps.lock().unwrap_or_else(|p| p.into_inner()).push(hit.clone());
        hit
    }
}

/// True when the run is stopping (budget, cancel, store failure): patterns then give up
/// instead of recovering, since every later step would be refused anyway.
pub(crate) fn stopping(ctx: &Ctx) -> bool {
    ctx.stopping().is_some()
}

/// Zero-padded 1-based position, at least `min` digits (`02`, `007`).
pub(crate) fn pad(i: usize, count: usize, min: usize) -> String {
    let width = count.max(1).to_string().len().max(min);
    format!("{i:0width$}")
}

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
pub mod coder;
pub mod conductor;
pub mod dag;
pub mod decompose;
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
pub mod window;

#[cfg(test)]
pub(crate) mod testkit;

pub use agent::{Agent, AgentFuture};
pub use balance::{LoadBalancer, PriorityQueue, WorkQueue, run_batches};
pub use blackboard::{Blackboard, Contributor, Session};
pub use cascade::{Cascade, SynthesizeMode, TierSettings};
pub use coder::Coder;
pub use conductor::Conductor;
pub use dag::Dag;
pub use decompose::Strategy;
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

pub use crate::caps::CapHit;
pub(crate) use crate::step::pad;

use crate::ctx::Ctx;
use crate::step::StepSpec;

/// Recording a cap hit: the pattern library's half of [`CapHit`].
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

//! The three-method template: decompose, execute, synthesize.
//!
//! Implement [`Orchestrator`] and hand it to [`crate::run`]: the engine decomposes the
//! task, runs the subtasks by dependency and priority under the run's policies, checks the
//! minimum success ratio, synthesizes, and returns a [`crate::RunResult`].

use std::sync::Arc;

use async_trait::async_trait;

use crate::ctx::{Ctx, StepError, StepReply};
use crate::event::PlanSource;
use crate::llm::Providers;
use crate::plan::{Subtask, Task};
use crate::step::{StepId, StepSpec};

/// What a subtask produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutput {
    pub subtask_id: String,
    pub step: StepId,
    pub text: Arc<str>,
    pub model: Arc<str>,
}

impl AgentOutput {
    /// The output of `subtask`, run as `step`, from its reply: what `execute` usually
    /// returns after its [`Ctx::llm`] call.
    pub fn from_reply(subtask: &Subtask, step: &StepSpec, reply: StepReply) -> Self {
        AgentOutput {
            subtask_id: subtask.id.clone(),
            step: step.id.clone(),
            text: reply.text,
            model: reply.outcome.model,
        }
    }
}

/// A subtask's result: its output, or why there is none.
pub type Outcome = Result<AgentOutput, StepError>;

/// A plan and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub subtasks: Vec<Subtask>,
    pub source: PlanSource,
}

impl From<Vec<Subtask>> for Plan {
    fn from(subtasks: Vec<Subtask>) -> Self {
        Plan { subtasks, source: PlanSource::Orchestrator }
    }
}

/// The final text of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthesis {
    pub text: String,
}

/// A run in three methods. Every LLM call inside them goes through `ctx` (see
/// [`Ctx::llm`]) and so gets retries, limits, budget, events and recording for free.
#[async_trait]
pub trait Orchestrator: Send + Sync + 'static {
    /// The pattern's name, as shown in results and events.
    fn name(&self) -> &str {
        "custom"
    }

    /// Workers asked for, if the orchestrator has a fixed number.
    fn agents(&self) -> Option<usize> {
        None
    }

    /// Steps per tier from workers up for a plan of `n` subtasks (for progress displays).
    fn shape(&self, n: usize) -> Vec<usize> {
        vec![n, 1]
    }

    /// Check the configuration against the available providers before anything runs.
    /// An error here is bad input: the run does not start.
    fn validate(&self, _providers: &Providers) -> Result<(), String> {
        Ok(())
    }

    /// Split the task into subtasks. Not called when the caller gives a plan.
    async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError>;

    /// Run one subtask as step `step` (tier worker, `worker/NNN`, with the dependencies'
    /// steps as inputs), given the outputs of the subtasks it depends on. Pass
    /// `step.clone()` to [`Ctx::llm`]. (By reference: the engine holds one copy while the
    /// step runs, rather than one per layer of the future.)
    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError>;

    /// Merge the outcomes (one per subtask, in plan order) into the final text.
    async fn synthesize(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError>;

    /// Called instead of failing the run when fewer subtasks succeeded than `min_success`
    /// asks (`why` says so): an orchestrator that degrades gracefully answers some other way
    /// (the cascade with `degrade`: one agent answers the whole task). `None`, the default:
    /// the run fails.
    async fn rescue(
        &self,
        _ctx: &Ctx,
        _task: &Task,
        _plan: &[Subtask],
        _results: &[Outcome],
        _why: &str,
    ) -> Option<Result<Synthesis, StepError>> {
        None
    }
}

/// An orchestrator chosen at run time (`--pattern`, a workflow file, an HTTP request) runs
/// like any other, boxed or shared.
macro_rules! delegate_orchestrator {
    ($ty:ty) => {
        #[async_trait]
        impl Orchestrator for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn agents(&self) -> Option<usize> {
                (**self).agents()
            }
            fn shape(&self, n: usize) -> Vec<usize> {
                (**self).shape(n)
            }
            fn validate(&self, providers: &Providers) -> Result<(), String> {
                (**self).validate(providers)
            }
            async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
                (**self).decompose(ctx, task).await
            }
            async fn execute(
                &self,
                ctx: &Ctx,
                step: &StepSpec,
                task: &Task,
                subtask: &Subtask,
                deps: &[AgentOutput],
            ) -> Result<AgentOutput, StepError> {
                (**self).execute(ctx, step, task, subtask, deps).await
            }
            async fn synthesize(
                &self,
                ctx: &Ctx,
                task: &Task,
                plan: &[Subtask],
                results: &[Outcome],
            ) -> Result<Synthesis, StepError> {
                (**self).synthesize(ctx, task, plan, results).await
            }
            async fn rescue(
                &self,
                ctx: &Ctx,
                task: &Task,
                plan: &[Subtask],
                results: &[Outcome],
                why: &str,
            ) -> Option<Result<Synthesis, StepError>> {
                (**self).rescue(ctx, task, plan, results, why).await
            }
        }
    };
}

delegate_orchestrator!(Box<dyn Orchestrator>);
delegate_orchestrator!(Arc<dyn Orchestrator>);

/// The plain combination of subtask outputs, used when there is no synthesis (too few
/// workers, `--synthesize never`) or when synthesis could not run (budget, failures): every
/// output under its subtask's heading, and a line for each one that is missing.
pub fn combine_outputs(plan: &[Subtask], results: &[Outcome]) -> String {
    let mut out = String::new();
    for (i, (subtask, result)) in plan.iter().zip(results).enumerate() {
        out.push_str(&format!("## {}. {}\n\n", i + 1, subtask.description.trim()));
        match result {
            Ok(o) => out.push_str(o.text.trim_end()),
            Err(e) => out.push_str(&format!("_No output: {e}_")),
        }
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

//! [`Flow`]: any async function over the context as a whole run.
//!
//! The engine drives runs through the three-method [`Orchestrator`]. A flow is the
//! orchestrator whose plan is the task itself: its one "subtask" runs the function, which
//! calls patterns and [`Ctx`] as it likes, and whose text is the run's final output. The
//! run gets everything a run has — events, budget, limits, a record and resume — and its
//! RunResult lists every step the function ran.
//!
//! ```
//! use std::sync::Arc;
//! use belt_core::patterns::{Agent, Flow};
//! use belt_core::{RunOptions, RunStatus, StepSpec, Task, Tier, run};
//! use belt_core::testing::ScriptedProvider;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let writer = Agent::llm("t/model", "You write haiku.");
//! let flow = Flow::new("haiku", move |ctx, task| {
//!     let writer = writer.clone();
//!     async move {
//!         let text = writer.run(&ctx, StepSpec::new("write", Tier::Agent), task.description).await?;
//!         Ok(text.to_string())
//!     }
//! });
//! let options = RunOptions::default().with_provider(Arc::new(ScriptedProvider::new("t")));
//! let result = run(flow, Task::new("autumn"), options).await.unwrap().result().await;
//! assert_eq!(result.status, RunStatus::Completed);
//! assert_eq!(result.final_output.as_deref(), Some("Output of write. "));
//! # }
//! ```
//!
//! When the function returns an error, the run fails and a failed step `flow` holds the
//! error in the run's record. Limits of the adapter, until the engine has a whole-run entry
//! point: the run's `stop_reason` is then the engine's generic one ("only 0 of 1 subtasks
//! succeeded"), and the event stream shows one worker tier of one subtask around the
//! function's steps.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::ctx::{Ctx, StepError};
use crate::event::PlanSource;
use crate::orchestrator::{AgentOutput, Orchestrator, Outcome, Plan, Synthesis};
use crate::plan::{Subtask, Task};
use crate::step::{StepSpec, Tier};

/// An async function over the context, run as a whole run (see the module docs).
pub struct Flow<F> {
    name: String,
    body: F,
}

impl<F, Fut> Flow<F>
where
    F: Fn(Ctx, Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, StepError>> + Send + 'static,
{
    /// A run named `name` (its `pattern` in results and events) that runs `body` once.
    pub fn new(name: impl Into<String>, body: F) -> Self {
        Flow { name: name.into(), body }
    }
}

#[async_trait]
impl<F, Fut> Orchestrator for Flow<F>
where
    F: Fn(Ctx, Task) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, StepError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn shape(&self, n: usize) -> Vec<usize> {
        vec![n]
    }

    async fn decompose(&self, _ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        let subtasks = vec![Subtask::new("flow", task.description.clone())];
        Ok(Plan { subtasks, source: PlanSource::Orchestrator })
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        _deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let text = match (self.body)(ctx.clone(), task.clone()).await {
            Ok(text) => text,
            Err(e) => {
                // On record under the step `flow`, so the run's result says why it failed.
                let spec = StepSpec::new("flow", Tier::Custom(Arc::from("flow")));
                let message = e.to_string();
                let _ = ctx.step::<(), _>(spec, &(), async move { Err(message) }).await;
                return Err(e);
            }
        };
        Ok(AgentOutput {
            subtask_id: subtask.id.clone(),
            step: step.id.clone(),
            text: Arc::from(text),
            model: Arc::from(""),
        })
    }

    async fn synthesize(
        &self,
        _ctx: &Ctx,
        _task: &Task,
        _plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        match results.first() {
            Some(Ok(out)) => Ok(Synthesis { text: out.text.to_string() }),
            Some(Err(e)) => Err(e.clone()),
            None => Ok(Synthesis { text: String::new() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::patterns::testkit::{options, record};
    use crate::result::{AgentStatus, RunStatus};
    use crate::run::run;
    use crate::testing::ScriptedProvider;

    #[tokio::test]
    async fn a_failing_body_fails_the_run_and_its_error_is_on_record() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let flow = Flow::new("f", |_ctx, _task| async {
            Err(StepError::Failed { step: "router".into(), message: "unknown route `x`".into() })
        });
        let r = run(flow, Task::new("t"), options(&p)).await.unwrap().result().await;
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.pattern, "f");
        let rec = record(&r, "flow");
        assert_eq!(rec.status, AgentStatus::Failed);
        assert_eq!(rec.error.as_deref(), Some("flow: router: unknown route `x`"));
    }

    /// `Ctx::emit`: an orchestrator's own events reach subscribers and the store in order.
    #[tokio::test]
    async fn an_orchestrators_own_events_reach_subscribers_and_the_store() {
        use crate::event::EventKind;
        use crate::store::{MemoryStore, RunStore};
        let p = Arc::new(ScriptedProvider::new("t"));
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let flow = Flow::new("f", |ctx, _task| async move {
            for done in 1..=2 {
                ctx.emit("agent_progress", serde_json::json!({"done": done, "of": 2}));
            }
            ctx.emit("review_required", serde_json::Value::Null);
            Ok("ok".to_string())
        });
        let mut options = options(&p).with_store(store.clone());
        options.run_id = Some("run-e".into());
        let mut handle = run(flow, Task::new("t"), options).await.unwrap();
        let mut events = handle.events().unwrap();
        assert_eq!(handle.result().await.status, RunStatus::Completed);
        let mut live = Vec::new();
        while let Some(e) = events.recv().await {
            if let EventKind::Custom { name, data } = &e.kind {
                live.push((name.clone(), data.clone(), e.seq));
            }
        }
        let names: Vec<&str> = live.iter().map(|(n, ..)| n.as_str()).collect();
        assert_eq!(names, ["agent_progress", "agent_progress", "review_required"]);
        assert_eq!(live[1].1, serde_json::json!({"done": 2, "of": 2}));
        assert!(live.windows(2).all(|w| w[0].2 < w[1].2), "in sequence order");
        let stored: Vec<_> = store
            .events("run-e", 0)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.type_name() == "custom")
            .map(|e| e.seq)
            .collect();
        assert_eq!(stored, live.iter().map(|l| l.2).collect::<Vec<_>>(), "journaled like every event");
    }
}

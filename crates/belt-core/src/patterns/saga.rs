//! Saga: steps with compensations, undone in reverse order when one fails.
//!
//! Step `k` named `name` runs its action as `{scope}/{kk}-{name}` (`saga/02-charge`), on the
//! previous action's output (the saga's input for the first). When an action fails, the
//! actions that completed are compensated in reverse order: the compensation of step `k`
//! runs as `{scope}/{kk}-{name}/compensate` on the output of its own action. A compensation
//! that fails is recorded in [`SagaError::compensations`] and the others still run.
//! Steps without a compensation are passed over.
//!
//! Compensations go through the context like any step, so a resumed run does not undo
//! twice. But a run that is stopping (budget exhausted, store failure) refuses every new
//! step, compensations included: they are then reported as failed, with the reason, for
//! someone to undo by hand. (The engine has no kind of step that still runs once the run
//! is stopping; compensations would need one.)
//!
//! ```
//! use belt_core::patterns::{Agent, saga::Saga};
//! let trip = Saga::new("trip")
//!     .step("flight", Agent::map(|_| Ok("AF123".into())), Agent::map(|f| Ok(format!("cancelled {f}"))))
//!     .step("hotel", Agent::map(|_| Ok("H-77".into())), Agent::map(|h| Ok(format!("cancelled {h}"))))
//!     .step_final("notify", Agent::llm("simulated/default", "Write the confirmation."));
//! // match trip.run(&ctx, "Lyon, 3 nights").await { Ok(done) => …, Err(failed) => … }
//! ```

use std::sync::Arc;

use crate::ctx::{Ctx, StepError};
use crate::patterns::{Agent, pad};
use crate::step::{StepId, StepSpec, Tier};

#[derive(Clone)]
struct SagaStep {
    name: String,
    action: Agent,
    compensation: Option<Agent>,
}

/// An action that completed.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub name: String,
    pub step: StepId,
    pub output: Arc<str>,
}

/// A compensation that was run.
#[derive(Debug, Clone, PartialEq)]
pub struct Compensation {
    pub name: String,
    pub step: StepId,
    pub result: Result<Arc<str>, StepError>,
}

/// A saga whose actions all completed.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaRun {
    pub output: Arc<str>,
    pub steps: Vec<Done>,
}

/// A saga that failed: which step, why, and how its completed steps were compensated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "saga step `{failed}` ({step}) failed: {error}; {} compensation(s) ran, {} failed",
    .compensations.len(),
    .compensations.iter().filter(|c| c.result.is_err()).count()
)]
pub struct SagaError {
    pub failed: String,
    pub step: StepId,
    pub error: StepError,
    /// The actions that had completed, in order.
    pub completed: Vec<Done>,
    /// The compensations, in the order they ran (the reverse of `completed`).
    pub compensations: Vec<Compensation>,
}

impl SagaError {
    /// True when every compensation that ran succeeded.
    pub fn fully_compensated(&self) -> bool {
        self.compensations.iter().all(|c| c.result.is_ok())
    }
}

/// Steps with compensations (see the module docs).
#[derive(Clone)]
pub struct Saga {
    scope: String,
    steps: Vec<SagaStep>,
}

impl Saga {
    pub fn new(scope: impl Into<String>) -> Saga {
        Saga { scope: scope.into(), steps: Vec::new() }
    }

    /// A step whose action `compensation` undoes.
    pub fn step(mut self, name: impl Into<String>, action: Agent, compensation: Agent) -> Saga {
        self.steps.push(SagaStep { name: name.into(), action, compensation: Some(compensation) });
        self
    }

    /// A step with nothing to undo (a read, or the last step).
    pub fn step_final(mut self, name: impl Into<String>, action: Agent) -> Saga {
        self.steps.push(SagaStep { name: name.into(), action, compensation: None });
        self
    }

    fn step_id(&self, index: usize) -> StepId {
        let n = self.steps.len();
        StepId::new(format!("{}/{}-{}", self.scope, pad(index + 1, n, 2), self.steps[index].name))
    }

    /// Run the actions in order; on a failure, compensate (see the module docs).
    pub async fn run(&self, ctx: &Ctx, input: impl Into<Arc<str>>) -> Result<SagaRun, SagaError> {
        let mut current: Arc<str> = input.into();
        let mut completed: Vec<Done> = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            let id = self.step_id(i);
            let spec = StepSpec::new(id.clone(), Tier::Agent)
                .inputs(completed.last().map(|d| d.step.clone()).into_iter().collect());
            match s.action.run(ctx, spec, current.clone()).await {
                Ok(output) => {
                    completed.push(Done { name: s.name.clone(), step: id, output: output.clone() });
                    current = output;
                }
                Err(error) => {
                    let compensations = self.compensate(ctx, &completed).await;
                    return Err(SagaError {
                        failed: s.name.clone(),
                        step: id,
                        error,
                        completed,
                        compensations,
                    });
                }
            }
        }
        Ok(SagaRun { output: current, steps: completed })
    }

    /// Compensate `completed` in reverse order; every compensation runs whatever the others do.
    async fn compensate(&self, ctx: &Ctx, completed: &[Done]) -> Vec<Compensation> {
        let mut out = Vec::new();
        for (i, done) in completed.iter().enumerate().rev() {
            let Some(agent) = &self.steps[i].compensation else { continue };
            let spec =
                StepSpec::new(done.step.child("compensate"), Tier::Agent).inputs(vec![done.step.clone()]);
            let step = spec.id.clone();
            let result = agent.run(ctx, spec, done.output.clone()).await;
            out.push(Compensation { name: done.name.clone(), step, result });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::testkit::{record, within};
    use crate::result::AgentStatus;
    use crate::testing::ScriptedProvider;

    /// A saga of `n` steps whose actions and compensations log what they do; step `fail`
    /// (1-based) fails, and the compensations listed in `bad_undo` fail too.
    fn saga(
        n: usize,
        fail: Option<usize>,
        bad_undo: &'static [usize],
        log: &Arc<Mutex<Vec<String>>>,
    ) -> Saga {
        let mut saga = Saga::new("saga");
        for k in 1..=n {
            let (log_do, log_undo) = (log.clone(), log.clone());
            let action = Agent::map(move |input| {
                log_do.lock().unwrap().push(format!("do {k}"));
                if fail == Some(k) { Err(format!("step {k} broke")) } else { Ok(format!("{input}>{k}")) }
            });
            let undo = Agent::map(move |output| {
                log_undo.lock().unwrap().push(format!("undo {k} ({output})"));
                if bad_undo.contains(&k) { Err(format!("undo {k} broke")) } else { Ok(format!("undone {k}")) }
            });
            saga = if k == 2 {
                saga.step_final(format!("s{k}"), action)
            } else {
                saga.step(format!("s{k}"), action, undo)
            };
        }
        saga
    }

    #[tokio::test]
    async fn a_saga_that_succeeds_chains_its_outputs_and_compensates_nothing() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let s = saga(3, None, &[], &log);
        let (out, _) = within(&p, move |ctx| async move { s.run(&ctx, "in").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "in>1>2>3");
        assert_eq!(out.steps[2].step.as_str(), "saga/03-s3");
        assert_eq!(log.lock().unwrap().as_slice(), ["do 1", "do 2", "do 3"]);
    }

    #[tokio::test]
    async fn a_failure_compensates_completed_steps_in_reverse_order() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let s = saga(5, Some(4), &[], &log);
        let (out, result) = within(&p, move |ctx| async move { s.run(&ctx, "in").await }).await;
        let err = out.unwrap_err();
        assert_eq!((err.failed.as_str(), err.step.as_str()), ("s4", "saga/04-s4"));
        assert!(err.fully_compensated());
        // Step 2 has no compensation; step 5 never ran.
        assert_eq!(
            log.lock().unwrap().as_slice(),
            ["do 1", "do 2", "do 3", "do 4", "undo 3 (in>1>2>3)", "undo 1 (in>1)"]
        );
        let steps: Vec<&str> = err.compensations.iter().map(|c| c.step.as_str()).collect();
        assert_eq!(steps, ["saga/03-s3/compensate", "saga/01-s1/compensate"]);
        assert_eq!(record(&result, "saga/03-s3/compensate").inputs[0].as_str(), "saga/03-s3");
        assert!(err.to_string().contains("2 compensation(s) ran, 0 failed"), "{err}");
    }

    #[tokio::test]
    async fn a_failing_compensation_is_recorded_and_the_rest_still_run() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let s = saga(4, Some(4), &[3], &log);
        let (out, result) = within(&p, move |ctx| async move { s.run(&ctx, "in").await }).await;
        let err = out.unwrap_err();
        assert!(!err.fully_compensated());
        assert!(err.compensations[0].result.is_err());
        assert!(err.compensations[1].result.is_ok(), "step 1 is still undone");
        assert_eq!(log.lock().unwrap().last().unwrap(), "undo 1 (in>1)");
        assert_eq!(record(&result, "saga/03-s3/compensate").status, AgentStatus::Failed);
        assert!(err.to_string().ends_with("2 compensation(s) ran, 1 failed"), "{err}");
    }

    #[tokio::test]
    async fn llm_actions_and_compensations_are_steps_like_any_other() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("saga/02", LlmError::Auth("x".into())));
        let s = Saga::new("saga").step("a", Agent::llm("t/m", "do"), Agent::llm("t/m", "undo")).step(
            "b",
            Agent::llm("t/m", "do"),
            Agent::llm("t/m", "undo"),
        );
        let (out, _) = within(&p, move |ctx| async move { s.run(&ctx, "in").await }).await;
        let err = out.unwrap_err();
        assert_eq!(err.compensations.len(), 1);
        assert_eq!(err.compensations[0].result.as_deref().unwrap(), "Output of saga/01-a/compensate. ");
        assert_eq!(p.calls("saga/01-a/compensate"), 1);
    }
}

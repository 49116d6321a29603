//! Parallel fan-out / fan-in with required and optional branches.
//!
//! Every branch runs its agent on the same input at once (under the run's concurrency
//! limit), as step `{scope}/{branch}` (`parallel/legal`). Then:
//! - a failed **required** branch fails the whole: [`ParallelError`] names it, and the
//!   fan-in does not run (branches that had not started by then are recorded as skipped;
//!   the ones in flight finish, as the engine cannot cancel one branch alone);
//! - a failed **optional** branch is reported in [`ParallelRun::failed_optional`] and left
//!   out of the fan-in, which is told which branches are missing.
//!
//! The fan-in is an agent run as `{scope}/join` on the branches' outputs, each under a
//! `### {branch}` heading, followed by a `Missing inputs:` line when optional branches
//! failed. Without a fan-in agent, that combined text is the output.
//!
//! ```
//! use belt_core::patterns::{Agent, parallel::Parallel};
//! let review = Parallel::new("review")
//!     .required("legal", Agent::llm("simulated/default", "You are a lawyer."))
//!     .required("security", Agent::llm("simulated/default", "You are a security reviewer."))
//!     .optional("style", Agent::llm("simulated/default", "You are an editor."))
//!     .join(Agent::llm("simulated/default", "Merge the reviews into one verdict."));
//! // let run = review.run(&ctx, proposal).await?;
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ctx::{Ctx, StepError};
use crate::patterns::Agent;
use crate::step::{StepId, StepSpec, Tier};

#[derive(Clone)]
struct Branch {
    name: String,
    agent: Agent,
    required: bool,
}

/// One branch's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchResult {
    pub name: String,
    pub step: StepId,
    pub required: bool,
    pub outcome: Result<Arc<str>, StepError>,
}

/// A fan-out whose required branches all succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelRun {
    /// The fan-in's output (or the combined branches' outputs without one).
    pub output: Arc<str>,
    /// Every branch, in the order they were added.
    pub branches: Vec<BranchResult>,
}

impl ParallelRun {
    /// The optional branches that failed, with their errors.
    pub fn failed_optional(&self) -> Vec<(&str, &StepError)> {
        self.branches.iter().filter_map(|b| b.outcome.as_ref().err().map(|e| (b.name.as_str(), e))).collect()
    }
}

/// Why a fan-out failed as a whole.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParallelError {
    #[error("required branch `{branch}` failed: {error}")]
    RequiredFailed { branch: String, error: StepError, branches: Vec<BranchResult> },
    #[error("the fan-in failed: {error}")]
    JoinFailed { error: StepError, branches: Vec<BranchResult> },
}

/// Branches run in parallel on one input, then a fan-in (see the module docs).
#[derive(Clone)]
pub struct Parallel {
    scope: String,
    branches: Vec<Branch>,
    join: Option<Agent>,
}

impl Parallel {
    pub fn new(scope: impl Into<String>) -> Parallel {
        Parallel { scope: scope.into(), branches: Vec::new(), join: None }
    }

    /// A branch whose failure fails the whole.
    pub fn required(mut self, name: impl Into<String>, agent: Agent) -> Parallel {
        self.branches.push(Branch { name: name.into(), agent, required: true });
        self
    }

    /// A branch whose failure is reported and left out of the fan-in.
    pub fn optional(mut self, name: impl Into<String>, agent: Agent) -> Parallel {
        self.branches.push(Branch { name: name.into(), agent, required: false });
        self
    }

    /// The agent that merges the branches' outputs.
    pub fn join(mut self, agent: Agent) -> Parallel {
        self.join = Some(agent);
        self
    }

    fn step_id(&self, name: &str) -> StepId {
        StepId::new(format!("{}/{name}", self.scope))
    }

    /// Run every branch on `input`, then the fan-in.
    pub async fn run(&self, ctx: &Ctx, input: impl Into<Arc<str>>) -> Result<ParallelRun, ParallelError> {
        let input: Arc<str> = input.into();
        let required_failed = AtomicBool::new(false);
        // Collected first: a lazy `map` here trips the compiler's Send check of the
        // caller's future (higher-ranked lifetimes in the closure), and branches are few.
        let futures: Vec<_> = self
            .branches
            .iter()
            .map(|b| {
                let spec = StepSpec::new(self.step_id(&b.name), Tier::Agent);
                let (input, required_failed) = (input.clone(), &required_failed);
                async move {
                    // Started after a required branch failed: the whole has failed already.
                    if required_failed.load(Ordering::Acquire) {
                        return Err(ctx.skip(spec, b.agent.model(), "a required branch failed"));
                    }
                    let out = b.agent.run(ctx, spec, input).await;
                    if out.is_err() && b.required {
                        required_failed.store(true, Ordering::Release);
                    }
                    out
                }
            })
            .collect();
        let outcomes = ctx.all(futures).await;
        let branches: Vec<BranchResult> = self
            .branches
            .iter()
            .zip(outcomes)
            .map(|(b, outcome)| BranchResult {
                name: b.name.clone(),
                step: self.step_id(&b.name),
                required: b.required,
                outcome,
            })
            .collect();
        // The first required branch that failed by itself (not one skipped because of it).
        let failed = branches
            .iter()
            .filter(|b| b.required)
            .find_map(|b| b.outcome.as_ref().err().filter(|e| !is_knock_on(e)).map(|e| (b, e)))
            .or_else(|| {
                branches.iter().filter(|b| b.required).find_map(|b| b.outcome.as_ref().err().map(|e| (b, e)))
            });
        if let Some((b, e)) = failed {
            let (branch, error) = (b.name.clone(), e.clone());
            return Err(ParallelError::RequiredFailed { branch, error, branches });
        }
        let combined = combine(&branches);
        let output = match &self.join {
            None => Arc::from(combined),
            Some(agent) => {
                let inputs = branches.iter().filter(|b| b.outcome.is_ok()).map(|b| b.step.clone()).collect();
                let spec = StepSpec::new(self.step_id("join"), Tier::Synthesizer).inputs(inputs);
                match agent.run(ctx, spec, combined).await {
                    Ok(out) => out,
                    Err(error) => return Err(ParallelError::JoinFailed { error, branches }),
                }
            }
        };
        Ok(ParallelRun { output, branches })
    }
}

fn is_knock_on(e: &StepError) -> bool {
    matches!(e, StepError::Skipped { reason, .. } if reason == "a required branch failed")
}

/// The successful branches under their names, and a line naming the missing ones.
fn combine(branches: &[BranchResult]) -> String {
    let mut out = String::new();
    let mut missing = Vec::new();
    for b in branches {
        match &b.outcome {
            Ok(text) => out.push_str(&format!("### {}\n\n{}\n\n", b.name, text.trim_end())),
            Err(e) => missing.push(format!("{} ({})", b.name, e.kind())),
        }
    }
    if !missing.is_empty() {
        out.push_str(&format!("Missing inputs: {}\n", missing.join("; ")));
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::testkit::{options, record, within, within_options};
    use crate::result::{AgentStatus, RunStatus};
    use crate::testing::ScriptedProvider;

    fn agent() -> Agent {
        Agent::llm("t/m", "role")
    }

    fn fan(scope: &str) -> Parallel {
        Parallel::new(scope)
            .required("a", agent())
            .required("b", agent())
            .optional("c", agent())
            .join(agent())
    }

    #[tokio::test]
    async fn branches_run_at_once_and_the_fan_in_gets_them_all() {
        let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(20)));
        let fan = fan("par");
        let (out, result) = within(&p, move |ctx| async move { fan.run(&ctx, "question").await }).await;
        let out = out.unwrap();
        assert_eq!(&*out.output, "Output of par/join. ");
        assert!(out.failed_optional().is_empty());
        assert_eq!(p.max_in_flight(), 3);
        assert_eq!(result.status, RunStatus::Completed);
        let join = record(&result, "par/join");
        let inputs: Vec<&str> = join.inputs.iter().map(|s| s.as_str()).collect();
        assert_eq!(inputs, ["par/a", "par/b", "par/c"]);
    }

    #[tokio::test]
    async fn a_failed_optional_branch_is_reported_and_left_out() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("par/c", LlmError::Auth("x".into())));
        let fan = Parallel::new("par").required("a", agent()).required("b", agent()).optional("c", agent());
        let (out, result) = within(&p, move |ctx| async move { fan.run(&ctx, "question").await }).await;
        let out = out.unwrap();
        let failed = out.failed_optional();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "c");
        assert_eq!(
            &*out.output,
            "### a\n\nOutput of par/a.\n\n### b\n\nOutput of par/b.\n\nMissing inputs: c (auth)"
        );
        assert_eq!(result.status, RunStatus::Partial);
    }

    #[tokio::test]
    async fn a_failed_required_branch_fails_the_whole_without_a_fan_in() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("par/b", LlmError::Auth("x".into())));
        let fan = fan("par");
        let (out, result) = within(&p, move |ctx| async move { fan.run(&ctx, "question").await }).await;
        let err = out.unwrap_err();
        assert!(matches!(&err, ParallelError::RequiredFailed { branch, .. } if branch == "b"), "{err}");
        assert!(
            err.to_string().starts_with("required branch `b` failed: par/b: authentication failed"),
            "{err}"
        );
        assert_eq!(p.calls("par/join"), 0);
        assert!(result.agents.iter().all(|a| a.step.as_str() != "par/join"));
    }

    #[tokio::test]
    async fn branches_not_started_when_a_required_one_failed_are_skipped() {
        let p = Arc::new(
            ScriptedProvider::new("t")
                .always_fail("par/a", LlmError::Auth("x".into()))
                .delay_for("par/b", Duration::from_millis(30)),
        );
        // One branch at a time: `a` fails first, so `b` and `c` never start.
        let fan = fan("par");
        let (out, result) =
            within_options(options(&p).concurrency(1), move |ctx| async move { fan.run(&ctx, "q").await })
                .await;
        assert!(matches!(out.unwrap_err(), ParallelError::RequiredFailed { branch, .. } if branch == "a"));
        assert_eq!(p.total_calls(), 1);
        assert_eq!(record(&result, "par/b").status, AgentStatus::Skipped);
        assert_eq!(record(&result, "par/c").status, AgentStatus::Skipped);
    }
}

//! Supervisor: tasks routed to agents by capability, with a record per agent and fallback.
//!
//! Each agent is registered with the capabilities it has. [`Supervisor::assign`] gives a
//! task needing a capability to the most reliable capable agent — fewest failures, then most
//! successes, then registration order — as step `{scope}/{task}/{agent}`
//! (`team/q3-report/alice`). If it fails, the task falls back to the next capable agent that
//! has not tried it, up to `max_attempts` agents per task (default 3; a [`CapHit`] when it
//! stops the task). Every outcome updates the agent's [`AgentStats`], shared by every clone
//! of the supervisor, so later tasks go to the agents that have been doing well.
//!
//! On resume, completed steps replay; the choice of agent depends on the record, which
//! replays the same way when tasks are assigned in the same order.
//!
//! ```
//! use belt_core::patterns::{Agent, supervisor::Supervisor};
//! let team = Supervisor::new("team")
//!     .agent("alice", &["research", "writing"], Agent::llm("simulated/default", "Senior analyst."))
//!     .agent("bob", &["research"], Agent::llm("simulated/default", "Junior analyst."));
//! // let done = team.assign(&ctx, "q3", "research", "Q3 churn drivers").await?;
//! ```

use std::sync::{Arc, Mutex};

use crate::ctx::{Ctx, StepError};
use crate::patterns::{Agent, CapHit, stopping};
use crate::step::{StepId, StepSpec, Tier};

#[derive(Clone)]
struct Member {
    name: String,
    capabilities: Vec<String>,
    agent: Agent,
}

/// What the supervisor knows of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentStats {
    pub name: String,
    pub capabilities: Vec<String>,
    pub successes: u32,
    pub failures: u32,
}

/// One agent's failed try at a task.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedTry {
    pub agent: String,
    pub step: StepId,
    pub error: StepError,
}

/// A task done.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub task: String,
    pub agent: String,
    pub step: StepId,
    pub output: Arc<str>,
    /// The agents that tried before, and why they failed.
    pub failed: Vec<FailedTry>,
}

/// Why a task was not done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SupervisorError {
    #[error("no agent has the capability `{capability}`; capabilities: {}", .known.join(", "))]
    NoCapableAgent { capability: String, known: Vec<String> },
    #[error("every capable agent failed task `{task}`: {}", fmt_tries(.failed))]
    AllFailed { task: String, failed: Vec<FailedTry> },
    #[error("task `{task}`: {cap} after {}", fmt_tries(.failed))]
    Cap { task: String, cap: CapHit, failed: Vec<FailedTry> },
}

fn fmt_tries(failed: &[FailedTry]) -> String {
    failed.iter().map(|f| format!("{} ({})", f.agent, f.error.kind())).collect::<Vec<_>>().join(", ")
}

/// Agents by capability, with a record (see the module docs).
#[derive(Clone)]
pub struct Supervisor {
    scope: String,
    members: Vec<Member>,
    stats: Arc<Mutex<Vec<AgentStats>>>,
    max_attempts: usize,
}

/// Agents tried per task at most, unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: usize = 3;

impl Supervisor {
    pub fn new(scope: impl Into<String>) -> Supervisor {
        Supervisor {
            scope: scope.into(),
            members: Vec::new(),
            stats: Arc::new(Mutex::new(Vec::new())),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// An agent named `name` with `capabilities`.
    pub fn agent(mut self, name: impl Into<String>, capabilities: &[&str], agent: Agent) -> Supervisor {
        let name = name.into();
        let capabilities: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
        self.lock().push(AgentStats {
            name: name.clone(),
            capabilities: capabilities.clone(),
            ..Default::default()
        });
        self.members.push(Member { name, capabilities, agent });
        self
    }

    /// Agents tried per task at most (at least 1).
    pub fn max_attempts(mut self, n: usize) -> Supervisor {
        self.max_attempts = n.max(1);
        self
    }

    /// Every agent's record, in registration order.
    pub fn stats(&self) -> Vec<AgentStats> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AgentStats>> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The capable agents that have not tried yet, best record first.
    fn candidates(&self, capability: &str, tried: &[FailedTry]) -> Vec<usize> {
        let stats = self.lock();
        let mut c: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].capabilities.iter().any(|c| c == capability))
            .filter(|&i| tried.iter().all(|t| t.agent != self.members[i].name))
            .collect();
        c.sort_by_key(|&i| (stats[i].failures, std::cmp::Reverse(stats[i].successes), i));
        c
    }

    /// Do task `task` (an id, unique in the run) needing `capability`, on `input`.
    pub async fn assign(
        &self,
        ctx: &Ctx,
        task: &str,
        capability: &str,
        input: impl Into<Arc<str>>,
    ) -> Result<Assignment, SupervisorError> {
        let input: Arc<str> = input.into();
        if self.candidates(capability, &[]).is_empty() {
            let mut known: Vec<String> = self.members.iter().flat_map(|m| m.capabilities.clone()).collect();
            known.sort();
            known.dedup();
            return Err(SupervisorError::NoCapableAgent { capability: capability.to_string(), known });
        }
        let mut failed: Vec<FailedTry> = Vec::new();
        while let Some(&i) = self.candidates(capability, &failed).first() {
            let member = &self.members[i];
            let step = StepId::new(format!("{}/{task}/{}", self.scope, member.name));
            if failed.len() >= self.max_attempts {
                let spec = StepSpec::new(step, Tier::Agent);
                let cap = CapHit::record(ctx, "max_attempts", self.max_attempts, spec, member.agent.model());
                return Err(SupervisorError::Cap { task: task.to_string(), cap, failed });
            }
            let spec = StepSpec::new(step.clone(), Tier::Agent);
            match member.agent.run(ctx, spec, input.clone()).await {
                Ok(output) => {
                    self.lock()[i].successes += 1;
                    return Ok(Assignment {
                        task: task.to_string(),
                        agent: member.name.clone(),
                        step,
                        output,
                        failed,
                    });
                }
                Err(error) => {
                    let stop = stopping(ctx);
                    if !stop {
                        self.lock()[i].failures += 1;
                    }
                    failed.push(FailedTry { agent: member.name.clone(), step, error });
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(SupervisorError::AllFailed { task: task.to_string(), failed })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::testkit::{record, within};
    use crate::result::AgentStatus;
    use crate::testing::ScriptedProvider;

    fn team() -> Supervisor {
        Supervisor::new("team")
            .agent("alice", &["research", "writing"], Agent::llm("t/m", "a"))
            .agent("bob", &["research"], Agent::llm("t/m", "b"))
            .agent("carol", &["research"], Agent::llm("t/m", "c"))
            .agent("dan", &["design"], Agent::llm("t/m", "d"))
    }

    #[tokio::test]
    async fn routes_by_capability_and_falls_back_to_another_capable_agent() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("team/t1/alice", LlmError::Auth("x".into())));
        let sup = team();
        let (out, result) = within(&p, move |ctx| async move {
            let first = sup.assign(&ctx, "t1", "research", "q").await;
            let write = sup.assign(&ctx, "t2", "writing", "q").await;
            (first, write, sup.stats())
        })
        .await;
        let first = out.0.unwrap();
        assert_eq!((first.agent.as_str(), first.step.as_str()), ("bob", "team/t1/bob"));
        assert_eq!(first.failed.len(), 1);
        assert_eq!(first.failed[0].agent, "alice");
        assert_eq!(out.1.unwrap().agent, "alice", "the only writer, despite its failure");
        let stats = out.2;
        assert_eq!((stats[0].successes, stats[0].failures), (1, 1));
        assert_eq!((stats[1].successes, stats[1].failures), (1, 0));
        assert_eq!(stats[3].successes + stats[3].failures, 0, "dan cannot research");
        assert_eq!(record(&result, "team/t1/alice").status, AgentStatus::Failed);
    }

    #[tokio::test]
    async fn later_tasks_go_to_the_agents_with_the_better_record() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("team/t1/alice", LlmError::Auth("x".into())));
        let sup = team();
        let (agents, _) = within(&p, move |ctx| async move {
            let mut agents = Vec::new();
            for t in ["t1", "t2", "t3"] {
                agents.push(sup.assign(&ctx, t, "research", "q").await.unwrap().agent);
            }
            agents
        })
        .await;
        // alice failed t1, so bob (1 success) then bob again: fewest failures, most successes.
        assert_eq!(agents, ["bob", "bob", "bob"]);
    }

    #[tokio::test]
    async fn unknown_capabilities_all_failed_and_the_attempt_cap_are_errors() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("team/", LlmError::Auth("x".into())));
        let sup = team();
        let capped = team().max_attempts(2);
        let (out, result) = within(&p, move |ctx| async move {
            (
                sup.assign(&ctx, "t1", "cooking", "q").await,
                sup.assign(&ctx, "t2", "research", "q").await,
                capped.assign(&ctx, "t3", "research", "q").await,
            )
        })
        .await;
        assert_eq!(
            out.0.unwrap_err().to_string(),
            "no agent has the capability `cooking`; capabilities: design, research, writing"
        );
        assert_eq!(
            out.1.unwrap_err().to_string(),
            "every capable agent failed task `t2`: alice (auth), bob (auth), carol (auth)"
        );
        let err = out.2.unwrap_err();
        let SupervisorError::Cap { cap, .. } = &err else { panic!("{err}") };
        assert_eq!(cap.at.as_str(), "team/t3/carol");
        assert_eq!(record(&result, "team/t3/carol").status, AgentStatus::Skipped);
        assert_eq!(p.calls("team/t3/carol"), 0);
    }
}

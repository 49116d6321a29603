//! DAG: steps with dependencies, each started the moment its inputs exist.
//!
//! Node `id` runs as step `{scope}/{id}` (`dag/fetch`) once every node it depends on has
//! completed: there are no supersteps, so a fast branch never waits for a slow unrelated
//! one. A node's input is the DAG's input followed by its dependencies' outputs, each under
//! a `### {id}` heading (or what [`Dag::compose`] makes of them).
//!
//! Before any call the graph is checked with [`crate::plan::validate_plan`]: a duplicate
//! id, a dependency on an unknown id, or a cycle is a [`PlanError`] — the cycle with its
//! path (`a -> b -> a`). When a node fails, every node that depends on it, directly or
//! not, is recorded as skipped with the failed dependencies named, and the rest of the graph
//! completes: the [`DagRun`] is then partial.
//!
//! At most [`Ctx::concurrency`] nodes run at once; ready nodes start in the order they were
//! added.
//!
//! ```
//! use belt_core::patterns::{Agent, dag::Dag};
//! let model = "simulated/default";
//! let dag = Dag::new("dag")
//!     .node("market", &[], Agent::llm(model, "Size the market."))
//!     .node("costs", &[], Agent::llm(model, "Estimate the costs."))
//!     .node("pricing", &["market", "costs"], Agent::llm(model, "Propose a price."))
//!     .node("pitch", &["pricing"], Agent::llm(model, "Write the pitch."));
//! assert!(dag.validate().is_ok());
//! // let run = dag.run(&ctx, "A bicycle-sharing service for Lyon").await?;
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::ctx::{Ctx, StepError};
use crate::patterns::Agent;
use crate::plan::{PlanError, Subtask, validate_plan};
use crate::step::{StepId, StepSpec, Tier};

type Compose = Arc<dyn Fn(&str, &[(&str, &str)]) -> String + Send + Sync>;

#[derive(Clone)]
struct Node {
    id: String,
    deps: Vec<String>,
    agent: Agent,
}

/// How a node ended.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOutcome {
    Completed(Arc<str>),
    Failed(StepError),
    /// Not run because these dependencies failed or were skipped.
    Skipped {
        failed_deps: Vec<String>,
    },
}

/// One node's result.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResult {
    pub id: String,
    pub step: StepId,
    pub outcome: NodeOutcome,
}

/// Every node's outcome, in the order the nodes were added.
#[derive(Debug, Clone, PartialEq)]
pub struct DagRun {
    pub nodes: Vec<NodeResult>,
    /// Node ids in the order they ended (completed, failed or skipped).
    pub finished: Vec<String>,
}

impl DagRun {
    /// The output of node `id`, if it completed.
    pub fn output(&self, id: &str) -> Option<&Arc<str>> {
        self.nodes.iter().find(|n| n.id == id).and_then(|n| match &n.outcome {
            NodeOutcome::Completed(text) => Some(text),
            _ => None,
        })
    }

    /// True when every node completed.
    pub fn is_complete(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n.outcome, NodeOutcome::Completed(_)))
    }

    /// The ids of nodes that failed.
    pub fn failed(&self) -> Vec<&str> {
        self.with(|o| matches!(o, NodeOutcome::Failed(_)))
    }

    /// The ids of nodes skipped because a dependency failed.
    pub fn skipped(&self) -> Vec<&str> {
        self.with(|o| matches!(o, NodeOutcome::Skipped { .. }))
    }

    fn with(&self, f: impl Fn(&NodeOutcome) -> bool) -> Vec<&str> {
        self.nodes.iter().filter(|n| f(&n.outcome)).map(|n| n.id.as_str()).collect()
    }
}

/// Nodes and their dependencies (see the module docs).
#[derive(Clone)]
pub struct Dag {
    scope: String,
    nodes: Vec<Node>,
    compose: Compose,
}

impl Dag {
    pub fn new(scope: impl Into<String>) -> Dag {
        Dag { scope: scope.into(), nodes: Vec::new(), compose: Arc::new(default_compose) }
    }

    /// A node `id` that runs `agent` once the nodes `deps` have completed.
    pub fn node(mut self, id: impl Into<String>, deps: &[&str], agent: Agent) -> Dag {
        let deps = deps.iter().map(|d| d.to_string()).collect();
        self.nodes.push(Node { id: id.into(), deps, agent });
        self
    }

    /// How a node's input is made from the DAG's input and its dependencies' `(id, output)`
    /// pairs, in the order the node lists them.
    pub fn compose(mut self, f: impl Fn(&str, &[(&str, &str)]) -> String + Send + Sync + 'static) -> Dag {
        self.compose = Arc::new(f);
        self
    }

    /// Check ids, dependencies and cycles, as before a run.
    pub fn validate(&self) -> Result<(), PlanError> {
        let plan: Vec<Subtask> = self
            .nodes
            .iter()
            .map(|n| Subtask { dependencies: n.deps.clone(), ..Subtask::new(n.id.clone(), "node") })
            .collect();
        validate_plan(&plan)
    }

    fn step_id(&self, id: &str) -> StepId {
        StepId::new(format!("{}/{id}", self.scope))
    }

    /// Run the graph on `input`. An invalid graph is rejected before any call.
    pub async fn run(&self, ctx: &Ctx, input: impl Into<Arc<str>>) -> Result<DagRun, PlanError> {
        self.validate()?;
        let input: Arc<str> = input.into();
        let n = self.nodes.len();
        let index: HashMap<&str, usize> =
            self.nodes.iter().enumerate().map(|(i, x)| (x.id.as_str(), i)).collect();
        let deps: Vec<Vec<usize>> =
            self.nodes.iter().map(|x| x.deps.iter().map(|d| index[d.as_str()]).collect()).collect();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut outcomes: Vec<Option<NodeOutcome>> = vec![None; n];
        let mut finished = Vec::with_capacity(n);
        let mut running = FuturesUnordered::new();
        let limit = ctx.concurrency().max(1);
        loop {
            while running.len() < limit {
                let Some(i) = ready.pop_front() else { break };
                let node = &self.nodes[i];
                let spec = StepSpec::new(self.step_id(&node.id), Tier::Agent)
                    .inputs(node.deps.iter().map(|d| self.step_id(d)).collect());
                let failed: Vec<String> = deps[i]
                    .iter()
                    .filter(|&&d| !matches!(outcomes[d], Some(NodeOutcome::Completed(_))))
                    .map(|&d| self.nodes[d].id.clone())
                    .collect();
                if !failed.is_empty() {
                    ctx.skip(spec, node.agent.model(), format!("dependencies failed: {}", failed.join(", ")));
                    outcomes[i] = Some(NodeOutcome::Skipped { failed_deps: failed });
                    finished.push(node.id.clone());
                    release(i, &dependents, &mut waiting, &mut ready);
                    continue;
                }
                let dep_outputs: Vec<(&str, &str)> = deps[i]
                    .iter()
                    .filter_map(|&d| match &outcomes[d] {
                        Some(NodeOutcome::Completed(text)) => Some((self.nodes[d].id.as_str(), &**text)),
                        _ => None,
                    })
                    .collect();
                let node_input = if dep_outputs.is_empty() {
                    input.clone()
                } else {
                    Arc::from((self.compose)(&input, &dep_outputs))
                };
                let work = node.agent.run(ctx, spec, node_input);
                running.push(async move { (i, work.await) });
            }
            let Some((i, outcome)) = running.next().await else { break };
            outcomes[i] = Some(match outcome {
                Ok(text) => NodeOutcome::Completed(text),
                Err(e) => NodeOutcome::Failed(e),
            });
            finished.push(self.nodes[i].id.clone());
            release(i, &dependents, &mut waiting, &mut ready);
        }
        let nodes = self
            .nodes
            .iter()
            .zip(outcomes)
            .map(|(node, outcome)| NodeResult {
                id: node.id.clone(),
                step: self.step_id(&node.id),
                outcome: outcome.expect("a valid graph ends every node"),
            })
            .collect();
        Ok(DagRun { nodes, finished })
    }
}

fn release(i: usize, dependents: &[Vec<usize>], waiting: &mut [usize], ready: &mut VecDeque<usize>) {
    for &d in &dependents[i] {
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.push_back(d);
        }
    }
}

/// The input, then each dependency's output under its id.
fn default_compose(input: &str, deps: &[(&str, &str)]) -> String {
    let mut out = input.trim_end().to_string();
    for (id, text) in deps {
        out.push_str(&format!("\n\n### {id}\n\n{}", text.trim_end()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::testkit::{record, within};
    use crate::result::{AgentStatus, RunStatus};
    use crate::testing::ScriptedProvider;

    fn llm() -> Agent {
        Agent::llm("t/m", "role")
    }

    #[tokio::test]
    async fn cycles_and_unknown_ids_are_rejected_with_their_path_before_any_call() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let cyclic = Dag::new("dag")
            .node("a", &[], llm())
            .node("b", &["a", "d"], llm())
            .node("c", &["b"], llm())
            .node("d", &["c"], llm());
        let unknown = Dag::new("dag").node("a", &[], llm()).node("b", &["zz"], llm());
        let (out, result) = within(&p, move |ctx| async move {
            (cyclic.run(&ctx, "x").await.map(|_| ()), unknown.run(&ctx, "x").await.map(|_| ()))
        })
        .await;
        let cycle = out.0.unwrap_err();
        assert_eq!(cycle, PlanError::Cycle(vec!["b".into(), "d".into(), "c".into(), "b".into()]));
        assert_eq!(cycle.to_string(), "the plan has a dependency cycle: b -> d -> c -> b");
        assert!(
            matches!(out.1.unwrap_err(), PlanError::UnknownDependency { dependency, .. } if dependency == "zz")
        );
        assert_eq!(p.total_calls(), 0, "nothing ran, not even the valid node `a`");
        assert!(result.agents.is_empty());
    }

    #[tokio::test]
    async fn nodes_get_their_dependencies_outputs() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let dag = Dag::new("dag").node("a", &[], llm()).node("b", &[], llm()).node(
            "c",
            &["a", "b"],
            Agent::map(|input| Ok(input.to_string())),
        );
        let (out, result) = within(&p, move |ctx| async move { dag.run(&ctx, "task").await }).await;
        let out = out.unwrap();
        assert!(out.is_complete());
        assert_eq!(
            &**out.output("c").unwrap(),
            "task\n\n### a\n\nOutput of dag/a.\n\n### b\n\nOutput of dag/b."
        );
        let inputs: Vec<&str> = record(&result, "dag/c").inputs.iter().map(|s| s.as_str()).collect();
        assert_eq!(inputs, ["dag/a", "dag/b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_branch_never_waits_for_a_slow_unrelated_one() {
        let p = Arc::new(
            ScriptedProvider::new("t")
                .delay_for("dag/slow", Duration::from_secs(10))
                .delay(Duration::from_millis(100)),
        );
        let dag = Dag::new("dag")
            .node("slow", &[], llm())
            .node("f1", &[], llm())
            .node("f2", &["f1"], llm())
            .node("f3", &["f2"], llm())
            .node("after", &["slow", "f3"], llm());
        let (out, _) = within(&p, move |ctx| async move { dag.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(out.finished, ["f1", "f2", "f3", "slow", "after"]);
    }

    #[tokio::test]
    async fn dependents_of_a_failure_are_skipped_and_the_rest_completes() {
        let p = Arc::new(ScriptedProvider::new("t").always_fail("dag/b", LlmError::Auth("x".into())));
        let dag = Dag::new("dag")
            .node("a", &[], llm())
            .node("b", &["a"], llm())
            .node("c", &["b"], llm())
            .node("d", &["c", "a"], llm())
            .node("e", &["a"], llm());
        let (out, result) = within(&p, move |ctx| async move { dag.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert!(!out.is_complete());
        assert_eq!(out.failed(), ["b"]);
        assert_eq!(out.skipped(), ["c", "d"]);
        assert!(out.output("e").is_some());
        assert_eq!(
            out.nodes[3].outcome,
            NodeOutcome::Skipped { failed_deps: vec!["c".into()] },
            "d names the dependency it waited for"
        );
        let c = record(&result, "dag/c");
        assert_eq!(c.status, AgentStatus::Skipped);
        assert_eq!(c.error.as_deref(), Some("dependencies failed: b"));
        assert_eq!(result.status, RunStatus::Partial);
        assert_eq!(p.total_calls(), 3, "a, b (fatal, once), e");
    }
}

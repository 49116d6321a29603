//! Orchestrator of orchestrators: an LLM plans phases, each run by a named sub-orchestrator
//! in its own StepId scope.
//!
//! A [`Conductor`] knows sub-orchestrators by name, each with a description for the planner.
//! A sub-orchestrator is an [`Agent`]: it is run with a [`StepSpec`] whose id is its phase's
//! scope, and names its own steps under it (`spec.id.child(..)`, or a pattern built with
//! `spec.id` as its scope). [`Conductor::swarm`] is a ready-made one: a scoped swarm search.
//!
//! [`Conductor::run`] first asks the model for a plan (step `{scope}/plan`): a JSON array of
//! `{"orchestrator", "goal"}`. A plan naming an orchestrator that does not exist is an error
//! listing the valid ones; a reply with no usable plan falls back to every sub-orchestrator
//! once, in registration order (a `plan_fallback` event says so); phases beyond
//! `max_phases` (default 6) are cut, with a [`CapHit`]. Phase `k` then runs in the scope
//! `{scope}/{kk}-{name}` (`conductor/02-review`) on the task, its goal and the outputs of the
//! phases before it. The last phase's output is the conductor's.
//!
//! ```
//! use belt_core::patterns::{Agent, conductor::Conductor, iterative::Refine};
//! let model = "simulated/default";
//! let conductor = Conductor::new(model)
//!     .swarm("research", "searches news, studies, products and forums in parallel", 4)
//!     .orchestrator("write", "drafts and refines a text until it is good", Agent::new(move |ctx, spec, input| async move {
//!         let done = Refine::llm(model).scope(spec.id.as_str()).max_iterations(2).run(&ctx, input).await;
//!         done.map(|d| d.output).map_err(|e| e.error)
//!     }));
//! // let run = conductor.run(&ctx, "A report on urban cycling").await?;
//! ```
//!
//! Only patterns that take a scope can be sub-orchestrators: the engine's [`crate::Ctx`] has no
//! scoped view yet, so an [`crate::Orchestrator`] such as the cascade, whose step names are
//! fixed, cannot run as a phase without its steps colliding with another phase's.

use std::sync::Arc;

use crate::ctx::{Ctx, StepError};
use crate::event::EventKind;
use crate::llm::{CallHints, LlmRequest, OutputSchema};
use crate::orchestrator::{Orchestrator, Outcome};
use crate::patterns::swarm::{Domain, Swarm, group_and_dedupe};
use crate::patterns::{Agent, CapHit, cascade, pad};
use crate::plan::{Subtask, Task};
use crate::step::{StepId, StepSpec, Tier};

#[derive(Clone)]
struct Sub {
    name: String,
    description: String,
    agent: Agent,
}

/// One phase of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    pub orchestrator: String,
    pub goal: String,
}

/// One phase that ran.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseResult {
    pub orchestrator: String,
    pub goal: String,
    pub scope: StepId,
    pub output: Arc<str>,
}

/// A conductor that ran its plan to the end.
#[derive(Debug, Clone, PartialEq)]
pub struct ConductorRun {
    pub plan: Vec<PhasePlan>,
    /// True when the model's plan was unusable and the default plan ran.
    pub fallback: bool,
    pub phases: Vec<PhaseResult>,
    pub output: Arc<str>,
    /// Set when `max_phases` cut the plan.
    pub cap: Option<CapHit>,
}

/// Why a conductor stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConductorError {
    #[error("the plan names the orchestrator `{name}`, which does not exist; valid: {}", .valid.join(", "))]
    UnknownOrchestrator { name: String, valid: Vec<String> },
    #[error("phase {scope} failed: {error}")]
    PhaseFailed { scope: StepId, error: StepError, completed: Vec<PhaseResult> },
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Sub-orchestrators and a planner (see the module docs).
#[derive(Clone)]
pub struct Conductor {
    scope: String,
    model: Arc<str>,
    subs: Vec<Sub>,
    max_phases: usize,
}

/// Phases run at most, unless told otherwise.
pub const DEFAULT_MAX_PHASES: usize = 6;

impl Conductor {
    /// A conductor planning with `model`, its steps under `conductor`.
    pub fn new(model: &str) -> Conductor {
        Conductor {
            scope: "conductor".into(),
            model: Arc::from(model),
            subs: Vec::new(),
            max_phases: DEFAULT_MAX_PHASES,
        }
    }

    pub fn scope(mut self, scope: impl Into<String>) -> Conductor {
        self.scope = scope.into();
        self
    }

    pub fn max_phases(mut self, n: usize) -> Conductor {
        self.max_phases = n.max(1);
        self
    }

    /// A sub-orchestrator: `agent` runs a phase in the scope its spec's id gives.
    pub fn orchestrator(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        agent: Agent,
    ) -> Conductor {
        self.subs.push(Sub { name: name.into(), description: description.into(), agent });
        self
    }

    /// A swarm search as a sub-orchestrator: the phase's input split into `agents` subtasks
    /// (`{phase}/decompose`), specialists by keyword (`{phase}/worker/NNN`), results grouped
    /// by domain and deduplicated.
    pub fn swarm(self, name: impl Into<String>, description: impl Into<String>, agents: usize) -> Conductor {
        let swarm = Swarm::new(agents.max(1), &self.model);
        let agent = Agent::new(move |ctx, spec, input| {
            let swarm = swarm.clone();
            async move { scoped_swarm(&swarm, &ctx, &spec.id, &input).await }
        })
        .with_model(&*self.model);
        self.orchestrator(name, description, agent)
    }

    fn names(&self) -> Vec<String> {
        self.subs.iter().map(|s| s.name.clone()).collect()
    }

    /// Plan phases for `task` and run them in order.
    pub async fn run(&self, ctx: &Ctx, task: impl Into<Arc<str>>) -> Result<ConductorRun, ConductorError> {
        let task: Arc<str> = task.into();
        let plan_step = StepId::new(format!("{}/plan", self.scope));
        let reply =
            ctx.llm(StepSpec::new(plan_step.clone(), Tier::Decomposer), self.plan_request(&task)).await?;
        let (mut plan, fallback) = match parse_phases(&reply.text) {
            Some(plan) => (plan, false),
            None => {
                let plan: Vec<PhasePlan> = self
                    .subs
                    .iter()
                    .map(|s| PhasePlan { orchestrator: s.name.clone(), goal: task.to_string() })
                    .collect();
                let reason =
                    "the planner's reply held no usable phases; every orchestrator runs once".to_string();
                ctx.emit_event(Some(&plan_step), EventKind::PlanFallback { reason, templated: plan.len() });
                (plan, true)
            }
        };
        if let Some(bad) = plan.iter().find(|p| !self.subs.iter().any(|s| s.name == p.orchestrator)) {
            return Err(ConductorError::UnknownOrchestrator {
                name: bad.orchestrator.clone(),
                valid: self.names(),
            });
        }
        let n = plan.len();
        let scope_of =
            |k: usize, name: &str| StepId::new(format!("{}/{}-{name}", self.scope, pad(k + 1, n, 2)));
        let mut cap = None;
        if n > self.max_phases {
            let next =
                StepSpec::new(scope_of(self.max_phases, &plan[self.max_phases].orchestrator), Tier::Agent);
            cap = Some(CapHit::record(ctx, "max_phases", self.max_phases, next, &self.model));
            plan.truncate(self.max_phases);
        }
        let mut phases: Vec<PhaseResult> = Vec::with_capacity(plan.len());
        for (k, phase) in plan.iter().enumerate() {
            let sub = self.subs.iter().find(|s| s.name == phase.orchestrator).expect("checked above");
            let scope = scope_of(k, &sub.name);
            let mut input = format!("Task: {}\nPhase goal: {}\n", task.trim(), phase.goal.trim());
            if !phases.is_empty() {
                input.push_str("\nResults of the earlier phases:\n");
                for p in &phases {
                    input.push_str(&format!(
                        "\n### {} ({})\n\n{}\n",
                        p.orchestrator,
                        p.scope,
                        p.output.trim()
                    ));
                }
            }
            let spec = StepSpec::new(scope.clone(), Tier::Agent)
                .inputs(phases.iter().map(|p| p.scope.clone()).collect());
            match sub.agent.run(ctx, spec, input).await {
                Ok(output) => phases.push(PhaseResult {
                    orchestrator: sub.name.clone(),
                    goal: phase.goal.clone(),
                    scope,
                    output,
                }),
                Err(error) => return Err(ConductorError::PhaseFailed { scope, error, completed: phases }),
            }
        }
        let output = phases.last().map(|p| p.output.clone()).unwrap_or_else(|| Arc::from(""));
        Ok(ConductorRun { plan, fallback, phases, output, cap })
    }

    fn plan_request(&self, task: &str) -> LlmRequest {
        let mut prompt = format!(
            "Task: {}\n\nPlan the work as a short sequence of phases. Each phase is run by one of these \
             orchestrators:\n",
            task.trim()
        );
        for s in &self.subs {
            prompt.push_str(&format!("- {}: {}\n", s.name, s.description));
        }
        prompt.push_str(&format!(
            "\nReply with only a JSON object {{\"phases\": [...]}} whose list holds at most {} objects \
             with the keys \"orchestrator\" (one of the names above) and \"goal\" (what the phase must \
             produce).",
            self.max_phases
        ));
        LlmRequest::new(&self.model, prompt)
            .system("You plan multi-phase work for a team of orchestrators.")
            .temperature(0.2)
            .max_tokens(800)
            .output_schema(OutputSchema::list(
                "phases",
                "phases",
                &[("orchestrator", "string"), ("goal", "string")],
            ))
            .hints(CallHints::plan(task.trim(), self.max_phases))
    }
}

/// Phases from a planner's reply: a JSON array of objects naming an orchestrator
/// (`orchestrator`, `name` or `phase`) and a goal (`goal`, `description` or `task`). `None`
/// when the reply holds no such phase.
pub fn parse_phases(text: &str) -> Option<Vec<PhasePlan>> {
    use serde_json::Value;
    let (s, e) = (text.find('[')?, text.rfind(']')?);
    let Value::Array(items) = serde_json::from_str::<Value>(text.get(s..=e)?).ok()? else { return None };
    let str_of = |o: &serde_json::Map<String, Value>, keys: &[&str]| {
        keys.iter().find_map(|k| o.get(*k).and_then(Value::as_str)).map(|s| s.trim().to_string())
    };
    let plan: Vec<PhasePlan> = items
        .iter()
        .filter_map(|v| {
            let o = v.as_object()?;
            let orchestrator = str_of(o, &["orchestrator", "name", "phase"]).filter(|s| !s.is_empty())?;
            let goal = str_of(o, &["goal", "description", "task"]).unwrap_or_default();
            Some(PhasePlan { orchestrator, goal })
        })
        .collect();
    (!plan.is_empty()).then_some(plan)
}

/// A swarm search whose steps live under `scope`.
async fn scoped_swarm(swarm: &Swarm, ctx: &Ctx, scope: &StepId, input: &str) -> Result<Arc<str>, StepError> {
    let n = swarm.agents;
    let prompt = format!(
        "{input}\n\nDecompose this into exactly {n} search subtasks, each for one kind of source.\n\
         Reply with only a JSON object {{\"subtasks\": [...]}} whose list holds exactly {n} objects, each \
         with the key \"description\" (one sentence)."
    );
    let request = LlmRequest::new(&swarm.model, prompt)
        .temperature(0.3)
        .max_tokens((200 + 100 * n) as u32)
        .output_schema(OutputSchema::list("plan", "subtasks", &[("description", "string")]))
        .hints(CallHints::plan(input, n));
    let items = match ctx.llm(StepSpec::new(scope.child("decompose"), Tier::Decomposer), request).await {
        Ok(reply) => cascade::parse_plan(&reply.text),
        Err(e) if ctx.stopping().is_some() => return Err(e),
        Err(_) => Vec::new(),
    };
    let mut plan: Vec<Subtask> = items
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, it)| Subtask::new((i + 1).to_string(), it.description))
        .collect();
    let from = plan.len();
    plan.extend(cascade::template_subtasks(input.lines().next().unwrap_or(input), from, n));
    for s in &mut plan {
        s.specialization = Domain::classify(&s.description).as_str().to_string();
    }
    let task = Task::new(input);
    let workers: Vec<_> = plan
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let spec = StepSpec::new(scope.child(format!("worker/{}", pad(i + 1, n, 3))), Tier::Worker);
            let task = &task;
            async move { swarm.execute(ctx, &spec, task, s, &[]).await }
        })
        .collect();
    let results: Vec<Outcome> = ctx.all(workers).await;
    if results.iter().all(Result::is_err) {
        return Err(results.into_iter().find_map(Result::err).expect("all failed"));
    }
    Ok(Arc::from(group_and_dedupe(&plan, &results)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::llm::LlmError;
    use crate::patterns::pipeline::Pipeline;
    use crate::patterns::testkit::{record, within};
    use crate::result::AgentStatus;
    use crate::testing::ScriptedProvider;

    /// A sub-orchestrator that is a two-stage pipeline in the phase's scope.
    fn two_stage() -> Agent {
        Agent::new(|ctx, spec, input| async move {
            let p = Pipeline::new(spec.id.as_str())
                .then("draft", Agent::llm("t/m", "d"))
                .then("edit", Agent::llm("t/m", "e"));
            p.run(&ctx, input).await.map(|r| r.output).map_err(|e| e.error)
        })
    }

    fn conductor() -> Conductor {
        Conductor::new("t/m").swarm("research", "searches in parallel", 3).orchestrator(
            "write",
            "writes",
            two_stage(),
        )
    }

    #[tokio::test]
    async fn phases_run_in_their_own_scopes_in_plan_order() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for(
            "conductor/plan",
            r#"[{"orchestrator": "research", "goal": "find sources"}, {"orchestrator": "write", "goal": "a brief"},
                {"orchestrator": "write", "goal": "a shorter brief"}]"#,
        ));
        let c = conductor();
        let (out, result) = within(&p, move |ctx| async move { c.run(&ctx, "Urban cycling").await }).await;
        let out = out.unwrap();
        assert!(!out.fallback);
        let scopes: Vec<&str> = out.phases.iter().map(|p| p.scope.as_str()).collect();
        assert_eq!(scopes, ["conductor/01-research", "conductor/02-write", "conductor/03-write"]);
        assert_eq!(&*out.output, "Output of conductor/03-write/02-edit. ");
        // The swarm's steps live under its phase.
        assert_eq!(p.calls("conductor/01-research/decompose"), 1);
        assert_eq!(p.calls("conductor/01-research/worker/001"), 1);
        assert_eq!(p.calls("conductor/01-research/worker/003"), 1);
        assert_eq!(record(&result, "conductor/02-write/01-draft").status, AgentStatus::Completed);
        // 1 plan + (1 decompose + 3 workers) + 2 × 2 pipeline stages.
        assert_eq!(p.total_calls(), 9);
    }

    #[tokio::test]
    async fn an_unknown_orchestrator_is_an_error_listing_the_valid_ones() {
        let p = Arc::new(
            ScriptedProvider::new("t").reply_for("conductor/plan", r#"[{"orchestrator": "dance"}]"#),
        );
        let c = conductor();
        let (out, _) = within(&p, move |ctx| async move { c.run(&ctx, "x").await }).await;
        assert_eq!(
            out.unwrap_err().to_string(),
            "the plan names the orchestrator `dance`, which does not exist; valid: research, write"
        );
        assert_eq!(p.total_calls(), 1, "nothing ran but the planner");
    }

    #[tokio::test]
    async fn an_unusable_plan_falls_back_and_too_many_phases_are_cut() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for("conductor/plan", "I'd rather not."));
        let c = conductor();
        let (out, _) = within(&p, move |ctx| async move { c.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert!(out.fallback);
        let names: Vec<&str> = out.plan.iter().map(|p| p.orchestrator.as_str()).collect();
        assert_eq!(names, ["research", "write"]);

        let many = r#"[{"name": "write"}, {"name": "write"}, {"name": "write"}]"#;
        let p = Arc::new(ScriptedProvider::new("t").reply_for("conductor/plan", many));
        let c = conductor().max_phases(2);
        let (out, result) = within(&p, move |ctx| async move { c.run(&ctx, "x").await }).await;
        let out = out.unwrap();
        assert_eq!(out.phases.len(), 2);
        assert_eq!(out.cap.unwrap().at.as_str(), "conductor/03-write");
        assert_eq!(record(&result, "conductor/03-write").status, AgentStatus::Skipped);
    }

    #[tokio::test]
    async fn a_failed_phase_stops_the_conductor_and_names_it() {
        let p = Arc::new(
            ScriptedProvider::new("t")
                .reply_for("conductor/plan", r#"[{"orchestrator": "write"}, {"orchestrator": "write"}]"#)
                .always_fail("conductor/02-write/01", LlmError::Auth("x".into())),
        );
        let c = conductor();
        let (out, _) = within(&p, move |ctx| async move { c.run(&ctx, "x").await }).await;
        let ConductorError::PhaseFailed { scope, completed, .. } = out.unwrap_err() else { panic!() };
        assert_eq!(scope.as_str(), "conductor/02-write");
        assert_eq!(completed.len(), 1);
    }
}

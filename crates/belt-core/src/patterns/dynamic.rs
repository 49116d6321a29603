//! Dynamic agents: the LLM designs the agents a task needs, reused by name within the run.
//!
//! An [`AgentSpec`] is a name, a role and a system prompt. An [`AgentRegistry`] designs them:
//! - [`AgentRegistry::design`] asks the model for a team for a task, in one step
//!   (`{scope}`, e.g. `agents/design`), and registers every spec under its name;
//! - [`AgentRegistry::get_or_design`] returns the agent of that name, designing it first (step
//!   `{scope}/{name}`) if the run has none yet. Concurrent requests for one name share one
//!   design: a name is designed once per run, then reused.
//!
//! Replies are read tolerantly (a JSON array of objects with `name`/`role`/`system_prompt`,
//! or a plain plan with `specialization`/`description`); specs with an empty or repeated
//! name are dropped, names are made lowercase with dashes, and at most `max_agents` (default
//! 20) are kept.
//!
//! [`Dynamic`] is the whole-run orchestrator on top: it designs `n` agents for the task, has
//! each work on the task from its role in parallel (`worker/NNN`), and writes a synthesis
//! (`synthesis`). With a given plan, each subtask's specialization names its agent, designed
//! on first use and reused by the subtasks that share it.
//!
//! ```
//! use belt_core::patterns::dynamic::Dynamic;
//! let team = Dynamic::new(4, "simulated/default"); // `belt::run(team, task, options)`
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::ctx::{Ctx, StepError};
use crate::event::{EventKind, PlanSource};
use crate::llm::{CallHints, LlmRequest, OutputSchema, Providers};
use crate::orchestrator::{AgentOutput, Orchestrator, Outcome, Plan, Synthesis, combine_outputs};
use crate::patterns::Agent;
use crate::plan::{Subtask, Task};
use crate::step::{StepId, StepSpec, Tier};

/// An agent designed for a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub name: String,
    /// What it does, in a sentence.
    pub role: String,
    pub system_prompt: String,
}

/// Agents designed by the model, by name (see the module docs). Cheap to clone; every clone
/// is the same registry.
#[derive(Clone)]
pub struct AgentRegistry {
    scope: Arc<str>,
    model: Arc<str>,
    max_agents: usize,
    specs: Arc<Mutex<BTreeMap<String, Arc<OnceCell<AgentSpec>>>>>,
}

/// Agents a registry keeps at most, unless told otherwise.
pub const DEFAULT_MAX_AGENTS: usize = 20;

impl AgentRegistry {
    /// A registry whose design steps are named under `scope`, designing with `model`; the
    /// agents run on `model` too.
    pub fn new(scope: &str, model: &str) -> AgentRegistry {
        AgentRegistry {
            scope: Arc::from(scope),
            model: Arc::from(model),
            max_agents: DEFAULT_MAX_AGENTS,
            specs: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    pub fn max_agents(mut self, n: usize) -> AgentRegistry {
        self.max_agents = n.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<OnceCell<AgentSpec>>>> {
        self.specs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The specs designed so far, by name.
    pub fn specs(&self) -> Vec<AgentSpec> {
        self.lock().values().filter_map(|c| c.get().cloned()).collect()
    }

    /// The agent named `name`, if designed.
    pub fn get(&self, name: &str) -> Option<Agent> {
        let cell = self.lock().get(&slug(name)).cloned()?;
        cell.get().map(|spec| self.agent(spec))
    }

    fn agent(&self, spec: &AgentSpec) -> Agent {
        Agent::llm(&self.model, spec.system_prompt.clone())
    }

    /// Register `spec` unless its name is taken or the registry is full; true if added.
    fn register(&self, spec: AgentSpec) -> bool {
        let mut specs = self.lock();
        if specs.contains_key(&spec.name) || specs.len() >= self.max_agents {
            return false;
        }
        specs.insert(spec.name.clone(), Arc::new(OnceCell::new_with(Some(spec))));
        true
    }

    /// Ask the model for up to `n` agents for `task` (one step, `{scope}`); register the new
    /// ones and return every spec the reply held that is now registered (names already
    /// taken keep their earlier design).
    pub async fn design(&self, ctx: &Ctx, task: &str, n: usize) -> Result<Vec<AgentSpec>, StepError> {
        let prompt = format!(
            "Task: {}\n\nDesign a team of exactly {n} specialist agents for this task, each with a distinct angle.\n\
             Reply with only a JSON object {{\"agents\": [...]}} whose list holds exactly {n} objects with \
             the keys \"name\" (one or two words), \"role\" (one sentence) and \"system_prompt\" (the \
             agent's instructions, second person).",
            task.trim()
        );
        let request = LlmRequest::new(&self.model, prompt)
            .system("You design teams of AI agents.")
            .temperature(0.4)
            .max_tokens((300 * n.clamp(1, 50)) as u32)
            .output_schema(OutputSchema::list(
                "team",
                "agents",
                &[("name", "string"), ("role", "string"), ("system_prompt", "string")],
            ))
            .hints(CallHints::plan(task.trim(), n));
        let spec = StepSpec::new(StepId::new(&*self.scope), Tier::Decomposer);
        let reply = ctx.llm(spec, request).await?;
        let mut out = Vec::new();
        for spec in parse_specs(&reply.text).into_iter().take(n) {
            self.register(spec.clone());
            if let Some(kept) = self.lock().get(&spec.name).and_then(|c| c.get().cloned()) {
                out.push(kept);
            }
        }
        Ok(out)
    }

    /// The agent named `name`; designed first (step `{scope}/{name}`) if the run has none.
    /// `purpose` says what it is for.
    pub async fn get_or_design(
        &self,
        ctx: &Ctx,
        name: &str,
        purpose: &str,
    ) -> Result<(AgentSpec, Agent), StepError> {
        let name = slug(name);
        let cell = self.lock().entry(name.clone()).or_default().clone();
        let spec = cell
            .get_or_try_init(|| async {
                let prompt = format!(
                    "Design one specialist agent named \"{name}\" for this purpose: {}\n\
                     Reply with only a JSON object with the keys \"name\", \"role\" (one sentence) and \
                     \"system_prompt\" (the agent's instructions, second person).",
                    purpose.trim()
                );
                let request = LlmRequest::new(&self.model, prompt)
                    .system("You design AI agents.")
                    .temperature(0.4)
                    .max_tokens(400)
                    .json();
                let spec = StepSpec::new(StepId::new(&*self.scope).child(&name), Tier::Decomposer);
                let reply = ctx.llm(spec, request).await?;
                // Whatever the reply, the agent keeps the name it was asked for.
                let designed = parse_specs(&reply.text).into_iter().next();
                Ok::<_, StepError>(match designed {
                    Some(s) => AgentSpec { name: name.clone(), ..s },
                    None => fallback_spec(&name, purpose),
                })
            })
            .await?
            .clone();
        let agent = self.agent(&spec);
        Ok((spec, agent))
    }
}

/// `Data Analyst` → `data-analyst`.
fn slug(name: &str) -> String {
    let words: Vec<String> =
        name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    words.join("-")
}

fn fallback_spec(name: &str, purpose: &str) -> AgentSpec {
    AgentSpec {
        name: name.to_string(),
        role: purpose.trim().to_string(),
        system_prompt: format!("You are {name}, a specialist. {}", purpose.trim()),
    }
}

/// Agent specs from a model's reply (see the module docs for what is accepted).
pub fn parse_specs(text: &str) -> Vec<AgentSpec> {
    use serde_json::Value;
    let slice = |open: char, close: char| -> Option<&str> {
        let (s, e) = (text.find(open)?, text.rfind(close)?);
        (s < e).then(|| &text[s..=e])
    };
    let values: Vec<Value> = match slice('[', ']').and_then(|s| serde_json::from_str::<Value>(s).ok()) {
        Some(Value::Array(a)) => a,
        _ => match slice('{', '}').and_then(|s| serde_json::from_str::<Value>(s).ok()) {
            Some(Value::Object(mut o)) => match ["agents", "team"].iter().find_map(|k| o.remove(*k)) {
                Some(Value::Array(a)) => a,
                _ => vec![Value::Object(o)],
            },
            _ => Vec::new(),
        },
    };
    let text_of = |o: &serde_json::Map<String, Value>, keys: &[&str]| {
        keys.iter().find_map(|k| o.get(*k).and_then(Value::as_str)).map(|s| s.trim().to_string())
    };
    let mut seen = std::collections::HashSet::new();
    values
        .into_iter()
        .filter_map(|v| {
            let o = v.as_object()?;
            let name = slug(&text_of(o, &["name", "specialization", "agent", "title"])?);
            let role = text_of(o, &["role", "description", "purpose", "task"]).unwrap_or_default();
            let system_prompt = text_of(o, &["system_prompt", "system", "prompt", "instructions"])
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    format!("You are {}. {role}", crate::words::with_article(&name.replace('-', " ")))
                });
            (!name.is_empty() && seen.insert(name.clone())).then_some(AgentSpec { name, role, system_prompt })
        })
        .collect()
}

/// The whole-run orchestrator: a designed team on one task (see the module docs).
pub struct Dynamic {
    pub agents: usize,
    pub model: Arc<str>,
    registry: AgentRegistry,
}

impl Dynamic {
    pub fn new(agents: usize, model: &str) -> Dynamic {
        Dynamic { agents, model: Arc::from(model), registry: AgentRegistry::new("agents/design", model) }
    }

    /// The agents designed in this run.
    pub fn registry(&self) -> &AgentRegistry {
        &self.registry
    }
}

const TEMPLATE_TEAM: [(&str, &str); 6] = [
    ("researcher", "Gather the key facts and evidence on the task."),
    ("analyst", "Analyse causes, trade-offs and numbers."),
    ("critic", "Find the weaknesses, risks and counter-arguments."),
    ("strategist", "Propose options and a recommended course of action."),
    ("practitioner", "Say what it takes to carry this out in practice."),
    ("futurist", "Describe how this is likely to evolve."),
];

#[async_trait]
impl Orchestrator for Dynamic {
    fn name(&self) -> &str {
        "dynamic"
    }

    fn agents(&self) -> Option<usize> {
        Some(self.agents)
    }

    fn shape(&self, n: usize) -> Vec<usize> {
        vec![n, 1]
    }

    fn validate(&self, providers: &Providers) -> Result<(), String> {
        if self.agents == 0 {
            return Err("a dynamic team needs at least 1 agent".into());
        }
        providers.resolve(&self.model).map(|_| ()).map_err(|e| e.to_string())
    }

    async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        let n = self.agents;
        let mut specs = match self.registry.design(ctx, &task.brief(), n).await {
            Ok(specs) => specs,
            Err(e) if ctx.stopping().is_some() => return Err(e),
            Err(_) => Vec::new(),
        };
        if specs.len() < n {
            let reason = format!("the designer gave {} of {n} agents", specs.len());
            let from = specs.len();
            for k in 0.. {
                if specs.len() >= n {
                    break;
                }
                let (name, role) = TEMPLATE_TEAM[k % TEMPLATE_TEAM.len()];
                let name = if k < TEMPLATE_TEAM.len() {
                    name.to_string()
                } else {
                    format!("{name}-{}", k / TEMPLATE_TEAM.len() + 1)
                };
                let spec = fallback_spec(&name, role);
                if self.registry.register(spec.clone()) {
                    specs.push(spec);
                }
            }
            ctx.emit_event(
                Some(&StepId::new("agents/design")),
                EventKind::PlanFallback { reason, templated: n - from },
            );
        }
        let subtasks = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let description = if s.role.is_empty() {
                    format!("Work on the task as {}", s.name)
                } else {
                    s.role.clone()
                };
                Subtask::new((i + 1).to_string(), description).specialization(s.name.clone())
            })
            .collect();
        Ok(Plan { subtasks, source: PlanSource::Model })
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let (spec, _) =
            self.registry.get_or_design(ctx, &subtask.specialization, &subtask.description).await?;
        let mut prompt = format!(
            "Task: {}\nSubtask {}: {}\nSpecialization: {}\n",
            task.brief(),
            subtask.id,
            subtask.description.trim(),
            spec.name
        );
        for d in deps {
            prompt.push_str(&format!("\n#### From subtask {}\n{}\n", d.subtask_id, d.text.trim()));
        }
        prompt.push_str("\nWrite your contribution as Markdown.");
        let request = LlmRequest::new(&self.model, prompt)
            .system(spec.system_prompt.clone())
            .max_tokens(1024)
            .hints(CallHints::work(&task.brief(), subtask.description.trim()));
        let reply = ctx.llm(step.clone(), request).await?;
        Ok(AgentOutput::from_reply(subtask, step, reply))
    }

    async fn synthesize(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let mut prompt = format!("Task: {}\nMerge the team's contributions into one answer.\n", task.brief());
        let mut inputs = Vec::new();
        let mut names = Vec::new();
        let mut missing = Vec::new();
        for (s, r) in plan.iter().zip(results) {
            match r {
                Ok(o) => {
                    let name = format!("{} ({})", s.specialization, s.description);
                    prompt.push_str(&format!("\n### {name}\n\n{}\n", o.text.trim()));
                    names.push(name);
                    inputs.push(o.step.clone());
                }
                Err(e) => missing.push(format!("{} ({})", s.specialization, e.kind())),
            }
        }
        if !missing.is_empty() {
            prompt.push_str(&format!("\nMissing inputs: {}.\n", missing.join("; ")));
        }
        let missing = (!missing.is_empty()).then(|| missing.join("; "));
        let request = LlmRequest::new(&self.model, prompt)
            .system("You merge the work of a team into one clear answer.")
            .max_tokens(2048)
            .hints(CallHints::merge(&task.brief(), names, missing));
        match ctx.llm(StepSpec::new("synthesis", Tier::Synthesizer).inputs(inputs), request).await {
            Ok(reply) => Ok(Synthesis { text: reply.text.to_string() }),
            Err(e) if ctx.stopping().is_some() => Err(e),
            Err(_) => Ok(Synthesis { text: combine_outputs(plan, results) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::patterns::testkit::{options, within};
    use crate::result::RunStatus;
    use crate::run::run;
    use crate::testing::ScriptedProvider;

    #[test]
    fn specs_are_read_tolerantly() {
        let specs = parse_specs(
            r#"Sure: [{"name": "Data Analyst", "role": "Crunches numbers", "system_prompt": "You analyse data."},
                      {"specialization": "risk analyst", "description": "Finds risks"},
                      {"name": "data analyst", "role": "duplicate"}, {"role": "no name"}]"#,
        );
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["data-analyst", "risk-analyst"]);
        assert_eq!(specs[0].system_prompt, "You analyse data.");
        assert_eq!(specs[1].system_prompt, "You are a risk analyst. Finds risks");
        assert_eq!(parse_specs(r#"{"agents": [{"name": "x"}]}"#)[0].name, "x");
        assert_eq!(parse_specs(r#"{"name": "solo", "role": "r"}"#)[0].name, "solo");
        assert!(parse_specs("no json here").is_empty());
    }

    #[tokio::test]
    async fn a_name_is_designed_once_and_reused() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for(
            "agents/",
            r#"{"name": "whatever", "role": "Checks facts", "system_prompt": "You check facts."}"#,
        ));
        let registry = AgentRegistry::new("agents", "t/m");
        let probe = registry.clone();
        let (out, _) = within(&p, move |ctx| async move {
            let (a, b) = tokio::join!(
                registry.get_or_design(&ctx, "Fact Checker", "check the facts"),
                registry.get_or_design(&ctx, "fact-checker", "check the facts again"),
            );
            let c = registry.get_or_design(&ctx, "fact checker", "and again").await;
            (a.unwrap().0, b.unwrap().0, c.unwrap().0)
        })
        .await;
        assert_eq!(out.0, out.1);
        assert_eq!(out.1, out.2);
        assert_eq!(out.0.name, "fact-checker", "the asked-for name wins");
        assert_eq!(out.0.system_prompt, "You check facts.");
        assert_eq!(p.calls("agents/fact-checker"), 1, "designed once, reused by name");
        assert!(probe.get("Fact Checker").is_some());
    }

    #[tokio::test]
    async fn a_dynamic_run_designs_its_team_and_each_agent_works_in_its_role() {
        let p = Arc::new(ScriptedProvider::new("t").reply_for(
            "agents/design",
            r#"[{"name": "economist", "role": "Costs and benefits", "system_prompt": "You are an economist."},
                {"name": "urbanist", "role": "City planning", "system_prompt": "You plan cities."}]"#,
        ));
        let team = Dynamic::new(3, "t/m");
        let handle = run(team, Task::new("Car-free city centres"), options(&p)).await.unwrap();
        let r = handle.result().await;
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        let names: Vec<&str> = r.plan.iter().map(|s| s.specialization.as_str()).collect();
        assert_eq!(names, ["economist", "urbanist", "researcher"], "templates fill the gap");
        assert_eq!(r.final_output.as_deref(), Some("Output of synthesis. "));
        // design, three workers, synthesis; no per-agent design: all were designed up front.
        assert_eq!(r.usage.calls, 5);
    }

    #[tokio::test]
    async fn with_a_given_plan_agents_are_designed_on_first_use_and_shared() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let plan = vec![
            Subtask::new("a", "Costs").specialization("economist"),
            Subtask::new("b", "Benefits").specialization("Economist"),
            Subtask::new("c", "Layout").specialization("urbanist"),
        ];
        let handle = run(Dynamic::new(3, "t/m"), Task::new("Car-free centres"), options(&p).with_plan(plan))
            .await
            .unwrap();
        let r = handle.result().await;
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        assert_eq!(p.calls("agents/design/economist"), 1);
        assert_eq!(p.calls("agents/design/urbanist"), 1);
        assert_eq!(p.calls("agents/design"), 0);
    }
}

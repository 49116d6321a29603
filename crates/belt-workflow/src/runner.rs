//! From a valid workflow and its inputs to what belt-core runs: an [`Orchestrator`], the
//! run's task, and its settings for [`RunOptions`].
//!
//! `cascade` and `swarm` are the core's own orchestrators, configured from their section.
//! The step patterns (sequential, dag, conditional/router, iterative) all become one
//! flow (as [`belt_core::Flow`] does) that runs the steps as a core [`Dag`]: each step starts the moment the steps it
//! waits for are done (its `needs`, the previous step of a chain, its router, the earlier
//! steps its templates read). A step
//! - renders its prompt over `inputs.*` and the outputs so far;
//! - is passed over when its `when` is false, or when it is a route target its router did
//!   not choose — a branch not taken, so it is not in the run's record (and does not make
//!   the run partial); its `steps.<id>.output` is undefined for later templates;
//! - without an agent, outputs its rendered prompt (a recorded step, no model call);
//! - with a `loop`, runs as the core's [`Refine`] (draft, `until` / judge, revise, `max`);
//! - otherwise makes one LLM call through the context.
//!
//! Every call goes through [`Ctx`], so budget, limits, retries, events, the record and
//! resume apply as in any run; this module has no retry, timeout or budget code. A step's
//! tier is its agent's id, so the run's summary and report group steps by agent.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use belt_core::patterns::Flow;
use belt_core::patterns::dag::{Dag, NodeOutcome};
use belt_core::patterns::iterative::Refine;
use belt_core::patterns::swarm::Assign;
use belt_core::{
    Agent, AgentOutput, Budget, Cascade, Ctx, LlmRequest, Orchestrator, Outcome, Plan, Providers, RunOptions,
    StepError, StepId, StepSpec, Subtask, Swarm, Synthesis, SynthesizeMode, Task, Tier,
};

use crate::format::{
    AgentDef, AssignDef, InputType, ModelSpec, PatternKind, ProviderDef, ReportFormat, StepDef,
    SynthesizeDef, WorkflowFile,
};
use crate::template::{self, Scope};
use crate::validate::{Analysis, DEFAULT_ROUTE};

/// The model used when neither the file nor the caller names one.
pub const SIMULATED_MODEL: &str = "simulated/default";

/// The scope of step ids: step `triage` runs as `steps/triage`.
pub const STEP_SCOPE: &str = "steps";

/// Read an input given as text (`--input n=3`) as its declared type.
pub(crate) fn typed_input(kind: InputType, text: &str) -> Result<serde_json::Value, String> {
    match kind {
        InputType::String => Ok(serde_json::Value::String(text.to_string())),
        InputType::Integer => {
            text.trim().parse::<i64>().map(Into::into).map_err(|_| format!("`{text}` is not an integer"))
        }
        InputType::Number => match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(serde_json::json!(n)),
            _ => Err(format!("`{text}` is not a number")),
        },
        InputType::Boolean => match text.trim() {
            "true" => Ok(true.into()),
            "false" => Ok(false.into()),
            _ => Err(format!("`{text}` is not true or false")),
        },
    }
}

/// A valid workflow with its inputs: ready to run.
#[derive(Debug, Clone)]
pub struct Bound {
    pub(crate) file: Arc<WorkflowFile>,
    pub(crate) analysis: Arc<Analysis>,
    pub(crate) inputs: BTreeMap<String, serde_json::Value>,
    /// The file's `context:` under the run's ([`Bound::with_context`]).
    pub(crate) context: Option<serde_json::Value>,
    pub(crate) default_model: String,
    /// What the agents' `tools` name ([`crate::tools::builtin`] unless the host gives others).
    pub(crate) tools: belt_core::tools::Tools,
    /// Names that stand for several tools (an MCP server's name, `web`), as the host gives
    /// them ([`Bound::with_tool_groups`]).
    pub(crate) tool_groups: std::collections::HashMap<String, Vec<String>>,
}

/// How the workflow wants to be run: what goes into [`RunOptions`], and where its
/// reports go. `None` leaves the caller's setting.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunSettings {
    pub budget: Budget,
    pub concurrency: Option<usize>,
    /// Seconds per attempt, every step.
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub min_success: Option<f64>,
    /// Limits per provider, over the caller's.
    pub providers: BTreeMap<String, ProviderDef>,
    pub formats: Vec<ReportFormat>,
    pub out_dir: Option<String>,
    /// Seconds per attempt by tier or agent id (`defaults.timeouts`).
    pub tier_timeouts: Vec<(String, Duration)>,
    /// The whole run's deadline (`defaults.deadline`).
    pub deadline: Option<Duration>,
    /// When the budget warning fires (`budget.warn_at`).
    pub warn_at: Option<f64>,
}

impl RunSettings {
    /// Put the run settings (budget, concurrency, timeout, retries, min_success) into
    /// `options`. Provider limits and report settings are the caller's to apply, since
    /// it owns the providers and the files.
    pub fn apply(&self, options: &mut RunOptions) {
        options.budget = self.budget.or(options.budget);
        options.concurrency = self.concurrency.unwrap_or(options.concurrency);
        options.min_success = self.min_success.unwrap_or(options.min_success);
        options.policies.override_all(self.timeout, self.retries);
        for (tier, timeout) in &self.tier_timeouts {
            let tier = belt_core::Tier::parse(tier);
            let policy = belt_core::StepPolicy { timeout: *timeout, ..*options.policies.for_tier(&tier) };
            options.policies.set(&tier, policy);
        }
        options.deadline = self.deadline.or(options.deadline);
        options.budget_warn_at = self.warn_at.unwrap_or(options.budget_warn_at);
    }
}

/// The share of a tier's failed steps at which a degrading cascade falls a level.
pub const DEFAULT_DEGRADE_AT: f64 = 0.3;

/// Models the caller chose over the file's (`belt run --model`, `--worker-model`…), each a
/// model or a comma-separated fallback chain. The file names defaults; the caller's choice
/// takes their place, level by level (see [`Bound::with_models`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelChoice {
    /// Takes the place of `defaults.model`: the model of every agent and tier that names no
    /// model of its own.
    pub model: Option<String>,
    /// Take the place of `defaults.models.<tier>` of a cascade; a swarm's agents are its
    /// workers, so `worker` takes the place of the swarm's `model`.
    pub worker: Option<String>,
    pub synthesizer: Option<String>,
    pub executive: Option<String>,
}

fn model_spec(chain: &str) -> ModelSpec {
    let mut models: Vec<String> =
        chain.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect();
    if models.len() == 1 { ModelSpec::One(models.remove(0)) } else { ModelSpec::Fallbacks(models) }
}

impl Bound {
    /// The caller's models over the file's: `choice.model` replaces `defaults.model`, and
    /// a tier's model replaces the cascade's `defaults.models.<tier>` (a swarm's `model` for
    /// `worker`). An agent or tier that names its own model keeps it ([`Bound::own_models`]
    /// lists them), since the file chose it for that agent in particular. Tier models for a
    /// pattern without tiers are an error that says what applies instead.
    pub fn with_models(mut self, choice: &ModelChoice) -> Result<Bound, String> {
        let f = Arc::make_mut(&mut self.file);
        if let Some(m) = &choice.model {
            f.defaults.model = Some(model_spec(m));
        }
        let tiers = [
            (&choice.worker, "worker_model (--worker-model)"),
            (&choice.synthesizer, "synthesizer_model (--synthesizer-model)"),
            (&choice.executive, "executive_model (--executive-model)"),
        ];
        let given: Vec<&str> = tiers.iter().filter(|(m, _)| m.is_some()).map(|(_, name)| *name).collect();
        match f.pattern {
            PatternKind::Cascade => {
                let t = &mut f.defaults.models;
                for (given, tier) in [
                    (&choice.worker, &mut t.worker),
                    (&choice.synthesizer, &mut t.synthesizer),
                    (&choice.executive, &mut t.executive),
                ] {
                    if let Some(m) = given {
                        *tier = Some(model_spec(m));
                    }
                }
            }
            PatternKind::Swarm if choice.synthesizer.is_none() && choice.executive.is_none() => {
                if let (Some(m), Some(swarm)) = (&choice.worker, f.swarm.as_mut()) {
                    swarm.model = Some(model_spec(m));
                }
            }
            pattern if !given.is_empty() => {
                return Err(format!(
                    "{} {} the models of a cascade's tiers (a swarm's agents take --worker-model); this \
                     workflow's pattern is `{}`, whose agents take `model` (--model) or their own `model` in \
                     the file",
                    given.join(" and "),
                    if given.len() == 1 { "chooses" } else { "choose" },
                    pattern.as_str()
                ));
            }
            _ => {}
        }
        Ok(self)
    }

    /// The agents and tiers that name a model of their own, as (who, model chain): a
    /// caller's `model` does not reach them (see [`Bound::with_models`]).
    pub fn own_models(&self) -> Vec<(String, String)> {
        let f = &self.file;
        match f.pattern {
            PatternKind::Cascade => {
                let t = &f.defaults.models;
                [
                    ("decomposer", &t.decomposer),
                    ("worker", &t.worker),
                    ("synthesizer", &t.synthesizer),
                    ("executive", &t.executive),
                ]
                .into_iter()
                .filter_map(|(tier, m)| m.as_ref().map(|m| (format!("the {tier} tier"), m.chain())))
                .collect()
            }
            PatternKind::Swarm => f
                .swarm
                .iter()
                .filter_map(|s| s.model.as_ref())
                .map(|m| ("the swarm".to_string(), m.chain()))
                .collect(),
            _ => f
                .agents
                .iter()
                .filter_map(|a| a.model.as_ref().map(|m| (format!("agent `{}`", a.id), m.chain())))
                .collect(),
        }
    }

    /// The model of agents and tiers the file leaves without one (default
    /// `simulated/default`): the caller's choice, e.g. `belt run --model`.
    pub fn with_default_model(mut self, model: impl Into<String>) -> Bound {
        self.default_model = model.into();
        self
    }

    /// The tools the agents' `tools` lists name, instead of the built-in ones (validate
    /// with the same names in [`crate::ValidationContext::tools`]).
    pub fn with_tools(mut self, tools: belt_core::tools::Tools) -> Bound {
        self.tools = tools;
        self
    }

    /// Names an agent's `tools` may use for several tools at once (an MCP server's name,
    /// `web`), each with the names of its tools in [`Bound::with_tools`].
    pub fn with_tool_groups(mut self, groups: std::collections::HashMap<String, Vec<String>>) -> Bound {
        self.tool_groups = groups;
        self
    }

    /// Every tool name the agents' `tools` lists use, each once.
    pub fn tool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.file.agents.iter().flat_map(|a| a.tools.iter().cloned()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The inputs, typed, defaults filled in.
    pub fn inputs(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.inputs
    }

    pub fn file(&self) -> &WorkflowFile {
        &self.file
    }

    fn scope(&self) -> Scope {
        Scope { inputs: self.inputs.clone(), context: self.context_value(), ..Scope::default() }
    }

    /// The run's context over the file's `context:`: when both are maps, the run's keys
    /// replace the file's of the same name and the file's others stay; otherwise the run's
    /// replaces the file's. `None` (or `null`) keeps the file's.
    pub fn with_context(mut self, run: Option<serde_json::Value>) -> Bound {
        use serde_json::Value;
        self.context = match (self.context.take(), run) {
            (file, None | Some(Value::Null)) => file,
            (Some(Value::Object(mut file)), Some(Value::Object(run))) => {
                file.extend(run);
                Some(Value::Object(file))
            }
            (_, Some(run)) => Some(run),
        };
        self
    }

    /// The context templates read as `context.*`, if any.
    pub fn context(&self) -> Option<&serde_json::Value> {
        self.context.as_ref()
    }

    fn context_value(&self) -> serde_json::Value {
        self.context.clone().unwrap_or(serde_json::Value::Null)
    }

    /// The run's task: the cascade's or swarm's `task`, else the `description`, else the
    /// name — rendered with the inputs.
    pub fn task(&self) -> Result<Task, String> {
        let f = &self.file;
        let source = match (&f.cascade, &f.swarm, &f.description) {
            (Some(c), _, _) if f.pattern == PatternKind::Cascade => c.task.as_str(),
            (_, Some(s), _) if f.pattern == PatternKind::Swarm => s.task.as_str(),
            (_, _, Some(d)) if !d.trim().is_empty() => d.as_str(),
            _ => f.name.as_str(),
        };
        let text =
            template::render(source, &self.scope()).map_err(|e| format!("the task's template: {e}"))?;
        let text = if text.trim().is_empty() { f.name.clone() } else { text };
        let task = Task::new(text.trim());
        Ok(match &self.context {
            Some(context) => task.with_context(context.clone()),
            None => task,
        })
    }

    fn model_or_default(&self, spec: Option<&ModelSpec>) -> String {
        spec.or(self.file.defaults.model.as_ref())
            .map_or_else(|| self.default_model.clone(), ModelSpec::chain)
    }

    /// Every model the run may call (fallback chains comma-separated).
    pub fn models(&self) -> Vec<String> {
        let f = &self.file;
        let mut out: Vec<String> = match f.pattern {
            PatternKind::Cascade => {
                let t = &f.defaults.models;
                [&t.decomposer, &t.worker, &t.synthesizer, &t.executive]
                    .iter()
                    .map(|m| self.model_or_default(m.as_ref()))
                    .collect()
            }
            PatternKind::Swarm => {
                vec![self.model_or_default(f.swarm.as_ref().and_then(|s| s.model.as_ref()))]
            }
            _ => f
                .steps
                .iter()
                .filter_map(|s| s.agent.as_ref())
                .filter_map(|a| f.agents.iter().find(|x| &x.id == a))
                .map(|a| self.model_or_default(a.model.as_ref()))
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// The settings for [`RunOptions`] and the reports.
    pub fn settings(&self) -> RunSettings {
        let f = &self.file;
        let b = f.budget.clone().unwrap_or_default();
        RunSettings {
            budget: Budget { max_cost_usd: b.usd, max_tokens: b.tokens, max_calls: b.calls },
            concurrency: f.defaults.concurrency,
            // Checked by validation; a value out of range leaves the caller's timeout.
            timeout: f.defaults.timeout.and_then(|t| belt_core::policy::timeout_secs(t).ok()),
            retries: f.defaults.retries,
            min_success: f.cascade.as_ref().and_then(|c| c.min_success),
            providers: f.providers.clone(),
            formats: f.outputs.formats.clone(),
            out_dir: f.outputs.dir.clone(),
            // Checked by validation, as `timeout` is.
            tier_timeouts: f
                .defaults
                .timeouts
                .iter()
                .filter_map(|(tier, t)| Some((tier.clone(), belt_core::policy::timeout_secs(*t).ok()?)))
                .collect(),
            deadline: f.defaults.deadline.and_then(|d| belt_core::policy::deadline_secs(d).ok()),
            warn_at: b.warn_at,
        }
    }

    /// What belt-core runs.
    pub fn orchestrator(&self) -> WorkflowRun {
        let f = &self.file;
        match f.pattern {
            PatternKind::Cascade => {
                let c = f.cascade.clone().unwrap_or_else(|| crate::format::CascadeDef {
                    task: f.name.clone(),
                    agents: 5,
                    group_size: None,
                    synthesize: SynthesizeDef::Auto,
                    min_success: None,
                    min_agents: None,
                    strategy: None,
                    degrade: false,
                    degrade_at: None,
                });
                let base = self.model_or_default(None);
                let mut cascade = Cascade::new(c.agents, &base);
                cascade.min_agents = c.min_agents;
                cascade.strategy = c.strategy.unwrap_or_default();
                if let Some(g) = c.group_size {
                    cascade.group_size = g;
                }
                cascade.synthesize = match c.synthesize {
                    SynthesizeDef::Auto => SynthesizeMode::Auto,
                    SynthesizeDef::Always => SynthesizeMode::Always,
                    SynthesizeDef::Never => SynthesizeMode::Never,
                    SynthesizeDef::NoExecutive => SynthesizeMode::NoExecutive,
                };
                if c.degrade || c.degrade_at.is_some() {
                    cascade.degrade = Some(c.degrade_at.unwrap_or(DEFAULT_DEGRADE_AT));
                }
                let t = &f.defaults.models;
                for (tier, m) in [
                    (&mut cascade.decomposer, &t.decomposer),
                    (&mut cascade.worker, &t.worker),
                    (&mut cascade.synthesizer, &t.synthesizer),
                    (&mut cascade.executive, &t.executive),
                ] {
                    if let Some(m) = m {
                        tier.model = Arc::from(m.chain());
                    }
                    if let Some(temp) = f.defaults.temperature {
                        tier.temperature = temp;
                    }
                }
                WorkflowRun::Cascade(cascade)
            }
            PatternKind::Swarm => {
                let s = f.swarm.as_ref();
                let model = self.model_or_default(s.and_then(|s| s.model.as_ref()));
                let swarm = Swarm::new(s.map_or(5, |s| s.agents), &model).assign(match s.map(|s| s.assign) {
                    Some(AssignDef::Llm) => Assign::Llm,
                    _ => Assign::Keywords,
                });
                WorkflowRun::Swarm(swarm)
            }
            _ => {
                let plan = Arc::new(StepsPlan {
                    file: self.file.clone(),
                    analysis: self.analysis.clone(),
                    inputs: self.inputs.clone(),
                    context: self.context_value(),
                    agents: self.file.agents.iter().map(|a| (a.id.clone(), self.resolve_agent(a))).collect(),
                });
                let name = f.name.clone();
                let body: FlowBody = Box::new(move |ctx, _task| {
                    let plan = plan.clone();
                    Box::pin(async move { run_steps(plan, ctx).await })
                });
                WorkflowRun::Steps(StepsRun { flow: Flow::new(name, body), models: self.models() })
            }
        }
    }

    fn resolve_agent(&self, a: &AgentDef) -> ResolvedAgent {
        let mut system = a
            .role
            .as_deref()
            .map(|r| format!("You are {}.", belt_core::words::with_article(r.trim().trim_end_matches('.'))))
            .unwrap_or_default();
        if let Some(s) = &a.system {
            // Validated before binding; a render error here leaves the template as written.
            let text = template::render(s, &self.scope()).unwrap_or_else(|_| s.clone());
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(text.trim());
        }
        if let Some(schema) = &a.output_schema {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(&format!(
                "Reply with only a JSON value that follows this JSON Schema:\n{}",
                serde_json::to_string_pretty(schema).unwrap_or_default()
            ));
        }
        ResolvedAgent {
            id: a.id.clone(),
            model: Arc::from(self.model_or_default(a.model.as_ref())),
            system: (!system.is_empty()).then_some(system),
            temperature: a.temperature.or(self.file.defaults.temperature),
            max_tokens: a.max_tokens.unwrap_or(1024),
            json: a.output_schema.is_some(),
            tools: crate::tools::subset(&self.tools, &self.tool_groups, &a.tools),
        }
    }
}

#[derive(Debug, Clone)]
struct ResolvedAgent {
    id: String,
    model: Arc<str>,
    system: Option<String>,
    temperature: Option<f32>,
    max_tokens: u32,
    json: bool,
    /// Tools it may call: its steps then run the engine's tool loop.
    tools: Option<belt_core::tools::Tools>,
}

impl ResolvedAgent {
    fn request(&self, prompt: &str) -> LlmRequest {
        let mut r = LlmRequest::new(&self.model, prompt).max_tokens(self.max_tokens);
        if let Some(s) = &self.system {
            r = r.system(s);
        }
        if let Some(t) = self.temperature {
            r = r.temperature(t);
        }
        if self.json {
            r = r.json();
        }
        r
    }

    fn tier(&self) -> Tier {
        Tier::parse(&self.id)
    }

    /// The agent as the core's patterns run it: one call on its input, the reply checked
    /// as JSON when the agent has an output schema.
    fn as_agent(self: &Arc<Self>) -> Agent {
        let me = self.clone();
        Agent::new(move |ctx: Ctx, spec: StepSpec, input: Arc<str>| {
            let me = me.clone();
            async move {
                let spec = StepSpec { tier: me.tier(), ..spec };
                let id = spec.id.clone();
                let reply = match &me.tools {
                    Some(tools) => ctx.llm_with_tools(spec, me.request(&input), tools).await?,
                    None => ctx.llm(spec, me.request(&input)).await?,
                };
                if me.json
                    && let Err(message) = check_json(&reply.text)
                {
                    return Err(fail_after(&ctx, &id, "json", message).await);
                }
                Ok(reply.text)
            }
        })
        .with_model(self.model.clone())
    }
}

/// Record that the work after a completed step failed (its reply is not JSON, it names no
/// route), as the failed step `{step}/{what}`: the step's own record stays true — its call
/// completed and was paid for — and the run's record says what went wrong after it.
async fn fail_after(ctx: &Ctx, step: &StepId, what: &str, message: String) -> StepError {
    let spec = StepSpec::new(step.child(what), Tier::Custom(Arc::from("check")));
    match ctx.step::<(), _>(spec, &message.clone(), async move { Err(message) }).await {
        Err(e) => e,
        Ok(()) => failed(step, "internal error: a failing check succeeded"),
    }
}

fn check_json(text: &str) -> Result<(), String> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|t| t.strip_suffix("```"))
        .unwrap_or(trimmed);
    serde_json::from_str::<serde_json::Value>(body)
        .map(|_| ())
        .map_err(|e| format!("the agent has an output_schema but its reply is not JSON: {e}"))
}

struct StepsPlan {
    file: Arc<WorkflowFile>,
    analysis: Arc<Analysis>,
    inputs: BTreeMap<String, serde_json::Value>,
    context: serde_json::Value,
    agents: BTreeMap<String, ResolvedAgent>,
}

#[derive(Default)]
struct StepsState {
    outputs: BTreeMap<String, String>,
    /// Router step id → the step it chose.
    chosen: BTreeMap<String, String>,
}

fn failed(step: &StepId, message: impl Into<String>) -> StepError {
    StepError::Failed { step: step.clone(), message: message.into() }
}

/// A step whose template cannot be rendered fails on the run's record — its event and the
/// report say which key, which line and why — not only in the flow's summary.
async fn template_failed(ctx: &Ctx, spec: &StepSpec, message: String) -> StepError {
    let id = spec.id.clone();
    let spec = StepSpec { tier: Tier::Custom(Arc::from("template")), ..spec.clone() };
    let reason = message.clone();
    match ctx.step::<String, _>(spec, &message, async move { Err(reason) }).await {
        Err(e) => e,
        Ok(_) => failed(&id, message),
    }
}

async fn run_steps(plan: Arc<StepsPlan>, ctx: Ctx) -> Result<String, StepError> {
    let state = Arc::new(Mutex::new(StepsState::default()));
    let file = &plan.file;
    // Inputs are composed by the steps themselves from the shared state.
    let mut dag = Dag::new(STEP_SCOPE).compose(|input, _| input.to_string());
    for (i, step) in file.steps.iter().enumerate() {
        let deps: Vec<&str> = plan.analysis.deps[i].iter().map(|&d| file.steps[d].id.as_str()).collect();
        let model = step.agent.as_ref().and_then(|a| plan.agents.get(a)).map(|a| a.model.clone());
        let (plan, state, index) = (plan.clone(), state.clone(), i);
        let agent = Agent::new(move |ctx, spec, _input| {
            let (plan, state) = (plan.clone(), state.clone());
            async move { run_step(&plan, &state, index, ctx, spec).await }
        });
        let agent = match model {
            Some(m) => agent.with_model(m),
            None => agent,
        };
        dag = dag.node(step.id.clone(), &deps, agent);
    }
    let run = dag.run(&ctx, "").await.map_err(|e| failed(&StepId::new(STEP_SCOPE), e.to_string()))?;
    let state =
        state.lock().map_err(|_| failed(&StepId::new(STEP_SCOPE), "internal error: state poisoned"))?;
    let final_id = match &file.outputs.final_step {
        Some(id) => Some(id.as_str()),
        None => file.steps.iter().rev().map(|s| s.id.as_str()).find(|id| state.outputs.contains_key(*id)),
    };
    match final_id.and_then(|id| state.outputs.get(id)) {
        Some(text) => Ok(text.clone()),
        None => {
            let mut why = Vec::new();
            let failures: Vec<String> = run
                .nodes
                .iter()
                .filter_map(|n| match &n.outcome {
                    NodeOutcome::Failed(e) => Some(format!("{} — {e}", n.id)),
                    _ => None,
                })
                .collect();
            if !failures.is_empty() {
                why.push(format!("failed: {}", failures.join(", ")));
            }
            if !run.skipped().is_empty() {
                why.push(format!("skipped: {}", run.skipped().join(", ")));
            }
            let what = match &file.outputs.final_step {
                Some(id) => format!("the final step `{id}` produced no output"),
                None => "no step produced an output".to_string(),
            };
            let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) };
            Err(failed(&StepId::new(STEP_SCOPE), format!("{what}{why}")))
        }
    }
}

/// Run step `index` as `spec` (see the module docs). A step passed over returns an empty
/// text and leaves no output in the state.
async fn run_step(
    plan: &StepsPlan,
    state: &Mutex<StepsState>,
    index: usize,
    ctx: Ctx,
    spec: StepSpec,
) -> Result<Arc<str>, StepError> {
    let step: &StepDef = &plan.file.steps[index];
    let id = spec.id.clone();
    let scope = {
        let s = state.lock().map_err(|_| failed(&id, "internal error: state poisoned"))?;
        if let Some((router, _)) = &plan.analysis.routed_by[index] {
            let router_id = &plan.file.steps[*router].id;
            if s.chosen.get(router_id).map(String::as_str) != Some(step.id.as_str()) {
                return Ok(Arc::from(""));
            }
        }
        Scope {
            inputs: plan.inputs.clone(),
            context: plan.context.clone(),
            steps: s.outputs.clone(),
            output: None,
            error: None,
        }
    };
    let key = format!("steps[{index}]");
    if let Some(when) = &step.when {
        match template::truth(when, &scope) {
            Ok(true) => {}
            Ok(false) => return Ok(Arc::from("")),
            Err(e) => return Err(template_failed(&ctx, &spec, format!("{key}.when: {e}")).await),
        }
    }
    let prompt = match template::render(step.prompt.as_deref().unwrap_or(""), &scope) {
        Ok(prompt) => prompt,
        Err(e) => return Err(template_failed(&ctx, &spec, format!("{key}.prompt: {e}")).await),
    };
    let agent = step.agent.as_ref().and_then(|a| plan.agents.get(a));
    let output: Arc<str> = match (agent, &step.loop_) {
        (None, _) => {
            let spec = StepSpec { tier: Tier::Custom(Arc::from("template")), ..spec };
            let text = prompt.clone();
            let out: String = ctx.step(spec, &prompt, async move { Ok::<_, String>(text) }).await?;
            Arc::from(out)
        }
        (Some(agent), Some(l)) => {
            let agent = Arc::new(agent.clone());
            let core = agent.as_agent();
            let mut refine = Refine::new(core.clone(), core).scope(id.as_str()).max_iterations(l.max);
            if let Some(until) = &l.until {
                let (until, scope) = (until.clone(), scope.clone());
                refine = refine.until(move |draft| {
                    let scope = Scope { output: Some(draft.to_string()), ..scope.clone() };
                    template::truth(&until, &scope).unwrap_or(false)
                });
            }
            if let Some(judge) = &l.judge {
                let first = agent.model.split(',').next().unwrap_or(SIMULATED_MODEL).to_string();
                refine = refine.judge(&first, judge.clone());
            }
            let done = refine.run(&ctx, prompt).await.map(|d| d.output).map_err(|e| e.error);
            recover(&ctx, step.on_error.as_deref(), &scope, done)?
        }
        (Some(agent), None) => {
            let done = Arc::new(agent.clone()).as_agent().run(&ctx, spec, prompt).await;
            recover(&ctx, step.on_error.as_deref(), &scope, done)?
        }
    };
    if !step.route.is_empty() {
        let Some(target) = choose_route(&step.route, &output) else {
            let valid: Vec<&str> = step.route.keys().map(String::as_str).collect();
            let message = format!(
                "the output names no route; valid routes: {} (add a `{DEFAULT_ROUTE}` route for anything else)",
                valid.join(", ")
            );
            return Err(fail_after(&ctx, &id, "route", message).await);
        };
        let mut s = state.lock().map_err(|_| failed(&id, "internal error: state poisoned"))?;
        s.chosen.insert(step.id.clone(), target);
    }
    let mut s = state.lock().map_err(|_| failed(&id, "internal error: state poisoned"))?;
    s.outputs.insert(step.id.clone(), output.to_string());
    Ok(output)
}

/// A step's agent call as its `on_error` says: a failure aborts (the default, and always
/// when the run is stopping), is skipped (an empty output), or becomes the text of the
/// `on_error` template over the error. A template that does not render keeps the failure.
fn recover(
    ctx: &Ctx,
    on_error: Option<&str>,
    scope: &Scope,
    done: Result<Arc<str>, StepError>,
) -> Result<Arc<str>, StepError> {
    let error = match done {
        Ok(output) => return Ok(output),
        Err(e) => e,
    };
    match on_error.map(str::trim) {
        None | Some("abort") => Err(error),
        _ if ctx.stopping().is_some() => Err(error),
        Some("skip") => Ok(Arc::from("")),
        Some(_) => {
            let template = on_error.unwrap_or_default();
            let scope = Scope { error: Some((error.to_string(), error.kind().to_string())), ..scope.clone() };
            template::render(template, &scope).map(Arc::from).map_err(|_| error)
        }
    }
}

/// The route an output chooses: an exact value (case and surrounding punctuation aside),
/// else the value named earliest in it as a whole word, else `default`.
fn choose_route(routes: &BTreeMap<String, String>, output: &str) -> Option<String> {
    let clean = output.trim().trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    let values = routes.iter().filter(|(k, _)| k.as_str() != DEFAULT_ROUTE);
    if let Some((_, t)) = values.clone().find(|(k, _)| k.to_lowercase() == clean) {
        return Some(t.clone());
    }
    let lower = output.to_lowercase();
    let earliest = values
        .filter_map(|(k, t)| first_word_at(&lower, &k.to_lowercase()).map(|at| (at, t)))
        .min_by_key(|(at, _)| *at);
    earliest.map(|(_, t)| t.clone()).or_else(|| routes.get(DEFAULT_ROUTE).cloned())
}

fn first_word_at(text: &str, word: &str) -> Option<usize> {
    if word.is_empty() {
        return None;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after = text[at + word.len()..].chars().next().is_none_or(|c| !is_word(c));
        before && after
    })
}

type FlowFuture = Pin<Box<dyn Future<Output = Result<String, StepError>> + Send>>;
type FlowBody = Box<dyn Fn(Ctx, Task) -> FlowFuture + Send + Sync>;

/// The steps of a workflow as a run: a [`Flow`] over the steps' DAG, and the models its
/// agents name (checked before the run starts).
pub struct StepsRun {
    flow: Flow<FlowBody>,
    models: Vec<String>,
}

/// A workflow as belt-core runs it.
pub enum WorkflowRun {
    Cascade(Cascade),
    Swarm(Swarm),
    Steps(StepsRun),
}

impl std::fmt::Debug for WorkflowRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkflowRun::Cascade(c) => f.debug_tuple("Cascade").field(c).finish(),
            WorkflowRun::Swarm(s) => f.debug_tuple("Swarm").field(s).finish(),
            WorkflowRun::Steps(s) => {
                f.debug_struct("Steps").field("name", &s.flow.name()).finish_non_exhaustive()
            }
        }
    }
}

#[async_trait]
impl Orchestrator for WorkflowRun {
    fn name(&self) -> &str {
        match self {
            WorkflowRun::Cascade(c) => c.name(),
            WorkflowRun::Swarm(s) => s.name(),
            WorkflowRun::Steps(s) => s.flow.name(),
        }
    }

    fn agents(&self) -> Option<usize> {
        match self {
            WorkflowRun::Cascade(c) => c.agents(),
            WorkflowRun::Swarm(s) => s.agents(),
            WorkflowRun::Steps(s) => s.flow.agents(),
        }
    }

    fn shape(&self, n: usize) -> Vec<usize> {
        match self {
            WorkflowRun::Cascade(c) => c.shape(n),
            WorkflowRun::Swarm(s) => s.shape(n),
            WorkflowRun::Steps(s) => s.flow.shape(n),
        }
    }

    fn validate(&self, providers: &Providers) -> Result<(), String> {
        match self {
            WorkflowRun::Cascade(c) => c.validate(providers),
            WorkflowRun::Swarm(s) => s.validate(providers),
            WorkflowRun::Steps(s) => {
                for m in &s.models {
                    providers.check(m).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }

    async fn decompose(&self, ctx: &Ctx, task: &Task) -> Result<Plan, StepError> {
        match self {
            WorkflowRun::Cascade(c) => c.decompose(ctx, task).await,
            WorkflowRun::Swarm(s) => s.decompose(ctx, task).await,
            WorkflowRun::Steps(s) => s.flow.decompose(ctx, task).await,
        }
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        task: &Task,
        subtask: &Subtask,
        deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        match self {
            WorkflowRun::Cascade(c) => c.execute(ctx, step, task, subtask, deps).await,
            WorkflowRun::Swarm(s) => s.execute(ctx, step, task, subtask, deps).await,
            WorkflowRun::Steps(s) => s.flow.execute(ctx, step, task, subtask, deps).await,
        }
    }

    async fn synthesize(
        &self,
        ctx: &Ctx,
        task: &Task,
        plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        match self {
            WorkflowRun::Cascade(c) => c.synthesize(ctx, task, plan, results).await,
            WorkflowRun::Swarm(s) => s.synthesize(ctx, task, plan, results).await,
            WorkflowRun::Steps(s) => s.flow.synthesize(ctx, task, plan, results).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_chosen_exactly_then_by_the_earliest_word_then_default() {
        let routes: BTreeMap<String, String> = [("billing", "pay"), ("outage", "ops"), ("default", "desk")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(choose_route(&routes, " Billing. ").as_deref(), Some("pay"));
        assert_eq!(choose_route(&routes, "This is an outage, not billing").as_deref(), Some("ops"));
        assert_eq!(choose_route(&routes, "rebilling nothing").as_deref(), Some("desk"));
        let strict: BTreeMap<String, String> = [("a".to_string(), "x".to_string())].into();
        assert_eq!(choose_route(&strict, "none"), None);
    }

    #[test]
    fn inputs_are_typed() {
        assert_eq!(typed_input(InputType::Integer, "12").unwrap(), serde_json::json!(12));
        assert!(typed_input(InputType::Integer, "1.5").is_err());
        assert_eq!(typed_input(InputType::Boolean, "true").unwrap(), serde_json::json!(true));
        assert_eq!(typed_input(InputType::String, "x").unwrap(), serde_json::json!("x"));
        assert!(typed_input(InputType::Number, "NaN").is_err());
    }

    #[test]
    fn json_replies_are_checked() {
        assert!(check_json("```json\n{\"a\": 1}\n```").is_ok());
        assert!(check_json("[1, 2]").is_ok());
        assert!(check_json("not json").is_err());
    }
}

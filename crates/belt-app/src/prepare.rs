//! [`App::prepare`]: from a [`RunSpec`] to what [`belt_core::run`] needs — once, for every
//! front end. Every check of a spec lives here, so the same mistake gets the same message
//! from the CLI, HTTP and MCP; nothing is written and nothing is called.
//!
//! What a spec leaves out takes these defaults: pattern `cascade`, 5 agents, concurrency 16,
//! 2 retries, the engine's timeouts per tier (180 s workers, 240 s synthesizers, 300 s the
//! executive), group size 5, synthesis `auto`, `min_success` 0.5, no budget, report `md`.
//! A workflow file's own settings come between the defaults and the spec: what the spec
//! says explicitly wins.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use belt_core::limits::Limits;
use belt_core::llm::Providers;
use belt_core::plan::normalize_plan;
use belt_core::store::RunRecord;
use belt_core::{Budget, Orchestrator, RunOptions, SynthesizeMode, Task};
use belt_llm::SimConfig;

use crate::config::{self, Config};
use crate::error::{AppError, Field};
use crate::models::{self, Choice, SIMULATED_MODEL};
use crate::patterns::{self, Team, TierModels};
use crate::spec::RunSpec;

/// Reads an environment variable (the process's own, or a test's).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The most workers (subtasks) of one run.
pub const MAX_AGENTS: u32 = 100_000;
pub use belt_core::policy::MAX_TIMEOUT_SECS;
/// The longest wait for a person's answer, in seconds (a week).
pub const MAX_HITL_SECS: u64 = 604_800;
/// The longest a cached reply is kept, in seconds (ten years).
pub const MAX_CACHE_SECS: u64 = 315_360_000;
/// The longest simulated latency, in milliseconds (an hour).
pub const MAX_SIM_LATENCY_MS: u64 = 3_600_000;
/// What the diagnostics of a workflow that came without a file name call it.
pub const WORKFLOW_ORIGIN: &str = "workflow";

/// The application: the configuration (belt.toml) and the environment every run of this
/// process is built with. Cheap to share (`Arc<App>`); one per process.
pub struct App {
    config: Config,
    env: Env,
    /// One limiter per provider for every run of the process (each run builds its own
    /// providers; their limits must hold for all of them together).
    limiters: std::sync::Mutex<std::collections::HashMap<String, Arc<belt_core::limits::Limiter>>>,
    /// The HTTP providers, built once for every run ([`config::http_providers`]).
    http: std::sync::OnceLock<Providers>,
    /// What the processes sharing the store share, once a front end opened such a store.
    shared: std::sync::OnceLock<Shared>,
    /// The tools of the process's runs, and the MCP servers they started.
    tools: Arc<crate::tools::ToolHost>,
    /// The orchestrators this program registered ([`App::register`]).
    registry: patterns::Registry,
}

/// Limits and budget pools shared through a store (see [`belt_core::shared`]).
#[derive(Clone)]
struct Shared {
    limits: Option<Arc<dyn belt_core::limits::SharedLimits>>,
    pools: Option<Arc<dyn belt_core::shared::BudgetPools>>,
}

/// A checked spec, ready to start: give `options` a store, a run id, a lease owner, a
/// human channel and a document writer as the front end decides, then [`Prepared::start`].
pub struct Prepared {
    /// The spec as the store records it (formats and report directory resolved).
    pub spec: RunSpec,
    pub task: Task,
    pub orchestrator: Arc<dyn Orchestrator>,
    pub options: RunOptions,
    /// The report formats to render when the run ends.
    pub formats: Vec<belt_report::Format>,
    /// True when some model of the run is simulated (its texts are not a model's).
    pub simulated: bool,
    /// The tools the spec names, checked, and the host that starts them
    /// ([`Prepared::start_tools`]).
    pub tools: Option<(Arc<crate::tools::ToolHost>, crate::tools::ToolPlan)>,
    /// A workflow file's orchestrator, built again over the tools its agents name once
    /// they are started ([`Prepared::start_tools`]).
    pub rebuild: Option<Rebuild>,
}

/// Builds an orchestrator over the tools a workflow's agents name, and what each name
/// stands for.
pub type Rebuild = Box<
    dyn FnOnce(belt_core::Tools, std::collections::HashMap<String, Vec<String>>) -> Arc<dyn Orchestrator>
        + Send
        + Sync,
>;

impl Prepared {
    /// The run as a store records it while it waits for a driver (a worker, a server's
    /// slot): its whole definition, no lease. Any process sharing the store can rebuild the
    /// run from it.
    pub fn queued_record(&self, run_id: &str, accepted_at: chrono::DateTime<chrono::Utc>) -> RunRecord {
        RunRecord {
            run_id: run_id.to_string(),
            pattern: self.orchestrator.name().to_string(),
            task: self.task.description.clone(),
            status: belt_core::RunStatus::Queued,
            started_at: accepted_at,
            definition: std::sync::Arc::from(
                self.options.definition.clone().unwrap_or_else(|| self.spec.to_definition()),
            ),
        }
    }

    /// Start the run on the current tokio runtime (its tools first, see
    /// [`Prepared::start_tools`]).
    pub async fn start(&mut self) -> Result<belt_core::RunHandle, belt_core::RunError> {
        self.start_tools().await?;
        belt_core::run(self.orchestrator.clone(), self.task.clone(), self.options.clone()).await
    }

    /// Start the MCP servers the run's tools come from (or reuse the process's) and give
    /// each tier its tools in `options`; nothing when the spec names no tools. An error
    /// says which server or tool could not be set up; no call has been made then.
    pub async fn start_tools(&mut self) -> Result<(), belt_core::RunError> {
        let Some((host, plan)) = self.tools.take() else { return Ok(()) };
        let failed =
            |e: String| belt_core::RunError::Config(format!("the run's tools could not be set up: {e}"));
        self.options.tools = host.toolbox(&plan).await.map_err(failed)?;
        if let Some(rebuild) = self.rebuild.take() {
            let (tools, groups) = host.named(&plan).await.map_err(failed)?;
            self.orchestrator = rebuild(tools, groups);
        }
        Ok(())
    }
}

impl App {
    /// An application over `config`, reading the process's environment.
    pub fn new(config: Config) -> App {
        App {
            env: Arc::new(belt_llm::process_env),
            limiters: Default::default(),
            http: Default::default(),
            shared: std::sync::OnceLock::new(),
            tools: Arc::new(crate::tools::ToolHost::new(
                config.tools.clone(),
                config.mcp.clone(),
                belt_tools::web::WebSearchConfig::from_env(),
            )),
            registry: patterns::Registry::default(),
            config,
        }
    }

    /// Register an orchestrator of this program as the pattern `name`: a spec naming it
    /// (`POST /v1/runs` with `"pattern": name`, `belt-server`'s MCP tool `orchestrate_{name}`)
    /// runs what `factory` builds from the run's [`Team`] and its `args`, read as an `A` —
    /// whose JSON Schema describes them to clients. Refused: a name of belt's library or
    /// registered already, arguments that are not a struct or that use a name of
    /// [`patterns::TOOL_SETTINGS`]. A run of it resumes only in a process that registered it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use belt_app::{App, Config, RunSpec};
    /// use belt_core::Flow;
    ///
    /// #[derive(serde::Deserialize, schemars::JsonSchema)]
    /// struct Args {
    ///     /// How to greet.
    ///     greeting: String,
    /// }
    /// let app = App::new(Config::default());
    /// app.register("greet", "Greets the task.", |args: Args, _team| {
    ///     let greeting = args.greeting;
    ///     Ok(Arc::new(Flow::new("greet", move |_ctx, task| {
    ///         let text = format!("{greeting}, {}", task.description);
    ///         async move { Ok(text) }
    ///     })))
    /// })
    /// .unwrap();
    /// let spec: RunSpec =
    ///     serde_json::from_str(r#"{"task": "world", "pattern": "greet", "args": {"greeting": "hello"}}"#).unwrap();
    /// assert!(app.prepare(&spec).is_ok());
    /// let wrong: RunSpec = serde_json::from_str(r#"{"task": "world", "pattern": "greet", "args": {}}"#).unwrap();
    /// assert!(app.prepare(&wrong).err().unwrap().to_string().contains("missing field `greeting`"));
    /// ```
    pub fn register<A, F>(&self, name: &str, description: &str, factory: F) -> Result<(), AppError>
    where
        A: serde::de::DeserializeOwned + schemars::JsonSchema,
        F: Fn(A, &Team) -> Result<Arc<dyn Orchestrator>, String> + Send + Sync + 'static,
    {
        let entry = patterns::Registered::new(name, description, factory).map_err(AppError::Invalid)?;
        self.registry.add(entry).map_err(AppError::Invalid)
    }

    /// The orchestrators this program registered, by name.
    pub fn registered(&self) -> Vec<Arc<patterns::Registered>> {
        self.registry.all()
    }

    /// The tools of this process's runs ([`crate::tools::ToolHost`]).
    pub fn tool_host(&self) -> &Arc<crate::tools::ToolHost> {
        &self.tools
    }

    /// Every tool the run of `spec` had, started (what `belt dlq retry` offers a tool call).
    pub async fn tools_for_retry(&self, spec: &RunSpec) -> Result<belt_core::Tools, AppError> {
        match self.tools.plan(spec, &[], &Default::default())? {
            Some(plan) => self.tools.all_tools(&plan).await.map_err(AppError::Invalid),
            None => Ok(belt_core::Tools::new()),
        }
    }

    /// Share provider limits and budget pools with the other processes of `store`, as far
    /// as it can share them (PostgreSQL can; a SQLite or memory store has one process).
    /// Call it once, before preparing runs; later calls change nothing.
    pub fn share_through(&self, store: &dyn belt_core::RunStore) {
        self.share(store.shared_limits(), store.budget_pools());
    }

    /// [`App::share_through`] with the parts given one by one.
    pub fn share(
        &self,
        limits: Option<Arc<dyn belt_core::limits::SharedLimits>>,
        pools: Option<Arc<dyn belt_core::shared::BudgetPools>>,
    ) {
        let _ = self.shared.set(Shared { limits, pools });
    }

    /// The same over another environment (tests, embedders with their own secrets).
    pub fn with_env(mut self, env: Env) -> App {
        // The search backend of `web_search` comes from the environment too.
        let vars = env.clone();
        let search =
            belt_tools::web::WebSearchConfig::from_vars(move |v| vars(v).filter(|s| !s.trim().is_empty()));
        self.tools =
            Arc::new(crate::tools::ToolHost::new(self.config.tools.clone(), self.config.mcp.clone(), search));
        self.env = env;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An environment variable as this application sees it.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// The model of runs that name none (see [`models::choose`]).
    pub async fn choose_model(&self, given: Option<&str>) -> Choice {
        let env = self.env.clone();
        models::choose(given, self.config.default_model.as_deref(), &move |v| env(v)).await
    }

    /// True when a run of `spec` calls a model the spec does not name, so the front end's
    /// default model is needed (a workflow file may name every model itself).
    pub fn needs_default_model(&self, spec: &RunSpec) -> bool {
        let Some(text) = &spec.workflow else { return spec.model.is_none() };
        match crate::workflow::bind(self, spec, text) {
            Ok(bound) => crate::workflow::needs_default_model(&bound),
            // The mistake is reported by prepare; choosing a model does not need to wait for it.
            Err(_) => spec.model.is_none(),
        }
    }

    /// The providers a run of `spec` can use: the simulated one (as the spec sets it), every
    /// built-in one whose key is set, and those of belt.toml, each with its limits.
    pub fn providers(&self, spec: &RunSpec) -> Result<Providers, AppError> {
        let mut providers = match self.http.get() {
            Some(http) => http.clone(),
            None => {
                let env = self.env.clone();
                let built = config::http_providers(&self.config, &move |v| env(v))?;
                self.http.get_or_init(|| built).clone()
            }
        };
        config::with_simulated(&self.config, &mut providers, self.sim_config(spec))?;
        let gate = self.shared.get().and_then(|s| s.limits.clone());
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        for name in providers.names().into_iter().map(str::to_string).collect::<Vec<_>>() {
            let Some(fresh) = providers.limiter(&name).cloned() else { continue };
            let limiter = limiters.entry(name.clone()).or_insert_with(|| {
                if let Some(gate) = &gate {
                    fresh.share(&name, gate.clone());
                }
                fresh
            });
            providers.set_limiter(&name, limiter.clone());
        }
        Ok(providers)
    }

    /// The budget pool `spec` draws from, if it names one: its caps from belt.toml, kept in
    /// the shared store.
    fn budget_pool(&self, spec: &RunSpec) -> Result<Option<belt_core::shared::BudgetPool>, AppError> {
        let Some(name) = &spec.budget_pool else { return Ok(None) };
        let Some(config) = self.config.budget_pools.get(name) else {
            let known: Vec<&str> = self.config.budget_pools.keys().map(String::as_str).collect();
            return Err(AppError::Invalid(format!(
                "budget_pool (--budget-pool): no pool `{name}` in belt.toml ({}); define it as \
                 [budget_pools.{name}] with usd_per_day, usd_per_month, tokens_per_day, … ",
                if known.is_empty() {
                    "it defines none".to_string()
                } else {
                    format!("it defines {}", known.join(", "))
                }
            )));
        };
        let Some(pools) = self.shared.get().and_then(|s| s.pools.clone()) else {
            return Err(AppError::Invalid(
                "budget_pool (--budget-pool): budget pools are kept in a store every process shares; use \
                 --store postgres://… (or BELT_STORE)"
                    .into(),
            ));
        };
        Ok(Some(belt_core::shared::BudgetPool { name: name.clone(), caps: config.caps(), pools }))
    }

    /// The providers a model may name: the built-in ones, belt.toml's, the simulated one.
    pub fn known_providers(&self) -> Vec<String> {
        let mut names: Vec<String> =
            belt_llm::providers::BUILTIN_PROVIDERS.iter().map(|p| p.name.to_string()).collect();
        names.extend(self.config.providers.keys().cloned());
        names.push("simulated".into());
        names.sort();
        names.dedup();
        names
    }

    /// The simulated provider as `spec` sets it (`BELT_SIM_CALL_LOG` names a file that
    /// logs every simulated call, for tests that count calls across processes).
    pub fn sim_config(&self, spec: &RunSpec) -> SimConfig {
        let mut sim =
            SimConfig::default().seed(spec.seed.unwrap_or(0)).fail_rate(spec.sim_fail_rate.unwrap_or(0.0));
        if let Some(ms) = spec.sim_latency_ms {
            sim = sim.latency_ms(ms);
        }
        sim.call_log = self.var("BELT_SIM_CALL_LOG").filter(|p| !p.is_empty()).map(Into::into);
        sim
    }

    /// Check `spec` and build what runs it. Nothing is written and nothing is called.
    pub fn prepare(&self, spec: &RunSpec) -> Result<Prepared, AppError> {
        let mut common = Common::check(spec)?;
        common.pool = self.budget_pool(spec)?;
        let registered = if spec.workflow.is_some() { None } else { self.registry.get(spec.pattern()) };
        // (An unknown pattern is said so by prepare_task, with what a registered one needs.)
        let known = spec.workflow.is_some() || patterns::get(spec.pattern()).is_some();
        if spec.args.is_some() && registered.is_none() && known {
            return Err(AppError::Invalid(format!(
                "args are the arguments of an orchestrator the serving program registered; {} takes none \
                 — leave `args` out{}",
                if spec.workflow.is_some() {
                    "a workflow".to_string()
                } else {
                    format!("`{}`", spec.pattern())
                },
                self.registered_names()
            )));
        }
        match &spec.workflow {
            Some(text) => crate::workflow::prepare(self, spec, text, common),
            None => self.prepare_task(spec, common, registered),
        }
    }

    /// `" (registered here: a, b)"`, or nothing when this program registered none.
    fn registered_names(&self) -> String {
        let names: Vec<String> = self.registry.all().iter().map(|r| r.name.clone()).collect();
        if names.is_empty() { String::new() } else { format!(" (registered here: {})", names.join(", ")) }
    }

    fn prepare_task(
        &self,
        spec: &RunSpec,
        common: Common,
        registered: Option<Arc<patterns::Registered>>,
    ) -> Result<Prepared, AppError> {
        let task = spec.task.trim();
        if task.is_empty() {
            return Err(AppError::Invalid(
                "the task is empty; say what the agents should do, e.g. belt run \"Analyze the impact of AI on \
                 healthcare\""
                    .into(),
            ));
        }
        if !spec.inputs.is_empty() || spec.workflow_format.is_some() || spec.workflow_file.is_some() {
            return Err(AppError::Invalid(
                "inputs (--input) give values to a workflow file's inputs; use it with -f FILE (over HTTP and \
                 MCP: with `workflow`), or leave them out"
                    .into(),
            ));
        }
        let pattern = match &registered {
            Some(_) => None,
            None => Some(
                patterns::runnable(spec.pattern())
                    .map_err(|e| AppError::Invalid(format!("{e}{}", self.registered_names())))?,
            ),
        };
        let plan = check_plan(spec)?;
        let (agents, min_agents) = match &plan {
            Some(plan) => (plan.len(), None),
            None => agent_count(spec)?,
        };
        let name = pattern.map_or(spec.pattern(), |p| p.name);
        if common.degrade.is_some() && name != "cascade" {
            return Err(AppError::Invalid(format!(
                "degrade (--degrade) makes the cascade fall to simpler forms; the `{name}` pattern has none — \
                 leave it out, or run the cascade"
            )));
        }
        let team = Team {
            degrade: common.degrade,
            agents,
            min_agents,
            strategy: spec.strategy.unwrap_or_default(),
            models: tier_models(spec),
            group_size: in_range(GROUP_SIZE, spec.group_size.unwrap_or(5), 2, 1000)? as usize,
            synthesize: spec.synthesize.unwrap_or(SynthesizeMode::Auto),
            refine: in_range(REFINE, spec.refine.unwrap_or(0), 0, 20)?,
            continue_truncated: in_range(CONTINUE, spec.continue_truncated.unwrap_or(0), 0, 5)?,
        };
        let orchestrator = match (pattern, &registered) {
            (_, Some(r)) => r.build(&team, spec.args.as_ref()).map_err(AppError::Invalid)?,
            (Some(p), None) => {
                p.build.ok_or_else(|| AppError::Invalid(format!("`{}` cannot be built", p.name)))?(&team)
            }
            (None, None) => return Err(AppError::Invalid(format!("unknown pattern `{}`", spec.pattern()))),
        };
        let providers = self.providers(spec)?;
        // The workers' faster model under load is called too.
        let mut models = team.models.all();
        if let Some(switch) = &common.load_switch {
            models.push(&switch.to);
        }
        keys_present(&models, &providers)?;
        orchestrator.validate(&providers).map_err(AppError::Invalid)?;
        if let Some(switch) = &common.load_switch {
            providers.check(&switch.to).map_err(|e| FAST_MODEL.invalid(&switch.to, e))?;
        }
        let simulated = models.iter().any(|m| is_simulated(m));
        let providers = only_what_simulated_runs_call(providers, &models);

        let mut options = RunOptions::default().with_providers(providers);
        options.parallel = !spec.sequential;
        options.plan = plan;
        options.review_plan = spec.review_plan;
        common.apply(spec, &mut options);
        priced_under_usd_cap(&models, &options, BUDGET_FROM_SPEC)?;
        let mut recorded = spec.clone();
        recorded.formats = Some(common.formats_text.clone());
        options.definition = Some(recorded.to_definition());
        let tools = self.tools.plan(spec, &[], &Default::default())?.map(|plan| (self.tools.clone(), plan));
        Ok(Prepared {
            task: task_with_context(task, spec.context.as_ref()),
            spec: recorded,
            orchestrator,
            options,
            formats: common.formats,
            simulated,
            tools,
            rebuild: None,
        })
    }
}

const AGENTS: Field = Field::new("agents", "--agents");
const MIN_AGENTS: Field = Field::new("min_agents", "--min-agents");
const MOST_AGENTS: Field = Field::new("max_agents", "--max-agents");

/// The workers a spec asks for: exactly `agents` (default 5), or the most of a range
/// `min_agents..=max_agents` and its fewest.
fn agent_count(spec: &RunSpec) -> Result<(usize, Option<usize>), AppError> {
    if spec.min_agents.is_none() && spec.max_agents.is_none() {
        return Ok((in_range(AGENTS, spec.agents.unwrap_or(5), 1, MAX_AGENTS)? as usize, None));
    }
    if spec.agents.is_some() {
        return Err(AppError::Invalid(
            "agents (--agents) is an exact number and min_agents/max_agents (--min-agents/--max-agents) a \
             range the decomposer chooses in; give one or the other"
                .into(),
        ));
    }
    let min = in_range(MIN_AGENTS, spec.min_agents.unwrap_or(1), 1, MAX_AGENTS)?;
    let max = in_range(MOST_AGENTS, spec.max_agents.unwrap_or(min.max(5)), 1, MAX_AGENTS)?;
    if min > max {
        return Err(AppError::Invalid(format!(
            "min_agents (--min-agents) is {min} but max_agents (--max-agents) is {max}; the fewest agents \
             must be at most the most"
        )));
    }
    Ok((max as usize, Some(min as usize)))
}
const CONCURRENCY: Field = Field::new("concurrency", "--concurrency");
const GROUP_SIZE: Field = Field::new("group_size", "--group-size");
const REFINE: Field = Field::new("refine", "--refine");
const CONTINUE: Field = Field::new("continue_truncated", "--continue-truncated");
const RETRIES: Field = Field::new("retries", "--retries");
const TIMEOUT: Field = Field::new("timeout", "--timeout");
const MIN_SUCCESS: Field = Field::new("min_success", "--min-success");
const DEADLINE: Field = Field::new("deadline", "--deadline");
const BUDGET_WARN_AT: Field = Field::new("budget_warn_at", "--budget-warn-at");
const DEGRADE_AT: Field = Field::new("degrade_at", "--degrade-at");
const SLOW_CALL: Field = Field::new("slow_call", "--slow-call");
const FAST_MODEL: Field = Field::new("fast_model", "--fast-model");

/// The share of a tier's failed steps at which a degrading cascade falls a level (the same
/// as a workflow file's).
pub const DEFAULT_DEGRADE_AT: f64 = belt_workflow::DEFAULT_DEGRADE_AT;
/// Seconds after which a worker's call is a sign of load, for `fast_model`.
pub const DEFAULT_SLOW_CALL_SECS: f64 = 60.0;
const BUDGET_USD: Field = Field::new("budget_usd", "--budget-usd");
/// Where a spec's USD budget is set, as messages name it.
pub(crate) const BUDGET_FROM_SPEC: &str = "budget_usd, --budget-usd";
const BUDGET_TOKENS: Field = Field::new("budget_tokens", "--budget-tokens");
const BUDGET_CALLS: Field = Field::new("budget_calls", "--budget-calls");
const HITL_TIMEOUT: Field = Field::new("hitl_timeout", "--hitl-timeout");
const CACHE: Field = Field::new("cache", "--cache");
const SIM_FAIL_RATE: Field = Field::new("sim_fail_rate", "--sim-fail-rate");
const SIM_LATENCY: Field = Field::new("sim_latency_ms", "--sim-latency-ms");
const FORMATS: Field = Field::new("formats", "--format");
const PLAN: Field = Field::new("plan", "--plan");

/// `value` when it is within `lo..=hi`, else the field's mistake.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
    field: Field,
    value: T,
    lo: T,
    hi: T,
) -> Result<T, AppError> {
    if value < lo || value > hi {
        return Err(field.invalid(&value, format!("must be from {lo} to {hi}")));
    }
    Ok(value)
}

/// A number of seconds one attempt may take ([`belt_core::policy::timeout_secs`]).
pub(crate) fn seconds(field: Field, value: f64) -> Result<Duration, AppError> {
    belt_core::policy::timeout_secs(value).map_err(|why| field.invalid(value, why))
}

/// The checks and settings every spec has, task or workflow.
pub(crate) struct Common {
    pub concurrency: Option<usize>,
    pub timeout: Option<Duration>,
    pub retries: Option<u32>,
    pub tiers: Vec<(String, Option<Duration>, Option<u32>)>,
    pub min_success: Option<f64>,
    pub budget: Budget,
    pub formats: Vec<belt_report::Format>,
    /// `formats` as the spec records it.
    pub formats_text: String,
    /// The budget pool the run draws from (`budget_pool`), from belt.toml and the store.
    pub pool: Option<belt_core::shared::BudgetPool>,
    pub deadline: Option<Duration>,
    pub warn_at: Option<f64>,
    /// `degrade` (or `degrade_at`): the share of failures at which the cascade falls a level.
    pub degrade: Option<f64>,
    /// `fast_model`, with `slow_call`: the workers' switch under load.
    pub load_switch: Option<belt_core::load::LoadSwitch>,
}

impl Common {
    fn check(spec: &RunSpec) -> Result<Common, AppError> {
        let concurrency = spec.concurrency.map(|c| in_range(CONCURRENCY, c, 1, MAX_AGENTS)).transpose()?;
        let timeout = spec.timeout.map(|t| seconds(TIMEOUT, t)).transpose()?;
        let retries = spec.retries.map(|r| in_range(RETRIES, r, 0, 100)).transpose()?;
        let mut tiers = Vec::new();
        for (tier, p) in &spec.policies {
            if tier.trim().is_empty() {
                return Err(AppError::Invalid(
                    "policies: a tier's name is empty; name it (worker, synthesizer…)".into(),
                ));
            }
            let t =
                p.timeout.map(|t| seconds(Field::new("policies.*.timeout", "--timeout"), t)).transpose()?;
            let r = p
                .retries
                .map(|r| in_range(Field::new("policies.*.retries", "--retries"), r, 0, 100))
                .transpose()?;
            tiers.push((tier.clone(), t, r));
        }
        let min_success = spec.min_success.map(|m| unit(MIN_SUCCESS, m)).transpose()?;
        let deadline = spec
            .deadline
            .map(|d| belt_core::policy::deadline_secs(d).map_err(|why| DEADLINE.invalid(d, why)))
            .transpose()?;
        if let Some(w) = spec.budget_warn_at
            && !(w > 0.0 && w <= 1.0)
        {
            return Err(BUDGET_WARN_AT.invalid(w, "must be a fraction of each cap, above 0 and at most 1"));
        }
        let degrade_at = spec.degrade_at.map(|d| unit(DEGRADE_AT, d)).transpose()?;
        let degrade =
            (spec.degrade || degrade_at.is_some()).then(|| degrade_at.unwrap_or(DEFAULT_DEGRADE_AT));
        let slow = seconds(SLOW_CALL, spec.slow_call.unwrap_or(DEFAULT_SLOW_CALL_SECS))?;
        let load_switch = match spec.fast_model.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(FAST_MODEL.invalid("", "name a model as provider/model, or leave it out")),
            Some(fast) => Some(belt_core::load::LoadSwitch::new(belt_core::Tier::Worker, fast, Some(slow))),
        };
        if let Some(b) = spec.budget_usd
            && !(b.is_finite() && b > 0.0)
        {
            return Err(BUDGET_USD.invalid(b, "must be a positive amount of US dollars"));
        }
        if spec.budget_tokens == Some(0) {
            return Err(BUDGET_TOKENS.invalid(0, "must be at least 1"));
        }
        if spec.budget_calls == Some(0) {
            return Err(BUDGET_CALLS.invalid(0, "must be at least 1"));
        }
        if let Some(h) = spec.hitl_timeout {
            in_range(HITL_TIMEOUT, h, 1, MAX_HITL_SECS)?;
        }
        if let Some(c) = spec.cache {
            in_range(CACHE, c, 1, MAX_CACHE_SECS)?;
        }
        if let Some(t) = &spec.traceparent {
            belt_core::event::TraceParent::parse(t).map_err(|why| {
                AppError::Invalid(format!("traceparent (--traceparent, TRACEPARENT): {why}"))
            })?;
        }
        if let Some(r) = spec.sim_fail_rate {
            unit(SIM_FAIL_RATE, r)?;
        }
        if let Some(l) = spec.sim_latency_ms {
            in_range(SIM_LATENCY, l, 0, MAX_SIM_LATENCY_MS)?;
        }
        let formats_text = spec.formats.clone().unwrap_or_else(|| "md".into());
        let formats = parse_formats(&formats_text)?;
        Ok(Common {
            concurrency: concurrency.map(|c| c as usize),
            timeout,
            retries,
            tiers,
            min_success,
            budget: Budget {
                max_cost_usd: spec.budget_usd,
                max_tokens: spec.budget_tokens,
                max_calls: spec.budget_calls,
            },
            formats,
            formats_text,
            pool: None,
            deadline,
            warn_at: spec.budget_warn_at,
            degrade,
            load_switch,
        })
    }

    /// Put what the spec says explicitly into `options`, over whatever is there (defaults,
    /// or a workflow file's settings).
    pub(crate) fn apply(&self, spec: &RunSpec, options: &mut RunOptions) {
        options.concurrency = self.concurrency.unwrap_or(options.concurrency);
        options.min_success = self.min_success.unwrap_or(options.min_success);
        options.budget = self.budget.or(options.budget);
        options.policies.override_all(self.timeout, self.retries);
        for (tier, timeout, retries) in &self.tiers {
            let tier = belt_core::Tier::parse(tier);
            let mut policy = *options.policies.for_tier(&tier);
            policy.timeout = timeout.unwrap_or(policy.timeout);
            policy.retries = retries.unwrap_or(policy.retries);
            options.policies.set(&tier, policy);
        }
        options.cache_ttl = spec.cache.map(Duration::from_secs);
        options.budget_pool = self.pool.clone();
        options.traceparent = spec.traceparent.clone();
        options.deadline = self.deadline.or(options.deadline);
        options.budget_warn_at = self.warn_at.unwrap_or(options.budget_warn_at);
        options.load_switch = self.load_switch.clone().or(options.load_switch.take());
    }
}

/// A fraction from 0 to 1.
fn unit(field: Field, value: f64) -> Result<f64, AppError> {
    if !(0.0..=1.0).contains(&value) {
        return Err(field.invalid(value, "must be between 0 and 1"));
    }
    Ok(value)
}

/// A `formats` list (md, html, pdf, docx, all), each available in this build.
pub fn parse_formats(list: &str) -> Result<Vec<belt_report::Format>, AppError> {
    let formats = belt_report::Format::parse_list(list).map_err(|e| FORMATS.invalid(list, e))?;
    if let Some(f) = formats.iter().find(|f| !f.available()) {
        return Err(FORMATS.invalid(list, belt_report::ReportError::Unsupported(*f)));
    }
    Ok(formats)
}

/// The spec's plan, normalized (ids, dependencies, no cycle), if it has one.
fn check_plan(spec: &RunSpec) -> Result<Option<Vec<belt_core::Subtask>>, AppError> {
    let Some(plan) = &spec.plan else { return Ok(None) };
    if plan.len() > MAX_AGENTS as usize {
        return Err(PLAN.invalid(
            format!("{} subtasks", plan.len()),
            format!("the plan has {} subtasks; at most {MAX_AGENTS} are supported", plan.len()),
        ));
    }
    let mut plan = plan.clone();
    normalize_plan(&mut plan).map_err(|e| AppError::Invalid(format!("plan (--plan): {e}")))?;
    Ok(Some(plan))
}

/// Each tier's model: its own, else the spec's `model`, else the simulated one.
fn tier_models(spec: &RunSpec) -> TierModels {
    let base = spec.model.clone().unwrap_or_else(|| SIMULATED_MODEL.to_string());
    let or_base = |m: &Option<String>| m.clone().unwrap_or_else(|| base.clone());
    TierModels {
        worker: or_base(&spec.worker_model),
        synthesizer: or_base(&spec.synthesizer_model),
        executive: or_base(&spec.executive_model),
        base,
    }
}

/// A model of a built-in provider whose key is not set is said so, naming the variable —
/// not reported as an unknown provider.
pub(crate) fn keys_present<S: AsRef<str>>(models: &[S], providers: &Providers) -> Result<(), AppError> {
    let ready = providers.names();
    for link in models.iter().flat_map(|m| m.as_ref().split(',')) {
        let link = link.trim();
        let Some((name, _)) = link.split_once('/') else { continue };
        if ready.contains(&name) {
            continue;
        }
        let Some(builtin) = belt_llm::providers::BUILTIN_PROVIDERS.iter().find(|b| b.name == name) else {
            continue;
        };
        if let Some(var) = builtin.key_env.first() {
            return Err(AppError::Invalid(format!(
                "`{link}` needs {var}, which is not set: export {var}=… (or set api_key_env under \
                 [providers.{name}] in belt.toml), or choose another model; `belt models` shows which \
                 providers are ready"
            )));
        }
    }
    Ok(())
}

/// A USD cap — the run's budget or its pool's — cannot be kept with a model whose price is
/// unknown (its calls would be booked at $0), so such a run is refused here, before any call,
/// naming each model and the belt.toml lines that price it. The engine refuses the model at
/// call time too, but step by step, after the run has paid for the steps before.
/// `budget_from` says where the run's USD budget was set (`budget_usd, --budget-usd`).
pub(crate) fn priced_under_usd_cap<S: AsRef<str>>(
    models: &[S],
    options: &RunOptions,
    budget_from: &str,
) -> Result<(), AppError> {
    let pool = options
        .budget_pool
        .as_ref()
        .filter(|p| p.caps.per_day.max_cost_usd.is_some() || p.caps.per_month.max_cost_usd.is_some());
    let cap = match (options.budget.max_cost_usd, pool) {
        (Some(usd), _) => format!("the USD budget ({budget_from}: ${usd})"),
        (None, Some(p)) => format!("the USD caps of budget pool `{}`", p.name),
        (None, None) => return Ok(()),
    };
    let mut unpriced: Vec<&str> = Vec::new();
    for link in models.iter().flat_map(|m| m.as_ref().split(',')).map(str::trim) {
        // A model no provider serves is reported by the checks of providers.
        let Ok((provider, model)) = options.providers.resolve(link) else { continue };
        if provider.price(model).is_none() && !unpriced.contains(&link) {
            unpriced.push(link);
        }
    }
    let Some(first) = unpriced.first() else { return Ok(()) };
    let lines: Vec<String> =
        unpriced.iter().map(|m| format!("[prices.\"{m}\"]\ninput = 0.0\noutput = 0.0")).collect();
    let (models, has, its) = match unpriced.as_slice() {
        [one] => (format!("`{one}`"), "has", "its"),
        many => (many.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "), "have", "their"),
    };
    Err(AppError::Invalid(format!(
        "{cap} cannot be kept: {models} {has} no known price, so what {its} calls cost is unknown; \
         nothing was run. Set {its} price in belt.toml, in US dollars per million tokens (0 for a free \
         local model):\n\n{}\n\n(the same keys under [models.\"{first}\"] work too), or run without a \
         USD budget (--budget-tokens caps tokens and needs no price)",
        lines.join("\n\n")
    )))
}

/// True when a model (or a link of a fallback chain) is simulated.
pub(crate) fn is_simulated(model: &str) -> bool {
    model.split(',').any(|m| m.trim().starts_with("simulated/"))
}

/// The providers a run can call when every model it names is simulated: the simulated one
/// alone. The engine labels a run simulated in `run_started` when every provider it can call
/// is simulated; with keyless providers (Ollama) registered beside it, a simulated run said
/// `"simulated": false` until its first reply. Runs naming any other model keep them all.
pub(crate) fn only_what_simulated_runs_call<S: AsRef<str>>(providers: Providers, models: &[S]) -> Providers {
    let all_simulated = !models.is_empty()
        && models.iter().flat_map(|m| m.as_ref().split(',')).all(|m| m.trim().starts_with("simulated/"));
    if !all_simulated {
        return providers;
    }
    let Ok((simulated, _)) = providers.resolve("simulated/-") else { return providers };
    let mut only = Providers::new();
    match providers.limiter("simulated") {
        Some(limiter) => only.insert_with_limits(simulated.clone(), *limiter.limits()),
        None => only.insert(simulated.clone()),
    }
    only
}

/// The run's task: the spec's task and its context, which every agent reads under it
/// ([`Task::brief`]). Blank text and `null` are no context.
fn task_with_context(task: &str, context: Option<&serde_json::Value>) -> Task {
    match context {
        Some(serde_json::Value::String(text)) if text.trim().is_empty() => Task::new(task),
        Some(context) => Task::new(task).with_context(context.clone()),
        None => Task::new(task),
    }
}

/// Limits of a provider from a workflow file over those of the configuration.
pub(crate) fn merge_limits(providers: &mut Providers, name: &str, file: &Limits) {
    // Limits of a provider this machine has no key for are moot: a model of it fails the
    // provider check, and a file is shared between people with different keys.
    let Ok((provider, _)) = providers.resolve(&format!("{name}/-")) else { return };
    let provider = provider.clone();
    let current = providers.limiter(name).map(|l| *l.limits()).unwrap_or_default();
    let merged = Limits {
        max_concurrency: file.max_concurrency.or(current.max_concurrency),
        rpm: file.rpm.or(current.rpm),
        tpm: file.tpm.or(current.tpm),
        ..current
    };
    providers.insert_with_limits(provider, merged);
}

/// The format of a workflow named `file` with text `text`.
pub(crate) fn workflow_format(spec: &RunSpec, text: &str) -> belt_workflow::Format {
    spec.workflow_format
        .or_else(|| {
            spec.workflow_file.as_deref().and_then(|f| belt_workflow::Format::from_path(Path::new(f)))
        })
        .unwrap_or_else(|| belt_workflow::Format::sniff(text))
}

#[cfg(test)]
mod tests;

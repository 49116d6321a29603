//! The file format: the same structs read YAML and TOML, and give the JSON Schema.
//!
//! Key names follow the issue that defined the format, so files read the same everywhere:
//! an agent has `id`, `role`, `model`, `system`, `temperature`, `tools`, `output_schema`;
//! a step has `id`, `agent`, `prompt`, `needs`, `when`, `loop`, `route`. Unknown keys are
//! errors (`deny_unknown_fields`, and the tree deserializer reports them all at once).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A belt workflow: agents, and steps (or a cascade or swarm) that use them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFile {
    /// Short name of the workflow (shown as the run's pattern).
    pub name: String,
    /// What the workflow does; a template over `inputs.*`. It is the run's task (its
    /// title in reports), unless the cascade or swarm section gives a `task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Values given at run time (`belt run -f FILE --input name=value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputDef>,
    /// Free-form data of the run (any value: a map, a list, text) that templates, `when`
    /// and `loop.until` read as `context.*` (`{{ context.customer.tier }}`). A run's own
    /// context (`--context`, `context` in a request) goes over it, key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// Defaults for every agent and step.
    #[serde(default)]
    pub defaults: Defaults,
    /// Hard caps for the whole run; a call that would pass one is not made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetDef>,
    /// Limits per provider (`openai`, `anthropic`, `simulated`…), over those of belt.toml.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ProviderDef>,
    /// MCP servers whose tools agents may name (`tools: [NAME]` for all of a server's
    /// tools, `NAME.TOOL` for one): `command` with `args` and `env` (stdio) or `url` with
    /// `headers` (Streamable HTTP), beside belt.toml's `[mcp.NAME]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mcp_servers: BTreeMap<String, belt_tools::mcp::McpServerSpec>,
    /// The agents the steps use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentDef>,
    /// How the work is organized.
    pub pattern: PatternKind,
    /// The steps (every pattern but `cascade` and `swarm`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepDef>,
    /// The cascade's settings (pattern `cascade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeDef>,
    /// The swarm's settings (pattern `swarm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmDef>,
    /// Reports: formats, directory, and which step's output is final.
    #[serde(default)]
    pub outputs: Outputs,
}

/// The patterns a workflow file can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    /// Decompose the task, run workers in parallel, synthesize per group of 5, then an
    /// executive synthesis (section `cascade`).
    Cascade,
    /// Specialists by domain (news, academic, product…), results grouped by domain
    /// (section `swarm`).
    Swarm,
    /// Steps in file order, each after the previous one.
    Sequential,
    /// Steps run by `needs`; `route` and `when` choose which run.
    Conditional,
    /// The same as `conditional`.
    Router,
    /// Steps in file order, with `loop` on the steps that refine their output.
    Iterative,
    /// Steps run by `needs`, each the moment its dependencies are done.
    Dag,
}

impl PatternKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternKind::Cascade => "cascade",
            PatternKind::Swarm => "swarm",
            PatternKind::Sequential => "sequential",
            PatternKind::Conditional => "conditional",
            PatternKind::Router => "router",
            PatternKind::Iterative => "iterative",
            PatternKind::Dag => "dag",
        }
    }

    /// True for the patterns made of `steps`.
    pub fn has_steps(self) -> bool {
        !matches!(self, PatternKind::Cascade | PatternKind::Swarm)
    }

    /// True when each step implicitly follows the previous one.
    pub fn is_chain(self) -> bool {
        matches!(self, PatternKind::Sequential | PatternKind::Iterative)
    }
}

/// The type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
}

impl InputType {
    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
        }
    }

    /// A value of this type, for checks that bind a file without the run's inputs.
    pub fn placeholder(self) -> &'static str {
        match self {
            InputType::String => "x",
            InputType::Integer | InputType::Number => "1",
            InputType::Boolean => "true",
        }
    }
}

/// An input of the workflow, used in templates as `inputs.<name>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// `string` (default), `integer`, `number` or `boolean`.
    #[serde(default, rename = "type")]
    pub kind: InputType,
    /// What the input is (shown in errors about it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether the run needs a value. Default: required unless it has a `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value when none is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// A model (`provider/model`), or a fallback list tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelSpec {
    One(String),
    Fallbacks(Vec<String>),
}

impl ModelSpec {
    /// The models in order.
    pub fn models(&self) -> Vec<&str> {
        match self {
            ModelSpec::One(m) => vec![m.as_str()],
            ModelSpec::Fallbacks(ms) => ms.iter().map(String::as_str).collect(),
        }
    }

    /// The engine's form: comma-separated, the first serving unless it fails.
    pub fn chain(&self) -> String {
        self.models().join(",")
    }
}

/// Defaults for the whole workflow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The model of agents without one, and of every cascade or swarm tier without one.
    /// Without it, the caller's default (`belt run --model`, else the simulated provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Models per tier of the cascade.
    #[serde(default)]
    pub models: TierModels,
    /// Sampling temperature of agents without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Seconds one attempt of a step may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Retries of a step after a retryable error (timeout, 429, 5xx, connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Most LLM calls in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    // Time limits (issue 16).
    /// Seconds one attempt may take, per tier (`decomposer`, `worker`, `synthesizer`,
    /// `executive`) or agent id, over `timeout`; e.g. `{worker: 60, executive: 300}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timeouts: BTreeMap<String, f64>,
    /// Seconds the whole run may take: then no new step starts, the calls in flight are
    /// cancelled, and the run ends `partial` with what it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<f64>,
}

/// A model per tier of the cascade (`decomposer`, `worker`, `synthesizer`, `executive`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TierModels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decomposer: Option<ModelSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<ModelSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesizer: Option<ModelSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executive: Option<ModelSpec>,
}

/// Hard caps for the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetDef {
    /// US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd: Option<f64>,
    /// Tokens, input and output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Provider calls (retries count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// The fraction of a cap (above 0, at most 1) at which a `budget_warning` event fires.
    /// Default 0.8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_at: Option<f64>,
}

/// Limits of one provider, shared by every step that calls it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderDef {
    /// Most calls in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

/// An agent: a model playing a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// How steps name it.
    pub id: String,
    /// Who it is, e.g. "Senior research analyst"; opens its system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `provider/model`, or a fallback list. Default: `defaults.model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Its system prompt (after the role); a template over `inputs.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Sampling temperature, 0 to 2. Default: `defaults.temperature`, else the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Most output tokens per reply (what the budget reserves). Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Tools the agent may call, by name: the host's (built in: `calculator`, `clock`). The
    /// agent then runs the engine's tool loop: rounds and calls recorded, a round cap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// A JSON Schema its replies follow: the agent is asked for JSON matching it, and a
    /// reply that is not JSON fails the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
}

/// One step of the workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// How other steps name it (`needs`, `route`, `steps.<id>.output`).
    pub id: String,
    /// The agent that does it. Without one, the step's output is its rendered `prompt`
    /// (no model call): a way to compute a value for `route` or to assemble outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What the agent is asked: a template over `inputs.*` and `steps.<id>.output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Steps that must be done before this one starts. A step also waits for every
    /// earlier step whose output its templates use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// A condition (an expression over `inputs.*` and `steps.<id>.output`, e.g.
    /// `steps.triage.output == "billing"`); when false the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Refine the output: draft, check, revise, until `until` holds or the judge accepts,
    /// at most `max` drafts.
    #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_: Option<LoopDef>,
    /// Route on this step's output: a map from a value (the reply, or the first value
    /// named in it) to the step that handles it; `default` takes anything else. The
    /// steps not chosen are skipped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub route: BTreeMap<String, String>,
    /// What a failure of the step's agent does: `abort` (the default: its dependents are
    /// skipped), `skip` (its output is empty and its dependents run), or a template whose
    /// text becomes its output, over `error.message`, `error.kind`, `inputs.*`,
    /// `context.*` and `steps.<id>.output` (`"(no answer: {{ error.kind }})"`). The failed
    /// call stays on record either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
}

/// How a step refines its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoopDef {
    /// An expression over `output` (the draft), `inputs.*` and `steps.<id>.output`;
    /// the loop stops when it is true. E.g. `output | length > 800`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Criteria for an LLM judge (the step's agent's model) that accepts the draft or
    /// asks for a revision with a critique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// Most drafts (default 3).
    #[serde(default = "default_loop_max")]
    pub max: usize,
}

fn default_loop_max() -> usize {
    3
}

/// When to synthesize in the cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SynthesizeDef {
    /// As the tier shape says.
    #[default]
    Auto,
    /// Also an executive over fewer than `group_size` workers.
    Always,
    /// No synthesis: the workers' outputs combined.
    Never,
    /// The synthesizers but no executive: their outputs combined.
    #[serde(rename = "no-executive", alias = "no_executive")]
    NoExecutive,
}

/// The cascade: workers, synthesizers per group, an executive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CascadeDef {
    /// The task, a template over `inputs.*`.
    pub task: String,
    /// Workers (subtasks), 1 to 100000. Default 5.
    #[serde(default = "default_agents")]
    pub agents: usize,
    /// Workers per synthesizer. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    #[serde(default)]
    pub synthesize: SynthesizeDef,
    /// Fraction of workers that must succeed for synthesis to run (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success: Option<f64>,
    /// The fewest workers: with it, `agents` is the most and the decomposer chooses how
    /// many (`--min-agents`/`--max-agents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agents: Option<usize>,
    /// How the task is decomposed: `auto` (default; the decomposer chooses), `research`,
    /// `software`, `analysis` or `planning` (`--strategy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<belt_core::Strategy>,
    /// Degrade gracefully: when too many workers (or synthesizers) fail, fall to a cascade
    /// without synthesizers, then to a single agent, instead of failing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degrade: bool,
    /// The fraction of a tier's steps whose failure makes the cascade fall a level (default
    /// 0.3); setting it turns `degrade` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade_at: Option<f64>,
}

/// How the swarm assigns domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssignDef {
    #[default]
    Keywords,
    Llm,
}

/// The swarm: specialists by domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwarmDef {
    /// The task, a template over `inputs.*`.
    pub task: String,
    /// Specialists (subtasks). Default 5.
    #[serde(default = "default_agents")]
    pub agents: usize,
    /// How subtasks get their domain: `keywords` (default) or `llm`.
    #[serde(default)]
    pub assign: AssignDef,
    /// The model (default: `defaults.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
}

fn default_agents() -> usize {
    5
}

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    Md,
    Html,
    Pdf,
    Docx,
    All,
}

impl ReportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Md => "md",
            ReportFormat::Html => "html",
            ReportFormat::Pdf => "pdf",
            ReportFormat::Docx => "docx",
            ReportFormat::All => "all",
        }
    }
}

/// Where the results go.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Report formats (default: the caller's, `md` for `belt run`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<ReportFormat>,
    /// Directory of the reports (default: the caller's, `belt-out` for `belt run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// The step whose output is the run's final output. Default: the last step, in file
    /// order, that produced one.
    #[serde(default, rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_step: Option<String>,
}

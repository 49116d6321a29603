//! [`RunSpec`]: a run's whole definition, as one serde type.
//!
//! Every front end produces one: the CLI from its arguments, `POST /v1/runs` and the MCP
//! tools by deserializing their JSON into it directly (the same field names and one JSON
//! Schema; an unknown field is refused with the valid ones listed), a workflow run by
//! carrying the file's text in it. The store records it as the run's definition, so
//! `belt resume` — or any process that can read the store — rebuilds the run from the
//! recorded spec alone.
//!
//! Every field is optional but the task (or a workflow): what is left out takes the
//! default that [`crate::prepare`] applies and documents, so a spec recorded by an older
//! binary keeps meaning what it meant.

use std::collections::BTreeMap;
use std::path::PathBuf;

use belt_core::{Strategy, Subtask, SynthesizeMode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A run's whole definition. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = crate::lenient::plain_optionals)]
pub struct RunSpec {
    /// What the agents should do, in plain language, e.g. "Analyze the impact of AI on
    /// healthcare". It is decomposed into one subtask per worker agent. Leave it out with a
    /// `workflow`, whose file holds the task.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// Background every agent sees with the task: text (a brief, facts, constraints), or
    /// any JSON — an object or array is structured context, shown to agents rendered and
    /// read by path by workflow templates (`{{ context.customer.tier }}`), routes and loop
    /// conditions. In a workflow run its top-level keys go over the file's `context:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// Orchestration pattern (see list_patterns / GET /v1/patterns / `belt patterns`).
    /// Default: `cascade` (workers in parallel, synthesizers over groups of 5, an executive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The arguments of an orchestrator the serving program registered (its `args_schema` in
    /// GET /v1/patterns / list_patterns says which), checked when the run is prepared. The
    /// patterns of belt's library take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
    /// Number of worker agents (subtasks), 1 to 100000. Default: 5. A `plan` sets it.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub agents: Option<u32>,
    // Smarter decomposition (issue 16): a range instead of `agents`, and the strategy.
    /// The fewest worker agents, when the decomposer chooses how many (cascade; 1 to
    /// 100000): instead of `agents`, with `max_agents`. Alone, `max_agents` is the larger of
    /// it and 5.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub min_agents: Option<u32>,
    /// The most worker agents, when the decomposer chooses how many (cascade; 1 to 100000):
    /// instead of `agents`, with `min_agents` (default 1).
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_agents: Option<u32>,
    /// How the cascade's decomposer splits the task: `auto` (it chooses from the task, in the
    /// same call), `research`, `software`, `analysis` or `planning`; each has its own template
    /// plan for when the model's plan is unusable. Default: auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// The subtasks, instead of a decomposition by the model: `[{id, description,
    /// specialization, priority, dependencies}]`. Their count is the number of workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<Subtask>>,
    /// Critique-and-revise rounds (0 to 20): for the cascade, over its final synthesis
    /// (default 0); for `iterative`, the most drafts (default 3).
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 20))]
    pub refine: Option<u32>,
    /// How many times a worker cut off by its token cap (`finish_reason` `length`) is asked
    /// to continue where it stopped (0 to 5; default 0). Cascade only.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 5))]
    pub continue_truncated: Option<u32>,

    /// Tools the workers may call (the agents of patterns without workers): `web`
    /// (`web_search` and `fetch_url`), `web_search`, `fetch_url`, `run_code` (Python or sh in
    /// a sandbox), `calculator`, `clock`, an MCP server's name (all its tools) or
    /// `server.tool` (one of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Tools the synthesizers may call (names as for `tools`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synthesizer_tools: Vec<String>,
    /// Tools the executive may call (names as for `tools`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executive_tools: Vec<String>,
    /// MCP servers for this run, beside belt.toml's `[mcp.NAME]`: a name, and `command`
    /// with `args` and `env` (a program speaking MCP on stdio) or `url` with `headers`
    /// (Streamable HTTP). The spec is recorded with the run: put secrets in belt.toml.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mcp: BTreeMap<String, belt_tools::mcp::McpServerSpec>,

    /// Model for every tier as `provider/model`, e.g. `openai/gpt-4o-mini` or
    /// `simulated/default` (offline, simulated text); `a/x,b/y` falls back from x to y.
    /// Default: the front end's default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Model for the workers only (overrides `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_model: Option<String>,
    /// Model for the synthesizers only (overrides `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesizer_model: Option<String>,
    /// Model for the executive only (overrides `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executive_model: Option<String>,

    /// Most LLM calls in flight at once within this run, 1 to 100000. Default: 16.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub concurrency: Option<u32>,
    /// Run the subtasks one at a time, in priority order. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sequential: bool,
    /// Seconds one attempt of a step may take, for every tier (default: 180 for workers,
    /// 240 for synthesizers, 300 for the executive). At most one day.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Retries of a step after a retryable error (timeout, 429, 5xx, connection), 0 to 100.
    /// Default: 2.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
    /// Timeout and retries per tier (`decomposer`, `worker`, `synthesizer`, `executive`,
    /// `tool`, or a workflow agent's id), over `timeout` and `retries`, e.g. `{"worker":
    /// {"timeout": 60}}`. A step whose attempts time out ends `timed_out`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, TierPolicy>,
    /// Workers per synthesizer (cascade), 2 to 1000. Default: 5.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 1000))]
    pub group_size: Option<u32>,
    /// Cascade synthesis: `auto` (by the tier shape), `always`, `never`, or `no-executive`
    /// (the synthesizers' outputs combined, no executive). Default: auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesize: Option<SynthesizeMode>,
    /// Fraction (0 to 1) of workers that must succeed for synthesis to run. Default: 0.5.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub min_success: Option<f64>,

    /// Hard cap on the run's cost in US dollars: no call starts that could pass it.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Hard cap on tokens (input + output) for the whole run.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    /// Hard cap on provider calls for the whole run (retries count).
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub budget_calls: Option<u64>,
    /// A budget pool of belt.toml (`[budget_pools.NAME]`) that every call also draws from,
    /// with every other run that names it, in every process sharing the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_pool: Option<String>,

    // Time and limits (issue 16). Per-tier timeouts are `policies`.
    /// Seconds the whole run may take (at most a week): then no new step starts, the calls
    /// in flight are cancelled (their steps `timed_out`), and the run ends `partial` with what
    /// it has, the deadline named in `stop_reason` (`failed` when nothing was done yet). A
    /// resumed run gets the whole deadline again. Default: none.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub deadline: Option<f64>,
    /// The fraction of a budget cap (above 0, at most 1) at which a `budget_warning` event
    /// fires, once per cap. Default: 0.8.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub budget_warn_at: Option<f64>,
    /// Graceful degradation of the cascade: when more than `degrade_at` of the workers (or of
    /// a synthesizer level) fail, fall from the full cascade to a simplified one (no
    /// synthesizer tier: the executive merges the workers' outputs), and when that fails, or
    /// when fewer workers succeed than `min_success` asks (which otherwise fails the run), to
    /// a single agent answering the whole task. Each fall is a `degraded` event, an entry of
    /// the result's `degradations` and a line of the report. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degrade: bool,
    /// The fraction (0 to 1) of a tier's steps whose failure makes a degrading cascade fall
    /// a level; setting it turns `degrade` on. Default: 0.3.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub degrade_at: Option<f64>,
    /// A faster model (or fallback chain) the workers switch to, for the rest of the run,
    /// once their provider has signalled load 3 times: answers 429 (rate limited), or calls
    /// slower than `slow_call`. The switch is a `degraded` event and a line of the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_model: Option<String>,
    /// Seconds after which a worker's call counts as a sign of load, for `fast_model`.
    /// Default: 60.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<f64>,

    /// Ask a person to approve the plan before any worker runs (over HTTP: GET
    /// /v1/approvals, answered at POST /v1/runs/{id}/approvals/{request_id}). Rejected or
    /// unanswered, nothing more is paid for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub review_plan: bool,
    /// Approve every approval at once and take every other question's default: for
    /// unattended runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approve_all: bool,
    /// Wait at most this many seconds for an answer to any question, then take its
    /// default; 1 to 604800 (a week).
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub hitl_timeout: Option<u64>,
    /// Serve identical requests from the store's response cache for this many seconds (hits
    /// cost nothing and are marked in events).
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub cache: Option<u64>,
    /// The caller's W3C trace context, `00-<32 hex>-<16 hex>-<2 hex>` (over HTTP, the
    /// request's `traceparent` header): with OpenTelemetry export on, the run's spans go
    /// into the caller's trace, under the caller's span. Recorded with the run, so a resumed
    /// run joins the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,

    /// The text of a belt workflow file (YAML or TOML, as `belt init` writes them) to run
    /// instead of a task and pattern; its inputs go in `inputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// The workflow's syntax, `yaml` or `toml`. Default: from `workflow_file`'s extension,
    /// else sniffed from the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_format: Option<belt_workflow::Format>,
    /// The name the workflow's diagnostics give it (`FILE:LINE:COL: …`), e.g. its path.
    /// Default: `workflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_file: Option<String>,
    /// Values for the workflow's inputs, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,

    /// Report formats written when the run ends, comma-separated: md, html, pdf, docx, or
    /// all. Default: md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<String>,
    /// The directory a front end that writes files (the CLI) puts the reports in. Refused
    /// over HTTP and MCP: fetch reports at GET /v1/runs/{id}/documents/{format} instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,

    /// Seed of the simulated provider (same seed, same texts). Only for `simulated/` models.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Fixed latency of simulated calls in milliseconds (default: random 200-800).
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub sim_latency_ms: Option<u64>,
    /// Fraction (0 to 1) of simulated calls that fail with a 429, a 500 or a timeout.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub sim_fail_rate: Option<f64>,
}

/// Timeout and retries for the steps of one tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = crate::lenient::plain_optionals)]
pub struct TierPolicy {
    /// Seconds one attempt may take.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Retries after a retryable error.
    #[serde(default, deserialize_with = "crate::lenient::number", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
}

impl RunSpec {
    /// A spec for `task` with every other setting at its default.
    pub fn new(task: impl Into<String>) -> Self {
        RunSpec { task: task.into(), ..RunSpec::default() }
    }

    /// The pattern asked for, `cascade` by default.
    pub fn pattern(&self) -> &str {
        self.pattern.as_deref().unwrap_or(DEFAULT_PATTERN)
    }

    /// The spec as recorded in the store (JSON).
    pub fn to_definition(&self) -> String {
        // A struct of strings, numbers, maps and plain enums: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The spec a run recorded as its definition. Runs recorded before belt-app (the CLI's
    /// arguments, `{"args": {…}, "plan": …, "workflow": …}`) are read too, so a run
    /// interrupted before an upgrade resumes after it.
    pub fn from_definition(json: &str) -> Result<RunSpec, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        // An old definition holds `args` (the CLI's) and no `task` or `pattern` of its own; a
        // spec's `args` (a registered orchestrator's) comes with the `pattern` it is for.
        let legacy =
            value.get("args").is_some() && value.get("task").is_none() && value.get("pattern").is_none();
        let mut value = if legacy { crate::legacy::upgrade(value) } else { value };
        forget_empty_subtask_ids(&mut value);
        serde_json::from_value(value).map_err(|e| e.to_string())
    }
}

/// Definitions recorded before empty subtask ids were left out of the JSON hold a plan
/// subtask without an id as `"id": ""`, which a plan from outside may not say (it is refused
/// as a mistake). Read there, it means what it meant when it was recorded: no id, numbered by
/// position — so those runs resume.
fn forget_empty_subtask_ids(value: &mut serde_json::Value) {
    let Some(plan) = value.get_mut("plan").and_then(serde_json::Value::as_array_mut) else { return };
    for subtask in plan.iter_mut().filter_map(serde_json::Value::as_object_mut) {
        if subtask.get("id").and_then(serde_json::Value::as_str) == Some("") {
            subtask.remove("id");
        }
    }
}

/// The pattern of a spec that names none.
pub const DEFAULT_PATTERN: &str = "cascade";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_with_the_valid_ones_listed() {
        let e = serde_json::from_str::<RunSpec>(r#"{"task": "x", "agent": 3}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `agent`"), "{e}");
        assert!(e.contains("`agents`") && e.contains("`budget_usd`"), "{e}");
    }

    #[test]
    fn a_spec_round_trips_through_its_definition() {
        let mut spec = RunSpec::new("Plan a park");
        spec.agents = Some(12);
        spec.synthesize = Some(SynthesizeMode::Never);
        spec.policies.insert("worker".into(), TierPolicy { timeout: Some(5.0), retries: Some(1) });
        spec.inputs.insert("k".into(), "v".into());
        let back = RunSpec::from_definition(&spec.to_definition()).unwrap();
        assert_eq!(back, spec);
        // Defaults are not written: a recorded spec says only what was asked.
        assert_eq!(RunSpec::new("t").to_definition(), r#"{"task":"t"}"#);
        // A registered orchestrator's args are kept, not taken for an old definition's.
        let mut registered = RunSpec::new("t");
        registered.pattern = Some("review".into());
        registered.args = Some(serde_json::json!({"focus": ["risks"]}));
        assert_eq!(RunSpec::from_definition(&registered.to_definition()).unwrap(), registered);
    }

    #[test]
    fn a_plan_without_ids_round_trips_and_older_records_of_one_read_back() {
        // Found by the property tests (issue 18): a plan whose subtasks have no ids was
        // recorded with `"id": ""`, and `belt resume` refused the run's own definition.
        let spec: RunSpec =
            serde_json::from_str(r#"{"task": "t", "plan": [{"description": "a"}, {"description": "b"}]}"#)
                .unwrap();
        assert_eq!(RunSpec::from_definition(&spec.to_definition()).unwrap(), spec);
        let older = r#"{"task":"t","plan":[{"id":"","description":"a","specialization":"general","priority":0,"dependencies":[]}]}"#;
        let read = RunSpec::from_definition(older).unwrap();
        assert_eq!(read.plan.unwrap()[0].id, "");
        // From outside, an explicitly empty id is still a mistake.
        assert!(
            serde_json::from_str::<RunSpec>(r#"{"task": "t", "plan": [{"id": "", "description": "a"}]}"#)
                .is_err()
        );
    }
}

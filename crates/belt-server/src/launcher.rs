//! The seam between the server and whoever knows how to build runs: [`Launcher`].
//!
//! The server translates HTTP and MCP into a [`RunRequest`]; turning that into an
//! orchestrator with models, providers and policies is the embedding program's job (the
//! `belt` CLI implements it with its configuration, model choice and workflow files).

use std::collections::BTreeMap;

use async_trait::async_trait;
use belt_core::{RunHandle, RunOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a client asks to run: the same names in the HTTP body (`POST /v1/runs`) and in the
/// MCP tools `run_workflow` and `start_run`. Only `task` is required (or `workflow`, whose
/// file may hold the task); everything else has the defaults of `belt run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// What the agents should do, in plain language, e.g. "Analyze the impact of AI on
    /// healthcare". It is decomposed into one subtask per worker agent.
    #[serde(default)]
    pub task: String,
    /// Orchestration pattern (see list_patterns / GET /v1/patterns). Default: `cascade`
    /// (workers in parallel, synthesizers over groups of 5, an executive on top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Number of worker agents (subtasks), 1 to 100000. Default: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub agents: Option<u32>,
    /// Model for every tier as `provider/model`, e.g. `openai/gpt-4o-mini` or
    /// `simulated/default` (offline, simulated text). Default: the server's default model.
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
    /// Most LLM calls in flight at once within this run. Default: 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub concurrency: Option<u32>,
    /// Hard cap on the run's cost in US dollars: no call starts that could pass it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Hard cap on tokens (input + output) for the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    /// Hard cap on provider calls for the whole run (retries count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_calls: Option<u64>,
    /// Fraction (0 to 1) of workers that must succeed for synthesis to run. Default: 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success: Option<f64>,
    /// Retries of a step after a retryable error (timeout, 429, 5xx). Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Seconds one attempt of a step may take, for every tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Workers per synthesizer (cascade). Default: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u32>,
    /// Cascade synthesis: `auto` (by the tier shape), `always` or `never`. Default: auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesize: Option<String>,
    /// Ask a person to approve the plan before any worker runs: the question appears at
    /// GET /v1/approvals and is answered at POST /v1/runs/{id}/approvals/{request_id}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_plan: Option<bool>,
    /// The text of a belt workflow file (YAML or TOML, as `belt init` writes them) to run
    /// instead of a task and pattern; its inputs go in `inputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Values for the workflow's inputs, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Seed of the simulated provider (same seed, same texts). Only for `simulated/` models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Fixed latency of simulated calls in milliseconds (default: random 200-800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_latency_ms: Option<u64>,
}

impl RunRequest {
    /// A request for `task` with every other setting at its default.
    pub fn new(task: impl Into<String>) -> Self {
        RunRequest { task: task.into(), ..Default::default() }
    }

    /// The pattern asked for, `cascade` by default.
    pub fn pattern(&self) -> &str {
        self.pattern.as_deref().unwrap_or("cascade")
    }
}

/// A pattern a client can ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatternInfo {
    pub name: String,
    pub description: String,
}

/// A request that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LaunchError {
    /// Something in the request is wrong; the message says what and how to fix it (422).
    #[error("{0}")]
    Invalid(String),
    /// The run could not be started for a reason outside the request (500).
    #[error("{0}")]
    Failed(String),
}

impl From<LaunchError> for crate::ApiError {
    fn from(e: LaunchError) -> Self {
        match e {
            LaunchError::Invalid(m) => crate::ApiError::Invalid(m),
            LaunchError::Failed(m) => crate::ApiError::Internal(m),
        }
    }
}

/// Builds runs from requests; implemented by the program that embeds the server.
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Check a request without starting anything, so that a run that must wait for a free
    /// slot is refused at once (422) rather than failing later. Whatever can be checked
    /// without I/O should be.
    fn check(&self, request: &RunRequest) -> Result<(), LaunchError>;

    /// Start the request's run on top of `base`, which holds what the server decides: the
    /// run id, the store, the lease owner and live deltas. Keep those and set the rest
    /// (providers, budget, policies, concurrency); keep `base.human`, the run's channel to
    /// the approvals endpoints, too. Called when a run slot is free.
    async fn launch(&self, request: &RunRequest, base: RunOptions) -> Result<RunHandle, LaunchError>;

    /// The patterns this launcher can run, for `GET /v1/patterns` and MCP `list_patterns`.
    fn patterns(&self) -> Vec<PatternInfo>;
}

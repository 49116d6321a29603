//! belt as an MCP server (rmcp): the same runs as the HTTP API, as tools an assistant can
//! call, over stdio (`belt mcp`) or streamable HTTP (`/mcp` on `belt serve`, behind the
//! same bearer token, with the `Host` header checked against an allow list so a web page
//! cannot reach a local server by DNS rebinding).
//!
//! Tools: `run_workflow` (runs to completion, with progress notifications, and returns the
//! final output and a summary), `start_run` (returns a run id at once), `get_run`,
//! `cancel_run`, `list_runs`, `list_patterns`. `run_workflow` and `start_run` take the
//! fields of [`belt_app::RunSpec`], the body of `POST /v1/runs`. Resources: the Markdown report of
//! each finished run, at `belt://runs/{id}/report.md`.
//!
//! Each orchestrator the program registered ([`belt_app::App::register`]) is a tool of its own,
//! `orchestrate_{name}`, as `run_workflow` is (progress, then the result), described by its
//! registration and taking its own arguments — its args type's fields — beside the run
//! settings of [`belt_app::patterns::TOOL_SETTINGS`]. A session lists those registered when it
//! began.

use std::sync::Arc;

use belt_core::{EventKind, RunResult};
use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::{ToolCallContext, schema_for_type};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig as McpServerInfo, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::manager::Phase;
use belt_app::RunSpec;
use belt_app::patterns::{Registered, TOOL_SETTINGS};

/// The MCP service over a server's runs. Cheap to clone (one per MCP session).
#[derive(Clone)]
pub struct BeltMcp {
    app: AppState,
    /// belt's tools and one per registered orchestrator.
    tool_router: ToolRouter<Self>,
}

/// A run, by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIdParams {
    /// The run's id, as returned by start_run or listed by list_runs.
    pub run_id: String,
}

/// Which runs to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = belt_app::lenient::plain_optionals)]
pub struct ListRunsParams {
    /// Only runs with this status: queued, running, completed, partial, failed,
    /// budget_exhausted, cancelled or interrupted.
    #[serde(default)]
    pub status: Option<String>,
    /// How many, newest first (1 to 500, default 20).
    #[serde(default, deserialize_with = "belt_app::lenient::number")]
    pub limit: Option<usize>,
}

/// The URI of a finished run's Markdown report.
pub fn report_uri(run_id: &str) -> String {
    format!("belt://runs/{run_id}/report.md")
}

/// A tool that could not do what it was asked answers with a tool error (`isError: true`)
/// the model can read and act on, in MCP's words rather than HTTP's; protocol errors are for
/// malformed calls.
fn tool_error(e: ApiError) -> CallToolResult {
    let text = match &e {
        ApiError::UnknownRun(id) => format!("no run has the id `{id}`; list_runs lists the runs"),
        ApiError::TooMany { message, retry_after_secs } => {
            format!("{message} (try again in {retry_after_secs} s)")
        }
        other => other.to_string(),
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// The tool's answer, or its error as a tool error.
fn answer(r: Result<CallToolResult, ApiError>) -> Result<CallToolResult, ErrorData> {
    Ok(r.unwrap_or_else(tool_error))
}

fn json_result(v: &Value) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(serde_json::to_string_pretty(v).unwrap_or_default())])
}

/// What a caller needs to know about a finished run, without its outputs.
fn summary(r: &RunResult) -> Value {
    json!({
        "run_id": r.run_id,
        "status": r.status,
        "stop_reason": r.stop_reason,
        "pattern": r.pattern,
        "agents": r.agents.len(),
        "shape": r.shape,
        "cost_usd": r.cost_usd,
        "input_tokens": r.usage.input_tokens,
        "output_tokens": r.usage.output_tokens,
        "calls": r.usage.calls,
        "duration_ms": r.duration_ms,
        "simulated": r.simulated,
        "report": report_uri(&r.run_id),
    })
}

/// Cancels a run when `run_workflow` is abandoned (the client cancelled or went away).
struct CancelOnDrop(Option<(Arc<crate::manager::RunManager>, Arc<crate::manager::LiveRun>)>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some((manager, run)) = self.0.take() {
            // A queued run is also recorded as cancelled, which takes the store: done on a
            // task of its own, as a drop cannot wait.
            run.cancel();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { manager.cancel(&run).await });
            }
        }
    }
}

/// The tool of a registered orchestrator (see the module docs).
fn orchestrator_tool(registered: &Registered) -> ToolRoute<BeltMcp> {
    let description = format!(
        "{} Runs belt's registered orchestrator `{}` on a task and waits for the result: returns the final \
         output followed by a JSON summary (status, agents, cost in USD, tokens, duration). Sends progress \
         notifications as its steps finish and as it reports progress. budget_usd, budget_tokens and \
         budget_calls are hard caps.",
        registered.description.trim_end_matches('.').to_string() + ".",
        registered.name
    );
    let tool = Tool::new(registered.tool_name(), description, Arc::new(tool_schema(registered)));
    let name: Arc<str> = Arc::from(registered.name.as_str());
    ToolRoute::new_dyn(tool, move |call| call_orchestrator(name.clone(), call))
}

/// A call of a registered orchestrator's tool: its run, to completion.
fn call_orchestrator(
    name: Arc<str>,
    call: ToolCallContext<'_, BeltMcp>,
) -> futures::future::BoxFuture<'_, Result<CallToolResponse, ErrorData>> {
    let spec = spec_of_call(&name, call.arguments.unwrap_or_default());
    let (service, context) = (call.service, call.request_context);
    Box::pin(async move {
        let result = match spec {
            Ok(spec) => service.run_to_completion(spec, context).await,
            Err(e) => Err(e),
        };
        answer(result).map(Into::into)
    })
}

/// The input schema of a registered orchestrator's tool: the run settings of
/// [`TOOL_SETTINGS`], described as `run_workflow` describes them, and the properties of its
/// arguments' schema (with their definitions, where their `$ref`s point).
fn tool_schema(registered: &Registered) -> JsonObject {
    let spec = schema_for_type::<RunSpec>();
    let spec_props = spec.get("properties").and_then(Value::as_object);
    let mut props = serde_json::Map::new();
    for key in TOOL_SETTINGS {
        if let Some(p) = spec_props.and_then(|p| p.get(*key)) {
            props.insert(key.to_string(), p.clone());
        }
    }
    let args = &registered.args_schema;
    if let Some(own) = args.get("properties").and_then(Value::as_object) {
        props.extend(own.clone());
    }
    let mut required = vec![json!("task")];
    required.extend(args.get("required").and_then(Value::as_array).cloned().unwrap_or_default());
    let mut schema = JsonObject::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(props));
    schema.insert("required".into(), Value::Array(required));
    if let Some(defs) = args.get("$defs") {
        schema.insert("$defs".into(), defs.clone());
    }
    schema
}

/// The run spec of a call of orchestrator `name`'s tool: its run settings as the spec's
/// fields, every other argument in `args`.
fn spec_of_call(name: &str, arguments: JsonObject) -> Result<RunSpec, ApiError> {
    let (settings, args): (JsonObject, JsonObject) =
        arguments.into_iter().partition(|(k, _)| TOOL_SETTINGS.contains(&k.as_str()));
    let mut spec = settings;
    spec.insert("pattern".into(), json!(name));
    spec.insert("args".into(), Value::Object(args));
    serde_json::from_value(Value::Object(spec)).map_err(|e| ApiError::Invalid(e.to_string()))
}

#[tool_router]
impl BeltMcp {
    pub fn new(app: AppState) -> Self {
        let mut tool_router = Self::tool_router();
        for registered in app.manager.app().registered() {
            tool_router.add_route(orchestrator_tool(&registered));
        }
        BeltMcp { app, tool_router }
    }

    #[tool(
        description = "Run a task with belt's multi-agent orchestration and wait for the result. The task is \
        decomposed into subtasks, worker agents work on them in parallel, synthesizers and an executive merge \
        their findings (pattern `cascade`; see list_patterns for others). Returns the final output followed by \
        a JSON summary: status, agents, cost in USD, tokens, duration. Sends progress notifications as agents \
        finish. Budgets (budget_usd, budget_tokens, budget_calls) are hard caps. For long runs use start_run \
        and get_run instead."
    )]
    async fn run_workflow(
        &self,
        Parameters(request): Parameters<RunSpec>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(self.run_to_completion(request, context).await)
    }

    #[tool(
        description = "Start a belt run in the background and return its run_id at once (status `running`, or \
        `queued` when the server is busy). Takes the same arguments as run_workflow. Follow it with get_run; \
        stop it with cancel_run."
    )]
    async fn start_run(&self, Parameters(request): Parameters<RunSpec>) -> Result<CallToolResult, ErrorData> {
        answer(self.start(request).await)
    }

    #[tool(
        description = "The state of a run: status, steps completed so far, cost; once finished, the final \
        output and a summary (agents, tokens, duration). The full report is the resource \
        belt://runs/{run_id}/report.md."
    )]
    async fn get_run(&self, Parameters(p): Parameters<RunIdParams>) -> Result<CallToolResult, ErrorData> {
        answer(self.state_of(&p.run_id).await)
    }

    #[tool(
        description = "Cancel a run of this server. Its completed steps stay recorded, and the run can be \
        resumed later with `belt resume RUN_ID`."
    )]
    async fn cancel_run(&self, Parameters(p): Parameters<RunIdParams>) -> Result<CallToolResult, ErrorData> {
        answer(
            self.app
                .cancel(&p.run_id)
                .await
                .map(|info| json_result(&serde_json::to_value(info).unwrap_or_default())),
        )
    }

    #[tool(description = "Recent runs, newest first: id, status, pattern, task, steps, cost, duration.")]
    async fn list_runs(
        &self,
        Parameters(p): Parameters<ListRunsParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let limit = p.limit.unwrap_or(20).clamp(1, 500);
        if let Some(s) = &p.status
            && !crate::api::STATUSES.contains(&s.as_str())
        {
            return answer(Err(ApiError::Invalid(format!(
                "unknown status `{s}`; use one of {}",
                crate::api::STATUSES.join(", ")
            ))));
        }
        answer(
            self.app
                .list(p.status.as_deref(), 0, limit)
                .await
                .map(|list| json_result(&serde_json::to_value(list).unwrap_or_default())),
        )
    }

    #[tool(description = "The orchestration patterns run_workflow and start_run accept as `pattern`.")]
    async fn list_patterns(&self) -> Result<CallToolResult, ErrorData> {
        Ok(json_result(&json!({"patterns": crate::api::PatternList::of(self.app.manager.app()).patterns})))
    }
}

impl BeltMcp {
    /// `run_workflow`: submit, forward progress, return the final output and a summary.
    async fn run_to_completion(
        &self,
        request: RunSpec,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ApiError> {
        let run = self.app.manager.submit(request).await?;
        let run_id = run.run_id.clone();
        let mut guard = CancelOnDrop(Some((self.app.manager.clone(), run.clone())));
        let progress = context.meta.get_progress_token();
        let mut cursor = run.log.cursor();
        let (mut done, mut total) = (0u64, None::<u64>);
        while let Some(batch) = cursor.next_batch().await {
            let Some(token) = &progress else { continue };
            for e in batch {
                let message = match &e.kind {
                    EventKind::PlanReady { shape, .. } => {
                        // The steps before the plan (decomposition) count too.
                        total = Some(done + shape.iter().sum::<usize>() as u64);
                        Some(format!("plan ready: {} steps", total.unwrap_or(0)))
                    }
                    EventKind::StepCompleted { .. }
                    | EventKind::StepFailed { .. }
                    | EventKind::StepSkipped { .. } => {
                        done += 1;
                        Some(format!(
                            "{} {}",
                            e.step.as_ref().map(ToString::to_string).unwrap_or_default(),
                            e.kind.type_name().trim_start_matches("step_")
                        ))
                    }
                    EventKind::RunFinished { status, .. } => Some(format!("run {status}")),
                    EventKind::Custom { name, data } if data.is_null() => Some(name.clone()),
                    EventKind::Custom { name, data } => Some(format!("{name}: {data}")),
                    EventKind::HumanRequested { id, prompt, .. } => {
                        Some(format!("waiting for a person ({id}): {prompt}"))
                    }
                    EventKind::HumanAnswered { id, by, .. } => {
                        Some(format!("{id} answered ({})", by.as_str()))
                    }
                    _ => None,
                };
                if let Some(message) = message {
                    let mut p =
                        ProgressNotificationParam::new(token.clone(), done as f64).with_message(message);
                    if let Some(t) = total {
                        p = p.with_total(t.max(done) as f64);
                    }
                    // A client that stopped listening to progress still gets the result.
                    let _ = context.peer.notify_progress(p).await;
                }
            }
        }
        guard.0 = None;
        // The log closes once the result is stored (or the run never started).
        if let Phase::NotStarted { status, reason } = run.phase() {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "run {run_id} {status}: {reason}"
            ))]));
        }
        let result = self
            .app
            .store
            .get_result(&run_id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("run {run_id} ended without a recorded result")))?;
        let text = format!(
            "{}\n\n---\nsummary: {}",
            result.final_output.as_deref().unwrap_or("(no final output)"),
            serde_json::to_string(&summary(&result)).unwrap_or_default()
        );
        let ok = matches!(result.status, belt_core::RunStatus::Completed | belt_core::RunStatus::Partial);
        let content = vec![ContentBlock::text(text)];
        Ok(if ok { CallToolResult::success(content) } else { CallToolResult::error(content) })
    }

    async fn start(&self, request: RunSpec) -> Result<CallToolResult, ApiError> {
        let run = self.app.manager.submit(request).await?;
        let status = if run.phase() == Phase::Queued { "queued" } else { "running" };
        Ok(json_result(&json!({
            "run_id": run.run_id,
            "status": status,
            "events_url": crate::api::events_url(&run.run_id),
        })))
    }

    async fn state_of(&self, run_id: &str) -> Result<CallToolResult, ApiError> {
        let view = self.app.view(run_id).await?;
        let mut v = serde_json::to_value(&view.info).unwrap_or_default();
        if let Some(result) = &view.result {
            v["summary"] = summary(result);
            v["final_output"] = json!(result.final_output);
        } else {
            v["steps_completed"] = json!(
                view.steps_so_far.iter().map(|s| json!({"step": s.step, "tier": s.tier})).collect::<Vec<_>>()
            );
        }
        Ok(json_result(&v))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BeltMcp {
    fn get_info(&self) -> McpServerInfo {
        McpServerInfo::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(
                Implementation::new("belt", env!("CARGO_PKG_VERSION")).with_title("belt").with_description(
                    "multi-agent LLM orchestration under hard limits, with hierarchical synthesis",
                ),
            )
            .with_instructions(
                "belt runs many LLM agents in parallel under hard budgets and synthesizes their work. Use \
             run_workflow for a task you want answered now, or start_run + get_run for long ones. Finished \
             runs' reports are resources (belt://runs/{id}/report.md).",
            )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let runs = self
            .app
            .store
            .list_runs(200)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let resources = runs
            .into_iter()
            .filter(|r| r.duration_ms.is_some())
            .map(|r| {
                Resource::new(report_uri(&r.run_id), format!("report-{}", r.run_id))
                    .with_title(format!("{} ({})", r.task.chars().take(80).collect::<String>(), r.status))
                    .with_description(format!("Markdown report of {} run {}", r.pattern, r.run_id))
                    .with_mime_type("text/markdown")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        let not_found = || {
            ErrorData::resource_not_found(
                format!("no report at {uri}; reports are belt://runs/RUN_ID/report.md for finished runs"),
                None,
            )
        };
        let run_id = uri
            .strip_prefix("belt://runs/")
            .and_then(|r| r.strip_suffix("/report.md"))
            .ok_or_else(not_found)?;
        let result = self
            .app
            .store
            .get_result(run_id)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
            .ok_or_else(not_found)?;
        let markdown = belt_report::markdown(&result);
        let contents = ResourceContents::TextResourceContents {
            uri: uri.to_string(),
            mime_type: Some("text/markdown".into()),
            text: markdown,
            meta: None,
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}

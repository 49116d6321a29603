//! The JSON API's handlers: runs, documents, patterns, health.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use belt_core::store::{CancelRequest, StepRecord};
use belt_core::{RunResult, RunStatus, Tier};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::manager::{LiveRun, Phase};

/// `202 Accepted` for a new run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Accepted {
    pub run_id: String,
    /// `queued` (waiting for a run slot) or `running`.
    pub status: String,
    /// Server-Sent Events of the run (`GET`, with the same token).
    pub events_url: String,
    /// The run as `GET /v1/runs/{id}` shows it.
    pub run_url: String,
}

/// A run in lists.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunInfo {
    pub run_id: String,
    /// queued, running, completed, partial, failed, budget_exhausted, cancelled, interrupted.
    pub status: String,
    pub pattern: String,
    pub task: String,
    pub started_at: Option<DateTime<Utc>>,
    /// Steps completed (recorded) so far.
    pub steps: u64,
    /// The priced calls' cost: a lower bound when `unpriced_calls` > 0.
    pub cost_usd: f64,
    /// Calls whose model has no known price (their cost is not in `cost_usd`). Counted for
    /// `GET /v1/runs/{id}`; lists leave it 0, as the store's run summaries do not hold it.
    #[serde(default)]
    pub unpriced_calls: u64,
    pub duration_ms: Option<u64>,
    pub events_url: String,
    /// Why a run never started (cancelled while queued, or its launch failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One page of runs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<RunInfo>,
    /// Pass as `offset` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// A completed step of a run that has not finished.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StepView {
    pub step: String,
    pub tier: String,
    pub model: String,
    pub output: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// The model has no known price: `cost_usd` is unknown, not 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpriced: bool,
    /// Why the model stopped (`length`: the output is cut off at its token cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub duration_ms: u64,
    pub attempts: u32,
}

/// One run: the RunResult once finished; before that, the steps completed so far.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub info: RunInfo,
    /// The run's RunResult (see the belt-core docs), once it has finished.
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub result: Option<RunResult>,
    /// Completed steps with their outputs, while the run is not finished.
    pub steps_so_far: Vec<StepView>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct ListQuery {
    /// Only runs with this status.
    pub status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<usize>,
    /// Runs to skip (from `next_offset`).
    pub offset: Option<usize>,
}

/// Runs examined at most when filtering by status.
const SCAN_LIMIT: usize = 10_000;

pub(crate) fn events_url(run_id: &str) -> String {
    format!("/v1/runs/{run_id}/events")
}

fn info_of_live(run: &LiveRun) -> RunInfo {
    let (status, error) = match run.phase() {
        Phase::Queued => ("queued".to_string(), None),
        Phase::Running => ("running".to_string(), None),
        Phase::Finished(s) => (s.to_string(), None),
        Phase::NotStarted { status, reason } => (status.to_string(), Some(reason)),
    };
    RunInfo {
        run_id: run.run_id.clone(),
        status,
        pattern: run.pattern.clone(),
        task: run.task.clone(),
        started_at: Some(run.created_at),
        steps: 0,
        cost_usd: 0.0,
        unpriced_calls: 0,
        duration_ms: None,
        events_url: events_url(&run.run_id),
        error,
    }
}

pub(crate) async fn create_run(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Json<belt_app::RunSpec>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(mut request) = body?;
    // The caller's trace context, as every traced HTTP client sends it (the body's wins).
    if request.traceparent.is_none()
        && let Some(t) = headers.get("traceparent").and_then(|v| v.to_str().ok())
    {
        request.traceparent = Some(t.to_string());
    }
    let run = app.manager.submit(request).await?;
    let status = match run.phase() {
        Phase::Queued => "queued",
        _ => "running",
    };
    let accepted = Accepted {
        run_id: run.run_id.clone(),
        status: status.into(),
        events_url: events_url(&run.run_id),
        run_url: format!("/v1/runs/{}", run.run_id),
    };
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/runs/{}", run.run_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(crate) async fn list_runs(
    State(app): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and 500, got {limit}")));
    }
    let offset = q.offset.unwrap_or(0);
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "unknown status `{s}`; use one of {}",
            STATUSES.join(", ")
        )));
    }
    Ok(Json(app.list(q.status.as_deref(), offset, limit).await?))
}

/// Every status a run can have in this API.
pub const STATUSES: [&str; 8] =
    ["queued", "running", "completed", "partial", "failed", "budget_exhausted", "cancelled", "interrupted"];

impl AppState {
    /// Runs newest first: those this server holds (queued, never started), then the store's.
    pub async fn list(&self, status: Option<&str>, offset: usize, limit: usize) -> Result<RunList, ApiError> {
        let mut memory: Vec<RunInfo> = self
            .manager
            .live()
            .iter()
            .filter(|r| matches!(r.phase(), Phase::Queued | Phase::NotStarted { .. }))
            .map(|r| info_of_live(r))
            .collect();
        memory.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        let fetch = if status.is_some() { SCAN_LIMIT } else { offset + limit + 1 };
        let stored = self.store.list_runs(fetch).await?;
        // A run held here is also in the store (queued, or recorded as never started):
        // listed once, as this server sees it.
        let held: std::collections::HashSet<String> = memory.iter().map(|r| r.run_id.clone()).collect();
        let mut all = memory;
        all.extend(stored.into_iter().filter(|s| !held.contains(&s.run_id)).map(|s| RunInfo {
            events_url: events_url(&s.run_id),
            status: s.status.to_string(),
            run_id: s.run_id,
            pattern: s.pattern,
            task: s.task,
            started_at: Some(s.started_at),
            steps: s.steps,
            cost_usd: s.cost_usd,
            unpriced_calls: 0,
            duration_ms: s.duration_ms,
            error: None,
        }));
        let filtered: Vec<RunInfo> =
            all.into_iter().filter(|r| status.is_none_or(|s| r.status == s)).collect();
        let more = filtered.len() > offset + limit;
        let runs: Vec<RunInfo> = filtered.into_iter().skip(offset).take(limit).collect();
        Ok(RunList { runs, next_offset: more.then_some(offset + limit) })
    }

    /// One run, from memory or the store.
    pub async fn view(&self, run_id: &str) -> Result<RunView, ApiError> {
        self.manager.settle(run_id).await;
        let live = self.manager.get(run_id);
        if let Some(run) = &live
            && matches!(run.phase(), Phase::Queued | Phase::NotStarted { .. })
        {
            return Ok(RunView { info: info_of_live(run), result: None, steps_so_far: Vec::new() });
        }
        let Some(record) = self.store.get_run(run_id).await? else {
            return Err(ApiError::UnknownRun(run_id.to_string()));
        };
        if live.is_none() && record.status == RunStatus::Running {
            self.manager.settle_stored(run_id).await;
        }
        if let Some(result) = self.store.get_result(run_id).await? {
            let info = RunInfo {
                run_id: run_id.to_string(),
                status: result.status.to_string(),
                pattern: result.pattern.clone(),
                task: result.task.clone(),
                started_at: result.started_at.or(Some(record.started_at)),
                steps: result.agents.len() as u64,
                cost_usd: result.cost_usd,
                unpriced_calls: result.usage.unpriced_calls,
                duration_ms: Some(result.duration_ms),
                events_url: events_url(run_id),
                error: None,
            };
            return Ok(RunView { info, result: Some(result), steps_so_far: Vec::new() });
        }
        let steps = self.store.load_steps(run_id).await?;
        // Running here, or in the store's view (another process, or interrupted).
        let status = match &live {
            Some(_) => RunStatus::Running.to_string(),
            None => self
                .store
                .list_runs(SCAN_LIMIT)
                .await?
                .into_iter()
                .find(|s| s.run_id == run_id)
                .map_or(record.status, |s| s.status)
                .to_string(),
        };
        let info = RunInfo {
            run_id: run_id.to_string(),
            status,
            pattern: record.pattern.clone(),
            task: record.task.clone(),
            started_at: Some(record.started_at),
            steps: steps.len() as u64,
            cost_usd: steps.iter().map(|s| s.reply.outcome.cost_usd).sum(),
            unpriced_calls: steps.iter().filter(|s| s.reply.outcome.unpriced).count() as u64,
            duration_ms: None,
            events_url: events_url(run_id),
            error: None,
        };
        Ok(RunView { info, result: None, steps_so_far: steps.iter().map(step_view).collect() })
    }

    /// Cancel a run of this server.
    pub async fn cancel(&self, run_id: &str) -> Result<RunInfo, ApiError> {
        if let Some(run) = self.manager.get(run_id) {
            match run.phase() {
                // Recorded as cancelled before the answer.
                Phase::Queued => {
                    self.manager.cancel(&run).await;
                    return Ok(info_of_live(&run));
                }
                Phase::Running => {
                    self.manager.cancel(&run).await;
                    let mut info = info_of_live(&run);
                    info.status = "cancelling".into();
                    return Ok(info);
                }
                Phase::NotStarted { .. } | Phase::Finished(_) => {
                    return Err(ApiError::Conflict(format!("run {run_id} has already ended")));
                }
            }
        }
        let Some(record) = self.store.get_run(run_id).await? else {
            return Err(ApiError::UnknownRun(run_id.to_string()));
        };
        // Driven elsewhere (a worker, another server) or queued for one: through the store.
        match self.manager.cancel_stored(&record).await? {
            CancelRequest::WasQueued => self.view(run_id).await.map(|v| v.info),
            CancelRequest::WasRunning => {
                let mut info = self.view(run_id).await?.info;
                info.status = "cancelling".into();
                Ok(info)
            }
            _ => match self.store.get_result(run_id).await? {
                Some(result) => {
                    Err(ApiError::Conflict(format!("run {run_id} has already ended ({})", result.status)))
                }
                None => Err(ApiError::Conflict(format!(
                    "run {run_id} is not running (interrupted: its driver stopped); `belt resume {run_id}` \
                     or a worker continues it"
                ))),
            },
        }
    }
}

fn step_view(s: &StepRecord) -> StepView {
    StepView {
        step: s.step.to_string(),
        tier: tier_name(&s.tier),
        model: s.reply.outcome.model.to_string(),
        output: s.reply.text.to_string(),
        input_tokens: s.reply.outcome.usage.input_tokens,
        output_tokens: s.reply.outcome.usage.output_tokens,
        cost_usd: s.reply.outcome.cost_usd,
        unpriced: s.reply.outcome.unpriced,
        finish_reason: s.reply.outcome.finish_reason.as_deref().map(String::from),
        duration_ms: s.reply.outcome.duration_ms,
        attempts: s.reply.outcome.attempts,
    }
}

fn tier_name(t: &Tier) -> String {
    serde_json::to_value(t).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

pub(crate) async fn get_run(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    Ok(Json(app.view(&run_id).await?))
}

pub(crate) async fn cancel_run(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
) -> Result<(StatusCode, Json<RunInfo>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(app.cancel(&run_id).await?)))
}

pub(crate) async fn document(
    State(app): State<AppState>,
    Path((run_id, format)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let format: belt_report::Format = format.parse().map_err(|_| {
        ApiError::NotFound(format!("no document format `{format}`; use md, html, pdf or docx"))
    })?;
    if !format.available() {
        return Err(ApiError::NotFound(format!("this server was built without {} output", format.name())));
    }
    app.manager.settle(&run_id).await;
    let Some(result) = app.store.get_result(&run_id).await? else {
        if app.manager.get(&run_id).is_some() || app.store.get_run(&run_id).await?.is_some() {
            return Err(ApiError::Conflict(format!(
                "run {run_id} has not finished; its documents exist once it has (watch {})",
                events_url(&run_id)
            )));
        }
        return Err(ApiError::UnknownRun(run_id));
    };
    let name = belt_report::file_name(&result, format.extension());
    // Rendered from the stored result, never read from a path: nothing outside the run.
    let bytes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        belt_report::render(&result, format, &mut out).map(|()| out)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("rendering the document was interrupted: {e}")))?
    .map_err(|e| ApiError::Internal(format!("cannot render the {} document: {e}", format.name())))?;
    let content_type = match format {
        belt_report::Format::Markdown => "text/markdown; charset=utf-8",
        belt_report::Format::Html => "text/html; charset=utf-8",
        belt_report::Format::Pdf => "application/pdf",
        belt_report::Format::Docx => {
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        }
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    // An HTML report is model text rendered by us; keep it from running anything anyway.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// A pattern a request can name with a task alone (the others run from workflow files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PatternInfo {
    pub name: String,
    pub description: String,
    /// For an orchestrator the serving program registered: the JSON Schema of its `args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_schema: Option<serde_json::Value>,
    /// For an orchestrator the serving program registered: its MCP tool, `orchestrate_{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<String>,
}

/// The patterns the server can run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PatternList {
    pub patterns: Vec<PatternInfo>,
}

impl PatternList {
    /// belt-app's registry, the patterns a task alone runs, then the orchestrators `app`'s
    /// program registered.
    pub fn of(app: &belt_app::App) -> PatternList {
        let library = belt_app::patterns::from_task().map(|p| PatternInfo {
            name: p.name.to_string(),
            description: p.summary.to_string(),
            args_schema: None,
            mcp_tool: None,
        });
        let registered = app.registered().into_iter().map(|r| PatternInfo {
            name: r.name.clone(),
            description: r.description.clone(),
            args_schema: Some(r.args_schema.clone()),
            mcp_tool: Some(r.tool_name()),
        });
        PatternList { patterns: library.chain(registered).collect() }
    }
}

pub(crate) async fn patterns(State(app): State<AppState>) -> Json<PatternList> {
    Json(PatternList::of(app.manager.app()))
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Health {
    pub status: String,
    pub running: usize,
    pub queued: usize,
}

pub(crate) async fn healthz(State(app): State<AppState>) -> Json<Health> {
    let (running, queued) = app.manager.load();
    let status = if app.manager.shutdown_token().is_cancelled() { "shutting_down" } else { "ok" };
    Json(Health { status: status.into(), running, queued })
}

pub(crate) async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute(format!("{method} {}", uri.path()))
}

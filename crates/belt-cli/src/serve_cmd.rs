//! `belt serve`: belt-server over this CLI's runs. The server translates HTTP into
//! [`RunRequest`]s; [`CliLauncher`] turns those into the same runs `belt run` starts, with
//! the same checks (through `run_cmd::prepare`), configuration and model choice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use belt_core::{RunHandle, RunOptions, Task};
use belt_server::{
    LaunchError, Launcher, Limits, PatternInfo, RateLimit, RunRequest, Server, ServerConfig, ServerError,
    TokenSource,
};
use belt_store::StoreSpec;
use clap::Parser;

use crate::args::{McpArgs, RunArgs, ServeArgs};
use crate::error::CliError;
use crate::run_cmd::{self, RunSpec};
use crate::workflow_cmd::WorkflowSpec;

/// The name of a workflow file sent in a request, in its diagnostics (`workflow:3:7: …`).
const REQUEST_WORKFLOW: &str = "workflow";

/// Builds runs from requests as `belt run` builds them from arguments.
pub struct CliLauncher {
    /// The model of requests that name none (chosen once at start, as `belt run` does).
    pub default_model: String,
}

/// `belt run`'s arguments alone, to parse a request's settings with the same rules.
#[derive(Parser)]
#[command(name = "belt run", no_binary_name = true)]
struct RunOnly {
    #[command(flatten)]
    args: RunArgs,
}

impl CliLauncher {
    /// The request as `belt run` arguments: the same defaults, ranges and messages.
    pub fn spec(&self, r: &RunRequest) -> Result<RunSpec, LaunchError> {
        if r.workflow.is_some() && (r.pattern.is_some() || !r.task.trim().is_empty()) {
            return Err(LaunchError::Invalid(
                "a request with a `workflow` takes its task and pattern from the file; leave `task` and \
                 `pattern` out"
                    .into(),
            ));
        }
        if r.workflow.is_none() && !r.inputs.is_empty() {
            return Err(LaunchError::Invalid(
                "`inputs` are for workflow files; leave them out with a pattern".into(),
            ));
        }
        let mut argv: Vec<String> = vec!["--quiet".into()];
        let mut opt = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                argv.push(format!("--{name}"));
                argv.push(v);
            }
        };
        opt("pattern", r.pattern.clone());
        opt("agents", r.agents.map(|v| v.to_string()));
        opt("model", Some(r.model.clone().unwrap_or_else(|| self.default_model.clone())));
        opt("worker-model", r.worker_model.clone());
        opt("synthesizer-model", r.synthesizer_model.clone());
        opt("executive-model", r.executive_model.clone());
        opt("concurrency", r.concurrency.map(|v| v.to_string()));
        opt("budget-usd", r.budget_usd.map(|v| v.to_string()));
        opt("budget-tokens", r.budget_tokens.map(|v| v.to_string()));
        opt("budget-calls", r.budget_calls.map(|v| v.to_string()));
        opt("min-success", r.min_success.map(|v| v.to_string()));
        opt("retries", r.retries.map(|v| v.to_string()));
        opt("timeout", r.timeout.map(|v| v.to_string()));
        opt("group-size", r.group_size.map(|v| v.to_string()));
        opt("synthesize", r.synthesize.clone());
        opt("seed", r.seed.map(|v| v.to_string()));
        opt("sim-latency-ms", r.sim_latency_ms.map(|v| v.to_string()));
        if r.review_plan == Some(true) {
            argv.push("--review-plan".into());
        }
        if r.workflow.is_some() {
            // The file's text comes with the request: this path is only a name for it.
            argv.push("--file".into());
            argv.push(REQUEST_WORKFLOW.into());
        } else {
            // After `--`, a task that starts with `-` is still the task.
            argv.push("--".into());
            argv.push(r.task.clone());
        }
        let parsed = RunOnly::try_parse_from(argv).map_err(|e| {
            // clap names the flag (`--agents <AGENTS>`); the JSON field is the same word.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid request").trim_start_matches("error: ");
            LaunchError::Invalid(first.replace("'--", "'").replace('-', "_").replace("'_", "'"))
        })?;
        match &r.workflow {
            Some(text) => {
                let workflow = WorkflowSpec {
                    origin: REQUEST_WORKFLOW.into(),
                    format: belt_workflow::Format::sniff(text),
                    text: text.clone(),
                    inputs: r.inputs.clone(),
                };
                crate::workflow_cmd::spec(parsed.args, workflow).map_err(invalid)
            }
            None => Ok(RunSpec { args: parsed.args, plan: None, workflow: None }),
        }
    }
}

fn invalid(e: CliError) -> LaunchError {
    LaunchError::Invalid(e.to_string())
}

#[async_trait]
impl Launcher for CliLauncher {
    fn check(&self, request: &RunRequest) -> Result<(), LaunchError> {
        run_cmd::prepare(&self.spec(request)?).map(|_| ()).map_err(invalid)
    }

    async fn launch(&self, request: &RunRequest, base: RunOptions) -> Result<RunHandle, LaunchError> {
        let spec = self.spec(request)?;
        let prepared = run_cmd::prepare(&spec).map_err(invalid)?;
        let mut options = prepared.options;
        // What the server decides: id, store, lease owner, live deltas, the human channel.
        options.run_id = base.run_id;
        options.store = base.store;
        options.owner = base.owner;
        options.stream_deltas = base.stream_deltas;
        options.human = base.human.or(options.human);
        belt_core::run(prepared.orchestrator, Task::new(spec.args.task.trim()), options)
            .await
            .map_err(|e| LaunchError::Invalid(e.to_string()))
    }

    fn patterns(&self) -> Vec<PatternInfo> {
        belt_core::patterns::CATALOG
            .iter()
            .filter(|p| p.from_task)
            .map(|p| PatternInfo { name: p.name.to_string(), description: p.summary.to_string() })
            .collect()
    }
}

/// The launcher with the model `belt run` would choose now.
pub async fn launcher(model: Option<&str>) -> CliLauncher {
    let choice = crate::models::choose(model, &belt_llm::process_env).await;
    CliLauncher { default_model: choice.model() }
}

/// Where a generated token is kept.
pub fn token_file() -> PathBuf {
    belt_store::belt_home().join("api-token")
}

/// `belt serve`.
pub async fn serve(args: ServeArgs, store: &StoreSpec) -> Result<i32, CliError> {
    let addr: SocketAddr = args.addr.parse().map_err(|e| {
        CliError::Usage(format!(
            "--addr `{}` is not an address ({e}); use IP:PORT, e.g. 127.0.0.1:7700",
            args.addr
        ))
    })?;
    let explicit = std::env::var("BELT_API_TOKEN").ok().filter(|t| !t.trim().is_empty());
    if !addr.ip().is_loopback() && explicit.is_none() {
        return Err(CliError::Usage(ServerError::TokenRequired { addr: addr.to_string() }.to_string()));
    }
    let file = token_file();
    let (token, source) =
        belt_server::resolve_token(explicit.as_deref(), &file).map_err(|e| CliError::Usage(e.to_string()))?;
    let store = run_cmd::open_store(store).await?;
    let launcher = launcher(args.model.as_deref()).await;
    let mut config = ServerConfig::new(token.clone());
    config.owner = crate::owner::this_process();
    config.limits = Limits { max_running: args.max_runs.max(1), max_queued: args.max_queued };
    config.rate_limit =
        RateLimit { per_second: args.rate_limit, burst: (args.rate_limit * 4.0).ceil().max(1.0) as u32 };
    let model = launcher.default_model.clone();
    let server = Server::new(config, Arc::new(launcher), store);
    let secret = std::env::var("BELT_WEBHOOK_SECRET").ok().filter(|s| !s.is_empty());
    for url in &args.webhooks {
        let spec =
            belt_server::webhooks::WebhookSpec { url: url.clone(), secret: secret.clone(), events: None };
        let info = server.add_webhook(spec).map_err(|e| CliError::Usage(format!("--webhook {url}: {e}")))?;
        if let Some(generated) = info.secret {
            eprintln!(
                "belt: webhook {url}: signing secret (shown once; set BELT_WEBHOOK_SECRET to choose it): {generated}"
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Usage(ServerError::Bind { addr: addr.to_string(), source: e }.to_string()))?;
    let local =
        listener.local_addr().map_err(|e| CliError::Usage(format!("cannot read the bound address: {e}")))?;
    eprintln!(
        "belt: serving on http://{local} (dashboard /, API /v1, OpenAPI /openapi.json); default model {model}"
    );
    match source {
        TokenSource::Generated => {
            eprintln!("belt: API token (shown once; kept in {}): {token}", file.display())
        }
        TokenSource::File => eprintln!("belt: API token in {}", file.display()),
        TokenSource::Given => eprintln!("belt: API token from BELT_API_TOKEN"),
    }
    server.serve(listener, shutdown_signal()).await.map_err(|e| CliError::Usage(e.to_string()))?;
    eprintln!(
        "belt: stopped; cancelled runs keep their completed steps (`belt resume RUN_ID` continues one)"
    );
    Ok(0)
}

/// `belt mcp`: MCP on stdin/stdout until the client closes it. Runs go to the store like
/// any other; stdout carries only the protocol.
pub async fn mcp(args: McpArgs, store: &StoreSpec) -> Result<i32, CliError> {
    let store = run_cmd::open_store(store).await?;
    let launcher = launcher(args.model.as_deref()).await;
    // No HTTP here: the token guards nothing, but the server wants one.
    let mut config = ServerConfig::new(uuid_like());
    config.owner = crate::owner::this_process();
    config.limits = Limits { max_running: args.max_runs.max(1), max_queued: 64 };
    eprintln!("belt: MCP server on stdio; default model {}", launcher.default_model);
    let server = Server::new(config, Arc::new(launcher), store);
    server.serve_stdio().await.map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(0)
}

fn uuid_like() -> String {
    format!("stdio-{}-{}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    eprintln!("belt: shutting down: no new requests; cancelling runs");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launcher() -> CliLauncher {
        CliLauncher { default_model: "simulated/default".into() }
    }

    #[test]
    fn requests_become_run_arguments_with_the_cli_defaults() {
        let mut r = RunRequest::new("-starts with a dash");
        r.agents = Some(12);
        r.budget_usd = Some(0.5);
        let spec = launcher().spec(&r).unwrap();
        assert_eq!(spec.args.task, "-starts with a dash");
        assert_eq!(spec.args.agents, 12);
        assert_eq!(spec.args.budget_usd, Some(0.5));
        assert_eq!(spec.args.model.as_deref(), Some("simulated/default"));
        assert_eq!(spec.args.concurrency, 16);
        assert_eq!(spec.args.pattern, "cascade");
    }

    #[test]
    fn bad_requests_are_refused_with_the_field_named() {
        let l = launcher();
        let mut r = RunRequest::new("x");
        r.group_size = Some(1);
        let e = l.check(&r).unwrap_err().to_string();
        assert!(e.contains("group_size"), "{e}");
        let mut r = RunRequest::new("x");
        r.pattern = Some("nope".into());
        assert!(l.check(&r).unwrap_err().to_string().contains("unknown pattern"));
        let mut r = RunRequest::new("x");
        r.model = Some("nope/model".into());
        assert!(l.check(&r).is_err());
        assert!(l.check(&RunRequest::new("  ")).unwrap_err().to_string().contains("task is empty"));
        let mut r = RunRequest::new("x");
        r.workflow = Some("[workflow]".into());
        assert!(l.check(&r).unwrap_err().to_string().contains("workflow"));
        assert!(l.check(&RunRequest::new("fine")).is_ok());
        assert!(l.patterns().iter().any(|p| p.name == "cascade"));
    }
}

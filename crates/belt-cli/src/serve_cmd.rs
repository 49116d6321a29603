//! `belt serve` and `belt mcp`: belt-server over belt-app. The server deserializes requests
//! into [`belt_app::RunSpec`]s and belt-app prepares them, as it prepares `belt run`'s: the
//! same checks, configuration and model choice.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use belt_app::App;
use belt_server::{Limits, RateLimit, Server, ServerConfig, ServerError, TokenSource};
use belt_store::StoreSpec;

use crate::args::{McpArgs, ServeArgs};
use crate::error::CliError;
use crate::run_cmd;

/// Where a generated token is kept.
pub fn token_file(home: &Path) -> PathBuf {
    home.join("api-token")
}

/// `belt serve`.
pub async fn serve(args: ServeArgs, store: &StoreSpec, app: Arc<App>, home: &Path) -> Result<i32, CliError> {
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
    let file = token_file(home);
    let (token, source) =
        belt_server::resolve_token(explicit.as_deref(), &file).map_err(|e| CliError::Usage(e.to_string()))?;
    let store = run_cmd::open_store(store).await?;
    app.share_through(&*store);
    let model = app.choose_model(args.model.as_deref()).await.model();
    let mut config = ServerConfig::new(token.clone());
    config.defaults.model = Some(model.clone());
    config.owner = crate::owner::this_process();
    config.limits = Limits { max_running: args.max_runs.max(1), max_queued: args.max_queued };
    config.mcp_allowed_hosts.extend(args.allowed_hosts.iter().cloned());
    // Reached by its own address, the server must accept that Host on /mcp.
    if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
        config.mcp_allowed_hosts.push(addr.ip().to_string());
    }
    config.cors_origins = args.cors_origins.clone();
    config.webhook_private_targets = args.allow_private_webhooks;
    config.execute = !args.no_execute;
    if !(args.rate_limit.is_finite() && args.rate_limit > 0.0 && args.rate_limit <= 1e6) {
        return Err(CliError::Usage(format!(
            "--rate-limit must be a number of requests per second from above 0 to 1000000, got {}",
            args.rate_limit
        )));
    }
    config.rate_limit =
        RateLimit { per_second: args.rate_limit, burst: (args.rate_limit * 4.0).ceil().max(1.0) as u32 };
    let observers = crate::otel::observers(&store);
    let server = Server::with_observers(config, app, store, observers);
    // Metrics over OTLP are the server's: every run's, with its queue and budget pools.
    crate::otel::metrics_from(server.metrics_source());
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
    // Runs accepted by a server that stopped before starting them start here, in order.
    let restored = server.restore_queued().await?;
    if restored > 0 {
        let runs = belt_report::words::count(restored as u64, "queued run");
        eprintln!("belt: {runs} from the store taken up; they start as slots free");
    }
    eprintln!(
        "belt: serving on http://{local} (dashboard /, API /v1, OpenAPI /openapi.json); default model {model}{}",
        if args.no_execute { "; runs are queued for `belt worker`s on the store" } else { "" }
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
        "belt: stopped; cancelled runs keep their completed steps (`belt resume RUN_ID` continues one); \
         queued runs stay queued for the next `belt serve` on this store"
    );
    Ok(0)
}

/// `belt mcp`: MCP on stdin/stdout until the client closes it. Runs go to the store like
/// any other; stdout carries only the protocol.
pub async fn mcp(args: McpArgs, store: &StoreSpec, app: Arc<App>) -> Result<i32, CliError> {
    let store = run_cmd::open_store(store).await?;
    app.share_through(&*store);
    let model = app.choose_model(args.model.as_deref()).await.model();
    // No HTTP here: the token guards nothing, but the server wants one.
    let mut config = ServerConfig::new(uuid_like());
    config.owner = crate::owner::this_process();
    config.limits = Limits { max_running: args.max_runs.max(1), max_queued: 64 };
    eprintln!("belt: MCP server on stdio; default model {model}");
    config.defaults.model = Some(model);
    let server = Server::new(config, app, store);
    server.serve_stdio().await.map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(0)
}

fn uuid_like() -> String {
    format!("stdio-{}-{}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    crate::signals::Signals::new().next().await;
    eprintln!("belt: shutting down: no new requests; cancelling runs");
}

//! belt-server: belt over the network. An HTTP API (axum) to start runs, follow their
//! events as Server-Sent Events, cancel them and fetch their reports.
//!
//! The server only translates: a request body (and an MCP tool's arguments) deserializes
//! into belt-app's [`RunSpec`], which [`belt_app::App::prepare`] checks and turns into a run
//! exactly as it does for `belt run` — the same defaults, checks and messages.
//!
//! - Runs are recorded in the [`RunStore`]; runs started before a restart are still listed,
//!   shown and streamed (from the store).
//! - `Authorization: Bearer TOKEN` on every route but `/healthz`; a per-token rate limit;
//!   a cap on running runs with a bounded queue (429 with `Retry-After` when full); 1 MiB
//!   bodies; errors as `{"error": {"code", "message"}}`.
//! - [`Server::serve`] shuts down gracefully: it stops accepting, cancels the runs (their
//!   completed steps stay recorded; `belt resume` continues them) and ends event streams.
//!
//! ```no_run
//! use std::sync::Arc;
//! use belt_server::{Server, ServerConfig};
//! # async fn example() -> Result<(), belt_server::ServerError> {
//! let app = Arc::new(belt_app::App::new(belt_app::Config::default()));
//! let store = Arc::new(belt_core::MemoryStore::new());
//! let server = Server::new(ServerConfig::new("secret-token"), app, store);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7700").await?;
//! server.serve(listener, async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ```text
//! curl -H "Authorization: Bearer $TOKEN" -d '{"task": "Plan a city park", "agents": 12}' \
//!      -H 'Content-Type: application/json' http://127.0.0.1:7700/v1/runs
//! curl -N -H "Authorization: Bearer $TOKEN" http://127.0.0.1:7700/v1/runs/$RUN/events
//! ```

mod api;
pub mod approvals;
pub mod auth;
mod dashboard;
pub mod egress;
mod error;
pub mod manager;
pub mod mcp;
pub mod metrics;
pub mod openapi;
mod sse;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use belt_core::store::RunStore;

pub use api::{Accepted, Health, PatternInfo, PatternList, RunInfo, RunList, RunView, STATUSES, StepView};
pub use auth::{RateLimit, TokenSource, resolve_token, token_matches};
pub use belt_app::RunSpec;
pub use error::{ApiError, ServerError};
pub use manager::{EventObserver, Limits, RunManager};

/// The largest request body accepted by default.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The bearer token every request but `/healthz` must carry.
    pub token: String,
    pub max_body_bytes: usize,
    pub rate_limit: RateLimit,
    pub limits: Limits,
    /// Interval of the SSE heartbeat comment.
    pub heartbeat: Duration,
    /// Who drives this server's runs, as recorded in their leases.
    pub owner: String,
    /// How long shutdown waits for cancelled runs to be recorded.
    pub shutdown_grace: Duration,
    /// `Host` values `/mcp` accepts (DNS-rebinding protection); loopback names by default.
    /// A server reached by another name must list it.
    pub mcp_allowed_hosts: Vec<String>,
    pub webhook_retry: webhooks::RetryPolicy,
    /// Let webhooks target loopback, private and link-local addresses (refused by default:
    /// see [`egress`]).
    pub webhook_private_targets: bool,
    /// Browser origins (`https://app.example.com`) allowed to call the API from their pages.
    /// Empty (the default): no CORS headers, so other sites' scripts cannot read responses.
    pub cors_origins: Vec<String>,
    /// What a request leaves out, it takes from here (`belt serve --model` sets `model`).
    pub defaults: RunSpec,
    /// Runs stream their agents' text as `step_delta` events, for live views (default on).
    pub stream_deltas: bool,
    /// Drive runs here (the default). Off (`belt serve --no-execute`), the server is a
    /// stateless API node over a shared store: it records runs as queued for `belt worker`s,
    /// serves any run's state, documents and events from the store, and asks for
    /// cancellation through it.
    pub execute: bool,
}

impl ServerConfig {
    pub fn new(token: impl Into<String>) -> Self {
        ServerConfig {
            token: token.into(),
            max_body_bytes: MAX_BODY_BYTES,
            rate_limit: RateLimit::default(),
            limits: Limits::default(),
            heartbeat: Duration::from_secs(15),
            owner: format!("belt-serve:{}:{}", std::process::id(), uuid::Uuid::now_v7()),
            shutdown_grace: Duration::from_secs(10),
            mcp_allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            webhook_retry: webhooks::RetryPolicy::default(),
            webhook_private_targets: false,
            cors_origins: Vec::new(),
            defaults: RunSpec::default(),
            stream_deltas: true,
            execute: true,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) manager: Arc<RunManager>,
    pub(crate) store: Arc<dyn RunStore>,
    pub(crate) limiter: Arc<auth::RateLimiter>,
    pub(crate) webhooks: Arc<webhooks::Webhooks>,
    pub(crate) metrics: Arc<metrics::ServerMetrics>,
}

/// An HTTP server over belt-app and a store.
pub struct Server {
    state: AppState,
}

impl Server {
    /// A server. Call it within a tokio runtime.
    pub fn new(config: ServerConfig, app: Arc<belt_app::App>, store: Arc<dyn RunStore>) -> Self {
        Server::with_observers(config, app, store, Vec::new())
    }

    /// A server whose runs' events also go to `observers` (an OpenTelemetry exporter).
    pub fn with_observers(
        config: ServerConfig,
        app: Arc<belt_app::App>,
        store: Arc<dyn RunStore>,
        observers: Vec<Arc<dyn EventObserver>>,
    ) -> Self {
        let webhooks = webhooks::Webhooks::new(config.webhook_retry, config.webhook_private_targets);
        let metrics = Arc::new(metrics::ServerMetrics::default());
        let mut observers = observers;
        observers.extend([metrics.clone() as Arc<dyn EventObserver>, webhooks.clone()]);
        let manager = RunManager::new(app, store.clone(), &config, observers);
        let limiter = Arc::new(auth::RateLimiter::new(config.rate_limit));
        Server { state: AppState { config: Arc::new(config), manager, store, limiter, webhooks, metrics } }
    }

    /// Every metric `/metrics` shows, as values, read each time the returned function is
    /// called: what an OTLP metrics exporter sends (`belt_otel::Exporter::metrics_from`).
    #[allow(clippy::type_complexity)]
    pub fn metrics_source(
        &self,
    ) -> Arc<
        dyn Fn()
                -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<belt_core::metrics::Metric>> + Send>>
            + Send
            + Sync,
    > {
        let state = self.state.clone();
        Arc::new(move || {
            let state = state.clone();
            Box::pin(async move { metrics::snapshot(&state).await })
        })
    }

    /// Register an orchestrator of this program as the pattern `name` of the HTTP API
    /// (`POST /v1/runs` with `"pattern": name` and its `args`) and as its own MCP tool,
    /// `orchestrate_{name}`: see [`belt_app::App::register`], which this calls on the
    /// server's application. Register before serving: an MCP session lists the tools
    /// registered when it began.
    pub fn register<A, F>(&self, name: &str, description: &str, factory: F) -> Result<(), belt_app::AppError>
    where
        A: serde::de::DeserializeOwned + schemars::JsonSchema,
        F: Fn(A, &belt_app::patterns::Team) -> Result<Arc<dyn belt_core::Orchestrator>, String>
            + Send
            + Sync
            + 'static,
    {
        self.state.manager.app().register(name, description, factory)
    }

    /// Register a webhook (as from configuration); `POST /v1/webhooks` does the same.
    pub fn add_webhook(&self, spec: webhooks::WebhookSpec) -> Result<webhooks::WebhookInfo, ApiError> {
        self.state.webhooks.add(spec)
    }

    /// Take up the runs the store holds as queued (see [`RunManager::restore_queued`]);
    /// `belt serve` does this before it serves.
    pub async fn restore_queued(&self) -> Result<usize, belt_core::store::StoreError> {
        self.state.manager.restore_queued().await
    }

    /// The runs this server drives.
    pub fn manager(&self) -> &Arc<RunManager> {
        &self.state.manager
    }

    /// The routes, with authentication and limits.
    pub fn router(&self) -> Router {
        let s = self.state.clone();
        let protected = Router::new()
            .route("/openapi.json", get(openapi_json))
            .route("/v1/runs", post(api::create_run).get(api::list_runs))
            .route("/v1/runs/{id}", get(api::get_run))
            .route("/v1/runs/{id}/cancel", post(api::cancel_run))
            .route("/v1/runs/{id}/events", get(sse::events))
            .route("/v1/runs/{id}/documents/{format}", get(api::document))
            .route("/v1/patterns", get(api::patterns))
            .route("/v1/approvals", get(approvals::list))
            .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
            .route("/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
            .route("/metrics", get(metrics::metrics))
            .route("/v1/runs/{id}/approvals/{request_id}", post(approvals::answer))
            .nest_service("/mcp", self.mcp_http())
            .route_layer(axum::middleware::from_fn_with_state(s.clone(), auth::require_token))
            .layer(axum::middleware::from_fn(mcp_session_end));
        let router = Router::new()
            .route("/healthz", get(api::healthz))
            .route("/", get(dashboard::index))
            .route("/dashboard.js", get(dashboard::script))
            .route("/dashboard.css", get(dashboard::style))
            .route("/favicon.ico", get(dashboard::favicon))
            .merge(protected)
            .fallback(api::no_route)
            .layer(DefaultBodyLimit::max(s.config.max_body_bytes));
        let router = match cors(&s.config.cors_origins) {
            Some(layer) => router.layer(layer),
            None => router,
        };
        router.with_state(s)
    }

    /// The MCP service over this server's runs (for stdio, or any rmcp transport).
    pub fn mcp(&self) -> mcp::BeltMcp {
        mcp::BeltMcp::new(self.state.clone())
    }

    /// `/mcp`: MCP over streamable HTTP, stateful sessions, Host checked.
    fn mcp_http(
        &self,
    ) -> rmcp::transport::streamable_http_server::StreamableHttpService<
        mcp::BeltMcp,
        rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
    > {
        use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
        let state = self.state.clone();
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(self.state.config.mcp_allowed_hosts.clone())
            // A browser page of another site must not drive a local server (DNS rebinding
            // aside, its Origin says where it comes from): only the server's own names and
            // the configured CORS origins.
            .with_allowed_origins(mcp_origins(&self.state.config))
            .enforce_origin_validation()
            .with_sse_keep_alive(Some(self.state.config.heartbeat))
            .with_max_request_body_bytes(self.state.config.max_body_bytes)
            .with_cancellation_token(self.state.manager.shutdown_token().child_token());
        StreamableHttpService::new(move || Ok(mcp::BeltMcp::new(state.clone())), Default::default(), config)
    }

    /// Serve MCP on stdin/stdout until the client closes it, then cancel what still runs.
    pub async fn serve_stdio(self) -> Result<(), ServerError> {
        use rmcp::ServiceExt;
        let service =
            self.mcp().serve(rmcp::transport::stdio()).await.map_err(|e| ServerError::Mcp(e.to_string()))?;
        let outcome = service.waiting().await;
        self.state.manager.shutdown(self.state.config.shutdown_grace).await;
        outcome.map(|_| ()).map_err(|e| ServerError::Mcp(e.to_string()))
    }

    /// Serve on `listener` until `shutdown` completes, then shut down gracefully: stop
    /// accepting, cancel every run and wait for it to be recorded, end event streams.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let manager = self.state.manager.clone();
        let grace = self.state.config.shutdown_grace;
        let stopping = manager.clone();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Refuse new runs, cancel the running ones and end event streams, so that
                // open connections close and the listener stops accepting at once.
                stopping.begin_shutdown();
            })
            .await?;
        // Then wait for the cancelled runs to be recorded.
        manager.shutdown(grace).await;
        Ok(())
    }
}

/// rmcp answers a session's DELETE with 202 Accepted; clients take only 200 or 204 as a
/// session ended (the Python SDK logs "Session termination failed: 202"). The session is
/// gone when rmcp answers, so 204 No Content says what happened.
async fn mcp_session_end(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let ending = req.method() == axum::http::Method::DELETE && req.uri().path().starts_with("/mcp");
    let mut response = next.run(req).await;
    if ending && response.status() == axum::http::StatusCode::ACCEPTED {
        *response.status_mut() = axum::http::StatusCode::NO_CONTENT;
    }
    response
}

/// The `Origin`s `/mcp` accepts: pages served by one of the server's own names (any port,
/// http or https) and the CORS origins. Requests without an `Origin` (non-browser clients)
/// are not affected.
fn mcp_origins(config: &ServerConfig) -> Vec<String> {
    let mut origins = Vec::new();
    for host in &config.mcp_allowed_hosts {
        // `name`, `name:port`, an IPv6 address bare or in brackets.
        let authority = match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]:*"),
            Err(_) if host.contains(':') => host.clone(),
            Err(_) => format!("{host}:*"),
        };
        origins.push(format!("http://{authority}"));
        origins.push(format!("https://{authority}"));
    }
    origins.extend(config.cors_origins.iter().cloned());
    origins
}

/// CORS for the configured origins only (preflights are answered before authentication,
/// as browsers send them without credentials).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    let origins: Vec<HeaderValue> =
        origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER, header::LOCATION]),
    )
}

async fn openapi_json(State(_): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document(openapi::ROUTES, Vec::new()))
}

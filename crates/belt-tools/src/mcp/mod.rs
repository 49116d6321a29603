//! The tools of any MCP server as [`belt_core::Tool`]s: start (or connect to) a server,
//! list its tools, and hand them to an agent loop ([`belt_core::Ctx::llm_with_tools`]),
//! which runs their calls under the engine's policies (timeouts, retries where safe,
//! events, the journal).
//!
//! - [`McpServerSpec`]: how to reach a server — a command speaking MCP on stdio, or a
//!   Streamable HTTP URL — the shape of belt.toml's `[mcp.NAME]`, a workflow's
//!   `mcp_servers:` and `--mcp NAME=…`;
//! - [`McpServer::start`]: spawn or connect, `initialize`, list the tools, all within the
//!   spec's `startup_timeout`; an [`McpError`] says what went wrong and what to do;
//! - [`McpServer::tools`]: one [`Tool`] per MCP tool, named `{server}_{tool}` (sanitized,
//!   unique, at most 64 characters); [`McpServer::catalog`] lists them with their original
//!   names and [`McpServer::skipped`] the tools left out (a parameter schema that is not an
//!   object schema) and why.
//!
//! A call checks its arguments against the tool's schema before sending anything. The
//! result's text is what the model reads (images and other content described in a few
//! words, at most 256 KiB); a result marked `isError`, a refusal, a timeout or a server
//! that died all come back as an [`EffectError`] the model can read — never a panic. Tools
//! the server marks `idempotentHint` or `readOnlyHint` are [`Tool::idempotent`], so the
//! engine may repeat them.
//!
//! A server that dies is restarted once, on the call after the one that found it dead (that
//! call's error says so): servers do crash now and then, and a run of many steps should not
//! lose its tools for the rest of it; one that dies again stays down, so a server that
//! crashes on some input is not started over and over. Its tool list is not read again.
//!
//! The process of a stdio server lives as long as the [`McpServer`] or any of its tools;
//! [`McpServer::shutdown`] stops it gracefully (stdin closed, then SIGTERM, then SIGKILL).
//!
//! ```no_run
//! use belt_core::Tools;
//! use belt_tools::mcp::{McpServer, McpServerSpec};
//!
//! # async fn example() -> Result<(), belt_tools::mcp::McpError> {
//! let (name, spec) = McpServerSpec::parse_cli("everything=npx -y @modelcontextprotocol/server-everything")?;
//! let server = McpServer::start(&name, &spec).await?;
//! // What `belt mcp tools NAME` lists: the model's name, the server's, what it does.
//! let listed: Vec<(String, String, String)> =
//!     server.catalog().into_iter().map(|e| (e.model_name, e.original_name, e.description)).collect();
//! assert!(listed.iter().any(|(model, _, _)| model == "everything_echo"));
//! let tools = server.tools().into_iter().fold(Tools::new(), Tools::with);
//! // … ctx.llm_with_tools(step, request, &tools) in a flow …
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod call;
mod catalog;
mod connect;
mod error;
mod spec;

use std::sync::Arc;

use belt_core::{EffectError, Tool, ToolOutput};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientRequest, CustomRequest, CustomResult, ServerResult,
};
use rmcp::service::ServiceError;
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

pub use catalog::{CatalogEntry, Skipped};
pub use error::McpError;
pub use spec::McpServerSpec;

use catalog::{MAX_TOOLS, Prepared};
use connect::{Child, Connection, Service, chain};

/// A started MCP server and its tools.
pub struct McpServer {
    shared: Arc<Shared>,
    tools: Vec<Prepared>,
    skipped: Vec<Skipped>,
    protocol_version: String,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.shared.name)
            .field("spec", &self.shared.spec)
            .field("tools", &self.tools.len())
            .finish_non_exhaustive()
    }
}

/// What the server's tools share: how to reach it, and its connection.
struct Shared {
    name: String,
    spec: McpServerSpec,
    state: tokio::sync::Mutex<State>,
}

struct State {
    conn: Option<Arc<Connection>>,
    /// Why there is no connection (it died, it was shut down), as calls report it.
    down: String,
    restarts_left: u32,
    shut_down: bool,
}

impl McpServer {
    /// Spawn (stdio) or connect to (HTTP) the server `name`, `initialize`, and list its
    /// tools, all within `spec`'s `startup_timeout`.
    pub async fn start(name: &str, spec: &McpServerSpec) -> Result<McpServer, McpError> {
        spec.check(name)?;
        let deadline = Instant::now() + spec.startup_limit();
        let conn = open(name, spec, deadline).await?;
        let listed = match timeout_at(deadline, list_tools(name, &conn.service)).await {
            Ok(listed) => listed,
            Err(_) => Err(timed_out(name, spec, "listing its tools", conn.child.as_ref())),
        };
        let raw = match listed {
            Ok(raw) => raw,
            Err(e) => {
                conn.shutdown().await;
                return Err(e);
            }
        };
        let protocol_version =
            conn.service.peer().peer_info().map(|info| info.protocol_version.to_string()).unwrap_or_default();
        let (tools, skipped) = catalog::prepare(name, raw);
        for skip in &skipped {
            tracing::warn!(server = name, tool = %skip.original_name, "MCP tool left out: {}", skip.reason);
        }
        let state =
            State { conn: Some(Arc::new(conn)), down: String::new(), restarts_left: 1, shut_down: false };
        let shared =
            Arc::new(Shared { name: name.into(), spec: spec.clone(), state: tokio::sync::Mutex::new(state) });
        Ok(McpServer { shared, tools, skipped, protocol_version })
    }

    /// The server's name (the prefix of its tools' names).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The MCP revision the server chose (`2025-06-18`, say).
    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// Its tools, ready for a [`belt_core::Tools`] set.
    pub fn tools(&self) -> Vec<Tool> {
        self.tools.iter().map(|p| self.tool(p)).collect()
    }

    fn tool(&self, prepared: &Prepared) -> Tool {
        let entry = &prepared.entry;
        let (shared, original, validator) =
            (self.shared.clone(), Arc::<str>::from(entry.original_name.as_str()), prepared.validator.clone());
        let handler = move |arguments: Value| {
            let (shared, original, validator) = (shared.clone(), original.clone(), validator.clone());
            async move { shared.call(&original, &validator, arguments).await }
        };
        let mut tool = Tool::dynamic(&entry.model_name, &entry.description, entry.schema.clone(), handler);
        // The server's own `timeout` wins; else the run's tool timeout governs (the call
        // itself still stops at the default, for a caller outside the engine).
        if let Some(secs) = self.shared.spec.timeout {
            tool = tool.timeout(std::time::Duration::from_secs(secs));
        }
        if entry.idempotent { tool.idempotent() } else { tool }
    }

    /// Its tools as the model sees them, with their names on the server (for
    /// `belt mcp tools NAME`), in the order of those names.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        self.tools.iter().map(|p| p.entry.clone()).collect()
    }

    /// The server's tools that are not offered to the model, and why.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Stop the server: close the transport, give the process two seconds to exit, then
    /// SIGTERM, then SIGKILL. Its tools fail from then on, saying so. A call still running
    /// keeps the connection until it ends, and the process is killed then.
    pub async fn shutdown(self) {
        let conn = {
            let mut state = self.shared.state.lock().await;
            state.shut_down = true;
            state.conn.take()
        };
        if let Some(conn) = conn.and_then(|c| Arc::try_unwrap(c).ok()) {
            conn.shutdown().await;
        }
    }
}

/// Spawn or connect and `initialize`, by `deadline`.
async fn open(name: &str, spec: &McpServerSpec, deadline: Instant) -> Result<Connection, McpError> {
    let mut child = None;
    match timeout_at(deadline, connect::connect(name, spec, &mut child)).await {
        Ok(Ok(service)) => Ok(Connection { service, child }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(timed_out(name, spec, "waiting for its answer to `initialize`", child.as_ref())),
    }
}

fn timed_out(name: &str, spec: &McpServerSpec, phase: &'static str, child: Option<&Child>) -> McpError {
    let secs = spec.startup_limit().as_secs();
    McpError::StartupTimeout {
        server: name.into(),
        secs,
        phase,
        output: child.map(Child::output).unwrap_or_default(),
    }
}

/// The raw tool descriptions of every `tools/list` page (at most [`MAX_TOOLS`]). Raw, so
/// that one tool rmcp cannot read (a schema that is not an object) is left out alone
/// instead of failing the whole list.
async fn list_tools(name: &str, service: &Service) -> Result<Vec<Value>, McpError> {
    let not_mcp = |detail: String| McpError::NotMcp { server: name.into(), detail };
    if service.peer().peer_info().is_some_and(|info| info.capabilities.tools.is_none()) {
        return Ok(Vec::new());
    }
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = cursor.take().map(|c| serde_json::json!({ "cursor": c }));
        let request = ClientRequest::CustomRequest(CustomRequest::new("tools/list", params));
        let answer = service
            .peer()
            .send_request(request)
            .await
            .map_err(|e| not_mcp(format!("listing its tools (`tools/list`) failed: {}", chain(&e))))?;
        let page = match answer {
            ServerResult::CustomResult(CustomResult(value)) => value,
            other => serde_json::to_value(other)
                .map_err(|e| not_mcp(format!("its tool list is unreadable: {e}")))?,
        };
        let Some(Value::Array(listed)) = page.get("tools") else {
            return Err(not_mcp("its answer to `tools/list` has no `tools` list".into()));
        };
        let room = MAX_TOOLS - tools.len();
        if listed.len() > room {
            tracing::warn!(
                server = name,
                "the MCP server lists more than {MAX_TOOLS} tools; the rest are left out"
            );
        }
        tools.extend(listed.iter().take(room).cloned());
        cursor = page.get("nextCursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(String::from);
        if cursor.is_none() || tools.len() >= MAX_TOOLS {
            return Ok(tools);
        }
    }
}

impl Shared {
    async fn call(
        &self,
        tool: &str,
        validator: &jsonschema::Validator,
        arguments: Value,
    ) -> Result<ToolOutput, EffectError> {
        let arguments = call::check_arguments(validator, arguments).map_err(EffectError::new)?;
        let conn = self.connection().await?;
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let limit = self.spec.call_timeout();
        let answer = tokio::time::timeout(limit, conn.service.peer().call_tool_once(params)).await;
        let name = &self.name;
        match answer {
            Err(_) => Err(EffectError::new(format!(
                "the MCP server `{name}` did not answer the call of `{tool}` within {} s",
                limit.as_secs()
            ))),
            Ok(Ok(CallToolResponse::Complete(result))) => {
                let text = call::render(&result);
                match result.is_error {
                    Some(true) if text.is_empty() => {
                        Err(EffectError::new(format!("`{tool}` failed (no message)")))
                    }
                    Some(true) => Err(EffectError::new(text)),
                    _ => Ok(ToolOutput::new(text)),
                }
            }
            Ok(Ok(_)) => Err(EffectError::new(format!(
                "the MCP server `{name}` asked for more input or started a background task for `{tool}`, which \
                 belt does not support"
            ))),
            Ok(Err(ServiceError::McpError(e))) => Err(EffectError::new(format!(
                "the MCP server `{name}` refused the call of `{tool}`: {}",
                e.message
            ))),
            Ok(Err(e)) => Err(self.died(&conn, &e).await),
        }
    }

    /// The live connection: the current one, or a restarted one if the last call found the
    /// server dead and it has a restart left.
    async fn connection(&self) -> Result<Arc<Connection>, EffectError> {
        let mut state = self.state.lock().await;
        if state.shut_down {
            return Err(EffectError::new(format!("the MCP server `{}` was shut down", self.name)));
        }
        if let Some(conn) = state.conn.take() {
            if conn.alive() {
                state.conn = Some(conn.clone());
                return Ok(conn);
            }
            // Found dead before anything was sent: trying again is safe.
            let why = conn.death().await;
            return Err(self.went_down(&mut state, why, true));
        }
        if state.restarts_left == 0 {
            return Err(EffectError::new(state.down.clone()));
        }
        state.restarts_left -= 1;
        tracing::warn!(server = %self.name, "restarting the MCP server");
        match open(&self.name, &self.spec, Instant::now() + self.spec.startup_limit()).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                state.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                state.down = format!("{e} (belt tried to restart it once; it is not tried again)");
                Err(EffectError::new(state.down.clone()))
            }
        }
    }

    /// The connection failed under a call: say why, and mark the server down unless a
    /// concurrent call already did (and maybe restarted it).
    async fn died(&self, conn: &Arc<Connection>, error: &ServiceError) -> EffectError {
        let mut why = conn.death().await;
        if conn.child.is_none() {
            why = format!("{why}: {}", chain(error));
        }
        // A request that could not be written was not received.
        let not_sent = matches!(error, ServiceError::TransportSend(_));
        let mut state = self.state.lock().await;
        if state.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            state.conn = None;
            return self.went_down(&mut state, why, not_sent);
        }
        let message = format!("the MCP server `{}` {why}", self.name);
        if not_sent { EffectError::transient(message) } else { EffectError::new(message) }
    }

    fn went_down(&self, state: &mut State, why: String, not_sent: bool) -> EffectError {
        let then = if state.restarts_left > 0 {
            "belt restarts it on the next call (once)"
        } else {
            "it was restarted once already and is not restarted again"
        };
        state.down = format!("the MCP server `{}` {why}; {then}", self.name);
        tracing::warn!(server = %self.name, "{}", state.down);
        if not_sent && state.restarts_left > 0 {
            EffectError::transient(state.down.clone())
        } else {
            EffectError::new(state.down.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<McpServer>();
        shareable::<McpError>();
        shareable::<McpServerSpec>();
    }
}

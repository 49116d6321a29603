//! The tools of a run, for every front end: the names a spec gives (`tools`,
//! `synthesizer_tools`, `executive_tools`) resolved against the built-in tools and the MCP
//! servers (belt.toml's `[mcp.NAME]` and the spec's own `mcp`), checked when the run is
//! prepared ([`ToolHost::plan`]: nothing started, nothing called), and made into each
//! tier's [`Toolbox`] when it starts ([`ToolHost::toolbox`]).
//!
//! An MCP server is started the first time a run of the process needs it, its tool list
//! read then, and kept for the next runs of the process (`belt serve` and workers run many):
//! [`ToolHost::shutdown`] stops them all when the process ends. A server that fails to
//! start fails the run before any call is paid for, with the server's own words; one that
//! dies later turns into tool errors the models read.
//!
//! Names: `web` (both of `web_search` and `fetch_url`), `web_search`, `fetch_url`,
//! `run_code`, `calculator`, `clock`, an MCP server's name (all its tools) or
//! `server.tool` (one of them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use belt_core::Tier;
use belt_core::tools::{Tool, Toolbox, Tools};
use belt_tools::mcp::{McpServer, McpServerSpec};
use belt_tools::sandbox::{Sandbox, run_code_tool};
use belt_tools::web::{FetchPolicy, Fetcher, WebSearchConfig, fetch_url_tool, web_search_tool};
use serde::Deserialize;

use crate::error::AppError;
use crate::spec::RunSpec;

/// The built-in tools by name, with what each does.
pub const BUILTIN: &[(&str, &str)] = &[
    ("web", "web_search and fetch_url together"),
    ("web_search", "search the web through the configured backend (SearXNG, Brave Search or Tavily)"),
    ("fetch_url", "read a web page as text (public addresses only unless allowed in belt.toml)"),
    ("run_code", "run Python 3 or sh in a bubblewrap sandbox: no network, no host files, limited resources"),
    ("calculator", "evaluate an arithmetic expression"),
    ("clock", "the current date and time (UTC)"),
];

/// `[tools]` in belt.toml: how tools are run and what they may reach.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Bytes of one tool result a model reads (16384 unless set); the rest is cut, with a
    /// note.
    pub result_cap: Option<usize>,
    /// Model calls of one agent's tool loop (8 unless set).
    pub max_rounds: Option<usize>,
    /// `fetch_url` may read private, loopback and link-local addresses (an intranet).
    #[serde(default)]
    pub fetch_allow_private: bool,
    /// Hosts `fetch_url` may read whatever their addresses.
    #[serde(default)]
    pub fetch_allow_hosts: Vec<String>,
    /// The search backend of `web_search` (else from the environment: `BELT_SEARXNG_URL`,
    /// `BRAVE_API_KEY`, `TAVILY_API_KEY`).
    pub web_search: Option<WebSearchConfig>,
}

/// Which tiers a list of names is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tiers {
    /// Workers and the agents of patterns without a worker tier.
    Workers,
    Synthesizers,
    Executive,
}

/// One name of a spec's tool lists, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolRef {
    Builtin(&'static str),
    /// All tools of an MCP server.
    Server(String),
    /// One tool of an MCP server, by the name the server gives it.
    ServerTool(String, String),
}

/// A run's tools, checked: what each tier gets, what each name a workflow file's agents
/// use stands for, and the servers that provide them.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolPlan {
    tiers: Vec<(Tiers, Vec<ToolRef>)>,
    named: Vec<(String, ToolRef)>,
    servers: BTreeMap<String, McpServerSpec>,
}

impl ToolPlan {
    /// The MCP servers the run uses.
    pub fn servers(&self) -> impl Iterator<Item = (&String, &McpServerSpec)> {
        self.servers.iter()
    }
}

/// `tools` with `tool`, unless another tool has its name (an MCP server's `search_x` and a
/// built-in, say): the model could not tell them apart. The same tool named twice is kept
/// once.
fn with_unique(tools: Tools, tool: Tool, from: &ToolRef) -> Result<Tools, String> {
    match tools.get(tool.name()) {
        Some(same) if same.spec() == tool.spec() => Ok(tools),
        Some(_) => Err(format!(
            "two different tools are named `{}` (one of them from {}); give the MCP server another name",
            tool.name(),
            match from {
                ToolRef::Builtin(b) => format!("the built-in `{b}`"),
                ToolRef::Server(s) | ToolRef::ServerTool(s, _) => format!("the MCP server `{s}`"),
            }
        )),
        None => Ok(tools.with(tool)),
    }
}

/// The tools of a process's runs: configuration, and the MCP servers started so far.
pub struct ToolHost {
    config: ToolsConfig,
    mcp: BTreeMap<String, McpServerSpec>,
    web_search: Option<WebSearchConfig>,
    started: tokio::sync::Mutex<HashMap<(String, String), Arc<McpServer>>>,
}

impl ToolHost {
    /// Tools configured by belt.toml (`[tools]`, `[mcp.NAME]`); `env_search` is the search
    /// backend the environment names, used when `[tools.web_search]` is not set.
    pub fn new(
        config: ToolsConfig,
        mcp: BTreeMap<String, McpServerSpec>,
        env_search: Option<WebSearchConfig>,
    ) -> ToolHost {
        let web_search = config.web_search.clone().or(env_search);
        ToolHost { config, mcp, web_search, started: Default::default() }
    }

    /// The MCP servers belt.toml declares.
    pub fn configured_servers(&self) -> &BTreeMap<String, McpServerSpec> {
        &self.mcp
    }

    /// The names the tools of this host answer to, besides MCP servers' (for validating
    /// workflow files).
    pub fn builtin_names(&self) -> Vec<String> {
        BUILTIN.iter().map(|(b, _)| b.to_string()).collect()
    }

    /// Check the spec's tool names and those a workflow file's agents use (`agents`, with
    /// the file's `mcp_servers`); `None` when there are none. Nothing is started.
    pub fn plan(
        &self,
        spec: &RunSpec,
        agents: &[String],
        file_servers: &BTreeMap<String, McpServerSpec>,
    ) -> Result<Option<ToolPlan>, AppError> {
        let mut servers = self.mcp.clone();
        servers.extend(file_servers.iter().map(|(k, v)| (k.clone(), v.clone())));
        servers.extend(spec.mcp.iter().map(|(k, v)| (k.clone(), v.clone())));
        let lists = [
            (Tiers::Workers, &spec.tools, "tools", "--tools"),
            (Tiers::Synthesizers, &spec.synthesizer_tools, "synthesizer_tools", "--synthesizer-tools"),
            (Tiers::Executive, &spec.executive_tools, "executive_tools", "--executive-tools"),
        ];
        let mut tiers = Vec::new();
        for (tier, names, field, flag) in lists {
            let refs = names
                .iter()
                .flat_map(|n| n.split(','))
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    self.resolve(n, &servers)
                        .map_err(|why| AppError::Invalid(format!("{field} ({flag}): {why}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !refs.is_empty() {
                tiers.push((tier, refs));
            }
        }
        let named = agents
            .iter()
            .map(|n| Ok((n.clone(), self.resolve(n, &servers).map_err(AppError::Invalid)?)))
            .collect::<Result<Vec<_>, AppError>>()?;
        if tiers.is_empty() && named.is_empty() {
            return Ok(None);
        }
        let all: Vec<&ToolRef> =
            tiers.iter().flat_map(|(_, r)| r).chain(named.iter().map(|(_, r)| r)).collect();
        let used = |name: &String| {
            all.iter().any(|r| match r {
                ToolRef::Server(s) | ToolRef::ServerTool(s, _) => s == name,
                ToolRef::Builtin(_) => false,
            })
        };
        servers.retain(|name, _| used(name));
        Ok(Some(ToolPlan { tiers, named, servers }))
    }

    /// One name: a built-in tool, a server, or `server.tool`.
    fn resolve(&self, name: &str, servers: &BTreeMap<String, McpServerSpec>) -> Result<ToolRef, String> {
        if let Some((builtin, _)) = BUILTIN.iter().find(|(b, _)| *b == name) {
            if matches!(*builtin, "web" | "web_search") && self.web_search.is_none() {
                return Err(format!(
                    "`{name}` needs a search backend: set BELT_SEARXNG_URL (a SearXNG instance), \
                     BRAVE_API_KEY or TAVILY_API_KEY, or [tools.web_search] in belt.toml \
                     (`fetch_url` alone reads pages without one)"
                ));
            }
            return Ok(ToolRef::Builtin(builtin));
        }
        if servers.contains_key(name) {
            return Ok(ToolRef::Server(name.to_string()));
        }
        if let Some((server, tool)) = name.split_once('.')
            && servers.contains_key(server)
            && !tool.is_empty()
        {
            return Ok(ToolRef::ServerTool(server.to_string(), tool.to_string()));
        }
        let mut known: Vec<&str> = BUILTIN.iter().map(|(b, _)| *b).collect();
        known.extend(servers.keys().map(String::as_str));
        let hint = belt_workflow::diagnostic::did_you_mean(name, known.iter().copied())
            .map(|m| format!(" (did you mean `{m}`?)"))
            .unwrap_or_default();
        let servers_hint = if servers.is_empty() {
            "no MCP server is declared: add one with --mcp NAME=COMMAND or NAME=URL, or [mcp.NAME] in \
             belt.toml"
                .to_string()
        } else {
            format!(
                "the MCP servers are {}",
                servers.keys().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            )
        };
        Err(format!(
            "unknown tool `{name}`{hint}; the built-in tools are {}, {servers_hint}; `server.tool` names one tool \
             of a server",
            BUILTIN.iter().map(|(b, _)| format!("`{b}`")).collect::<Vec<_>>().join(", ")
        ))
    }

    /// The tiers' tools for a run of `plan`: MCP servers started (or reused), their tools
    /// listed, built-in tools made. An error names what could not be set up.
    pub async fn toolbox(&self, plan: &ToolPlan) -> Result<Toolbox, String> {
        let servers = self.start_all(plan).await?;
        let mut toolbox = Toolbox::new();
        for (tiers, refs) in &plan.tiers {
            let mut tools = self.empty_tools();
            for r in refs {
                for tool in self.tools_of(r, &servers).await? {
                    tools = with_unique(tools, tool, r)?;
                }
            }
            toolbox = match tiers {
                Tiers::Workers => toolbox.with_workers(tools),
                Tiers::Synthesizers => toolbox.with_tier(Tier::Synthesizer, tools),
                Tiers::Executive => toolbox.with_tier(Tier::Executive, tools),
            };
        }
        Ok(toolbox)
    }

    /// The tools a workflow file's agents name: every one in a set, and what each name
    /// stands for (a server's name, `web`: several tools).
    pub async fn named(&self, plan: &ToolPlan) -> Result<(Tools, HashMap<String, Vec<String>>), String> {
        let servers = self.start_all(plan).await?;
        let mut all = self.empty_tools();
        let mut groups = HashMap::new();
        for (name, r) in &plan.named {
            let tools = self.tools_of(r, &servers).await?;
            groups.insert(name.clone(), tools.iter().map(|t| t.name().to_string()).collect());
            all = tools.into_iter().fold(all, Tools::with);
        }
        Ok((all, groups))
    }

    /// Every tool of `plan` in one set (what `belt dlq retry` offers a tool call).
    pub async fn all_tools(&self, plan: &ToolPlan) -> Result<Tools, String> {
        let toolbox = self.toolbox(plan).await?;
        let (mut all, _) = self.named(plan).await?;
        for (_, tools) in toolbox.tiers() {
            all = tools.iter().cloned().fold(all, Tools::with);
        }
        Ok(all)
    }

    /// Tools named by the host's configuration (result cap, rounds), none yet.
    fn empty_tools(&self) -> Tools {
        Tools::new()
            .result_cap(self.config.result_cap.unwrap_or(Tools::DEFAULT_RESULT_CAP))
            .max_rounds(self.config.max_rounds.unwrap_or(Tools::DEFAULT_MAX_ROUNDS))
    }

    async fn start_all(&self, plan: &ToolPlan) -> Result<HashMap<String, Arc<McpServer>>, String> {
        let mut servers = HashMap::new();
        for (name, spec) in &plan.servers {
            servers.insert(name.clone(), self.server(name, spec).await?);
        }
        Ok(servers)
    }

    async fn tools_of(
        &self,
        r: &ToolRef,
        servers: &HashMap<String, Arc<McpServer>>,
    ) -> Result<Vec<Tool>, String> {
        Ok(match r {
            ToolRef::Builtin(name) => self.builtin(name).await?,
            ToolRef::Server(name) => servers.get(name).map(|s| s.tools()).unwrap_or_default(),
            ToolRef::ServerTool(name, tool) => {
                let Some(server) = servers.get(name) else { return Ok(Vec::new()) };
                let entry =
                    server.catalog().into_iter().find(|e| e.original_name == *tool).ok_or_else(|| {
                        let names: Vec<String> =
                            server.catalog().into_iter().map(|e| e.original_name).collect();
                        format!(
                            "the MCP server `{name}` has no tool `{tool}`; its tools are: {}",
                            names.join(", ")
                        )
                    })?;
                server.tools().into_iter().filter(|t| t.name() == entry.model_name).collect()
            }
        })
    }

    async fn builtin(&self, name: &str) -> Result<Vec<Tool>, String> {
        let fetch = || {
            let policy = FetchPolicy {
                allow_private: self.config.fetch_allow_private,
                allow_hosts: self.config.fetch_allow_hosts.clone(),
                ..FetchPolicy::default()
            };
            Fetcher::new(policy).map(fetch_url_tool).map_err(|e| format!("fetch_url: {e}"))
        };
        let search = || match &self.web_search {
            Some(config) => web_search_tool(config.clone()).map_err(|e| format!("web_search: {e}")),
            None => Err("web_search has no search backend".to_string()),
        };
        Ok(match name {
            "web" => vec![search()?, fetch()?],
            "web_search" => vec![search()?],
            "fetch_url" => vec![fetch()?],
            // Probed per run: the refusal says why when the sandbox cannot be set up here.
            "run_code" => vec![run_code_tool(Sandbox::probe().await)],
            other => belt_workflow::tools::builtin().get(other).cloned().into_iter().collect(),
        })
    }

    /// The running server of this name and spec, started if it is not.
    pub async fn server(&self, name: &str, spec: &McpServerSpec) -> Result<Arc<McpServer>, String> {
        let key = (name.to_string(), serde_json::to_string(spec).unwrap_or_default());
        let mut started = self.started.lock().await;
        if let Some(server) = started.get(&key) {
            return Ok(server.clone());
        }
        let spec = spec.with_vars(name, |v| std::env::var(v).ok()).map_err(|e| e.to_string())?;
        let server = McpServer::start(name, &spec).await.map_err(|e| e.to_string())?;
        for skipped in server.skipped() {
            tracing::warn!(
                "MCP server `{name}`: tool `{}` left out: {}",
                skipped.original_name,
                skipped.reason
            );
        }
        let server = Arc::new(server);
        started.insert(key, server.clone());
        Ok(server)
    }

    /// Stop every server this process started (each gets a moment to exit cleanly).
    pub async fn shutdown(&self) {
        let servers: Vec<_> = self.started.lock().await.drain().map(|(_, s)| s).collect();
        for server in servers {
            if let Ok(server) = Arc::try_unwrap(server) {
                server.shutdown().await;
            }
        }
    }
}

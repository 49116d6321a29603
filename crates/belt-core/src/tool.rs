//! The tools' types: a [`Tool`] (name, description, parameter schema, handler, policy), a
//! loop's [`Tools`], each tier's [`Toolbox`], and what a call returns ([`ToolOutput`],
//! [`ToolOutcome`]). The loop that runs them is [`crate::tools`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::ToolSpec;
use crate::policy::EffectError;
use crate::schema::{is_strict, schema_of, to_strict, wire_name};
use crate::step::Tier;

/// The `finish_reason` of a tool loop stopped by its round cap.
pub const TOOL_ROUND_CAP: &str = "tool_round_cap";

/// What a handler's future resolves to: the result, or why the call failed.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<ToolOutput, EffectError>> + Send>>;

type Handler = Arc<dyn Fn(Value) -> ToolFuture + Send + Sync>;

/// What a tool returns: the text the model reads, and the sources it came from (pages
/// fetched, search results), which the run's result and report list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

impl ToolOutput {
    pub fn new(content: impl Into<String>) -> Self {
        ToolOutput { content: content.into(), sources: Vec::new() }
    }

    pub fn with_sources(mut self, sources: Vec<Source>) -> Self {
        self.sources = sources;
        self
    }
}

impl From<String> for ToolOutput {
    fn from(content: String) -> Self {
        ToolOutput::new(content)
    }
}

/// A document a tool read on the run's behalf: a web page, a search result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Source {
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
}

/// How the engine runs one tool's calls, beyond the run's defaults for tools
/// ([`crate::Policies::tools`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ToolPolicy {
    /// Limit on one call (the run's tool timeout otherwise).
    pub timeout: Option<std::time::Duration>,
    /// Attempts after the first (the run's tool retries otherwise).
    pub retries: Option<u32>,
    /// Calling it twice with the same arguments does no harm (a read, a search): a call
    /// that failed or timed out may be repeated. Otherwise only a failure the tool marks
    /// [`EffectError::transient`] (it certainly did nothing) is tried again.
    pub idempotent: bool,
}

/// A function the model may call: a name, a description, the JSON Schema of its
/// arguments, an async handler, and how its calls are run ([`ToolPolicy`]).
#[derive(Clone)]
pub struct Tool {
    spec: ToolSpec,
    handler: Handler,
    policy: ToolPolicy,
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl Tool {
    /// A tool whose arguments are an `A` (a struct deriving `schemars::JsonSchema` and
    /// `serde::Deserialize`; its doc comments become the parameters' descriptions). The
    /// handler's `Ok` value is the result: a string as it is, anything else as JSON; its
    /// `Err` is shown to the model as a failed call.
    ///
    /// The parameters are sent in strict form (every property required, `Option` fields
    /// nullable), which OpenAI enforces exactly.
    pub fn new<A, F, Fut, T, E>(name: &str, description: &str, handler: F) -> Tool
    where
        A: schemars::JsonSchema + DeserializeOwned + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Serialize,
        E: fmt::Display,
    {
        let parameters = to_strict(schema_of::<A>());
        let handler = move |arguments: Value| -> ToolFuture {
            match serde_json::from_value::<A>(arguments) {
                Ok(args) => {
                    let running = handler(args);
                    Box::pin(async move {
                        match running.await {
                            Ok(value) => render(value).map(ToolOutput::new).map_err(EffectError::new),
                            Err(e) => Err(EffectError::new(e.to_string())),
                        }
                    })
                }
                Err(e) => Box::pin(std::future::ready(Err(EffectError::new(format!(
                    "the arguments do not match the tool's parameters: {e}"
                ))))),
            }
        };
        Tool::build(name, description, parameters, Arc::new(handler))
    }

    /// A tool with a hand-written parameter schema (an object), whose handler takes the
    /// arguments as JSON.
    pub fn from_json<F, Fut>(name: &str, description: &str, parameters: Value, handler: F) -> Tool
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        Tool::build(
            name,
            description,
            parameters,
            Arc::new(move |args| {
                let running = handler(args);
                Box::pin(async move { running.await.map(ToolOutput::new).map_err(EffectError::new) })
            }),
        )
    }

    /// A tool with a hand-written parameter schema whose handler returns a full
    /// [`ToolOutput`] (with sources) or an [`EffectError`] that says whether trying again
    /// may help: what built-in and MCP tools use.
    pub fn dynamic<F, Fut>(name: &str, description: &str, parameters: Value, handler: F) -> Tool
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ToolOutput, EffectError>> + Send + 'static,
    {
        Tool::build(name, description, parameters, Arc::new(move |args| Box::pin(handler(args))))
    }

    fn build(name: &str, description: &str, parameters: Value, handler: Handler) -> Tool {
        let strict = is_strict(&parameters);
        let spec =
            ToolSpec { name: wire_name(name), description: description.to_string(), parameters, strict };
        Tool { spec, handler, policy: ToolPolicy::default() }
    }

    /// Calling it again with the same arguments does no harm: failed and timed-out calls
    /// may be repeated (see [`ToolPolicy::idempotent`]).
    pub fn idempotent(mut self) -> Tool {
        self.policy.idempotent = true;
        self
    }

    /// Limit one call to `timeout` (instead of the run's tool timeout).
    pub fn timeout(mut self, timeout: std::time::Duration) -> Tool {
        self.policy.timeout = Some(timeout);
        self
    }

    /// Attempts after the first, for failures that may be repeated.
    pub fn retries(mut self, retries: u32) -> Tool {
        self.policy.retries = Some(retries);
        self
    }

    /// Call it under another name (a prefix that keeps two servers' tools apart, say).
    pub fn renamed(mut self, name: &str) -> Tool {
        self.spec.name = wire_name(name);
        self
    }

    pub fn policy(&self) -> ToolPolicy {
        self.policy
    }

    /// How the tool is described to the model.
    pub fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Run the handler on `arguments`, as the loop does: arguments that are not a JSON
    /// object (a model's broken JSON arrives as a string) and panics are errors too.
    pub async fn call(&self, arguments: Value) -> Result<ToolOutput, EffectError> {
        if let Value::String(raw) = &arguments {
            return Err(EffectError::new(format!("the arguments are not valid JSON: {raw}")));
        }
        match std::panic::AssertUnwindSafe((self.handler)(arguments)).catch_unwind().await {
            Ok(result) => result,
            Err(_) => {
                Err(EffectError::new(format!("the tool `{}` failed (its handler panicked)", self.spec.name)))
            }
        }
    }
}

fn render<T: Serialize>(value: T) -> Result<String, String> {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => Ok(s),
        Ok(other) => Ok(other.to_string()),
        Err(e) => Err(format!("the tool's result could not be written as JSON: {e}")),
    }
}

/// The tools of a loop, its round cap, and how much of a result reaches the model.
#[derive(Clone, Debug)]
pub struct Tools {
    tools: Vec<Tool>,
    max_rounds: usize,
    pub(crate) result_cap: usize,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            tools: Vec::new(),
            max_rounds: Tools::DEFAULT_MAX_ROUNDS,
            result_cap: Tools::DEFAULT_RESULT_CAP,
        }
    }
}

impl Tools {
    /// Model calls per loop unless [`Tools::max_rounds`] says otherwise.
    pub const DEFAULT_MAX_ROUNDS: usize = 8;
    /// Bytes of one tool result the model reads unless [`Tools::result_cap`] says
    /// otherwise: about 4,000 tokens, so a few results fit beside the conversation in an
    /// 8k window, and a page dump does not crowd out the task.
    pub const DEFAULT_RESULT_CAP: usize = 16 * 1024;

    /// Cut each tool result to `bytes` (at least 256) before the model reads it, with a
    /// note that it was cut.
    pub fn result_cap(mut self, bytes: usize) -> Self {
        self.result_cap = bytes.max(256);
        self
    }

    /// Is there any tool?
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The tools, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter()
    }

    pub fn new() -> Self {
        Tools::default()
    }

    /// Add a tool (one with the same name is replaced).
    pub fn with(mut self, tool: Tool) -> Self {
        self.tools.retain(|t| t.name() != tool.name());
        self.tools.push(tool);
        self
    }

    /// At most `rounds` model calls per loop (at least 1). When the last one still calls
    /// tools, the loop stops with [`TOOL_ROUND_CAP`].
    pub fn max_rounds(mut self, rounds: usize) -> Self {
        self.max_rounds = rounds.max(1);
        self
    }

    pub fn rounds_cap(&self) -> usize {
        self.max_rounds
    }

    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// The tools as a request describes them.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec.clone()).collect()
    }

    pub(crate) fn names(&self) -> String {
        let names: Vec<&str> = self.tools.iter().map(Tool::name).collect();
        if names.is_empty() { "(none)".into() } else { names.join(", ") }
    }
}

/// Which tools the agents of each tier of a run may call ([`crate::RunOptions::tools`]).
///
/// Every LLM call of a tier that has tools runs the agent loop ([`crate::Ctx::llm_with_tools`])
/// instead of a single call, in every pattern, with no change to the pattern: the engine
/// routes it. A request that already carries tools (a pattern's own loop) is left alone.
#[derive(Clone, Debug, Default)]
pub struct Toolbox {
    tiers: Vec<(Tier, Tools)>,
}

impl Toolbox {
    pub fn new() -> Self {
        Toolbox::default()
    }

    /// Give the agents of `tier` these tools (replacing what it had).
    pub fn with_tier(mut self, tier: Tier, tools: Tools) -> Self {
        self.tiers.retain(|(t, _)| *t != tier);
        if !tools.is_empty() {
            self.tiers.push((tier, tools));
        }
        self
    }

    /// The workers: [`Tier::Worker`] and [`Tier::Agent`] (the agents of patterns that
    /// have no worker tier).
    pub fn with_workers(self, tools: Tools) -> Self {
        self.with_tier(Tier::Worker, tools.clone()).with_tier(Tier::Agent, tools)
    }

    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    pub fn for_tier(&self, tier: &Tier) -> Option<&Tools> {
        self.tiers.iter().find(|(t, _)| t == tier).map(|(_, tools)| tools)
    }

    /// Each tier with its tools.
    pub fn tiers(&self) -> impl Iterator<Item = (&Tier, &Tools)> {
        self.tiers.iter().map(|(t, tools)| (t, tools))
    }
}

/// A tool call's result, as recorded and as the model reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutcome {
    pub content: String,
    /// The call failed: `content` says why.
    #[serde(default)]
    pub is_error: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

impl ToolOutcome {
    /// A tool's output as the model will read it: at most `cap` bytes, cut at a character
    /// boundary with a note saying how much there was.
    pub(crate) fn of(out: ToolOutput, cap: usize) -> ToolOutcome {
        let mut content = out.content;
        if content.len() > cap {
            let total = content.len();
            let end = crate::words::cut(&content, cap).len();
            content.truncate(end);
            content.push_str(&format!("\n[cut: the tool returned {total} bytes; the first {end} are shown]"));
        }
        ToolOutcome { content, is_error: false, sources: out.sources }
    }
}

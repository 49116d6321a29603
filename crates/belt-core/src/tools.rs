//! Tool calling: functions defined in Rust that a model may call ([`Tool`], [`Tools`]),
//! and the agent loop that runs them, [`Ctx::llm_with_tools`] — once, in the engine, so
//! that every pattern and custom orchestrator gets the same guarantees.
//!
//! The loop asks the model (round 1), runs the tools it called, hands their results back,
//! and asks again, until the model answers without calling a tool or the round cap
//! ([`Tools::max_rounds`], 8 by default) is reached. Each model call is a recorded step,
//! `{step}/round/NN`, with the engine's retries, limits, fallback, budget and events; each
//! tool call is a recorded step too, `{step}/round/NN/tool/N`, and the calls of one round
//! run concurrently. A resumed run therefore replays both the model's turns and the tools'
//! results instead of calling either again.
//!
//! What the model gets back from a tool is always a result, never a crash of the run: an
//! unknown tool name, arguments that do not parse or do not match the parameters, a
//! handler's error and a handler's panic all become error results (`is_error`) the model
//! can react to. Hitting the cap is explicit: the reply's `finish_reason` is
//! [`TOOL_ROUND_CAP`], its `tool_calls` are the calls that were not run, and the run's
//! record has a skipped step `{step}/round/NN` (and a [`CapHit`]) saying so.
//!
//! ```
//! use std::sync::Arc;
//! use belt_core::tools::{Tool, Tools};
//! use belt_core::testing::ScriptedProvider;
//! use belt_core::llm::ToolCall;
//! use belt_core::patterns::Flow;
//! use belt_core::{LlmRequest, RunOptions, StepSpec, Task, Tier, run};
//!
//! #[derive(schemars::JsonSchema, serde::Deserialize)]
//! struct Add {
//!     a: i64,
//!     b: i64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let tools = Tools::new().with(Tool::new("add", "Add two integers.", |x: Add| async move {
//!     Ok::<_, String>(x.a + x.b)
//! }));
//! let flow = Flow::new("sum", move |ctx, task| {
//!     let tools = tools.clone();
//!     async move {
//!         let request = LlmRequest::new("t/model", task.description);
//!         let reply = ctx.llm_with_tools(StepSpec::new("sum", Tier::Agent), request, &tools).await?;
//!         Ok(reply.text.to_string())
//!     }
//! });
//! // A test provider that calls `add` once, then answers with the results it got.
//! let call = ToolCall { id: "c".into(), name: "add".into(), arguments: serde_json::json!({"a": 2, "b": 3}) };
//! let provider = ScriptedProvider::new("t").tool_calls_for("sum", 1, vec![call]);
//! let options = RunOptions::default().with_provider(Arc::new(provider));
//! let result = run(flow, Task::new("2 + 3?"), options).await.unwrap().result().await;
//! assert_eq!(result.final_output.as_deref(), Some("Output of sum/round/02. Tool results: 5"));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::caps::CapHit;
use crate::ctx::{Ctx, StepError, StepReply};
use crate::effect::EffectError;
use crate::llm::{LlmRequest, Message, ToolCall, ToolSpec, Usage};
use crate::schema::{is_strict, schema_of, to_strict, wire_name};
use crate::step::{StepId, StepSpec};

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

/// The tools of a loop, and its round cap.
#[derive(Clone, Debug)]
pub struct Tools {
    tools: Vec<Tool>,
    max_rounds: usize,
}

impl Default for Tools {
    fn default() -> Self {
        Tools { tools: Vec::new(), max_rounds: Tools::DEFAULT_MAX_ROUNDS }
    }
}

impl Tools {
    /// Model calls per loop unless [`Tools::max_rounds`] says otherwise.
    pub const DEFAULT_MAX_ROUNDS: usize = 8;

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

    fn names(&self) -> String {
        let names: Vec<&str> = self.tools.iter().map(Tool::name).collect();
        if names.is_empty() { "(none)".into() } else { names.join(", ") }
    }
}

/// A tool call's result, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ToolOutcome {
    content: String,
    #[serde(default)]
    is_error: bool,
}

impl Ctx {
    /// An LLM call with tools: the agent loop (see the [module docs](self)). `request`
    /// gets the tools' descriptions; its messages are the conversation so far.
    ///
    /// The reply is the last round's: its text, model and finish reason, with the usage
    /// and cost of all rounds. When the cap stopped the loop, its `finish_reason` is
    /// [`TOOL_ROUND_CAP`] and its `tool_calls` are the calls not run.
    pub async fn llm_with_tools(
        &self,
        spec: StepSpec,
        mut request: LlmRequest,
        tools: &Tools,
    ) -> Result<StepReply, StepError> {
        request.tools = tools.specs();
        let rounds = tools.max_rounds;
        let round_id = |k: usize| spec.id.child(format!("round/{}", crate::step::pad(k, rounds, 2)));
        let (mut usage, mut cost, mut replayed, mut cached, mut simulated) =
            (Usage::default(), 0.0, true, true, false);
        let mut inputs = spec.inputs.clone();
        let mut round = 0;
        loop {
            round += 1;
            let id = round_id(round);
            let step = StepSpec { id: id.clone(), inputs: std::mem::take(&mut inputs), ..spec.clone() };
            let reply = self.llm(step, request.clone()).await?;
            usage.add(reply.outcome.usage);
            cost += reply.outcome.cost_usd;
            replayed &= reply.outcome.replayed;
            cached &= reply.outcome.cached;
            simulated |= reply.simulated;
            let totals = |mut reply: StepReply| {
                reply.outcome.usage = usage;
                reply.outcome.cost_usd = cost;
                reply.outcome.replayed = replayed;
                reply.outcome.cached = cached;
                reply.simulated = simulated;
                reply
            };
            if reply.tool_calls.is_empty() {
                return Ok(totals(reply));
            }
            if round >= rounds {
                let next = StepSpec::new(round_id(round + 1), spec.tier.clone()).inputs(vec![id]);
                CapHit::record(self, "max_tool_rounds", rounds, next, &reply.outcome.model);
                let mut reply = totals(reply);
                reply.outcome.finish_reason = Some(TOOL_ROUND_CAP.into());
                return Ok(reply);
            }
            let calls = reply.tool_calls.clone();
            let results = futures::future::join_all(
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, call)| self.run_tool(&spec, &id, i + 1, calls.len(), call, tools)),
            )
            .await;
            request.messages.push(Message::assistant_tool_calls(reply.text.to_string(), calls.clone()));
            for (call, result) in calls.iter().zip(results) {
                let (tool_step, outcome) = result?;
                inputs.push(tool_step);
                request.messages.push(Message::tool_result(&call.id, outcome.content, outcome.is_error));
            }
        }
    }

    /// One tool call of a loop as a recorded step.
    async fn run_tool(
        &self,
        spec: &StepSpec,
        round: &StepId,
        index: usize,
        count: usize,
        call: &ToolCall,
        tools: &Tools,
    ) -> Result<(StepId, ToolOutcome), StepError> {
        let id = round.child(format!("tool/{}", crate::step::pad(index, count, 1)));
        let step = StepSpec::new(id.clone(), spec.tier.clone()).inputs(vec![round.clone()]);
        let input = (&call.name, &call.arguments);
        let work = async {
            let result = match tools.get(&call.name) {
                Some(tool) => tool.call(call.arguments.clone()).await,
                None => Err(EffectError::new(format!(
                    "there is no tool named `{}`; the tools are: {}",
                    call.name,
                    tools.names()
                ))),
            };
            Ok(match result {
                Ok(out) => ToolOutcome { content: out.content, is_error: false },
                Err(e) => ToolOutcome { content: e.message, is_error: true },
            })
        };
        let outcome = self.step(step, &input, work).await?;
        Ok((id, outcome))
    }
}

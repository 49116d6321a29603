//! The provider interface: what the engine asks of an LLM, and what it gets back.
//!
//! DESIGN.md places the `LlmProvider` trait in `belt-llm`. It lives here instead, in the
//! core, so that the engine can call providers without depending on an HTTP stack:
//! `belt-llm` implements this trait (simulated provider, HTTP adapters) and re-exports it.
//! The engine never sees a wire format, only [`LlmRequest`], [`LlmReply`] and [`LlmError`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::hints::{CallHints, CallKind};
use crate::limits::{Limiter, Limits};
pub use crate::schema::OutputSchema;
pub use crate::usage::Usage;
pub use error::LlmError;

pub(crate) mod error;
use crate::step::StepId;

/// Who speaks in a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    /// The result of a tool call the assistant made ([`Message::tool_result`]).
    Tool,
}

/// One turn of a conversation.
///
/// Besides text, an assistant turn can carry the tools it called ([`Message::tool_calls`]),
/// and a [`Role::Tool`] turn is the result of one of those calls. Adapters translate them
/// to each wire format (OpenAI's `tool_calls` and `role: tool` messages; Anthropic's
/// `tool_use` and `tool_result` blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The tools an assistant turn called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a tool result: the call failed, and `content` says why.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

impl Message {
    fn new(role: Role, content: String) -> Self {
        Message { role, content, tool_calls: Vec::new(), tool_call_id: None, is_error: false }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content.into())
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content.into())
    }
    /// An assistant turn that called tools (with the text it wrote before, if any).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Message { tool_calls: calls, ..Message::new(Role::Assistant, content.into()) }
    }
    /// The result of the tool call `call_id`; `is_error` when the call failed.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>, is_error: bool) -> Self {
        Message { tool_call_id: Some(call_id.into()), is_error, ..Message::new(Role::Tool, content.into()) }
    }
}

/// A tool the model may call, as the request describes it to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Letters, digits, `_` and `-`, at most 64 characters.
    pub name: String,
    pub description: String,
    /// The JSON Schema of the arguments (an object).
    pub parameters: serde_json::Value,
    /// Ask the server to hold the arguments to the schema exactly (OpenAI's `strict`).
    #[serde(default)]
    pub strict: bool,
}

/// A request for one completion. `model` is `provider/model`, e.g. `openai/gpt-4o` or
/// `simulated/default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmRequest {
    /// Shared, so that every request of a tier points at one allocation of its name.
    pub model: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub messages: Vec<Message>,
    /// Upper bound on output tokens; also what the budget reserves for the output.
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Ask the model for a JSON reply.
    #[serde(default)]
    pub json: bool,
    /// Ask for JSON matching this schema (structured output); implies `json`. Shared, so
    /// the requests of a fan-out hold one copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Arc<OutputSchema>>,
    /// Tools the model may call. [`crate::Ctx::llm_with_tools`] sets them from its
    /// [`crate::tools::Tools`] and runs the calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// What the pattern knows about this call, for providers that answer from structure
    /// (see [`CallHints`]). Never sent to a model, not part of the step's input hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hints: Option<Arc<CallHints>>,
}

impl LlmRequest {
    pub fn new(model: impl ModelName, prompt: impl Into<String>) -> Self {
        LlmRequest {
            model: model.into_model(),
            system: None,
            messages: vec![Message::user(prompt)],
            max_tokens: 1024,
            temperature: None,
            json: false,
            json_schema: None,
            tools: Vec::new(),
            hints: None,
        }
    }
    /// Say what this call is (see [`CallHints`]).
    pub fn hints(mut self, hints: CallHints) -> Self {
        self.hints = Some(Arc::new(hints));
        self
    }
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }
    pub fn json(mut self) -> Self {
        self.json = true;
        self
    }

    /// Ask for JSON matching `schema`, named `name` (structured output). How it is
    /// enforced depends on the provider: OpenAI-compatible servers get `response_format`
    /// `json_schema` where the model supports it (else `json_object`, else an
    /// instruction), Anthropic a forced tool. The reply's text is the JSON.
    pub fn json_schema(self, name: impl AsRef<str>, schema: serde_json::Value) -> Self {
        self.output_schema(OutputSchema::new(name, schema))
    }

    /// Ask for JSON matching the schema of `T` (structured output; see
    /// [`LlmRequest::json_schema`]). Parse the reply's text with `serde_json`.
    pub fn json_schema_for<T: schemars::JsonSchema>(self) -> Self {
        self.output_schema(OutputSchema::of::<T>())
    }

    /// Ask for JSON matching `schema`.
    pub fn output_schema(mut self, schema: OutputSchema) -> Self {
        self.json = true;
        self.json_schema = Some(Arc::new(schema));
        self
    }

    /// An upper bound on the input tokens of this request.
    ///
    /// Byte-level BPE tokenizers (those of OpenAI, Anthropic, Llama, Mistral…) never make a
    /// token shorter than one byte, so the byte count plus a per-message allowance for
    /// role markers bounds the true count from above. The budget reserves this bound, which
    /// is what lets it promise that a cap is never exceeded; the difference is returned as
    /// soon as the provider reports the real usage.
    pub fn input_token_bound(&self) -> u64 {
        const PER_MESSAGE: u64 = 8;
        let system = self.system.as_ref().map_or(0, |s| s.len() as u64 + PER_MESSAGE);
        let messages: u64 = self.messages.iter().map(|m| m.content.len() as u64 + PER_MESSAGE).sum();
        // Schemas, tool definitions, tool calls and result ids are sent too, and billed as
        // input (counted only when present: the common request pays nothing for them).
        let schema = self.json_schema.as_ref().map_or(0, |s| json_len(&s.schema) + s.name.len() as u64);
        let mut tools = 0;
        for t in &self.tools {
            tools += json_len(&t.parameters) + (t.name.len() + t.description.len()) as u64 + PER_MESSAGE;
        }
        for m in self.messages.iter().filter(|m| !m.tool_calls.is_empty() || m.tool_call_id.is_some()) {
            tools += m.tool_call_id.as_ref().map_or(0, |id| id.len() as u64);
            for c in &m.tool_calls {
                tools += json_len(&c.arguments) + (c.id.len() + c.name.len()) as u64 + PER_MESSAGE;
            }
        }
        system + messages + schema + tools + PER_MESSAGE
    }

    /// The text of the last user message (what most providers treat as "the prompt").
    pub fn prompt(&self) -> &str {
        self.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str())
    }
}

/// The length of `value` as JSON text.
fn json_len(value: &serde_json::Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Anything that names a model: `&str`, `String`, `&String`, or an `Arc<str>` (which a
/// request then shares instead of copying).
pub trait ModelName {
    fn into_model(self) -> Arc<str>;
}

impl ModelName for &str {
    fn into_model(self) -> Arc<str> {
        Arc::from(self)
    }
}
impl ModelName for String {
    fn into_model(self) -> Arc<str> {
        Arc::from(self)
    }
}
impl ModelName for &String {
    fn into_model(self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}
impl ModelName for Arc<str> {
    fn into_model(self) -> Arc<str> {
        self
    }
}
impl ModelName for &Arc<str> {
    fn into_model(self) -> Arc<str> {
        self.clone()
    }
}

/// A tool the model asked to call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call, which its result quotes back.
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: a JSON object, or a JSON string holding
    /// text that did not parse (the handler is then not run; the model is told).
    pub arguments: serde_json::Value,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmReply {
    pub text: String,
    pub usage: Usage,
    /// The model that actually answered (`provider/model`).
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// True when the text was written by the simulated provider, not a real model.
    #[serde(default)]
    pub simulated: bool,
    /// Tools the model called (its `finish_reason` is then `tool_calls`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// Prices in USD per million tokens.
///
/// Cache rates are optional: `None` bills those tokens at the input rate. Prompt-cache
/// reads cost less than input (a tenth to a half); Anthropic's cache writes cost more
/// (1.25x), which is why [`Price::cost_of`], the worst case the budget reserves, bills
/// every input token at the dearer of the two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    /// Input and output rates, cache tokens at the input rate.
    pub const fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Price { input_per_mtok, output_per_mtok, cache_read_per_mtok: None, cache_write_per_mtok: None }
    }

    /// With prompt-cache rates.
    pub const fn with_cache(mut self, read_per_mtok: Option<f64>, write_per_mtok: Option<f64>) -> Self {
        self.cache_read_per_mtok = read_per_mtok;
        self.cache_write_per_mtok = write_per_mtok;
        self
    }

    /// The cost of a call: uncached input, cache reads, cache writes and output, each at
    /// its rate.
    pub fn cost(&self, usage: Usage) -> f64 {
        let read = self.cache_read_per_mtok.unwrap_or(self.input_per_mtok);
        let write = self.cache_write_per_mtok.unwrap_or(self.input_per_mtok);
        (usage.uncached_input_tokens() as f64 * self.input_per_mtok
            + usage.cache_read_tokens as f64 * read
            + usage.cache_write_tokens as f64 * write
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }

    /// The most a call with these token counts can cost, whatever the cache does: input
    /// at the dearer of the input and cache-write rates.
    pub fn cost_of(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        let input = self.cache_write_per_mtok.map_or(self.input_per_mtok, |w| w.max(self.input_per_mtok));
        (input_tokens as f64 * input + output_tokens as f64 * self.output_per_mtok) / 1_000_000.0
    }
}

/// What a model can do and hold, as far as belt is concerned: from the shipped model table,
/// `belt.toml` (`[models."provider/name"]`), or the server itself (llama.cpp's `/props`,
/// Ollama's `/api/show`, vLLM's `/v1/models`). See [`LlmProvider::capabilities`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The API streams the reply (SSE).
    pub streaming: bool,
    /// Function/tool calling.
    pub tools: bool,
    /// A reply constrained by a JSON schema (OpenAI-compatible `response_format`
    /// json_schema; Anthropic through a forced tool).
    pub json_schema: bool,
    /// OpenAI-compatible `response_format: {"type": "json_object"}`.
    pub json_object: bool,
    /// The model accepts a non-default temperature (OpenAI's reasoning models do not).
    pub temperature: bool,
    /// Images in the prompt.
    #[serde(default)]
    pub vision: bool,
    /// Context window in tokens (prompt and reply together), where known. For a server
    /// that splits its window between parallel slots (llama.cpp), one slot's share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// Most output tokens per call, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// Which call this is, for providers that need it (the simulated provider derives its
/// deterministic text and its injected failures from it).
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub step: StepId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The run the call belongs to (empty outside a run): for logs and traces that follow
    /// calls across the processes sharing a store.
    pub run_id: Arc<str>,
}

impl CallInfo {
    /// Attempt `attempt` of `step`, outside any run.
    pub fn new(step: StepId, attempt: u32) -> CallInfo {
        CallInfo { step, attempt, run_id: Arc::from("") }
    }
}

/// Receives the text of a streaming reply as it arrives.
pub type DeltaSink = Arc<dyn Fn(&str) + Send + Sync>;

tokio::task_local! {
    static DELTAS: DeltaSink;
}

/// Hand a piece of a reply's text to whoever watches this call stream (the engine, when a
/// run asked for `step_delta` events). Providers call it as text arrives; it does nothing
/// when nobody watches.
pub fn stream_delta(text: &str) {
    if text.is_empty() {
        return;
    }
    let _ = DELTAS.try_with(|sink| sink(text));
}

/// Whether anyone watches this call's text as it arrives (see [`stream_delta`]): a
/// provider that would do extra work to stream can skip it when nobody does.
pub fn deltas_watched() -> bool {
    DELTAS.try_with(|_| ()).is_ok()
}

/// Run `call` with `sink` receiving what it passes to [`stream_delta`].
pub async fn with_delta_sink<F: std::future::Future>(sink: DeltaSink, call: F) -> F::Output {
    DELTAS.scope(sink, call).await
}

/// Something that answers [`LlmRequest`]s: a real API adapter or the simulated provider.
///
/// Implementations do one call and report what happened; retries, timeouts, budget,
/// concurrency and events are the engine's job, done once for every provider.
#[async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// The provider part of `provider/model` this serves, e.g. `openai`.
    fn name(&self) -> &str;

    /// Price of `model` (the part after the slash), if known.
    fn price(&self, model: &str) -> Option<Price>;

    /// True for providers whose text is not written by a real model.
    fn is_simulated(&self) -> bool {
        false
    }

    /// Make one call. `model` is the part after the slash.
    async fn complete(
        &self,
        model: &str,
        request: &LlmRequest,
        call: &CallInfo,
    ) -> Result<LlmReply, LlmError>;

    /// What `model` can do and hold (context window, structured output, tools…), from
    /// configuration, the shipped table, or — for local servers — the server itself, asked
    /// once and remembered. `None` when nothing is known (the default). Patterns size their
    /// prompts by it (the cascade's synthesizers fit their inputs to the window).
    async fn capabilities(&self, model: &str) -> Option<Capabilities> {
        let _ = model;
        None
    }

    /// How many calls the server runs at once, where it says (llama.cpp's `total_slots`):
    /// the provider's default concurrency when `belt.toml` sets none, since calls past it
    /// only queue inside the server (where their timeouts run). `None` by default.
    async fn server_slots(&self) -> Option<usize> {
        None
    }

    /// What the provider's rate-limit headers said about `model` on its latest response
    /// (a success or an error, 429 included), for limiters that slow down before the
    /// provider refuses. `None` when the provider sends none (the default).
    fn rate_limits(&self, model: &str) -> Option<RateLimits> {
        let _ = model;
        None
    }
}

/// A provider's rate-limit state as its response headers reported it: `x-ratelimit-*`
/// (OpenAI, xAI, Groq, OpenRouter…) or `anthropic-ratelimit-*`. Every field is optional
/// because providers send different subsets. Resets are durations from `observed_at`.
///
/// It is reported per provider and model through [`LlmProvider::rate_limits`] rather than
/// inside [`LlmError::RateLimited`], because the headers come with every response, not
/// only with a 429: a limiter can see `remaining` fall before any call is refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    pub requests_limit: Option<u64>,
    pub requests_remaining: Option<u64>,
    pub requests_reset: Option<Duration>,
    /// Tokens per period; for Anthropic the most restrictive of its token limits.
    pub tokens_limit: Option<u64>,
    pub tokens_remaining: Option<u64>,
    pub tokens_reset: Option<Duration>,
    /// What `retry-after-ms` / `Retry-After` asked for, when the response had it.
    pub retry_after: Option<Duration>,
    /// When the response carrying these headers arrived.
    pub observed_at: Option<std::time::Instant>,
}

/// Calls in flight now, and the most at once: two atomics that a provider can keep for
/// tests, benchmarks and metrics. [`InFlightGauge::enter`] counts a call until its guard
/// drops, which also happens when the call is cancelled.
#[derive(Debug, Default)]
pub struct InFlightGauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlightGauge {
    pub fn enter(&self) -> InFlightGuard<'_> {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        InFlightGuard(self)
    }

    pub fn now(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

/// One call counted by an [`InFlightGauge`].
pub struct InFlightGuard<'a>(&'a InFlightGauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The providers a run can use, by name, each with the [`Limiter`] that every run sharing
/// this set (and its clones) goes through.
#[derive(Clone, Default)]
pub struct Providers {
    /// Looked up for every call: an Fx map (the names are this process's own, not an
    /// attacker's, so SipHash's flood resistance buys nothing here and cost ~200
    /// instructions a lookup).
    by_name: rustc_hash::FxHashMap<String, (Arc<dyn LlmProvider>, Arc<Limiter>)>,
}

/// A model or fallback chain, resolved ([`Providers::chain`]).
pub type Chain<'a> = smallvec::SmallVec<[Link<'a>; 1]>;

/// One model of a fallback chain, resolved.
#[derive(Clone, Copy)]
pub struct Link<'a> {
    pub provider: &'a Arc<dyn LlmProvider>,
    pub limiter: &'a Arc<Limiter>,
    /// The model's name at its provider (after the slash).
    pub model: &'a str,
    /// `provider/model`.
    pub full: &'a str,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Providers").field("names", &names).finish()
    }
}

/// A model name that does not resolve to a registered provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(
        "model `{0}` is not of the form provider/model (for example `simulated/default` or `openai/gpt-4o`)"
    )]
    Malformed(String),
    #[error("unknown provider `{provider}` in model `{model}`; known providers: {known}")]
    UnknownProvider { provider: String, model: String, known: String },
}

impl Providers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a provider with default limits (no caps; a breaker per model).
    pub fn insert(&mut self, provider: Arc<dyn LlmProvider>) {
        self.insert_with_limits(provider, Limits::default());
    }

    /// Add a provider with its limits.
    pub fn insert_with_limits(&mut self, provider: Arc<dyn LlmProvider>, limits: Limits) {
        self.by_name.insert(provider.name().to_string(), (provider, Arc::new(Limiter::new(limits))));
    }

    /// Put `limiter` in place of `provider`'s own: how the runs of one process share one
    /// limiter per provider, though each run builds its providers. False if there is no
    /// such provider.
    pub fn set_limiter(&mut self, provider: &str, limiter: Arc<Limiter>) -> bool {
        match self.by_name.get_mut(provider) {
            Some(entry) => {
                entry.1 = limiter;
                true
            }
            None => false,
        }
    }

    /// The limiter of a provider.
    pub fn limiter(&self, provider: &str) -> Option<&Arc<Limiter>> {
        self.by_name.get(provider).map(|(_, l)| l)
    }

    /// Resolve a model or a fallback chain of them, `a/x,b/y`: the first serves, the next
    /// takes over when it keeps failing or its breaker is open.
    ///
    /// Resolved for every call, and held while the call waits: a chain of one model (the
    /// usual case) is kept inline rather than in a heap allocation of four links, which
    /// cost 192 bytes per waiting call and an allocation per call.
    pub fn chain<'s>(&'s self, models: &'s str) -> Result<Chain<'s>, ModelError> {
        // One model (the usual case) without the iterator chain, which cost ~500 instructions
        // a call collecting into the small vector through its `Result` adapter.
        if !models.contains(',') {
            let full = models.trim();
            let ((provider, limiter), model) = self.entry(full)?;
            return Ok(smallvec::smallvec![Link { provider, limiter, model, full }]);
        }
        models
            .split(',')
            .map(str::trim)
            .map(|full| {
                let ((provider, limiter), model) = self.entry(full)?;
                Ok(Link { provider, limiter, model, full })
            })
            .collect()
    }

    /// Check that every model of a chain resolves.
    pub fn check(&self, models: &str) -> Result<(), ModelError> {
        self.chain(models).map(|_| ())
    }

    pub fn with(mut self, provider: Arc<dyn LlmProvider>) -> Self {
        self.insert(provider);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// True when every registered provider is simulated.
    pub fn all_simulated(&self) -> bool {
        self.by_name.values().all(|(p, _)| p.is_simulated())
    }

    /// Registered provider names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort();
        names
    }

    /// Split `provider/model` and find the provider.
    pub fn resolve<'m>(&self, model: &'m str) -> Result<(&Arc<dyn LlmProvider>, &'m str), ModelError> {
        self.entry(model).map(|((provider, _), name)| (provider, name))
    }

    /// The provider of `provider/model` and its limiter (one lookup), and the model's name.
    #[allow(clippy::type_complexity)]
    fn entry<'m>(
        &self,
        model: &'m str,
    ) -> Result<((&Arc<dyn LlmProvider>, &Arc<Limiter>), &'m str), ModelError> {
        let (provider, name) = model
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty())
            .ok_or_else(|| ModelError::Malformed(model.to_string()))?;
        match self.by_name.get(provider) {
            Some((p, l)) => Ok(((p, l), name)),
            None => {
                let mut known: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
                known.sort();
                Err(ModelError::UnknownProvider {
                    provider: provider.to_string(),
                    model: model.to_string(),
                    known: if known.is_empty() { "(none)".into() } else { known.join(", ") },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn cache_tokens_are_part_of_the_input_and_priced_at_their_rates() {
        // 3500 input tokens of which 2000 were cache reads and 500 cache writes.
        let usage = Usage {
            input_tokens: 3500,
            output_tokens: 400,
            cache_read_tokens: 2000,
            cache_write_tokens: 500,
            reasoning_tokens: 0,
        };
        assert_eq!(usage.uncached_input_tokens(), 1000);
        assert_eq!(usage.total(), 3900);
        let price = Price::new(3.0, 15.0).with_cache(Some(0.30), Some(3.75));
        let expected = (1000.0 * 3.0 + 2000.0 * 0.30 + 500.0 * 3.75 + 400.0 * 15.0) / 1e6;
        assert!(close(price.cost(usage), expected), "{}", price.cost(usage));
        // Without cache rates, cache tokens cost what input costs.
        assert!(close(Price::new(3.0, 15.0).cost(usage), (3500.0 * 3.0 + 400.0 * 15.0) / 1e6));
        // The worst case bills all input at the dearer cache-write rate, so it bounds the cost.
        let worst = price.cost_of(3500, 400);
        assert!(close(worst, (3500.0 * 3.75 + 400.0 * 15.0) / 1e6));
        assert!(worst >= price.cost(usage));
        // A cache-read rate alone never raises the worst case above the input rate.
        assert!(close(Price::new(2.0, 8.0).with_cache(Some(0.5), None).cost_of(1000, 0), 2000.0 / 1e6));
    }

    #[test]
    fn usage_without_cache_fields_still_loads_and_stays_compact() {
        let old: Usage = serde_json::from_str(r#"{"input_tokens": 10, "output_tokens": 5}"#).unwrap();
        assert_eq!(old, Usage::new(10, 5));
        assert_eq!(serde_json::to_string(&old).unwrap(), r#"{"input_tokens":10,"output_tokens":5}"#);
        let old_price: Price =
            serde_json::from_str(r#"{"input_per_mtok": 1, "output_per_mtok": 2}"#).unwrap();
        assert_eq!(old_price, Price::new(1.0, 2.0));
        let mut sum = Usage::new(1, 2);
        sum.add(Usage {
            input_tokens: 10,
            output_tokens: 20,
            cache_read_tokens: 4,
            cache_write_tokens: 3,
            reasoning_tokens: 2,
        });
        assert_eq!(
            sum,
            Usage {
                input_tokens: 11,
                output_tokens: 22,
                cache_read_tokens: 4,
                cache_write_tokens: 3,
                reasoning_tokens: 2
            }
        );
    }
}

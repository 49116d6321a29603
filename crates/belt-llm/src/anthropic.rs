//! The Anthropic Messages adapter.
//!
//! It POSTs `{base_url}/v1/messages` (or `{base_url}/messages` when the base URL already
//! ends in `/v1`) with `x-api-key`, `anthropic-version: 2023-06-01` and any extra headers
//! (`anthropic-beta`, for instance). The system prompt is the top-level `system` field,
//! and `max_tokens`, which Anthropic requires, is the request's.
//!
//! - **Streaming** (the default) reads the named SSE events: `message_start` (the input
//!   tokens, with `cache_creation_input_tokens` and `cache_read_input_tokens`),
//!   `content_block_start` / `content_block_delta` (`text_delta` for text; a `tool_use`
//!   block's input arrives as `input_json_delta` pieces, assembled per block `index`;
//!   thinking and signature deltas are not part of the text), `message_delta` (cumulative
//!   `output_tokens`, and input figures when present, plus `stop_reason`),
//!   `message_stop` (the end), `ping` (ignored), and `error`, which Anthropic sends in the
//!   middle of a stream, usually `overloaded_error`, after a 200. That event becomes the
//!   error its type names (see `event_error`); a stream that ends before
//!   `message_stop` is a retryable [`LlmError::BadResponse`]. Unknown event types are
//!   ignored, as Anthropic's versioning policy asks, and so are events with empty data
//!   (keep-alives of proxies).
//! - **Non-streaming** reads one `message` object.
//!
//! Either way, a message with no content block and no stop reason is a retryable
//! [`LlmError::BadResponse`], not an empty answer; reading stops past
//! [`HttpOptions::max_body_bytes`](crate::http::HttpOptions::max_body_bytes) of body or,
//! streaming, past more text and tool input than `max_tokens` can be (see [`crate::http`]).
//!
//! Structured output (`LlmRequest::json_schema`) is a forced tool: see [`JsonMode`].
//!
//! Anthropic reports input tokens without the cached ones; the [`Completion`] counts
//! `input_tokens + cache_creation_input_tokens + cache_read_input_tokens` as input (every
//! token the model read) and keeps the cache figures apart for pricing.

use std::borrow::Cow;
use std::fmt;

use async_trait::async_trait;
use belt_core::llm::{
    CallInfo, LlmError, LlmProvider, LlmReply, LlmRequest, OutputSchema, Price, RateLimits, Role, ToolCall,
};
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;
use crate::http::{
    Completion, ConfigError, ErrorContext, HttpCore, Parsed, ProviderMessage, SseState, Wire, truncate,
};
use crate::json_reply;
use crate::sse::SseDecoder;
use belt_core::llm::Usage;

/// The API version belt speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// How a JSON reply (`LlmRequest::json`, `LlmRequest::json_schema`) is asked of Claude.
/// See [`crate::json_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonMode {
    /// With a schema, where the model's capabilities have `json_schema`: one tool named
    /// after the schema, whose `input_schema` is the schema, forced with `tool_choice:
    /// {"type": "tool", "name"}` (or `{"type": "any"}` when the request offers other
    /// tools too, so that the model may call those first); the tool's input is the reply.
    /// Without a schema: the instruction, as below.
    #[default]
    ForcedTool,
    /// The JSON instruction (and the schema) appended to the system prompt; the reply is
    /// then cleaned of code fences and prose ([`json_reply::clean`]).
    Instruction,
}

/// The description of the tool that carries a structured reply.
pub const OUTPUT_TOOL_DESCRIPTION: &str =
    "Give your final answer by calling this tool: its input is the answer, matching the schema.";

/// Configuration of an [`AnthropicProvider`]: the [`Endpoint`] and this wire format's own
/// option. `Debug` never shows the key or header values.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Name, base URL (e.g. `https://api.anthropic.com`), key, headers (`anthropic-beta`…),
    /// streaming, timeouts, prices.
    pub endpoint: Endpoint,
    pub json_mode: JsonMode,
}

impl AnthropicConfig {
    /// `endpoint` with this format's default, [`JsonMode::ForcedTool`].
    pub fn new(endpoint: Endpoint) -> Self {
        AnthropicConfig { endpoint, json_mode: JsonMode::ForcedTool }
    }
    pub fn json_mode(mut self, mode: JsonMode) -> Self {
        self.json_mode = mode;
        self
    }
}

impl From<Endpoint> for AnthropicConfig {
    fn from(endpoint: Endpoint) -> Self {
        AnthropicConfig::new(endpoint)
    }
}

/// An Anthropic Messages provider. See the [module docs](self).
pub struct AnthropicProvider {
    core: HttpCore,
    json_mode: JsonMode,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("core", &self.core)
            .field("json_mode", &self.json_mode)
            .finish()
    }
}

impl AnthropicProvider {
    /// The provider of `config`, or of an [`Endpoint`] with this format's default.
    pub fn new(config: impl Into<AnthropicConfig>) -> Result<Self, ConfigError> {
        let config = config.into();
        // A base URL that already ends in `/v1` is not given a second one.
        let path = if config.endpoint.base_url.trim().trim_end_matches('/').ends_with("/v1") {
            "/messages"
        } else {
            "/v1/messages"
        };
        let wire = Wire {
            path,
            key_header: ("x-api-key", ""),
            fixed_headers: &[("anthropic-version", ANTHROPIC_VERSION)],
        };
        let core = HttpCore::new(&config.endpoint, wire)?;
        Ok(AnthropicProvider { core, json_mode: config.json_mode })
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.core.url
    }

    /// One call, with everything the response said (see [`Completion`]).
    /// [`LlmProvider::complete`] is this call's `reply`.
    pub async fn call(&self, model: &str, request: &LlmRequest) -> Result<Completion, LlmError> {
        let result = self.call_inner(model, request).await;
        result.map_err(|e| self.core.secrets.redact_error(e))
    }

    async fn call_inner(&self, model: &str, request: &LlmRequest) -> Result<Completion, LlmError> {
        let output = self.output_tool(model, request);
        let body = self.body(model, request, output)?;
        let (response, meta) = self.core.post(model, body).await?;
        let ctx = self.core.context(model);
        let mut parsed = if self.core.stream && !meta.json_body {
            self.read_stream(&ctx, response, request.max_tokens, output.map(|s| s.name.as_str())).await?
        } else {
            let body = self.core.read_body(response).await?;
            parse_whole(&ctx, &body)?
        };
        if let Some(schema) = output {
            take_output(&mut parsed, schema);
        }
        Ok(self.core.completion(model, request, parsed, meta))
    }

    /// The schema a forced tool carries the reply of, when this request gets one.
    fn output_tool<'r>(&self, model: &str, request: &'r LlmRequest) -> Option<&'r OutputSchema> {
        let schema = request.json_schema.as_deref()?;
        let caps = self.core.prices.capabilities(&self.core.price_provider, model);
        (self.json_mode == JsonMode::ForcedTool && caps.is_none_or(|c| c.json_schema)).then_some(schema)
    }

    /// The request body.
    fn body(
        &self,
        model: &str,
        request: &LlmRequest,
        output: Option<&OutputSchema>,
    ) -> Result<Vec<u8>, LlmError> {
        let instruct = (request.json || request.json_schema.is_some()) && output.is_none();
        let system: Option<Cow<'_, str>> = if instruct {
            Some(json_reply::instruction(request.system.as_deref(), request.json_schema.as_deref()).into())
        } else {
            request.system.as_deref().filter(|s| !s.is_empty()).map(Into::into)
        };
        let mut tools: Vec<ToolDef<'_>> = request
            .tools
            .iter()
            .map(|t| ToolDef {
                name: &t.name,
                description: &t.description,
                input_schema: Cow::Borrowed(&t.parameters),
            })
            .collect();
        if let Some(s) = output {
            tools.push(ToolDef {
                name: &s.name,
                description: OUTPUT_TOOL_DESCRIPTION,
                input_schema: json_reply::wrap(s),
            });
        }
        // The output tool is forced; with other tools offered too, any tool is (the
        // model may call those first, and ends by calling the output tool).
        let tool_choice = output.map(|s| {
            if request.tools.is_empty() {
                ToolChoice { kind: "tool", name: Some(&s.name) }
            } else {
                ToolChoice { kind: "any", name: None }
            }
        });
        let body = MessagesRequest {
            model,
            max_tokens: request.max_tokens.max(1),
            system,
            messages: messages(&request.messages),
            temperature: request.temperature,
            tools,
            tool_choice,
            stream: self.core.stream,
        };
        serde_json::to_vec(&body)
            .map_err(|e| LlmError::InvalidRequest(format!("the request could not be encoded as JSON: {e}")))
    }

    async fn read_stream(
        &self,
        ctx: &ErrorContext<'_>,
        response: reqwest::Response,
        max_tokens: u32,
        output_tool: Option<&str>,
    ) -> Result<Parsed, LlmError> {
        let mut state =
            StreamState { output_tool: output_tool.map(str::to_string), ..StreamState::default() };
        let decoder = self.core.read_sse(ctx, response, max_tokens, &mut state).await?;
        state.finish(ctx, &decoder)
    }
}

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.core.name
    }

    fn price(&self, model: &str) -> Option<Price> {
        self.core.price(model)
    }

    async fn complete(
        &self,
        model: &str,
        request: &LlmRequest,
        _call: &CallInfo,
    ) -> Result<LlmReply, LlmError> {
        self.call(model, request).await.map(|c| c.reply)
    }

    fn rate_limits(&self, model: &str) -> Option<RateLimits> {
        self.core.rate_limits(model)
    }
}

// --- request ---

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    stream: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Content<'a>,
}

/// A turn's content: plain text, or blocks when it holds tool calls or results.
#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(&'a str),
    Blocks(Vec<ContentBlock<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Cow<'a, serde_json::Value>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

/// The wire turns of `messages`: an assistant turn that called tools becomes text and
/// `tool_use` blocks; consecutive tool results become one user turn of `tool_result`
/// blocks (Anthropic wants every result of a turn's calls in the next user turn).
fn messages(messages: &[belt_core::llm::Message]) -> Vec<Message<'_>> {
    let mut out: Vec<Message<'_>> = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role {
            Role::User => out.push(Message { role: "user", content: Content::Text(&m.content) }),
            Role::Assistant if m.tool_calls.is_empty() => {
                out.push(Message { role: "assistant", content: Content::Text(&m.content) })
            }
            Role::Assistant => {
                let mut blocks = Vec::with_capacity(m.tool_calls.len() + 1);
                if !m.content.trim().is_empty() {
                    blocks.push(ContentBlock::Text { text: &m.content });
                }
                for c in &m.tool_calls {
                    // Input that did not parse as JSON is sent as an empty object (the
                    // result that follows tells the model what was wrong).
                    let input = match &c.arguments {
                        serde_json::Value::Object(_) => Cow::Borrowed(&c.arguments),
                        _ => Cow::Owned(serde_json::json!({})),
                    };
                    blocks.push(ContentBlock::ToolUse { id: &c.id, name: &c.name, input });
                }
                out.push(Message { role: "assistant", content: Content::Blocks(blocks) });
            }
            Role::Tool => {
                let block = ContentBlock::ToolResult {
                    tool_use_id: m.tool_call_id.as_deref().unwrap_or(""),
                    content: &m.content,
                    is_error: m.is_error,
                };
                match out.last_mut() {
                    Some(Message { role: "user", content: Content::Blocks(blocks) })
                        if blocks.iter().all(|b| matches!(b, ContentBlock::ToolResult { .. })) =>
                    {
                        blocks.push(block)
                    }
                    _ => out.push(Message { role: "user", content: Content::Blocks(vec![block]) }),
                }
            }
        }
    }
    out
}

#[derive(Serialize)]
struct ToolDef<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: Cow<'a, serde_json::Value>,
}

#[derive(Serialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// Make the forced tool's input the reply's text: unwrapped if its schema was wrapped,
/// with the stop reason of a finished answer (Anthropic says `tool_use`).
fn take_output(parsed: &mut Parsed, schema: &OutputSchema) {
    let Some(at) = parsed.tool_calls.iter().position(|c| c.name == schema.name) else { return };
    let call = parsed.tool_calls.remove(at);
    let text = match call.arguments {
        serde_json::Value::String(raw) => raw, // did not parse: left for the engine to report
        value if !schema.root_is_object() => match value {
            serde_json::Value::Object(mut o) => o.remove(json_reply::WRAPPED).unwrap_or_default().to_string(),
            other => other.to_string(),
        },
        value => value.to_string(),
    };
    parsed.text = text;
    if parsed.finish.as_deref() == Some("tool_use") && parsed.tool_calls.is_empty() {
        parsed.finish = Some("end_turn".into());
    }
}

// --- response ---

#[derive(Deserialize, Default, Clone, Copy)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// Fields present in `later` replace these (`message_delta` over `message_start`).
    fn update(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens =
            later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }

    fn tokens(&self) -> Usage {
        let cache_write = self.cache_creation_input_tokens.unwrap_or(0);
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0) + cache_write + cache_read,
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: 0,
        }
    }
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    message: Option<MessageStart>,
    #[serde(default, borrow)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default, borrow)]
    content_block: Option<Block<'a>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct MessageStart {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    /// A piece of a `tool_use` block's input (`input_json_delta`).
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Whole {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    content: Vec<WholeBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WholeBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

/// A `tool_use` block being streamed.
struct ToolBlock {
    index: u64,
    id: String,
    name: String,
    /// The input given in `content_block_start` (Anthropic sends `{}` and streams the rest).
    start: Option<serde_json::Value>,
    /// The `input_json_delta` pieces so far.
    json: String,
}

impl ToolBlock {
    fn finish(self) -> ToolCall {
        let arguments = if self.json.trim().is_empty() {
            self.start.unwrap_or_else(|| serde_json::json!({}))
        } else {
            serde_json::from_str(&self.json).unwrap_or(serde_json::Value::String(self.json))
        };
        ToolCall { id: self.id, name: self.name, arguments }
    }
}

#[derive(Default)]
struct StreamState {
    text: String,
    usage: Option<AnthropicUsage>,
    stop_reason: Option<String>,
    served_model: Option<String>,
    tools: Vec<ToolBlock>,
    /// The tool whose input is the reply (structured output): its input is streamed as text.
    output_tool: Option<String>,
    done: bool,
    /// `content_block_start` events, of any block type.
    blocks: u64,
    /// Bytes of text and tool input so far.
    output: usize,
}

impl SseState for StreamState {
    fn event(&mut self, ctx: &ErrorContext<'_>, name: &str, data: &str) -> Result<(), LlmError> {
        self.read(ctx, name, data)
    }

    fn done(&self) -> bool {
        self.done
    }

    fn output_bytes(&self) -> usize {
        self.output
    }
}

impl StreamState {
    fn read(&mut self, ctx: &ErrorContext<'_>, name: &str, data: &str) -> Result<(), LlmError> {
        // An event with empty data (a proxy's keep-alive) says nothing.
        if self.done || data.trim().is_empty() {
            return Ok(());
        }
        let event: Event<'_> = serde_json::from_str(data).map_err(|e| {
            LlmError::BadResponse(format!(
                "{} sent a `{name}` event that is not valid JSON ({e}): {}",
                ctx.provider,
                truncate(data, 200)
            ))
        })?;
        // The JSON `type` and the SSE event name agree; the JSON is authoritative.
        match event.kind.as_deref().unwrap_or(name) {
            "message_start" => {
                if let Some(message) = event.message {
                    self.served_model = message.model;
                    // No usage is not zero usage: without any, the reply's figures are
                    // estimates, and say so.
                    if let Some(later) = message.usage {
                        let mut usage = self.usage.unwrap_or_default();
                        usage.update(later);
                        self.usage = Some(usage);
                    }
                }
            }
            "content_block_start" => match event.content_block {
                Some(Block { kind, text: Some(text), .. }) if kind == "text" => {
                    self.blocks += 1;
                    belt_core::llm::stream_delta(&text);
                    self.output += text.len();
                    self.text.push_str(&text);
                }
                Some(Block { kind, id, name, input, .. }) if kind == "tool_use" => {
                    self.blocks += 1;
                    self.tools.push(ToolBlock {
                        index: event.index.unwrap_or(self.tools.len() as u64),
                        id: id.unwrap_or_default(),
                        name: name.unwrap_or_default(),
                        start: input,
                        json: String::new(),
                    });
                }
                Some(_) => self.blocks += 1,
                None => {}
            },
            "content_block_delta" => match event.delta {
                Some(EventDelta { kind, text: Some(text), .. })
                    if kind.as_deref().is_none_or(|k| k == "text_delta") =>
                {
                    belt_core::llm::stream_delta(&text);
                    self.output += text.len();
                    self.text.push_str(&text);
                }
                Some(EventDelta { kind, partial_json: Some(json), .. })
                    if kind.as_deref() == Some("input_json_delta") =>
                {
                    // Pieces go to the block of the event's index (the last one if absent).
                    let block = match event.index {
                        Some(i) => self.tools.iter_mut().rev().find(|b| b.index == i),
                        None => self.tools.last_mut(),
                    };
                    if let Some(block) = block {
                        if self.output_tool.as_deref() == Some(block.name.as_str()) {
                            belt_core::llm::stream_delta(&json);
                        }
                        self.output += json.len();
                        block.json.push_str(&json);
                    }
                }
                _ => {}
            },
            "message_delta" => {
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason);
                }
                if let Some(later) = event.usage {
                    let mut usage = self.usage.unwrap_or_default();
                    usage.update(later);
                    self.usage = Some(usage);
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let error = event.error.unwrap_or(serde_json::Value::Null);
                return Err(event_error(ctx, &error, self.text.len()));
            }
            _ => {} // ping, content_block_stop, and event types added later
        }
        Ok(())
    }

    fn finish(self, ctx: &ErrorContext<'_>, decoder: &SseDecoder) -> Result<Parsed, LlmError> {
        if !self.done {
            return Err(LlmError::BadResponse(format!(
                "the stream from {} ended before its end (no `message_stop`) after {} events and {} bytes; \
                 the reply is incomplete",
                ctx.provider,
                decoder.events(),
                decoder.bytes()
            )));
        }
        if self.blocks == 0 && self.stop_reason.is_none() {
            return Err(LlmError::BadResponse(format!(
                "the stream from {} had no content block and no stop reason ({} events, then `message_stop`): \
                 nothing was answered",
                ctx.provider,
                decoder.events()
            )));
        }
        Ok(Parsed {
            text: self.text,
            finish: self.stop_reason,
            usage: self.usage.map(|u| u.tokens()),
            served_model: self.served_model,
            tool_calls: self.tools.into_iter().map(ToolBlock::finish).collect(),
        })
    }
}

/// An `error` event in the middle of a stream (or an error object in a 200 body), by its
/// `type`: `overloaded_error` → [`LlmError::Overloaded`], `rate_limit_error` →
/// [`LlmError::RateLimited`], `api_error` → [`LlmError::Server`] 500, `timeout_error` →
/// [`LlmError::Server`] 504, `authentication_error`/`permission_error` →
/// [`LlmError::Auth`], `not_found_error` → [`LlmError::UnknownModel`],
/// `invalid_request_error`/`request_too_large`/`billing_error` →
/// [`LlmError::InvalidRequest`] ("prompt is too long: …" → [`LlmError::PromptTooLong`]);
/// any other type → [`LlmError::BadResponse`] (retryable).
pub(crate) fn event_error(ctx: &ErrorContext<'_>, error: &serde_json::Value, text_so_far: usize) -> LlmError {
    let wrapped = serde_json::json!({ "error": error });
    let detail = ProviderMessage::from_value(&wrapped).unwrap_or_default();
    let kind = detail.kind.clone().unwrap_or_else(|| "unknown".into());
    let message = format!(
        "{} sent an error in the middle of its stream ({kind}) after {text_so_far} bytes of text: {}",
        ctx.provider, detail.message
    );
    if let Some(overflow) = detail.prompt_too_long(&message, kind == "invalid_request_error") {
        return overflow;
    }
    match kind.as_str() {
        "overloaded_error" => LlmError::Overloaded { message },
        "rate_limit_error" => LlmError::RateLimited { retry_after: None, message },
        "api_error" => LlmError::Server { status: 500, message },
        "timeout_error" => LlmError::Server { status: 504, message },
        "authentication_error" | "permission_error" => LlmError::Auth(message),
        "not_found_error" => LlmError::UnknownModel { model: ctx.model.to_string(), message },
        "billing_error" => {
            LlmError::InvalidRequest(format!("{message}; check the account's plan and billing"))
        }
        "invalid_request_error" | "request_too_large" => LlmError::InvalidRequest(message),
        _ => LlmError::BadResponse(message),
    }
}

/// A whole `message` body.
fn parse_whole(ctx: &ErrorContext<'_>, body: &[u8]) -> Result<Parsed, LlmError> {
    let whole: Whole = serde_json::from_slice(body).map_err(|e| {
        LlmError::BadResponse(format!(
            "{} sent a response that is not a message ({e}): {}",
            ctx.provider,
            truncate(&String::from_utf8_lossy(body), 200)
        ))
    })?;
    if whole.kind.as_deref() == Some("error") || whole.error.is_some() {
        return Err(event_error(ctx, whole.error.as_ref().unwrap_or(&serde_json::Value::Null), 0));
    }
    if whole.content.is_empty() && whole.stop_reason.is_none() {
        return Err(LlmError::BadResponse(format!(
            "{} sent a message with no content block and no stop reason: nothing was answered",
            ctx.provider
        )));
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in whole.content {
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or("")),
            "tool_use" => tool_calls.push(ToolCall {
                id: block.id.unwrap_or_default(),
                name: block.name.unwrap_or_default(),
                arguments: block.input.unwrap_or_else(|| serde_json::json!({})),
            }),
            _ => {} // thinking, and block types added later
        }
    }
    Ok(Parsed {
        text,
        finish: whole.stop_reason,
        usage: whole.usage.map(|u| u.tokens()),
        served_model: whole.model,
        tool_calls,
    })
}

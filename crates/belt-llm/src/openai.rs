//! The OpenAI Chat Completions adapter: one wire format for OpenAI and every server that
//! speaks it (xAI, Groq, OpenRouter, DeepSeek, Mistral, Gemini's OpenAI endpoint, Ollama,
//! vLLM, LM Studio, llama.cpp).
//!
//! It POSTs `{base_url}/chat/completions` with `Authorization: Bearer KEY` (when a key is
//! configured) and any extra headers, and reads the reply either as a stream or whole:
//!
//! - **Streaming** (the default): `stream: true` with `stream_options.include_usage`, so
//!   that the server reports usage in a last chunk. That chunk comes as `choices: []`
//!   (OpenAI) or `choices: [{"delta": {}}]` (some compatibles); usage is taken from
//!   whichever chunk carries it (Mistral sends it with the finish reason, Groq also under
//!   `x_groq.usage`). The stream ends at `data: [DONE]`. A body that ends before it is a
//!   [`LlmError::BadResponse`] (retryable), unless the finish reason and the usage have
//!   both arrived, when nothing is lost. Comments and keep-alives are skipped, and any
//!   framing (LF, CRLF, chunk splits at any byte) is handled by [`crate::sse`]. An
//!   `error` object inside the stream (OpenRouter, vLLM, llama.cpp) becomes the matching
//!   error: llama.cpp's `{"error":{"code":500,"message":"Context size has been exceeded.",…}}`
//!   (its unified KV cache ran out) is [`LlmError::PromptTooLong`], not a server error.
//! - **Non-streaming**: one `chat.completion` object.
//!
//! Either way, a reply without any choice (say `choices: []` chunks, usage and
//! `[DONE]`), or whose choice has no text, tool call or finish reason, is a retryable
//! [`LlmError::BadResponse`], not an empty answer. Reading stops, with a
//! [`LlmError::BadResponse`] naming the limit, past
//! [`HttpOptions::max_body_bytes`](crate::http::HttpOptions::max_body_bytes) of body or,
//! streaming, past more text and tool input than the request's `max_tokens` can be (16
//! bytes a token + 32 KiB).
//!
//! A server that answers a streaming request with a plain JSON body (some do for errors
//! or when they ignore `stream`) is read as non-streaming.
//!
//! Cached input tokens come from `usage.prompt_tokens_details.cached_tokens` (OpenAI, xAI,
//! Groq, OpenRouter…) or `prompt_cache_hit_tokens` (DeepSeek); reasoning tokens from
//! `completion_tokens_details.reasoning_tokens`. `prompt_tokens` already includes cached
//! tokens. When the server reports no usage at all, the [`Completion`] carries upper
//! bounds and says so.
//!
//! Two parameters differ between servers, and both are configurable: the name of the
//! output cap ([`MaxTokensField`]: OpenAI's reasoning models require
//! `max_completion_tokens`, while many compatible servers only know `max_tokens`), and how
//! JSON is asked for ([`JsonMode`]). `temperature` is left out for models whose
//! capabilities say they reject it (OpenAI's reasoning models).
//!
//! For a server of the user's own (a local provider, or a base URL on a loopback or
//! private address), [`LlmProvider::capabilities`] and [`LlmProvider::server_slots`] ask
//! the server for its context window and slots once (see [`crate::discovery`]) when the
//! configuration and the shipped table do not give a window.

use std::fmt;

use async_trait::async_trait;
use belt_core::llm::{
    CallInfo, Capabilities, LlmError, LlmProvider, LlmReply, LlmRequest, Message, Price, RateLimits, Role,
    ToolCall,
};
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;
use crate::http::{
    Completion, ConfigError, ErrorContext, HttpCore, Parsed, ProviderMessage, SseState, Wire, truncate,
};
use crate::json_reply;
use crate::sse::SseDecoder;
use belt_core::llm::Usage;

/// The Chat Completions path, and the key as a bearer token.
const WIRE: Wire =
    Wire { path: "/chat/completions", key_header: ("authorization", "Bearer "), fixed_headers: &[] };

/// Which field carries `LlmRequest::max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaxTokensField {
    /// `max_completion_tokens` on `api.openai.com`, `max_tokens` elsewhere.
    #[default]
    Auto,
    /// `max_tokens`: what most compatible servers (and OpenAI's older models) take.
    MaxTokens,
    /// `max_completion_tokens`: required by OpenAI's reasoning models.
    MaxCompletionTokens,
}

/// How a JSON reply (`LlmRequest::json`, `LlmRequest::json_schema`) is asked for. See
/// [`crate::json_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonMode {
    /// `response_format`, as strong as the model's capabilities allow: with a schema,
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}` where the
    /// model has `json_schema`; otherwise `{"type": "json_object"}` where it has
    /// `json_object`, with the JSON instruction (and the schema) in the system prompt
    /// (OpenAI rejects JSON mode when no message says "JSON"); otherwise the instruction
    /// only.
    #[default]
    JsonObject,
    /// Only the instruction (and the schema) in the system prompt, for servers that
    /// reject `response_format`.
    Instruction,
}

/// What a request's body asks for JSON with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonFormat {
    /// `response_format` `json_schema`; `wrapped` when a non-object root was wrapped.
    Schema {
        wrapped: bool,
    },
    Object,
    Instruction,
}

/// Configuration of an [`OpenAiProvider`]: the [`Endpoint`] and this wire format's own
/// options. `Debug` never shows the key or header values.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Name, base URL (requests go to `{base_url}/chat/completions`), key, headers,
    /// streaming, timeouts, prices.
    pub endpoint: Endpoint,
    /// Send `stream_options: {"include_usage": true}` when streaming. Default true; turn it
    /// off for servers that reject unknown fields (they usually report usage anyway).
    pub include_usage: bool,
    pub max_tokens_field: MaxTokensField,
    pub json_mode: JsonMode,
}

impl OpenAiConfig {
    /// `endpoint` with this format's defaults: usage asked for, [`MaxTokensField::Auto`],
    /// [`JsonMode::JsonObject`].
    pub fn new(endpoint: Endpoint) -> Self {
        OpenAiConfig {
            endpoint,
            include_usage: true,
            max_tokens_field: MaxTokensField::Auto,
            json_mode: JsonMode::JsonObject,
        }
    }
    pub fn include_usage(mut self, include: bool) -> Self {
        self.include_usage = include;
        self
    }
    pub fn max_tokens_field(mut self, field: MaxTokensField) -> Self {
        self.max_tokens_field = field;
        self
    }
    pub fn json_mode(mut self, mode: JsonMode) -> Self {
        self.json_mode = mode;
        self
    }
}

impl From<Endpoint> for OpenAiConfig {
    fn from(endpoint: Endpoint) -> Self {
        OpenAiConfig::new(endpoint)
    }
}

/// An OpenAI-compatible provider. See the [module docs](self).
pub struct OpenAiProvider {
    core: HttpCore,
    discovery: crate::discovery::Discovery,
    include_usage: bool,
    completion_tokens_field: bool,
    json_mode: JsonMode,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("core", &self.core)
            .field("include_usage", &self.include_usage)
            .field("json_mode", &self.json_mode)
            .finish()
    }
}

impl OpenAiProvider {
    /// The provider of `config`, or of an [`Endpoint`] with this format's defaults.
    pub fn new(config: impl Into<OpenAiConfig>) -> Result<Self, ConfigError> {
        let config = config.into();
        let core = HttpCore::new(&config.endpoint, WIRE)?;
        let completion_tokens_field = match config.max_tokens_field {
            MaxTokensField::MaxTokens => false,
            MaxTokensField::MaxCompletionTokens => true,
            MaxTokensField::Auto => {
                reqwest::Url::parse(&core.base_url).is_ok_and(|u| u.host_str() == Some("api.openai.com"))
            }
        };
        Ok(OpenAiProvider {
            core,
            discovery: crate::discovery::Discovery::default(),
            include_usage: config.include_usage,
            completion_tokens_field,
            json_mode: config.json_mode,
        })
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
        let (body, format) = self.body(model, request)?;
        let (response, meta) = self.core.post(model, body).await?;
        let ctx = self.core.context(model);
        let parsed = if self.core.stream && !meta.json_body {
            self.read_stream(&ctx, response, request.max_tokens).await?
        } else {
            let body = self.core.read_body(response).await?;
            parse_whole(&ctx, &body)?
        };
        let mut completion = self.core.completion(model, request, parsed, meta);
        if format == Some(JsonFormat::Schema { wrapped: true })
            && let Some(inner) = json_reply::unwrap(&completion.reply.text)
        {
            completion.reply.text = inner;
        }
        Ok(completion)
    }

    /// How `request` asks for JSON from `model`, if it does.
    fn json_format(&self, model: &str, request: &LlmRequest) -> Option<JsonFormat> {
        if !request.json && request.json_schema.is_none() {
            return None;
        }
        if self.json_mode == JsonMode::Instruction {
            return Some(JsonFormat::Instruction);
        }
        let caps = self.core.prices.capabilities(&self.core.price_provider, model);
        Some(match &request.json_schema {
            Some(schema) if caps.is_none_or(|c| c.json_schema) => {
                JsonFormat::Schema { wrapped: !schema.root_is_object() }
            }
            _ if caps.is_none_or(|c| c.json_object) => JsonFormat::Object,
            _ => JsonFormat::Instruction,
        })
    }

    /// The request body, and how it asks for JSON.
    fn body(&self, model: &str, request: &LlmRequest) -> Result<(Vec<u8>, Option<JsonFormat>), LlmError> {
        let caps = self.core.prices.capabilities(&self.core.price_provider, model);
        let format = self.json_format(model, request);
        let schema = request.json_schema.as_deref();
        // The instruction goes in when JSON is asked by instruction only; in JSON object
        // mode when there is a schema to describe, or when the messages never say "JSON"
        // (OpenAI's JSON mode requires the word). A server-enforced schema needs none.
        let instruct = match format {
            None | Some(JsonFormat::Schema { .. }) => false,
            Some(JsonFormat::Instruction) => true,
            Some(JsonFormat::Object) => {
                schema.is_some()
                    || !json_reply::mentions_json(
                        request
                            .system
                            .iter()
                            .map(String::as_str)
                            .chain(request.messages.iter().map(|m| m.content.as_str())),
                    )
            }
        };
        let system = if instruct {
            Some(json_reply::instruction(request.system.as_deref(), schema).into())
        } else {
            request.system.as_deref().map(Into::into)
        };
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if let Some(content) = system {
            messages.push(ChatMessage::text("system", content));
        }
        messages.extend(request.messages.iter().map(ChatMessage::from_message));
        let tools: Vec<WireTool<'_>> = request
            .tools
            .iter()
            .map(|t| WireTool {
                kind: "function",
                function: WireFunction {
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                    strict: t.strict.then_some(true),
                },
            })
            .collect();
        let temperature = request.temperature.filter(|_| caps.is_none_or(|c| c.temperature));
        let (max_tokens, max_completion_tokens) = if self.completion_tokens_field {
            (None, Some(request.max_tokens))
        } else {
            (Some(request.max_tokens), None)
        };
        let response_format = match (format, schema) {
            (Some(JsonFormat::Schema { .. }), Some(s)) => Some(ResponseFormat {
                kind: "json_schema",
                json_schema: Some(SchemaFormat {
                    name: &s.name,
                    schema: json_reply::wrap(s),
                    strict: s.strict,
                }),
            }),
            (Some(JsonFormat::Object), _) => Some(ResponseFormat { kind: "json_object", json_schema: None }),
            _ => None,
        };
        let body = ChatRequest {
            model,
            messages,
            max_tokens,
            max_completion_tokens,
            temperature,
            stream: self.core.stream,
            stream_options: (self.core.stream && self.include_usage)
                .then_some(StreamOptions { include_usage: true }),
            response_format,
            tools,
        };
        // Sized for the usual body at once, rather than grown from 128 bytes by doubling.
        let text: usize = body.messages.iter().filter_map(|m| m.content.as_ref()).map(|c| c.len()).sum();
        let mut bytes = Vec::with_capacity(256 + text + text / 8);
        serde_json::to_writer(&mut bytes, &body).map_err(|e| {
            LlmError::InvalidRequest(format!("the request could not be encoded as JSON: {e}"))
        })?;
        Ok((bytes, format))
    }

    async fn read_stream(
        &self,
        ctx: &ErrorContext<'_>,
        response: reqwest::Response,
        max_tokens: u32,
    ) -> Result<Parsed, LlmError> {
        let mut state = StreamState::default();
        let decoder = self.core.read_sse(ctx, response, max_tokens, &mut state).await?;
        state.finish(ctx, &decoder, self.include_usage)
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
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

    /// Configured or shipped figures first; for a local server, the window and vision
    /// the server reports (see [`crate::discovery`]).
    async fn capabilities(&self, model: &str) -> Option<Capabilities> {
        let known = self.core.prices.capabilities(&self.core.price_provider, model);
        if !self.core.is_local() || known.is_some_and(|c| c.context_window.is_some()) {
            return known;
        }
        let found = self.discovery.get(&self.core, model).await;
        let mut caps = known.unwrap_or(Capabilities {
            streaming: true,
            json_object: true,
            temperature: true,
            ..Capabilities::default()
        });
        if let Some(found) = found {
            caps.context_window = found.context_window;
            caps.vision |= found.vision;
        }
        Some(caps)
    }

    /// llama.cpp's `total_slots`, for a local server that says it.
    async fn server_slots(&self) -> Option<usize> {
        if !self.core.is_local() {
            return None;
        }
        self.discovery.get(&self.core, "").await?.slots
    }
}

// --- request ---

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<ChatMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'static str,
    /// `null` for an assistant turn that only calls tools.
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> ChatMessage<'a> {
    fn text(role: &'static str, content: std::borrow::Cow<'a, str>) -> Self {
        ChatMessage { role, content: Some(content), tool_calls: Vec::new(), tool_call_id: None }
    }

    fn from_message(m: &'a Message) -> Self {
        match m.role {
            Role::User => ChatMessage::text("user", m.content.as_str().into()),
            Role::Assistant if m.tool_calls.is_empty() => {
                ChatMessage::text("assistant", m.content.as_str().into())
            }
            Role::Assistant => ChatMessage {
                role: "assistant",
                content: (!m.content.is_empty()).then(|| m.content.as_str().into()),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| WireToolCall {
                        id: &c.id,
                        kind: "function",
                        function: WireCall {
                            name: &c.name,
                            // The model's own text when it did not parse, else the JSON.
                            arguments: match &c.arguments {
                                serde_json::Value::String(raw) => raw.as_str().into(),
                                other => other.to_string().into(),
                            },
                        },
                    })
                    .collect(),
                tool_call_id: None,
            },
            // OpenAI has no error flag on tool results: the text says so.
            Role::Tool => ChatMessage {
                role: "tool",
                content: Some(if m.is_error {
                    format!("Error: {}", m.content).into()
                } else {
                    m.content.as_str().into()
                }),
                tool_calls: Vec::new(),
                tool_call_id: Some(m.tool_call_id.as_deref().unwrap_or("")),
            },
        }
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireCall<'a>,
}

#[derive(Serialize)]
struct WireCall<'a> {
    name: &'a str,
    arguments: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// `response_format`: `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": …}`.
#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<SchemaFormat<'a>>,
}

#[derive(Serialize)]
struct SchemaFormat<'a> {
    name: &'a str,
    schema: std::borrow::Cow<'a, serde_json::Value>,
    strict: bool,
}

// --- response ---

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: FirstChoice<'a>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    x_groq: Option<XGroq>,
    /// Borrowed: every chunk names the model, and only the first one's is kept.
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// A chunk's `choices`: the first one, if any. Later ones (a server may send several) are
/// read and dropped as they come, so that a chunk costs no `Vec`.
#[derive(Default)]
struct FirstChoice<'a>(Option<ChunkChoice<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for FirstChoice<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<ChunkChoice<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = FirstChoice<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                let first = seq.next_element::<ChunkChoice<'a>>()?;
                // Each read as a choice, so that a malformed one fails as it did in a `Vec`.
                while seq.next_element::<ChunkChoice<'a>>()?.is_some() {}
                Ok(FirstChoice(first))
            }
        }
        deserializer.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a streamed tool call: the first piece of a call has its `id` and name,
/// the next ones pieces of its arguments, all under the call's `index`.
#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// A tool call as a whole response has it (`arguments` is JSON text).
#[derive(Deserialize)]
struct WholeToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

/// A tool call being assembled from a stream.
#[derive(Default)]
struct PendingCall {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

impl PendingCall {
    fn finish(self) -> ToolCall {
        ToolCall { id: self.id, name: self.name, arguments: arguments(self.arguments) }
    }
}

/// Arguments' JSON text as a value: `{}` when empty, the text itself (a JSON string) when
/// it does not parse, so the loop can tell the model.
fn arguments(text: String) -> serde_json::Value {
    if text.trim().is_empty() {
        return serde_json::json!({});
    }
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

#[derive(Deserialize)]
struct XGroq {
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct Whole {
    #[serde(default)]
    choices: Vec<WholeChoice>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WholeChoice {
    #[serde(default)]
    message: Option<WholeMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WholeMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WholeToolCall>>,
}

#[derive(Deserialize, Default)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek's name for cached input tokens.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl OpenAiUsage {
    fn tokens(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cache_read_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .or(self.prompt_cache_hit_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// What a stream has said so far.
#[derive(Default)]
struct StreamState {
    parsed: Parsed,
    refusal: String,
    calls: Vec<PendingCall>,
    done: bool,
    /// Chunks read, and how many of them had `choices: []`.
    chunks: u64,
    without_choices: u64,
    /// Bytes of text, refusal and tool calls so far.
    output: usize,
}

impl SseState for StreamState {
    fn event(&mut self, ctx: &ErrorContext<'_>, _name: &str, data: &str) -> Result<(), LlmError> {
        self.chunk(ctx, data)
    }

    fn done(&self) -> bool {
        self.done
    }

    fn output_bytes(&self) -> usize {
        self.output
    }
}

impl StreamState {
    fn chunk(&mut self, ctx: &ErrorContext<'_>, data: &str) -> Result<(), LlmError> {
        if self.done {
            return Ok(());
        }
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| {
            LlmError::BadResponse(format!(
                "{} sent a stream event that is not a valid chunk ({e}): {}",
                ctx.provider,
                truncate(data, 200)
            ))
        })?;
        if let Some(error) = &chunk.error {
            return Err(stream_error(ctx, error));
        }
        self.chunks += 1;
        if chunk.choices.0.is_none() {
            self.without_choices += 1;
        }
        if self.parsed.served_model.is_none() {
            self.parsed.served_model = chunk.model.map(std::borrow::Cow::into_owned);
        }
        if let Some(usage) = chunk.usage.or_else(|| chunk.x_groq.and_then(|x| x.usage)) {
            self.parsed.usage = Some(usage.tokens());
        }
        if let Some(choice) = chunk.choices.0 {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content {
                    belt_core::llm::stream_delta(&text);
                    self.output += text.len();
                    self.parsed.text.push_str(&text);
                }
                if let Some(refusal) = delta.refusal {
                    self.output += refusal.len();
                    self.refusal.push_str(&refusal);
                }
                for piece in delta.tool_calls.into_iter().flatten() {
                    self.tool_call(piece);
                }
            }
            if let Some(reason) = choice.finish_reason {
                if reason == "error" {
                    return Err(LlmError::BadResponse(format!(
                        "{} ended the stream with finish reason `error`",
                        ctx.provider
                    )));
                }
                self.parsed.finish = Some(reason);
            }
        }
        Ok(())
    }

    /// Add a piece to the call of its `index`. A server that sends no index (some send
    /// whole calls, one per chunk) starts a new call with each new id.
    fn tool_call(&mut self, piece: ToolCallDelta) {
        let index = piece.index.unwrap_or_else(|| match (&piece.id, self.calls.last()) {
            (Some(id), Some(last)) if *id == last.id => last.index,
            (None, Some(last)) => last.index,
            _ => self.calls.iter().map(|c| c.index + 1).max().unwrap_or(0),
        });
        let at = match self.calls.iter().position(|c| c.index == index) {
            Some(at) => at,
            None => {
                self.calls.push(PendingCall { index, ..PendingCall::default() });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at];
        if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
            call.id = id;
        }
        if let Some(function) = piece.function {
            if let Some(name) = function.name {
                self.output += name.len();
                call.name.push_str(&name);
            }
            if let Some(arguments) = function.arguments {
                self.output += arguments.len();
                call.arguments.push_str(&arguments);
            }
        }
    }

    fn finish(
        mut self,
        ctx: &ErrorContext<'_>,
        decoder: &SseDecoder,
        include_usage: bool,
    ) -> Result<Parsed, LlmError> {
        let complete = self.parsed.finish.is_some() && (self.parsed.usage.is_some() || !include_usage);
        if !self.done && !complete {
            return Err(LlmError::BadResponse(format!(
                "the stream from {} ended before its end (no `data: [DONE]`) after {} events and {} bytes; \
                 the reply is incomplete",
                ctx.provider,
                decoder.events(),
                decoder.bytes()
            )));
        }
        if self.parsed.text.is_empty()
            && self.refusal.is_empty()
            && self.calls.is_empty()
            && self.parsed.finish.is_none()
        {
            return Err(LlmError::BadResponse(format!(
                "{} sent a stream with no choice in it ({} events, {} of {} chunks with `choices: []`, {}, \
                 then `[DONE]`): no text, tool call or finish reason",
                ctx.provider,
                decoder.events(),
                self.without_choices,
                self.chunks,
                if self.parsed.usage.is_some() { "usage reported" } else { "no usage" },
            )));
        }
        self.calls.sort_by_key(|c| c.index);
        let mut parsed = self.parsed;
        parsed.tool_calls = self.calls.into_iter().map(PendingCall::finish).collect();
        if parsed.text.is_empty() && !self.refusal.is_empty() {
            parsed.text = self.refusal;
            parsed.finish = Some("refusal".into());
        }
        Ok(parsed)
    }
}

/// A whole `chat.completion` body.
fn parse_whole(ctx: &ErrorContext<'_>, body: &[u8]) -> Result<Parsed, LlmError> {
    let whole: Whole = serde_json::from_slice(body).map_err(|e| {
        LlmError::BadResponse(format!(
            "{} sent a response that is not a chat completion ({e}): {}",
            ctx.provider,
            truncate(&String::from_utf8_lossy(body), 200)
        ))
    })?;
    if let Some(error) = &whole.error {
        return Err(stream_error(ctx, error));
    }
    let Some(choice) = whole.choices.into_iter().next() else {
        return Err(LlmError::BadResponse(format!(
            "{} sent a chat completion with no choice in it (`choices: []` or none, {}): no text, tool call \
             or finish reason",
            ctx.provider,
            if whole.usage.is_some() { "usage reported" } else { "no usage" },
        )));
    };
    let mut message = choice.message.unwrap_or_default();
    let tool_calls: Vec<ToolCall> = message
        .tool_calls
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let function = c.function.unwrap_or(FunctionDelta { name: None, arguments: None });
            ToolCall {
                id: c.id.unwrap_or_default(),
                name: function.name.unwrap_or_default(),
                arguments: arguments(function.arguments.unwrap_or_default()),
            }
        })
        .collect();
    if message.content.as_deref().is_none_or(str::is_empty)
        && message.refusal.as_deref().is_none_or(str::is_empty)
        && tool_calls.is_empty()
        && choice.finish_reason.is_none()
    {
        return Err(LlmError::BadResponse(format!(
            "{} sent a chat completion whose choice has no text, tool call or finish reason",
            ctx.provider
        )));
    }
    let (text, finish) = match (message.content, message.refusal) {
        (Some(text), _) if !text.is_empty() => (text, choice.finish_reason),
        (_, Some(refusal)) if !refusal.is_empty() => (refusal, Some("refusal".into())),
        (text, _) => (text.unwrap_or_default(), choice.finish_reason),
    };
    Ok(Parsed { text, finish, usage: whole.usage.map(|u| u.tokens()), served_model: whole.model, tool_calls })
}

/// An `error` object inside a 200 response or stream (OpenRouter, vLLM, LiteLLM…).
fn stream_error(ctx: &ErrorContext<'_>, error: &serde_json::Value) -> LlmError {
    let wrapped = serde_json::json!({ "error": error });
    let detail = ProviderMessage::from_value(&wrapped).unwrap_or_default();
    let message = format!("{} reported an error inside its response: {}", ctx.provider, detail.message);
    let code = detail.code.as_deref().and_then(|c| c.parse::<u16>().ok());
    // llama.cpp's full KV cache (`Context size has been exceeded.`, code 500) is the prompt
    // and reply not fitting: retrying the same prompt as it is would fail the same way.
    if let Some(overflow) = detail.prompt_too_long(&message, code.is_some_and(|c| (400..500).contains(&c))) {
        return overflow;
    }
    let kind =
        [detail.kind.as_deref(), detail.code.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
    match code {
        Some(429) => LlmError::RateLimited { retry_after: None, message },
        Some(529) => LlmError::Overloaded { message },
        Some(401 | 403) => LlmError::Auth(message),
        Some(400 | 413 | 422) => LlmError::InvalidRequest(message),
        Some(status @ 500..=599) => LlmError::Server { status, message },
        _ if kind.contains("rate_limit") => LlmError::RateLimited { retry_after: None, message },
        _ if kind.contains("overloaded") => LlmError::Overloaded { message },
        _ => LlmError::BadResponse(message),
    }
}

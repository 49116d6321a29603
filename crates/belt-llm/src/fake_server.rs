//! In-process fake OpenAI-compatible and Anthropic servers, for tests.
//!
//! A [`FakeServer`] listens on `127.0.0.1` (a port the OS picks), records every request
//! (method, path, headers, body), and answers each with the next scripted
//! [`FakeResponse`], or with a default one once the script is used up. The builders
//! reproduce the providers' wire formats byte for byte, as captured from the real APIs:
//! OpenAI's `chat.completion.chunk` frames (`data: {json}` and a blank line, a usage
//! chunk with `choices: []` or `choices: [{"delta": {}}]`, `data: [DONE]`) and
//! `chat.completion` objects; Anthropic's named events (`message_start` … `ping` …
//! `message_stop`) and `message` objects; both providers' error bodies and rate-limit
//! headers. Modifiers then damage them the ways networks and servers do: CRLF framing,
//! keep-alive comments, chunks of any size, a slow drip, a stream cut cleanly after a
//! few frames, a connection reset mid-body, a slow first byte, a body that never ends.
//!
//! Available to this crate's tests, and to other crates with the `fake-server` feature
//! (end-to-end tests of `belt run` against `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

/// A request as the fake server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The body ends normally (whatever it contains).
    Complete,
    /// The connection is reset after the last piece: the client sees a broken body.
    Reset,
}

/// One scripted response.
#[derive(Debug, Clone)]
pub struct FakeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Written in this order, each piece as its own write (an SSE frame, or a slice of one).
    pub pieces: Vec<Vec<u8>>,
    /// Pause before each piece after the first.
    pub drip: Duration,
    /// Pause before the headers are sent.
    pub first_byte_delay: Duration,
    pub ending: Ending,
    /// Stream the body (chunked) even when it is one piece.
    pub chunked: bool,
    /// Replace the body with an OpenAI-style error whose message quotes every request
    /// header (a careless server echoing credentials), for secret-leak tests.
    pub echo_headers: bool,
    /// After the pieces, this one again and again, forever (a runaway server); the body
    /// ends only when the client goes away.
    pub endless: Option<Vec<u8>>,
}

/// Token counts for the builders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeUsage {
    /// Uncached input tokens for Anthropic; all input tokens (`prompt_tokens`) for OpenAI.
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    /// Anthropic only.
    pub cache_write: u64,
    /// OpenAI only: `completion_tokens_details.reasoning_tokens` (part of `output`).
    pub reasoning: u64,
}

/// A tool call for the builders: the arguments are the pieces a stream sends (their
/// concatenation is the JSON text of the arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeToolCall {
    pub id: String,
    pub name: String,
    pub pieces: Vec<String>,
}

impl FakeToolCall {
    pub fn new(id: &str, name: &str, pieces: &[&str]) -> Self {
        FakeToolCall {
            id: id.into(),
            name: name.into(),
            pieces: pieces.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The arguments' JSON text.
    pub fn arguments(&self) -> String {
        self.pieces.concat()
    }

    /// The arguments as JSON (`{}` when they are not valid JSON).
    fn input(&self) -> serde_json::Value {
        serde_json::from_str(&self.arguments()).unwrap_or_else(|_| serde_json::json!({}))
    }
}

/// Where an OpenAI stream reports usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageShape {
    /// A last chunk with `choices: []` (OpenAI with `stream_options.include_usage`).
    EmptyChoices,
    /// A last chunk with `choices: [{"index":0,"delta":{},…}]` (several compatible servers).
    EmptyDelta,
    /// On the chunk that carries the finish reason (Mistral, some local servers).
    WithFinish,
    /// Under `x_groq.usage` on the finishing chunk (Groq).
    XGroq,
    /// Not at all.
    Absent,
}

const CHAT_ID: &str = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT";
const FINGERPRINT: &str = "fp_06737a9306";
const CREATED: u64 = 1_741_569_952;

impl FakeResponse {
    /// A response with a body in one piece.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        FakeResponse {
            status,
            headers: Vec::new(),
            pieces: vec![body.into()],
            drip: Duration::ZERO,
            first_byte_delay: Duration::ZERO,
            ending: Ending::Complete,
            chunked: false,
            echo_headers: false,
            endless: None,
        }
    }

    fn sse(frames: Vec<String>) -> Self {
        FakeResponse {
            pieces: frames.into_iter().map(String::into_bytes).collect(),
            chunked: true,
            ..FakeResponse::new(200, Vec::new())
        }
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
    }

    fn json(status: u16, value: &serde_json::Value) -> Self {
        FakeResponse::new(status, value.to_string()).header("content-type", "application/json")
    }

    // --- OpenAI ---

    /// An OpenAI streaming reply: a role chunk, one chunk per delta, a finishing chunk,
    /// usage as `shape` says, then `data: [DONE]`.
    pub fn openai_stream(
        model: &str,
        deltas: &[&str],
        finish: &str,
        usage: FakeUsage,
        shape: UsageShape,
    ) -> Self {
        let chunk = |choices: serde_json::Value, usage: Option<serde_json::Value>| {
            let mut value = serde_json::json!({
                "id": CHAT_ID,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": choices,
            });
            // With `include_usage`, every chunk has `"usage": null` but the one with usage.
            if shape != UsageShape::Absent && shape != UsageShape::XGroq {
                value["usage"] = usage.unwrap_or(serde_json::Value::Null);
            }
            value
        };
        let frame = |value: serde_json::Value| format!("data: {value}\n\n");
        let choice = |delta: serde_json::Value, finish: Option<&str>| serde_json::json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        let role = serde_json::json!({"role": "assistant", "content": "", "refusal": null});
        let mut frames = vec![frame(chunk(choice(role, None), None))];
        for delta in deltas {
            frames.push(frame(chunk(choice(serde_json::json!({"content": delta}), None), None)));
        }
        let usage_json = openai_usage(usage);
        let finishing = choice(serde_json::json!({}), Some(finish));
        match shape {
            UsageShape::WithFinish => frames.push(frame(chunk(finishing, Some(usage_json.clone())))),
            UsageShape::XGroq => {
                let mut last = chunk(finishing, None);
                last["x_groq"] =
                    serde_json::json!({"id": "req_01jbd6g2qdfw2adyrt2az8hz4w", "usage": usage_json.clone()});
                frames.push(frame(last));
            }
            _ => frames.push(frame(chunk(finishing, None))),
        }
        match shape {
            UsageShape::EmptyChoices => frames.push(frame(chunk(serde_json::json!([]), Some(usage_json)))),
            UsageShape::EmptyDelta => {
                frames.push(frame(chunk(choice(serde_json::json!({}), None), Some(usage_json))))
            }
            _ => {}
        }
        frames.push("data: [DONE]\n\n".into());
        FakeResponse::sse(frames)
    }

    /// An OpenAI stream that never delivers a choice: chunks with `choices: []` (the
    /// first with Azure's `prompt_filter_results`), usage, then `data: [DONE]`.
    pub fn openai_stream_without_choices(model: &str, usage: FakeUsage) -> Self {
        let chunk = |usage: serde_json::Value| {
            let value = serde_json::json!({
                "id": CHAT_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage,
            });
            format!("data: {value}\n\n")
        };
        let filter = serde_json::json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]});
        FakeResponse::sse(vec![
            format!("data: {filter}\n\n"),
            chunk(serde_json::Value::Null),
            chunk(openai_usage(usage)),
            "data: [DONE]\n\n".into(),
        ])
    }

    /// A frame of an OpenAI stream carrying `text` (for streams assembled by hand).
    pub fn openai_delta_frame(text: &str) -> String {
        let value = serde_json::json!({"id": CHAT_ID, "object": "chat.completion.chunk", "created": CREATED,
            "model": "m", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        format!("data: {value}\n\n")
    }

    /// An OpenAI non-streaming reply (`chat.completion`).
    pub fn openai_json(model: &str, text: &str, finish: &str, usage: FakeUsage) -> Self {
        FakeResponse::json(
            200,
            &serde_json::json!({
                "id": CHAT_ID,
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
                    "logprobs": null,
                    "finish_reason": finish,
                }],
                "usage": openai_usage(usage),
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            }),
        )
    }

    /// An OpenAI streaming reply that calls tools: a role chunk, then per call a chunk
    /// with its `index`, `id`, `type` and name (and empty arguments), and one chunk per
    /// argument piece with only the `index` and the piece, as OpenAI streams them; then a
    /// finishing chunk (`tool_calls`), usage in a `choices: []` chunk, and `[DONE]`.
    pub fn openai_tool_stream(model: &str, calls: &[FakeToolCall], usage: FakeUsage) -> Self {
        let chunk = |delta: serde_json::Value, finish: Option<&str>, usage: serde_json::Value| {
            let choices = if delta.is_null() {
                serde_json::json!([])
            } else {
                serde_json::json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
            };
            let value = serde_json::json!({
                "id": CHAT_ID, "object": "chat.completion.chunk", "created": CREATED, "model": model,
                "service_tier": "default", "system_fingerprint": FINGERPRINT, "choices": choices, "usage": usage,
            });
            format!("data: {value}\n\n")
        };
        let null = serde_json::Value::Null;
        let mut frames = vec![chunk(
            serde_json::json!({"role": "assistant", "content": null, "refusal": null}),
            None,
            null.clone(),
        )];
        for (index, call) in calls.iter().enumerate() {
            frames.push(chunk(
                serde_json::json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}]}),
                None,
                null.clone(),
            ));
            for piece in &call.pieces {
                frames.push(chunk(
                    serde_json::json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    None,
                    null.clone(),
                ));
            }
        }
        frames.push(chunk(serde_json::json!({}), Some("tool_calls"), null.clone()));
        frames.push(chunk(null, None, openai_usage(usage)));
        frames.push("data: [DONE]\n\n".into());
        FakeResponse::sse(frames)
    }

    /// An OpenAI non-streaming reply that calls tools (`content: null`, `tool_calls`).
    pub fn openai_tool_json(model: &str, calls: &[FakeToolCall], usage: FakeUsage) -> Self {
        let tool_calls: Vec<serde_json::Value> = calls
            .iter()
            .map(|c| serde_json::json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments()}}))
            .collect();
        FakeResponse::json(
            200,
            &serde_json::json!({
                "id": CHAT_ID, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": null, "tool_calls": tool_calls, "refusal": null, "annotations": []},
                    "logprobs": null,
                    "finish_reason": "tool_calls",
                }],
                "usage": openai_usage(usage),
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            }),
        )
    }

    /// An OpenAI error body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn openai_error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Self {
        FakeResponse::json(
            status,
            &serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
        )
        .header("x-request-id", "req_7f3a9c0e5d2b4a18")
    }

    /// OpenAI's rate-limit headers: `remaining_tokens` of 30000 left, resets in Go durations.
    pub fn openai_rate_limits(self, remaining_requests: u64, remaining_tokens: u64) -> Self {
        self.header("x-ratelimit-limit-requests", "500")
            .header("x-ratelimit-limit-tokens", "30000")
            .header("x-ratelimit-remaining-requests", &remaining_requests.to_string())
            .header("x-ratelimit-remaining-tokens", &remaining_tokens.to_string())
            .header("x-ratelimit-reset-requests", "120ms")
            .header("x-ratelimit-reset-tokens", "1.5s")
    }

    // --- Anthropic ---

    /// An Anthropic streaming reply: `message_start`, a text block with one delta per
    /// item (and a `ping` after the block starts), `message_delta`, `message_stop`.
    pub fn anthropic_stream(model: &str, deltas: &[&str], stop_reason: &str, usage: FakeUsage) -> Self {
        let mut frames = anthropic_frames(model, deltas, usage);
        frames.push(event(
            "message_delta",
            &serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": usage.output}}),
        ));
        frames.push(event("message_stop", &serde_json::json!({"type": "message_stop"})));
        FakeResponse::sse(frames).header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
    }

    /// An Anthropic streaming reply with a text block of `deltas` (none if empty) and then
    /// one `tool_use` block per call: `content_block_start` with the id, name and `input:
    /// {}`, an empty `input_json_delta`, one per piece, `content_block_stop`; then
    /// `message_delta` with `stop_reason`, and `message_stop`.
    pub fn anthropic_tool_stream(
        model: &str,
        deltas: &[&str],
        calls: &[FakeToolCall],
        stop_reason: &str,
        usage: FakeUsage,
    ) -> Self {
        let mut frames = if deltas.is_empty() {
            anthropic_frames(model, deltas, usage).into_iter().take(1).collect()
        } else {
            anthropic_frames(model, deltas, usage)
        };
        let first = usize::from(!deltas.is_empty());
        for (i, call) in calls.iter().enumerate() {
            let index = first + i;
            frames.push(event(
                "content_block_start",
                &serde_json::json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
            ));
            for piece in std::iter::once("").chain(call.pieces.iter().map(String::as_str)) {
                frames.push(event(
                    "content_block_delta",
                    &serde_json::json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            frames.push(event(
                "content_block_stop",
                &serde_json::json!({"type": "content_block_stop", "index": index}),
            ));
        }
        frames.push(event(
            "message_delta",
            &serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": usage.output}}),
        ));
        frames.push(event("message_stop", &serde_json::json!({"type": "message_stop"})));
        FakeResponse::sse(frames).header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
    }

    /// An Anthropic non-streaming reply with a text block (if `text` is not empty) and one
    /// `tool_use` block per call.
    pub fn anthropic_tool_json(
        model: &str,
        text: &str,
        calls: &[FakeToolCall],
        stop_reason: &str,
        usage: FakeUsage,
    ) -> Self {
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(serde_json::json!({"type": "text", "text": text}));
        }
        for c in calls {
            content.push(
                serde_json::json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input()}),
            );
        }
        FakeResponse::json(
            200,
            &serde_json::json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": anthropic_usage(usage),
            }),
        )
        .header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
    }

    /// An Anthropic stream that sends `deltas`, then an `error` event of `kind`.
    pub fn anthropic_stream_error(model: &str, deltas: &[&str], kind: &str, message: &str) -> Self {
        let mut frames =
            anthropic_frames(model, deltas, FakeUsage { input: 10, output: 1, ..FakeUsage::default() });
        frames.push(event(
            "error",
            &serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}),
        ));
        FakeResponse::sse(frames)
    }

    /// An Anthropic stream without a content block or a stop reason: `message_start`,
    /// `ping`, a `message_delta` with `stop_reason: null`, `message_stop`.
    pub fn anthropic_stream_without_content(model: &str, usage: FakeUsage) -> Self {
        let mut frames: Vec<String> = anthropic_frames(model, &[], usage).into_iter().take(1).collect();
        frames.push("event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string());
        frames.push(event(
            "message_delta",
            &serde_json::json!({"type": "message_delta", "delta": {"stop_reason": null, "stop_sequence": null}, "usage": {"output_tokens": usage.output}}),
        ));
        frames.push(event("message_stop", &serde_json::json!({"type": "message_stop"})));
        FakeResponse::sse(frames).header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
    }

    /// A frame of an Anthropic stream carrying `text` in block 0 (for streams assembled
    /// by hand).
    pub fn anthropic_delta_frame(text: &str) -> String {
        event(
            "content_block_delta",
            &serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
        )
    }

    /// An Anthropic non-streaming reply (`message`).
    pub fn anthropic_json(model: &str, text: &str, stop_reason: &str, usage: FakeUsage) -> Self {
        FakeResponse::json(
            200,
            &serde_json::json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": stop_reason,
                "stop_sequence": null,
                "usage": anthropic_usage(usage),
            }),
        )
        .header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
    }

    /// An Anthropic error body: `{"type": "error", "error": {"type", "message"}, "request_id"}`.
    pub fn anthropic_error(status: u16, kind: &str, message: &str) -> Self {
        FakeResponse::json(
            status,
            &serde_json::json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}),
        )
        .header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
    }

    // --- damage ---

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Line endings CRLF instead of LF.
    pub fn crlf(mut self) -> Self {
        for piece in &mut self.pieces {
            *piece = String::from_utf8_lossy(piece).replace('\n', "\r\n").into_bytes();
        }
        self
    }

    /// A comment line before the first frame and between all frames (keep-alives).
    pub fn keep_alives(mut self) -> Self {
        let mut pieces = vec![b": OPENROUTER PROCESSING\n\n".to_vec()];
        for piece in self.pieces {
            pieces.push(piece);
            pieces.push(b": keep-alive\n\n".to_vec());
        }
        self.pieces = pieces;
        self
    }

    /// The body re-cut into pieces of `n` bytes, ignoring frame boundaries.
    pub fn split_every(mut self, n: usize) -> Self {
        let all: Vec<u8> = self.pieces.concat();
        self.pieces = all.chunks(n.max(1)).map(<[u8]>::to_vec).collect();
        self.chunked = true;
        self
    }

    /// Pause `delay` between pieces.
    pub fn drip(mut self, delay: Duration) -> Self {
        self.drip = delay;
        self
    }

    /// Pause `delay` before sending the headers.
    pub fn first_byte_after(mut self, delay: Duration) -> Self {
        self.first_byte_delay = delay;
        self
    }

    /// Keep only the first `frames` pieces and end the body cleanly there.
    pub fn cut_after(mut self, frames: usize) -> Self {
        self.pieces.truncate(frames);
        self
    }

    /// Keep only the first `frames` pieces, then reset the connection.
    pub fn reset_after(mut self, frames: usize) -> Self {
        self.pieces.truncate(frames);
        self.ending = Ending::Reset;
        self
    }

    /// After the pieces, send `piece` forever (with the drip between pieces).
    pub fn endless(mut self, piece: impl Into<Vec<u8>>) -> Self {
        self.endless = Some(piece.into());
        self.chunked = true;
        self
    }

    /// Answer with an error body quoting every request header.
    pub fn echoing_headers(mut self) -> Self {
        self.echo_headers = true;
        self
    }
}

fn openai_usage(u: FakeUsage) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

fn anthropic_usage(u: FakeUsage) -> serde_json::Value {
    serde_json::json!({
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output,
        "service_tier": "standard",
    })
}

fn event(name: &str, data: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_frames(model: &str, deltas: &[&str], usage: FakeUsage) -> Vec<String> {
    let start_usage = anthropic_usage(FakeUsage { output: 1, ..usage });
    let mut frames = vec![
        event(
            "message_start",
            &serde_json::json!({"type": "message_start", "message": {
                "id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant",
                "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ),
        event(
            "content_block_start",
            &serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        // Anthropic writes this one with a space after the colon.
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_string(),
    ];
    for delta in deltas {
        frames.push(event(
            "content_block_delta",
            &serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": delta}}),
        ));
    }
    frames.push(event("content_block_stop", &serde_json::json!({"type": "content_block_stop", "index": 0})));
    frames
}

#[derive(Default)]
struct ServerState {
    script: Mutex<VecDeque<FakeResponse>>,
    default: Mutex<Option<FakeResponse>>,
    /// The answer to every `GET` (404 when unset), apart from the script.
    get: Mutex<Option<FakeResponse>>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// When each request arrived and the status it was answered with, in order (for tests
    /// of rate limits).
    arrivals: Mutex<Vec<(std::time::Instant, u16)>>,
    /// Requests being answered now (until their first byte), and the most at once.
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    /// TCP connections accepted so far (keep-alive and pooling tests count them).
    accepted: std::sync::atomic::AtomicUsize,
}

/// A fake API server on `127.0.0.1`. It stops when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    /// Start a server on a free port of `127.0.0.1`.
    pub async fn start() -> std::io::Result<FakeServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState::default());
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let counted = state.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            counted.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeServer { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`: an `ANTHROPIC_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: an `OPENAI_BASE_URL`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answer the next request (after those already scripted) with `response`.
    pub fn push(&self, response: FakeResponse) -> &Self {
        self.state.script.lock().expect("fake server lock").push_back(response);
        self
    }

    /// Answer with `response` whenever the script is used up (default: a 500 saying so).
    pub fn set_default(&self, response: FakeResponse) -> &Self {
        *self.state.default.lock().expect("fake server lock") = Some(response);
        self
    }

    /// Answer every request that is not a completion call (a `GET /v1/models`, say) with
    /// `response`. Without it such a request — what a client asks a local server about
    /// itself — gets a 404; either way it uses none of the script and counts in neither
    /// the arrivals nor the calls in flight.
    pub fn on_get(&self, response: FakeResponse) -> &Self {
        *self.state.get.lock().expect("fake server lock") = Some(response);
        self
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().expect("fake server lock").clone()
    }

    /// The completion calls among the requests (`POST …/chat/completions`, `POST
    /// …/messages`): what a provider paid for, without what a client asks to learn about a
    /// local server (`/props`, `/v1/models`, `/api/show`).
    pub fn calls(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| is_call(&r.method, &r.path)).collect()
    }

    /// When each request arrived, and the status it was answered with, in order.
    pub fn arrivals(&self) -> Vec<(std::time::Instant, u16)> {
        self.state.arrivals.lock().expect("fake server lock").clone()
    }

    /// The most requests answered at once (counted from arrival to the response's first
    /// byte, so a `first_byte_after` delay is the time a request is in flight).
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The TCP connections accepted so far: with keep-alive and a pool, far fewer than the
    /// requests.
    pub fn accepted_connections(&self) -> usize {
        self.state.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last request received.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.state.requests.lock().expect("fake server lock").last().cloned()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A completion call, as opposed to a question about the server.
fn is_call(method: &str, path: &str) -> bool {
    method == "POST" && (path.ends_with("/chat/completions") || path.ends_with("/messages"))
}

async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    use std::sync::atomic::Ordering::SeqCst;
    if !is_call(request.method().as_str(), request.uri().path()) {
        // What a client asks a local server about itself (`GET /props`, `GET /v1/models`,
        // `POST /api/show`). Recorded, but not a call: the script, the arrivals and the
        // count in flight are for completion calls.
        let answer = state.get.lock().ok().and_then(|g| g.clone());
        if let Ok(mut all) = state.requests.lock() {
            all.push(RecordedRequest {
                method: request.method().to_string(),
                path: request.uri().path().to_string(),
                headers: Vec::new(),
                body: Vec::new(),
            });
        }
        if let Some(answer) = answer {
            return respond(answer).await;
        }
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from(r#"{"error":{"message":"Not found","type":"invalid_request_error"}}"#))
            .unwrap_or_default();
    }
    let arrived = std::time::Instant::now();
    // Counted down on drop too: a client that gives up drops this future.
    struct InFlight<'a>(&'a ServerState);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, SeqCst);
        }
    }
    let now = state.in_flight.fetch_add(1, SeqCst) + 1;
    state.max_in_flight.fetch_max(now, SeqCst);
    let _in_flight = InFlight(&state);
    answer(&state, request, arrived).await
}

async fn answer(state: &ServerState, request: Request, arrived: std::time::Instant) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body,
    };
    let next = state.script.lock().ok().and_then(|mut s| s.pop_front());
    let script = next.or_else(|| state.default.lock().ok().and_then(|d| d.clone())).unwrap_or_else(|| {
        FakeResponse::openai_error(500, "the fake server has no scripted response left", "server_error", None)
    });
    let script = if script.echo_headers {
        let quoted: Vec<String> = recorded.headers.iter().map(|(n, v)| format!("{n}={v}")).collect();
        FakeResponse {
            pieces: vec![
                serde_json::json!({"error": {"message": format!("Rejected request with headers {}", quoted.join(", ")), "type": "invalid_request_error", "code": "invalid_api_key"}})
                    .to_string()
                    .into_bytes(),
            ],
            echo_headers: false,
            ..script
        }
    } else {
        script
    };
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(recorded);
    }
    if let Ok(mut arrivals) = state.arrivals.lock() {
        arrivals.push((arrived, script.status));
    }
    respond(script).await
}

async fn respond(script: FakeResponse) -> Response {
    if !script.first_byte_delay.is_zero() {
        tokio::time::sleep(script.first_byte_delay).await;
    }
    let body = if script.chunked || script.ending == Ending::Reset || script.pieces.len() > 1 {
        let FakeResponse { pieces, drip, ending, endless, .. } = script.clone();
        let forever = endless.map(|piece| std::iter::repeat(piece).map(Ok::<_, std::io::Error>));
        let items = pieces
            .into_iter()
            .map(Ok::<_, std::io::Error>)
            .chain(forever.into_iter().flatten())
            .chain(
                (ending == Ending::Reset)
                    .then(|| Err(std::io::Error::other("connection reset by the fake server"))),
            )
            .enumerate();
        let stream = futures::stream::unfold(items, move |mut items| async move {
            let (i, item) = items.next()?;
            if i > 0 && !drip.is_zero() && item.is_ok() {
                tokio::time::sleep(drip).await;
            }
            Some((item.map(Bytes::from), items))
        });
        Body::from_stream(stream)
    } else {
        Body::from(script.pieces.concat())
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(script.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &script.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}

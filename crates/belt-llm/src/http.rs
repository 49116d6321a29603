//! What the two HTTP adapters share: the client, secrets, timeouts, reading bodies, and
//! turning every HTTP failure into an [`LlmError`] a user can act on.
//!
//! # Errors
//!
//! An adapter makes one call and reports exactly what happened; the engine decides what
//! to do about it from [`LlmError::is_retryable`] and [`LlmError::retry_after`]. The
//! mapping, with the provider's own message kept in every case:
//!
//! | what happened | error | retryable |
//! |---|---|---|
//! | 401, 403 | [`LlmError::Auth`], naming the key's environment variable | no |
//! | the prompt does not fit the window: OpenAI's `context_length_exceeded` ("maximum context length is N tokens"), vLLM's 400 (the same words), llama.cpp's 400 `exceed_context_size_error` (with `n_prompt_tokens`, `n_ctx`) and its "Context size has been exceeded." (a 500, or an error event inside a stream, when a unified KV cache runs out), Ollama's "the input length exceeds the context length", Anthropic's "prompt is too long: N tokens > M maximum" | [`LlmError::PromptTooLong`], with the prompt's tokens and the window where the server gave them | no: the same prompt fails the same way |
//! | 400, 413, 422, other 4xx | [`LlmError::InvalidRequest`] (content policy called out) | no |
//! | 402, 429 `insufficient_quota` | [`LlmError::InvalidRequest`]: credits or quota, which waiting does not fix | no |
//! | 404, or `model_not_found` | [`LlmError::UnknownModel`], naming the base URL | no |
//! | 408, 409, 5xx | [`LlmError::Server`] | yes |
//! | 429 | [`LlmError::RateLimited`] with the wait the headers ask for | yes |
//! | 529 | [`LlmError::Overloaded`] | yes |
//! | refused or failed connection, TLS error, connect timeout, reset mid-body | [`LlmError::Connection`] | yes |
//! | a connection that closed (or was reset) before any byte of the response: a pooled connection the server had just closed | sent once more at once on a new connection, inside the same call; [`LlmError::Connection`] only if that fails too | (not an attempt) |
//! | no first byte or no next chunk within the configured time | [`LlmError::Timeout`] | yes |
//! | a stream cut before its end marker, malformed JSON, an `error` event of unknown type | [`LlmError::BadResponse`] | yes |
//! | a reply with no choice (OpenAI) or no content block (Anthropic), and no finish reason: `choices: []` and usage only, say | [`LlmError::BadResponse`] | yes |
//! | a body past [`HttpOptions::max_body_bytes`] (64 MiB), streamed or not; a streamed reply whose text and tool input pass `max_tokens` × 16 bytes + 32 KiB | [`LlmError::BadResponse`], saying which limit; reading stops there | yes (belt-core's rule for every `BadResponse`) |
//!
//! The wait of a 429 is read from `retry-after-ms` (milliseconds, OpenAI), else
//! `Retry-After` (seconds or an HTTP date), else from the reset of the exhausted limit
//! in `x-ratelimit-reset-*` (Go durations such as `6m0s`, or epoch times) or
//! `anthropic-ratelimit-*-reset` (RFC 3339 times): see [`retry_after`]. Every response's
//! rate-limit headers, not only a 429's, are kept per model for
//! [`LlmProvider::rate_limits`](belt_core::llm::LlmProvider::rate_limits): see
//! [`rate_limits`].
//!
//! # Secrets
//!
//! An [`ApiKey`] has no `Display`, and its `Debug` prints `ApiKey(***)`. The key is sent
//! in a header marked sensitive, which the HTTP stack's own `Debug` also hides. Every
//! error message passes through [`Secrets::redact`] before it leaves an adapter, which
//! replaces the key (and the values of extra headers whose names suggest a credential)
//! wherever a server echoed it; transport errors are described from their causes, with
//! the URL reduced to its origin (no user info, path or query). Nothing here logs.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use belt_core::llm::{LlmError, LlmReply, LlmRequest, RateLimits, Usage};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::endpoint::{Endpoint, PriceSource};
use crate::pricing::{ModelPrice, PriceTable};
use crate::sse::SseDecoder;

/// An API key. It cannot be printed: `Debug` shows `ApiKey(***)` and there is no
/// `Display`; [`ApiKey::expose`] is how an adapter reads it, to put it in a header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey(key.to_string())
    }
}

/// Strings that must never appear in an error message.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

impl Secrets {
    /// The API key, and the values of extra headers whose name contains `key`, `auth`,
    /// `token`, `secret` or `cookie`. Values shorter than 4 bytes are not secrets worth
    /// the false positives.
    pub fn new(key: Option<&ApiKey>, headers: &[(String, String)]) -> Self {
        let mut all: Vec<String> = key.map(|k| k.0.clone()).into_iter().collect();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if ["key", "auth", "token", "secret", "cookie"].iter().any(|w| name.contains(w)) {
                all.push(value.clone());
            }
        }
        all.retain(|s| s.len() >= 4);
        Secrets(all)
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn redact(&self, text: String) -> String {
        let mut text = text;
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }

    /// `error` with every secret removed from its messages.
    pub fn redact_error(&self, error: LlmError) -> LlmError {
        if self.0.is_empty() {
            return error;
        }
        match error {
            LlmError::RateLimited { retry_after, message } => {
                LlmError::RateLimited { retry_after, message: self.redact(message) }
            }
            LlmError::Server { status, message } => {
                LlmError::Server { status, message: self.redact(message) }
            }
            LlmError::Overloaded { message } => LlmError::Overloaded { message: self.redact(message) },
            LlmError::Timeout(d) => LlmError::Timeout(d),
            LlmError::Connection(m) => LlmError::Connection(self.redact(m)),
            LlmError::Auth(m) => LlmError::Auth(self.redact(m)),
            LlmError::InvalidRequest(m) => LlmError::InvalidRequest(self.redact(m)),
            LlmError::UnknownModel { model, message } => {
                LlmError::UnknownModel { model, message: self.redact(message) }
            }
            LlmError::BadResponse(m) => LlmError::BadResponse(self.redact(m)),
            LlmError::PromptTooLong { message, prompt_tokens, context_window } => {
                LlmError::PromptTooLong { message: self.redact(message), prompt_tokens, context_window }
            }
            // Raised by the engine's breaker, never from a provider's text.
            open @ LlmError::CircuitOpen { .. } => open,
        }
    }
}

/// The default [`HttpOptions::max_body_bytes`]: 64 MiB.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Timeouts, limits and identity of an adapter's HTTP client.
///
/// The engine bounds every attempt with its own total timeout; these bound the phases
/// only the adapter can see. `None` leaves a phase to the engine's timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// TCP and TLS connection setup (default 10 s). A timeout is a [`LlmError::Connection`].
    pub connect_timeout: Duration,
    /// From sending the request to the response's headers. Non-streaming calls only get
    /// their headers when the whole reply is written, so set it with streaming in mind.
    pub first_byte_timeout: Option<Duration>,
    /// Longest silence between two chunks of the body.
    pub idle_timeout: Option<Duration>,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// The most bytes a response body may have, streamed or not (default
    /// [`MAX_BODY_BYTES`], 64 MiB). Reading stops there and the call fails with
    /// [`LlmError::BadResponse`].
    pub max_body_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: None,
            idle_timeout: None,
            user_agent: concat!("belt/", env!("CARGO_PKG_VERSION")).to_string(),
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// An adapter that cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("provider `{provider}`: base URL `{url}` is not a valid http(s) URL{}", env_hint(.env))]
    BaseUrl { provider: String, url: String, env: Option<String> },
    #[error("provider `{provider}`: header `{name}` is not a valid HTTP header name or value")]
    Header { provider: String, name: String },
    #[error("provider `{provider}`: the HTTP client could not be built: {message}")]
    Client { provider: String, message: String },
}

fn env_hint(env: &Option<String>) -> String {
    env.as_ref().map_or(String::new(), |e| format!(" (from {e})"))
}

/// One call's result in full: the engine's [`LlmReply`] and what it has no room for.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// What [`LlmProvider::complete`](belt_core::llm::LlmProvider::complete) returns.
    pub reply: LlmReply,
    /// False when the server reported no usage and `reply.usage` holds upper bounds: the
    /// request's input bound, and output bytes (never fewer than the tokens) capped at
    /// `max_tokens`. Budgets stay safe; reports should call the figures estimates.
    pub usage_reported: bool,
    /// The exact cost in USD from the price table, cache rates included; `None` when the
    /// model's price is unknown.
    pub cost_usd: Option<f64>,
    /// The model the server says answered (often a dated snapshot of the one asked for).
    pub served_model: Option<String>,
    /// The provider's request id (`x-request-id`, `request-id`), for support tickets.
    pub request_id: Option<String>,
    /// The response's rate-limit headers, if it had any.
    pub rate_limits: Option<RateLimits>,
}

/// What a successful response's headers said.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub request_id: Option<String>,
    pub rate_limits: Option<RateLimits>,
    /// The `Content-Type` says JSON: the body is one JSON value, even when a stream was
    /// asked for (servers answer errors, and sometimes ignore `stream`, that way). Any
    /// other type, or none, is read as SSE when a stream was asked for.
    pub json_body: bool,
}

/// What an adapter read from a successful response body.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parsed {
    pub text: String,
    /// The provider's finish reason, not yet normalized.
    pub finish: Option<String>,
    pub usage: Option<Usage>,
    pub served_model: Option<String>,
    /// Tools the model called, in order.
    pub tool_calls: Vec<belt_core::llm::ToolCall>,
}

/// The HTTP plumbing of one adapter instance.
pub(crate) struct HttpCore {
    pub name: String,
    pub base_url: String,
    /// Where requests go: the base URL and the wire format's path.
    pub url: String,
    /// `url` parsed once: every call clones it instead of parsing the text again.
    parsed_url: reqwest::Url,
    pub client: reqwest::Client,
    /// A client that keeps no pool: every request on a new connection (a re-send after a
    /// stale pooled connection, and discovery, which a server closing its connections after
    /// each streamed reply would otherwise meet on a dead one). Built when first needed:
    /// building a client costs milliseconds, and every run builds its providers.
    fresh: std::sync::OnceLock<reqwest::Client>,
    /// What the fresh client is built from: the pooled client's headers.
    fresh_headers: HeaderMap,
    pub key_env: Option<String>,
    pub base_url_env: Option<String>,
    pub has_key: bool,
    pub secrets: Secrets,
    pub stream: bool,
    pub options: HttpOptions,
    pub prices: Arc<PriceTable>,
    pub price_provider: String,
    price_source: PriceSource,
    limits: Mutex<HashMap<String, RateLimits>>,
}

impl fmt::Debug for HttpCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCore")
            .field("name", &self.name)
            .field("url", &origin_and_path(&self.url))
            .field("key_env", &self.key_env)
            .field("has_key", &self.has_key)
            .field("stream", &self.stream)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What a wire format adds to an [`Endpoint`]: its path and how it sends the key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wire {
    /// Appended to the base URL, e.g. `/chat/completions`.
    pub path: &'static str,
    /// The header that carries the key and what precedes the key in it, e.g.
    /// `("authorization", "Bearer ")` (the header is marked sensitive).
    pub key_header: (&'static str, &'static str),
    /// Fixed headers of the wire format, e.g. `anthropic-version`.
    pub fixed_headers: &'static [(&'static str, &'static str)],
}

/// What a wire format's stream reader keeps, as [`HttpCore::read_sse`] drives it.
pub(crate) trait SseState {
    /// One SSE event (`name` is `message` when the event has none).
    fn event(&mut self, ctx: &ErrorContext<'_>, name: &str, data: &str) -> Result<(), LlmError>;
    /// The stream's end marker has arrived.
    fn done(&self) -> bool;
    /// Bytes of output so far: text, refusal, tool calls' input.
    fn output_bytes(&self) -> usize;
}

/// Bytes of output a streamed reply may have per token of its `max_tokens` (a token is
/// about 4 bytes of English, rarely more than 16 of anything)…
pub(crate) const OUTPUT_BYTES_PER_TOKEN: usize = 16;
/// …plus this much, for small `max_tokens`.
pub(crate) const OUTPUT_SLACK_BYTES: usize = 32 << 10;

/// The most output (text, refusal, tool input) an honest streamed reply of `max_tokens`
/// tokens can have: 16 bytes a token and 32 KiB.
pub(crate) fn output_cap(max_tokens: u32) -> usize {
    (max_tokens as usize).saturating_mul(OUTPUT_BYTES_PER_TOKEN).saturating_add(OUTPUT_SLACK_BYTES)
}

fn human_size(bytes: usize) -> String {
    let (value, unit) = if bytes >= 1 << 20 {
        (bytes as f64 / f64::from(1 << 20), "MiB")
    } else {
        (bytes as f64 / 1024.0, "KiB")
    };
    let value = format!("{value:.1}");
    format!("{} {unit}", value.trim_end_matches(".0"))
}

/// Where an error happened, for transport errors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Send,
    Body { bytes: u64 },
}

impl HttpCore {
    pub fn new(endpoint: &Endpoint, wire: Wire) -> Result<HttpCore, ConfigError> {
        let provider = endpoint.name.clone();
        let bad_url = || ConfigError::BaseUrl {
            provider: provider.clone(),
            url: origin_and_path(&endpoint.base_url),
            env: endpoint.base_url_env.clone(),
        };
        let base_url = endpoint.base_url.trim().trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base_url).map_err(|_| bad_url())?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad_url());
        }
        let url = format!("{base_url}{}", wire.path);
        let parsed_url = reqwest::Url::parse(&url).map_err(|_| bad_url())?;

        let mut headers = HeaderMap::new();
        let header_error = |name: &str| ConfigError::Header { provider: provider.clone(), name: name.into() };
        headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in wire.fixed_headers {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        if let Some(key) = &endpoint.api_key {
            let (name, prefix) = wire.key_header;
            let mut value = HeaderValue::from_str(&format!("{prefix}{}", key.expose()))
                .map_err(|_| header_error(name))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        for (name, value) in &endpoint.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| header_error(name))?;
            let mut value = HeaderValue::from_str(value.trim()).map_err(|_| header_error(name))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }

        install_crypto_provider();
        let client = reqwest::Client::builder()
            .default_headers(headers.clone())
            .user_agent(endpoint.http.user_agent.clone())
            .connect_timeout(endpoint.http.connect_timeout)
            .retry(no_retries())
            .build()
            .map_err(|e| ConfigError::Client { provider: provider.clone(), message: error_chain(&e) })?;

        Ok(HttpCore {
            name: provider,
            base_url,
            url,
            parsed_url,
            client,
            fresh: std::sync::OnceLock::new(),
            fresh_headers: headers,
            key_env: endpoint.api_key_env.clone(),
            base_url_env: endpoint.base_url_env.clone(),
            has_key: endpoint.api_key.is_some(),
            secrets: Secrets::new(endpoint.api_key.as_ref(), &endpoint.headers),
            stream: endpoint.stream,
            options: endpoint.http.clone(),
            prices: endpoint.prices.clone().unwrap_or_else(PriceTable::builtin_arc),
            price_provider: endpoint.price_provider.as_deref().unwrap_or(&endpoint.name).to_string(),
            price_source: match endpoint.price_source {
                PriceSource::Table if crate::providers::is_local_url(&endpoint.base_url) => PriceSource::Free,
                source => source,
            },
            limits: Mutex::new(HashMap::new()),
        })
    }

    /// POST `body`; a non-2xx status becomes its [`LlmError`] (the error body is read).
    ///
    /// A request whose connection closed before any byte of the response (a pooled
    /// connection the server had just closed: see [`stale_connection`]) is sent once more,
    /// at once, on a new connection, within this call: it is no failed attempt, and the
    /// engine's retries, backoff and breaker never see it.
    pub async fn post(&self, model: &str, body: Vec<u8>) -> Result<(reqwest::Response, Meta), LlmError> {
        let body = bytes::Bytes::from(body);
        let sent = match self.send(&self.client, body.clone()).await? {
            Err(e) if stale_connection(&e) => {
                tracing::debug!(
                    provider = %self.name,
                    cause = %error_chain(&e),
                    "the connection closed before the response began; sending again on a new connection"
                );
                self.send(self.fresh(), body).await?
            }
            sent => sent,
        };
        let response = sent.map_err(|e| self.transport_error(&e, Phase::Send))?;
        let limits = rate_limits(response.headers(), SystemTime::now());
        if let Some(limits) = &limits {
            self.observe(model, limits.clone());
        }
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            let meta = Meta {
                request_id: request_id(response.headers()),
                rate_limits: limits,
                json_body: response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("json")),
            };
            return Ok((response, meta));
        }
        let headers = response.headers().clone();
        let body = self.read_to_end(response, 64 * 1024).await.unwrap_or_default();
        Err(status_error(&self.context(model), status, &headers, &body, SystemTime::now()))
    }

    /// Send `body` on `client`, within the first-byte timeout (its expiry is the outer error).
    async fn send(
        &self,
        client: &reqwest::Client,
        body: bytes::Bytes,
    ) -> Result<Result<reqwest::Response, reqwest::Error>, LlmError> {
        let send = client.post(self.parsed_url.clone()).body(body).send();
        match self.options.first_byte_timeout {
            Some(limit) => tokio::time::timeout(limit, send).await.map_err(|_| LlmError::Timeout(limit)),
            None => Ok(send.await),
        }
    }

    /// The next chunk of the body, within the idle timeout.
    pub async fn chunk(
        &self,
        response: &mut reqwest::Response,
        bytes_so_far: u64,
    ) -> Result<Option<bytes::Bytes>, LlmError> {
        let next = match self.options.idle_timeout {
            Some(limit) => {
                tokio::time::timeout(limit, response.chunk()).await.map_err(|_| LlmError::Timeout(limit))?
            }
            None => response.chunk().await,
        };
        next.map_err(|e| self.transport_error(&e, Phase::Body { bytes: bytes_so_far }))
    }

    /// The whole body, or [`LlmError::BadResponse`] past `cap` bytes.
    pub async fn read_to_end(
        &self,
        mut response: reqwest::Response,
        cap: usize,
    ) -> Result<Vec<u8>, LlmError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.chunk(&mut response, body.len() as u64).await? {
            if body.len() + chunk.len() > cap {
                return Err(LlmError::BadResponse(format!(
                    "{} sent a response larger than {cap} bytes ({}); reading stopped there",
                    self.name,
                    human_size(cap)
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A whole successful body, within [`HttpOptions::max_body_bytes`].
    pub async fn read_body(&self, response: reqwest::Response) -> Result<Vec<u8>, LlmError> {
        self.read_to_end(response, self.options.max_body_bytes).await
    }

    /// Read an SSE body into `state` until its end marker ([`SseState::done`]) or the
    /// end of the body, whichever comes first; the decoder is returned for its counts.
    ///
    /// Reading stops, with [`LlmError::BadResponse`], when the body passes
    /// [`HttpOptions::max_body_bytes`] or the output passes [`output_cap`] of
    /// `max_tokens`: memory stays bounded whatever a server sends.
    pub async fn read_sse(
        &self,
        ctx: &ErrorContext<'_>,
        mut response: reqwest::Response,
        max_tokens: u32,
        state: &mut impl SseState,
    ) -> Result<SseDecoder, LlmError> {
        let max_output = output_cap(max_tokens);
        let max_bytes = self.options.max_body_bytes;
        let mut decoder = SseDecoder::new();
        loop {
            let mut on_event = |name: &str, data: &str| {
                state.event(ctx, name, data)?;
                if state.output_bytes() > max_output {
                    return Err(LlmError::BadResponse(format!(
                        "the reply from {} exceeded {max_output} bytes of text and tool input, the most \
                         max_tokens {max_tokens} allows ({OUTPUT_BYTES_PER_TOKEN} bytes a token + {} KiB); \
                         reading stopped there: the server does not keep to max_tokens",
                        ctx.provider,
                        OUTPUT_SLACK_BYTES >> 10
                    )));
                }
                Ok(())
            };
            match self.chunk(&mut response, decoder.bytes()).await? {
                Some(bytes) => {
                    if decoder.bytes() + bytes.len() as u64 > max_bytes as u64 {
                        return Err(LlmError::BadResponse(format!(
                            "the stream from {} exceeded {max_bytes} bytes ({}) after {} events; \
                             reading stopped there",
                            ctx.provider,
                            human_size(max_bytes),
                            decoder.events()
                        )));
                    }
                    decoder.feed(&bytes, &mut on_event)?
                }
                None => {
                    decoder.finish(&mut on_event)?;
                    break;
                }
            }
            if state.done() {
                break;
            }
        }
        if state.done() {
            self.drain(response).await;
        }
        Ok(decoder)
    }

    /// Read what is left of a body whose end marker has arrived, briefly, so that the
    /// connection can go back to the pool; a server that keeps it open is left alone.
    pub async fn drain(&self, mut response: reqwest::Response) {
        let drain = async {
            for _ in 0..8 {
                match response.chunk().await {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
    }

    pub fn observe(&self, model: &str, limits: RateLimits) {
        if let Ok(mut map) = self.limits.lock() {
            match map.get_mut(model) {
                Some(slot) => *slot = limits,
                None => {
                    map.insert(model.to_string(), limits);
                }
            }
        }
    }

    pub fn rate_limits(&self, model: &str) -> Option<RateLimits> {
        self.limits.lock().ok()?.get(model).cloned()
    }

    pub fn context<'a>(&'a self, model: &'a str) -> ErrorContext<'a> {
        ErrorContext {
            provider: &self.name,
            model,
            key_env: self.key_env.as_deref(),
            base_url_env: self.base_url_env.as_deref(),
            base_url: &self.base_url,
            has_key: self.has_key,
        }
    }

    /// The client that keeps no pool (see the field), built on first use. Built like the
    /// pooled one, which already succeeded; if it cannot be built now, the pooled one
    /// serves instead (a re-send may then meet another stale connection, and fail as before).
    pub(crate) fn fresh(&self) -> &reqwest::Client {
        self.fresh.get_or_init(|| {
            reqwest::Client::builder()
                .default_headers(self.fresh_headers.clone())
                .user_agent(self.options.user_agent.clone())
                .connect_timeout(self.options.connect_timeout)
                .retry(no_retries())
                .pool_max_idle_per_host(0)
                .build()
                .unwrap_or_else(|_| self.client.clone())
        })
    }

    /// A transport failure, described from its causes (never with the full URL).
    pub fn transport_error(&self, error: &reqwest::Error, phase: Phase) -> LlmError {
        let origin = origin(&self.url);
        let causes = error_chain(error);
        let check = match &self.base_url_env {
            Some(env) => {
                format!("check {env} (now {}) and that the server is up", origin_and_path(&self.base_url))
            }
            None => {
                format!("check the base URL ({}) and that the server is up", origin_and_path(&self.base_url))
            }
        };
        match phase {
            Phase::Send if error.is_timeout() => LlmError::Connection(format!(
                "connecting to {origin} timed out after {:.1}s; {check}",
                self.options.connect_timeout.as_secs_f64()
            )),
            Phase::Send if error.is_connect() => {
                LlmError::Connection(format!("could not connect to {origin}: {causes}; {check}"))
            }
            Phase::Send => LlmError::Connection(format!("the request to {origin} failed: {causes}")),
            Phase::Body { bytes } => LlmError::Connection(format!(
                "the connection to {origin} broke after {bytes} bytes of the response: {causes}"
            )),
        }
    }

    /// Assemble the [`Completion`]: normalized finish reason, a JSON reply cleaned of
    /// fences and prose, upper-bound usage when the server reported none, and the cost.
    pub fn completion(&self, model: &str, request: &LlmRequest, parsed: Parsed, meta: Meta) -> Completion {
        let Parsed { mut text, finish, usage, served_model, tool_calls } = parsed;
        if request.json
            && let Some(json) = crate::json_reply::clean(&text)
        {
            text = json.to_string();
        }
        let usage_reported = usage.is_some();
        let usage = usage.unwrap_or_else(|| Usage {
            input_tokens: request.input_token_bound(),
            output_tokens: (text.len() as u64).min(request.max_tokens as u64),
            ..Usage::default()
        });
        let cost_usd = self.cost(model, &usage);
        Completion {
            reply: LlmReply {
                text,
                usage,
                // This provider's model, not `request.model`: that may be a whole
                // fallback chain (`a/x,b/y`), and the reply says which link answered.
                model: format!("{}/{model}", self.name),
                finish_reason: finish.as_deref().map(finish_reason),
                simulated: false,
                tool_calls,
            },
            usage_reported,
            cost_usd,
            served_model,
            request_id: meta.request_id,
            rate_limits: meta.rate_limits,
        }
    }

    /// The price table's cost of a call, cache rates included.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.model_price(model).map(|price| price.cost(usage))
    }

    /// `model`'s prices as this endpoint pays them (see [`PriceSource`]); `None`: unknown.
    pub fn model_price(&self, model: &str) -> Option<ModelPrice> {
        let configured = self.prices.configured_price(&self.price_provider, model);
        match self.price_source {
            PriceSource::Table | PriceSource::Listed => {
                configured.or_else(|| self.prices.model_price(&self.price_provider, model))
            }
            PriceSource::Free => configured.or(Some(ModelPrice::FREE)),
            PriceSource::ConfiguredOnly => configured,
        }
    }

    /// A server of the user's own (free, and asked about its windows and slots).
    pub fn is_local(&self) -> bool {
        self.price_source == PriceSource::Free
    }

    /// The engine's price of `model`.
    pub fn price(&self, model: &str) -> Option<belt_core::llm::Price> {
        self.model_price(model).map(|p| p.price())
    }
}

/// True when `error` says the connection closed (or was reset) after the request was
/// written and before any byte of the response: hyper's `IncompleteMessage` ("connection
/// closed before message completed"), or a reset or broken pipe while sending.
///
/// Why re-sending is safe here: this is the race of a pooled keep-alive connection that
/// the server closed just as the client reused it (llama-server closes the connection
/// after every streamed reply while its headers say `Keep-Alive: timeout=5`; any server's
/// idle timeout can do the same). The server either never read the request or dropped it
/// unanswered, and answers nothing. hyper-util's pool already re-sends on its own the
/// requests it had not begun to write; this is the case it cannot know about. The worst
/// case, a server that processed the request and then died before answering, costs one
/// duplicate call, which the engine's own retry of the connection error would make anyway
/// — now without an attempt, a backoff or a breaker failure. The re-send goes on a client
/// without a pool, so on a new connection, and only once: a second failure is real.
pub(crate) fn stale_connection(error: &reqwest::Error) -> bool {
    if error.is_connect() || error.is_timeout() || error.is_status() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            )
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// reqwest's retry layer set to retry nothing. Its default retries only HTTP/2 and HTTP/3
/// protocol refusals, and this build speaks HTTP/1.1 only, so it never retried anything; but
/// it cloned every request (headers, URI, extensions) in case it would. Retries are the
/// engine's; the one re-send of a stale pooled connection is [`HttpCore::post`]'s.
fn no_retries() -> reqwest::retry::Builder {
    reqwest::retry::never().max_retries_per_request(0)
}

/// rustls needs a process-wide crypto provider: ring, unless the application installed
/// one before (then that one is used).
pub(crate) fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The causes of an error, outermost first, without repeats, without reqwest's own
/// line (which holds the full URL).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() {
        // No cause: describe the kind of failure rather than print a URL.
        return "no further detail".into();
    }
    parts.join(": ")
}

/// `scheme://host[:port]` of a URL, without user info, path or query.
pub(crate) fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            match u.port() {
                Some(port) => format!("{}://{host}:{port}", u.scheme()),
                None => format!("{}://{host}", u.scheme()),
            }
        }
        Err(_) => "(an invalid URL)".into(),
    }
}

/// `scheme://host[:port]/path` of a URL, without user info or query.
pub(crate) fn origin_and_path(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}{}", origin(url), u.path().trim_end_matches('/')),
        Err(_) => "(an invalid URL)".into(),
    }
}

/// Who and what an error is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorContext<'a> {
    pub provider: &'a str,
    /// The model as the provider knows it (after `provider/`).
    pub model: &'a str,
    pub key_env: Option<&'a str>,
    pub base_url_env: Option<&'a str>,
    pub base_url: &'a str,
    pub has_key: bool,
}

impl ErrorContext<'_> {
    fn key_hint(&self) -> String {
        match (self.key_env, self.has_key) {
            (Some(env), true) => format!("set {env} to a valid {} API key", self.provider),
            (Some(env), false) => format!("no API key was sent: set {env}"),
            (None, true) => format!("configure a valid {} API key", self.provider),
            (None, false) => format!("no API key was sent: configure one for {}", self.provider),
        }
    }

    fn base_hint(&self) -> String {
        let base = origin_and_path(self.base_url);
        match self.base_url_env {
            Some(env) => format!("check the model name, and the base URL {base} ({env})"),
            None => format!("check the model name, and the base URL {base}"),
        }
    }
}

/// The provider's own description of an error, from a JSON (or other) error body.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProviderMessage {
    /// `error.type` (OpenAI, Anthropic) or `error.status` (Gemini).
    pub kind: Option<String>,
    /// `error.code` (OpenAI: `context_length_exceeded`, `insufficient_quota`…).
    pub code: Option<String>,
    pub message: String,
    /// llama.cpp's `error.n_prompt_tokens` and `error.n_ctx`, on its overflow error.
    pub prompt_tokens: Option<u64>,
    pub context_window: Option<u64>,
}

impl ProviderMessage {
    /// Read the common shapes: `{"error": {"message", "type", "code"}}` (OpenAI and
    /// compatibles, Anthropic), `{"error": "text"}` (Ollama), `{"message": …}` (Mistral),
    /// `{"detail": …}` (FastAPI servers such as vLLM), a one-element array of those
    /// (Gemini), OpenRouter's `error.metadata.raw`; else the body as text.
    pub fn parse(body: &[u8]) -> ProviderMessage {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return ProviderMessage { message: text_message(body), ..ProviderMessage::default() };
        };
        let value = match &value {
            serde_json::Value::Array(items) if !items.is_empty() => &items[0],
            v => v,
        };
        Self::from_value(value).unwrap_or_else(|| ProviderMessage {
            message: truncate(&value.to_string(), 500),
            ..ProviderMessage::default()
        })
    }

    pub fn from_value(value: &serde_json::Value) -> Option<ProviderMessage> {
        let text = |v: Option<&serde_json::Value>| -> Option<String> {
            match v? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let object = value.as_object()?;
        if let Some(error) = object.get("error") {
            if let Some(message) = error.as_str() {
                return Some(ProviderMessage { message: message.to_string(), ..ProviderMessage::default() });
            }
            let mut message = text(error.get("message")).unwrap_or_default();
            if let Some(raw) = error.get("metadata").and_then(|m| m.get("raw")) {
                let raw = raw.as_str().map_or_else(|| raw.to_string(), str::to_string);
                message = format!("{message} (upstream: {})", truncate(&raw, 300));
            }
            return Some(ProviderMessage {
                kind: text(error.get("type")).or_else(|| text(error.get("status"))),
                code: text(error.get("code")),
                message,
                prompt_tokens: error.get("n_prompt_tokens").and_then(serde_json::Value::as_u64),
                context_window: error.get("n_ctx").and_then(serde_json::Value::as_u64),
            });
        }
        if let Some(message) = object.get("message") {
            // Mistral nests a validation error's `detail` inside `message`.
            let message = match message {
                serde_json::Value::Object(_) => Self::from_value(message).map(|m| m.message),
                other => text(Some(other)),
            };
            if let Some(message) = message {
                return Some(ProviderMessage {
                    kind: text(object.get("type")),
                    code: text(object.get("code")),
                    message,
                    ..ProviderMessage::default()
                });
            }
        }
        match object.get("detail")? {
            serde_json::Value::String(s) => {
                Some(ProviderMessage { message: s.clone(), ..ProviderMessage::default() })
            }
            // FastAPI/pydantic validation errors: `{"loc": ["body", "x"], "msg": "…"}`.
            serde_json::Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .filter_map(|i| {
                        let msg = text(i.get("msg")).or_else(|| text(Some(i)))?;
                        let loc: Vec<String> = i
                            .get("loc")
                            .and_then(|l| l.as_array())
                            .map(|l| l.iter().filter_map(|p| text(Some(p))).collect())
                            .unwrap_or_default();
                        Some(if loc.is_empty() { msg } else { format!("{}: {msg}", loc.join(".")) })
                    })
                    .collect();
                Some(ProviderMessage { message: parts.join("; "), ..ProviderMessage::default() })
            }
            _ => None,
        }
    }

    fn has(&self, needle: &str) -> bool {
        let hit = |s: &Option<String>| s.as_deref().is_some_and(|s| s.contains(needle));
        hit(&self.kind) || hit(&self.code)
    }

    fn says(&self, phrases: &[&str]) -> bool {
        let lower = self.message.to_ascii_lowercase();
        phrases.iter().any(|p| lower.contains(p))
    }

    /// ` (type, code)`, or nothing.
    fn tags(&self) -> String {
        let tags: Vec<&str> = [self.kind.as_deref(), self.code.as_deref()].into_iter().flatten().collect();
        if tags.is_empty() { String::new() } else { format!(" ({})", tags.join(", ")) }
    }
}

fn text_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.starts_with('<') {
        return "an HTML page instead of an API response (is the base URL the API's?)".into();
    }
    truncate(text, 500)
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The provider's request id, from the headers every major provider sends.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    // Names made once: a `&str` key is parsed and checked on every lookup.
    static NAMES: [HeaderName; 4] = [
        HeaderName::from_static("x-request-id"),
        HeaderName::from_static("request-id"),
        HeaderName::from_static("x-amzn-requestid"),
        HeaderName::from_static("cf-ray"),
    ];
    NAMES.iter().find_map(|h| headers.get(h)?.to_str().ok().map(str::to_string))
}

/// Phrases only an overflow of the context window says, whatever the status (llama.cpp
/// answers a full KV cache with a 500; Ollama its embedding overflow with a 500 or 400).
const OVERFLOW_SURE: &[&str] = &[
    "exceeds the available context size", // llama.cpp, 400 exceed_context_size_error
    "context size has been exceeded",     // llama.cpp, KV cache full (500, or in a stream)
    "larger than the max context size",   // llama.cpp, a non-splittable input
    "input length exceeds the context length", // Ollama
    "maximum context length is",          // OpenAI, vLLM, DeepSeek, Groq, Mistral…
    "prompt is too long",                 // Anthropic
];

/// Phrases that mean an overflow in a client error (4xx) only.
const OVERFLOW_LIKELY: &[&str] = &[
    "context window",
    "context length exceeded",
    "too many tokens",
    "reduce the length of the messages",
    "exceeds the context",
];

impl ProviderMessage {
    /// The prompt did not fit the model's window: the error, with the prompt's tokens and
    /// the window where the server said them; `None` for any other error. `client_error`:
    /// the status was a 4xx (where looser wording is trusted).
    pub(crate) fn prompt_too_long(&self, what: &str, client_error: bool) -> Option<LlmError> {
        let coded = self.has("context_length_exceeded") || self.has("exceed_context_size");
        let sure = self.says(OVERFLOW_SURE);
        let likely = client_error && (self.has("context_length") || self.says(OVERFLOW_LIKELY));
        if !(coded || sure || likely) {
            return None;
        }
        let (prompt_tokens, context_window) = overflow_numbers(&self.message);
        Some(LlmError::PromptTooLong {
            message: format!(
                "{what}; shorten the prompt (e.g. smaller groups of inputs) or use a model with a larger \
                 context window (a local server: a larger context size per slot)"
            ),
            prompt_tokens: self.prompt_tokens.or(prompt_tokens),
            context_window: self.context_window.or(context_window),
        })
    }
}

/// The prompt's tokens and the window, from the wording of the servers that give them:
/// llama.cpp `request (3031 tokens) exceeds the available context size (1024 tokens)`;
/// OpenAI and vLLM `maximum context length is 4096 tokens. However, you requested 5000
/// tokens (4000 in the messages, 1000 in the completion)` (or `your messages resulted in
/// N tokens`, `your request has N input tokens`, `your prompt contains at least N input
/// tokens`); Anthropic `prompt is too long: 210000 tokens > 200000 maximum`.
pub(crate) fn overflow_numbers(message: &str) -> (Option<u64>, Option<u64>) {
    let lower = message.to_ascii_lowercase();
    let after = |marker: &str| -> Option<u64> {
        let rest = &lower[lower.find(marker)? + marker.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(|c| *c != ',')
            .collect();
        digits.parse().ok()
    };
    let window = after("available context size (")
        .or_else(|| after("max context size ("))
        .or_else(|| after("maximum context length is"))
        .or_else(|| after("tokens >"));
    let prompt = after("request (")
        .or_else(|| after("input ("))
        .or_else(|| {
            // `(4000 in the messages`: the number just before the phrase.
            let at = lower.find(" in the messages,")?;
            let open = lower[..at].rfind('(')?;
            lower[open + 1..at].trim().parse().ok()
        })
        .or_else(|| after("messages resulted in"))
        .or_else(|| after("request has"))
        .or_else(|| after("contains at least"))
        .or_else(|| after("prompt is too long:"));
    (prompt, window)
}

/// Map an HTTP error status, its headers and body to the [`LlmError`] the engine acts on.
/// See the [module docs](self) for the table.
pub(crate) fn status_error(
    ctx: &ErrorContext<'_>,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> LlmError {
    let detail = ProviderMessage::parse(body);
    let said = if detail.message.is_empty() { "(no message)" } else { detail.message.as_str() };
    let id = request_id(headers).map_or(String::new(), |id| format!(" [request id {id}]"));
    let what = format!("{} answered HTTP {status}{}: {said}{id}", ctx.provider, detail.tags());

    if status != 429
        && let Some(overflow) = detail.prompt_too_long(&what, (400..500).contains(&status))
    {
        return overflow;
    }
    let policy = detail.has("content_policy") || detail.has("content_filter");
    let quota = detail.has("insufficient_quota") || detail.has("billing");
    if detail.has("model_not_found") && status != 429 && status < 500 {
        return LlmError::UnknownModel {
            model: ctx.model.to_string(),
            message: format!("{what}; {}", ctx.base_hint()),
        };
    }
    match status {
        401 => LlmError::Auth(format!("{what}; {}", ctx.key_hint())),
        403 => LlmError::Auth(format!(
            "{what}; the key is not allowed to use this model or endpoint (or not from this region); {}",
            ctx.key_hint()
        )),
        402 => LlmError::InvalidRequest(format!(
            "{what}; the account has run out of credits: add some or change plan, then retry"
        )),
        429 if quota => LlmError::InvalidRequest(format!(
            "{what}; the account's quota is used up, which waiting does not fix: check plan and billing"
        )),
        429 => LlmError::RateLimited { retry_after: retry_after(headers, now), message: what },
        404 => LlmError::UnknownModel {
            model: ctx.model.to_string(),
            message: format!("{what}; {}", ctx.base_hint()),
        },
        408 | 409 => LlmError::Server { status, message: what },
        529 => LlmError::Overloaded { message: what },
        500..=599 => LlmError::Server { status, message: what },
        _ if quota => LlmError::InvalidRequest(format!("{what}; check the account's plan and billing")),
        _ if policy => {
            LlmError::InvalidRequest(format!("{what}; the provider's content policy refused the request"))
        }
        400..=499 => LlmError::InvalidRequest(what),
        _ => LlmError::BadResponse(format!("{what}; an unexpected HTTP status for an API call")),
    }
}

/// How long a 429's headers ask to wait, or `None` when they do not say.
///
/// In order: `retry-after-ms` (milliseconds, fractional allowed), `Retry-After` (seconds,
/// fractional allowed, or an HTTP date; a past date is zero), then the rate-limit resets:
/// of the limits whose `remaining` is 0, the latest reset; if none is known to be 0, the
/// latest reset of any limit (a 429 means one of them is exhausted).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    if let Some(value) = get("retry-after") {
        if let Ok(secs) = value.parse::<f64>() {
            return seconds(secs);
        }
        if let Some(d) = http_date(value, now) {
            return Some(d);
        }
    }
    let limits = limit_headers(headers, now);
    let exhausted = limits.iter().filter(|l| l.remaining == Some(0)).filter_map(|l| l.reset).max();
    exhausted.or_else(|| limits.iter().filter_map(|l| l.reset).max())
}

/// The rate-limit headers of a response, or `None` when it has none.
pub fn rate_limits(headers: &HeaderMap, now: SystemTime) -> Option<RateLimits> {
    let limits = limit_headers(headers, now);
    if limits.is_empty() {
        return None;
    }
    let find = |family: Family| limits.iter().find(|l| l.family == family);
    let requests = find(Family::Requests);
    let tokens = find(Family::Tokens).or_else(|| find(Family::InputTokens));
    let explicit_wait = headers.contains_key("retry-after-ms") || headers.contains_key("retry-after");
    Some(RateLimits {
        requests_limit: requests.and_then(|l| l.limit),
        requests_remaining: requests.and_then(|l| l.remaining),
        requests_reset: requests.and_then(|l| l.reset),
        tokens_limit: tokens.and_then(|l| l.limit),
        tokens_remaining: tokens.and_then(|l| l.remaining),
        tokens_reset: tokens.and_then(|l| l.reset),
        retry_after: if explicit_wait { retry_after(headers, now) } else { None },
        observed_at: Some(Instant::now()),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Requests,
    Tokens,
    InputTokens,
    OutputTokens,
}

#[derive(Debug)]
struct Limit {
    family: Family,
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
}

/// Every `x-ratelimit-*` and `anthropic-ratelimit-*` header, grouped by limit.
///
/// Names: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (OpenAI, xAI, Groq),
/// `x-ratelimit-{limit,remaining,reset}` (OpenRouter: requests), and
/// `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`.
fn limit_headers(headers: &HeaderMap, now: SystemTime) -> Vec<Limit> {
    let mut limits: Vec<Limit> = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        let (family, field) = if let Some(rest) = name.strip_prefix("x-ratelimit-") {
            let (field, family) = rest.split_once('-').unwrap_or((rest, "requests"));
            let family = match family {
                "requests" => Family::Requests,
                "tokens" => Family::Tokens,
                _ => continue,
            };
            (family, field)
        } else if let Some(rest) = name.strip_prefix("anthropic-ratelimit-") {
            let Some((family, field)) = rest.rsplit_once('-') else { continue };
            let family = match family {
                "requests" => Family::Requests,
                "tokens" => Family::Tokens,
                "input-tokens" => Family::InputTokens,
                "output-tokens" => Family::OutputTokens,
                _ => continue,
            };
            (family, field)
        } else {
            continue;
        };
        let Ok(value) = value.to_str() else { continue };
        let value = value.trim();
        let slot = match limits.iter().position(|l| l.family == family) {
            Some(i) => &mut limits[i],
            None => {
                limits.push(Limit { family, limit: None, remaining: None, reset: None });
                limits.last_mut().expect("just pushed")
            }
        };
        match field {
            "limit" => slot.limit = value.parse().ok(),
            "remaining" => slot.remaining = value.parse().ok(),
            "reset" => slot.reset = reset_time(value, now),
            _ => {}
        }
    }
    limits
}

/// A reset as providers write it: a Go duration (`1s`, `6m0s`, `20ms`, `1h2m3.5s`), a
/// number (seconds; or an epoch time in seconds or milliseconds when it is that large),
/// an RFC 3339 time (Anthropic) or an HTTP date. A time in the past is zero.
pub fn reset_time(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(n) = value.parse::<f64>() {
        let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs_f64();
        return if n >= 1e12 {
            seconds(n / 1000.0 - since_epoch)
        } else if n >= 1e9 {
            seconds(n - since_epoch)
        } else {
            seconds(n)
        };
    }
    if let Some(d) = go_duration(value) {
        return Some(d);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return until(SystemTime::from(t), now);
    }
    http_date(value, now)
}

/// An HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`), as a wait from `now`.
fn http_date(value: &str, now: SystemTime) -> Option<Duration> {
    let t = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    until(SystemTime::from(t), now)
}

fn until(t: SystemTime, now: SystemTime) -> Option<Duration> {
    Some(t.duration_since(now).unwrap_or(Duration::ZERO))
}

fn seconds(s: f64) -> Option<Duration> {
    if s.is_nan() {
        return None;
    }
    Duration::try_from_secs_f64(s.max(0.0)).ok()
}

/// A Go duration string: one or more `<number><unit>` with units h, m, s, ms, us, µs, ns.
fn go_duration(value: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = value;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_end == 0 {
            return None;
        }
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    seconds(total)
}

/// Finish reasons in one vocabulary: `stop`, `length`, `tool_calls`, `content_filter`,
/// `refusal`; anything else passes through in lower case.
pub(crate) fn finish_reason(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "stop" | "end_turn" | "stop_sequence" | "eos" | "eos_token" => "stop",
        "length" | "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_calls" | "tool_use" | "function_call" => "tool_calls",
        "content_filter" | "safety" | "recitation" => "content_filter",
        "refusal" => "refusal",
        _ => return lower,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::from(chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap())
    }

    const NOW: &str = "2025-11-20T10:00:00Z";

    #[test]
    fn retry_after_reads_ms_seconds_and_http_dates() {
        let now = at(NOW);
        let ra = |pairs: &[(&str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(ra(&[("retry-after-ms", "1500")]), Some(Duration::from_millis(1500)));
        assert_eq!(
            ra(&[("retry-after-ms", "20.5"), ("retry-after", "9")]),
            Some(Duration::from_micros(20_500))
        );
        assert_eq!(ra(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(ra(&[("Retry-After", "0.25")]), Some(Duration::from_millis(250)));
        assert_eq!(ra(&[("retry-after", "Thu, 20 Nov 2025 10:00:30 GMT")]), Some(Duration::from_secs(30)));
        assert_eq!(
            ra(&[("retry-after", "Thu, 20 Nov 2025 09:00:00 GMT")]),
            Some(Duration::ZERO),
            "past date"
        );
        assert_eq!(ra(&[("retry-after", "soon")]), None);
        assert_eq!(ra(&[]), None);
    }

    #[test]
    fn retry_after_falls_back_to_the_exhausted_limits_reset() {
        let now = at(NOW);
        let ra = |pairs: &[(&str, &str)]| retry_after(&headers(pairs), now);
        // OpenAI: tokens exhausted, requests not: the tokens' reset.
        let openai = [
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(ra(&openai), Some(Duration::from_secs(360)));
        // Groq's fractional Go durations; nothing at 0: the latest reset.
        let groq = [("x-ratelimit-reset-requests", "2m59.56s"), ("x-ratelimit-reset-tokens", "7.66s")];
        assert_eq!(ra(&groq), Some(Duration::from_millis(179_560)));
        // Anthropic: RFC 3339 resets.
        let anthropic = [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2025-11-20T10:00:12Z"),
            ("anthropic-ratelimit-tokens-remaining", "1000"),
            ("anthropic-ratelimit-tokens-reset", "2025-11-20T10:00:40Z"),
        ];
        assert_eq!(ra(&anthropic), Some(Duration::from_secs(12)));
        // OpenRouter: epoch milliseconds.
        let epoch_ms = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() + 4000;
        let openrouter = [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &epoch_ms.to_string()[..])];
        assert_eq!(ra(&openrouter), Some(Duration::from_secs(4)));
        // Retry-After wins over resets.
        assert_eq!(
            ra(&[("retry-after", "2"), ("x-ratelimit-reset-tokens", "6m0s")]),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(go_duration("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(go_duration("s"), None);
        assert_eq!(go_duration("5 s"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn rate_limit_snapshots_from_both_families() {
        let now = at(NOW);
        let openai = rate_limits(
            &headers(&[
                ("x-ratelimit-limit-requests", "500"),
                ("x-ratelimit-remaining-requests", "499"),
                ("x-ratelimit-reset-requests", "120ms"),
                ("x-ratelimit-limit-tokens", "30000"),
                ("x-ratelimit-remaining-tokens", "29000"),
                ("x-ratelimit-reset-tokens", "2s"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(openai.requests_limit, Some(500));
        assert_eq!(openai.requests_remaining, Some(499));
        assert_eq!(openai.requests_reset, Some(Duration::from_millis(120)));
        assert_eq!(openai.tokens_remaining, Some(29000));
        assert_eq!(openai.tokens_reset, Some(Duration::from_secs(2)));
        assert_eq!(openai.retry_after, None);
        assert!(openai.observed_at.is_some());

        let anthropic = rate_limits(
            &headers(&[
                ("anthropic-ratelimit-input-tokens-limit", "400000"),
                ("anthropic-ratelimit-input-tokens-remaining", "399000"),
                ("anthropic-ratelimit-requests-limit", "4000"),
                ("anthropic-ratelimit-requests-remaining", "3999"),
                ("anthropic-ratelimit-requests-reset", "2025-11-20T10:00:01Z"),
                ("retry-after", "3"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(anthropic.requests_limit, Some(4000));
        assert_eq!(anthropic.requests_reset, Some(Duration::from_secs(1)));
        assert_eq!(anthropic.tokens_limit, Some(400_000), "input tokens stand in for tokens");
        assert_eq!(anthropic.retry_after, Some(Duration::from_secs(3)));

        assert_eq!(rate_limits(&headers(&[("content-type", "text/event-stream")]), now), None);
    }

    fn ctx() -> ErrorContext<'static> {
        ErrorContext {
            provider: "openai",
            model: "gpt-4o",
            key_env: Some("OPENAI_API_KEY"),
            base_url_env: Some("OPENAI_BASE_URL"),
            base_url: "https://api.openai.com/v1",
            has_key: true,
        }
    }

    fn openai_body(message: &str, kind: &str, code: &str) -> Vec<u8> {
        serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn statuses_map_to_actionable_errors() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        let err = |status, body: &[u8]| status_error(&ctx(), status, &none, body, now);

        let auth = err(
            401,
            &openai_body(
                "Incorrect API key provided: sk-****abcd.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        );
        assert!(matches!(auth, LlmError::Auth(_)) && !auth.is_retryable());
        let text = auth.to_string();
        assert!(text.contains("OPENAI_API_KEY") && text.contains("Incorrect API key provided"), "{text}");
        assert!(text.contains("HTTP 401") && text.contains("invalid_api_key"), "{text}");
        assert!(matches!(err(403, b"{}"), LlmError::Auth(m) if m.contains("not allowed")));

        let bad = err(400, &openai_body("Invalid value for 'temperature'", "invalid_request_error", ""));
        assert!(matches!(&bad, LlmError::InvalidRequest(m) if m.contains("Invalid value for 'temperature'")));
        assert!(!bad.is_retryable());
        let long = err(
            400,
            &openai_body(
                "This model's maximum context length is 128000 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
        );
        assert!(
            matches!(&long, LlmError::PromptTooLong { message, prompt_tokens: None, context_window: Some(128_000) } if message.contains("larger")),
            "{long:?}"
        );
        let policy = err(400, &openai_body("blocked", "invalid_request_error", "content_policy_violation"));
        assert!(matches!(&policy, LlmError::InvalidRequest(m) if m.contains("content policy")), "{policy}");

        let missing = err(
            404,
            &openai_body(
                "The model `gpt-9` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            ),
        );
        match &missing {
            LlmError::UnknownModel { model, message } => {
                assert_eq!(model, "gpt-4o");
                assert!(
                    message.contains("https://api.openai.com/v1") && message.contains("OPENAI_BASE_URL"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            err(400, &openai_body("no such model", "x", "model_not_found")),
            LlmError::UnknownModel { .. }
        ));

        for status in [408, 409, 500, 502, 503, 504] {
            let e = err(status, b"upstream connect error");
            assert!(
                matches!(&e, LlmError::Server { status: s, message } if *s == status && message.contains("upstream connect error")),
                "{e:?}"
            );
            assert!(e.is_retryable());
        }
        let overloaded =
            err(529, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert!(
            matches!(&overloaded, LlmError::Overloaded { message } if message.contains("overloaded_error"))
        );
        assert!(overloaded.is_retryable());

        let quota = err(
            429,
            &openai_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
        );
        assert!(
            matches!(&quota, LlmError::InvalidRequest(m) if m.contains("quota")) && !quota.is_retryable()
        );
        assert!(
            matches!(err(402, b"{\"error\":{\"message\":\"Insufficient credits\",\"code\":402}}"), LlmError::InvalidRequest(m) if m.contains("credits"))
        );
        assert!(matches!(err(418, b""), LlmError::InvalidRequest(m) if m.contains("(no message)")));
    }

    #[test]
    fn overflow_wording_of_every_server_gives_its_numbers() {
        for (message, numbers) in [
            (
                "request (3031 tokens) exceeds the available context size (1024 tokens), try increasing it",
                (Some(3031), Some(1024)),
            ),
            (
                "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens \
                 (4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
                (Some(4000), Some(4096)),
            ),
            (
                "This model's maximum context length is 32768 tokens. However, your request has 40000 input \
                 tokens. Please reduce the length of the input messages.",
                (Some(40000), Some(32768)),
            ),
            (
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens.",
                (Some(130_512), Some(128_000)),
            ),
            ("prompt is too long: 210000 tokens > 200000 maximum", (Some(210_000), Some(200_000))),
            (
                "input (5000 tokens) is larger than the max context size (4096 tokens)",
                (Some(5000), Some(4096)),
            ),
            ("Context size has been exceeded.", (None, None)),
            ("the input length exceeds the context length", (None, None)),
        ] {
            assert_eq!(overflow_numbers(message), numbers, "{message}");
        }
    }

    #[test]
    fn a_429_carries_its_wait_and_request_id() {
        let h = headers(&[("retry-after", "20"), ("x-request-id", "req_123")]);
        let e = status_error(
            &ctx(),
            429,
            &h,
            &openai_body("Rate limit reached for gpt-4o", "requests", "rate_limit_exceeded"),
            SystemTime::now(),
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(20)));
        assert!(e.is_retryable());
        // (belt-core's Display of RateLimited shows the wait, not the message; the message
        // is in the field.)
        let LlmError::RateLimited { message, .. } = &e else { panic!("{e:?}") };
        assert!(message.contains("Rate limit reached") && message.contains("req_123"), "{message}");
    }

    #[test]
    fn error_bodies_of_every_shape_give_their_message() {
        let m = |body: &str| ProviderMessage::parse(body.as_bytes());
        assert_eq!(m(r#"{"error":"model 'llama9' not found"}"#).message, "model 'llama9' not found");
        let mistral = m(
            r#"{"object":"error","message":"Invalid model: x","type":"invalid_model","param":null,"code":"1500"}"#,
        );
        assert_eq!(
            (mistral.message.as_str(), mistral.kind.as_deref(), mistral.code.as_deref()),
            ("Invalid model: x", Some("invalid_model"), Some("1500"))
        );
        assert_eq!(m(r#"{"detail":"Not Found"}"#).message, "Not Found");
        assert_eq!(
            m(r#"{"detail":[{"loc":["body","model"],"msg":"field required"}]}"#).message,
            "body.model: field required"
        );
        let nested = m(
            r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","stream_options","include_usage"],"msg":"Extra inputs are not permitted","input":true}]},"type":"invalid_request_error","param":null,"code":null}"#,
        );
        assert_eq!(nested.message, "body.stream_options.include_usage: Extra inputs are not permitted");
        assert_eq!(nested.kind.as_deref(), Some("invalid_request_error"));
        let gemini =
            m(r#"[{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}]"#);
        assert_eq!(
            (gemini.message.as_str(), gemini.kind.as_deref(), gemini.code.as_deref()),
            ("API key not valid.", Some("INVALID_ARGUMENT"), Some("400"))
        );
        let openrouter = m(
            r#"{"error":{"message":"Provider returned error","code":429,"metadata":{"raw":"slow down","provider_name":"X"}}}"#,
        );
        assert_eq!(openrouter.message, "Provider returned error (upstream: slow down)");
        assert!(m("<html><body>502 Bad Gateway</body></html>").message.contains("HTML page"));
        assert_eq!(m("plain text").message, "plain text");
        assert_eq!(m(&"x".repeat(2000)).message.chars().count(), 501);
    }

    #[test]
    fn secrets_are_redacted_and_never_printed() {
        let key = ApiKey::new("sk-test-SECRET-1234567890");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        let secrets = Secrets::new(
            Some(&key),
            &[("X-Auth-Token".into(), "tok-ABCDEFGH".into()), ("X-Title".into(), "belt-run".into())],
        );
        assert_eq!(format!("{secrets:?}"), "Secrets(2 hidden)");
        let e = secrets.redact_error(LlmError::Auth(
            "bad key sk-test-SECRET-1234567890 and tok-ABCDEFGH for belt-run".into(),
        ));
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SECRET") && !text.contains("ABCDEFGH"), "{text}");
        assert!(text.contains("[redacted]") && text.contains("belt-run"), "{text}");
    }

    #[test]
    fn finish_reasons_share_one_vocabulary() {
        for (raw, norm) in [
            ("stop", "stop"),
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("length", "length"),
            ("max_tokens", "length"),
            ("MAX_TOKENS", "length"),
            ("tool_use", "tool_calls"),
            ("tool_calls", "tool_calls"),
            ("content_filter", "content_filter"),
            ("refusal", "refusal"),
            ("pause_turn", "pause_turn"),
        ] {
            assert_eq!(finish_reason(raw), norm, "{raw}");
        }
    }

    #[test]
    fn urls_are_reduced_to_their_origin() {
        assert_eq!(
            origin("https://user:pw@api.example.com:8443/v1/chat?key=abc"),
            "https://api.example.com:8443"
        );
        assert_eq!(
            origin_and_path("https://user:pw@api.example.com/v1/?key=abc"),
            "https://api.example.com/v1"
        );
        assert_eq!(origin("not a url"), "(an invalid URL)");
    }
}

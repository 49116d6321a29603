//! Why a provider call failed, in words a user can act on, and which failures are worth
//! another attempt. Its own file because the limits (whose circuit breaker opens on these
//! errors) and the provider interface both need it.

use std::time::Duration;

/// Why a provider call failed. The engine retries [`LlmError::is_retryable`] errors and
/// fails the step at once on the others.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
// Deliberately not `#[non_exhaustive]`: adapters match it exhaustively (to redact secrets
// from every variant's text), and a new variant must stop their build, not slip past.
pub enum LlmError {
    #[error("rate limited by the provider (HTTP 429){}: {message}", fmt_retry_after(.retry_after))]
    RateLimited { retry_after: Option<Duration>, message: String },
    #[error("provider error HTTP {status}: {message}")]
    Server { status: u16, message: String },
    #[error("provider overloaded (HTTP 529): {message}")]
    Overloaded { message: String },
    #[error("the call timed out after {:.1}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("connection to the provider failed: {0}")]
    Connection(String),
    #[error("authentication failed: {0}; check the API key environment variable")]
    Auth(String),
    #[error("the provider rejected the request: {0}")]
    InvalidRequest(String),
    #[error("unknown model `{model}`: {message}")]
    UnknownModel { model: String, message: String },
    #[error("the provider returned an unusable response: {0}")]
    BadResponse(String),
    /// The prompt does not fit the model's context window (every provider's form of it:
    /// OpenAI's `context_length_exceeded`, Anthropic's "prompt is too long", llama.cpp's
    /// `exceed_context_size_error` and its in-stream "Context size has been exceeded", vLLM's
    /// and Ollama's). Never retried as it is: the same prompt would fail the same way; a
    /// pattern that can shorten or split its prompt does so (the cascade's synthesizers).
    #[error(
        "the prompt is too long for the model's context window{}: {message}",
        fmt_window(.prompt_tokens, .context_window)
    )]
    PromptTooLong {
        message: String,
        /// The prompt's size in tokens, when the server said.
        prompt_tokens: Option<u64>,
        /// The window (or a slot's share of it) in tokens, when the server said.
        context_window: Option<u64>,
    },
    #[error(
        "the circuit breaker of {model} is open after {failures} consecutive failures{}",
        fmt_open(.model, .waited)
    )]
    CircuitOpen {
        /// `provider/model`.
        model: String,
        failures: u32,
        /// How long the step waited for the model to answer again (`breaker_max_wait`)
        /// before giving up; `None` when it did not wait (a fallback model was left).
        waited: Option<Duration>,
    },
}

fn fmt_open(model: &str, waited: &Option<Duration>) -> String {
    match waited {
        Some(w) => format!(
            "; it did not answer again within {:.0}s (the provider's breaker_max_wait); once it is \
             back, `belt resume --retry-failed RUN_ID` runs the failed steps again",
            w.as_secs_f64()
        ),
        None => format!(
            "; calls to it fail at once until its cooldown ends (add a fallback model: \
             --worker-model {model},other/model)"
        ),
    }
}

fn fmt_window(prompt: &Option<u64>, window: &Option<u64>) -> String {
    match (prompt, window) {
        (Some(p), Some(w)) => format!(" ({p} tokens; the window holds {w})"),
        (None, Some(w)) => format!(" (it holds {w} tokens)"),
        (Some(p), None) => format!(" ({p} tokens)"),
        (None, None) => String::new(),
    }
}

fn fmt_retry_after(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(", retry after {:.1}s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl LlmError {
    /// Timeouts, 429, 5xx, 529 and broken connections are worth another attempt; auth,
    /// invalid requests and unknown models are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Overloaded { .. }
                | LlmError::Timeout(_)
                | LlmError::Connection(_)
                | LlmError::BadResponse(_)
        )
    }

    /// How long the provider asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short machine-readable class, used in events and records.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Server { .. } => "server_error",
            LlmError::Overloaded { .. } => "overloaded",
            LlmError::Timeout(_) => "timeout",
            LlmError::Connection(_) => "connection",
            LlmError::Auth(_) => "auth",
            LlmError::InvalidRequest(_) => "invalid_request",
            LlmError::UnknownModel { .. } => "unknown_model",
            LlmError::BadResponse(_) => "bad_response",
            LlmError::CircuitOpen { .. } => "circuit_open",
            LlmError::PromptTooLong { .. } => "prompt_too_long",
        }
    }
}

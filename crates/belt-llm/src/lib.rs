//! LLM providers for belt: the implementations of [`LlmProvider`] that the engine calls.
//!
//! The engine (`belt-core`) defines the provider interface ([`LlmProvider`],
//! [`LlmRequest`], [`LlmReply`], [`LlmError`]) and never sees a wire format. This crate
//! supplies the providers and re-exports that interface, so that most users need only
//! `belt_llm`:
//!
//! - [`openai::OpenAiProvider`]: OpenAI Chat Completions over any base URL (OpenAI, xAI,
//!   Groq, OpenRouter, DeepSeek, Mistral, Gemini's OpenAI endpoint, Ollama, vLLM, LM
//!   Studio, llama.cpp), streaming or not;
//! - [`anthropic::AnthropicProvider`]: Anthropic Messages, streaming or not;
//! - [`SimulatedProvider`]: deterministic, offline, with configurable latency and failure
//!   injection, used when no API key is set, by tests and by benchmarks.
//!
//! The HTTP adapters make exactly one call and report exactly what happened: status
//! codes, every rate-limit header and errors in the middle of a stream become
//! [`LlmError`]s a user can act on ([`http`] has the table), and retries, timeouts,
//! budgets and concurrency stay the engine's job. Both speak tool calling and structured
//! output (a JSON schema enforced by the server where the model supports it). Their `call`
//! method also returns the detail the engine's [`LlmReply`] has no room for
//! ([`http::Completion`]: reasoning tokens, the exact cost with long-prompt tiers, request
//! id, rate-limit headers). API keys never appear in errors or `Debug` output.
//!
//! Both are built from an [`Endpoint`] (name, base URL, key, headers, streaming, timeouts,
//! prices), which each wire format's configuration ([`OpenAiConfig`], [`AnthropicConfig`])
//! wraps with its own options.
//!
//! Around them: [`sse`] decodes server-sent events; [`pricing`] holds prices and
//! capabilities per model, from a data file shipped in the crate; [`json_reply`] asks
//! for and cleans JSON replies; [`providers`](mod@providers) lists the built-in providers
//! and builds the set a run can use from an environment, with [`providers_from_env`].
//! Models are named `provider/model`, e.g. `openai/gpt-4o-mini` or `simulated/default`.
//! With the `fake-server` feature, the `fake_server` module provides in-process fake OpenAI and
//! Anthropic servers for end-to-end tests, and `fake_local` stateful fake llama.cpp, Ollama
//! and vLLM servers (context windows, slots, outages, discovery).
//!
//! ```
//! use belt_llm::{CallHints, CallInfo, LlmRequest, SimConfig, StepId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Keys and base URLs come from the environment given (here: none, so only Ollama and
//! // the simulated provider are registered).
//! let env = |_: &str| None;
//! let providers = belt_llm::providers_from_env(SimConfig::default().seed(7).latency_ms(0), env)?;
//! let (provider, model) = providers.resolve("simulated/default")?;
//!
//! let request = LlmRequest::new("simulated/default", "Task: Plan a city park\nSubtask 1: Choose the trees")
//!     .hints(CallHints::work("Plan a city park", "Choose the trees"));
//! let call = CallInfo::new(StepId::new("worker/001"), 1);
//! let reply = provider.complete(model, &request, &call).await?;
//!
//! assert!(reply.simulated);
//! assert!(reply.text.starts_with(belt_llm::SIMULATED_LABEL));
//! assert!(reply.text.contains("## Choose the trees"));
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

pub use belt_core::llm::*;
pub use belt_core::step::StepId;

pub mod anthropic;
pub mod discovery;
pub mod endpoint;
#[cfg(any(test, feature = "fake-server"))]
pub mod fake_local;
#[cfg(any(test, feature = "fake-server"))]
pub mod fake_server;
pub mod http;
pub mod json_reply;
pub mod openai;
pub mod pricing;
pub mod providers;
pub mod simulated;
pub mod sse;
pub mod timer;

#[cfg(test)]
mod adapter_tests;
#[cfg(test)]
mod local_tests;

pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use endpoint::{Endpoint, PriceSource};
pub use http::{ApiKey, Completion, ConfigError, HttpOptions};
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use pricing::{Capabilities, ModelInfo, ModelPrice, PriceTable};
pub use providers::{BUILTIN_PROVIDERS, ProviderSpec, WireFormat, process_env, providers_from_env};
pub use simulated::{FailureKind, Latency, SIMULATED_LABEL, SIMULATED_PRICE, SimConfig, SimulatedProvider};

/// The simulated provider alone, configured by `sim`: what a run uses when it must not
/// reach any network. [`providers_from_env`] adds the HTTP providers whose keys are set.
pub fn providers(sim: SimConfig) -> Providers {
    let mut providers = Providers::new();
    providers.insert(Arc::new(SimulatedProvider::new(sim)));
    providers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_resolve_simulated_models() {
        let providers = providers(SimConfig::default());
        let (provider, model) = providers.resolve("simulated/anything-at-all").unwrap();
        assert_eq!(provider.name(), "simulated");
        assert_eq!(model, "anything-at-all");
        assert!(provider.is_simulated());
        assert!(matches!(providers.resolve("nope/model"), Err(ModelError::UnknownProvider { .. })));
    }
}

//! LLM providers for belt: the implementations of [`LlmProvider`] that the engine calls.
//!
//! The engine (`belt-core`) defines the provider interface ([`LlmProvider`],
//! [`LlmRequest`], [`LlmReply`], [`LlmError`]) and never sees a wire format. This crate
//! supplies the providers and re-exports that interface, so that most users need only
//! `belt_llm`. Today it holds the built-in [`SimulatedProvider`]: deterministic, offline,
//! with configurable latency and failure injection, used when no API key is set, by tests
//! and by benchmarks. HTTP adapters (OpenAI-compatible and Anthropic) are to come.
//!
//! [`providers`] builds the set of providers a run can use; models are then named
//! `provider/model`, e.g. `simulated/default`.
//!
//! ```
//! use belt_llm::{CallInfo, LlmRequest, SimConfig, StepId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let providers = belt_llm::providers(SimConfig::default().seed(7).latency_ms(0));
//! let (provider, model) = providers.resolve("simulated/default")?;
//!
//! let request = LlmRequest::new("simulated/default", "Task: Plan a city park\nSubtask 1: Choose the trees");
//! let call = CallInfo { step: StepId::new("worker/001"), attempt: 1 };
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

pub mod simulated;
pub mod timer;

pub use simulated::{FailureKind, Latency, SIMULATED_LABEL, SIMULATED_PRICE, SimConfig, SimulatedProvider};

/// The providers a run can use: today the simulated provider, configured by `sim`.
///
/// Real providers are added here as they arrive, each one only when it is configured
/// (for example when its API key is set), so that a run with no key still works on
/// `simulated/...` models.
pub fn providers(sim: SimConfig) -> Providers {
    let mut providers = Providers::new();
    providers.insert(Arc::new(SimulatedProvider::new(sim)));
    // HTTP providers go here, e.g.:
    // if let Some(openai) = openai::from_env()? { providers.insert(Arc::new(openai)); }
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

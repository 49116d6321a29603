//! What every HTTP adapter's endpoint has, whatever its wire format: the provider's name,
//! where it is, how to authenticate, extra headers, streaming, client timeouts and prices.
//!
//! An [`Endpoint`] is written once and given to a wire format's configuration
//! ([`OpenAiConfig`](crate::openai::OpenAiConfig),
//! [`AnthropicConfig`](crate::anthropic::AnthropicConfig)), which adds only what that format
//! has of its own. Each provider's `new` takes its configuration or, for the format's
//! defaults, the endpoint alone:
//!
//! ```
//! use belt_llm::{AnthropicProvider, Endpoint, OpenAiConfig, OpenAiProvider};
//! use belt_llm::openai::JsonMode;
//!
//! let local = Endpoint::new("vllm", "http://127.0.0.1:8000/v1").header("X-Title", "belt");
//! let vllm = OpenAiProvider::new(OpenAiConfig::new(local).json_mode(JsonMode::Instruction))?;
//! assert_eq!(vllm.endpoint(), "http://127.0.0.1:8000/v1/chat/completions");
//!
//! let claude = AnthropicProvider::new(
//!     Endpoint::new("anthropic", "https://api.anthropic.com")
//!         .api_key("sk-ant-example")
//!         .api_key_env("ANTHROPIC_API_KEY"),
//! )?;
//! assert_eq!(claude.endpoint(), "https://api.anthropic.com/v1/messages");
//! # Ok::<(), belt_llm::ConfigError>(())
//! ```
//!
//! `Debug` never shows the key or the values of extra headers: only whether a key is set
//! and the headers' names, and the base URL without user info or query.

use std::fmt;
use std::sync::Arc;

use crate::http::{ApiKey, HttpOptions, origin_and_path};
use crate::pricing::PriceTable;

/// Where an HTTP provider is and how to reach it. See the [module docs](self).
#[derive(Clone)]
pub struct Endpoint {
    /// The provider name models are addressed by (`NAME/model`).
    pub name: String,
    /// The API root, e.g. `https://api.openai.com/v1` or `https://api.anthropic.com`; the
    /// wire format appends its path.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// The environment variable the key comes from, named in authentication errors.
    pub api_key_env: Option<String>,
    /// The environment variable that overrides the base URL, named in connection errors.
    pub base_url_env: Option<String>,
    /// Extra headers on every request (OpenRouter's `HTTP-Referer`, `anthropic-beta`…).
    pub headers: Vec<(String, String)>,
    /// Stream replies (SSE). Default true.
    pub stream: bool,
    pub http: HttpOptions,
    /// Prices and capabilities; default the shipped table.
    pub prices: Option<Arc<PriceTable>>,
    /// The provider whose prices apply, when it is not `name` (a self-hosted mirror).
    pub price_provider: Option<String>,
    /// Which prices apply (default: the table's, free at a local or private address).
    pub price_source: PriceSource,
}

/// Which prices apply to an endpoint's models. Prices set in configuration
/// ([`PriceTable::set_price`]) win in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PriceSource {
    /// The table's (shipped or configured) prices of the price provider; free when the
    /// base URL is on a loopback or private address.
    #[default]
    Table,
    /// Free: a server of the user's own.
    Free,
    /// The table's prices even at a local address: a local proxy in front of a paid API
    /// (a LiteLLM or corporate gateway on `localhost`), or a test's stand-in for one.
    Listed,
    /// Only configured prices; others are unknown (a built-in provider pointed at another
    /// host, whose prices are not the provider's).
    ConfiguredOnly,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("base_url", &origin_and_path(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("api_key_env", &self.api_key_env)
            .field("base_url_env", &self.base_url_env)
            .field("headers", &header_names)
            .field("stream", &self.stream)
            .field("http", &self.http)
            .field("price_provider", &self.price_provider)
            .field("price_source", &self.price_source)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Provider `name` at `base_url`: no key, no extra headers, streaming, default
    /// timeouts, the shipped prices.
    pub fn new(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Endpoint {
            name: name.into(),
            base_url: base_url.into(),
            api_key: None,
            api_key_env: None,
            base_url_env: None,
            headers: Vec::new(),
            stream: true,
            http: HttpOptions::default(),
            prices: None,
            price_provider: None,
            price_source: PriceSource::Table,
        }
    }
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }
    pub fn api_key_env(mut self, env: impl Into<String>) -> Self {
        self.api_key_env = Some(env.into());
        self
    }
    pub fn base_url_env(mut self, env: impl Into<String>) -> Self {
        self.base_url_env = Some(env.into());
        self
    }
    /// Add a header to every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }
    pub fn http(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }
    pub fn prices(mut self, prices: Arc<PriceTable>) -> Self {
        self.prices = Some(prices);
        self
    }
    pub fn price_provider(mut self, provider: impl Into<String>) -> Self {
        self.price_provider = Some(provider.into());
        self
    }
    pub fn price_source(mut self, source: PriceSource) -> Self {
        self.price_source = source;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_the_key_nor_header_values_nor_url_secrets() {
        let endpoint = Endpoint::new("gw", "https://user:pw@gw.example.com/v1?key=QUERYSECRET")
            .api_key("sk-SECRET-123456")
            .header("X-Gateway-Token", "tok-HEADERSECRET");
        let text = format!("{endpoint:?}");
        for secret in ["sk-SECRET-123456", "tok-HEADERSECRET", "QUERYSECRET", "pw@"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("X-Gateway-Token") && text.contains("https://gw.example.com/v1"), "{text}");
        assert!(text.contains("api_key: Some(\"***\")"), "{text}");
    }
}

//! The built-in providers, and building the set a run can use from an environment.
//!
//! Each built-in provider is a name (the `provider` of `provider/model`), a wire format,
//! a default base URL, the environment variable that overrides it, and the variables its
//! key is read from:
//!
//! | name | format | default base URL | base URL variable | key variable |
//! |---|---|---|---|---|
//! | `openai` | OpenAI | `https://api.openai.com/v1` | `OPENAI_BASE_URL` | `OPENAI_API_KEY` |
//! | `anthropic` | Anthropic | `https://api.anthropic.com` | `ANTHROPIC_BASE_URL` | `ANTHROPIC_API_KEY` |
//! | `xai` | OpenAI | `https://api.x.ai/v1` | `XAI_BASE_URL` | `XAI_API_KEY` |
//! | `groq` | OpenAI | `https://api.groq.com/openai/v1` | `GROQ_BASE_URL` | `GROQ_API_KEY` |
//! | `openrouter` | OpenAI | `https://openrouter.ai/api/v1` | `OPENROUTER_BASE_URL` | `OPENROUTER_API_KEY` |
//! | `deepseek` | OpenAI | `https://api.deepseek.com` | `DEEPSEEK_BASE_URL` | `DEEPSEEK_API_KEY` |
//! | `mistral` | OpenAI | `https://api.mistral.ai/v1` | `MISTRAL_BASE_URL` | `MISTRAL_API_KEY` |
//! | `gemini` | OpenAI | `https://generativelanguage.googleapis.com/v1beta/openai` | `GEMINI_BASE_URL` | `GEMINI_API_KEY`, else `GOOGLE_API_KEY` |
//! | `ollama` | OpenAI | `http://127.0.0.1:11434/v1` | `OLLAMA_HOST` | none |
//!
//! `OLLAMA_HOST` is read as Ollama itself reads it (`host`, `host:port`, or a URL; port
//! 11434 when no scheme is given; `/v1` appended). Mistral rejects the
//! `stream_options` field (HTTP 422) and reports usage without it, so it is not sent there.
//!
//! [`providers_from_env`] takes the environment as a function, so that it can be tested
//! (and driven by a configuration file) without touching the process environment; pass
//! [`process_env`] for the real one. It registers the providers whose key is set (an
//! empty value counts as unset), Ollama (which needs no key, and is only contacted
//! when a model names it), and the simulated provider. [`ProviderSpec`] is the same
//! description as data, for providers defined in configuration.

use std::sync::Arc;

use belt_core::llm::{LlmProvider, Providers};

use crate::anthropic::AnthropicProvider;
use crate::endpoint::Endpoint;
use crate::http::{ApiKey, ConfigError};
use crate::openai::{OpenAiConfig, OpenAiProvider};
use crate::pricing::PriceTable;
use crate::simulated::{SimConfig, SimulatedProvider};

/// The two wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// OpenAI Chat Completions ([`OpenAiProvider`]).
    #[serde(alias = "openai-compatible", alias = "openai_compatible")]
    OpenAi,
    /// Anthropic Messages ([`AnthropicProvider`]).
    Anthropic,
}

/// A built-in provider. See the [module docs](self) for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinProvider {
    pub name: &'static str,
    pub format: WireFormat,
    pub base_url: &'static str,
    /// The variable that overrides `base_url`.
    pub base_url_env: &'static str,
    /// Variables the key is read from, the first set one winning; empty: no key needed.
    pub key_env: &'static [&'static str],
    /// Whether to send `stream_options.include_usage`.
    pub include_usage: bool,
    /// Headers sent on every request.
    pub headers: &'static [(&'static str, &'static str)],
}

/// Every built-in HTTP provider (the simulated one is added by [`providers_from_env`]).
pub const BUILTIN_PROVIDERS: &[BuiltinProvider] = &[
    openai_like("openai", "https://api.openai.com/v1", "OPENAI_BASE_URL", &["OPENAI_API_KEY"]),
    BuiltinProvider {
        name: "anthropic",
        format: WireFormat::Anthropic,
        base_url: "https://api.anthropic.com",
        base_url_env: "ANTHROPIC_BASE_URL",
        key_env: &["ANTHROPIC_API_KEY"],
        include_usage: false,
        headers: &[],
    },
    openai_like("xai", "https://api.x.ai/v1", "XAI_BASE_URL", &["XAI_API_KEY"]),
    openai_like("groq", "https://api.groq.com/openai/v1", "GROQ_BASE_URL", &["GROQ_API_KEY"]),
    BuiltinProvider {
        // OpenRouter's app attribution header.
        headers: &[("X-Title", "belt")],
        ..openai_like(
            "openrouter",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_BASE_URL",
            &["OPENROUTER_API_KEY"],
        )
    },
    openai_like("deepseek", "https://api.deepseek.com", "DEEPSEEK_BASE_URL", &["DEEPSEEK_API_KEY"]),
    BuiltinProvider {
        include_usage: false,
        ..openai_like("mistral", "https://api.mistral.ai/v1", "MISTRAL_BASE_URL", &["MISTRAL_API_KEY"])
    },
    openai_like(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "GEMINI_BASE_URL",
        &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
    ),
    openai_like("ollama", "http://127.0.0.1:11434/v1", "OLLAMA_HOST", &[]),
];

const fn openai_like(
    name: &'static str,
    base_url: &'static str,
    base_url_env: &'static str,
    key_env: &'static [&'static str],
) -> BuiltinProvider {
    BuiltinProvider {
        name,
        format: WireFormat::OpenAi,
        base_url,
        base_url_env,
        key_env,
        include_usage: true,
        headers: &[],
    }
}

/// The built-in provider called `name`.
pub fn builtin(name: &str) -> Option<&'static BuiltinProvider> {
    BUILTIN_PROVIDERS.iter().find(|p| p.name == name)
}

/// The process environment, for [`providers_from_env`] and [`ProviderSpec::build`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A provider described as data: a built-in one ([`ProviderSpec::builtin`]) or one from
/// configuration (`[providers.NAME]` with kind, base URL, key variable, headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    pub format: WireFormat,
    pub base_url: String,
    /// The variable that overrides `base_url`, if any.
    pub base_url_env: Option<String>,
    /// Variables the key is read from, the first set one winning.
    pub key_env: Vec<String>,
    /// Without a key, the provider is not registered (true when `key_env` is not empty).
    pub key_required: bool,
    pub include_usage: bool,
    pub stream: bool,
    /// Header names and values; values are never printed by the adapters.
    pub headers: Vec<(String, String)>,
    /// Whose prices apply, when not `name`'s.
    pub price_provider: Option<String>,
}

impl ProviderSpec {
    pub fn builtin(name: &str) -> Option<ProviderSpec> {
        builtin(name).map(ProviderSpec::from)
    }

    /// The base URL: the override variable's value if set and not empty, else the default.
    pub fn resolved_base_url(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        let overridden = self.base_url_env.as_deref().and_then(|var| non_empty(env(var)).map(|v| (var, v)));
        match overridden {
            Some(("OLLAMA_HOST", value)) => ollama_base_url(&value),
            Some((_, value)) => value,
            None => self.base_url.clone(),
        }
    }

    /// The key, and the variable it came from.
    pub fn key(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<(ApiKey, &str)> {
        self.key_env.iter().find_map(|var| non_empty(env(var)).map(|k| (ApiKey::new(k), var.as_str())))
    }

    /// The adapter, or `None` when its key is required and not set.
    pub fn build(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        prices: Option<Arc<PriceTable>>,
    ) -> Result<Option<Arc<dyn LlmProvider>>, ConfigError> {
        let key = self.key(env);
        if key.is_none() && self.key_required {
            return Ok(None);
        }
        let base_url = self.resolved_base_url(env);
        let key_env = key.as_ref().map(|(_, var)| var.to_string()).or_else(|| self.key_env.first().cloned());
        let key = key.map(|(k, _)| k);
        let mut endpoint = Endpoint::new(&self.name, base_url).stream(self.stream);
        endpoint.api_key = key;
        endpoint.api_key_env = key_env;
        endpoint.base_url_env = self.base_url_env.clone();
        endpoint.headers = self.headers.clone();
        endpoint.prices = prices;
        endpoint.price_provider = self.price_provider.clone();
        Ok(Some(match self.format {
            WireFormat::OpenAi => {
                Arc::new(OpenAiProvider::new(OpenAiConfig::new(endpoint).include_usage(self.include_usage))?)
            }
            WireFormat::Anthropic => Arc::new(AnthropicProvider::new(endpoint)?),
        }))
    }
}

impl From<&BuiltinProvider> for ProviderSpec {
    fn from(p: &BuiltinProvider) -> Self {
        ProviderSpec {
            name: p.name.to_string(),
            format: p.format,
            base_url: p.base_url.to_string(),
            base_url_env: Some(p.base_url_env.to_string()),
            key_env: p.key_env.iter().map(|s| s.to_string()).collect(),
            key_required: !p.key_env.is_empty(),
            include_usage: p.include_usage,
            stream: true,
            headers: p.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            price_provider: None,
        }
    }
}

/// The providers a run can use in environment `env`: every built-in HTTP provider whose
/// key is set, Ollama, and the simulated provider configured by `sim`.
///
/// An invalid base URL (say `OPENAI_BASE_URL=localhost:8080` without a scheme) is an
/// error naming the variable, rather than a provider silently missing.
pub fn providers_from_env(
    sim: SimConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Providers, ConfigError> {
    let mut providers = Providers::new();
    providers.insert(Arc::new(SimulatedProvider::new(sim)));
    let prices = PriceTable::builtin_arc();
    for builtin in BUILTIN_PROVIDERS {
        if let Some(provider) = ProviderSpec::from(builtin).build(&env, Some(prices.clone()))? {
            providers.insert(provider);
        }
    }
    Ok(providers)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `OLLAMA_HOST` as an OpenAI-compatible base URL, read as Ollama reads it: no scheme
/// means `http` and port 11434; an explicit scheme keeps its default port; `0.0.0.0` (a
/// server's bind address) means this machine; `/v1` is appended unless present.
pub fn ollama_base_url(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    let (scheme, rest, default_port) = match host.split_once("://") {
        Some((scheme, rest)) => (scheme, rest, None),
        None => ("http", host, Some(11434)),
    };
    let (hostport, path) = match rest.split_once('/') {
        Some((hostport, path)) => (hostport, format!("/{}", path.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let hostport = match hostport {
        "" => "127.0.0.1".to_string(),
        h if h == "0.0.0.0" || h.starts_with("0.0.0.0:") => h.replacen("0.0.0.0", "127.0.0.1", 1),
        h => h.to_string(),
    };
    let has_port = hostport.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    let port = match default_port {
        Some(port) if !has_port => format!(":{port}"),
        _ => String::new(),
    };
    let path = if path.ends_with("/v1") { path } else { format!("{path}/v1") };
    format!("{scheme}://{hostport}{port}{path}")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn only_providers_with_a_key_are_registered_plus_ollama_and_simulated() {
        let providers = providers_from_env(SimConfig::default(), env(&[])).unwrap();
        assert_eq!(providers.names(), vec!["ollama", "simulated"]);

        let providers = providers_from_env(
            SimConfig::default(),
            env(&[
                ("OPENAI_API_KEY", "sk-1"),
                ("ANTHROPIC_API_KEY", "sk-ant-1"),
                ("GOOGLE_API_KEY", "g-1"),
                ("GROQ_API_KEY", "  "),
                ("XAI_API_KEY", ""),
            ]),
        )
        .unwrap();
        assert_eq!(providers.names(), vec!["anthropic", "gemini", "ollama", "openai", "simulated"]);
        let (openai, model) = providers.resolve("openai/gpt-4o-mini").unwrap();
        assert_eq!((openai.name(), model), ("openai", "gpt-4o-mini"));
        assert!(!openai.is_simulated());
        assert_eq!(openai.price(model), PriceTable::builtin().price("openai", "gpt-4o-mini"));
        let (groq, model) = providers.resolve("ollama/llama3.2:3b").unwrap();
        assert_eq!(groq.price(model).map(|p| p.input_per_mtok), Some(0.0));
        assert!(providers.resolve("groq/llama-3.1-8b-instant").is_err(), "blank key is unset");
    }

    #[test]
    fn every_builtin_has_a_valid_default_and_its_documented_variables() {
        let names: Vec<&str> = BUILTIN_PROVIDERS.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["openai", "anthropic", "xai", "groq", "openrouter", "deepseek", "mistral", "gemini", "ollama"]
        );
        let all_keys: Vec<&str> = BUILTIN_PROVIDERS.iter().flat_map(|p| p.key_env.iter().copied()).collect();
        for key in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "XAI_API_KEY",
            "GROQ_API_KEY",
            "OPENROUTER_API_KEY",
            "DEEPSEEK_API_KEY",
            "MISTRAL_API_KEY",
            "GEMINI_API_KEY",
        ] {
            assert!(all_keys.contains(&key), "{key}");
        }
        let everything: Vec<(String, String)> = BUILTIN_PROVIDERS
            .iter()
            .flat_map(|p| p.key_env.iter().map(|k| (k.to_string(), "k-123456".to_string())))
            .collect();
        let pairs: Vec<(&str, &str)> = everything.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let providers = providers_from_env(SimConfig::default(), env(&pairs)).unwrap();
        assert_eq!(providers.names().len(), BUILTIN_PROVIDERS.len() + 1);
    }

    #[test]
    fn base_urls_are_overridden_by_their_variables() {
        let e = env(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1/"),
            ("ANTHROPIC_BASE_URL", "https://proxy.example.com/anthropic"),
            ("OLLAMA_HOST", "0.0.0.0"),
        ]);
        let url = |name: &str| ProviderSpec::builtin(name).unwrap().resolved_base_url(&e);
        assert_eq!(url("openai"), "http://127.0.0.1:8000/v1/");
        assert_eq!(url("anthropic"), "https://proxy.example.com/anthropic");
        assert_eq!(url("ollama"), "http://127.0.0.1:11434/v1");
        assert_eq!(url("groq"), "https://api.groq.com/openai/v1");

        let openai = ProviderSpec::builtin("openai").unwrap().build(&env(&[("OPENAI_API_KEY", "k")]), None);
        assert!(openai.unwrap().is_some());
        let built = OpenAiProvider::new(Endpoint::new("openai", url("openai"))).unwrap();
        assert_eq!(built.endpoint(), "http://127.0.0.1:8000/v1/chat/completions");
        let anthropic = AnthropicProvider::new(Endpoint::new("anthropic", url("anthropic"))).unwrap();
        assert_eq!(anthropic.endpoint(), "https://proxy.example.com/anthropic/v1/messages");
        let v1 = AnthropicProvider::new(Endpoint::new("anthropic", "http://localhost:9/v1/")).unwrap();
        assert_eq!(v1.endpoint(), "http://localhost:9/v1/messages");
    }

    #[test]
    fn ollama_host_is_read_as_ollama_reads_it() {
        for (host, url) in [
            ("127.0.0.1", "http://127.0.0.1:11434/v1"),
            ("127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
            ("gpu-box", "http://gpu-box:11434/v1"),
            ("0.0.0.0:11434", "http://127.0.0.1:11434/v1"),
            ("http://gpu-box:11434", "http://gpu-box:11434/v1"),
            ("https://ollama.example.com", "https://ollama.example.com/v1"),
            ("https://example.com/ollama/", "https://example.com/ollama/v1"),
            ("http://localhost:11434/v1", "http://localhost:11434/v1"),
            ("[::1]:11434", "http://[::1]:11434/v1"),
            ("[::1]", "http://[::1]:11434/v1"),
        ] {
            assert_eq!(ollama_base_url(host), url, "{host}");
        }
    }

    #[test]
    fn an_invalid_base_url_is_an_error_naming_its_variable() {
        let err = providers_from_env(
            SimConfig::default(),
            env(&[("OPENAI_API_KEY", "k"), ("OPENAI_BASE_URL", "localhost:8080")]),
        )
        .unwrap_err();
        assert!(matches!(&err, ConfigError::BaseUrl { provider, .. } if provider == "openai"));
        assert!(err.to_string().contains("OPENAI_BASE_URL"), "{err}");
    }

    #[test]
    fn a_configured_provider_spec_builds_either_format() {
        let spec = ProviderSpec {
            name: "lab".into(),
            format: WireFormat::OpenAi,
            base_url: "http://10.0.0.5:8000/v1".into(),
            base_url_env: None,
            key_env: vec!["LAB_KEY".into()],
            key_required: false,
            include_usage: true,
            stream: false,
            headers: vec![("X-Team".into(), "research".into())],
            price_provider: Some("openai".into()),
        };
        let lab = spec.build(&env(&[]), None).unwrap().expect("key not required");
        assert_eq!(lab.name(), "lab");
        assert_eq!(lab.price("gpt-4o"), PriceTable::builtin().price("openai", "gpt-4o"));
        let claude =
            ProviderSpec { name: "claude".into(), format: WireFormat::Anthropic, key_required: true, ..spec };
        assert!(claude.build(&env(&[]), None).unwrap().is_none(), "key required and missing");
        assert!(claude.build(&env(&[("LAB_KEY", "k")]), None).unwrap().is_some());
        let kind: WireFormat = serde_json::from_str("\"openai-compatible\"").unwrap();
        assert_eq!(kind, WireFormat::OpenAi);
    }
}

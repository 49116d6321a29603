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
//! | `llamacpp` | OpenAI | `http://127.0.0.1:8080/v1` | `LLAMACPP_BASE_URL` | `LLAMA_API_KEY` if set (llama-server's own `--api-key` variable) |
//! | `vllm` | OpenAI | `http://127.0.0.1:8000/v1` | `VLLM_BASE_URL` | `VLLM_API_KEY` if set (vLLM's own `--api-key` variable) |
//! | `lmstudio` | OpenAI | `http://127.0.0.1:1234/v1` | `LMSTUDIO_BASE_URL` | none |
//!
//! The last four are **local** ([`BuiltinProvider::local`]): servers on the user's own
//! machine or network. They need no key, are always registered (and contacted only when a
//! model names them), cost nothing unless `belt.toml` prices them, and their context
//! windows and slots are asked of the server itself (see
//! [`OpenAiProvider`](crate::openai::OpenAiProvider)'s discovery).
//!
//! Prices follow where a provider really is: any provider whose base URL is on a loopback
//! or private address (see [`is_local_url`]) is free unless priced in configuration, and a
//! built-in provider whose base URL was pointed at another host (say
//! `OPENAI_BASE_URL=http://10.0.0.5:8000/v1`, a vLLM server) does not get the shipped
//! prices of the provider it replaces: free when that host is local or private, unknown
//! otherwise (a gateway's prices are its own), unless configured.
//!
//! `OLLAMA_HOST` is read as Ollama itself reads it (`host`, `host:port`, or a URL; port
//! 11434 when no scheme is given; `/v1` appended). Mistral rejects the
//! `stream_options` field (HTTP 422) and reports usage without it, so it is not sent there.
//!
//! [`providers_from_env`] takes the environment as a function, so that it can be tested
//! (and driven by a configuration file) without touching the process environment; pass
//! [`process_env`] for the real one. It registers the providers whose key is set (an
//! empty value counts as unset), the local ones (which need no key, and are only contacted
//! when a model names them), and the simulated provider. [`ProviderSpec`] is the same
//! description as data, for providers defined in configuration.

use std::sync::Arc;

use belt_core::llm::{LlmProvider, Providers};

use crate::anthropic::AnthropicProvider;
use crate::endpoint::{Endpoint, PriceSource};
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
    /// Without a key the provider is not registered.
    pub key_required: bool,
    /// A server on the user's own machine or network (llama.cpp, Ollama, vLLM, LM
    /// Studio): free, always registered, its limits discovered from the server.
    pub local: bool,
}

impl BuiltinProvider {
    /// True for a server on the user's own machine or network.
    pub fn is_local(&self) -> bool {
        self.local
    }
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
        key_required: true,
        local: false,
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
    local_server("ollama", "http://127.0.0.1:11434/v1", "OLLAMA_HOST", &[]),
    local_server("llamacpp", "http://127.0.0.1:8080/v1", "LLAMACPP_BASE_URL", &["LLAMA_API_KEY"]),
    local_server("vllm", "http://127.0.0.1:8000/v1", "VLLM_BASE_URL", &["VLLM_API_KEY"]),
    local_server("lmstudio", "http://127.0.0.1:1234/v1", "LMSTUDIO_BASE_URL", &[]),
];

/// A local OpenAI-compatible server: no key needed (one is sent if its variable is set).
const fn local_server(
    name: &'static str,
    base_url: &'static str,
    base_url_env: &'static str,
    key_env: &'static [&'static str],
) -> BuiltinProvider {
    BuiltinProvider { key_required: false, local: true, ..openai_like(name, base_url, base_url_env, key_env) }
}

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
        key_required: !key_env.is_empty(),
        local: false,
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
    /// A local server (see [`BuiltinProvider::local`]): free unless configured.
    pub local: bool,
    /// Bill at the table's prices wherever the base URL points (a proxy in front of the
    /// real API on a local or private address; `shipped_prices = true` in belt.toml).
    pub shipped_prices: bool,
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
        endpoint.price_source = self.price_source(&endpoint.base_url);
        Ok(Some(match self.format {
            WireFormat::OpenAi => {
                Arc::new(OpenAiProvider::new(OpenAiConfig::new(endpoint).include_usage(self.include_usage))?)
            }
            WireFormat::Anthropic => Arc::new(AnthropicProvider::new(endpoint)?),
        }))
    }
}

impl ProviderSpec {
    /// Which prices apply at `base_url`: local servers are free; a built-in provider moved
    /// to another host loses its shipped prices (free there if that host is local or
    /// private, else unknown); otherwise the table's (made free by the endpoint itself when
    /// its URL is local). Configured prices win in every case.
    fn price_source(&self, base_url: &str) -> PriceSource {
        if self.shipped_prices {
            return PriceSource::Listed;
        }
        if self.local {
            return PriceSource::Free;
        }
        let host = |url: &str| {
            reqwest::Url::parse(url.trim()).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        };
        let moved = builtin(&self.name).is_some_and(|b| host(b.base_url) != host(base_url));
        match moved {
            true if is_local_url(base_url) => PriceSource::Free,
            true => PriceSource::ConfiguredOnly,
            false => PriceSource::Table,
        }
    }
}

/// True when `url`'s host is this machine or a private network: `localhost`, a loopback,
/// private (10/8, 172.16/12, 192.168/16), shared (100.64/10, where Tailscale puts its
/// machines), link-local or unspecified IPv4 address, or an IPv6 loopback, unique-local
/// (fc00::/7) or link-local (fe80::/10) one. Host names other than `localhost` are not
/// resolved, so `http://gpu-box:8000` is not known to be local.
pub fn is_local_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else { return false };
    let Some(host) = parsed.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            let [a, b, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
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
            key_required: p.key_required,
            include_usage: p.include_usage,
            stream: true,
            headers: p.headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            price_provider: None,
            local: p.local,
            shipped_prices: false,
        }
    }
}

/// The providers a run can use in environment `env`: every built-in HTTP provider whose
/// key is set, the local ones, and the simulated provider configured by `sim`.
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
    use crate::pricing::ModelPrice;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn only_providers_with_a_key_are_registered_plus_the_local_ones_and_simulated() {
        let providers = providers_from_env(SimConfig::default(), env(&[])).unwrap();
        assert_eq!(providers.names(), vec!["llamacpp", "lmstudio", "ollama", "simulated", "vllm"]);

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
        assert_eq!(
            providers.names(),
            vec!["anthropic", "gemini", "llamacpp", "lmstudio", "ollama", "openai", "simulated", "vllm"]
        );
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
            [
                "openai",
                "anthropic",
                "xai",
                "groq",
                "openrouter",
                "deepseek",
                "mistral",
                "gemini",
                "ollama",
                "llamacpp",
                "vllm",
                "lmstudio"
            ]
        );
        let local: Vec<&str> = BUILTIN_PROVIDERS.iter().filter(|p| p.is_local()).map(|p| p.name).collect();
        assert_eq!(local, ["ollama", "llamacpp", "vllm", "lmstudio"]);
        assert!(BUILTIN_PROVIDERS.iter().all(|p| p.key_required != p.local));
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
    fn local_and_private_addresses_are_told_from_public_ones() {
        for url in [
            "http://127.0.0.1:8080/v1",
            "http://localhost:11434",
            "http://10.0.0.5:8000/v1",
            "http://172.20.1.2/v1",
            "http://192.168.1.20:1234/v1",
            "http://100.101.102.103:8000/v1",
            "http://[::1]:8000/v1",
            "http://[fd12:3456::1]/v1",
            "http://0.0.0.0:8080",
        ] {
            assert!(is_local_url(url), "{url}");
        }
        for url in [
            "https://api.openai.com/v1",
            "http://8.8.8.8/v1",
            "http://gpu-box:8000/v1",
            "http://172.32.0.1",
            "nonsense",
        ] {
            assert!(!is_local_url(url), "{url}");
        }
    }

    #[test]
    fn prices_follow_where_the_server_really_is() {
        let price = |vars: &[(&str, &str)], model: &str| {
            let providers = providers_from_env(SimConfig::default(), env(vars)).unwrap();
            let (provider, name) = providers.resolve(model).unwrap();
            provider.price(name)
        };
        let free = Some(ModelPrice::FREE.price());
        for model in
            ["llamacpp/smollm2", "vllm/Qwen/Qwen2.5-7B-Instruct", "lmstudio/qwen3-8b", "ollama/llama3.2"]
        {
            assert_eq!(price(&[], model), free, "{model}");
        }
        // A remote vLLM named by its own provider is still the user's server: free.
        assert_eq!(price(&[("VLLM_BASE_URL", "https://gpu.example.com/v1")], "vllm/m"), free);
        let key = ("OPENAI_API_KEY", "sk-1");
        let openai = PriceTable::builtin().price("openai", "gpt-4.1-mini");
        assert!(openai.is_some());
        assert_eq!(price(&[key], "openai/gpt-4.1-mini"), openai);
        // OPENAI_BASE_URL at a local server: its tokens are not charged at OpenAI's prices…
        assert_eq!(
            price(&[key, ("OPENAI_BASE_URL", "http://10.0.0.5:8000/v1")], "openai/gpt-4.1-mini"),
            free
        );
        assert_eq!(
            price(&[key, ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")], "openai/gpt-4.1-mini"),
            free
        );
        // …and at another host, a gateway, its prices are unknown (not OpenAI's).
        assert_eq!(
            price(&[key, ("OPENAI_BASE_URL", "https://gateway.example.com/v1")], "openai/gpt-4.1-mini"),
            None
        );
        // The same host with another path keeps them.
        assert_eq!(
            price(&[key, ("OPENAI_BASE_URL", "https://api.openai.com/v1/")], "openai/gpt-4.1-mini"),
            openai
        );
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
            local: false,
            shipped_prices: false,
        };
        let lab = spec.build(&env(&[]), None).unwrap().expect("key not required");
        assert_eq!(lab.name(), "lab");
        assert_eq!(
            lab.price("gpt-4o"),
            Some(ModelPrice::FREE.price()),
            "a server on a private address is free"
        );
        let mirror = ProviderSpec { base_url: "https://mirror.example.com/v1".into(), ..spec.clone() };
        let mirror = mirror.build(&env(&[]), None).unwrap().expect("key not required");
        assert_eq!(mirror.price("gpt-4o"), PriceTable::builtin().price("openai", "gpt-4o"));
        let claude =
            ProviderSpec { name: "claude".into(), format: WireFormat::Anthropic, key_required: true, ..spec };
        assert!(claude.build(&env(&[]), None).unwrap().is_none(), "key required and missing");
        assert!(claude.build(&env(&[("LAB_KEY", "k")]), None).unwrap().is_some());
        let kind: WireFormat = serde_json::from_str("\"openai-compatible\"").unwrap();
        assert_eq!(kind, WireFormat::OpenAi);
    }
}

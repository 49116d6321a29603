//! `belt.toml`: providers, their limits, price overrides, and a default model.
//!
//! ```toml
//! default_model = "openai/gpt-4.1-mini"
//!
//! [providers.openai]              # a built-in provider: limits and extra headers
//! max_concurrency = 8
//! rpm = 500
//! tpm = 200000
//!
//! [providers.anthropic]
//! base_url = "http://10.0.0.7:4000"  # a gateway in front of the real API:
//! shipped_prices = true              # bill at Anthropic's prices (a local or moved base
//!                                    # URL is otherwise free, or unpriced)
//!
//! [providers.local]               # a provider of its own
//! kind = "openai"                 # the wire format: openai or anthropic
//! base_url = "http://127.0.0.1:8000/v1"
//! api_key_env = "LOCAL_KEY"       # optional
//! headers = { "X-Team" = "research" }
//!
//! [prices."local/my-model"]       # USD per million tokens
//! input = 0.10
//! output = 0.20
//!
//! [providers.llamacpp]            # a local server: how long to wait out its restarts
//! breaker_cooldown = 5            # seconds an open breaker waits before one trial call
//! breaker_max_wait = 600          # the longest a step waits for it to answer again
//!
//! [models."llamacpp/qwen3-4b"]    # what a model can do and hold, and its price
//! context_window = 4096           # tokens per request (a slot's share on llama.cpp)
//! max_output_tokens = 1024
//! json_schema = true              # structured output (response_format json_schema)
//! tools = true
//! vision = false
//! input = 0.0                     # USD per million tokens; both or neither
//! output = 0.0
//! ```
//!
//! A model's `[models]` entry wins over the shipped table and over what a local server
//! reports of itself (llama.cpp's `/props`, Ollama's `/api/show`, vLLM's `/v1/models`).
//! A provider with no `max_concurrency` whose server says how many calls it runs at once
//! (llama.cpp's slots) takes that as its concurrency, on its first call: calls past it
//! would only queue inside the server, where their timeouts run.
//!
//! Found at `--config FILE`, `$BELT_CONFIG`, `./belt.toml`, or `$BELT_HOME/belt.toml`, the
//! first that exists. Unknown keys are errors, not ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use belt_core::limits::Limits;
use belt_core::llm::Providers;
use belt_llm::providers::{BUILTIN_PROVIDERS, ProviderSpec, WireFormat};
use belt_llm::{ModelPrice, PriceTable, SimConfig, SimulatedProvider};
use serde::Deserialize;

use crate::error::AppError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Used when neither --model nor BELT_MODEL names one.
    pub default_model: Option<String>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    /// `[models."provider/name"]`: capabilities and prices of one model.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Named budgets that runs draw from (`--budget-pool NAME`), kept in a shared store.
    #[serde(default)]
    pub budget_pools: BTreeMap<String, PoolConfig>,
    /// `[tools]`: result size, tool rounds, what `fetch_url` may read, the search backend.
    #[serde(default)]
    pub tools: crate::tools::ToolsConfig,
    /// `[mcp.NAME]`: MCP servers whose tools runs may name (`--tools NAME`).
    #[serde(default)]
    pub mcp: BTreeMap<String, belt_tools::mcp::McpServerSpec>,
}

/// `[budget_pools.NAME]`: caps per UTC day and month; one left out is unlimited.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub usd_per_day: Option<f64>,
    pub usd_per_month: Option<f64>,
    pub tokens_per_day: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub calls_per_day: Option<u64>,
    pub calls_per_month: Option<u64>,
}

impl PoolConfig {
    /// The caps as the engine keeps them.
    pub fn caps(&self) -> belt_core::shared::PoolCaps {
        belt_core::shared::PoolCaps {
            per_day: belt_core::Budget {
                max_cost_usd: self.usd_per_day,
                max_tokens: self.tokens_per_day,
                max_calls: self.calls_per_day,
            },
            per_month: belt_core::Budget {
                max_cost_usd: self.usd_per_month,
                max_tokens: self.tokens_per_month,
                max_calls: self.calls_per_month,
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `openai` or `anthropic`; needed for a provider that is not built in.
    pub kind: Option<String>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub max_concurrency: Option<usize>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub stream: Option<bool>,
    /// Bill at the shipped table's prices even though `base_url` is local or not the
    /// provider's own host: a proxy in front of the real API (a LiteLLM or company gateway).
    #[serde(default)]
    pub shipped_prices: bool,
    /// Seconds an open breaker waits before one trial call (default 30).
    pub breaker_cooldown: Option<f64>,
    /// Seconds a step waits for a model whose breaker is open to answer again (default 300).
    pub breaker_max_wait: Option<f64>,
}

/// `[models."provider/name"]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub json_schema: Option<bool>,
    pub tools: Option<bool>,
    pub vision: Option<bool>,
    /// USD per million input tokens (with `output`).
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub cache_read: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
}

/// The largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The configuration in force, and where it came from (`None`: no file): `explicit`
/// (`--config`, `$BELT_CONFIG`) if given, else `./belt.toml`, else `home/belt.toml`.
pub fn load(explicit: Option<&Path>, home: &Path) -> Result<(Config, Option<PathBuf>), AppError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => vec![PathBuf::from("belt.toml"), home.join("belt.toml")],
    };
    for path in candidates {
        if !path.exists() {
            if explicit.is_some() {
                return Err(AppError::Config(format!(
                    "the configuration file {} does not exist",
                    path.display()
                )));
            }
            continue;
        }
        let text = crate::files::read_text(&path, MAX_CONFIG_BYTES)
            .map_err(|e| AppError::Config(format!("the configuration: {e}")))?;
        // toml's message names the line and column, and the key.
        let config: Config = toml::from_str(&text).map_err(|e| {
            AppError::Config(format!("the configuration {} is not valid: {e}", path.display()))
        })?;
        return Ok((config, Some(path)));
    }
    Ok((Config::default(), None))
}

/// The providers a run can use: the simulated one, every built-in whose key is set, and
/// the configured ones, each with its limits; prices from the built-in table and the
/// configuration's overrides.
pub fn providers(
    config: &Config,
    sim: SimConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Providers, AppError> {
    let mut out = http_providers(config, env)?;
    with_simulated(config, &mut out, sim)?;
    Ok(out)
}

/// Add the simulated provider (as a run sets it) to `providers`, with its belt.toml limits.
pub fn with_simulated(config: &Config, providers: &mut Providers, sim: SimConfig) -> Result<(), AppError> {
    let limits = match config.providers.get("simulated") {
        Some(c) => limits_of("simulated", c).map_err(|e| AppError::Config(format!("belt.toml: {e}")))?,
        None => Limits::default(),
    };
    providers.insert_with_limits(Arc::new(SimulatedProvider::new(sim)), limits);
    Ok(())
}

/// The HTTP providers: every built-in whose key is set (and the local ones), and those of
/// belt.toml. They depend on nothing a run sets, so a process builds them once (building
/// an HTTP client costs milliseconds; a provider also remembers what its server told it).
pub fn http_providers(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Providers, AppError> {
    let bad = |e: String| AppError::Config(format!("belt.toml: {e}"));
    let prices = Arc::new(price_table(config).map_err(bad)?);
    let mut limits = BTreeMap::new();
    for (name, c) in &config.providers {
        limits.insert(name.as_str(), limits_of(name, c).map_err(bad)?);
    }
    let limits_of = |name: &str| limits.get(name).copied().unwrap_or_default();
    let mut out = Providers::new();
    let build = |spec: &ProviderSpec| spec.build(env, Some(prices.clone())).map_err(|e| bad(e.to_string()));
    for builtin in BUILTIN_PROVIDERS {
        let c = config.providers.get(builtin.name);
        let mut spec = ProviderSpec::from(builtin);
        if let Some(c) = c {
            spec.headers.extend(c.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            if let Some(url) = &c.base_url {
                spec.base_url = url.clone();
            }
            if let Some(var) = &c.api_key_env {
                spec.key_env.insert(0, var.clone());
            }
            if let Some(stream) = c.stream {
                spec.stream = stream;
            }
            spec.shipped_prices = c.shipped_prices;
        }
        if let Some(provider) = build(&spec)? {
            out.insert_with_limits(provider, limits_of(builtin.name));
        }
    }
    for (name, c) in &config.providers {
        if BUILTIN_PROVIDERS.iter().any(|b| b.name == name) {
            continue;
        }
        if name == "simulated" {
            // Limits only: the simulated provider is built in and has no server.
            if c.kind.is_some() || c.base_url.is_some() || c.api_key_env.is_some() || !c.headers.is_empty() {
                return Err(bad("providers.simulated takes limits only (max_concurrency, rpm, tpm, \
                                breaker_cooldown, breaker_max_wait)"
                    .into()));
            }
            continue;
        }
        if name.contains('/') || name.is_empty() {
            return Err(bad(format!("`{name}` cannot name a provider")));
        }
        let format = match c.kind.as_deref() {
            Some("openai") => WireFormat::OpenAi,
            Some("anthropic") => WireFormat::Anthropic,
            Some(other) => {
                return Err(bad(format!("providers.{name}.kind `{other}`: use openai or anthropic")));
            }
            None => return Err(bad(format!("providers.{name} needs kind = \"openai\" or \"anthropic\""))),
        };
        let base_url = c.base_url.clone().ok_or_else(|| bad(format!("providers.{name} needs a base_url")))?;
        let spec = ProviderSpec {
            name: name.clone(),
            format,
            base_url,
            base_url_env: None,
            key_env: c.api_key_env.iter().cloned().collect(),
            // Registered without its key, so that a call says which variable to set.
            key_required: false,
            include_usage: true,
            stream: c.stream.unwrap_or(true),
            headers: c.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            price_provider: None,
            local: false,
            shipped_prices: c.shipped_prices,
        };
        if let Some(provider) = build(&spec)? {
            out.insert_with_limits(provider, limits_of(name));
        }
    }
    Ok(out)
}

/// The shipped model table with the configuration's `[prices]` and `[models]` over it.
fn price_table(config: &Config) -> Result<PriceTable, String> {
    let mut prices = PriceTable::builtin().clone();
    let split = |what: &str, model: &str| {
        model
            .split_once('/')
            .filter(|(p, m)| !p.is_empty() && !m.is_empty())
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .ok_or_else(|| {
                format!("{what} `{model}` must be named provider/model, e.g. \"llamacpp/qwen3-4b\"")
            })
    };
    let price = |input: f64, output: f64, cache_read: Option<f64>| ModelPrice {
        input,
        output,
        cache_read,
        cache_write: None,
        long: None,
    };
    for (model, p) in &config.prices {
        let (provider, name) = split("price", model)?;
        prices.set_price(&provider, &name, price(p.input, p.output, p.cache_read));
    }
    for (model, m) in &config.models {
        let (provider, name) = split("models", model)?;
        match (m.input, m.output) {
            (Some(input), Some(output)) => {
                prices.set_price(&provider, &name, price(input, output, m.cache_read))
            }
            (None, None) if m.cache_read.is_none() => {}
            _ => {
                return Err(format!(
                    "models.\"{model}\": give both `input` and `output` (USD per million tokens), or neither"
                ));
            }
        }
        if m.context_window == Some(0) {
            return Err(format!("models.\"{model}\".context_window must be at least 1 token"));
        }
        prices.set_capabilities(&provider, &name, |c| {
            c.context_window = m.context_window.or(c.context_window);
            c.max_output_tokens = m.max_output_tokens.or(c.max_output_tokens);
            c.json_schema = m.json_schema.unwrap_or(c.json_schema);
            c.tools = m.tools.unwrap_or(c.tools);
            c.vision = m.vision.unwrap_or(c.vision);
        });
    }
    Ok(prices)
}

/// A provider's `[providers.NAME]` limits, durations checked.
fn limits_of(name: &str, c: &ProviderConfig) -> Result<Limits, String> {
    let secs = |key: &str, v: Option<f64>, default: std::time::Duration| match v {
        None => Ok(default),
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => {
            Ok(std::time::Duration::from_secs_f64(s))
        }
        Some(s) => Err(format!("providers.{name}.{key} = {s}: give seconds from 0 to 86400")),
    };
    let d = Limits::default();
    Ok(Limits {
        max_concurrency: c.max_concurrency,
        rpm: c.rpm,
        tpm: c.tpm,
        breaker_cooldown: secs("breaker_cooldown", c.breaker_cooldown, d.breaker_cooldown)?,
        breaker_max_wait: secs("breaker_max_wait", c.breaker_max_wait, d.breaker_max_wait)?,
        ..d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn models_set_capabilities_and_prices_and_providers_their_breakers() {
        let config = parse(
            r#"
            [providers.llamacpp]
            breaker_cooldown = 2.5
            breaker_max_wait = 600
            [providers.simulated]
            max_concurrency = 2
            [models."llamacpp/qwen3-4b"]
            context_window = 4096
            json_schema = true
            input = 0.5
            output = 1.5
            "#,
        )
        .unwrap();
        let p = providers(&config, SimConfig::default(), &|_: &str| None).unwrap();
        let l = p.limiter("llamacpp").unwrap().limits();
        assert_eq!(l.breaker_cooldown, std::time::Duration::from_millis(2500));
        assert_eq!(l.breaker_max_wait, std::time::Duration::from_secs(600));
        assert_eq!(p.limiter("simulated").unwrap().limits().max_concurrency, Some(2));
        let table = price_table(&config).unwrap();
        let caps = table.capabilities("llamacpp", "qwen3-4b").unwrap();
        assert_eq!((caps.context_window, caps.json_schema), (Some(4096), true));
        let (llama, model) = p.resolve("llamacpp/qwen3-4b").unwrap();
        assert_eq!(llama.price(model).unwrap().output_per_mtok, 1.5);

        for (text, says) in [
            ("[models.\"x\"]\ncontext_window = 9", "must be named provider/model"),
            ("[models.\"a/b\"]\ninput = 1.0", "both `input` and `output`"),
            ("[models.\"a/b\"]\ncontext_window = 0", "at least 1 token"),
            ("[providers.openai]\nbreaker_max_wait = -1", "seconds from 0 to 86400"),
            ("[providers.simulated]\nbase_url = \"http://x\"", "limits only"),
        ] {
            let err = providers(&parse(text).unwrap(), SimConfig::default(), &|_: &str| None).unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        assert!(parse("[models.\"a/b\"]\ncontext = 1").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn providers_limits_and_prices_are_read() {
        let config = parse(
            r#"
            default_model = "local/m"
            [providers.openai]
            max_concurrency = 3
            [providers.local]
            kind = "openai"
            base_url = "http://127.0.0.1:9/v1"
            rpm = 60
            [prices."local/m"]
            input = 1.0
            output = 2.0
            "#,
        )
        .unwrap();
        let env = |v: &str| (v == "OPENAI_API_KEY").then(|| "sk".to_string());
        let p = providers(&config, SimConfig::default(), &env).unwrap();
        assert_eq!(p.names(), vec!["llamacpp", "lmstudio", "local", "ollama", "openai", "simulated", "vllm"]);
        assert_eq!(p.limiter("openai").unwrap().limits().max_concurrency, Some(3));
        assert_eq!(p.limiter("local").unwrap().limits().rpm, Some(60));
        let (local, model) = p.resolve("local/m").unwrap();
        assert_eq!(local.price(model).unwrap().input_per_mtok, 1.0);
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[providers.x]\nkind = \"openai\"\nbase_url = \"http://h\"\nrpmm = 3\n").unwrap_err();
        assert!(e.contains("rpmm") && e.contains("line 4"), "{e}");
        let none = |_: &str| None;
        let config = parse("[providers.x]\nbase_url = \"http://h\"\n").unwrap();
        let e = providers(&config, SimConfig::default(), &none).err().unwrap().to_string();
        assert!(e.contains("providers.x needs kind"), "{e}");
        let config = parse("[providers.x]\nkind = \"grpc\"\nbase_url = \"http://h\"\n").unwrap();
        assert!(providers(&config, SimConfig::default(), &none).err().unwrap().to_string().contains("grpc"));
    }
}

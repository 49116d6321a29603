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
//! [providers.local]               # a provider of its own
//! kind = "openai"                 # the wire format: openai or anthropic
//! base_url = "http://127.0.0.1:8000/v1"
//! api_key_env = "LOCAL_KEY"       # optional
//! headers = { "X-Team" = "research" }
//!
//! [prices."local/my-model"]       # USD per million tokens
//! input = 0.10
//! output = 0.20
//! ```
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
    /// Named budgets that runs draw from (`--budget-pool NAME`), kept in a shared store.
    #[serde(default)]
    pub budget_pools: BTreeMap<String, PoolConfig>,
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
    let bad = |e: String| AppError::Config(format!("belt.toml: {e}"));
    let mut prices = PriceTable::builtin().clone();
    for (model, p) in &config.prices {
        let (provider, name) = model
            .split_once('/')
            .ok_or_else(|| bad(format!("price `{model}` must be named provider/model")))?;
        prices.set_price(
            provider,
            name,
            ModelPrice {
                input: p.input,
                output: p.output,
                cache_read: p.cache_read,
                cache_write: None,
                long: None,
            },
        );
    }
    let prices = Arc::new(prices);
    let mut out = Providers::new();
    out.insert(Arc::new(SimulatedProvider::new(sim)));
    let limits_of = |c: Option<&ProviderConfig>| Limits {
        max_concurrency: c.and_then(|c| c.max_concurrency),
        rpm: c.and_then(|c| c.rpm),
        tpm: c.and_then(|c| c.tpm),
        ..Limits::default()
    };
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
        }
        if let Some(provider) = build(&spec)? {
            out.insert_with_limits(provider, limits_of(c));
        }
    }
    for (name, c) in &config.providers {
        if BUILTIN_PROVIDERS.iter().any(|b| b.name == name) {
            continue;
        }
        if name == "simulated" || name.contains('/') || name.is_empty() {
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
        };
        if let Some(provider) = build(&spec)? {
            out.insert_with_limits(provider, limits_of(Some(c)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
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

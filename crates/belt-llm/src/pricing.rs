//! Prices and capabilities of known models, from a data file shipped in the crate.
//!
//! A run's cost is only as true as its price table, so the table is data, not code:
//! `data/models.toml` holds, per provider, the date its figures were taken, and per model
//! the input, output and prompt-cache prices in USD per million tokens, its context
//! window, and what it can do (streaming, tools, JSON schema, JSON object mode,
//! temperature). It is embedded with `include_str!` and parsed once, on first use
//! ([`PriceTable::builtin`]); [`PriceTable::from_toml`] reads the same format from a
//! configuration file, and [`PriceTable::merge`] lays one table over another so that a
//! user's prices win over the shipped ones.
//!
//! # Lookup
//!
//! [`PriceTable::lookup`] takes a provider and a model as the user wrote them, and
//! tolerates what providers add to a model's name: dated snapshots
//! (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`, `grok-4-0709`, `mistral-large-2411`),
//! channels (`-latest`, `-preview`, `-exp`, `-preview-09-2025`) and letter case. An exact
//! entry or alias always wins over a stripped name, so a snapshot with its own price
//! (`gpt-4o-2024-05-13`) keeps it. Stripping never goes below a date or channel suffix:
//! `claude-opus-4-5` is never read as `claude-opus-4`.
//!
//! An unknown model has no price: [`PriceTable::price`] returns `None`, never a silent
//! zero, so that the engine can report the cost as unknown (and refuse a USD budget it
//! cannot keep). Two kinds of models are known to cost nothing and say so: every model of
//! a provider marked `free` (Ollama, on the user's own machine), and OpenRouter's `:free`
//! variants. Other OpenRouter models (`openrouter/VENDOR/MODEL`) are priced as VENDOR's
//! MODEL, since OpenRouter passes list prices through.
//!
//! # Cost
//!
//! The engine prices a call with [`Price`]: uncached input, prompt-cache reads, cache
//! writes and output, each at its rate ([`ModelPrice::price`] carries the cache rates of
//! the table). [`ModelPrice::cost`] is the same figure for a call's [`Usage`], and also
//! applies a long-prompt tier (Gemini Pro bills prompts above 200k tokens higher), which
//! the engine's figure does not: that case is why the adapters also return the exact
//! cost in their [`Completion`](crate::http::Completion).
//!
//! Token conventions: `input_tokens` counts every input token, cached or not. OpenAI's
//! `prompt_tokens` already does (its `cached_tokens` are a subset); Anthropic reports
//! `input_tokens` apart from `cache_read_input_tokens` and `cache_creation_input_tokens`,
//! so its adapter adds the three.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use belt_core::llm::{Price, Usage};
use serde::{Deserialize, Serialize};

/// The shipped data file.
pub const MODELS_TOML: &str = include_str!("../data/models.toml");

/// A model's prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    /// Price of input tokens read from the prompt cache; `None`: billed as `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// Price of input tokens written to the prompt cache; `None`: billed as `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// A higher tier for long prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long: Option<LongPromptPrice>,
}

/// Prices that apply to a whole call when its input exceeds `above` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPromptPrice {
    pub above: u64,
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
}

impl ModelPrice {
    /// A model that costs nothing (local models, OpenRouter's `:free` variants).
    pub const FREE: ModelPrice =
        ModelPrice { input: 0.0, output: 0.0, cache_read: None, cache_write: None, long: None };

    /// The base input, output and prompt-cache rates, as the engine's [`Price`] (without
    /// the long-prompt tier).
    pub fn price(&self) -> Price {
        Price::new(self.input, self.output).with_cache(self.cache_read, self.cache_write)
    }

    /// The exact cost in USD of a call with this usage: uncached input, cache reads,
    /// cache writes and output, each at its rate, at the long-prompt tier when the input
    /// exceeds its threshold.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let (input, output, cache_read, cache_write) = match self.long {
            Some(long) if usage.input_tokens > long.above => (
                long.input,
                long.output,
                long.cache_read.or(self.cache_read).unwrap_or(long.input),
                long.cache_write.or(self.cache_write).unwrap_or(long.input),
            ),
            _ => (
                self.input,
                self.output,
                self.cache_read.unwrap_or(self.input),
                self.cache_write.unwrap_or(self.input),
            ),
        };
        (usage.uncached_input_tokens() as f64 * input
            + usage.cache_read_tokens as f64 * cache_read
            + usage.cache_write_tokens as f64 * cache_write
            + usage.output_tokens as f64 * output)
            / 1_000_000.0
    }
}

/// What a model can do: the engine's type, kept in the table per model.
pub use belt_core::llm::Capabilities;

/// One known model: its prices and capabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The provider whose price list this entry comes from.
    pub provider: String,
    /// The model's canonical name in that list.
    pub id: String,
    pub price: ModelPrice,
    pub capabilities: Capabilities,
    /// When the figures were taken (`YYYY-MM-DD`).
    pub taken: String,
}

/// A price table that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PricingError {
    #[error("the model table is not valid TOML in the expected format: {0}")]
    Parse(String),
    #[error("model table, provider `{provider}`, model `{model}`: {reason}")]
    Invalid { provider: String, model: String, reason: String },
}

/// Prices and capabilities by provider and model. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    providers: HashMap<String, ProviderEntry>,
    /// `(provider, lower-case model)` priced by configuration ([`PriceTable::set_price`]):
    /// these win even where shipped prices do not apply (a local server, a moved provider).
    configured: std::collections::HashSet<(String, String)>,
    /// `(provider, lower-case model)` → capabilities set by configuration
    /// (`[models."provider/name"]`): they win over the table and over discovery.
    configured_caps: HashMap<(String, String), Capabilities>,
}

#[derive(Debug, Clone, Default)]
struct ProviderEntry {
    taken: String,
    source: Option<String>,
    free: bool,
    defaults: Capabilities,
    /// In file order, for listings.
    models: Vec<ModelInfo>,
    /// Lower-case id or alias → index in `models`.
    index: HashMap<String, usize>,
}

// The file is part of the crate and a unit test parses it, so it cannot fail in a
// released build; an empty table (every price unknown) would be the safe degradation.
static BUILTIN: LazyLock<PriceTable> =
    LazyLock::new(|| PriceTable::from_toml(MODELS_TOML).unwrap_or_default());

/// What a lookup found.
enum Found<'t> {
    Model(&'t ModelInfo),
    /// A model of a free provider, or an OpenRouter `:free` variant.
    Free {
        provider: &'t str,
        model: String,
        entry: Option<&'t ProviderEntry>,
    },
}

/// OpenRouter vendor prefixes → belt's provider names.
const OPENROUTER_VENDORS: &[(&str, &str)] = &[
    ("openai", "openai"),
    ("anthropic", "anthropic"),
    ("x-ai", "xai"),
    ("google", "gemini"),
    ("mistralai", "mistral"),
    ("deepseek", "deepseek"),
];

impl PriceTable {
    /// The table shipped with belt (`data/models.toml`), parsed once.
    pub fn builtin() -> &'static PriceTable {
        &BUILTIN
    }

    /// The shipped table as a shared value, for adapters that hold a table.
    pub fn builtin_arc() -> Arc<PriceTable> {
        static ARC: LazyLock<Arc<PriceTable>> = LazyLock::new(|| Arc::new(PriceTable::builtin().clone()));
        ARC.clone()
    }

    /// Read a table in the format of `data/models.toml`.
    pub fn from_toml(text: &str) -> Result<PriceTable, PricingError> {
        let file: FileTable = toml::from_str(text).map_err(|e| PricingError::Parse(e.to_string()))?;
        let mut table = PriceTable::default();
        for (name, p) in file.providers {
            let invalid = |model: &str, reason: String| PricingError::Invalid {
                provider: name.clone(),
                model: model.to_string(),
                reason,
            };
            let defaults = p.defaults.over(Capabilities::default());
            let mut entry = ProviderEntry {
                taken: p.taken.clone(),
                source: p.source,
                free: p.free,
                defaults,
                ..ProviderEntry::default()
            };
            for m in p.models {
                let price = ModelPrice {
                    input: m.input,
                    output: m.output,
                    cache_read: m.cache_read,
                    cache_write: m.cache_write,
                    long: m.long,
                };
                check_price(&price).map_err(|reason| invalid(&m.id, reason))?;
                let key = m.id.to_ascii_lowercase();
                if entry.index.contains_key(&key) {
                    return Err(invalid(&m.id, "listed twice".into()));
                }
                let capabilities = m.caps().over(defaults);
                entry.index.insert(key, entry.models.len());
                entry.models.push(ModelInfo {
                    provider: name.clone(),
                    id: m.id,
                    price,
                    capabilities,
                    taken: p.taken.clone(),
                });
            }
            for (alias, target) in p.aliases {
                let Some(&i) = entry.index.get(&target.to_ascii_lowercase()) else {
                    return Err(invalid(&alias, format!("alias of `{target}`, which is not listed")));
                };
                entry.index.entry(alias.to_ascii_lowercase()).or_insert(i);
            }
            table.providers.insert(name, entry);
        }
        Ok(table)
    }

    /// Lay `other` over this table: its providers' models and aliases replace or extend
    /// these (a configuration's prices win over the shipped ones).
    pub fn merge(&mut self, other: PriceTable) {
        for (name, theirs) in other.providers {
            let Some(ours) = self.providers.get_mut(&name) else {
                self.providers.insert(name, theirs);
                continue;
            };
            ours.taken = theirs.taken;
            ours.source = theirs.source.or(ours.source.take());
            ours.free |= theirs.free;
            let mut remap = HashMap::new();
            for (i, model) in theirs.models.into_iter().enumerate() {
                let key = model.id.to_ascii_lowercase();
                let at = match ours.index.get(&key) {
                    Some(&j) => {
                        ours.models[j] = model;
                        j
                    }
                    None => {
                        ours.models.push(model);
                        ours.models.len() - 1
                    }
                };
                ours.index.insert(key, at);
                remap.insert(i, at);
            }
            for (alias, i) in theirs.index {
                if let Some(&at) = remap.get(&i) {
                    ours.index.insert(alias, at);
                }
            }
        }
    }

    /// Set one model's price (a configured override), keeping its capabilities if known.
    pub fn set_price(&mut self, provider: &str, model: &str, price: ModelPrice) {
        self.configured.insert((provider.to_string(), model.to_ascii_lowercase()));
        let entry = self.providers.entry(provider.to_string()).or_default();
        let key = model.to_ascii_lowercase();
        match entry.index.get(&key) {
            Some(&i) => entry.models[i].price = price,
            None => {
                entry.index.insert(key, entry.models.len());
                entry.models.push(ModelInfo {
                    provider: provider.to_string(),
                    id: model.to_string(),
                    price,
                    capabilities: entry.defaults,
                    taken: entry.taken.clone(),
                });
            }
        }
    }

    /// The price configuration set for exactly `provider/model` ([`PriceTable::set_price`]).
    pub fn configured_price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        let key = model.to_ascii_lowercase();
        if !self.configured.contains(&(provider.to_string(), key.clone())) {
            return None;
        }
        let entry = self.providers.get(provider)?;
        entry.index.get(&key).map(|&i| entry.models[i].price)
    }

    /// The engine's price of `provider/model`, or `None` when it is unknown.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        Some(match self.find(provider, model)? {
            Found::Model(info) => info.price.price(),
            Found::Free { .. } => ModelPrice::FREE.price(),
        })
    }

    /// The full prices of `provider/model` (cache rates, long-prompt tier), or `None`
    /// when it is unknown.
    pub fn model_price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        Some(match self.find(provider, model)? {
            Found::Model(info) => info.price,
            Found::Free { .. } => ModelPrice::FREE,
        })
    }

    /// Prices and capabilities of `provider/model`, or `None` when it is unknown.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<ModelInfo> {
        Some(match self.find(provider, model)? {
            Found::Model(info) => info.clone(),
            Found::Free { provider, model, entry } => ModelInfo {
                provider: provider.to_string(),
                id: model,
                price: ModelPrice::FREE,
                capabilities: entry.map_or_else(Capabilities::default, |e| e.defaults),
                taken: entry.map_or_else(String::new, |e| e.taken.clone()),
            },
        })
    }

    /// Capabilities of `provider/model`: the model's if known, else its provider's
    /// defaults, else `None`.
    pub fn capabilities(&self, provider: &str, model: &str) -> Option<Capabilities> {
        if let Some(caps) = self.configured_capabilities(provider, model) {
            return Some(caps);
        }
        match self.find(provider, model) {
            Some(Found::Model(info)) => Some(info.capabilities),
            Some(Found::Free { entry, .. }) => entry.map(|e| e.defaults),
            None => self.providers.get(provider).map(|e| e.defaults),
        }
    }

    /// Set what `provider/model` can do and hold (a configured override): `change` gets
    /// what the table says of it (or its provider's defaults) and edits it.
    pub fn set_capabilities(&mut self, provider: &str, model: &str, change: impl FnOnce(&mut Capabilities)) {
        let mut caps = self.capabilities(provider, model).unwrap_or_default();
        change(&mut caps);
        self.configured_caps.insert((provider.to_string(), model.to_ascii_lowercase()), caps);
    }

    /// The capabilities configuration set for exactly `provider/model`
    /// ([`PriceTable::set_capabilities`]).
    pub fn configured_capabilities(&self, provider: &str, model: &str) -> Option<Capabilities> {
        self.configured_caps.get(&(provider.to_string(), model.to_ascii_lowercase())).copied()
    }

    /// Every listed model, by provider name then in file order (for `belt models`).
    pub fn models(&self) -> impl Iterator<Item = &ModelInfo> {
        let mut names: Vec<&String> = self.providers.keys().collect();
        names.sort();
        names.into_iter().flat_map(move |n| self.providers[n].models.iter())
    }

    /// When `provider`'s figures were taken, and where from.
    pub fn taken(&self, provider: &str) -> Option<(&str, Option<&str>)> {
        self.providers.get(provider).map(|e| (e.taken.as_str(), e.source.as_deref()))
    }

    fn find<'t>(&'t self, provider: &str, model: &str) -> Option<Found<'t>> {
        let entry = self.providers.get(provider);
        if provider == "openrouter" {
            return self.find_openrouter(entry, model);
        }
        let lower = lowercase(model);
        if let Some(entry) = entry {
            if let Some(info) = entry.find(&lower) {
                return Some(Found::Model(info));
            }
            if entry.free {
                return Some(Found::Free {
                    provider: self.providers.get_key_value(provider)?.0,
                    model: model.to_string(),
                    entry: Some(entry),
                });
            }
        }
        None
    }

    fn find_openrouter<'t>(&'t self, entry: Option<&'t ProviderEntry>, model: &str) -> Option<Found<'t>> {
        let lower = lowercase(model);
        let (name, variant) = match lower.split_once(':') {
            Some((name, variant)) => (name, Some(variant)),
            None => (lower.as_ref(), None),
        };
        if variant == Some("free") {
            return Some(Found::Free { provider: "openrouter", model: model.to_string(), entry });
        }
        // A price configured for OpenRouter itself wins.
        if let Some(info) = entry.and_then(|e| e.find(name)) {
            return Some(Found::Model(info));
        }
        let (vendor, vendor_model) = name.split_once('/')?;
        let provider = OPENROUTER_VENDORS.iter().find(|(v, _)| *v == vendor)?.1;
        let vendor_entry = self.providers.get(provider)?;
        if let Some(info) = vendor_entry.find(vendor_model) {
            return Some(Found::Model(info));
        }
        // OpenRouter writes versions with dots where Anthropic uses dashes
        // (`claude-sonnet-4.5` for `claude-sonnet-4-5`).
        vendor_entry.find(&vendor_model.replace('.', "-")).map(Found::Model)
    }
}

impl ProviderEntry {
    /// The entry for a lower-case model name: exact or alias first, then with dated and
    /// channel suffixes stripped one at a time.
    fn find(&self, lower: &str) -> Option<&ModelInfo> {
        let mut name = lower;
        loop {
            if let Some(&i) = self.index.get(name) {
                return Some(&self.models[i]);
            }
            name = strip_suffix(name)?;
        }
    }
}

fn lowercase(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) { s.to_ascii_lowercase().into() } else { s.into() }
}

/// `name` without its last dated or channel suffix, if it has one.
///
/// Suffixes: `-YYYY-MM-DD`, `-MM-YYYY`, `-MM-DD` (two-digit fields only), a run of 4 to 8
/// digits (`-20250929`, `-0709`, `-2411`), and `-latest`, `-preview`, `-exp`, `-beta`.
/// A one- or two-digit segment alone is a version (`claude-opus-4-5`), never stripped.
fn strip_suffix(name: &str) -> Option<&str> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = name.rsplitn(4, '-').collect();
    let cut = |segments: usize| -> Option<&str> {
        let tail: usize = parts[..segments].iter().map(|p| p.len() + 1).sum();
        let rest = &name[..name.len().checked_sub(tail)?];
        (!rest.is_empty()).then_some(rest)
    };
    if parts.len() < 2 {
        return None;
    }
    let last = parts[0];
    if parts.len() >= 4 && digits(parts[2], 4) && digits(parts[1], 2) && digits(last, 2) {
        return cut(3);
    }
    if parts.len() >= 3 && digits(parts[1], 2) && (digits(last, 4) || digits(last, 2)) {
        return cut(2);
    }
    let long_number = (4..=8).contains(&last.len()) && last.bytes().all(|b| b.is_ascii_digit());
    if long_number || matches!(last, "latest" | "preview" | "exp" | "beta") {
        return cut(1);
    }
    None
}

fn check_price(p: &ModelPrice) -> Result<(), String> {
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    let mut all = vec![p.input, p.output];
    all.extend(p.cache_read);
    all.extend(p.cache_write);
    if let Some(l) = p.long {
        all.extend([l.input, l.output]);
        all.extend(l.cache_read);
        all.extend(l.cache_write);
    }
    if all.into_iter().all(ok) { Ok(()) } else { Err("prices must be finite and not negative".into()) }
}

// --- the file's format ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTable {
    providers: HashMap<String, FileProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    taken: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    free: bool,
    #[serde(default)]
    defaults: FileCaps,
    #[serde(default)]
    models: Vec<FileModel>,
    #[serde(default)]
    aliases: HashMap<String, String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct FileCaps {
    streaming: Option<bool>,
    tools: Option<bool>,
    json_schema: Option<bool>,
    json_object: Option<bool>,
    temperature: Option<bool>,
    context: Option<u64>,
    max_output: Option<u64>,
}

impl FileCaps {
    fn over(self, base: Capabilities) -> Capabilities {
        Capabilities {
            streaming: self.streaming.unwrap_or(base.streaming),
            tools: self.tools.unwrap_or(base.tools),
            json_schema: self.json_schema.unwrap_or(base.json_schema),
            json_object: self.json_object.unwrap_or(base.json_object),
            temperature: self.temperature.unwrap_or(base.temperature),
            vision: base.vision,
            context_window: self.context.or(base.context_window),
            max_output_tokens: self.max_output.or(base.max_output_tokens),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    id: String,
    input: f64,
    output: f64,
    #[serde(default)]
    cache_read: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    long: Option<LongPromptPrice>,
    // Capability overrides, as in `FileCaps` (not flattened: `deny_unknown_fields` and
    // `flatten` do not mix, and a misspelt field must be an error).
    streaming: Option<bool>,
    tools: Option<bool>,
    json_schema: Option<bool>,
    json_object: Option<bool>,
    temperature: Option<bool>,
    context: Option<u64>,
    max_output: Option<u64>,
}

impl FileModel {
    fn caps(&self) -> FileCaps {
        FileCaps {
            streaming: self.streaming,
            tools: self.tools,
            json_schema: self.json_schema,
            json_object: self.json_object,
            temperature: self.temperature,
            context: self.context,
            max_output: self.max_output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static PriceTable {
        PriceTable::builtin()
    }

    #[test]
    fn the_shipped_table_parses_and_covers_every_builtin_provider() {
        let parsed = PriceTable::from_toml(MODELS_TOML).expect("data/models.toml parses");
        for provider in ["openai", "anthropic", "xai", "groq", "deepseek", "mistral", "gemini"] {
            let (taken, source) = parsed.taken(provider).unwrap_or_else(|| panic!("{provider} listed"));
            assert_eq!(taken.len(), 10, "{provider}: taken is a YYYY-MM-DD date");
            assert!(source.is_some_and(|s| s.starts_with("https://")), "{provider}");
            assert!(parsed.models().any(|m| m.provider == provider), "{provider} has models");
        }
        for m in parsed.models() {
            assert!(m.price.input > 0.0 && m.price.output >= m.price.input * 0.5, "{m:?}");
            if let Some(read) = m.price.cache_read {
                assert!(read < m.price.input, "{}: cache reads are cheaper", m.id);
            }
            assert!(m.capabilities.context_window.is_some(), "{}: context window", m.id);
        }
    }

    #[test]
    fn exact_names_and_dated_snapshots_resolve() {
        let sonnet = table().lookup("anthropic", "claude-sonnet-4-5").unwrap();
        assert_eq!(sonnet.id, "claude-sonnet-4-5");
        assert_eq!(sonnet.price.input, 3.0);
        assert_eq!(sonnet.price.output, 15.0);
        assert_eq!(sonnet.capabilities.context_window, Some(200_000));
        for (provider, model, id) in [
            ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
            ("anthropic", "claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
            ("anthropic", "Claude-Haiku-4-5-20251001", "claude-haiku-4-5"),
            ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
            ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("openai", "o3-2025-04-16", "o3"),
            ("openai", "gpt-5-2025-08-07", "gpt-5"),
            ("openai", "chatgpt-4o-latest", "gpt-4o"),
            ("xai", "grok-4-0709", "grok-4"),
            ("xai", "grok-4-latest", "grok-4"),
            ("mistral", "mistral-large-latest", "mistral-large"),
            ("mistral", "mistral-medium-2508", "mistral-medium"),
            ("gemini", "gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash"),
            ("gemini", "gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
            ("gemini", "gemini-3-pro-preview", "gemini-3-pro-preview"),
            ("groq", "openai/gpt-oss-120b", "openai/gpt-oss-120b"),
            ("deepseek", "deepseek-chat", "deepseek-chat"),
        ] {
            let info = table().lookup(provider, model).unwrap_or_else(|| panic!("{provider}/{model}"));
            assert_eq!(info.id, id, "{provider}/{model}");
        }
    }

    #[test]
    fn the_models_users_of_the_original_framework_name_are_priced_with_their_date() {
        // grok-4-fast, claude-sonnet-4-5, the GPT-4.1 and GPT-5 families: each with a price
        // and the date it was taken (`belt models` says "as of" it).
        let cases = [
            ("xai", "grok-4-fast", "grok-4-fast-reasoning", 0.20),
            ("xai", "grok-4-1-fast", "grok-4-1-fast-reasoning", 0.20),
            ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5", 3.0),
            ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5", 3.0),
            ("openai", "gpt-4.1", "gpt-4.1", 2.0),
            ("openai", "gpt-4.1-mini", "gpt-4.1-mini", 0.40),
            ("openai", "gpt-4.1-nano", "gpt-4.1-nano", 0.10),
            ("openai", "gpt-5", "gpt-5", 1.25),
            ("openai", "gpt-5-mini", "gpt-5-mini", 0.25),
            ("openai", "gpt-5-nano", "gpt-5-nano", 0.05),
            ("openai", "gpt-5.1", "gpt-5.1", 1.25),
            ("openai", "gpt-5-codex", "gpt-5-codex", 1.25),
            ("openai", "gpt-5.1-codex-mini", "gpt-5.1-codex-mini", 0.25),
        ];
        for (provider, model, id, input) in cases {
            let info =
                table().lookup(provider, model).unwrap_or_else(|| panic!("{provider}/{model} is known"));
            assert_eq!(info.id, id, "{provider}/{model}");
            assert_eq!(info.price.input, input, "{provider}/{model}");
            assert!(
                chrono::NaiveDate::parse_from_str(&info.taken, "%Y-%m-%d").is_ok(),
                "{provider}/{model} has the date its price was taken: {:?}",
                info.taken
            );
        }
    }

    #[test]
    fn an_exact_snapshot_keeps_its_own_price() {
        assert_eq!(table().price("openai", "gpt-4o-2024-05-13").unwrap().input_per_mtok, 5.0);
        assert_eq!(table().price("openai", "gpt-4o-2024-11-20").unwrap().input_per_mtok, 2.5);
    }

    #[test]
    fn stripping_never_turns_a_version_into_another_model() {
        // `claude-opus-4-5` is not `claude-opus-4` (3x the price).
        assert_eq!(table().price("anthropic", "claude-opus-4-5").unwrap().input_per_mtok, 5.0);
        assert_eq!(table().price("anthropic", "claude-opus-4-5-20251101").unwrap().input_per_mtok, 5.0);
        assert_eq!(strip_suffix("claude-opus-4-5"), None);
        assert_eq!(strip_suffix("gpt-4o"), None);
        assert_eq!(strip_suffix("o3"), None);
        assert_eq!(strip_suffix("latest"), None);
        assert_eq!(strip_suffix("x-2024-01-02"), Some("x"));
        assert_eq!(strip_suffix("x-09-2025"), Some("x"));
        assert_eq!(strip_suffix("x-preview"), Some("x"));
    }

    #[test]
    fn unknown_models_have_no_price_never_zero() {
        assert_eq!(table().price("openai", "gpt-9-ultra"), None);
        assert_eq!(table().price("anthropic", "claude-opus-4-5x"), None);
        assert_eq!(table().price("nobody", "gpt-4o"), None);
        assert_eq!(table().lookup("mistral", "mistral-huge"), None);
        assert_eq!(table().price("openrouter", "meta-llama/llama-3.3-70b-instruct"), None);
        // Capabilities fall back to the provider's defaults.
        assert!(table().capabilities("openai", "gpt-9-ultra").unwrap().streaming);
        assert_eq!(table().capabilities("nobody", "x"), None);
    }

    #[test]
    fn local_and_free_models_cost_an_explicit_zero() {
        assert_eq!(table().price("ollama", "llama3.2:3b"), Some(ModelPrice::FREE.price()));
        let info = table().lookup("ollama", "qwen3:8b").unwrap();
        assert_eq!(info.price, ModelPrice::FREE);
        assert!(info.capabilities.streaming);
        assert_eq!(
            table().price("openrouter", "meta-llama/llama-3.3-70b-instruct:free"),
            Some(ModelPrice::FREE.price())
        );
    }

    #[test]
    fn openrouter_models_are_priced_as_their_vendor() {
        let p = |m| table().price("openrouter", m);
        assert_eq!(p("anthropic/claude-sonnet-4.5"), table().price("anthropic", "claude-sonnet-4-5"));
        assert_eq!(p("openai/gpt-4o-mini"), table().price("openai", "gpt-4o-mini"));
        assert_eq!(p("openai/gpt-5.1"), table().price("openai", "gpt-5.1"));
        assert_eq!(p("google/gemini-2.5-pro"), table().price("gemini", "gemini-2.5-pro"));
        assert_eq!(p("x-ai/grok-4"), table().price("xai", "grok-4"));
        assert!(p("anthropic/claude-sonnet-4.5").is_some());
    }

    #[test]
    fn cost_counts_cache_reads_writes_and_the_long_prompt_tier() {
        let sonnet = table().lookup("anthropic", "claude-sonnet-4-5").unwrap().price;
        // 1000 uncached + 2000 cache reads + 500 cache writes in, 400 out.
        let usage = Usage {
            input_tokens: 3500,
            output_tokens: 400,
            cache_read_tokens: 2000,
            cache_write_tokens: 500,
            reasoning_tokens: 0,
        };
        let expected = (1000.0 * 3.0 + 2000.0 * 0.30 + 500.0 * 3.75 + 400.0 * 15.0) / 1e6;
        assert!((sonnet.cost(&usage) - expected).abs() < 1e-12, "{}", sonnet.cost(&usage));
        // The engine's figure is the same (no long-prompt tier here)…
        assert!((sonnet.price().cost(usage) - expected).abs() < 1e-12);
        // …and its worst case, which the budget reserves, is never below it: all input at
        // the cache-write rate, the dearest.
        let worst = sonnet.price().cost_of(3500, 400);
        assert!((worst - (3500.0 * 3.75 + 400.0 * 15.0) / 1e6).abs() < 1e-12);
        assert!(worst >= expected);

        let pro = table().lookup("gemini", "gemini-2.5-pro").unwrap().price;
        let short = Usage { input_tokens: 200_000, output_tokens: 1000, ..Usage::default() };
        let long = Usage { input_tokens: 200_001, output_tokens: 1000, ..Usage::default() };
        assert!((pro.cost(&short) - (200_000.0 * 1.25 + 1000.0 * 10.0) / 1e6).abs() < 1e-12);
        assert!((pro.cost(&long) - (200_001.0 * 2.5 + 1000.0 * 15.0) / 1e6).abs() < 1e-12);
    }

    #[test]
    fn overrides_win_over_the_shipped_figures() {
        let mut t = PriceTable::builtin().clone();
        let overrides = PriceTable::from_toml(
            r#"
            [providers.openai]
            taken = "2026-01-01"
            models = [{ id = "gpt-4o", input = 2.0, output = 8.0 }, { id = "my-finetune", input = 3.0, output = 12.0 }]
            aliases = { "ft" = "my-finetune" }
            [providers.mylab]
            taken = "2026-01-01"
            models = [{ id = "m1", input = 0.5, output = 1.0, context = 8192 }]
            "#,
        )
        .unwrap();
        t.merge(overrides);
        assert_eq!(t.price("openai", "gpt-4o-2024-08-06").unwrap().input_per_mtok, 2.0);
        assert_eq!(t.price("openai", "ft").unwrap().output_per_mtok, 12.0);
        assert_eq!(t.price("openai", "gpt-4.1").unwrap().input_per_mtok, 2.0, "others kept");
        assert_eq!(t.lookup("mylab", "m1").unwrap().capabilities.context_window, Some(8192));
        t.set_price("mylab", "m2", ModelPrice { input: 1.0, ..ModelPrice::FREE });
        assert_eq!(t.price("mylab", "M2").unwrap().input_per_mtok, 1.0);
    }

    #[test]
    fn a_broken_table_is_an_error_that_names_the_entry() {
        let negative =
            "[providers.x]\ntaken = \"2025-01-01\"\nmodels = [{ id = \"m\", input = -1.0, output = 1.0 }]";
        assert!(
            matches!(PriceTable::from_toml(negative), Err(PricingError::Invalid { model, .. }) if model == "m")
        );
        let typo =
            "[providers.x]\ntaken = \"2025-01-01\"\nmodels = [{ id = \"m\", input = 1.0, outptu = 1.0 }]";
        assert!(matches!(PriceTable::from_toml(typo), Err(PricingError::Parse(_))));
        let alias = "[providers.x]\ntaken = \"2025-01-01\"\nmodels = []\naliases = { a = \"b\" }";
        assert!(PriceTable::from_toml(alias).unwrap_err().to_string().contains("`b`"));
    }
}

//! Which model a run uses when none is named, and `belt models`.

use std::time::Duration;

use belt_llm::pricing::PriceTable;
use belt_llm::providers::BUILTIN_PROVIDERS;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A sensible default model per built-in provider: current, inexpensive, and accepting
/// the temperatures the cascade sets.
const DEFAULT_MODELS: &[(&str, &str)] = &[
    ("openai", "gpt-4.1-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("xai", "grok-4-fast-non-reasoning"),
    ("groq", "llama-3.3-70b-versatile"),
    ("openrouter", "openai/gpt-4.1-mini"),
    ("deepseek", "deepseek-chat"),
    ("mistral", "mistral-small-latest"),
    ("gemini", "gemini-2.5-flash"),
];

/// How the default model was chosen, for the notice on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `--model` or `BELT_MODEL`.
    Given(String),
    /// The first built-in provider whose key is set.
    FromKey { model: String, variable: String },
    /// A local Ollama server answered.
    Ollama(String),
    /// Nothing is configured: the simulated provider.
    Simulated,
}

impl Choice {
    pub fn model(&self) -> String {
        match self {
            Choice::Given(m) | Choice::FromKey { model: m, .. } | Choice::Ollama(m) => m.clone(),
            Choice::Simulated => crate::run_cmd::SIMULATED_MODEL.to_string(),
        }
    }
}

/// `--model` > `BELT_MODEL` > `default_model` in belt.toml > the first provider whose key
/// is set > a local Ollama that answers within 300 ms > the simulated provider.
pub async fn choose(given: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Choice {
    if let Some(m) = given {
        return Choice::Given(m.to_string());
    }
    if let Some(m) = &crate::config::get().default_model {
        return Choice::Given(m.clone());
    }
    for (provider, model) in DEFAULT_MODELS {
        let Some(builtin) = BUILTIN_PROVIDERS.iter().find(|b| b.name == *provider) else { continue };
        if let Some(variable) = builtin.key_env.iter().find(|v| env(v).is_some_and(|k| !k.trim().is_empty()))
        {
            return Choice::FromKey { model: format!("{provider}/{model}"), variable: variable.to_string() };
        }
    }
    let host = env("OLLAMA_HOST").unwrap_or_else(|| "127.0.0.1:11434".into());
    if let Some(model) = ollama_model(&host, Duration::from_millis(300)).await {
        return Choice::Ollama(format!("ollama/{model}"));
    }
    Choice::Simulated
}

/// The first model a local Ollama lists, if it answers within `limit`.
async fn ollama_model(host: &str, limit: Duration) -> Option<String> {
    let base = belt_llm::providers::ollama_base_url(host);
    let authority = base.split("://").nth(1)?.split('/').next()?.to_string();
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let request = format!("GET /api/tags HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).await.ok()?;
        Some(response)
    };
    let response = tokio::time::timeout(limit, probe).await.ok()??;
    let text = String::from_utf8_lossy(&response);
    let body = text.split("\r\n\r\n").nth(1)?;
    let tags: serde_json::Value = serde_json::from_str(body).ok()?;
    tags["models"].as_array()?.first()?["name"].as_str().map(str::to_string)
}

/// `belt models`: every model with a known price, its prices and capabilities, and
/// whether its provider is configured here.
pub fn list(json: bool, env: &dyn Fn(&str) -> Option<String>) -> i32 {
    let table = PriceTable::builtin();
    let configured = |provider: &str| {
        BUILTIN_PROVIDERS
            .iter()
            .find(|b| b.name == provider)
            .is_some_and(|b| b.key_env.is_empty() || b.key_env.iter().any(|v| env(v).is_some()))
    };
    let models: Vec<_> = table.models().collect();
    if json {
        let rows: Vec<serde_json::Value> = models
            .iter()
            .map(|m| {
                serde_json::json!({
                    "model": format!("{}/{}", m.provider, m.id),
                    "input_per_mtok": m.price.price().input_per_mtok,
                    "output_per_mtok": m.price.price().output_per_mtok,
                    "price": m.price,
                    "capabilities": m.capabilities,
                    "prices_taken": m.taken,
                    "configured": configured(&m.provider),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("models serialize"));
        return 0;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "model",
        "in $/Mtok",
        "out $/Mtok",
        "cache r/w $/Mtok",
        "stream",
        "tools",
        "json schema",
        "context",
        "ready",
    ]);
    let yes = |b: bool| if b { "yes" } else { "—" };
    for m in &models {
        let p = m.price.price();
        t.add_row(vec![
            format!("{}/{}", m.provider, m.id),
            format!("{:.2}", p.input_per_mtok),
            format!("{:.2}", p.output_per_mtok),
            // Prompt-cache reads and writes (`—`: billed as input).
            match (p.cache_read_per_mtok, p.cache_write_per_mtok) {
                (None, None) => "—".to_string(),
                (r, w) => {
                    let f = |x: Option<f64>| x.map_or("—".to_string(), |x| format!("{x:.3}"));
                    format!("{}/{}", f(r), f(w))
                }
            },
            yes(m.capabilities.streaming).into(),
            yes(m.capabilities.tools).into(),
            yes(m.capabilities.json_schema).into(),
            m.capabilities.context_window.map_or("—".into(), |c| format!("{}k", c / 1000)),
            yes(configured(&m.provider)).into(),
        ]);
    }
    println!("{t}");
    println!(
        "Prices in USD per million tokens, as of the dates in the table (`belt models --json`); a model \
         without a known price reports its cost as unknown. `ready`: the provider's key is set. \
         simulated/<any> is always available (nominal prices, outputs not from a model)."
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_model_follows_the_documented_order() {
        let none = |_: &str| None;
        let with = |name: &'static str| move |v: &str| (v == name).then(|| "k".to_string());
        assert_eq!(choose(Some("x/y"), &none).await, Choice::Given("x/y".into()));
        assert_eq!(choose(None, &with("ANTHROPIC_API_KEY")).await.model(), "anthropic/claude-sonnet-4-5");
        let both = |v: &str| matches!(v, "OPENAI_API_KEY" | "ANTHROPIC_API_KEY").then(|| "k".to_string());
        assert_eq!(choose(None, &both).await.model(), "openai/gpt-4.1-mini");
        // No key and no Ollama on a port nothing listens on: simulated.
        let no_ollama = |v: &str| (v == "OLLAMA_HOST").then(|| "127.0.0.1:9".to_string());
        assert_eq!(choose(None, &no_ollama).await, Choice::Simulated);
    }

    #[tokio::test]
    async fn a_local_ollama_is_found_by_its_tag_list() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = r#"{"models":[{"name":"llama3.2:latest"},{"name":"qwen3:8b"}]}"#;
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = s.write_all(reply.as_bytes()).await;
        });
        let env = move |v: &str| (v == "OLLAMA_HOST").then(|| addr.to_string());
        assert_eq!(choose(None, &env).await, Choice::Ollama("ollama/llama3.2:latest".into()));
    }
}

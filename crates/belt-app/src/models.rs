//! Which model a run uses when its spec names none: [`choose`].
//!
//! `model` of the spec > `BELT_MODEL` (read by the front end) > `default_model` in
//! belt.toml > the first built-in provider whose key is set > a local Ollama that answers
//! within 300 ms > the simulated provider. The choice is made once, by the front end, and
//! recorded in the spec, so a resumed run uses the same model.

use std::time::Duration;

use belt_llm::providers::BUILTIN_PROVIDERS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The model of a run that names none and finds nothing configured: offline, simulated text.
pub const SIMULATED_MODEL: &str = "simulated/default";

/// A sensible default model per built-in provider: current, inexpensive, and accepting
/// the temperatures the cascade sets.
pub const DEFAULT_MODELS: &[(&str, &str)] = &[
    ("openai", "gpt-4.1-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("xai", "grok-4-fast-non-reasoning"),
    ("groq", "llama-3.3-70b-versatile"),
    ("openrouter", "openai/gpt-4.1-mini"),
    ("deepseek", "deepseek-chat"),
    ("mistral", "mistral-small-latest"),
    ("gemini", "gemini-2.5-flash"),
];

/// How the default model was chosen, so a front end can say so.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Choice {
    /// Named: by the spec, `BELT_MODEL`, or belt.toml's `default_model`.
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
            Choice::Simulated => SIMULATED_MODEL.to_string(),
        }
    }
}

/// The model for a run: `given`, else `configured` (belt.toml), else by the keys in `env`,
/// else a local Ollama, else the simulated provider. See the module docs.
pub async fn choose(
    given: Option<&str>,
    configured: Option<&str>,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Choice {
    if let Some(m) = given.or(configured) {
        return Choice::Given(m.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_default_model_follows_the_documented_order() {
        let none = |_: &str| None;
        let with = |name: &'static str| move |v: &str| (v == name).then(|| "k".to_string());
        assert_eq!(choose(Some("x/y"), None, &none).await, Choice::Given("x/y".into()));
        assert_eq!(choose(None, Some("c/m"), &with("OPENAI_API_KEY")).await, Choice::Given("c/m".into()));
        assert_eq!(
            choose(None, None, &with("ANTHROPIC_API_KEY")).await.model(),
            "anthropic/claude-sonnet-4-5"
        );
        let both = |v: &str| matches!(v, "OPENAI_API_KEY" | "ANTHROPIC_API_KEY").then(|| "k".to_string());
        assert_eq!(choose(None, None, &both).await.model(), "openai/gpt-4.1-mini");
        // No key and no Ollama on a port nothing listens on: simulated.
        let no_ollama = |v: &str| (v == "OLLAMA_HOST").then(|| "127.0.0.1:9".to_string());
        assert_eq!(choose(None, None, &no_ollama).await, Choice::Simulated);
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
        assert_eq!(choose(None, None, &env).await, Choice::Ollama("ollama/llama3.2:latest".into()));
    }
}

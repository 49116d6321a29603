//! Model servers on this machine (llama.cpp, vLLM, LM Studio, Ollama): which of the built-in
//! local providers answer, and the models they serve, for `belt doctor` and `belt models`.
//!
//! A built-in provider is local when it needs no key (until `belt_llm` marks them itself).
//! Each is asked `GET {base_url}/models` (the OpenAI-compatible list every one of them
//! serves) all at once, each within a short limit and reading a bounded answer, so a
//! machine with none of them running costs the caller one limit, not one per server.
//!
//! ```no_run
//! # async fn f() {
//! let servers = belt_app::local::servers(&belt_llm::process_env, std::time::Duration::from_secs(1)).await;
//! let answering: Vec<&str> =
//!     servers.iter().filter(|s| s.models().is_some()).map(|s| s.provider).collect();
//! # let _ = answering;
//! # }
//! ```

use std::time::Duration;

use belt_llm::providers::{BUILTIN_PROVIDERS, ProviderSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most of a server's answer read (a model list is a few KiB).
const MAX_ANSWER: u64 = 256 * 1024;
/// The most models kept from one list.
const MAX_MODELS: usize = 200;

/// A local provider and what its server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalServer {
    /// The provider's name (`ollama`, `llamacpp`…): models are named `provider/model`.
    pub provider: &'static str,
    /// Where it is looked for.
    pub base_url: String,
    /// The variable that moves it.
    pub base_url_env: &'static str,
    pub reach: Reach,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// It answered with its models (ids as the server names them).
    Models(Vec<String>),
    /// Something answers, but not with a model list: why not.
    Answers(String),
    /// Nothing answered within the limit: why not (refused, timed out…).
    Unreachable(String),
}

impl LocalServer {
    /// The models it serves, when it answered with a list.
    pub fn models(&self) -> Option<&[String]> {
        match &self.reach {
            Reach::Models(m) => Some(m),
            _ => None,
        }
    }
}

/// The built-in providers of servers that run on this machine (llama.cpp, Ollama, vLLM, LM Studio).
pub fn local_providers() -> impl Iterator<Item = &'static belt_llm::providers::BuiltinProvider> {
    BUILTIN_PROVIDERS.iter().filter(|b| b.is_local())
}

/// Every local provider probed at once, each within `limit`, in the built-in order.
pub async fn servers(env: &(dyn Fn(&str) -> Option<String> + Sync), limit: Duration) -> Vec<LocalServer> {
    let mut probes = tokio::task::JoinSet::new();
    for (i, b) in local_providers().enumerate() {
        let base_url = ProviderSpec::from(b).resolved_base_url(env);
        let (provider, base_url_env) = (b.name, b.base_url_env);
        probes.spawn(async move {
            let reach = match tokio::time::timeout(limit, probe(&base_url)).await {
                Ok(reach) => reach,
                Err(_) => Reach::Unreachable(format!("no answer within {} ms", limit.as_millis())),
            };
            (i, LocalServer { provider, base_url, base_url_env, reach })
        });
    }
    let mut out: Vec<(usize, LocalServer)> = probes.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, s)| s).collect()
}

/// `GET {base_url}/models` over HTTP/1.0 (the connection closes after the answer).
async fn probe(base_url: &str) -> Reach {
    let Some(rest) = base_url.strip_prefix("http://") else {
        return Reach::Unreachable(format!("`{base_url}` is not an http:// URL"));
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let path = format!("/{}/models", path.trim_end_matches('/')).replace("//", "/");
    let mut stream = match tokio::net::TcpStream::connect(authority).await {
        Ok(s) => s,
        Err(e) => return Reach::Unreachable(e.to_string()),
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    let mut answer = Vec::new();
    let read = async {
        stream.write_all(request.as_bytes()).await?;
        (&mut stream).take(MAX_ANSWER).read_to_end(&mut answer).await
    };
    if let Err(e) = read.await {
        return Reach::Answers(format!("the connection broke: {e}"));
    }
    model_list(&String::from_utf8_lossy(&answer))
}

/// The model ids of an OpenAI-compatible `/models` answer (`{"data": [{"id": …}]}`).
fn model_list(answer: &str) -> Reach {
    let Some((head, body)) = answer.split_once("\r\n\r\n") else {
        return Reach::Answers("its answer is not HTTP".into());
    };
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Reach::Answers(format!("GET /models answered HTTP {status}"));
    }
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body.trim()) else {
        return Reach::Answers("its model list is not JSON".into());
    };
    let Some(data) = json["data"].as_array() else {
        return Reach::Answers("its answer holds no model list (`data`)".into());
    };
    let ids = data.iter().filter_map(|m| m["id"].as_str()).take(MAX_MODELS).map(String::from).collect();
    Reach::Models(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_list_is_read_and_anything_else_is_said() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n\
                  {\"object\":\"list\",\"data\":[{\"id\":\"qwen2.5-7b\",\"object\":\"model\"},{\"id\":\"phi-4\"}]}";
        assert_eq!(model_list(ok), Reach::Models(vec!["qwen2.5-7b".into(), "phi-4".into()]));
        assert_eq!(
            model_list("HTTP/1.1 404 Not Found\r\n\r\nno"),
            Reach::Answers("GET /models answered HTTP 404".into())
        );
        assert!(matches!(model_list("HTTP/1.1 200 OK\r\n\r\n<html>"), Reach::Answers(_)));
        assert!(matches!(model_list("garbage"), Reach::Answers(_)));
    }

    #[tokio::test]
    async fn servers_are_probed_at_their_variables_address_within_the_limit() {
        // A port nothing listens on: refused at once, well within the limit.
        let env = |v: &str| (v == "OLLAMA_HOST").then(|| "127.0.0.1:9".to_string());
        let found = servers(&env, Duration::from_millis(800)).await;
        let ollama = found.iter().find(|s| s.provider == "ollama").expect("ollama is a local provider");
        assert_eq!(ollama.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(ollama.base_url_env, "OLLAMA_HOST");
        assert!(matches!(ollama.reach, Reach::Unreachable(_)), "{:?}", ollama.reach);
        assert!(found.iter().all(|s| s.models().is_none()), "{found:?}");
    }
}

//! What a local server says about itself: a model's context window, whether it takes
//! images, and how many requests the server runs at once — asked once, bounded, remembered.
//!
//! | server | asked | window | slots |
//! |---|---|---|---|
//! | llama.cpp | `GET /props` (at the server's root, not under `/v1`) | `default_generation_settings.n_ctx`: one slot's share of `--ctx-size` | `total_slots` (`--parallel`) |
//! | Ollama | `POST /api/show {"model"}` | `num_ctx` among the model's `parameters` when its Modelfile sets it, else 4096, Ollama's default on machines with less than 24 GiB of VRAM (`OLLAMA_CONTEXT_LENGTH` on the server, or `context_window` in `belt.toml`, says otherwise). Not `model_info.*.context_length`: that is what the model was trained for, not what Ollama gives it | not said (`OLLAMA_NUM_PARALLEL`) |
//! | vLLM | `GET /v1/models` | the model's `max_model_len` | not said |
//!
//! A provider named `llamacpp`, `ollama` or `vllm` asks its own server's endpoint only;
//! another local provider tries them in that order. Each discovery takes at most 2 s in all
//! and reads at most 1 MiB a response. A success is remembered for the provider's life; a
//! failure (server down, no such endpoint) for 30 s, so a dead server is not asked on
//! every call. Only providers on a local or private address (or the built-in local ones)
//! are asked at all.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::http::HttpCore;

/// The longest a discovery takes, all requests together.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a failed discovery is remembered before the server is asked again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// The most bytes read of a discovery response.
const MAX_BYTES: usize = 1 << 20;
/// Ollama's window when the model's parameters set none (less than 24 GiB of VRAM).
pub const OLLAMA_DEFAULT_NUM_CTX: u64 = 4096;

/// What a server said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discovered {
    pub context_window: Option<u64>,
    pub slots: Option<usize>,
    pub vision: bool,
}

/// Discoveries of one provider, per model (`""`: the server's own, for its slots).
#[derive(Default)]
pub(crate) struct Discovery {
    memo: tokio::sync::Mutex<HashMap<String, (Instant, Option<Discovered>)>>,
}

#[derive(Clone, Copy)]
enum Probe {
    Props,
    Show,
    Models,
}

impl Discovery {
    /// What the server says about `model` (`""`: about itself), asked at most once (or
    /// again 30 s after a failure). Callers wait for a discovery in progress.
    pub async fn get(&self, core: &HttpCore, model: &str) -> Option<Discovered> {
        let mut memo = self.memo.lock().await;
        if let Some((at, found)) = memo.get(model)
            && (found.is_some() || at.elapsed() < RETRY_AFTER_FAILURE)
        {
            return *found;
        }
        let found = tokio::time::timeout(DISCOVERY_TIMEOUT, probe_all(core, model)).await.ok().flatten();
        if found.is_none() {
            tracing::debug!(provider = %core.name, model, "the server said nothing about the model's window");
        }
        memo.insert(model.to_string(), (Instant::now(), found));
        found
    }
}

async fn probe_all(core: &HttpCore, model: &str) -> Option<Discovered> {
    let probes: &[Probe] = match (core.name.as_str(), model) {
        ("llamacpp", _) | (_, "") => &[Probe::Props],
        ("ollama", _) => &[Probe::Show],
        ("vllm", _) => &[Probe::Models],
        ("lmstudio", _) => &[],
        _ => &[Probe::Props, Probe::Show, Probe::Models],
    };
    for probe in probes {
        if let Some(found) = ask(core, *probe, model).await {
            return Some(found);
        }
    }
    None
}

async fn ask(core: &HttpCore, probe: Probe, model: &str) -> Option<Discovered> {
    let root = core.base_url.trim_end_matches('/').trim_end_matches("/v1");
    // A new connection each time: asked once per model, and a pooled connection may be one
    // the server closed after a streamed reply (llama-server does).
    let client = core.fresh();
    let request = match probe {
        Probe::Props => client.get(format!("{root}/props")),
        Probe::Show => {
            client.post(format!("{root}/api/show")).body(serde_json::json!({ "model": model }).to_string())
        }
        Probe::Models => client.get(format!("{}/models", core.base_url)),
    };
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = core.read_to_end(response, MAX_BYTES).await.ok()?;
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    match probe {
        Probe::Props => Some(Discovered {
            context_window: value["default_generation_settings"]["n_ctx"].as_u64().filter(|n| *n > 0),
            slots: value["total_slots"].as_u64().and_then(|n| usize::try_from(n).ok()).filter(|n| *n > 0),
            vision: value["modalities"]["vision"].as_bool().unwrap_or(false),
        }),
        Probe::Show => {
            let num_ctx = value["parameters"].as_str().unwrap_or_default().lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("num_ctx")).then(|| words.next()?.parse::<u64>().ok()).flatten()
            });
            let capabilities = value["capabilities"].as_array().cloned().unwrap_or_default();
            Some(Discovered {
                context_window: Some(num_ctx.unwrap_or(OLLAMA_DEFAULT_NUM_CTX)),
                slots: None,
                vision: capabilities.iter().any(|c| c == "vision"),
            })
        }
        Probe::Models => {
            let models = value["data"].as_array()?;
            let entry = models.iter().find(|m| m["id"] == model)?;
            Some(Discovered { context_window: entry["max_model_len"].as_u64(), slots: None, vision: false })
        }
    }
}

//! The OpenAI-compatible adapter against the stateful fake local servers: connections a
//! server closes after each streamed reply, discovery, honest prices.

use std::time::Duration;

use belt_core::llm::LlmRequest;

use crate::endpoint::Endpoint;
use crate::fake_local::{FakeLocalServer, LocalConfig};
use crate::openai::OpenAiProvider;

fn ask(i: usize) -> LlmRequest {
    LlmRequest::new("llamacpp/m", format!("Subtask {i}: compare heat pumps")).max_tokens(64)
}

async fn llama(config: LocalConfig) -> (FakeLocalServer, OpenAiProvider) {
    let server = FakeLocalServer::start(config).await.unwrap();
    let provider = OpenAiProvider::new(Endpoint::new("llamacpp", server.openai_base_url())).unwrap();
    (server, provider)
}

#[tokio::test]
async fn a_connection_closed_after_a_streamed_reply_is_reused_without_a_failure() {
    // llama-server closes each connection after a streamed reply although it said
    // keep-alive; the fake reads (and drops) what arrives in the next 100 ms, so every
    // reuse of a pooled connection within that time fails before any response byte.
    let linger = Duration::from_millis(100);
    let (server, provider) = llama(LocalConfig::llamacpp().close_after_stream(Some(linger))).await;
    let calls = 12;
    for i in 0..calls {
        let done = provider.call("m", &ask(i)).await.unwrap_or_else(|e| panic!("call {i}: {e}"));
        // The engine's own work between two calls; it also lets hyper put the connection
        // back in its pool (which it does just after the body's end, not before).
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(done.reply.finish_reason.as_deref(), Some("stop"));
    }
    // Every call reached the server once and was answered once…
    assert_eq!(server.chat_requests(), calls);
    assert_eq!(server.completions(), calls as u64);
    assert_eq!(server.max_completions_per_prompt(), 1);
    // …each on its own connection, since the server closes them: some calls first went
    // to a pooled connection the server was closing, which dropped them unanswered, and
    // were sent again at once on a new one (without the re-send these calls would fail).
    assert_eq!(server.connections(), calls as u64);
    assert!(server.dropped_requests() >= 1, "no pooled connection was ever reused");
    assert!(server.dropped_requests() < calls as u64);
}

#[tokio::test]
async fn parallel_calls_over_closing_connections_all_succeed_once() {
    let linger = Duration::from_millis(50);
    let config = LocalConfig::llamacpp()
        .slots(4)
        .close_after_stream(Some(linger))
        .token_delay(Duration::from_millis(1));
    let (server, provider) = llama(config).await;
    for round in 0..3 {
        let requests: Vec<LlmRequest> = (0..8).map(|i| ask(round * 8 + i)).collect();
        let calls = requests.iter().map(|r| provider.call("m", r));
        for (i, result) in futures::future::join_all(calls).await.into_iter().enumerate() {
            result.unwrap_or_else(|e| panic!("round {round}, call {i}: {e}"));
        }
    }
    assert_eq!(
        server.chat_requests(),
        24,
        "each call answered once ({} dropped and re-sent)",
        server.dropped_requests()
    );
    assert_eq!(server.max_completions_per_prompt(), 1);
    assert!(server.max_busy_slots() <= 4);
}

#[tokio::test]
async fn a_server_that_is_down_is_still_a_connection_error() {
    let (server, provider) = llama(LocalConfig::llamacpp()).await;
    server.stop().await;
    let err = provider.call("m", &ask(0)).await.unwrap_err();
    assert!(matches!(err, belt_core::llm::LlmError::Connection(_)), "{err:?}");
    // The hint names the base URL as it is set, `/v1` included.
    assert!(err.to_string().contains(&format!("({})", server.openai_base_url())), "{err}");
    server.restart().await.unwrap();
    provider.call("m", &ask(0)).await.unwrap();
}

fn props_requests(server: &FakeLocalServer, path: &str) -> usize {
    server.requests().iter().filter(|r| r.path == path).count()
}

#[tokio::test]
async fn llama_cpps_window_and_slots_are_asked_once_of_its_props() {
    use belt_core::llm::LlmProvider;
    let (server, provider) = llama(LocalConfig::llamacpp().n_ctx(1024).slots(3).vision(true)).await;
    for _ in 0..3 {
        let caps = provider.capabilities("smollm2").await.expect("capabilities");
        assert_eq!(caps.context_window, Some(1024));
        assert!(caps.vision && caps.streaming);
        assert_eq!(provider.server_slots().await, Some(3));
    }
    // Once for the model's window, once for the server's slots; remembered after.
    assert_eq!(props_requests(&server, "/props"), 2);
}

#[tokio::test]
async fn ollamas_window_is_its_num_ctx_or_its_default_and_vllms_its_max_model_len() {
    use belt_core::llm::LlmProvider;
    for (listed, window) in [(true, 2048), (false, crate::discovery::OLLAMA_DEFAULT_NUM_CTX)] {
        let server = FakeLocalServer::start(LocalConfig::ollama().n_ctx(2048).num_ctx_parameter(listed))
            .await
            .unwrap();
        let provider = OpenAiProvider::new(Endpoint::new("ollama", server.openai_base_url())).unwrap();
        assert_eq!(provider.capabilities("llama3.2").await.unwrap().context_window, Some(window));
        assert_eq!(provider.server_slots().await, None, "Ollama does not say");
    }
    let server = FakeLocalServer::start(LocalConfig::vllm().n_ctx(8192)).await.unwrap();
    let provider = OpenAiProvider::new(Endpoint::new("lab", server.openai_base_url())).unwrap();
    let caps = provider.capabilities("Qwen/Qwen2.5-7B-Instruct").await.unwrap();
    assert_eq!(caps.context_window, Some(8192), "a provider of another name tries each server's endpoint");
}

#[tokio::test]
async fn a_dead_server_is_asked_once_then_left_alone_for_a_while() {
    use belt_core::llm::LlmProvider;
    let (server, provider) = llama(LocalConfig::llamacpp()).await;
    server.stop().await;
    let started = std::time::Instant::now();
    assert_eq!(provider.capabilities("m").await.and_then(|c| c.context_window), None);
    server.restart().await.unwrap();
    // Remembered: the server, back, is not asked again within 30 s.
    assert_eq!(provider.capabilities("m").await.and_then(|c| c.context_window), None);
    assert_eq!(props_requests(&server, "/props"), 0);
    assert!(started.elapsed() < crate::discovery::DISCOVERY_TIMEOUT * 2);
}

#[tokio::test]
async fn a_remote_provider_is_never_asked() {
    use belt_core::llm::LlmProvider;
    let server = FakeLocalServer::start(LocalConfig::llamacpp()).await.unwrap();
    let provider = OpenAiProvider::new(
        Endpoint::new("openai", server.openai_base_url()).price_source(crate::endpoint::PriceSource::Listed),
    )
    .unwrap();
    assert!(provider.capabilities("gpt-4.1-mini").await.unwrap().context_window.is_some(), "from the table");
    assert_eq!(provider.server_slots().await, None);
    assert_eq!(server.requests().len(), 0);
}

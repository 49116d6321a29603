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
    server.restart().await.unwrap();
    provider.call("m", &ask(0)).await.unwrap();
}

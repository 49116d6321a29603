//! The fakes themselves: what a test elsewhere relies on them for.

use std::time::Duration;

use super::*;

fn chat_body(prompt: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}], "stream": stream,
        "stream_options": {"include_usage": true}})
}

/// A client that never reuses connections, so that the fake's own behaviour is tested.
fn client() -> reqwest::Client {
    crate::http::install_crypto_provider();
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

async fn post(url: &str, body: &serde_json::Value) -> (u16, String) {
    let response = client().post(url).body(body.to_string()).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn get_json(url: &str) -> serde_json::Value {
    let text = client().get(url).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn slots_queue_requests_instead_of_refusing_them() {
    let server =
        FakeLocalServer::start(LocalConfig::llamacpp().slots(2).token_delay(Duration::from_millis(5)))
            .await
            .unwrap();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let calls = (0..8).map(|i| {
        let (client, url) = (client(), url.clone());
        let body = chat_body(&format!("task {i}"), true).to_string();
        async move { client.post(url).body(body).send().await?.text().await }
    });
    let bodies = futures::future::join_all(calls).await;
    for body in bodies {
        let body = body.unwrap();
        assert!(body.contains("\"finish_reason\":\"stop\"") && body.ends_with("data: [DONE]\n\n"), "{body}");
    }
    assert_eq!(server.max_busy_slots(), 2, "at most two at once, and both used");
    assert_eq!(server.completions(), 8);
    assert_eq!(server.max_completions_per_prompt(), 1);
    assert_eq!(server.prompt_counts().len(), 8);
}

#[tokio::test]
async fn a_prompt_past_the_window_gets_llama_cpps_exact_400_and_a_long_reply_is_cut() {
    let server = FakeLocalServer::start(LocalConfig::llamacpp().n_ctx(64).reply_tokens(100)).await.unwrap();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let long = "x".repeat(300);
    let (status, text) = post(&url, &chat_body(&long, false)).await;
    assert_eq!(status, 400);
    assert_eq!(
        text,
        r#"{"error":{"code":400,"message":"request (75 tokens) exceeds the available context size (64 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":75,"n_ctx":64}}"#
    );
    // 8 prompt tokens leave 55 for the reply: cut there, with `length`.
    let (_, text) = post(&url, &chat_body("twenty-nine bytes of a prompt", false)).await;
    let whole: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    assert_eq!(whole["usage"]["prompt_tokens"], 8);
    assert_eq!(whole["usage"]["completion_tokens"], 55);
    assert_eq!(server.overflows(), 1);
}

#[tokio::test]
async fn a_unified_pool_ends_a_reply_with_the_in_stream_error() {
    // Two replies of 30 tokens after prompts of 25, in a pool of 100: the one that runs it
    // out gets llama.cpp's error event, the other completes.
    let config = LocalConfig::llamacpp().n_ctx(100).slots(2).reply_tokens(30).unified_kv(true);
    let server = FakeLocalServer::start(config.token_delay(Duration::from_millis(2))).await.unwrap();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let prompt = |i: u32| format!("{i}{}", "y".repeat(99));
    let calls = (0..2).map(|i| {
        let (url, body) = (url.clone(), chat_body(&prompt(i), true));
        async move { post(&url, &body).await.1 }
    });
    let bodies = futures::future::join_all(calls).await;
    let failed: Vec<&String> =
        bodies.iter().filter(|b| b.contains("Context size has been exceeded.")).collect();
    assert_eq!(failed.len(), 1, "{bodies:?}");
    assert!(failed[0].ends_with(&format!("data: {}\n\n", wire::LLAMA_KV_FULL)), "{}", failed[0]);
    assert_eq!(server.completions(), 1);
}

#[tokio::test]
async fn a_streamed_reply_closes_its_connection_and_an_outage_frees_the_port() {
    let server = FakeLocalServer::start(LocalConfig::llamacpp()).await.unwrap();
    let url = format!("{}/chat/completions", server.openai_base_url());
    let props = format!("{}/props", server.url());
    // Pooled client: a JSON reply keeps its connection, a streamed one does not.
    let pooled = reqwest::Client::builder().build().unwrap();
    for _ in 0..3 {
        assert_eq!(pooled.get(&props).send().await.unwrap().status(), 200);
    }
    assert_eq!(server.connections(), 1, "keep-alive between JSON replies");
    let streamed = client().post(&url).body(chat_body("hi", true).to_string()).send().await.unwrap();
    assert_eq!(streamed.headers()["keep-alive"], "timeout=5, max=100");
    assert!(streamed.text().await.unwrap().ends_with("data: [DONE]\n\n"));

    server.stop().await;
    assert!(client().get(&props).send().await.is_err(), "nobody listens during the outage");
    server.restart().await.unwrap();
    let props_body = get_json(&props).await;
    assert_eq!(props_body["default_generation_settings"]["n_ctx"], 4096);
    assert_eq!(props_body["total_slots"], 4);
    assert_eq!(server.completions(), 1, "counts survive the restart");
}

#[tokio::test]
async fn ollama_and_vllm_answer_their_discovery_and_overflow_as_they_do() {
    let ollama = FakeLocalServer::start(LocalConfig::ollama().n_ctx(2048)).await.unwrap();
    let show_url = format!("{}/api/show", ollama.url());
    let (_, text) = post(&show_url, &serde_json::json!({"model": "llama3.2"})).await;
    let show: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        show["parameters"].as_str().unwrap().starts_with("num_ctx                        2048\n"),
        "{show}"
    );
    assert_eq!(show["model_info"]["llama.context_length"], 131072);
    let missing = post(&show_url, &serde_json::json!({"model": "qwen3"})).await;
    assert_eq!(missing, (404, r#"{"error":"model 'qwen3' not found"}"#.to_string()));

    let vllm = FakeLocalServer::start(LocalConfig::vllm().n_ctx(1000)).await.unwrap();
    let models = get_json(&format!("{}/models", vllm.openai_base_url())).await;
    assert_eq!(models["data"][0]["max_model_len"], 1000);
    let mut body = chat_body(&"z".repeat(3600), false);
    body["max_tokens"] = 200.into();
    let (status, text) = post(&format!("{}/chat/completions", vllm.openai_base_url()), &body).await;
    assert_eq!(status, 400);
    assert_eq!(
        text,
        r#"{"error":{"message":"This model's maximum context length is 1000 tokens. However, you requested 1100 tokens (900 in the messages, 200 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}}"#
    );
}

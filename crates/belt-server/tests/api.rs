//! API contract: status codes, auth, limits, SSE replay and resume, documents, OpenAPI,
//! shutdown. Each test runs a real server on a free port.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use belt_server::{Limits, RateLimit};
use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_public_and_everything_else_needs_the_token() {
    let server = TestServer::start(config(), 0).await;
    let c = client();
    let r = c.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");

    let r = c.get(server.url("/v1/runs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    let r = c.get(server.url("/v1/runs")).bearer_auth("test-token-0123456788").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The query token is for the event stream only.
    let r = c.get(server.url(&format!("/v1/runs?token={TOKEN}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = authed(c.get(server.url("/v1/runs"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["runs"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_accepted_then_listed_shown_and_rendered() {
    let server = TestServer::start(config(), 1).await;
    let c = client();
    let r = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Plan a city park", "agents": 12}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["run_id"].as_str().unwrap().to_string();
    assert_eq!(accepted["events_url"], format!("/v1/runs/{id}/events"));

    let view = wait_result(&server, &id).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(view["result"]["status"], "completed");
    assert_eq!(view["result"]["shape"], json!([12, 2, 1]));
    assert!(view["result"]["simulated"].as_bool().unwrap());

    let list: Value = authed(c.get(server.url("/v1/runs"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["runs"][0]["run_id"], id.as_str());
    assert_eq!(list["runs"][0]["status"], "completed");
    let list: Value =
        authed(c.get(server.url("/v1/runs?status=failed"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["runs"], json!([]));
    let r = authed(c.get(server.url("/v1/runs?status=nope"))).send().await.unwrap();
    assert_eq!(r.status(), 400);

    let md = authed(c.get(server.url(&format!("/v1/runs/{id}/documents/md")))).send().await.unwrap();
    assert_eq!(md.status(), 200);
    assert!(md.headers()["content-type"].to_str().unwrap().starts_with("text/markdown"));
    assert!(md.text().await.unwrap().starts_with("# Plan a city park"));
    let html = authed(c.get(server.url(&format!("/v1/runs/{id}/documents/html")))).send().await.unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.text().await.unwrap().contains("<html"));
    let docx = authed(c.get(server.url(&format!("/v1/runs/{id}/documents/docx")))).send().await.unwrap();
    assert_eq!(docx.status(), 200);
    assert_eq!(&docx.bytes().await.unwrap()[..2], b"PK");
    // No format names a path: anything else is unknown.
    for bad in ["exe", "..%2F..%2Fetc%2Fpasswd"] {
        let r = authed(c.get(server.url(&format!("/v1/runs/{id}/documents/{bad}")))).send().await.unwrap();
        assert_eq!(r.status(), 404, "{bad}");
    }
    let r = authed(c.post(server.url(&format!("/v1/runs/{id}/cancel")))).send().await.unwrap();
    assert_eq!(r.status(), 409);

    for path in ["/v1/runs/nope", "/v1/runs/nope/events", "/v1/runs/nope/documents/md"] {
        let r = authed(c.get(server.url(path))).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unknown_run", "{path}");
    }
    let r = authed(c.post(server.url("/v1/runs/nope/cancel"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_422_and_413() {
    let server = TestServer::start(config(), 0).await;
    let c = client();
    let post = |body: String| {
        authed(c.post(server.url("/v1/runs"))).header("content-type", "application/json").body(body).send()
    };
    let r = post("{\"task\": \"x\",".into()).await.unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("EOF") || msg.contains("line 1"), "{msg}");

    let r = post(json!({"task": "x", "agentz": 3}).to_string()).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("agentz"));
    let r = post(json!({"task": "x", "agents": "many"}).to_string()).await.unwrap();
    assert_eq!(r.status(), 422);
    let r = post(json!({"task": "  "}).to_string()).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("task is empty"));
    let r = post(json!({"task": "x", "pattern": "nope"}).to_string()).await.unwrap();
    assert_eq!(r.status(), 422);

    let big = json!({"task": "x".repeat(1024 * 1024 + 10)}).to_string();
    let r = post(big).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "too_large");

    let r = authed(c.post(server.url("/v1/runs"))).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 415, "no JSON content type");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unsupported_media_type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_limit_get_429_with_retry_after() {
    let mut cfg = config();
    cfg.rate_limit = RateLimit { per_second: 0.5, burst: 3 };
    let server = TestServer::start(cfg, 0).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(authed(c.get(server.url("/v1/runs"))).send().await.unwrap().status(), 200);
    }
    let r = authed(c.get(server.url("/v1/runs"))).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Health checks are not rate limited.
    assert_eq!(c.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    // Guessing tokens is limited as much as using one: wrong tokens share a bucket.
    let wrong = |c: &reqwest::Client| c.get(server.url("/v1/runs")).bearer_auth("guess").send();
    for _ in 0..3 {
        assert_eq!(wrong(&c).await.unwrap().status(), 401);
    }
    let r = wrong(&c).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_the_cap_queue_and_a_full_queue_gets_429() {
    let mut cfg = config();
    cfg.limits = Limits { max_running: 1, max_queued: 1 };
    let server = TestServer::start(cfg, 200).await;
    let c = client();
    let start = |task: &'static str| {
        authed(c.post(server.url("/v1/runs"))).json(&json!({"task": task, "agents": 3})).send()
    };
    let a: Value = start("first").await.unwrap().json().await.unwrap();
    assert_eq!(a["status"], "running");
    let b: Value = start("second").await.unwrap().json().await.unwrap();
    assert_eq!(b["status"], "queued");
    let r = start("third").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "5");
    let health: Value = c.get(server.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!((health["running"].as_u64(), health["queued"].as_u64()), (Some(1), Some(1)));

    // The queued run is listed, and cancelled before it starts.
    let b_id = b["run_id"].as_str().unwrap();
    let queued: Value =
        authed(c.get(server.url("/v1/runs?status=queued"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(queued["runs"][0]["run_id"], b_id);
    let r = authed(c.post(server.url(&format!("/v1/runs/{b_id}/cancel")))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let mut status = Value::Null;
    for _ in 0..100 {
        let v: Value = authed(c.get(server.url(&format!("/v1/runs/{b_id}"))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = v["status"].clone();
        if status == "cancelled" {
            assert!(v["error"].as_str().unwrap().contains("waiting for a run slot"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "cancelled");

    // Cancelling the running one ends it as cancelled, with its result recorded.
    let a_id = a["run_id"].as_str().unwrap();
    let r = authed(c.post(server.url(&format!("/v1/runs/{a_id}/cancel")))).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let view = wait_result(&server, a_id).await;
    assert_eq!(view["result"]["status"], "cancelled");
    // The slot is free again.
    let r = start("fourth").await.unwrap();
    assert_eq!(r.status(), 202);
}

/// Seqs of a whole stream: from 1, contiguous, the last one `run_finished`.
fn assert_complete(seqs: &[u64], last: &Value) {
    let n = seqs.len() as u64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>().as_slice(), "gap or duplicate");
    assert_eq!(last["type"], "run_finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id_without_gap_or_duplicate() {
    let server = TestServer::start(config(), 40).await;
    let c = client();
    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Survey of rivers", "agents": 12, "concurrency": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = a["run_id"].as_str().unwrap().to_string();
    let events = server.url(&format!("/v1/runs/{id}/events"));

    // First connection: read ten events, then drop it while the run goes on.
    let r = authed(c.get(&events)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut first = SseReader::new(r);
    let mut seqs = Vec::new();
    while seqs.len() < 10 {
        let e = first.next().await.expect("the run has more than ten events");
        assert_eq!(e.id, e.data["seq"].as_u64());
        // `event:` names the type, for EventSource listeners.
        assert_eq!(e.event.as_deref(), e.data["type"].as_str(), "{:?}", e.data);
        seqs.push(e.id.unwrap());
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The reconnection below joins a live run (replay from the store, then the live log).
    let view: Value =
        authed(c.get(server.url(&format!("/v1/runs/{id}")))).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["status"], "running");

    // Reconnect as a browser does, with Last-Event-ID.
    let r = authed(c.get(&events)).header("last-event-id", "10").send().await.unwrap();
    let mut second = SseReader::new(r);
    let mut last = Value::Null;
    while let Some(e) = second.next().await {
        seqs.push(e.id.unwrap());
        last = e.data;
    }
    assert_complete(&seqs, &last);
    // A client that saw run_finished gets the result at once.
    let view: Value =
        authed(c.get(server.url(&format!("/v1/runs/{id}")))).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["result"]["status"], "completed");
    let total = seqs.len() as u64;
    assert!(total > 30, "{total} events");

    // After the run: the whole stream replays from the store and ends; ?after=N resumes.
    let mut replay = SseReader::new(authed(c.get(&events)).send().await.unwrap());
    let (mut all, mut last) = (Vec::new(), Value::Null);
    while let Some(e) = replay.next().await {
        all.push(e.id.unwrap());
        assert_eq!(e.event.as_deref(), e.data["type"].as_str(), "replayed from the store: {:?}", e.data);
        last = e.data;
    }
    assert_complete(&all, &last);
    assert_eq!(all.len() as u64, total);
    let mut tail =
        SseReader::new(authed(c.get(format!("{events}?after={}", total - 3))).send().await.unwrap());
    let mut got = Vec::new();
    while let Some(e) = tail.next().await {
        got.push(e.id.unwrap());
    }
    assert_eq!(got, vec![total - 2, total - 1, total]);
    // Browsers' EventSource cannot send headers: the token may come in the query.
    let r = c.get(format!("{events}?token={TOKEN}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{events}?token=wrong")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = authed(c.get(&events)).header("last-event-id", "ten").send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_joining_at_different_times_each_get_every_event_once() {
    let server = TestServer::start(config(), 5).await;
    let c = client();
    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Many eyes", "agents": 20, "concurrency": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = server.url(&format!("/v1/runs/{}/events", a["run_id"].as_str().unwrap()));
    let mut readers = Vec::new();
    for i in 0..8u64 {
        let (c, events) = (c.clone(), events.clone());
        readers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 15)).await;
            let mut r = SseReader::new(authed(c.get(&events)).send().await.unwrap());
            let (mut seqs, mut last) = (Vec::new(), Value::Null);
            while let Some(e) = r.next().await {
                seqs.push(e.id.unwrap());
                last = e.data;
            }
            (seqs, last)
        }));
    }
    let mut lengths = BTreeSet::new();
    for r in readers {
        let (seqs, last) = r.await.unwrap();
        assert_complete(&seqs, &last);
        lengths.insert(seqs.len());
    }
    assert_eq!(lengths.len(), 1, "every subscriber saw the same events: {lengths:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_heartbeats() {
    let server = TestServer::start(config(), 400).await;
    let c = client();
    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Slow", "agents": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut r = SseReader::new(
        authed(c.get(server.url(&format!("/v1/runs/{}/events", a["run_id"].as_str().unwrap()))))
            .send()
            .await
            .unwrap(),
    );
    while r.next().await.is_some() {}
    assert!(r.comments.iter().any(|c| c == "heartbeat"), "{:?}", r.comments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_recorded_before_a_restart_are_listed_shown_and_streamed_from_the_store() {
    let store: Arc<dyn belt_core::store::RunStore> = Arc::new(belt_core::MemoryStore::new());
    // A run of an earlier server (or `belt run`) on the same store.
    let options = belt_core::RunOptions::default()
        .with_store(store.clone())
        .with_providers(belt_llm::providers(belt_llm::SimConfig::default().latency_ms(0)));
    let handle = belt_core::run(
        belt_core::Cascade::new(12, "simulated/default"),
        belt_core::Task::new("Earlier"),
        options,
    )
    .await
    .unwrap();
    let id = handle.run_id().to_string();
    handle.result().await;

    let server = TestServer::with_store(config(), 0, store).await;
    let c = client();
    let list: Value = authed(c.get(server.url("/v1/runs"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["runs"][0]["run_id"], id.as_str());
    let view: Value =
        authed(c.get(server.url(&format!("/v1/runs/{id}")))).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["result"]["shape"], json!([12, 2, 1]));
    let mut r =
        SseReader::new(authed(c.get(server.url(&format!("/v1/runs/{id}/events")))).send().await.unwrap());
    let (mut seqs, mut last) = (Vec::new(), Value::Null);
    while let Some(e) = r.next().await {
        seqs.push(e.id.unwrap());
        last = e.data;
    }
    assert_complete(&seqs, &last);
    let r = authed(c.post(server.url(&format!("/v1/runs/{id}/cancel")))).send().await.unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_walks_every_run_once() {
    let server = TestServer::start(config(), 0).await;
    let c = client();
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        let a: Value = authed(c.post(server.url("/v1/runs")))
            .json(&json!({"task": format!("task {i}"), "agents": 1}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = a["run_id"].as_str().unwrap().to_string();
        wait_result(&server, &id).await;
        ids.insert(id);
    }
    let (mut seen, mut offset) = (BTreeSet::new(), Some(0u64));
    while let Some(o) = offset {
        let page: Value = authed(c.get(server.url(&format!("/v1/runs?limit=2&offset={o}"))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page["runs"].as_array().unwrap().len() <= 2);
        for r in page["runs"].as_array().unwrap() {
            assert!(seen.insert(r["run_id"].as_str().unwrap().to_string()));
        }
        offset = page["next_offset"].as_u64();
    }
    assert_eq!(seen, ids);
    let r = authed(c.get(server.url("/v1/runs?limit=0"))).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_every_route_is_served() {
    let server = TestServer::start(config(), 0).await;
    let c = client();
    let doc: Value = authed(c.get(server.url("/openapi.json"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["components"]["schemas"]["RunRequest"]["properties"]["budget_usd"]["description"].is_string()
    );
    for route in belt_server::openapi::ROUTES {
        let op = &doc["paths"][route.path][route.method];
        assert!(op.is_object(), "{} {} missing from the document", route.method, route.path);
        // Every $ref resolves.
        for r in refs(op) {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(doc["components"]["schemas"][name].is_object(), "dangling {r}");
        }
        let path =
            route.path.replace("{id}", "no-such-run").replace("{format}", "md").replace("{request_id}", "x");
        let req = match route.method {
            "get" => c.get(server.url(&path)),
            "post" => c.post(server.url(&path)).json(&json!({})),
            "delete" => c.delete(server.url(&path)),
            m => panic!("method {m}"),
        };
        let r = authed(req).send().await.unwrap();
        assert_ne!(r.status(), 405, "{} {}", route.method, route.path);
        if r.status() == 404 {
            let body: Value = r.json().await.unwrap();
            assert_ne!(
                body["error"]["code"], "no_route",
                "{} {} is documented but not served",
                route.method, route.path
            );
        }
    }
    for schema in doc["components"]["schemas"].as_object().unwrap().values() {
        for r in refs(schema) {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(doc["components"]["schemas"][name].is_object(), "dangling {r}");
        }
    }
    let r = authed(c.get(server.url("/v2/nothing"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "no_route");
}

fn refs(v: &Value) -> Vec<String> {
    match v {
        Value::Object(o) => o
            .iter()
            .flat_map(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(s)) => vec![s.clone()],
                _ => refs(v),
            })
            .collect(),
        Value::Array(a) => a.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_runs_records_them_and_ends_streams() {
    let mut server = TestServer::start(config(), 300).await;
    let c = client();
    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Interrupted work", "agents": 10, "concurrency": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = a["run_id"].as_str().unwrap().to_string();
    let mut stream =
        SseReader::new(authed(c.get(server.url(&format!("/v1/runs/{id}/events")))).send().await.unwrap());
    // Wait until a worker has finished, so there is something recorded.
    loop {
        let e = stream.next().await.expect("events before shutdown");
        if e.data["type"] == "step_completed" && e.data["step"].as_str().unwrap().starts_with("worker") {
            break;
        }
    }
    server.shutdown().await;
    // The stream ended (with the run's end, or at shutdown).
    while stream.next().await.is_some() {}
    let result = server.store.get_result(&id).await.unwrap().expect("the cancelled run's result is recorded");
    assert_eq!(result.status, belt_core::RunStatus::Cancelled);
    assert!(result.agents.iter().any(|a| a.status == belt_core::AgentStatus::Completed));
    let steps = server.store.load_steps(&id).await.unwrap();
    assert!(!steps.is_empty(), "completed steps stay recorded for `belt resume`");
    assert!(c.get(server.url("/healthz")).send().await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_only_for_configured_origins() {
    let c = client();
    let server = TestServer::start(config(), 0).await;
    let r = authed(c.get(server.url("/v1/runs")))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none(), "no CORS unless configured");

    let mut cfg = config();
    cfg.cors_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(cfg, 0).await;
    let preflight = c
        .request(reqwest::Method::OPTIONS, server.url("/v1/runs"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example.com");
    let r = authed(c.get(server.url("/v1/runs")))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let r =
        authed(c.get(server.url("/v1/runs"))).header("origin", "https://evil.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

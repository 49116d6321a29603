//! Webhooks (signature, retry on 500, delivery status), metrics, and approvals.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use belt_server::webhooks::{RetryPolicy, verify};
use common::*;
use serde_json::{Value, json};

/// What the test receiver got: (headers, body).
type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver that answers 500 to its first request and 200 afterwards.
async fn receiver() -> (String, Received) {
    receiver_failing_first(1).await
}

/// A receiver that answers 500 to its first `failures` requests and 200 afterwards.
async fn receiver_failing_first(failures: usize) -> (String, Received) {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let g = g.clone();
            async move {
                let mut got = g.lock().unwrap();
                got.push((headers, body));
                if got.len() <= failures { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_after_a_500_and_report_their_deliveries() {
    let mut cfg = config();
    cfg.webhook_retry =
        RetryPolicy { attempts: 4, first_delay: Duration::from_millis(10), timeout: Duration::from_secs(5) };
    let server = TestServer::start(cfg, 0).await;
    let (url, got) = receiver().await;
    let c = client();
    let r = authed(c.post(server.url("/v1/webhooks")))
        .json(&json!({"url": url, "secret": "s3cret", "events": ["run_started", "run_finished"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let hook: Value = r.json().await.unwrap();
    assert!(hook["secret"].is_null(), "a given secret is not echoed");

    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Hooked", "agents": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = a["run_id"].as_str().unwrap().to_string();
    wait_result(&server, &id).await;
    // Two events, the first sent twice (500, then 200).
    let mut list = Value::Null;
    for _ in 0..200 {
        list = authed(c.get(server.url("/v1/webhooks"))).send().await.unwrap().json().await.unwrap();
        if list["webhooks"][0]["delivered"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = &list["webhooks"][0];
    assert_eq!(
        (h["delivered"].as_u64(), h["retries"].as_u64(), h["failed"].as_u64()),
        (Some(2), Some(1), Some(0)),
        "{h}"
    );
    assert_eq!(h["pending"], 0);
    assert_eq!(h["last"]["event_type"], "run_finished");
    assert_eq!(h["last"]["status"], 200);

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    let types: Vec<String> =
        got.iter().map(|(h, _)| h["x-belt-event"].to_str().unwrap().to_string()).collect();
    assert_eq!(types, ["run_started", "run_started", "run_finished"]);
    // The retry is the same delivery with the same body.
    assert_eq!(got[0].0["x-belt-delivery"], got[1].0["x-belt-delivery"]);
    assert_eq!(got[0].1, got[1].1);
    for (headers, body) in &got {
        let sig = headers["x-belt-signature"].to_str().unwrap();
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64, "{sig}");
        assert!(verify("s3cret", body, sig), "signature of {}", String::from_utf8_lossy(body));
        assert!(!verify("wrong", body, sig));
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["run_id"], id.as_str());
    }

    // Bad registrations and removal.
    let r = authed(c.post(server.url("/v1/webhooks"))).json(&json!({"url": "ftp://x"})).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let r = authed(c.post(server.url("/v1/webhooks")))
        .json(&json!({"url": url, "events": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let generated: Value = authed(c.post(server.url("/v1/webhooks")))
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(generated["secret"].as_str().unwrap().len(), 48, "a generated secret is returned once");
    let r = authed(c.delete(server.url(&format!("/v1/webhooks/{}", generated["id"].as_str().unwrap()))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = authed(c.delete(server.url("/v1/webhooks/nope"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_steps_tokens_and_latencies() {
    let server = TestServer::start(config(), 1).await;
    let c = client();
    let r = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    for task in ["one", "two"] {
        let a: Value = authed(c.post(server.url("/v1/runs")))
            .json(&json!({"task": task, "agents": 12}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        wait_result(&server, a["run_id"].as_str().unwrap()).await;
    }
    let r = authed(c.get(server.url("/metrics"))).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("belt_runs_total{status=\"completed\"}"), 2.0);
    assert_eq!(value("belt_steps_total{tier=\"worker\",outcome=\"completed\"}"), 24.0);
    assert_eq!(value("belt_steps_total{tier=\"executive\",outcome=\"completed\"}"), 2.0);
    assert_eq!(
        value("belt_llm_calls_total"),
        32.0,
        "12 workers, 2 synthesizers, an executive, a decomposer, twice"
    );
    assert!(value("belt_tokens_total{direction=\"output\"}") > 0.0);
    assert!(value("belt_cost_usd_total") >= 0.0);
    assert_eq!(value("belt_step_duration_seconds_count{tier=\"worker\"}"), 24.0);
    assert_eq!(value("belt_run_duration_seconds_count"), 2.0);
    assert_eq!(value("belt_runs_running"), 0.0);
    assert!(text.contains("# TYPE belt_breaker_open gauge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_review_waits_for_an_approval_over_http() {
    let server = TestServer::start(config(), 1).await;
    let c = client();
    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Needs a nod", "agents": 3, "review_plan": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = a["run_id"].as_str().unwrap().to_string();
    let mut open = Value::Null;
    for _ in 0..200 {
        let list: Value =
            authed(c.get(server.url("/v1/approvals"))).send().await.unwrap().json().await.unwrap();
        if let Some(first) = list["approvals"].as_array().and_then(|a| a.first()) {
            open = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open["run_id"], id.as_str());
    assert_eq!(open["kind"], "approval");
    let full_id = open["id"].as_str().unwrap().to_string();
    assert_eq!(full_id, format!("{id}:hitl/plan"));
    // The run waits: still running, no worker started.
    let view: Value =
        authed(c.get(server.url(&format!("/v1/runs/{id}")))).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["status"], "running");

    let answer = |request: &str, body: Value| {
        authed(c.post(server.url(&format!("/v1/runs/{id}/approvals/{request}")))).json(&body).send()
    };
    let r = answer("hitl%2Fnope", json!({"approve": true})).await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains(&full_id), "the open ids are listed");
    let r = answer("hitl%2Fplan", json!({"select": 0})).await.unwrap();
    assert_eq!(r.status(), 422, "wrong kind of answer");
    let r = answer("hitl%2Fplan", json!({"approve": "yes"})).await.unwrap();
    assert_eq!(r.status(), 422);
    let r = authed(c.post(server.url("/v1/runs/nope/approvals/x")))
        .json(&json!({"approve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = answer(&full_id.replace('/', "%2F"), json!({"approve": true})).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    let view = wait_result(&server, &id).await;
    assert_eq!(view["result"]["status"], "completed");
    let list: Value = authed(c.get(server.url("/v1/approvals"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["approvals"], json!([]));
}

/// A question opening and closing is an event: a webhook learns of it without polling
/// `/v1/approvals`, and SSE names each event's type in its `event:` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_opening_and_closing_reaches_webhooks_and_sse() {
    let server = TestServer::start(config(), 1).await;
    let (url, got) = receiver_failing_first(0).await;
    let c = client();
    let r = authed(c.post(server.url("/v1/webhooks")))
        .json(&json!({"url": url, "events": ["human_requested", "human_answered"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Needs a nod", "agents": 2, "review_plan": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = a["run_id"].as_str().unwrap().to_string();
    // The webhook says what is asked, and under which id to answer it.
    let delivered = |n: usize| {
        let got = got.clone();
        async move {
            for _ in 0..500 {
                let bodies: Vec<Value> =
                    got.lock().unwrap().iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
                if bodies.len() >= n {
                    return bodies;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("fewer than {n} deliveries")
        }
    };
    let asked = delivered(1).await.remove(0);
    assert_eq!(asked["type"], "human_requested");
    assert_eq!(asked["run_id"], id.as_str());
    assert_eq!(asked["step"], "hitl/plan");
    assert_eq!(asked["question"]["kind"], "approval");
    assert_eq!(asked["default"], json!({"approve": false}));
    assert!(asked["prompt"].as_str().unwrap().contains("Needs a nod"), "{asked}");
    let request = asked["id"].as_str().unwrap().replace('/', "%2F");
    let r = authed(c.post(server.url(&format!("/v1/runs/{id}/approvals/{request}"))))
        .json(&json!({"approve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered = delivered(2).await.remove(1);
    assert_eq!(answered["type"], "human_answered");
    assert_eq!((&answered["answer"], &answered["by"]), (&json!({"approve": true}), &json!("human")));
    assert_eq!(wait_result(&server, &id).await["result"]["status"], "completed");

    // The run's stream, replayed: every event's `event:` is its type, the question's among them.
    let mut sse =
        SseReader::new(authed(c.get(server.url(&format!("/v1/runs/{id}/events")))).send().await.unwrap());
    let mut types = Vec::new();
    while let Some(e) = sse.next().await {
        assert_eq!(e.event.as_deref(), e.data["type"].as_str());
        types.push(e.event.unwrap());
    }
    let at = |t: &str| types.iter().position(|x| x == t).unwrap_or_else(|| panic!("no {t} in {types:?}"));
    assert!(at("plan_ready") < at("human_requested") && at("human_requested") < at("human_answered"));
    assert!(at("human_answered") < at("tier_started"), "the workers start once approved: {types:?}");
    assert_eq!(types.last().map(String::as_str), Some("run_finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_private_addresses_are_refused_unless_allowed() {
    let mut cfg = config();
    cfg.webhook_private_targets = false;
    let server = TestServer::start(cfg, 0).await;
    let c = client();
    for url in [
        "http://127.0.0.1:9/h",
        "http://169.254.169.254/latest",
        "http://localhost:80/",
        "http://[::1]/",
        "http://10.0.0.7/",
    ] {
        let r = authed(c.post(server.url("/v1/webhooks"))).json(&json!({"url": url})).send().await.unwrap();
        assert_eq!(r.status(), 422, "{url}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains("--allow-private-webhooks"), "{url}: {v}");
    }
    // A public name is accepted at registration; its addresses are checked at each delivery.
    let r = authed(c.post(server.url("/v1/webhooks")))
        .json(&json!({"url": "https://hooks.example.com/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

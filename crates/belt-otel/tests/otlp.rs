//! belt's spans through a real OTLP/HTTP receiver on 127.0.0.1, decoded with the official
//! `opentelemetry-proto` definitions: the span tree of a 12-agent cascade with a retry and
//! a tool call, contents only when opted in, a resumed run in the same trace, and a dead or
//! hung collector that neither fails nor slows a run.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use belt_core::llm::ToolCall;
use belt_core::testing::ScriptedProvider;
use belt_core::tools::{Tool, Toolbox, Tools};
use belt_core::{Cascade, LlmError, MemoryStore, Policies, RunOptions, RunResult, RunStatus, RunStore, Task};
use belt_otel::{Exporter, OtelConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A collector: every span POSTed to /v1/traces, decoded, and the service names seen.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    headers: Arc<Mutex<Vec<String>>>,
}

async fn receiver() -> (String, Received) {
    let got = Received::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                if let Some(v) = headers.get("x-team") {
                    state.headers.lock().unwrap().push(v.to_str().unwrap().to_string());
                }
                let request = ExportTraceServiceRequest::decode(body).expect("a valid OTLP request");
                for rs in request.resource_spans {
                    for kv in rs.resource.unwrap().attributes {
                        if kv.key == "service.name" {
                            state.services.lock().unwrap().push(text(kv.value.unwrap().value));
                        }
                    }
                    for ss in rs.scope_spans {
                        assert_eq!(ss.scope.unwrap().name, "belt");
                        state.spans.lock().unwrap().extend(ss.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn text(v: Option<Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s,
        other => panic!("not a string: {other:?}"),
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn s<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(Value::StringValue(v)) => v,
        other => panic!("span {} has no string {key}: {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::IntValue(v)) => *v,
        other => panic!("span {} has no int {key}: {other:?}", span.name),
    }
}

fn quick() -> Policies {
    let mut p = Policies::default();
    p.update_all(|s| {
        s.backoff_base = Duration::from_millis(1);
        s.backoff_max = Duration::from_millis(5);
    });
    p
}

#[derive(schemars::JsonSchema, serde::Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

/// A 12-agent cascade on the scripted provider: worker/002's first call is refused with a
/// 429 (then retried), synth/1/001's first call fails with a 500, worker/003 calls `add`.
fn cascade_options(store: &Arc<dyn RunStore>) -> RunOptions {
    let add = Tool::new("add", "Add two integers.", |x: Add| async move { Ok::<_, String>(x.a + x.b) });
    let call =
        ToolCall { id: "call-7".into(), name: "add".into(), arguments: serde_json::json!({"a": 2, "b": 3}) };
    let limited = LlmError::RateLimited { retry_after: None, message: "slow down".into() };
    let provider = ScriptedProvider::new("t")
        .fail_first("worker/002", 1, limited)
        .fail_first("synth/1/001", 1, LlmError::Server { status: 500, message: "oops".into() })
        .tool_calls_for("worker/003", 1, vec![call]);
    let mut o = RunOptions::default()
        .with_provider(Arc::new(provider))
        .with_tools(Toolbox::new().with_workers(Tools::new().with(add)))
        .with_store(store.clone());
    o.policies = quick();
    o
}

async fn traced(options: RunOptions, config: OtelConfig, store: &Arc<dyn RunStore>) -> (RunResult, Exporter) {
    let exporter = Exporter::start(config).unwrap();
    let mut handle =
        belt_core::run(Cascade::new(12, "t/m"), Task::new("AI in healthcare"), options).await.unwrap();
    let pump = exporter.observe(handle.events().unwrap(), Some(store.clone()));
    let result = handle.result().await;
    pump.await.unwrap();
    exporter.shutdown().await;
    (result, exporter)
}

fn config(url: &str) -> OtelConfig {
    let mut c = OtelConfig::new(url).unwrap();
    c.flush_every = Duration::from_millis(50);
    c
}

fn by_name<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = by_name(spans, name);
    assert_eq!(found.len(), 1, "spans named {name}: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    found[0]
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.parent_span_id == parent.span_id).collect()
}

fn agent<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    one(spans, &format!("invoke_agent {name}"))
}

#[tokio::test]
async fn a_cascade_of_twelve_is_one_trace_of_agents_attempts_and_tool_calls() {
    let (url, got) = receiver().await;
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let mut c = config(&url);
    c.headers = vec![("x-team".into(), "red".into())];
    c.service_name = "agents-prod".into();
    let (r, exporter) = traced(cascade_options(&store), c, &store).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let spans = got.spans.lock().unwrap().clone();
    assert_eq!(exporter.stats().dropped, 0);
    assert_eq!(exporter.stats().exported, spans.len() as u64);
    assert!(got.services.lock().unwrap().iter().all(|s| s == "agents-prod"));
    assert!(
        got.headers.lock().unwrap().iter().all(|h| h == "red") && !got.headers.lock().unwrap().is_empty()
    );

    // One trace, derived from the run id; one root.
    let trace = belt_otel::trace_id(&r.run_id).to_vec();
    assert!(spans.iter().all(|s| s.trace_id == trace));
    let ids: std::collections::HashSet<_> = spans.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");
    for span in &spans {
        let mut keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "span {} names an attribute twice", span.name);
    }
    let roots: Vec<_> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1);
    let root = roots[0];
    assert_eq!(root.name, "invoke_workflow cascade");
    assert_eq!(s(root, "gen_ai.operation.name"), "invoke_workflow");
    assert_eq!(s(root, "belt.run_id"), r.run_id);
    assert_eq!(int(root, "belt.agents"), 12);
    assert_eq!(root.status.as_ref().unwrap().code, 1, "ok");
    assert!(
        spans.iter().all(|s| s.parent_span_id.is_empty() || ids.contains(&s.parent_span_id)),
        "every parent is sent"
    );

    // The plan, and its call.
    let plan = one(&spans, "plan");
    assert_eq!(plan.parent_span_id, root.span_id);
    let plan_calls = children(&spans, plan);
    assert_eq!(plan_calls.len(), 1);
    assert_eq!(plan_calls[0].name, "chat m");

    // Fifteen agents under the root: 12 workers, 2 synthesizers, the executive.
    let agents = spans.iter().filter(|s| s.name.starts_with("invoke_agent ")).collect::<Vec<_>>();
    assert_eq!(agents.len(), 15);
    assert!(agents.iter().all(|a| a.parent_span_id == root.span_id));
    assert_eq!(s(agent(&spans, "executive"), "belt.tier"), "executive");
    assert_eq!(s(agent(&spans, "synth/1/002"), "gen_ai.agent.name"), "synth/1/002");

    // A plain agent's retry: two chat spans, the first an error.
    let synth = agent(&spans, "synth/1/001");
    let mut calls = children(&spans, synth);
    calls.sort_by_key(|c| int(c, "belt.attempt"));
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(s(calls[0], "error.type"), "server_error");
    assert_eq!(calls[0].status.as_ref().unwrap().code, 2);
    assert!(attr(calls[1], "error.type").is_none());
    assert_eq!(s(calls[1], "gen_ai.provider.name"), "t");
    assert_eq!(s(calls[1], "gen_ai.request.model"), "m");
    assert_eq!(s(calls[1], "gen_ai.response.model"), "m");
    assert!(
        int(calls[1], "gen_ai.usage.input_tokens") > 0 && int(calls[1], "gen_ai.usage.output_tokens") > 0
    );
    assert!(calls[0].end_time_unix_nano <= calls[1].start_time_unix_nano);
    assert_eq!(int(synth, "belt.attempts"), 2);
    assert!(matches!(attr(synth, "belt.cost_usd"), Some(Value::DoubleValue(c)) if *c > 0.0));

    // A worker with tools: its round's retry, under the agent.
    let w2 = agent(&spans, "worker/002");
    let w2_calls = children(&spans, w2);
    assert_eq!(w2_calls.len(), 2);
    assert!(w2_calls.iter().any(|c| {
        attr(c, "error.type").is_some_and(|v| matches!(v, Value::StringValue(k) if k == "rate_limited"))
    }));
    assert!(w2_calls.iter().all(|c| s(c, "belt.step") == "worker/002/round/01"));

    // The tool call: a round that calls `add`, the tool, the round that reads its result.
    let w3 = agent(&spans, "worker/003");
    let mut kids: Vec<_> =
        children(&spans, w3).into_iter().map(|c| (s(c, "belt.step").to_string(), c.name.clone())).collect();
    kids.sort();
    assert_eq!(
        kids,
        vec![
            ("worker/003/round/01".into(), "chat m".into()),
            ("worker/003/round/01/tool/1".into(), "execute_tool add".into()),
            ("worker/003/round/02".into(), "chat m".into()),
        ]
    );
    let tool = one(&spans, "execute_tool add");
    assert_eq!(s(tool, "gen_ai.operation.name"), "execute_tool");
    assert_eq!(s(tool, "gen_ai.tool.name"), "add");
    assert_eq!(s(tool, "gen_ai.tool.call.id"), "call-7-1", "the scripted provider numbers its calls");
    assert_eq!(int(w3, "belt.rounds"), 2);
    assert!(
        w3.start_time_unix_nano <= tool.start_time_unix_nano
            && tool.end_time_unix_nano <= w3.end_time_unix_nano
    );

    // No contents without the opt-in.
    for span in &spans {
        for key in [
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        ] {
            assert!(attr(span, key).is_none(), "{} has {key}", span.name);
        }
    }
}

#[tokio::test]
async fn contents_are_on_the_spans_only_when_opted_in() {
    let (url, got) = receiver().await;
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let (r, _) = traced(cascade_options(&store), config(&url).with_content(true), &store).await;
    assert_eq!(r.status, RunStatus::Completed);
    let spans = got.spans.lock().unwrap().clone();
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert!(s(root, "gen_ai.input.messages").contains("AI in healthcare"));
    let exec = agent(&spans, "executive");
    let out: serde_json::Value = serde_json::from_str(s(exec, "gen_ai.output.messages")).unwrap();
    assert_eq!(out[0]["role"], "assistant");
    assert!(out[0]["parts"][0]["content"].as_str().unwrap().contains("executive"));
    let tool = one(&spans, "execute_tool add");
    assert_eq!(s(tool, "gen_ai.tool.call.arguments"), r#"{"a":2,"b":3}"#);
    assert_eq!(s(tool, "gen_ai.tool.call.result"), "5");
}

#[tokio::test]
async fn a_resumed_run_is_in_the_same_trace_its_replayed_steps_marked_and_not_called() {
    let (url, got) = receiver().await;
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    // First segment: the executive fails every time, so the run ends without it.
    let provider = ScriptedProvider::new("t").always_fail("executive", LlmError::Auth("no".into()));
    let mut o = RunOptions::default().with_provider(Arc::new(provider)).with_store(store.clone());
    o.policies = quick();
    let (first, _) = traced(o, config(&url), &store).await;
    assert_ne!(first.status, RunStatus::Completed);
    let before = got.spans.lock().unwrap().len();

    // Second segment: the same run id, a provider that answers.
    let mut o =
        RunOptions::default().with_provider(Arc::new(ScriptedProvider::new("t"))).with_store(store.clone());
    o.policies = quick();
    o.run_id = Some(first.run_id.clone());
    let (second, _) = traced(o, config(&url), &store).await;
    assert_eq!(second.status, RunStatus::Completed, "{}", second.stop_reason);
    let all = got.spans.lock().unwrap().clone();
    let spans = &all[before..];
    let trace = belt_otel::trace_id(&first.run_id).to_vec();
    assert!(all.iter().all(|s| s.trace_id == trace), "both segments in one trace");
    let roots: Vec<_> = all.iter().filter(|s| s.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 2);
    let resumed = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert_eq!(resumed.links.len(), 1);
    assert_eq!(resumed.links[0].span_id, roots[0].span_id, "linked to the first segment's root");
    // Workers are replayed: marked, no call under them; the executive is called.
    let w = agent(spans, "worker/001");
    assert!(matches!(attr(w, "belt.replayed"), Some(Value::BoolValue(true))));
    assert!(children(spans, w).is_empty());
    let exec = agent(spans, "executive");
    assert!(attr(exec, "belt.replayed").is_none());
    assert_eq!(children(spans, exec).len(), 1);
}

#[tokio::test]
async fn a_run_given_the_callers_trace_context_is_a_child_of_the_callers_span() {
    let (url, got) = receiver().await;
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let mut o =
        RunOptions::default().with_provider(Arc::new(ScriptedProvider::new("t"))).with_store(store.clone());
    o.policies = quick();
    o.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let (result, _) = traced(o, config(&url), &store).await;
    assert_eq!(result.status, RunStatus::Completed);
    let spans = got.spans.lock().unwrap().clone();
    let caller_trace = hex("4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(
        spans.len() > 12 && spans.iter().all(|s| s.trace_id == caller_trace),
        "all in the caller's trace"
    );
    let root = one(&spans, "invoke_workflow cascade");
    assert_eq!(root.parent_span_id, hex("00f067aa0ba902b7"), "under the caller's span");
    assert!(spans.iter().all(|s| !s.parent_span_id.is_empty()), "no other root");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[tokio::test]
async fn a_dead_collector_neither_fails_nor_slows_the_run() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let started = Instant::now();
    let (r, exporter) = traced(cascade_options(&store), config(&url), &store).await;
    assert_eq!(r.status, RunStatus::Completed);
    let stats = exporter.stats();
    assert_eq!(stats.exported, 0);
    assert!(stats.failed > 0, "{stats:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_hung_collector_costs_the_run_nothing_and_shutdown_at_most_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let mut c = config(&url);
    c.timeout = Duration::from_millis(300);
    let exporter = Exporter::start(c).unwrap();
    let started = Instant::now();
    let mut handle =
        belt_core::run(Cascade::new(12, "t/m"), Task::new("t"), cascade_options(&store)).await.unwrap();
    let pump = exporter.observe(handle.events().unwrap(), Some(store.clone()));
    let r = handle.result().await;
    let run_time = started.elapsed();
    assert_eq!(r.status, RunStatus::Completed);
    assert!(run_time < Duration::from_secs(3), "the run took {run_time:?}");
    pump.await.unwrap();
    let t = Instant::now();
    exporter.shutdown().await;
    assert!(t.elapsed() < Duration::from_secs(2), "shutdown took {:?}", t.elapsed());
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let (url, _got) = receiver().await;
    let mut c = config(&url);
    c.queue = 4;
    c.flush_every = Duration::from_secs(60);
    c.batch = 1000;
    let exporter = Exporter::start(c).unwrap();
    let span = belt_otel::proto::Span { name: belt_otel::proto::Name::op("x"), ..Default::default() };
    exporter.send(std::iter::repeat_n(span, 10));
    assert_eq!(exporter.stats().dropped, 6);
    exporter.shutdown().await;
    assert_eq!(exporter.stats().exported, 4);
}

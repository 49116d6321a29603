//! End-to-end tests of OpenTelemetry export through the real binary: `belt run` and
//! `belt serve` with `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` send each run as one
//! trace to an OTLP/HTTP receiver started here (decoding with the official
//! `opentelemetry-proto` definitions); contents only with `--otel-content`; a dead collector
//! is one warning and the run's exit code is unchanged; other protocols are refused. The
//! same metrics `/metrics` shows go to the receiver over OTLP too.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{Dir, belt, code, command, json, stderr, wait};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A collector on 127.0.0.1 (on a runtime of its own): spans and service names received.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    /// Each metrics request's metrics, in the order they came.
    metrics: Arc<Mutex<Vec<Vec<Metric>>>>,
    _runtime: tokio::runtime::Runtime,
}

fn receiver() -> Receiver {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let metrics: Arc<Mutex<Vec<Vec<Metric>>>> = Arc::default();
    let state = spans.clone();
    let metrics_state = metrics.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let state = state.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                for rs in request.resource_spans {
                    let service = rs
                        .resource
                        .unwrap()
                        .attributes
                        .into_iter()
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(kv.value.unwrap().value.as_ref()))
                        .unwrap();
                    for ss in rs.scope_spans {
                        state.lock().unwrap().extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let app = app.route(
        "/v1/metrics",
        axum::routing::post(move |body: Bytes| {
            let state = metrics_state.clone();
            async move {
                let request = ExportMetricsServiceRequest::decode(body).unwrap();
                let mut got = Vec::new();
                for rm in request.resource_metrics {
                    for sm in rm.scope_metrics {
                        assert_eq!(sm.scope.unwrap().name, "belt");
                        got.extend(sm.metrics);
                    }
                }
                state.lock().unwrap().push(got);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, spans, metrics, _runtime: runtime }
}

impl Receiver {
    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().iter().map(|(_, s)| s.clone()).collect()
    }
    /// The last metrics request's metric called `name`.
    fn last_metric(&self, name: &str) -> Option<Metric> {
        let requests = self.metrics.lock().unwrap();
        requests.last()?.iter().find(|m| m.name == name).cloned()
    }
    fn services(&self) -> Vec<String> {
        self.spans.lock().unwrap().iter().map(|(s, _)| s.clone()).collect()
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

/// A counter's value (a monotonic sum's one point).
fn sum_value(m: &Metric) -> f64 {
    let Some(Data::Sum(sum)) = &m.data else { panic!("not a sum: {m:?}") };
    assert!(sum.is_monotonic);
    match sum.data_points[0].value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        other => panic!("not a double: {other:?}"),
    }
}

fn count(spans: &[Span], prefix: &str) -> usize {
    spans.iter().filter(|s| s.name.starts_with(prefix)).count()
}

#[test]
fn belt_run_sends_the_run_as_one_trace_with_the_flag() {
    let collector = receiver();
    let dir = Dir::new("otel-run");
    let out = belt(
        &dir,
        &["run", "Plan a city park", "--agents", "12", "--json", "--otlp-endpoint", &collector.url],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let run_id = json(&out)["run_id"].as_str().unwrap().to_string();
    let spans = collector.spans();
    // Sent before the process exited: nothing to wait for.
    let trace = belt_otel::trace_id(&run_id).to_vec();
    assert!(spans.iter().all(|s| s.trace_id == trace));
    assert!(collector.services().iter().all(|s| s == "belt"));
    assert_eq!(count(&spans, "invoke_workflow cascade"), 1);
    assert_eq!(count(&spans, "plan"), 1);
    assert_eq!(count(&spans, "invoke_agent "), 15, "12 workers, 2 synthesizers, the executive");
    assert_eq!(count(&spans, "chat "), 16);
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert_eq!(text(attr(root, "belt.run_id")), run_id);
    assert!(attr(root, "gen_ai.input.messages").is_none(), "no contents without --otel-content");
    let chat = spans.iter().find(|s| s.name.starts_with("chat ")).unwrap();
    assert_eq!(text(attr(chat, "gen_ai.provider.name")), "simulated");
    assert!(attr(chat, "gen_ai.output.messages").is_none());
    // The run's metrics, sent when the process stopped.
    let calls = collector.last_metric("belt_llm_calls").expect("metrics over OTLP");
    assert_eq!(sum_value(&calls), 16.0, "the decomposition, 12 workers, 2 synthesizers, the executive");
    let latency = collector.last_metric("belt_llm_call_duration_seconds").unwrap();
    let Some(Data::Histogram(h)) = latency.data else { panic!("a histogram: {latency:?}") };
    let point = &h.data_points[0];
    assert_eq!(point.count, 16);
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), 16);
    let labels: Vec<_> = point
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), text(kv.value.as_ref().unwrap().value.as_ref())))
        .collect();
    assert!(labels.contains(&("provider", "simulated".to_string())), "{labels:?}");
    assert_eq!(latency.unit, "s");
}

#[test]
fn the_standard_variables_configure_export_and_contents_are_opt_in() {
    let collector = receiver();
    let dir = Dir::new("otel-env");
    let mut cmd = command(&dir, &["run", "Plan a city park", "--agents", "12", "--otel-content"], None);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url).env("OTEL_SERVICE_NAME", "parks");
    let out = wait(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let spans = collector.spans();
    assert!(!spans.is_empty());
    assert!(collector.services().iter().all(|s| s == "parks"));
    let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
    assert!(text(attr(root, "gen_ai.input.messages")).contains("Plan a city park"));
    let exec = spans.iter().find(|s| s.name == "invoke_agent executive").unwrap();
    assert!(text(attr(exec, "gen_ai.output.messages")).contains("assistant"));
}

#[test]
fn a_dead_collector_is_one_warning_and_the_run_succeeds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = Dir::new("otel-dead");
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}");
    let out = belt(&dir, &["run", "Plan a city park", "--agents", "12", "--otlp-endpoint", &url], None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("cannot send spans").count(), 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_bad_traceparent_is_refused_with_the_format() {
    let dir = Dir::new("otel-traceparent");
    let mut cmd = command(&dir, &["run", "Plan a city park", "--agents", "2"], None);
    cmd.env("TRACEPARENT", "00-abc-01");
    let out = wait(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("00-<32 hex digits>"), "{}", stderr(&out));
}

#[test]
fn other_protocols_are_refused_with_what_to_do() {
    let dir = Dir::new("otel-grpc");
    let mut cmd = command(&dir, &["run", "Plan a city park", "--agents", "2"], None);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9").env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let out = wait(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("http/protobuf"), "{}", stderr(&out));
}

#[test]
fn belt_serve_sends_its_runs() {
    let collector = receiver();
    let mut s = common::serve::start_with_env(
        "otel",
        &["--addr", "127.0.0.1:0", "--otlp-endpoint", &collector.url],
        None,
        &[("OTEL_METRIC_EXPORT_INTERVAL", std::path::Path::new("300"))],
    );
    s.wait_listening();
    let token = std::fs::read_to_string(s.home.join("api-token")).unwrap().trim().to_string();
    let body = r#"{"task": "Plan a city park", "agents": 3}"#;
    // The caller's trace context, as a traced HTTP client sends it.
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (status, answer) = common::serve::http_with(
        &s.base,
        "POST",
        "/v1/runs",
        Some(&token),
        Some(body),
        &[("traceparent", caller)],
    )
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    let run_id =
        serde_json::from_str::<serde_json::Value>(&answer).unwrap()["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = collector.spans();
        if let Some(root) = spans.iter().find(|s| s.name.starts_with("invoke_workflow")) {
            assert_eq!(text(attr(root, "belt.run_id")), run_id);
            assert_eq!(
                root.parent_span_id,
                [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31],
                "under the caller's span"
            );
            assert_eq!(root.trace_id[..2], [0x0a, 0xf7], "in the caller's trace");
            for worker in ["worker/001", "worker/002", "worker/003"] {
                assert_eq!(count(&spans, &format!("invoke_agent {worker}")), 1, "{spans:?}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "no root span within 30 s: {spans:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The server's metrics: over OTLP every OTEL_METRIC_EXPORT_INTERVAL, the same on /metrics.
    loop {
        let runs = collector.last_metric("belt_runs").map(|m| sum_value(&m)).unwrap_or(0.0);
        let queued = collector.last_metric("belt_runs_queued");
        if runs == 1.0 && queued.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no metrics with the finished run within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, text) = common::serve::http(&s.base, "GET", "/metrics", Some(&token), None).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("belt_runs_total{status=\"completed\"} 1\n"), "{text}");
    assert!(text.contains("# TYPE belt_llm_call_duration_seconds histogram"), "{text}");
    let calls = "belt_llm_call_duration_seconds_count{provider=\"simulated\",model=\"default\"} 4\n";
    assert!(text.contains(calls), "the decomposition and 3 workers (fewer than 5 need no synthesis): {text}");
    assert!(text.contains("belt_llm_call_tokens_bucket{provider=\"simulated\",model=\"default\",direction=\"output\",le=\"+Inf\"} 4\n"), "{text}");
    assert!(text.contains("belt_runs_queued 0\n"), "{text}");
}

//! MCP over streamable HTTP (`/mcp`) with the rmcp client: tools, progress, resources,
//! the bearer token and the Host allow list. (stdio is tested against the real binary in
//! belt-cli's tests.)
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use rmcp::model::{
    CallToolRequestParams, ProgressNotificationParam, ReadResourceRequestParams, ResourceContents,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ProgressNotificationParam>>>);

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.0.lock().unwrap().push(params);
    }
}

async fn connect(server: &TestServer, token: &str) -> Result<RunningService<RoleClient, Recorder>, String> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.url("/mcp")).auth_header(token);
    let transport = StreamableHttpClientTransport::from_config(config);
    Recorder::default().serve(transport).await.map_err(|e| e.to_string())
}

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn text(result: &rmcp::model::CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_lists_tools_runs_a_cascade_with_progress_and_serves_reports() {
    let server = TestServer::start(config(), 2).await;
    let client = connect(&server, TOKEN).await.expect("connect with the token");
    let info = client.peer_info().expect("initialized");
    // The newest revision negotiated by an initialize handshake (2026-07-28 has none).
    assert_eq!(info.protocol_version, rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE);
    assert!(info.capabilities.tools.is_some() && info.capabilities.resources.is_some());
    // The server says it is belt, and which version, with instructions for the model.
    let server_info = info.server_info.as_ref().expect("serverInfo");
    assert_eq!(server_info.name, "belt");
    assert_eq!(server_info.version, env!("CARGO_PKG_VERSION"));
    assert!(info.instructions.as_deref().unwrap_or_default().contains("run_workflow"));

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for name in ["run_workflow", "start_run", "get_run", "cancel_run", "list_runs", "list_patterns"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let run_workflow = tools.iter().find(|t| t.name == "run_workflow").unwrap();
    let props = &run_workflow.input_schema["properties"];
    for field in ["task", "pattern", "agents", "model", "budget_usd", "workflow"] {
        let d = props[field]["description"].as_str().unwrap_or_default();
        assert!(d.len() > 20, "{field} needs a description an LLM can use: {d:?}");
    }
    assert!(run_workflow.description.as_deref().unwrap().contains("progress"));

    let result = client
        .call_tool(
            CallToolRequestParams::new("run_workflow")
                .with_arguments(args(json!({"task": "Design a rooftop garden", "agents": 12}))),
        )
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let out = text(&result);
    let summary: Value = serde_json::from_str(out.rsplit("summary: ").next().unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["agents"], 16, "12 workers, 2 synthesizers, an executive, the decomposer");
    assert!(summary["simulated"].as_bool().unwrap());
    let run_id = summary["run_id"].as_str().unwrap().to_string();
    // Progress came as agents finished, counting up to the total. (The client handles
    // notifications on their own tasks: the last may land just after the result.)
    let mut progress = Vec::new();
    for _ in 0..200 {
        progress = client.service().0.lock().unwrap().clone();
        if progress.len() >= 16 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(progress.len() >= 15, "{} progress notifications", progress.len());
    // 12 workers, 2 synthesizers, an executive and the decomposer: 16 steps.
    let most = progress.iter().map(|p| p.progress).fold(0.0, f64::max);
    assert_eq!(most, 16.0, "{progress:?}");
    assert!(progress.iter().any(|p| p.total == Some(16.0)), "{progress:?}");

    // The report is a resource.
    let resources = client.list_all_resources().await.unwrap();
    let uri = format!("belt://runs/{run_id}/report.md");
    assert!(resources.iter().any(|r| r.uri == uri), "{resources:?}");
    let read = client.read_resource(ReadResourceRequestParams::new(uri.clone())).await.unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text, mime_type, .. } => {
            assert!(text.starts_with("# Design a rooftop garden"), "{text}");
            assert_eq!(mime_type.as_deref(), Some("text/markdown"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        client.read_resource(ReadResourceRequestParams::new("belt://runs/nope/report.md")).await.is_err()
    );

    // start_run returns at once; get_run follows it to the end.
    let started = client
        .call_tool(
            CallToolRequestParams::new("start_run")
                .with_arguments(args(json!({"task": "Second", "agents": 3}))),
        )
        .await
        .unwrap();
    let started: Value = serde_json::from_str(&text(&started)).unwrap();
    let id = started["run_id"].as_str().unwrap().to_string();
    let mut finished = Value::Null;
    for _ in 0..400 {
        let got = client
            .call_tool(CallToolRequestParams::new("get_run").with_arguments(args(json!({"run_id": id}))))
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text(&got)).unwrap();
        if !v["summary"].is_null() {
            finished = v;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(finished["summary"]["status"], "completed");
    assert!(finished["final_output"].is_string());

    let listed = client.call_tool(CallToolRequestParams::new("list_runs")).await.unwrap();
    let listed: Value = serde_json::from_str(&text(&listed)).unwrap();
    assert_eq!(listed["runs"].as_array().unwrap().len(), 2);
    let patterns = client.call_tool(CallToolRequestParams::new("list_patterns")).await.unwrap();
    assert!(text(&patterns).contains("cascade"));
    // Bad input is an error that says what is wrong.
    let bad = client
        .call_tool(CallToolRequestParams::new("cancel_run").with_arguments(args(json!({"run_id": "nope"}))))
        .await;
    // A tool that cannot do what it is asked answers with a tool error the model can read,
    // in MCP's words (not HTTP advice).
    let bad = bad.expect("a tool result, not a protocol error");
    assert_eq!(bad.is_error, Some(true));
    assert!(
        text(&bad).contains("no run has the id `nope`") && text(&bad).contains("list_runs"),
        "{}",
        text(&bad)
    );
    assert!(!text(&bad).contains("GET /v1"), "{}", text(&bad));
    let empty = client
        .call_tool(CallToolRequestParams::new("start_run").with_arguments(args(json!({"task": " "}))))
        .await
        .expect("a tool result");
    assert_eq!(empty.is_error, Some(true));
    assert!(text(&empty).contains("task is empty"), "{}", text(&empty));
    let bad = client
        .call_tool(
            CallToolRequestParams::new("start_run").with_arguments(args(json!({"task": "x", "agentz": 1}))),
        )
        .await;
    assert!(format!("{bad:?}").contains("agentz"), "{bad:?}");
    client.cancel().await.unwrap();
}

/// A pattern's own events (`iterative`'s `judge_verdict`) come as MCP progress too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patterns_own_events_arrive_as_progress_messages() {
    let server = TestServer::start(config(), 1).await;
    let client = connect(&server, TOKEN).await.expect("connect");
    let result = client
        .call_tool(
            CallToolRequestParams::new("run_workflow")
                .with_arguments(args(json!({"task": "A haiku about rivers", "pattern": "iterative"}))),
        )
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let mut verdicts = Vec::new();
    for _ in 0..200 {
        let progress = client.service().0.lock().unwrap().clone();
        verdicts = progress
            .into_iter()
            .filter_map(|p| p.message)
            .filter(|m| m.starts_with("judge_verdict: "))
            .collect();
        if !verdicts.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let first: Value =
        serde_json::from_str(verdicts.first().expect("a verdict").trim_start_matches("judge_verdict: "))
            .unwrap();
    assert_eq!(first["iteration"], 1);
    assert_eq!(first["judge"], "refine/01/judge");
    assert!(first["accepted"].is_boolean(), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_needs_the_token_and_an_allowed_host() {
    let server = TestServer::start(config(), 0).await;
    assert!(connect(&server, "wrong-token").await.is_err());
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let c = client();
    let post = |host: Option<&str>| {
        let mut b = authed(c.post(server.url("/mcp")))
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 200);
    // A DNS-rebinding page would send its own host name.
    let r = post(Some("evil.example")).await.unwrap();
    assert_eq!(r.status(), 403, "{:?}", r.text().await);
    // A page of another site, even on a loopback Host: refused by its Origin.
    let with_origin = |origin: &'static str| {
        authed(c.post(server.url("/mcp")))
            .header("accept", "application/json, text/event-stream")
            .header("origin", origin)
            .json(&init)
            .send()
    };
    let r = with_origin("https://evil.example").await.unwrap();
    assert_eq!(r.status(), 403, "{:?}", r.text().await);
    // The server's own pages may.
    assert_eq!(with_origin("http://127.0.0.1:7700").await.unwrap().status(), 200);
}

/// Ending a session with DELETE gets a 2xx a client's transport takes as done (the Python
/// SDK reports anything but 200 or 204 as a failed termination).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_with_delete_is_answered_as_clients_expect() {
    let server = TestServer::start(config(), 0).await;
    let c = client();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = authed(c.post(server.url("/mcp")))
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let r = authed(c.delete(server.url("/mcp"))).header("mcp-session-id", &session).send().await.unwrap();
    assert!(matches!(r.status().as_u16(), 200 | 204), "DELETE answered {}", r.status());
}

//! An orchestrator a program registers is a pattern of the HTTP API and its own MCP tool: the
//! example program `review_server`'s registration, called over HTTP and over MCP.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

#[allow(dead_code)] // its `main` serves; the test takes its registration
#[path = "../examples/review_server.rs"]
mod review_server;

use std::sync::{Arc, Mutex};

use common::*;
use rmcp::model::{CallToolRequestParams, ProgressNotificationParam};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

async fn review_server() -> TestServer {
    let store = Arc::new(belt_core::MemoryStore::new());
    TestServer::with_setup(config(), 1, store, |server| review_server::register(server).unwrap()).await
}

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

async fn connect(server: &TestServer) -> RunningService<RoleClient, Recorder> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.url("/mcp")).auth_header(TOKEN);
    Recorder::default().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap()
}

fn text(result: &rmcp::model::CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_orchestrator_runs_over_http_with_its_args_and_speaks_in_its_events() {
    let server = review_server().await;
    let c = client();
    // Listed with the library, with the schema of its arguments and its MCP tool.
    let patterns: Value =
        authed(c.get(server.url("/v1/patterns"))).send().await.unwrap().json().await.unwrap();
    let review = patterns["patterns"].as_array().unwrap().iter().find(|p| p["name"] == "review").unwrap();
    assert_eq!(review["mcp_tool"], "orchestrate_review");
    assert!(review["description"].as_str().unwrap().contains("reviewers"));
    assert_eq!(review["args_schema"]["properties"]["focus"]["type"], "array");
    assert!(patterns["patterns"].as_array().unwrap().iter().any(|p| p["name"] == "cascade"));

    // Its arguments are checked when the run is prepared, with the factory's own message too.
    for (args, says) in [
        (json!({}), "missing field `focus`"),
        (json!({"focus": ["risks"], "tone": "kind"}), "unknown field `tone`"),
        (json!({"focus": [" "]}), "name at least one thing to review"),
    ] {
        let r = authed(c.post(server.url("/v1/runs")))
            .json(&json!({"task": "Text", "pattern": "review", "args": args}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let body = r.text().await.unwrap();
        assert!(body.contains("args of pattern `review`") && body.contains(says), "{body}");
    }
    // The library's patterns take no args.
    let r = authed(c.post(server.url("/v1/runs")))
        .json(&json!({"task": "Text", "args": {"focus": ["x"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("`cascade` takes none") && body.contains("registered here: review"), "{body}");

    let a: Value = authed(c.post(server.url("/v1/runs")))
        .json(
            &json!({"task": "We launch in May.", "pattern": "review", "args": {"focus": ["risks", "costs"]}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = a["run_id"].as_str().unwrap().to_string();
    let view = wait_result(&server, &id).await;
    let result = &view["result"];
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["pattern"], "review");
    let steps: Vec<&str> =
        result["agents"].as_array().unwrap().iter().map(|a| a["step"].as_str().unwrap()).collect();
    assert_eq!(steps.iter().filter(|s| s.starts_with("worker/")).count(), 2, "{steps:?}");
    assert!(steps.contains(&"chair"), "{steps:?}");

    // It spoke: its own events are in the stream, as `custom` with their names.
    let mut sse =
        SseReader::new(authed(c.get(server.url(&format!("/v1/runs/{id}/events")))).send().await.unwrap());
    let mut custom = Vec::new();
    while let Some(e) = sse.next().await {
        if e.event.as_deref() == Some("custom") {
            custom.push(e.data);
        }
    }
    let names: Vec<&str> = custom.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"debug"));
    assert_eq!(names.iter().filter(|n| **n == "agent_progress").count(), 2, "{names:?}");
    assert_eq!(names.last(), Some(&"review_required"));
    assert_eq!(custom[0]["data"], json!({"reviewers": ["risks", "costs"]}));

    // The run is recorded with its args, so it resumes — in a process that registered `review`.
    let definition = server.store.get_run(&id).await.unwrap().unwrap().definition;
    let spec = belt_app::RunSpec::from_definition(&definition).unwrap();
    assert_eq!(spec.args, Some(json!({"focus": ["risks", "costs"]})));
    let plain = belt_app::App::new(belt_app::Config::default()).with_env(Arc::new(|_| None));
    let e = plain.prepare(&spec).err().unwrap().to_string();
    assert!(e.contains("unknown pattern `review`"), "{e}");
    assert!(e.contains("runs, and resumes, only in a process that registered it"), "{e}");
    let again = belt_server::Server::new(config(), Arc::new(plain), server.store.clone());
    review_server::register(&again).unwrap();
    assert!(again.manager().app().prepare(&spec).is_ok());
    // A name is registered once, and the library's names are not for the taking.
    assert!(review_server::register(&again).unwrap_err().to_string().contains("registered already"));
    let e = again
        .register("cascade", "Mine.", |_: review_server::ReviewArgs, _| Err("unused".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a pattern of belt's library"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_orchestrator_is_its_own_mcp_tool_with_typed_arguments_and_progress() {
    let server = review_server().await;
    let client = connect(&server).await;
    let tools = client.list_all_tools().await.unwrap();
    let tool = tools.iter().find(|t| t.name == "orchestrate_review").expect("orchestrate_review listed");
    let description = tool.description.as_deref().unwrap();
    assert!(description.starts_with("A panel of reviewers"), "{description}");
    assert!(description.contains("progress"), "{description}");
    let schema = &tool.input_schema;
    let props = schema["properties"].as_object().unwrap();
    // Its own arguments, described by their doc comments, beside the run settings.
    assert!(props["focus"]["description"].as_str().unwrap().contains("one reviewer per entry"));
    assert!(props.contains_key("max_points"));
    for setting in belt_app::patterns::TOOL_SETTINGS {
        assert!(props[*setting]["description"].as_str().is_some_and(|d| d.len() > 10), "{setting}");
    }
    assert!(!props.contains_key("pattern") && !props.contains_key("args"), "{props:?}");
    assert_eq!(schema["required"], json!(["task", "focus"]));

    let result = client
        .call_tool(CallToolRequestParams::new("orchestrate_review").with_arguments(
            json!({"task": "We launch in May.", "focus": ["risks", "costs", "clarity"], "max_points": "3"})
                .as_object()
                .unwrap()
                .clone(),
        ))
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let out = text(&result);
    let summary: Value = serde_json::from_str(out.rsplit("summary: ").next().unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["pattern"], "review");
    assert_eq!(summary["agents"], 4, "three reviewers and the chair");
    // Progress came as reviewers finished, its own events among the messages.
    let mut messages = Vec::new();
    for _ in 0..200 {
        messages = client.service().0.lock().unwrap().iter().filter_map(|p| p.message.clone()).collect();
        if messages.iter().any(|m| m.starts_with("review_required")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(messages.iter().filter(|m| m.starts_with("agent_progress: ")).count(), 3, "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("review_required: ")), "{messages:?}");

    // Arguments that do not fit are a tool error that says which.
    let bad = client
        .call_tool(
            CallToolRequestParams::new("orchestrate_review")
                .with_arguments(json!({"task": "x"}).as_object().unwrap().clone()),
        )
        .await
        .expect("a tool result");
    assert_eq!(bad.is_error, Some(true));
    assert!(text(&bad).contains("missing field `focus`"), "{}", text(&bad));
    let listed = client.call_tool(CallToolRequestParams::new("list_patterns")).await.unwrap();
    assert!(text(&listed).contains("orchestrate_review"), "{}", text(&listed));
}

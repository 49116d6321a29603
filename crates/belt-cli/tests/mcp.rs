//! `belt mcp` end to end: the rmcp client starts the real binary over stdio, lists its
//! tools, runs a cascade to completion and reads the report resource.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ReadResourceRequestParams, ResourceContents};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_stdio_runs_a_cascade_to_completion() {
    let home = std::env::temp_dir().join(format!("belt-mcp-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let store = format!("sqlite://{}/belt.db", home.display());
    let transport =
        TokioChildProcess::new(tokio::process::Command::new(env!("CARGO_BIN_EXE_belt")).configure(|cmd| {
            cmd.args(["--store", &store, "mcp", "--model", "simulated/default"])
                .env("BELT_HOME", &home)
                .current_dir(&home);
        }))
        .unwrap();
    let client = ().serve(transport).await.expect("initialize over stdio");
    let info = client.peer_info().unwrap();
    assert!(info.capabilities.tools.is_some());

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"run_workflow") && names.contains(&"list_patterns"), "{names:?}");

    let args = json!({"task": "Compare three bicycle designs", "agents": 12, "sim_latency_ms": 1});
    let result = client
        .call_tool(
            CallToolRequestParams::new("run_workflow").with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let text: String = result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect();
    assert_ne!(result.is_error, Some(true), "{text}");
    assert!(text.contains("[simulated]") || text.contains("simulated"), "{text}");
    let summary: Value = serde_json::from_str(text.rsplit("summary: ").next().unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["shape"], json!([12, 2, 1]));

    let uri = summary["report"].as_str().unwrap().to_string();
    let read = client.read_resource(ReadResourceRequestParams::new(uri)).await.unwrap();
    let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("text report")
    };
    assert!(text.starts_with("# Compare three bicycle designs"));
    client.cancel().await.unwrap();

    // The run is in the store like any other.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_belt"))
        .args(["--store", &store, "runs", "list", "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], summary["run_id"]);
    let _ = std::fs::remove_dir_all(&home);
}

/// MCP clients start `belt mcp` with an environment of their own, where `BELT_HOME` from
/// the user's shell never arrives: `--home` (and `--store`) as arguments put the runs where
/// the user's other belt commands find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_takes_its_home_as_an_argument() {
    let home = std::env::temp_dir().join(format!("belt-mcp-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).unwrap();
    let home_arg = home.display().to_string();
    let transport =
        TokioChildProcess::new(tokio::process::Command::new(env!("CARGO_BIN_EXE_belt")).configure(|cmd| {
            cmd.args(["mcp", "--home", &home_arg, "--model", "simulated/default"])
                .env_remove("BELT_HOME")
                .env_remove("BELT_STORE")
                .env("OLLAMA_HOST", "127.0.0.1:9")
                .current_dir(std::env::temp_dir());
        }))
        .unwrap();
    let client = ().serve(transport).await.expect("initialize over stdio");
    let args = json!({"task": "Name three rivers", "agents": 2, "sim_latency_ms": 0});
    let result = client
        .call_tool(
            CallToolRequestParams::new("run_workflow").with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_ne!(result.is_error, Some(true));
    client.cancel().await.unwrap();
    assert!(home.join("belt.db").is_file(), "the run went to --home");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_belt"))
        .args(["--home", &home_arg, "runs", "list", "--json"])
        .env_remove("BELT_HOME")
        .env_remove("BELT_STORE")
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    let _ = std::fs::remove_dir_all(&home);
}

/// The tool schemas as the MCP Inspector's CLI reads them: every optional field is a plain
/// typed property (no `["integer", "null"]`, which form-based clients do not recognise as a
/// number and send as a string), and `--tool-arg agents=5` runs five workers, also when the
/// value arrives as the JSON string `"5"`. Found by a user: the Inspector sent `"5"` and
/// belt answered `invalid type: string "5", expected u32`.
#[test]
fn the_mcp_inspector_cli_lists_plain_schemas_and_calls_with_its_arguments() {
    let deps = common::test_deps();
    let dir = common::Dir::new("mcp-inspector");
    let home = dir.join("home");
    let home_arg = home.display().to_string();
    let inspector = |args: &[&str]| -> Value {
        let mut all = vec!["--cli", env!("CARGO_BIN_EXE_belt"), "mcp", "--home", &home_arg];
        all.extend(["--model", "simulated/default"]);
        all.extend(args);
        let child = common::program_command(&deps.inspector, &dir.0, &home, &all).spawn().unwrap();
        let o = common::wait(child, std::time::Duration::from_secs(120));
        assert_eq!(common::code(&o), 0, "inspector {args:?}: {}", common::stderr(&o));
        common::json(&o)
    };

    let listed = inspector(&["--method", "tools/list"]);
    let tools = listed["tools"].as_array().unwrap();
    let run_workflow = tools.iter().find(|t| t["name"] == "run_workflow").expect("run_workflow");
    let props = &run_workflow["inputSchema"]["properties"];
    assert_eq!(props["agents"]["type"], "integer", "{}", props["agents"]);
    assert_eq!(props["budget_usd"]["type"], "number");
    assert_eq!(props["model"]["type"], "string");
    let required = run_workflow["inputSchema"]["required"].as_array().cloned().unwrap_or_default();
    assert!(!required.contains(&json!("agents")), "optional fields are not required: {required:?}");
    for tool in tools {
        for (name, p) in tool["inputSchema"]["properties"].as_object().into_iter().flatten() {
            let where_ = format!("{}.{name}: {p}", tool["name"]);
            assert!(p.get("type").is_none_or(Value::is_string), "a union type at {where_}");
            assert!(p.get("anyOf").is_none() && p.get("oneOf").is_none(), "a union at {where_}");
            assert_ne!(p.get("default"), Some(&Value::Null), "a null default at {where_}");
        }
    }

    let summary = |result: &Value| -> Value {
        assert_eq!(result["isError"], false, "{result}");
        let text = result["content"][0]["text"].as_str().unwrap();
        serde_json::from_str(text.rsplit("summary: ").next().unwrap()).unwrap()
    };
    for agents in ["agents=5", r#"agents="5""#] {
        let called = inspector(&[
            "--method",
            "tools/call",
            "--tool-name",
            "run_workflow",
            "--tool-arg",
            "task=Name five rivers",
            agents,
            "sim_latency_ms=0",
        ]);
        let s = summary(&called);
        assert_eq!(s["status"], "completed", "{agents}: {s}");
        assert_eq!(s["shape"], json!([5, 1]), "{agents}: {s}");
    }
}

/// What the MCP Python SDK client script printed, checked as every transport must answer:
/// belt introduces itself as belt; numbers as strings are taken (`"agents": "3"`,
/// `"budget_usd": "1.5"`, `"limit": "1"`); the schemas have no nullable unions; an unknown run
/// is a tool result marked isError that says, in MCP's words, which tool lists the runs.
fn check_python_client(out: &Value) {
    assert_eq!(out["server"]["name"], "belt", "{}", out["server"]);
    assert_eq!(out["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(out["server"]["instructions"].as_str().unwrap().contains("run_workflow"));
    assert_eq!(out["run"]["is_error"], false, "{}", out["run"]["text"]);
    let text = out["run"]["text"].as_str().unwrap();
    let s: Value = serde_json::from_str(text.rsplit("summary: ").next().unwrap()).unwrap();
    assert_eq!((&s["status"], &s["shape"]), (&json!("completed"), &json!([3])), "{s}");
    assert_eq!(out["runs"]["is_error"], false, "{}", out["runs"]["text"]);
    let runs: Value = serde_json::from_str(out["runs"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs["runs"][0]["run_id"], s["run_id"]);
    let agents = &out["schemas"]["run_workflow"]["properties"]["agents"];
    assert_eq!(agents["type"], "integer", "{agents}");
    let unknown = &out["unknown"];
    assert_eq!(unknown["is_error"], true, "{unknown}");
    let said = unknown["text"].as_str().unwrap();
    assert!(
        said.contains("no-such-run") && said.contains("list_runs") && !said.contains("GET /v1"),
        "{said}"
    );
}

/// The MCP Python SDK over stdio, a client that sends what it is given.
#[test]
fn the_mcp_python_sdk_runs_a_cascade_with_numbers_sent_as_strings() {
    let deps = common::test_deps();
    let dir = common::Dir::new("mcp-python");
    let home = dir.join("home");
    let home_arg = home.display().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_client.py");
    let args =
        [script, env!("CARGO_BIN_EXE_belt"), "mcp", "--home", &home_arg, "--model", "simulated/default"];
    let child = common::program_command(&deps.python, &dir.0, &home, &args).spawn().unwrap();
    let o = common::wait(child, std::time::Duration::from_secs(120));
    assert_eq!(common::code(&o), 0, "{}", common::stderr(&o));
    check_python_client(&common::json(&o));
}

/// The MCP Python SDK over streamable HTTP (`/mcp` of `belt serve`): the same answers, and
/// closing the session logs nothing (the SDK logged "Session termination failed: 202" while
/// rmcp answered the session's DELETE with 202; the spec's DELETE ends the session, and the
/// SDK takes 200 or 204 as done).
#[test]
fn the_mcp_python_sdk_over_http_closes_its_session_cleanly() {
    let deps = common::test_deps();
    let token = "mcp-python-http-token";
    let mut served = common::serve::start(
        "mcp-python-http",
        &["--addr", "127.0.0.1:0", "--model", "simulated/default"],
        Some(token),
    );
    served.wait_listening();
    let dir = common::Dir::new("mcp-python-http");
    let url = format!("{}/mcp", served.base);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_client.py");
    let mut cmd = common::program_command(&deps.python, &dir.0, &dir.join("home"), &[script, &url]);
    cmd.env("BELT_API_TOKEN", token);
    let o = common::wait(cmd.spawn().unwrap(), std::time::Duration::from_secs(120));
    let stderr = common::stderr(&o);
    assert_eq!(common::code(&o), 0, "{stderr}");
    check_python_client(&common::json(&o));
    assert!(!stderr.contains("Session termination failed"), "{stderr}");
    assert!(!stderr.contains("WARNING") && !stderr.contains("ERROR"), "the SDK logged: {stderr}");
}

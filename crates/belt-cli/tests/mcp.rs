//! `belt mcp` end to end: the rmcp client starts the real binary over stdio, lists its
//! tools, runs a cascade to completion and reads the report resource.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

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

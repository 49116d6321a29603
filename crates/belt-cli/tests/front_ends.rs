//! One mistake, one message: `belt run`, `POST /v1/runs` on `belt serve` and the MCP tool
//! `start_run` of `belt mcp` all turn their input into a belt-app RunSpec that one
//! `prepare` checks, so the same mistake is refused with the same words by each.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

/// Each mistake as `belt run` arguments and as the JSON of a request.
fn mistakes() -> Vec<(Vec<&'static str>, Value)> {
    vec![
        (vec!["", "--agents", "3"], json!({"task": "", "agents": 3})),
        (vec!["Plan a park", "--group-size", "1"], json!({"task": "Plan a park", "group_size": 1})),
        (vec!["Plan a park", "--agents", "0"], json!({"task": "Plan a park", "agents": 0})),
        (vec!["Plan a park", "--min-success", "2"], json!({"task": "Plan a park", "min_success": 2.0})),
        (vec!["Plan a park", "--timeout", "1e20"], json!({"task": "Plan a park", "timeout": 1e20})),
        (vec!["Plan a park", "--budget-usd", "-1"], json!({"task": "Plan a park", "budget_usd": -1.0})),
        (vec!["Plan a park", "--pattern", "pyramid"], json!({"task": "Plan a park", "pattern": "pyramid"})),
        (vec!["Plan a park", "--pattern", "saga"], json!({"task": "Plan a park", "pattern": "saga"})),
        (vec!["Plan a park", "--model", "nope/x"], json!({"task": "Plan a park", "model": "nope/x"})),
        // A known provider without its key: the variable to set is named.
        (
            vec!["Plan a park", "--model", "openai/gpt-4o-mini"],
            json!({"task": "Plan a park", "model": "openai/gpt-4o-mini"}),
        ),
    ]
}

struct TempHome(std::path::PathBuf);

impl TempHome {
    fn new(name: &str) -> TempHome {
        let p = std::env::temp_dir().join(format!("belt-front-ends-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempHome(p)
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `belt run ARGS` says after `belt: error: `, with exit code 2.
fn cli_message(home: &TempHome, args: &[&str]) -> String {
    let mut argv = vec!["run"];
    argv.extend_from_slice(args);
    argv.extend(["--quiet", "--sim-latency-ms", "0"]);
    let out = common::belt_command(&home.0, &home.0, &argv).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "belt {argv:?}: {stderr}");
    stderr.trim_end().strip_prefix("belt: error: ").unwrap_or_else(|| panic!("{stderr}")).to_string()
}

/// A `belt serve` process, killed when dropped (also when a test fails).
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `belt serve` on a free port with a known token; its base URL.
fn serve(home: &TempHome) -> (Served, String) {
    let mut cmd = common::belt_command(
        &home.0,
        &home.0,
        &["serve", "--addr", "127.0.0.1:0", "--model", "simulated/default"],
    );
    cmd.env("BELT_API_TOKEN", "front-ends-token").stdout(Stdio::null());
    let mut child = Served(cmd.spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        if let Some(rest) = line.strip_prefix("belt: serving on ") {
            return (child, rest.split_whitespace().next().unwrap().to_string());
        }
    }
    drop(child);
    panic!("belt serve did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_mistake_gets_the_same_message_from_the_cli_http_and_mcp() {
    let home = TempHome::new("all");
    let (server, base) = serve(&home);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let mcp_command = common::belt_command(&home.0, &home.0, &["mcp", "--model", "simulated/default"]);
    let (transport, _) = TokioChildProcess::builder(tokio::process::Command::from(mcp_command))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mcp = ().serve(transport).await.expect("initialize belt mcp");

    for (args, body) in mistakes() {
        let cli = cli_message(&home, &args);

        let r = http
            .post(format!("{base}/v1/runs"))
            .bearer_auth("front-ends-token")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let v: Value = r.json().await.unwrap();
        let over_http = v["error"]["message"].as_str().unwrap().to_string();

        let call = CallToolRequestParams::new("start_run").with_arguments(body.as_object().unwrap().clone());
        let over_mcp = match mcp.call_tool(call).await {
            Err(rmcp::ServiceError::McpError(e)) => e.message.to_string(),
            Ok(result) => {
                assert_eq!(result.is_error, Some(true), "{body}: accepted over MCP");
                result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect()
            }
            Err(e) => panic!("{body}: {e}"),
        };
        if body["model"] == "openai/gpt-4o-mini" {
            assert!(cli.contains("needs OPENAI_API_KEY, which is not set: export OPENAI_API_KEY="), "{cli}");
        }
        assert_eq!(cli, over_http, "{body}: the CLI and HTTP differ");
        assert_eq!(cli, over_mcp, "{body}: the CLI and MCP differ");
    }
    mcp.cancel().await.unwrap();
    drop(server);
}

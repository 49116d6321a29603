//! The MCP client against real servers: the reference server
//! `@modelcontextprotocol/server-everything` over stdio and Streamable HTTP, a server
//! written with the official Python SDK, a plain JSON-RPC one speaking an old revision, and
//! programs that are not MCP servers at all. The servers come from `scripts/test-deps`
//! (run by `belt_testkit::test_deps` when needed), so these tests never skip themselves.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use belt_core::llm::ToolCall;
use belt_core::patterns::Flow;
use belt_core::testing::ScriptedProvider;
use belt_core::{LlmRequest, RunOptions, StepSpec, Task, Tier, Tool, Tools, run};
use belt_tools::mcp::{McpError, McpServer, McpServerSpec};
use serde_json::json;

/// The reference server's entry point (run with node directly: npx could reach the network).
fn everything() -> McpServerSpec {
    let script = belt_testkit::test_deps()
        .join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    McpServerSpec::stdio("node", [script.display().to_string(), "stdio".into()])
}

fn python() -> PathBuf {
    belt_testkit::test_deps().join("py/bin/python")
}

fn data(file: &str) -> String {
    format!("{}/tests/mcp_data/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn tool(tools: &[Tool], name: &str) -> Tool {
    let names: Vec<&str> = tools.iter().map(Tool::name).collect();
    tools.iter().find(|t| t.name() == name).unwrap_or_else(|| panic!("no {name} among {names:?}")).clone()
}

/// A port nothing listens on (a moment ago).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// A test's body, failed rather than hung past a minute.
async fn bounded<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(90), work).await.expect("the test took over 90 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_over_stdio() {
    bounded(async {
        let mut spec = everything();
        spec.env.insert("BELT_TEST_SETTING".into(), "passed-on".into());
        let server = McpServer::start("everything", &spec).await.unwrap();
        assert!(!server.protocol_version().is_empty());
        let catalog = server.catalog();
        let echo_entry = catalog.iter().find(|e| e.original_name == "echo").expect("echo listed");
        assert_eq!(echo_entry.model_name, "everything_echo");
        assert!(echo_entry.idempotent, "echo says readOnlyHint/idempotentHint");
        assert!(catalog.iter().any(|e| e.model_name == "everything_get-sum"), "{catalog:?}");
        assert!(server.skipped().is_empty(), "{:?}", server.skipped());

        let tools = server.tools();
        let echo = tool(&tools, "everything_echo");
        assert!(echo.policy().idempotent);
        // No `timeout` in the spec: the run's tool timeout governs (the engine's, 60 s by default).
        assert_eq!(echo.policy().timeout, None);
        assert_eq!(echo.call(json!({"message": "hi"})).await.unwrap().content, "Echo: hi");
        let sum = tool(&tools, "everything_get-sum");
        assert_eq!(sum.call(json!({"a": 2, "b": 3})).await.unwrap().content, "The sum of 2 and 3 is 5.");

        // Bad arguments never reach the server.
        let bad = sum.call(json!({"a": "two"})).await.unwrap_err();
        assert!(!bad.transient && bad.message.contains("nothing was sent"), "{bad}");
        assert!(bad.message.contains("at /a"), "{bad}");

        // Non-text content is described, not dumped.
        let image = tool(&tools, "everything_get-tiny-image").call(json!({})).await.unwrap().content;
        assert!(image.contains("[image image/png, ") && image.len() < 500, "{image}");

        // `env` reaches the server; belt's own environment does not (cargo sets
        // CARGO_PKG_NAME for this test process).
        let env = tool(&tools, "everything_get-env").call(json!({})).await.unwrap().content;
        assert!(env.contains("\"BELT_TEST_SETTING\": \"passed-on\""), "{env}");
        assert!(!env.contains("CARGO_PKG_NAME"), "{env}");

        server.shutdown().await;
        let after = echo.call(json!({"message": "hi"})).await.unwrap_err();
        assert!(after.message.contains("was shut down"), "{after}");
    })
    .await;
}

/// The reference server in its Streamable HTTP mode, on a free port; killed when dropped.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start() -> HttpServer {
        let port = free_port();
        let spec = everything();
        let mut child = Command::new("node")
            .arg(&spec.args[0])
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on port") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("the HTTP server did not start within 30 s");
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_over_streamable_http() {
    let http = HttpServer::start();
    bounded(async {
        let mut spec = McpServerSpec::http(format!("http://127.0.0.1:{}/mcp", http.port));
        spec.headers.insert("X-Api-Key".into(), "sk-header-secret".into());
        assert!(!format!("{spec:?}").contains("sk-header-secret"));
        let server = McpServer::start("remote", &spec).await.unwrap();
        let tools = server.tools();
        assert_eq!(
            tool(&tools, "remote_echo").call(json!({"message": "over http"})).await.unwrap().content,
            "Echo: over http"
        );
        let sum = tool(&tools, "remote_get-sum");
        assert_eq!(
            sum.call(json!({"a": 1.5, "b": 2})).await.unwrap().content,
            "The sum of 1.5 and 2 is 3.5."
        );
        // Calls of one round run concurrently.
        let calls = (0..5).map(|i| sum.call(json!({"a": i, "b": 1})));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_sdk_server_over_stdio() {
    bounded(async {
        let spec = McpServerSpec::stdio(python().display().to_string(), [data("python_sdk_server.py")]);
        let server = McpServer::start("py", &spec).await.unwrap();
        let names: Vec<String> = server.catalog().into_iter().map(|e| e.model_name).collect();
        assert_eq!(names, ["py_crash", "py_fail", "py_pid", "py_shout"]);
        let tools = server.tools();
        let shout = tool(&tools, "py_shout");
        assert!(shout.policy().idempotent, "idempotentHint");
        assert!(!tool(&tools, "py_fail").policy().idempotent);
        assert_eq!(shout.call(json!({"text": "quiet"})).await.unwrap().content, "QUIET");

        // A tool's own error (`isError`) is a permanent error the model reads.
        let failed = tool(&tools, "py_fail").call(json!({"reason": "testing"})).await.unwrap_err();
        assert!(failed.message.contains("failed on purpose: testing") && !failed.transient, "{failed}");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_is_restarted_once() {
    bounded(async {
        let spec = McpServerSpec::stdio(python().display().to_string(), [data("python_sdk_server.py")]);
        let server = McpServer::start("py", &spec).await.unwrap();
        let tools = server.tools();
        let (shout, crash, pid) =
            (tool(&tools, "py_shout"), tool(&tools, "py_crash"), tool(&tools, "py_pid"));

        // Killed from outside between calls: the next call finds it dead before sending.
        let first_pid = pid.call(json!({})).await.unwrap().content;
        let killed = Command::new("kill").args(["-9", &first_pid]).status().unwrap();
        assert!(killed.success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dead = shout.call(json!({"text": "a"})).await.unwrap_err();
        assert!(dead.message.contains("the MCP server `py` exited (killed by signal 9)"), "{dead}");
        assert!(dead.message.contains("restarts it on the next call"), "{dead}");
        assert!(dead.transient, "nothing was sent: {dead}");

        // The next call restarts it.
        assert_eq!(shout.call(json!({"text": "back"})).await.unwrap().content, "BACK");
        assert_ne!(pid.call(json!({})).await.unwrap().content, first_pid);

        // Dying under a call: an error with the exit status and the end of stderr, and no
        // second restart.
        let crashed = crash.call(json!({})).await.unwrap_err();
        assert!(crashed.message.contains("exited (status 3)"), "{crashed}");
        assert!(crashed.message.contains("about to crash on purpose"), "{crashed}");
        assert!(crashed.message.contains("not restarted again") && !crashed.transient, "{crashed}");
        let still = shout.call(json!({"text": "a"})).await.unwrap_err();
        assert!(still.message.contains("not restarted again"), "{still}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_revision_paginated_odd_names_and_bad_schemas() {
    bounded(async {
        let spec = McpServerSpec::stdio(python().display().to_string(), [data("raw_server.py")]);
        let server = McpServer::start("raw", &spec).await.unwrap();
        assert_eq!(server.protocol_version(), "2024-11-05");
        let catalog = server.catalog();
        let names: Vec<(&str, &str)> =
            catalog.iter().map(|e| (e.model_name.as_str(), e.original_name.as_str())).collect();
        assert_eq!(names[0], ("raw_read_file", "read file"));
        assert_eq!(names[1], ("raw_read_file_2", "read.file"));
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[2].0.len() <= 64 && names[2].0.starts_with("raw_xxx"), "{names:?}");
        let skipped: Vec<String> =
            server.skipped().iter().map(|s| format!("{}: {}", s.original_name, s.reason)).collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped.iter().any(|s| s.starts_with("scalar: its inputSchema is of type")), "{skipped:?}");
        assert!(
            skipped.iter().any(|s| s.starts_with("no schema: its inputSchema is missing")),
            "{skipped:?}"
        );

        let tools = server.tools();
        let out = tool(&tools, "raw_read_file_2").call(json!({"path": "/x"})).await.unwrap();
        assert_eq!(out.content, r#"read.file {"path": "/x"}"#, "called by its original name");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_command_that_does_not_exist() {
    let mut spec = McpServerSpec::stdio("belt-no-such-mcp-server", ["--x"]);
    spec.env.insert("API_TOKEN".into(), "tok-very-secret".into());
    let err = McpServer::start("ghost", &spec).await.unwrap_err();
    assert!(matches!(err, McpError::CommandNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("`belt-no-such-mcp-server` was not found") && message.contains("PATH"),
        "{message}"
    );
    assert!(!format!("{message} {err:?}").contains("tok-very-secret"));
}

#[tokio::test]
async fn a_url_where_nothing_listens() {
    let port = free_port();
    let mut spec = McpServerSpec::http(format!("http://127.0.0.1:{port}/mcp?key=url-secret"));
    spec.headers.insert("Authorization".into(), "Bearer header-secret".into());
    let err = bounded(McpServer::start("away", &spec)).await.unwrap_err();
    assert!(matches!(err, McpError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}/mcp")) && message.contains("nothing answers"),
        "{message}"
    );
    for secret in ["url-secret", "header-secret"] {
        assert!(!format!("{message} {err:?}").contains(secret), "{secret}: {message}");
    }
}

#[tokio::test]
async fn a_program_that_prints_garbage_and_waits() {
    let spec = McpServerSpec {
        startup_timeout: Some(2),
        ..McpServerSpec::stdio(
            "sh",
            ["-c", "echo 'Server ready on port 8080'; echo 'a log line' >&2; sleep 30"],
        )
    };
    let err = bounded(McpServer::start("noise", &spec)).await.unwrap_err();
    assert!(matches!(err, McpError::StartupTimeout { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("within 2 s"), "{message}");
    assert!(message.contains("wrote `Server ready on port 8080` to stdout, which is not MCP"), "{message}");
    assert!(message.contains("a log line") && message.contains("startup_timeout"), "{message}");
}

#[tokio::test]
async fn a_program_that_prints_garbage_and_exits() {
    // (What it wrote to stdout is not read: sending `initialize` already failed.)
    let spec = McpServerSpec::stdio(
        "sh",
        ["-c", "echo '<html>'; echo 'Traceback: no module named mcp' >&2; exit 1"],
    );
    let err = bounded(McpServer::start("broken", &spec)).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, McpError::Exited { .. }), "{err:?}");
    assert!(message.contains("exited (status 1) before it finished starting"), "{message}");
    assert!(message.contains("Traceback: no module named mcp"), "{message}");
}

/// One real run: the engine's agent loop calls an MCP tool and the result reaches the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_loop_calls_an_mcp_tool() {
    bounded(async {
        let server = McpServer::start("everything", &everything()).await.unwrap();
        let tools = server.tools().into_iter().fold(Tools::new(), Tools::with);
        let flow = Flow::new("sum", move |ctx, task| {
            let tools = tools.clone();
            async move {
                let request = LlmRequest::new("t/model", task.description);
                let reply = ctx.llm_with_tools(StepSpec::new("sum", Tier::Agent), request, &tools).await?;
                Ok(reply.text.to_string())
            }
        });
        let call = ToolCall {
            id: "c".into(),
            name: "everything_get-sum".into(),
            arguments: json!({"a": 20, "b": 22}),
        };
        let provider = ScriptedProvider::new("t").tool_calls_for("sum", 1, vec![call]);
        let options = RunOptions::default().with_provider(Arc::new(provider));
        let result = run(flow, Task::new("20 + 22?"), options).await.unwrap().result().await;
        assert_eq!(
            result.final_output.as_deref(),
            Some("Output of sum/round/02. Tool results: The sum of 20 and 22 is 42.")
        );
        server.shutdown().await;
    })
    .await;
}

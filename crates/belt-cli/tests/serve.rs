//! `belt serve` end to end: the real binary on a free port, a generated token, a run over
//! HTTP with its events streamed to `run_finished`, its report, and SIGTERM.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::serve::start;

use serde_json::{Value, json};

fn home(name: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("belt-serve-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `belt serve` with its store in `home`, which stays when it ends (a restart finds it).
fn start_in(home: std::path::PathBuf, extra: &[&str], token: Option<&str>) -> common::serve::Served {
    let store = format!("sqlite://{}/belt.db", home.display());
    let mut args = vec!["--store", store.as_str(), "serve"];
    args.extend(extra);
    common::serve::start_in(&home, &home, &args, token, &[])
}

/// `GET url` with a bearer `token`, its body as JSON.
async fn get_json(c: &reqwest::Client, url: String, token: &str) -> Value {
    c.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_cascade_over_http_and_stops_on_sigterm() {
    let mut s = start("run", &["--addr", "127.0.0.1:0"], None);
    let lines = s.wait_listening();
    // A token was generated, printed once and kept with mode 0600.
    let file = s.home.join("api-token");
    let token = std::fs::read_to_string(&file).expect("the token file").trim().to_string();
    assert!(lines.iter().any(|l| l.contains(&token)), "{lines:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let c = client();
    let health: Value = c.get(format!("{}/healthz", s.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let r = c.get(format!("{}/v1/runs", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth(&token)
        .json(&json!({"task": "Plan a city park", "agents": 12, "sim_latency_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["run_id"].as_str().unwrap().to_string();

    // Follow the events to the end.
    let r = c
        .get(format!("{}{}", s.base, accepted["events_url"].as_str().unwrap()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let text =
        tokio::time::timeout(Duration::from_secs(60), r.text()).await.expect("the stream ends").unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["type"], "run_started");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["status"], "completed");
    assert!(events.iter().any(|e| e["type"] == "step_completed" && e["step"] == "executive"));

    let view: Value = get_json(&c, format!("{}/v1/runs/{id}", s.base), &token).await;
    assert_eq!(view["result"]["status"], "completed");
    // Runs over HTTP stream their text: each step's `step_delta` events, put together, are
    // its output (the simulated provider streams when someone watches).
    let agents = view["result"]["agents"].as_array().unwrap();
    let mut streamed = 0;
    for agent in agents {
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "step_delta" && e["step"] == agent["step"])
            .map(|e| e["text"].as_str().unwrap())
            .collect();
        if !deltas.is_empty() {
            assert_eq!(Some(deltas.as_str()), agent["output"].as_str(), "{}", agent["step"]);
            streamed += 1;
        }
    }
    assert_eq!(streamed, agents.len(), "every step streamed its text");
    let md = c.get(format!("{}/v1/runs/{id}/documents/md", s.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(md.status(), 200);
    assert!(md.text().await.unwrap().contains("Plan a city park"));
    // The same request rules as `belt run`.
    let r = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth(&token)
        .json(&json!({"task": "x", "group_size": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("group_size"));
    let patterns: Value = get_json(&c, format!("{}/v1/patterns", s.base), &token).await;
    assert!(patterns["patterns"].as_array().unwrap().iter().any(|p| p["name"] == "swarm"));

    // SIGTERM: a clean exit.
    let pid = s.child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut status = None;
    for _ in 0..200 {
        if let Some(st) = s.child.try_wait().unwrap() {
            status = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status.expect("belt serve exits after SIGTERM").code(), Some(0));

    // The run is in the store for `belt runs`.
    let out = Command::new(env!("CARGO_BIN_EXE_belt"))
        .args(["--store", &format!("sqlite://{}/belt.db", s.home.display()), "runs", "list", "--json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], id.as_str());
}

#[test]
fn serve_refuses_a_public_address_without_an_explicit_token() {
    let mut s = start("public", &["--addr", "0.0.0.0:0"], None);
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    // The reader thread may not have passed the lines on yet: read until it ends.
    let mut lines = Vec::new();
    while let Ok(line) = s.stderr.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
    }
    assert!(lines.iter().any(|l| l.contains("BELT_API_TOKEN")), "{lines:?}");
    assert!(!s.home.join("api-token").exists());
}

/// Tools from an HTTP body: the spec's `tools` reach the workers through the same
/// preparation as `belt run --tools`; an unknown name is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_tools_over_http_calls_them_and_an_unknown_tool_is_refused() {
    let mut s = start("tools", &["--addr", "127.0.0.1:0"], Some("tools-token"));
    s.wait_listening();
    let c = client();
    let r = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth("tools-token")
        .json(&json!({"task": "Add 2 and 3", "agents": 2, "tools": ["calculator"], "sim_latency_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["run_id"].as_str().unwrap().to_string();
    let r = c
        .get(format!("{}{}", s.base, accepted["events_url"].as_str().unwrap()))
        .bearer_auth("tools-token")
        .send()
        .await
        .unwrap();
    let text =
        tokio::time::timeout(Duration::from_secs(60), r.text()).await.expect("the stream ends").unwrap();
    assert!(text.contains("\"run_finished\""), "{text}");
    let view: Value = get_json(&c, format!("{}/v1/runs/{id}", s.base), "tools-token").await;
    let agents = view["result"]["agents"].as_array().unwrap();
    for w in ["worker/001/round/01/tool/1", "worker/002/round/01/tool/1"] {
        assert!(agents.iter().any(|a| a["step"] == w && a["status"] == "completed"), "{w}: {agents:?}");
    }

    let r = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth("tools-token")
        .json(&json!({"task": "x", "tools": ["calculater"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("unknown tool `calculater` (did you mean `calculator`?)"), "{body}");
}

/// The decomposition's options over HTTP are the spec's fields, as `belt run`'s flags are:
/// `strategy`, `min_agents` and `max_agents`; a range with `agents` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_and_an_agent_range_over_http_shape_the_plan() {
    let mut s = start("decompose", &["--addr", "127.0.0.1:0"], Some("plan-token"));
    s.wait_listening();
    let c = client();
    let body = json!({"task": "Compare the sales data of two shops", "strategy": "analysis",
                      "min_agents": 2, "max_agents": 4, "sim_latency_ms": 1});
    let r = c.post(format!("{}/v1/runs", s.base)).bearer_auth("plan-token").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["run_id"].as_str().unwrap().to_string();
    let r = c
        .get(format!("{}{}", s.base, accepted["events_url"].as_str().unwrap()))
        .bearer_auth("plan-token")
        .send()
        .await
        .unwrap();
    let text =
        tokio::time::timeout(Duration::from_secs(60), r.text()).await.expect("the stream ends").unwrap();
    assert!(text.contains("\"strategy_chosen\"") && text.contains("\"analysis\""), "{text}");
    let view: Value = get_json(&c, format!("{}/v1/runs/{id}", s.base), "plan-token").await;
    let plan = view["result"]["plan"].as_array().unwrap();
    assert!((2..=4).contains(&plan.len()), "{plan:?}");
    assert!(plan[0]["description"].as_str().unwrap().starts_with("Framing"), "{plan:?}");

    let bad = json!({"task": "x", "agents": 3, "max_agents": 4});
    let r = c.post(format!("{}/v1/runs", s.base)).bearer_auth("plan-token").json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("give one or the other"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_file_runs_over_http_and_its_mistakes_come_back_with_line_and_column() {
    let mut s = start("workflow", &["--addr", "127.0.0.1:0"], Some("wf-token"));
    s.wait_listening();
    let c = client();
    let text = include_str!("../../../examples/workflows/support-router.yaml");
    let r = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth("wf-token")
        .json(&json!({"workflow": text, "inputs": {"question": "I was charged twice"}, "sim_latency_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["run_id"].as_str().unwrap().to_string();
    let r = c
        .get(format!("{}{}", s.base, accepted["events_url"].as_str().unwrap()))
        .bearer_auth("wf-token")
        .send()
        .await
        .unwrap();
    let text =
        tokio::time::timeout(Duration::from_secs(60), r.text()).await.expect("the stream ends").unwrap();
    assert!(text.contains("\"run_finished\""), "{text}");
    let view: Value = get_json(&c, format!("{}/v1/runs/{id}", s.base), "wf-token").await;
    let result = &view["result"];
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["pattern"], "support-router");
    assert!(result["agents"].as_array().unwrap().iter().any(|a| a["step"] == "steps/classify"), "{result}");

    // A file with a mistake: refused before anything runs, the place named.
    let bad = text_with_typo();
    let r = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth("wf-token")
        .json(&json!({"workflow": bad, "inputs": {"topic": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("workflow:8:26") && body.contains("unknown agent `writr`"), "{body}");
    // A workflow with a task or pattern of its own is ambiguous.
    let r = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth("wf-token")
        .json(&json!({"workflow": bad, "pattern": "swarm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

fn text_with_typo() -> &'static str {
    "name: brief\ninputs:\n  topic: {description: what}\nagents:\n  - {id: writer, role: a writer}\npattern: sequential\nsteps:\n  - {id: outline, agent: writr, prompt: \"Outline {{ inputs.topic }}\"}\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_mcp_requests_for_its_allowed_hosts_only() {
    let mut s =
        start("hosts", &["--addr", "127.0.0.1:0", "--allowed-host", "belt.internal"], Some("tok-123"));
    s.wait_listening();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let c = client();
    for (host, status) in [("belt.internal", 200), ("localhost", 200), ("evil.example", 403)] {
        let r = c
            .post(format!("{}/mcp", s.base))
            .bearer_auth("tok-123")
            .header("host", host)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "Host: {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_by_sigterm_resumes_with_belt_resume() {
    let mut s = start("resume", &["--addr", "127.0.0.1:0"], Some("tok-resume"));
    s.wait_listening();
    let c = client();
    let accepted: Value = c
        .post(format!("{}/v1/runs", s.base))
        .bearer_auth("tok-resume")
        .json(&json!({"task": "Long survey", "agents": 8, "concurrency": 2, "sim_latency_ms": 300}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = accepted["run_id"].as_str().unwrap().to_string();
    // Follow the events until a worker has completed (so something is recorded).
    let mut r =
        c.get(format!("{}/v1/runs/{id}/events", s.base)).bearer_auth("tok-resume").send().await.unwrap();
    let mut text = String::new();
    while !text.contains("\"type\":\"step_completed\",\"tier\":\"worker\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), r.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("more events");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let mut code = None;
    for _ in 0..400 {
        if let Some(st) = s.child.try_wait().unwrap() {
            code = st.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, Some(0), "belt serve exits cleanly");

    let store = format!("sqlite://{}/belt.db", s.home.display());
    let out = Command::new(env!("CARGO_BIN_EXE_belt"))
        .args(["--store", &store, "resume", &id, "--json", "--quiet", "--out"])
        .arg(s.home.join("out"))
        .current_dir(&s.home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "completed");
    let replayed = result["agents"].as_array().unwrap().iter().filter(|a| a["replayed"] == true).count();
    assert!(replayed >= 1, "steps finished before the shutdown are not paid for again");
}

/// `belt ARGS` on the store of `home`, to its end.
fn belt_on(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_belt"))
        .arg("--store")
        .arg(format!("sqlite://{}/belt.db", home.display()))
        .args(args)
        .env("BELT_HOME", home)
        .env_remove("BELT_MODEL")
        .current_dir(home)
        .output()
        .unwrap()
}

/// The stored runs, by id: status.
fn stored_statuses(home: &std::path::Path) -> std::collections::HashMap<String, String> {
    let out = belt_on(home, &["runs", "list", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["run_id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

/// Issue 18, defect 2: runs answered 202 "queued" were only in the server's memory, so a
/// server stopped (SIGTERM) or killed (SIGKILL) lost them: 404, and `belt resume` knew no such
/// run. Now each is in the store, queued, before it is answered; a server restarted on the
/// same store starts them, oldest first, under its limits; and the run that was running when
/// the server stopped is finished by `belt resume`.
async fn queued_runs_outlive_the_server(name: &str, signal: i32) {
    let home = home(name);
    let token = "tok-queue";
    let args = ["--addr", "127.0.0.1:0", "--max-runs", "1", "--max-queued", "5"];
    let mut s = start_in(home.clone(), &args, Some(token));
    s.wait_listening();
    let c = client();
    let mut ids = Vec::new();
    for i in 1..=4 {
        // Slow enough (five calls one after another, 200 ms each) that the first is still
        // running when the others are accepted and when the server stops.
        let r = c
            .post(format!("{}/v1/runs", s.base))
            .bearer_auth(token)
            .json(
                &json!({"task": format!("Survey {i}"), "agents": 3, "concurrency": 1, "sim_latency_ms": 200}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let accepted: Value = r.json().await.unwrap();
        assert_eq!(accepted["status"], if i == 1 { "running" } else { "queued" }, "run {i}");
        ids.push(accepted["run_id"].as_str().unwrap().to_string());
    }
    let (first, queued) = (ids[0].clone(), ids[1..].to_vec());
    // While the server lives, its queued runs are already in the store.
    let stored = stored_statuses(&home);
    for id in &queued {
        assert_eq!(stored.get(id).map(String::as_str), Some("queued"), "{stored:?}");
    }

    // SAFETY: a signal to our own child.
    unsafe { libc::kill(s.child.id() as i32, signal) };
    let mut code = None;
    for _ in 0..400 {
        if let Some(st) = s.child.try_wait().unwrap() {
            code = Some(st.code());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = code.expect("belt serve stops");
    if signal == libc::SIGTERM {
        assert_eq!(code, Some(0), "belt serve exits cleanly on SIGTERM");
    }
    // The store stays (`start_in`): the server is restarted on it.
    drop(s);

    // The queued runs are still queued; the running one was cancelled (SIGTERM) or its
    // driver died (SIGKILL).
    let stored = stored_statuses(&home);
    for id in &queued {
        assert_eq!(stored.get(id).map(String::as_str), Some("queued"), "{stored:?}");
    }
    let expected_first = if signal == libc::SIGTERM { "cancelled" } else { "interrupted" };
    assert_eq!(stored.get(&first).map(String::as_str), Some(expected_first), "{stored:?}");

    // A restarted server takes them up and runs them, one at a time, oldest first.
    let mut s = start_in(home.clone(), &args, Some(token));
    let lines = s.wait_listening();
    assert!(lines.iter().any(|l| l.contains("3 queued runs from the store taken up")), "{lines:?}");
    let last = queued.last().unwrap();
    let view: Value = get_json(&c, format!("{}/v1/runs/{last}", s.base), token).await;
    assert_eq!(view["status"], "queued", "{view}");
    let listed: Value = get_json(&c, format!("{}/v1/runs?limit=50", s.base), token).await;
    let listed = listed["runs"].as_array().unwrap();
    assert_eq!(listed.iter().filter(|r| r["run_id"] == last.as_str()).count(), 1, "listed once: {listed:?}");

    // The one that was running is finished by `belt resume` (its completed steps replayed).
    let out = belt_on(&home, &["resume", &first, "--json", "--quiet", "--out", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "completed");

    let mut started = Vec::new();
    for id in &queued {
        let mut view = Value::Null;
        for _ in 0..600 {
            view = get_json(&c, format!("{}/v1/runs/{id}", s.base), token).await;
            if view["result"].is_object() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(view["result"]["status"], "completed", "{id}: {view}");
        assert_eq!(view["task"], format!("Survey {}", started.len() + 2), "its whole definition was kept");
        started.push(view["result"]["started_at"].as_str().unwrap().to_string());
    }
    // One at a time (--max-runs 1), in the order they were accepted.
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "queued runs start oldest first");
    let stored = stored_statuses(&home);
    for id in &ids {
        assert_eq!(stored.get(id).map(String::as_str), Some("completed"), "{stored:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_survive_sigkill_and_run_when_the_server_restarts() {
    queued_runs_outlive_the_server("queue-kill", libc::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_survive_sigterm_and_run_when_the_server_restarts() {
    queued_runs_outlive_the_server("queue-term", libc::SIGTERM).await;
}

/// `belt resume ID` of a queued run starts it from its stored definition, and a server
/// restarted afterwards does not run it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_of_a_dead_server_runs_with_belt_resume() {
    let home = home("queue-resume");
    let token = "tok-queue-resume";
    let args = ["--addr", "127.0.0.1:0", "--max-runs", "1"];
    let mut s = start_in(home.clone(), &args, Some(token));
    s.wait_listening();
    let c = client();
    let mut ids = Vec::new();
    for task in ["Running survey", "Queued survey"] {
        let accepted: Value = c
            .post(format!("{}/v1/runs", s.base))
            .bearer_auth(token)
            .json(&json!({"task": task, "agents": 2, "concurrency": 1, "sim_latency_ms": 300}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(accepted["run_id"].as_str().unwrap().to_string());
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGKILL) };
    let _ = s.child.wait();
    drop(s);

    let out = belt_on(&home, &["resume", &ids[1], "--json", "--quiet", "--out", "out"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (result["status"].as_str(), result["task"].as_str()),
        (Some("completed"), Some("Queued survey"))
    );

    // Nothing is queued any more: a restarted server takes nothing up.
    let mut s = start_in(home.clone(), &args, Some(token));
    let lines = s.wait_listening();
    assert!(!lines.iter().any(|l| l.contains("from the store taken up")), "{lines:?}");
    assert_eq!(stored_statuses(&home).get(&ids[1]).map(String::as_str), Some("completed"));
}

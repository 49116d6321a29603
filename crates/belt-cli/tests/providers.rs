//! `belt run` against fake OpenAI-compatible and Anthropic servers reached through the
//! base-URL variables, as a user with only `OPENAI_BASE_URL` (or an Anthropic endpoint) set.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use belt_llm::fake_server::{FakeResponse, FakeServer, FakeUsage, UsageShape};
use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("belt-providers-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // The fake servers stand in for the real APIs on 127.0.0.1, where a server is
        // taken for the user's own and billed as free: bill at the real APIs' prices.
        let config =
            "[providers.openai]\nshipped_prices = true\n[providers.anthropic]\nshipped_prices = true\n";
        std::fs::write(d.join("belt.toml"), config).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run belt with `env` (and no other provider configuration), off the test's runtime so the
/// in-process fake server keeps serving.
async fn belt(dir: &Dir, args: &[&str], env: &[(&str, String)]) -> (i32, Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_belt"));
    cmd.args(args).current_dir(&dir.0).env("BELT_HOME", dir.0.join("home")).env("OLLAMA_HOST", "127.0.0.1:9");
    for key in [
        "BELT_MODEL",
        "BELT_STORE",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL",
    ] {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run belt")).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

const RUN: [&str; 8] =
    ["run", "Compare heat pumps and gas boilers", "--agents", "3", "--json", "--out", "out", "--retries"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_runs_against_an_openai_compatible_server() {
    let server = FakeServer::start().await.unwrap();
    // 120 prompt tokens, 100 of them read from the prompt cache.
    let usage = FakeUsage { input: 120, output: 80, cache_read: 100, cache_write: 0, reasoning: 0 };
    server.set_default(FakeResponse::openai_stream(
        "gpt-4.1-mini-2025-04-14",
        &["## Findings\n", "Heat pumps ", "use less energy."],
        "stop",
        usage,
        UsageShape::EmptyChoices,
    ));
    let dir = Dir::new("openai");
    let env = [
        ("OPENAI_BASE_URL", server.openai_base_url()),
        ("OPENAI_API_KEY", "sk-test-secret-1234".to_string()),
    ];
    let mut args = RUN.to_vec();
    args.push("1");
    let (code, r, stderr) = belt(&dir, &args, &env).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("using openai/gpt-4.1-mini (OPENAI_API_KEY is set)"), "{stderr}");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["simulated"], false);
    // 1 decomposition (the reply is not JSON: template plan) + 3 workers, no synthesizer.
    let calls = server.calls().len() as u64;
    assert_eq!(calls, 4);
    assert_eq!(r["usage"]["calls"], calls);
    assert_eq!(r["usage"]["input_tokens"], 120 * calls, "the server's token counts are reported");
    assert_eq!(r["usage"]["output_tokens"], 80 * calls);
    assert_eq!(r["usage"]["cache_read_tokens"], 100 * calls, "cached tokens are a subset of the input");
    // gpt-4.1-mini: $0.40 input, $0.10 cached input, $1.60 output per million tokens.
    let expected = calls as f64 * (20.0 * 0.40 + 100.0 * 0.10 + 80.0 * 1.60) / 1e6;
    assert!((r["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12, "{} vs {expected}", r["cost_usd"]);
    let first =
        server.requests().into_iter().find(|q| q.path.ends_with("/chat/completions")).expect("a request");
    assert_eq!(first.header("authorization"), Some("Bearer sk-test-secret-1234"));
    assert_eq!(first.json()["stream"], true);
    // The key is never printed.
    let all = format!("{stderr}{r}");
    assert!(!all.contains("sk-test-secret-1234"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_end_to_end() {
    let server = FakeServer::start().await.unwrap();
    let usage = FakeUsage { input: 10, output: 5, cache_read: 0, cache_write: 0, reasoning: 0 };
    server.push(
        FakeResponse::openai_error(
            429,
            "Rate limit reached for requests",
            "requests",
            Some("rate_limit_exceeded"),
        )
        .header("retry-after", "1"),
    );
    server.set_default(FakeResponse::openai_json("gpt-4.1-mini", "fine", "stop", usage));
    let dir = Dir::new("retry-after");
    let env = [("OPENAI_BASE_URL", server.openai_base_url()), ("OPENAI_API_KEY", "sk-x".to_string())];
    let started = Instant::now();
    let (code, r, stderr) = belt(
        &dir,
        &["run", "One thing", "--agents", "1", "--json", "--out", "out", "--concurrency", "1"],
        &env,
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the retry waited for Retry-After");
    let decompose =
        r["agents"].as_array().unwrap().iter().find(|a| a["step"] == "decompose").unwrap().clone();
    assert_eq!(decompose["attempts"], 2, "{decompose}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_endpoint_works_too() {
    let server = FakeServer::start().await.unwrap();
    // Anthropic reports cache reads and writes apart from its 5 uncached input tokens (55 in
    // all: fewer than any of the run's prompts has bytes, as a true count is).
    let usage = FakeUsage { input: 5, output: 20, cache_read: 40, cache_write: 10, reasoning: 0 };
    server.set_default(FakeResponse::anthropic_stream(
        "claude-sonnet-4-5-20250929",
        &["Sure: ", "done."],
        "end_turn",
        usage,
    ));
    let dir = Dir::new("anthropic");
    let env = [("ANTHROPIC_BASE_URL", server.url()), ("ANTHROPIC_API_KEY", "sk-ant-test".to_string())];
    let (code, r, stderr) =
        belt(&dir, &["run", "Two things", "--agents", "2", "--json", "--out", "out"], &env).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("anthropic/claude-sonnet-4-5"), "{stderr}");
    let calls = server.calls().len() as u64;
    assert_eq!(r["usage"]["input_tokens"], 55 * calls);
    assert_eq!(r["usage"]["output_tokens"], 20 * calls);
    assert_eq!(
        (&r["usage"]["cache_read_tokens"], &r["usage"]["cache_write_tokens"]),
        (&(40 * calls).into(), &(10 * calls).into())
    );
    // claude-sonnet-4-5: $3 input, $0.30 cache reads, $3.75 cache writes, $15 output.
    let expected = calls as f64 * (5.0 * 3.0 + 40.0 * 0.30 + 10.0 * 3.75 + 20.0 * 15.0) / 1e6;
    assert!((r["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12, "{} vs {expected}", r["cost_usd"]);
    let q = server.last_request().unwrap();
    assert_eq!(q.header("x-api-key"), Some("sk-ant-test"));
    assert!(q.header("anthropic-version").is_some());
}

/// The JSON lines of an `--events` file.
fn events(dir: &Dir, file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.0.join(file)).expect("the events file");
    text.lines().map(|l| serde_json::from_str(l).expect("a JSON event")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_fall_back_to_the_second_model_when_the_first_keeps_failing() {
    // The OpenAI-compatible server answers every call with a 500; the Anthropic one serves.
    let openai = FakeServer::start().await.unwrap();
    openai.set_default(FakeResponse::openai_error(500, "The server had an error", "server_error", None));
    let anthropic = FakeServer::start().await.unwrap();
    anthropic.set_default(FakeResponse::anthropic_stream(
        "claude-sonnet-4-5-20250929",
        &["## Part\n", "Served by the fallback."],
        "end_turn",
        FakeUsage { input: 40, output: 12, cache_read: 0, cache_write: 0, reasoning: 0 },
    ));
    let dir = Dir::new("fallback");
    let env = [
        ("OPENAI_BASE_URL", openai.openai_base_url()),
        ("OPENAI_API_KEY", "sk-x".to_string()),
        ("ANTHROPIC_BASE_URL", anthropic.url()),
        ("ANTHROPIC_API_KEY", "sk-ant-x".to_string()),
    ];
    let args = [
        "run",
        "Compare six heating systems",
        "--agents",
        "6",
        "--json",
        "--out",
        "out",
        "--events",
        "events.jsonl",
        "--concurrency",
        "1",
        "--retries",
        "1",
        "--model",
        "anthropic/claude-sonnet-4-5",
        "--worker-model",
        "openai/gpt-4.1-mini,anthropic/claude-sonnet-4-5",
    ];
    let (code, r, stderr) = belt(&dir, &args, &env).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    let workers: Vec<&Value> =
        r["agents"].as_array().unwrap().iter().filter(|a| a["tier"] == "worker").collect();
    assert_eq!(workers.len(), 6);
    for w in &workers {
        assert_eq!(w["status"], "completed", "{w}");
        assert_eq!(w["model"], "anthropic/claude-sonnet-4-5", "the fallback answered: {w}");
    }
    // One call at a time, one retry: workers 1 and 2 fail twice each, worker 3 once more,
    // and the fifth failure in a row opens the breaker of openai/gpt-4.1-mini: workers 3
    // to 6 go to the fallback without calling it.
    let failed_calls = openai.calls().len();
    assert_eq!(failed_calls, 5, "the breaker stopped the calls to the failing model");
    let events = events(&dir, "events.jsonl");
    let fallbacks: Vec<&Value> = events.iter().filter(|e| e["type"] == "step_fallback").collect();
    assert_eq!(fallbacks.len(), 6, "every worker fell back once");
    for f in &fallbacks {
        assert_eq!(
            (f["from"].as_str(), f["to"].as_str()),
            (Some("openai/gpt-4.1-mini"), Some("anthropic/claude-sonnet-4-5"))
        );
    }
    assert!(fallbacks[0]["error"].as_str().unwrap().contains("HTTP 500"), "{}", fallbacks[0]);
    assert!(fallbacks[5]["error"].as_str().unwrap().contains("circuit breaker"), "{}", fallbacks[5]);
    let opened: Vec<&Value> = events.iter().filter(|e| e["type"] == "breaker_opened").collect();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["model"], "openai/gpt-4.1-mini");
    // Only the calls that were served cost anything: Anthropic's usage at its prices.
    let served = anthropic.calls().len() as f64;
    let expected = served * (40.0 * 3.0 + 12.0 * 15.0) / 1e6;
    assert!((r["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12, "{} vs {expected}", r["cost_usd"]);
    assert!(
        stderr.contains("worker/001: openai/gpt-4.1-mini failed (")
            && stderr.contains("falling back to anthropic/claude-sonnet-4-5"),
        "the progress shows the fallback: {stderr}"
    );
    assert!(stderr.contains("breaker opened: openai/gpt-4.1-mini failed 5 times in a row"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_for_the_first_model_falls_back_without_retrying_it() {
    // A model the first server does not know is fatal for that model only.
    let openai = FakeServer::start().await.unwrap();
    openai.set_default(FakeResponse::openai_error(
        404,
        "The model `gpt-4.1-mini` does not exist or you do not have access to it.",
        "invalid_request_error",
        Some("model_not_found"),
    ));
    let anthropic = FakeServer::start().await.unwrap();
    anthropic.set_default(FakeResponse::anthropic_json(
        "claude-haiku-4-5",
        "Served by the fallback.",
        "end_turn",
        FakeUsage { input: 10, output: 5, cache_read: 0, cache_write: 0, reasoning: 0 },
    ));
    let dir = Dir::new("fallback-fatal");
    let env = [
        ("OPENAI_BASE_URL", openai.openai_base_url()),
        ("OPENAI_API_KEY", "sk-x".to_string()),
        ("ANTHROPIC_BASE_URL", anthropic.url()),
        ("ANTHROPIC_API_KEY", "sk-ant-x".to_string()),
    ];
    let args = [
        "run",
        "Two things",
        "--agents",
        "2",
        "--json",
        "--out",
        "out",
        "--concurrency",
        "1",
        "--model",
        "openai/gpt-4.1-mini,anthropic/claude-haiku-4-5",
    ];
    let (code, r, stderr) = belt(&dir, &args, &env).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    // Decomposer and two workers: one attempt each at the unknown model (no retries, though
    // 2 are allowed), then the fallback.
    assert_eq!(openai.calls().len(), 3);
    for a in r["agents"].as_array().unwrap() {
        assert_eq!(a["model"], "anthropic/claude-haiku-4-5", "{a}");
        assert_eq!(a["attempts"], 2, "one failed attempt, one served: {a}");
    }
}

/// A run that failed in a provider outage is finished after the provider heals, with
/// `belt resume --retry-failed`: what completed is replayed (no request), what failed runs
/// again, and a new result is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failed_in_an_outage_is_finished_by_resume_retry_failed() {
    let server = FakeServer::start().await.unwrap();
    let ok = || {
        let usage = FakeUsage { input: 50, output: 20, cache_read: 0, cache_write: 0, reasoning: 0 };
        FakeResponse::openai_json("gpt-4.1-mini", "## Findings\nHeat pumps use less energy.", "stop", usage)
    };
    // The decomposition and the first worker are answered, then the provider is down.
    server.push(ok()).push(ok());
    server.set_default(FakeResponse::openai_error(500, "The server had an error", "server_error", None));
    let dir = Dir::new("retry-failed");
    let env = [
        ("OPENAI_BASE_URL", server.openai_base_url()),
        ("OPENAI_API_KEY", "sk-test-secret-1234".to_string()),
    ];
    let args = [
        "run",
        "Compare heat pumps and gas boilers",
        "--agents",
        "3",
        "--concurrency",
        "1",
        "--retries",
        "0",
        "--json",
        "--quiet",
        "--out",
        "out",
    ];
    let (code, first, stderr) = belt(&dir, &args, &env).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(first["status"], "failed");
    let id = first["run_id"].as_str().unwrap().to_string();
    let before = server.calls().len();
    assert_eq!(before, 4, "a decomposition and three workers");

    // Resuming alone does nothing, and says what would.
    let (code, _, stderr) = belt(&dir, &["resume", &id], &env).await;
    assert_eq!(code, 0);
    assert!(stderr.contains("already finished") && stderr.contains("--retry-failed"), "{stderr}");
    assert_eq!(server.calls().len(), before);

    server.set_default(ok());
    let (code, again, stderr) = belt(&dir, &["resume", "--retry-failed", &id, "--json"], &env).await;
    assert_eq!(code, 0, "{stderr}");
    // It says what it did: resumed, what came from the record, what this segment paid.
    assert!(stderr.contains(&format!("run {id} resumed")), "{stderr}");
    assert!(
        stderr.contains("2 steps replayed from the record") && stderr.contains("this segment: 2 calls"),
        "{stderr}"
    );
    assert_eq!(again["status"], "completed");
    assert_eq!(again["run_id"], id.as_str());
    assert_eq!(server.calls().len(), before + 2, "only the two failed workers are called again");
    let (_, stored, _) = belt(&dir, &["runs", "export", &id], &env).await;
    assert_eq!(stored["status"], "completed", "the new result is recorded");
}

/// Issue 18, defect 6, as found: a server reporting 5M input and 5M output tokens for every
/// call made a run with `--budget-usd 0.5` end at $15.00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lies_about_usage_cannot_break_the_budget() {
    let server = FakeServer::start().await.unwrap();
    let lying =
        FakeUsage { input: 5_000_000, output: 5_000_000, cache_read: 0, cache_write: 0, reasoning: 0 };
    server.set_default(FakeResponse::openai_json("gpt-4.1-mini", "fine", "stop", lying));
    let dir = Dir::new("lying-usage");
    let env = [("OPENAI_BASE_URL", server.openai_base_url()), ("OPENAI_API_KEY", "sk-x".to_string())];
    let events = dir.0.join("events.jsonl");
    let (code, r, stderr) = belt(
        &dir,
        &[
            "run",
            "Compare heat pumps and gas boilers",
            "--agents",
            "5",
            "--json",
            "--out",
            "out",
            "--budget-usd",
            "0.5",
            "--events",
            events.to_str().unwrap(),
        ],
        &env,
    )
    .await;
    assert_eq!(r["status"], "budget_exhausted", "{stderr}");
    assert_ne!(code, 101, "{stderr}");
    let cost = r["cost_usd"].as_f64().unwrap();
    assert!(cost <= 0.5, "cost ${cost} over the $0.50 budget");
    assert!(r["stop_reason"].as_str().unwrap().contains("cannot keep the budget"), "{}", r["stop_reason"]);
    assert!(stderr.contains("more than the request allows"), "{stderr}");
    // One call, booked at its request's limits, the server's report kept beside it.
    assert_eq!(server.calls().len(), 1);
    let decompose = r["agents"].as_array().unwrap().iter().find(|a| a["step"] == "decompose").unwrap();
    assert_eq!(decompose["reported_usage"]["input_tokens"], 5_000_000, "{decompose}");
    assert!(decompose["output_tokens"].as_u64().unwrap() < 5_000_000, "{decompose}");
    let log = std::fs::read_to_string(&events).unwrap();
    let said: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "usage_overreported")
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    assert_eq!(
        (said[0]["reported"]["output_tokens"].as_u64(), said[0]["stops_run"].as_bool()),
        (Some(5_000_000), Some(true))
    );
}

//! `belt run` against a local model server — a fake of llama.cpp's `llama-server` that
//! computes its replies, keeps a small context window per slot, queues requests past its
//! slots, closes its connection after each streamed reply, and can be stopped and started
//! again on the same port (see `belt_llm::fake_local`). What a user of a local model meets:
//! a window too small for a synthesizer's inputs, replies cut off by their token cap, a
//! server restarting in the middle of a run.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use belt_llm::fake_local::{FakeLocalServer, LocalConfig};
use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str, config: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("belt-local-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("belt.toml"), config).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Start `belt ARGS` against the server at `base_url`; its exit code, JSON result, stderr.
fn spawn_belt(dir: &Dir, base_url: &str, args: &[&str]) -> tokio::task::JoinHandle<(i32, Value, String)> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_belt"));
    cmd.args(args).current_dir(&dir.0).env("BELT_HOME", dir.0.join("home"));
    for key in ["BELT_MODEL", "BELT_STORE", "BELT_CONFIG", "OPENAI_API_KEY", "OPENAI_BASE_URL"] {
        cmd.env_remove(key);
    }
    cmd.env("LLAMACPP_BASE_URL", base_url).env("NO_COLOR", "1");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let out = cmd.output().expect("run belt");
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

const TASK: &str = "Compare heat pumps and gas boilers for an old house";

fn run_args(agents: &str) -> Vec<&str> {
    vec!["run", TASK, "--agents", agents, "--model", "llamacpp/qwen3-4b", "--json", "--quiet", "--out", "out"]
}

fn agents(r: &Value) -> &Vec<Value> {
    r["agents"].as_array().unwrap()
}

/// The workers whose work reaches `step`, through the inputs of the steps between.
fn workers_under(r: &Value, step: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut todo = vec![step.to_string()];
    while let Some(s) = todo.pop() {
        if s.starts_with("worker/") {
            found.insert(s);
            continue;
        }
        let a = agents(r).iter().find(|a| a["step"] == s.as_str()).unwrap_or_else(|| panic!("no step {s}"));
        todo.extend(a["inputs"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()));
    }
    found
}

/// A 12-agent cascade on a server whose slots hold 1,024 tokens each: six workers'
/// findings do not fit one synthesizer's prompt. belt learns the window from `/props`,
/// splits the groups into an extra level before any call, and completes with every
/// worker's work in the executive's synthesis; the server refuses no prompt, sees at most
/// its 4 slots' worth of calls at once, and no connection closed after a streamed reply
/// costs an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_fits_a_small_context_window() {
    let server =
        FakeLocalServer::start(LocalConfig::llamacpp().n_ctx(1024).slots(4).reply_tokens(300)).await.unwrap();
    let dir = Dir::new("window", "");
    let (code, r, stderr) = spawn_belt(&dir, &server.openai_base_url(), &run_args("12")).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    assert!(agents(&r).iter().all(|a| a["status"] == "completed"), "{stderr}");
    assert!(agents(&r).iter().all(|a| a["attempts"] == 1), "no attempt was lost: {r}");
    let all: BTreeSet<String> = (1..=12).map(|n| format!("worker/{n:03}")).collect();
    assert_eq!(workers_under(&r, "executive"), all);
    assert!(
        agents(&r).iter().any(|a| a["step"].as_str().unwrap().starts_with("synth/1/001/")),
        "the first group was split"
    );
    assert_eq!(server.overflows(), 0, "every prompt was sized before it was sent");
    // belt took the server's 4 slots as its concurrency: no request queued inside it.
    assert_eq!(server.max_waiting(), 0, "belt sent more calls than the server has slots");
    assert_eq!(server.max_completions_per_prompt(), 1);
    // Local: free, and said so (cost 0, not unknown).
    assert_eq!(r["cost_usd"], 0.0);
    assert_eq!(r["usage"]["unpriced_calls"].as_u64().unwrap_or(0), 0);
}

/// A worker cut off by its token cap is marked: its `finish_reason` is `length`, and the
/// run's events say `step_truncated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_off_by_its_cap_is_marked_truncated() {
    // Replies of 2,000 words stop at the window (1,024 tokens a slot) with `length`.
    let server = FakeLocalServer::start(LocalConfig::llamacpp().n_ctx(1024).slots(2).reply_tokens(2000))
        .await
        .unwrap();
    let dir = Dir::new("truncated", "");
    let mut args = run_args("2");
    args.extend(["--events", "events.jsonl"]);
    let (code, r, stderr) = spawn_belt(&dir, &server.openai_base_url(), &args).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let worker = agents(&r).iter().find(|a| a["step"] == "worker/001").unwrap();
    assert_eq!(worker["finish_reason"], "length", "{worker}");
    let events = std::fs::read_to_string(dir.0.join("events.jsonl")).unwrap();
    assert!(events.lines().any(|l| l.contains(r#""type":"step_truncated""#)), "{events}");
}

/// The server stops for three seconds in the middle of a 12-agent cascade and comes back
/// on the same port: the steps wait for it (the breaker's trial calls) instead of failing,
/// the run completes, and no step was answered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarting_mid_run_is_waited_out() {
    let config = LocalConfig::llamacpp().slots(4).reply_tokens(40).token_delay(Duration::from_millis(10));
    let server = FakeLocalServer::start(config).await.unwrap();
    let dir = Dir::new("restart", "[providers.llamacpp]\nbreaker_cooldown = 0.5\n");
    let run = spawn_belt(&dir, &server.openai_base_url(), &run_args("12"));
    // Stop it once some workers have answered (the decomposition and a few workers).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while server.completions() < 4 {
        assert!(std::time::Instant::now() < deadline, "belt made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!run.is_finished(), "belt waited for the server");
    server.restart().await.unwrap();
    let (code, r, stderr) = run.await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(r["status"], "completed", "{}", r["stop_reason"]);
    assert!(agents(&r).iter().all(|a| a["status"] == "completed"), "{r}");
    assert_eq!(server.max_completions_per_prompt(), 1, "no step was answered twice");
    assert_eq!(server.completions(), 16, "decompose, 12 workers, 2 synthesizers, the executive");
}

/// `--continue-truncated 1`: a worker stopped by its token cap (1,024 tokens, the
/// server's window being larger) is asked once to go on, as a step of its own, and its
/// output is the two parts joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_worker_is_asked_to_continue() {
    let server = FakeLocalServer::start(LocalConfig::llamacpp().n_ctx(16_384).slots(2).reply_tokens(1500))
        .await
        .unwrap();
    let dir = Dir::new("continue", "");
    let mut args = run_args("2");
    args.extend(["--continue-truncated", "1"]);
    let (code, r, stderr) = spawn_belt(&dir, &server.openai_base_url(), &args).await.unwrap();
    assert_eq!(code, 0, "{stderr}");
    let step =
        |id: &str| agents(&r).iter().find(|a| a["step"] == id).unwrap_or_else(|| panic!("no {id}: {r}"));
    assert_eq!(step("worker/001")["finish_reason"], "length");
    let more = step("worker/001/more1");
    assert_eq!(more["status"], "completed");
    assert_eq!(more["inputs"][0], "worker/001");
    // The continuation answered the request to go on (the fake echoes its last message).
    let out = r["final_output"].as_str().unwrap();
    assert!(out.contains("You were cut off"), "the parts are joined");
    assert!(agents(&r).iter().all(|a| !a["step"].as_str().unwrap().ends_with("more2")), "once only");
}

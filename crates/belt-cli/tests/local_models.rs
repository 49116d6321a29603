//! `belt` against a model that has no known price and stops at its token cap, reached
//! through `OPENAI_BASE_URL`: costs read "unknown" (never $0.0000), truncated steps are
//! marked, a USD budget is refused before any call, and `--model` takes the place of a
//! workflow file's default model. The fake listens on 127.0.0.1, where belt takes a server
//! for the user's own and bills it as free; `shipped_prices = true` makes it a gateway in
//! front of OpenAI, billed at OpenAI's prices — which this model does not have.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use belt_llm::fake_server::{FakeResponse, FakeServer, FakeUsage, UsageShape};

/// No price in belt's table.
const LOCAL: &str = "openai/qwen2.5-7b-local";

/// The fake stands for a gateway in front of OpenAI (see the module docs).
const GATEWAY: &str = "[providers.openai]\nshipped_prices = true\n";

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("belt-local-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(d.join("home")).unwrap();
        std::fs::write(d.join("belt.toml"), GATEWAY).unwrap();
        Dir(d)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run belt against `server` only, off the test's runtime so the fake server keeps serving.
async fn belt(dir: &Dir, server: &FakeServer, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_belt"));
    cmd.args(args).current_dir(&dir.0).env("BELT_HOME", dir.0.join("home")).env("OLLAMA_HOST", "127.0.0.1:9");
    for key in ["BELT_MODEL", "BELT_STORE", "BELT_CONFIG", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"] {
        cmd.env_remove(key);
    }
    cmd.env("OPENAI_BASE_URL", server.openai_base_url()).env("OPENAI_API_KEY", "sk-local");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run belt")).await.unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A server whose every reply stops at the token cap (`finish_reason: length`).
async fn truncating_server() -> FakeServer {
    let server = FakeServer::start().await.unwrap();
    let usage = FakeUsage { input: 50, output: 16, ..FakeUsage::default() };
    server.set_default(FakeResponse::openai_stream(
        "qwen2.5-7b-local",
        &["## Findings\n", "Heat pumps, with their"],
        "length",
        usage,
        UsageShape::EmptyChoices,
    ));
    server
}

fn run_id(stdout: &str) -> String {
    let line = stdout.lines().find(|l| l.starts_with("run id:")).unwrap_or_else(|| panic!("{stdout}"));
    line.trim_start_matches("run id:").trim().to_string()
}

fn report(dir: &Path, ext: &str) -> String {
    let out = dir.join("out");
    let file = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == ext))
        .unwrap_or_else(|| panic!("no .{ext} report in {}", out.display()));
    std::fs::read_to_string(file).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriced_costs_read_unknown_and_truncated_steps_are_marked_everywhere() {
    let server = truncating_server().await;
    let dir = Dir::new("unknown");
    let args = ["run", "Compare heat pumps and gas boilers", "--agents", "2", "--model", LOCAL];
    let run = belt(
        &dir,
        &server,
        &[&args[..], &["--out", "out", "--format", "md,html", "--retries", "0"]].concat(),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let calls = server.calls().len();
    assert!(calls >= 3, "a decomposition and two workers: {calls}");

    // The summary: every tier's cost and the total are unknown, never $0.0000.
    assert!(!run.stdout.contains("$0.0000"), "{}", run.stdout);
    assert!(run.stdout.contains("┆ unknown ┆"), "the tier table: {}", run.stdout);
    assert!(run.stdout.contains("tokens out, unknown\n"), "the usage line: {}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "cost:    unknown for {calls} calls to a model without a known price ({LOCAL})"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("[prices.\"{LOCAL}\"] input = 0.0, output = 0.0")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "warning: {calls} steps stopped at their token cap, output cut off: decompose, worker/"
        )),
        "{}",
        run.stdout
    );
    // Progress: a warning when each step is cut off.
    assert!(run.stderr.contains("warning: worker/001: openai/qwen2.5-7b-local stopped at the token cap (1024 tokens); its output is cut off"), "{}", run.stderr);
    assert!(run.stderr.contains("started: cascade, 2 agents,"), "{}", run.stderr);

    let id = run_id(&run.stdout);
    let list = belt(&dir, &server, &["runs", "list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(list.stdout.contains("unknown") && !list.stdout.contains("$0.0000"), "{}", list.stdout);
    let show = belt(&dir, &server, &["runs", "show", &id]).await;
    assert!(show.stdout.contains("completed, truncated"), "{}", show.stdout);
    assert!(show.stdout.contains("unknown") && !show.stdout.contains("$0.0000"), "{}", show.stdout);

    for ext in ["md", "html"] {
        let text = report(&dir.0, ext);
        assert!(!text.contains("$0.0000"), "{ext}: {text}");
        assert!(text.contains("unknown"), "{ext}");
        assert!(
            text.contains(&format!(
                "{calls} steps stopped at their token cap, output cut off: decompose, worker/"
            )),
            "{ext}: {text}"
        );
        assert!(text.contains("truncated: stopped at its token cap"), "{ext}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usd_budget_with_an_unpriced_model_is_refused_before_any_call() {
    let server = truncating_server().await;
    let dir = Dir::new("budget");
    let run = [
        "run",
        "Compare heat pumps",
        "--agents",
        "2",
        "--model",
        LOCAL,
        "--budget-usd",
        "0.5",
        "--out",
        "out",
    ];
    let refused = belt(&dir, &server, &run).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(server.calls().is_empty(), "no call was made");
    let lines = format!("[prices.\"{LOCAL}\"]\ninput = 0.0\noutput = 0.0");
    for want in ["USD budget", "$0.5", &format!("`{LOCAL}` has no known price"), &lines, "--budget-tokens"] {
        assert!(refused.stderr.contains(want), "missing {want:?}: {}", refused.stderr);
    }

    // A workflow file with a USD budget: `belt validate` says so, naming the model.
    let file = dir.write(
        "local.yaml",
        &format!(
            "name: local\nbudget: {{usd: 1.0}}\ndefaults: {{model: {LOCAL}}}\nagents:\n  - {{id: writer, role: a writer}}\n\
             pattern: sequential\nsteps:\n  - {{id: draft, agent: writer, prompt: Write}}\n"
        ),
    );
    let file = file.to_str().unwrap();
    let invalid = belt(&dir, &server, &["validate", file]).await;
    assert_eq!(invalid.code, 2, "{}{}", invalid.stdout, invalid.stderr);
    assert!(invalid.stderr.contains(&lines), "{}", invalid.stderr);

    // The lines it gives, in belt.toml, make both valid; the run's cost is then known.
    dir.write("belt.toml", &format!("{GATEWAY}{lines}"));
    let valid = belt(&dir, &server, &["validate", file]).await;
    assert_eq!(valid.code, 0, "{}{}", valid.stdout, valid.stderr);
    assert!(valid.stdout.contains("1 step, 1 agent"), "{}", valid.stdout);
    let ran = belt(&dir, &server, &run).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(!ran.stdout.contains("unknown"), "{}", ran.stdout);
    assert!(ran.stdout.contains("$0.0000"), "priced at 0, the cost is known: {}", ran.stdout);
}

/// The shipped template, as `belt init` writes it.
fn template(name: &str) -> &'static str {
    belt_workflow::template(name).unwrap().text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_flags_take_the_place_of_a_workflow_files_models() {
    let server = truncating_server().await;
    let dir = Dir::new("workflow");
    let pipeline = dir.write("pipeline.yaml", template("pipeline"));
    let pipeline = pipeline.to_str().unwrap();
    let run =
        belt(&dir, &server, &["run", "-f", pipeline, "--model", LOCAL, "--out", "out", "--retries", "0"])
            .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(server.calls().len(), 3, "outline, draft and edit went to the model named: {}", run.stderr);
    assert!(!run.stderr.contains("simulated provider"), "{}", run.stderr);

    // A cascade's tiers: --model for all, --executive-model for the last one. The template
    // has a USD budget, so the local model needs a price.
    dir.write("belt.toml", &format!("{GATEWAY}[prices.\"{LOCAL}\"]\ninput = 0.0\noutput = 0.0\n"));
    let research = dir.write("research.yaml", template("research"));
    let before = server.calls().len();
    let args =
        ["run", "-f", research.to_str().unwrap(), "--model", "simulated/default", "--executive-model", LOCAL];
    let run = belt(&dir, &server, &[&args[..], &["--out", "out", "--json"]].concat()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let models: Vec<(&str, &str)> = r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["tier"].as_str().unwrap(), a["model"].as_str().unwrap()))
        .collect();
    assert!(models.iter().any(|(t, m)| *t == "executive" && m.contains("qwen")), "{models:?}");
    assert!(
        models.iter().filter(|(t, _)| *t != "executive").all(|(_, m)| m.starts_with("simulated/")),
        "{models:?}"
    );
    assert_eq!(server.calls().len(), before + 1, "only the executive called the server");

    // Tier models do not apply to steps: said, and nothing runs.
    let refused = belt(&dir, &server, &["run", "-f", pipeline, "--worker-model", LOCAL]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("worker_model (--worker-model) chooses the models of a cascade's tiers"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("pattern is `sequential`"), "{}", refused.stderr);

    // An agent with a model of its own keeps it, and the run says so.
    let own = template("pipeline")
        .replace("    role: a copy editor\n", "    role: a copy editor\n    model: simulated/default\n");
    let own = dir.write("own.yaml", &own);
    let run =
        belt(&dir, &server, &["run", "-f", own.to_str().unwrap(), "--model", LOCAL, "--out", "out"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("these keep the model the file gives them: agent `editor` (simulated/default)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn belt_models_lists_what_a_reachable_local_server_serves() {
    let server = FakeServer::start().await.unwrap();
    let list = r#"{"object":"list","data":[{"id":"qwen2.5-7b-instruct","object":"model"},{"id":"phi-4","object":"model"}]}"#;
    server.on_get(FakeResponse::new(200, list).header("content-type", "application/json"));
    let dir = Dir::new("models");
    let run = |args: &'static [&'static str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_belt"));
        cmd.args(args)
            .current_dir(&dir.0)
            .env("BELT_HOME", dir.0.join("home"))
            .env("OLLAMA_HOST", server.url());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        tokio::task::spawn_blocking(move || cmd.output().expect("run belt"))
    };
    let out = run(&["models"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("Local: ollama at {}/v1 (OLLAMA_HOST):", server.url())), "{text}");
    assert!(text.contains("  ollama/qwen2.5-7b-instruct\n  ollama/phi-4"), "{text}");
    let asked = server.requests();
    assert!(asked.iter().all(|r| r.method == "GET" && r.path == "/v1/models"), "{asked:?}");

    let out = run(&["models", "--json"]).await.unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let local: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["local"] == true)
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(local, ["ollama/qwen2.5-7b-instruct", "ollama/phi-4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn belt_model_fills_in_but_does_not_replace_a_workflow_files_model() {
    let server = truncating_server().await;
    let dir = Dir::new("belt-model");
    let pipeline = dir.write("pipeline.yaml", template("pipeline"));
    // BELT_MODEL is a default: the file's own `defaults.model` (simulated) stays.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_belt"));
    cmd.args(["run", "-f", pipeline.to_str().unwrap(), "--out", "out", "--json"])
        .current_dir(&dir.0)
        .env("BELT_HOME", dir.0.join("home"))
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env("BELT_MODEL", LOCAL)
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "sk-local");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["simulated"], true);
    assert!(server.calls().is_empty(), "the file's model served");
}

//! End-to-end tests of the `belt` binary: every test runs the real executable on the
//! simulated provider, in its own temporary directory as the working directory, and checks
//! the exit code, the `--json` RunResult, the Markdown report and the `--events` JSONL log.
//!
//! Every child process runs under a deadline (it is killed and the test fails if it does not
//! exit in time), and the only waiting is polling with a deadline: no sleep is used as
//! synchronization and nothing asserts on wall-clock durations.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Longest any single `belt` process may run before the test fails.
const PROCESS_DEADLINE: Duration = Duration::from_secs(90);

const HEALTHCARE: &str = "Analyze the impact of AI on healthcare";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A temporary working directory, removed on drop unless the test is failing (kept for
/// inspection; its path is in the panic messages).
struct TestDir {
    path: PathBuf,
}

impl TestDir {
    fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("belt-cli-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TestDir { path }
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.join(rel);
        std::fs::write(&p, text).expect("write a test file");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What a finished `belt` process left.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    /// For messages.
    cmdline: String,
}

impl Output {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(expected),
            "`{}` exited with {:?}, expected {expected}\n--- stderr ---\n{}\n--- stdout (first 2000 chars) ---\n{}",
            self.cmdline,
            self.status,
            self.stderr,
            self.stdout.chars().take(2000).collect::<String>()
        );
        self
    }

    /// stdout parsed as the RunResult JSON (`--json`).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of `{}` is not JSON ({e})\n--- stderr ---\n{}\n--- stdout ---\n{}",
                self.cmdline, self.stderr, self.stdout
            )
        })
    }
}

/// A running `belt` process whose stdout and stderr are drained by threads (so a large
/// `--json` output can never block it on a full pipe).
struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    cmdline: String,
}

fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn spawn_belt(dir: &TestDir, args: &[&str]) -> Running {
    // Each test keeps its runs in its own directory, never in the user's data dir.
    let mut cmd = common::belt_command(&dir.path, &dir.path.join("belt-home"), args);
    cmd.env("NO_COLOR", "1");
    let mut child = cmd.spawn().expect("spawn the belt binary");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let cmdline = format!("belt {}", args.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(" "));
    Running { child, stdout, stderr, cmdline }
}

impl Running {
    /// Wait for the process to exit, killing it (and failing the test) past the deadline.
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        let status = loop {
            match self.child.try_wait().expect("poll the belt process") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr.join().unwrap_or_default();
                    panic!(
                        "`{}` did not exit within {PROCESS_DEADLINE:?}\n--- stderr ---\n{stderr}",
                        self.cmdline
                    );
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        Output {
            status,
            stdout: self.stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
            cmdline: self.cmdline,
        }
    }
}

fn belt(dir: &TestDir, args: &[&str]) -> Output {
    spawn_belt(dir, args).finish()
}

/// Run with `--json --quiet --sim-latency-ms 0` and the report in `DIR/out`; expects the
/// given exit code and returns the RunResult.
fn run_json(dir: &TestDir, args: &[&str], code: i32) -> Value {
    let out = dir.join("out");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", "--quiet", "--out", out.to_str().unwrap()]);
    if !args.contains(&"--sim-latency-ms") {
        all.extend(["--sim-latency-ms", "0"]);
    }
    let o = belt(dir, &all);
    o.assert_code(code);
    o.json()
}

/// Every event of a JSONL events file; asserts each line is a JSON object.
fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} of {} is not JSON ({e}): {line}", i + 1, path.display()));
            assert!(v.is_object(), "line {} of {} is not a JSON object: {line}", i + 1, path.display());
            v
        })
        .collect()
}

fn ty(e: &Value) -> &str {
    e["type"].as_str().unwrap_or_else(|| panic!("event without a type: {e}"))
}

fn step(e: &Value) -> Option<&str> {
    e["step"].as_str()
}

fn count_type(events: &[Value], t: &str) -> usize {
    events.iter().filter(|e| ty(e) == t).count()
}

/// The seq of the first event of type `t` for step `s`.
fn seq_of(events: &[Value], t: &str, s: &str) -> u64 {
    events
        .iter()
        .find(|e| ty(e) == t && step(e) == Some(s))
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or_else(|| panic!("no {t} event for {s}"))
}

/// The log is well formed: seq 1, 2, 3, … in file order, one run id, run_started first and
/// run_finished last.
fn check_event_log(events: &[Value], run_id: &str) {
    assert!(!events.is_empty(), "the events file is empty");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1), "event {} has a wrong seq: {e}", i + 1);
        assert_eq!(e["run_id"].as_str(), Some(run_id), "event of another run: {e}");
        assert!(e["ts"].as_str().is_some_and(|t| !t.is_empty()), "event without ts: {e}");
    }
    assert_eq!(ty(&events[0]), "run_started");
    assert_eq!(ty(events.last().unwrap()), "run_finished");
    assert_eq!(count_type(events, "run_started"), 1);
    assert_eq!(count_type(events, "run_finished"), 1);
}

/// Most steps in flight at once according to the event log.
fn max_in_flight(events: &[Value]) -> usize {
    let mut running = BTreeSet::new();
    let mut max = 0;
    for e in events {
        let Some(s) = step(e) else { continue };
        match ty(e) {
            "step_started" => {
                running.insert(s.to_string());
                max = max.max(running.len());
            }
            "step_completed" | "step_failed" | "step_skipped" => {
                running.remove(s);
            }
            _ => {}
        }
    }
    max
}

fn agents(r: &Value) -> &[Value] {
    r["agents"].as_array().expect("agents is an array")
}

fn agents_of<'a>(r: &'a Value, tier: &str) -> Vec<&'a Value> {
    agents(r).iter().filter(|a| a["tier"] == tier).collect()
}

fn agent<'a>(r: &'a Value, step: &str) -> &'a Value {
    agents(r).iter().find(|a| a["step"] == step).unwrap_or_else(|| panic!("no agent {step} in the result"))
}

fn inputs(a: &Value) -> Vec<&str> {
    a["inputs"].as_array().expect("inputs is an array").iter().map(|v| v.as_str().unwrap()).collect()
}

fn status_counts(r: &Value, tier: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in agents_of(r, tier) {
        *m.entry(a["status"].as_str().unwrap().to_string()).or_default() += 1;
    }
    m
}

fn shape(r: &Value) -> Vec<u64> {
    r["shape"].as_array().expect("shape is an array").iter().map(|v| v.as_u64().unwrap()).collect()
}

fn calls(r: &Value) -> u64 {
    r["usage"]["calls"].as_u64().expect("usage.calls")
}

/// Usage adds up: calls = Σ attempts, tokens = Σ agents' tokens, cost = Σ agents' cost.
fn check_accounting(r: &Value) {
    let sum_u = |k: &str| agents(r).iter().map(|a| a[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(calls(r), sum_u("attempts"), "usage.calls differs from the agents' attempts");
    assert_eq!(r["usage"]["input_tokens"].as_u64(), Some(sum_u("input_tokens")), "input tokens");
    assert_eq!(r["usage"]["output_tokens"].as_u64(), Some(sum_u("output_tokens")), "output tokens");
    let sum_cost: f64 = agents(r).iter().map(|a| a["cost_usd"].as_f64().unwrap()).sum();
    let cost = r["cost_usd"].as_f64().expect("cost_usd");
    assert!((cost - sum_cost).abs() < 1e-9, "cost_usd {cost} differs from the agents' sum {sum_cost}");
}

/// Files under `dir` (recursively) whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            found.push(p);
        }
    }
    found
}

/// The single Markdown document of a result; asserts it exists inside `dir`.
fn report_path(r: &Value, dir: &Path) -> PathBuf {
    let docs = r["documents"].as_array().expect("documents is an array");
    assert_eq!(docs.len(), 1, "expected one document: {docs:?}");
    assert_eq!(docs[0]["format"], "markdown");
    let path = PathBuf::from(docs[0]["path"].as_str().expect("document path"));
    assert!(path.is_file(), "the report {} does not exist", path.display());
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("md"));
    let parent = path.parent().unwrap().canonicalize().unwrap();
    assert_eq!(parent, dir.canonicalize().unwrap(), "the report is not in the --out directory");
    path
}

/// The body of a `## heading` section of a Markdown report, up to the next `## ` heading.
fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md
        .lines()
        .scan(0usize, |pos, line| {
            let at = *pos;
            *pos += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| line.trim_end() == heading)
        .map(|(at, line)| at + line.len())
        .unwrap_or_else(|| panic!("the report has no `{heading}` section"));
    let rest = &md[start..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

// ---------------------------------------------------------------------------------------
// 1. A full run
// ---------------------------------------------------------------------------------------

#[test]
fn full_run_json_report_and_events() {
    let dir = TestDir::new("full");
    let out = dir.join("reports");
    let events_path = dir.join("events.jsonl");
    let o = belt(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "--agents",
            "12",
            "--json",
            "--sim-latency-ms",
            "0",
            "--out",
            out.to_str().unwrap(),
            "--events",
            events_path.to_str().unwrap(),
        ],
    );
    o.assert_code(0);
    let r = o.json();

    assert_eq!(r["status"], "completed");
    assert_eq!(r["pattern"], "cascade");
    assert_eq!(r["task"], HEALTHCARE);
    assert_eq!(r["simulated"], true);
    assert_eq!(shape(&r), [12, 2, 1]);
    assert_eq!(r["plan"].as_array().unwrap().len(), 12);
    assert!(r["run_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r["started_at"].is_string());

    // The agents: 1 decomposer, 12 workers, 2 synthesizers, 1 executive, all completed once.
    assert_eq!(agents(&r).len(), 16);
    for a in agents(&r) {
        assert_eq!(a["status"], "completed", "{a}");
        assert_eq!(a["attempts"], 1, "{a}");
        assert!(a["model"].as_str().unwrap().starts_with("simulated/"), "{a}");
        assert!(a["output"].as_str().is_some_and(|t| !t.trim().is_empty()), "{a}");
        assert!(a["error"].is_null(), "{a}");
        assert!(a["input_tokens"].as_u64().unwrap() > 0 && a["output_tokens"].as_u64().unwrap() > 0, "{a}");
        assert!(a["cost_usd"].as_f64().unwrap() > 0.0, "{a}");
    }
    assert_eq!(agents_of(&r, "decomposer").len(), 1);
    let workers = agents_of(&r, "worker");
    let expected: Vec<String> = (1..=12).map(|i| format!("worker/{i:03}")).collect();
    assert_eq!(workers.iter().map(|a| a["step"].as_str().unwrap()).collect::<Vec<_>>(), expected);
    let synths = agents_of(&r, "synthesizer");
    assert_eq!(
        synths.iter().map(|a| a["step"].as_str().unwrap()).collect::<Vec<_>>(),
        ["synth/1/001", "synth/1/002"]
    );
    // Together the synthesizers read every worker exactly once.
    let mut read: Vec<&str> = synths.iter().flat_map(|a| inputs(a)).collect();
    read.sort();
    assert_eq!(read, expected);
    let execs = agents_of(&r, "executive");
    assert_eq!(execs.len(), 1);
    assert_eq!(inputs(execs[0]), ["synth/1/001", "synth/1/002"]);
    assert_eq!(r["final_output"], execs[0]["output"], "the final output is the executive's");

    assert_eq!(calls(&r), 16);
    assert!(r["cost_usd"].as_f64().unwrap() > 0.0);
    check_accounting(&r);

    // The report.
    let path = report_path(&r, &out);
    let md = std::fs::read_to_string(&path).unwrap();
    assert!(md.starts_with(&format!("# {HEALTHCARE}")), "report title: {}", md.lines().next().unwrap_or(""));
    assert!(md.contains("**Simulated run.**"), "the report does not say it is simulated");
    let findings = section(&md, "## Worker findings");
    let worker_headings: Vec<&str> = findings.lines().filter(|l| l.starts_with("### ")).collect();
    assert_eq!(worker_headings.len(), 12, "worker sections: {worker_headings:#?}");
    for (i, h) in worker_headings.iter().enumerate() {
        assert!(h.starts_with(&format!("### {}. ", i + 1)), "worker section {} is `{h}`", i + 1);
    }
    let syntheses = section(&md, "## Syntheses");
    assert!(syntheses.contains("### synth/1/001") && syntheses.contains("### synth/1/002"), "{syntheses}");
    let final_section = section(&md, "## Final synthesis");
    let exec_output = execs[0]["output"].as_str().unwrap();
    let probe = exec_output.lines().find(|l| l.len() > 40).expect("a long line in the executive output");
    assert!(final_section.contains(probe), "the final synthesis section lacks the executive's output");

    // The events.
    let events = read_events(&events_path);
    check_event_log(&events, r["run_id"].as_str().unwrap());
    // The first event already knows what the result knows: a consumer that reads only
    // `run_started` must not take simulated texts for a model's.
    assert_eq!(events[0]["simulated"], true, "{}", events[0]);
    for t in ["plan_ready", "tier_started", "tier_completed", "document_written"] {
        assert!(count_type(&events, t) >= 1, "no {t} event");
    }
    assert_eq!(count_type(&events, "step_completed"), 16);
    assert_eq!(count_type(&events, "step_started"), 16);
    assert_eq!(count_type(&events, "tier_started"), 3);
    assert_eq!(count_type(&events, "tier_completed"), 3);
    for t in ["step_failed", "step_retrying", "step_skipped", "budget_exhausted", "plan_fallback"] {
        assert_eq!(count_type(&events, t), 0, "unexpected {t} event");
    }
    let plan_ready = events.iter().find(|e| ty(e) == "plan_ready").unwrap();
    assert_eq!(plan_ready["shape"], serde_json::json!([12, 2, 1]));
    assert_eq!(plan_ready["subtasks"], 12);
    let written = events.iter().find(|e| ty(e) == "document_written").unwrap();
    assert_eq!(written["path"].as_str(), r["documents"][0]["path"].as_str());
    let finished = events.last().unwrap();
    assert_eq!(finished["status"], "completed");
    assert_eq!(finished["calls"], 16);
    // The executive starts after both synthesizers completed.
    let exec_start = seq_of(&events, "step_started", "executive");
    assert!(exec_start > seq_of(&events, "step_completed", "synth/1/001"));
    assert!(exec_start > seq_of(&events, "step_completed", "synth/1/002"));

    // Nothing else was written in the working directory (no default ./belt-out).
    assert!(!dir.join("belt-out").exists());
}

#[test]
fn default_out_dir_is_belt_out_in_the_working_directory() {
    let dir = TestDir::new("default-out");
    let o = belt(&dir, &["run", "Write a short note", "--agents", "2", "--sim-latency-ms", "0", "--quiet"]);
    o.assert_code(0);
    let reports = files_ending(&dir.join("belt-out"), ".md");
    assert_eq!(reports.len(), 1, "reports: {reports:?}");
    // No stray write probe is left behind.
    let left: Vec<_> =
        std::fs::read_dir(dir.join("belt-out")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "files in belt-out: {left:?}");
}

// ---------------------------------------------------------------------------------------
// 2. Tier shapes
// ---------------------------------------------------------------------------------------

/// One `--agents` case: the count, extra arguments, the synthesizers and executives
/// expected, and the tier shape.
type ShapeCase<'a> = (&'a str, &'a [&'a str], usize, usize, &'a [u64]);

#[test]
fn tier_shapes() {
    let dir = TestDir::new("shapes");
    let cases: &[ShapeCase] = &[
        ("1", &[], 0, 0, &[1]),
        ("4", &[], 0, 0, &[4]),
        ("5", &[], 1, 0, &[5, 1]),
        ("9", &[], 1, 0, &[9, 1]),
        ("10", &[], 2, 1, &[10, 2, 1]),
        ("55", &[], 13, 1, &[55, 11, 2, 1]),
        ("9", &["--group-size", "3"], 3, 1, &[9, 3, 1]),
        ("3", &["--synthesize", "always"], 0, 1, &[3, 1]),
        ("12", &["--synthesize", "never"], 0, 0, &[12]),
    ];
    for &(n, extra, n_synth, n_exec, want_shape) in cases {
        let mut args = vec!["run", "Survey renewable energy storage", "--agents", n];
        args.extend_from_slice(extra);
        let r = run_json(&dir, &args, 0);
        let what = format!("--agents {n} {extra:?}");
        assert_eq!(r["status"], "completed", "{what}");
        assert_eq!(shape(&r), want_shape, "{what}");
        let workers = agents_of(&r, "worker");
        assert_eq!(workers.len(), n.parse::<usize>().unwrap(), "{what}");
        assert_eq!(agents_of(&r, "synthesizer").len(), n_synth, "{what}");
        assert_eq!(agents_of(&r, "executive").len(), n_exec, "{what}");
        assert_eq!(calls(&r) as usize, 1 + workers.len() + n_synth + n_exec, "{what}");
        check_accounting(&r);
        assert!(r["final_output"].as_str().is_some_and(|t| !t.trim().is_empty()), "{what}: no final output");
    }
}

#[test]
fn deep_cascade_levels_feed_each_other() {
    let dir = TestDir::new("deep");
    let r = run_json(&dir, &["run", "Survey renewable energy storage", "--agents", "55"], 0);
    let level = |l: u32| -> Vec<&Value> {
        agents_of(&r, "synthesizer")
            .into_iter()
            .filter(|a| a["step"].as_str().unwrap().starts_with(&format!("synth/{l}/")))
            .collect()
    };
    let (l1, l2) = (level(1), level(2));
    assert_eq!((l1.len(), l2.len()), (11, 2));
    for a in &l1 {
        assert!(inputs(a).iter().all(|i| i.starts_with("worker/")), "{a}");
    }
    let mut l2_inputs: Vec<&str> = l2.iter().flat_map(|a| inputs(a)).collect();
    l2_inputs.sort();
    let mut l1_steps: Vec<&str> = l1.iter().map(|a| a["step"].as_str().unwrap()).collect();
    l1_steps.sort();
    assert_eq!(l2_inputs, l1_steps, "level 2 reads every level-1 synthesizer once");
    assert_eq!(inputs(agent(&r, "executive")), ["synth/2/001", "synth/2/002"]);
}

#[test]
fn synthesize_always_puts_an_executive_over_few_workers() {
    let dir = TestDir::new("always");
    let r = run_json(&dir, &["run", "Compare three databases", "--agents", "3", "--synthesize", "always"], 0);
    let exec = agent(&r, "executive");
    assert_eq!(inputs(exec), ["worker/001", "worker/002", "worker/003"]);
    assert_eq!(r["final_output"], exec["output"]);
}

#[test]
fn synthesize_never_combines_the_worker_outputs() {
    let dir = TestDir::new("never");
    let r =
        run_json(&dir, &["run", "Compare twelve databases", "--agents", "12", "--synthesize", "never"], 0);
    assert!(agents_of(&r, "synthesizer").is_empty());
    assert!(agents_of(&r, "executive").is_empty());
    let fin = r["final_output"].as_str().expect("a final output");
    for (i, w) in agents_of(&r, "worker").iter().enumerate() {
        assert!(fin.contains(&format!("## {}. ", i + 1)), "no heading for worker {}", i + 1);
        assert!(fin.contains(w["output"].as_str().unwrap().trim_end()), "worker {} output missing", i + 1);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Bad input
// ---------------------------------------------------------------------------------------

/// Runs `belt run <args>` expecting exit code 2 before any call: stderr names the problem
/// (every `needles` entry, case-insensitive), no report exists, no event was written.
fn assert_bad_input(dir: &TestDir, args: &[&str], needles: &[&str]) {
    let events = dir.join("bad-events.jsonl");
    let _ = std::fs::remove_file(&events);
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend(["--sim-latency-ms", "0", "--events", events.to_str().unwrap()]);
    if !args.contains(&"--out") {
        all.extend(["--out", "out"]);
    }
    let o = belt(dir, &all);
    o.assert_code(2);
    let err = o.stderr.to_lowercase();
    for n in needles {
        assert!(
            err.contains(&n.to_lowercase()),
            "`{}`: stderr does not mention `{n}`:\n{}",
            o.cmdline,
            o.stderr
        );
    }
    assert!(o.stdout.trim().is_empty(), "`{}` printed on stdout:\n{}", o.cmdline, o.stdout);
    let reports = files_ending(&dir.path, ".md");
    assert!(reports.is_empty(), "`{}` wrote a report: {reports:?}", o.cmdline);
    let logged = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(logged.trim().is_empty(), "`{}` logged events:\n{logged}", o.cmdline);
}

#[test]
fn bad_input_exits_2_before_any_call() {
    let dir = TestDir::new("bad");
    dir.write("not-a-dir", "a regular file");
    let invalid = dir.write("invalid.json", r#"[{"id": "a", "description": "A""#);
    let object = dir.write("object.json", r#"{"id": "a", "description": "A"}"#);
    let empty = dir.write("empty.json", "[]");
    let cycle = dir.write(
        "cycle.json",
        r#"[{"id": "a", "description": "A", "dependencies": ["b"]},
            {"id": "b", "description": "B", "dependencies": ["a"]},
            {"id": "c", "description": "C", "dependencies": []}]"#,
    );
    let unknown = dir.write(
        "unknown.json",
        r#"[{"id": "a", "description": "A", "dependencies": []},
            {"id": "b", "description": "B", "dependencies": ["zz"]}]"#,
    );
    let dup = dir.write("dup.json", r#"[{"id": "a", "description": "A"}, {"id": "a", "description": "B"}]"#);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (invalid, object, empty, cycle, unknown, dup) =
        (s(&invalid), s(&object), s(&empty), s(&cycle), s(&unknown), s(&dup));

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec![""], vec!["task is empty"]),
        (vec!["   "], vec!["task is empty"]),
        (vec!["Task", "--agents", "0"], vec!["--agents", "'0'"]),
        (vec!["Task", "--agents", "100001"], vec!["--agents", "100001"]),
        (vec!["Task", "--concurrency", "0"], vec!["--concurrency", "'0'"]),
        // clap reads a bare `-1` as an unknown flag; the message still names it.
        (vec!["Task", "--budget-usd", "-1"], vec!["--budget-usd", "positive", "-1"]),
        (vec!["Task", "--budget-usd=-1"], vec!["--budget-usd", "-1"]),
        (vec!["Task", "--budget-usd", "0"], vec!["--budget-usd", "positive"]),
        (vec!["Task", "--budget-usd", "NaN"], vec!["--budget-usd"]),
        (vec!["Task", "--budget-tokens", "0"], vec!["--budget-tokens"]),
        (vec!["Task", "--budget-calls", "0"], vec!["--budget-calls"]),
        (vec!["Task", "--model", "nope/x"], vec!["unknown provider", "nope"]),
        (vec!["Task", "--worker-model", "nope/x"], vec!["unknown provider", "nope"]),
        (vec!["Task", "--model", "noslash"], vec!["noslash", "provider/model"]),
        (vec!["Task", "--plan", "missing.json"], vec!["cannot read the plan file", "missing.json"]),
        (vec!["Task", "--plan", &invalid], vec!["invalid.json", "not a json array"]),
        (vec!["Task", "--plan", &object], vec!["object.json", "not a json array"]),
        (vec!["Task", "--plan", &empty], vec!["plan is empty"]),
        (vec!["Task", "--plan", &unknown], vec!["`b` depends on `zz`", "not in the plan"]),
        (vec!["Task", "--plan", &dup], vec!["`a`", "more than once"]),
        (vec!["Task", "--out", "not-a-dir/reports"], vec!["cannot write reports to", "not-a-dir/reports"]),
        (vec!["Task", "--min-success", "2"], vec!["--min-success", "between 0 and 1"]),
        (vec!["Task", "--sim-fail-rate", "1.5"], vec!["--sim-fail-rate"]),
        (vec!["Task", "--timeout", "0"], vec!["--timeout"]),
        (vec!["Task", "--synthesize", "sometimes"], vec!["sometimes", "--synthesize"]),
        (vec!["Task", "--pattern", "pyramid"], vec!["unknown pattern", "pyramid", "cascade, swarm"]),
        (vec!["Task", "--pattern", "saga"], vec!["`saga` needs more than a task", "workflow file"]),
        (vec!["Task", "--refine", "21"], vec!["--refine", "21"]),
        (vec!["Task", "--hitl-timeout", "0"], vec!["--hitl-timeout"]),
        (vec!["Task", "--review-plan"], vec!["--review-plan needs someone", "--approve-all"]),
        (vec!["Task", "--group-size", "1"], vec!["--group-size"]),
    ];
    for (args, needles) in &cases {
        assert_bad_input(&dir, args, needles);
    }

    // The cycle is shown as a path that returns to its start.
    assert_bad_input(&dir, &["Task", "--plan", &cycle], &["dependency cycle"]);
    let o = belt(&dir, &["run", "Task", "--plan", &cycle, "--out", "out"]);
    assert!(
        o.stderr.contains("a -> b -> a") || o.stderr.contains("b -> a -> b"),
        "the cycle path is not shown: {}",
        o.stderr
    );
}

#[test]
fn unknown_provider_from_the_environment_is_bad_input() {
    let dir = TestDir::new("env-model");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_belt"));
    cmd.args(["run", "Task", "--sim-latency-ms", "0", "--out", "out"])
        .current_dir(&dir.path)
        .env("BELT_MODEL", "nope/x")
        .env("BELT_HOME", dir.path.join("belt-home"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn belt");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let o = Running { child, stdout, stderr, cmdline: "BELT_MODEL=nope/x belt run Task".into() }.finish();
    o.assert_code(2);
    assert!(o.stderr.contains("unknown provider `nope`"), "{}", o.stderr);
    assert!(files_ending(&dir.path, ".md").is_empty());
}

// ---------------------------------------------------------------------------------------
// 4. A given plan with dependencies
// ---------------------------------------------------------------------------------------

#[test]
fn plan_file_with_dependencies() {
    let dir = TestDir::new("plan");
    let plan = dir.write(
        "plan.json",
        r#"[
          {"id": "a", "description": "Collect the data", "specialization": "researcher", "priority": 5, "dependencies": []},
          {"id": "b", "description": "Analyze the costs", "specialization": "economist", "priority": 5, "dependencies": ["a"]},
          {"id": "c", "description": "Analyze the risks", "specialization": "risk analyst", "priority": 5, "dependencies": ["a"]},
          {"id": "d", "description": "Recommend a course of action", "specialization": "strategist", "priority": 5, "dependencies": ["b", "c"]}
        ]"#,
    );
    let events_path = dir.join("events.jsonl");
    // --agents is overridden by the plan's length.
    let r = run_json(
        &dir,
        &[
            "run",
            "Decide on a new warehouse",
            "--agents",
            "9",
            "--plan",
            plan.to_str().unwrap(),
            "--sim-latency-ms",
            "3",
            "--events",
            events_path.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["status"], "completed");
    assert_eq!(shape(&r), [4]);
    let ids: Vec<&str> = r["plan"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(r["plan"][3]["dependencies"], serde_json::json!(["b", "c"]));
    assert!(agents_of(&r, "decomposer").is_empty(), "the plan was given; nothing decomposes");
    assert!(agents(&r).iter().all(|a| a["step"] != "decompose"));
    assert_eq!(agents_of(&r, "worker").len(), 4);
    assert_eq!(calls(&r), 4);
    check_accounting(&r);
    assert!(inputs(agent(&r, "worker/001")).is_empty());
    assert_eq!(inputs(agent(&r, "worker/002")), ["worker/001"]);
    assert_eq!(inputs(agent(&r, "worker/003")), ["worker/001"]);
    assert_eq!(inputs(agent(&r, "worker/004")), ["worker/002", "worker/003"]);

    let events = read_events(&events_path);
    check_event_log(&events, r["run_id"].as_str().unwrap());
    let plan_ready = events.iter().find(|e| ty(e) == "plan_ready").unwrap();
    assert_eq!(plan_ready["source"], "given");
    assert_eq!(plan_ready["subtasks"], 4);
    assert!(events.iter().all(|e| step(e) != Some("decompose")));
    let done = |s: &str| seq_of(&events, "step_completed", s);
    let started = |s: &str| seq_of(&events, "step_started", s);
    assert!(started("worker/002") > done("worker/001"));
    assert!(started("worker/003") > done("worker/001"));
    assert!(started("worker/004") > done("worker/002"), "worker/004 started before worker/002 completed");
    assert!(started("worker/004") > done("worker/003"), "worker/004 started before worker/003 completed");
}

#[test]
fn sequential_runs_one_at_a_time_in_priority_order() {
    let dir = TestDir::new("sequential");
    let plan = dir.write(
        "plan.json",
        r#"[{"id": "low", "description": "Low priority", "priority": 1},
            {"id": "high", "description": "High priority", "priority": 10},
            {"id": "mid", "description": "Mid priority", "priority": 5},
            {"id": "mid2", "description": "Mid priority too", "priority": 5}]"#,
    );
    let events_path = dir.join("events.jsonl");
    let r = run_json(
        &dir,
        &[
            "run",
            "Order things",
            "--plan",
            plan.to_str().unwrap(),
            "--sequential",
            "--sim-latency-ms",
            "3",
            "--events",
            events_path.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["status"], "completed");
    let events = read_events(&events_path);
    assert_eq!(max_in_flight(&events), 1);
    let order: Vec<&str> = events.iter().filter(|e| ty(e) == "step_started").filter_map(step).collect();
    assert_eq!(order, ["worker/002", "worker/003", "worker/004", "worker/001"]);
}

#[test]
fn concurrency_caps_the_steps_in_flight() {
    let dir = TestDir::new("concurrency");
    let events_path = dir.join("events.jsonl");
    let r = run_json(
        &dir,
        &[
            "run",
            "Survey renewable energy storage",
            "--agents",
            "16",
            "--concurrency",
            "3",
            "--sim-latency-ms",
            "10",
            "--events",
            events_path.to_str().unwrap(),
        ],
        0,
    );
    assert_eq!(r["status"], "completed");
    let events = read_events(&events_path);
    let max = max_in_flight(&events);
    assert!(max <= 3, "{max} steps were in flight with --concurrency 3");
    assert!(max >= 2, "the workers never overlapped with --concurrency 3");
}

// ---------------------------------------------------------------------------------------
// 5. Budgets
// ---------------------------------------------------------------------------------------

#[test]
fn budget_calls_stops_the_run() {
    let dir = TestDir::new("budget-calls");
    let events_path = dir.join("events.jsonl");
    let r = run_json(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "--budget-calls",
            "5",
            "--agents",
            "12",
            "--concurrency",
            "1",
            "--events",
            events_path.to_str().unwrap(),
        ],
        3,
    );
    assert_eq!(r["status"], "budget_exhausted");
    assert!(r["stop_reason"].as_str().unwrap().contains("budget"), "{}", r["stop_reason"]);
    assert!(calls(&r) <= 5, "{} calls with --budget-calls 5", calls(&r));
    check_accounting(&r);
    let workers = agents_of(&r, "worker");
    let completed: Vec<&&Value> = workers.iter().filter(|a| a["status"] == "completed").collect();
    assert_eq!(completed.len(), 4, "decompose + 4 workers use the 5 calls");
    assert!(agents_of(&r, "synthesizer").is_empty() && agents_of(&r, "executive").is_empty());
    // The final output combines the completed workers' outputs.
    let fin = r["final_output"].as_str().expect("a final output after budget exhaustion");
    for w in &completed {
        assert!(
            fin.contains(w["output"].as_str().unwrap().trim_end()),
            "{} is missing from the final output",
            w["step"]
        );
    }
    report_path(&r, &dir.join("out"));

    let events = read_events(&events_path);
    check_event_log(&events, r["run_id"].as_str().unwrap());
    let exhausted: Vec<&Value> = events.iter().filter(|e| ty(e) == "budget_exhausted").collect();
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0]["limit"], "calls");
    assert!(count_type(&events, "budget_warning") >= 1);
    assert!(
        events.iter().position(|e| ty(e) == "budget_warning")
            < events.iter().position(|e| ty(e) == "budget_exhausted")
    );
    assert_eq!(events.last().unwrap()["status"], "budget_exhausted");
}

#[test]
fn budget_usd_caps_the_cost() {
    let dir = TestDir::new("budget-usd");
    // An uncapped run of 30 agents costs about $0.11 at the simulated nominal price.
    let full = run_json(&dir, &["run", HEALTHCARE, "--agents", "30"], 0);
    let full_cost = full["cost_usd"].as_f64().unwrap();
    let cap = 0.05;
    assert!(full_cost > cap, "the uncapped run costs {full_cost}; the cap would not bite");

    let r = run_json(&dir, &["run", HEALTHCARE, "--agents", "30", "--budget-usd", "0.05"], 3);
    assert_eq!(r["status"], "budget_exhausted");
    let cost = r["cost_usd"].as_f64().unwrap();
    assert!(cost <= cap, "cost {cost} passed --budget-usd {cap}");
    check_accounting(&r);
    let counts = status_counts(&r, "worker");
    assert!(counts.get("completed").copied().unwrap_or(0) > 0, "no worker completed: {counts:?}");
    assert!(counts.get("completed").copied().unwrap_or(0) < 30, "every worker completed: {counts:?}");
    assert!(r["final_output"].as_str().is_some_and(|t| !t.is_empty()));

    // A cap below the first call's reservation stops the run before anything is paid.
    let tiny = run_json(&dir, &["run", HEALTHCARE, "--agents", "30", "--budget-usd", "0.01"], 3);
    assert_eq!(tiny["status"], "budget_exhausted");
    assert!(tiny["cost_usd"].as_f64().unwrap() <= 0.01);
    check_accounting(&tiny);
}

#[test]
fn budget_tokens_caps_the_tokens() {
    let dir = TestDir::new("budget-tokens");
    let r = run_json(&dir, &["run", HEALTHCARE, "--agents", "10", "--budget-tokens", "3000"], 3);
    assert_eq!(r["status"], "budget_exhausted");
    let used = r["usage"]["input_tokens"].as_u64().unwrap() + r["usage"]["output_tokens"].as_u64().unwrap();
    assert!(used <= 3000, "{used} tokens used with --budget-tokens 3000");
    check_accounting(&r);
}

// ---------------------------------------------------------------------------------------
// 6. Degradation
// ---------------------------------------------------------------------------------------

#[test]
fn retries_absorb_simulated_failures() {
    let dir = TestDir::new("retries");
    let events_path = dir.join("events.jsonl");
    let out = dir.join("out");
    let o = belt(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "--sim-fail-rate",
            "0.3",
            "--retries",
            "3",
            "--agents",
            "20",
            "--seed",
            "3",
            "--sim-latency-ms",
            "0",
            "--json",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--events",
            events_path.to_str().unwrap(),
        ],
    );
    assert!(matches!(o.code(), Some(0 | 3)), "exit {:?}\n{}", o.status, o.stderr);
    let r = o.json();
    assert!(matches!(r["status"].as_str(), Some("completed" | "partial")), "{}", r["status"]);
    let retried: Vec<&Value> = agents(&r).iter().filter(|a| a["attempts"].as_u64().unwrap() > 1).collect();
    assert!(!retried.is_empty(), "no agent needed a retry at a 30% failure rate");
    for a in agents(&r) {
        assert!(a["attempts"].as_u64().unwrap() <= 4, "more than 1 + 3 retries: {a}");
    }
    check_accounting(&r);
    let events = read_events(&events_path);
    check_event_log(&events, r["run_id"].as_str().unwrap());
    let extra_attempts: u64 =
        agents(&r).iter().map(|a| a["attempts"].as_u64().unwrap().saturating_sub(1)).sum();
    assert!(count_type(&events, "step_retrying") >= 1);
    assert_eq!(count_type(&events, "step_retrying") as u64, extra_attempts, "one step_retrying per retry");
    for a in &retried {
        let s = a["step"].as_str().unwrap();
        let ended = if a["status"] == "completed" { "step_completed" } else { "step_failed" };
        let ended = seq_of(&events, ended, s);
        let retries = events
            .iter()
            .filter(|e| ty(e) == "step_retrying" && step(e) == Some(s) && e["seq"].as_u64() < Some(ended))
            .count();
        assert_eq!(
            retries as u64 + 1,
            a["attempts"].as_u64().unwrap(),
            "{s}: step_retrying events before it ended"
        );
    }
}

#[test]
fn all_workers_failing_fails_the_run_without_synthesis() {
    let dir = TestDir::new("all-fail");
    let events_path = dir.join("events.jsonl");
    let r = run_json(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "--sim-fail-rate",
            "1",
            "--retries",
            "0",
            "--agents",
            "6",
            "--events",
            events_path.to_str().unwrap(),
        ],
        1,
    );
    assert_eq!(r["status"], "failed");
    let reason = r["stop_reason"].as_str().unwrap();
    assert!(reason.contains("min_success"), "stop_reason: {reason}");
    assert!(r["final_output"].is_null());
    // Injected timeouts end their steps `timed_out`, the other failures `failed`.
    let counts = status_counts(&r, "worker");
    let count = |s: &str| counts.get(s).copied().unwrap_or(0);
    assert_eq!(count("failed") + count("timed_out"), 6, "{counts:?}");
    assert!(agents_of(&r, "synthesizer").is_empty(), "a synthesizer was called");
    assert!(agents_of(&r, "executive").is_empty(), "an executive was called");
    for a in agents_of(&r, "worker") {
        assert_eq!(a["attempts"], 1, "--retries 0 retried: {a}");
        assert!(a["error"].as_str().is_some_and(|e| !e.is_empty()), "{a}");
    }
    check_accounting(&r);
    let events = read_events(&events_path);
    check_event_log(&events, r["run_id"].as_str().unwrap());
    assert_eq!(count_type(&events, "step_retrying"), 0);
    // The decomposition failed too, so the plan fell back to templates.
    assert_eq!(count_type(&events, "plan_fallback"), 1);
    assert!(events.iter().all(|e| !step(e).is_some_and(|s| s.starts_with("synth/") || s == "executive")));
    assert_eq!(events.last().unwrap()["status"], "failed");
}

#[test]
fn timeouts_are_retried_then_fail() {
    let dir = TestDir::new("timeout");
    // Steps give up on the model at once when its breaker opens, instead of waiting up to
    // five minutes for it to answer again.
    std::fs::write(dir.join("belt.toml"), "[providers.simulated]\nbreaker_max_wait = 0\n").unwrap();
    let r = run_json(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "--agents",
            "3",
            "--timeout",
            "0.02",
            "--retries",
            "1",
            "--sim-latency-ms",
            "2000",
        ],
        1,
    );
    assert_eq!(r["status"], "failed");
    // Each step tries twice, unless the model's circuit breaker opened first (after five
    // timeouts in a row): then the rest fail at once instead of waiting again.
    let mut fast = 0;
    for a in agents(&r) {
        let error = a["error"].as_str().unwrap();
        // A step whose attempts timed out is `timed_out`; one the breaker refused, `failed`.
        let expected = if error.contains("timed out") { "timed_out" } else { "failed" };
        assert_eq!(a["status"], expected, "{a}");
        let gone = error.contains("did not answer again");
        assert!(error.contains("timed out") || error.contains("circuit breaker") || gone, "{a}");
        assert!(a["attempts"].as_u64().unwrap() <= 2, "{a}");
        fast += usize::from(error.contains("circuit breaker"));
    }
    assert!(fast > 0, "eight timeouts in a row open the breaker");
    check_accounting(&r);
}

// ---------------------------------------------------------------------------------------
// 7. Determinism
// ---------------------------------------------------------------------------------------

#[test]
fn same_seed_same_output_different_seed_different_output() {
    let dir = TestDir::new("seed");
    let run = |seed: &str| run_json(&dir, &["run", HEALTHCARE, "--agents", "12", "--seed", seed], 0);
    let (a, b, c) = (run("42"), run("42"), run("43"));
    let fin = |r: &Value| r["final_output"].as_str().expect("a final output").to_string();
    assert_eq!(fin(&a), fin(&b), "the same seed gave different final outputs");
    assert_eq!(a["plan"], b["plan"]);
    assert_eq!(a["usage"], b["usage"]);
    assert_ne!(fin(&a), fin(&c), "different seeds gave the same final output");
    assert_ne!(a["run_id"], b["run_id"], "two runs share a run id");
}

// ---------------------------------------------------------------------------------------
// 8. Ctrl-C
// ---------------------------------------------------------------------------------------

#[test]
fn sigint_cancels_and_writes_what_exists() {
    cancel_by_signal("INT", 130);
}

/// SIGTERM (a service manager, `kill`) does what Ctrl-C does; only the exit code differs.
#[test]
fn sigterm_cancels_and_writes_what_exists() {
    cancel_by_signal("TERM", 143);
}

fn cancel_by_signal(signal: &str, code: i32) {
    let dir = TestDir::new(&format!("sig{signal}"));
    let out = dir.join("out");
    let events_path = dir.join("events.jsonl");
    let mut running = spawn_belt(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "--agents",
            "40",
            "--concurrency",
            "2",
            "--sim-latency-ms",
            "200",
            "--out",
            out.to_str().unwrap(),
            "--json",
            "--events",
            events_path.to_str().unwrap(),
        ],
    );
    let pid = running.child.id();

    // Wait until the log shows a few completed workers.
    // Note: the CLI buffers the events file, so lines appear in blocks of about 8 KiB.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&events_path).unwrap_or_default();
        let done = text
            .lines()
            .filter(|l| l.contains(r#""type":"step_completed""#) && l.contains("worker/"))
            .count();
        if done >= 3 {
            break;
        }
        if let Some(status) = running.child.try_wait().unwrap() {
            panic!("belt exited ({status}) before the events file showed 3 completed workers");
        }
        if Instant::now() >= deadline {
            let _ = running.child.kill();
            panic!("the events file showed no 3 completed workers within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill =
        Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().expect("run kill");
    assert!(kill.success(), "kill -{signal} {pid} failed");
    let o = running.finish();
    o.assert_code(code);
    let r = o.json();
    assert_eq!(r["status"], "cancelled");
    assert!(o.stderr.contains("cancelling"), "no cancellation notice on stderr:\n{}", o.stderr);
    let counts = status_counts(&r, "worker");
    let completed = counts.get("completed").copied().unwrap_or(0);
    assert!(completed >= 3, "worker statuses: {counts:?}");
    assert!(completed < 40, "every worker completed although the run was cancelled: {counts:?}");
    assert!(
        agents(&r).iter().all(|a| a["tier"] != "synthesizer" && a["tier"] != "executive"),
        "synthesis ran after Ctrl-C"
    );
    check_accounting(&r);
    let report = report_path(&r, &out);
    let md = std::fs::read_to_string(report).unwrap();
    assert!(md.contains("## Worker findings"), "the report lacks the completed workers");

    let events = read_events(&events_path);
    check_event_log(&events, r["run_id"].as_str().unwrap());
    assert_eq!(events.last().unwrap()["status"], "cancelled");
    assert_eq!(count_type(&events, "document_written"), 1);
}

// ---------------------------------------------------------------------------------------
// 9. Output modes
// ---------------------------------------------------------------------------------------

#[test]
fn quiet_prints_nothing_on_stderr() {
    let dir = TestDir::new("quiet");
    let o =
        belt(&dir, &["run", HEALTHCARE, "--agents", "6", "--sim-latency-ms", "0", "--quiet", "--out", "out"]);
    o.assert_code(0);
    assert_eq!(o.stderr, "", "--quiet printed on stderr");
    assert_eq!(files_ending(&dir.join("out"), ".md").len(), 1, "--quiet still writes the report");

    // --quiet --json: stdout is exactly the JSON document, stderr stays empty.
    let o = belt(
        &dir,
        &["run", HEALTHCARE, "--agents", "6", "--sim-latency-ms", "0", "--quiet", "--json", "--out", "out"],
    );
    o.assert_code(0);
    assert_eq!(o.stderr, "");
    assert_eq!(o.json()["status"], "completed");
}

#[test]
fn progress_lines_and_summary_without_a_tty() {
    let dir = TestDir::new("lines");
    let o = belt(&dir, &["run", HEALTHCARE, "--agents", "12", "--sim-latency-ms", "0", "--out", "out"]);
    o.assert_code(0);
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().all(|l| l.starts_with("belt: ")), "stderr has non-progress lines:\n{}", o.stderr);
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(has("simulated provider"), "no simulated-provider notice:\n{}", o.stderr);
    assert!(lines.iter().any(|l| l.starts_with("belt: run ") && l.contains(" started")), "{}", o.stderr);
    assert!(has("belt: plan ready"), "{}", o.stderr);
    assert!(has("tiers 12 → 2 → 1"), "{}", o.stderr);
    assert!(has("belt: run finished: completed"), "{}", o.stderr);
    assert!(!o.stderr.contains('\u{1b}'), "escape codes on a non-terminal stderr");

    assert!(!o.stdout.contains("belt: "), "progress lines on stdout:\n{}", o.stdout);
    let status = o.stdout.lines().find(|l| l.starts_with("status:")).expect("a status: line");
    assert!(status.contains("completed"), "{status}");
    let report = o.stdout.lines().find(|l| l.starts_with("report:")).expect("a report: line");
    let path = dir.path.join(report.trim_start_matches("report:").trim());
    assert!(path.is_file(), "the report line names a missing file: {report}");
    assert!(o.stdout.lines().any(|l| l.starts_with("usage:") && l.contains("16 calls")), "{}", o.stdout);
    for tier in ["decomposer", "worker", "synthesizer L1", "executive", "total"] {
        assert!(o.stdout.contains(tier), "the summary table lacks `{tier}`:\n{}", o.stdout);
    }

    // With --json, the summary moves to stderr and stdout is only the JSON document.
    let o =
        belt(&dir, &["run", HEALTHCARE, "--agents", "4", "--sim-latency-ms", "0", "--out", "out", "--json"]);
    o.assert_code(0);
    assert_eq!(o.json()["status"], "completed");
    assert!(o.stderr.lines().any(|l| l.starts_with("status:")), "{}", o.stderr);
}

// ---------------------------------------------------------------------------------------
// Regressions of bugs found by these tests
// ---------------------------------------------------------------------------------------

/// `--events FILE` goes through a `BufWriter` that is only flushed when its 8 KiB buffer
/// fills and at the end, so a reader tailing the file sees nothing of a small run until it
/// finishes (and of a large one only in 8 KiB blocks).
#[test]
fn events_file_shows_events_while_the_run_works() {
    let dir = TestDir::new("events-live");
    let events_path = dir.join("events.jsonl");
    let mut running = spawn_belt(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "--agents",
            "6",
            "--concurrency",
            "1",
            "--sim-latency-ms",
            "300",
            "--quiet",
            "--out",
            "out",
            "--events",
            events_path.to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen_while_running = loop {
        let text = std::fs::read_to_string(&events_path).unwrap_or_default();
        if text.lines().any(|l| l.contains(r#""type":"step_completed""#)) {
            break running.child.try_wait().unwrap().is_none();
        }
        if running.child.try_wait().unwrap().is_some() || Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    running.finish().assert_code(0);
    assert!(seen_while_running, "no step_completed line was in the events file while the run was working");
}

/// Bad input exits 2 "before any call", but the `--out` directory and the `--events` file
/// are created before the models are checked, so `--model nope/x` truncates an existing
/// events file.
#[test]
fn bad_model_leaves_an_existing_events_file_alone() {
    let dir = TestDir::new("events-truncated");
    let events_path = dir.write("events.jsonl", "{\"kept\": true}\n");
    let o = belt(
        &dir,
        &["run", "Task", "--model", "nope/x", "--out", "out", "--events", events_path.to_str().unwrap()],
    );
    o.assert_code(2);
    assert_eq!(
        std::fs::read_to_string(&events_path).unwrap(),
        "{\"kept\": true}\n",
        "the events file was truncated"
    );
}

// ---------------------------------------------------------------------------------------
// Patterns from a task, refinement, plan review
// ---------------------------------------------------------------------------------------

#[test]
fn patterns_lists_the_library_and_marks_what_runs_from_a_task() {
    let dir = TestDir::new("patterns");
    let o = belt(&dir, &["patterns"]);
    o.assert_code(0);
    for name in ["cascade", "swarm", "iterative", "dynamic", "saga", "dag", "state_machine", "hitl"] {
        assert!(o.stdout.lines().any(|l| l.starts_with(name)), "{name} missing:\n{}", o.stdout);
    }
    let o = belt(&dir, &["patterns", "--json"]);
    o.assert_code(0);
    let list: Vec<Value> = serde_json::from_str(&o.stdout).expect("a JSON array");
    let from_task: Vec<&str> =
        list.iter().filter(|p| p["from_task"] == true).map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(from_task, ["cascade", "swarm", "iterative", "dynamic", "coder"]);
    let in_workflows: Vec<&str> = list.iter().filter_map(|p| p["workflow"].as_str()).collect();
    assert_eq!(in_workflows, ["cascade", "swarm", "iterative", "sequential", "conditional", "dag"]);
    assert!(list.len() >= 16 && list.iter().all(|p| !p["summary"].as_str().unwrap().is_empty()));
}

#[test]
fn every_pattern_that_needs_only_a_task_runs_from_the_cli() {
    let dir = TestDir::new("task-patterns");
    for (pattern, first_step) in
        [("swarm", "decompose"), ("dynamic", "agents/design"), ("iterative", "refine/01/draft")]
    {
        let r = run_json(&dir, &["run", HEALTHCARE, "--pattern", pattern, "-n", "4", "--refine", "3"], 0);
        assert_eq!(r["pattern"], pattern);
        assert_eq!(agents(&r)[0]["step"], first_step, "{pattern}");
        assert!(r["final_output"].as_str().is_some_and(|t| t.len() > 100), "{pattern}: {r}");
        check_accounting(&r);
        let md = std::fs::read_to_string(report_path(&r, &dir.join("out"))).unwrap();
        assert!(md.contains("simulated"), "{pattern}: the report says it is simulated");
    }
}

#[test]
fn iterative_stops_when_the_judge_accepts_or_names_the_cap() {
    let dir = TestDir::new("iterative");
    // The simulated judge accepts or asks for a revision by the seed: over a few seeds both
    // endings occur, and each is reported for what it is.
    let (mut accepted, mut capped) = (0, 0);
    for seed in 0..8 {
        let seed = seed.to_string();
        let out = belt(
            &dir,
            &[
                "run",
                "Explain borrowing in Rust",
                "--pattern",
                "iterative",
                "--refine",
                "2",
                "--seed",
                &seed,
                "--sim-latency-ms",
                "0",
                "--json",
                "--quiet",
                "--out",
                "out",
            ],
        );
        let r = out.json();
        let judged = agents(&r).iter().filter(|a| a["step"].as_str().unwrap().ends_with("/judge")).count();
        if r["status"] == "completed" {
            out.assert_code(0);
            accepted += 1;
            assert!(r.get("caps").is_none(), "{r}");
        } else {
            out.assert_code(3);
            capped += 1;
            assert_eq!(r["caps"][0]["cap"], "max_iterations");
            assert_eq!(r["caps"][0]["at"], "refine/03/draft");
            assert!(r["stop_reason"].as_str().unwrap().contains("cap max_iterations = 2 reached"), "{r}");
            assert_eq!(judged, 2);
        }
    }
    assert!(accepted > 0 && capped > 0, "accepted {accepted}, capped {capped}");
}

#[test]
fn cascade_refine_revises_the_final_synthesis() {
    let dir = TestDir::new("refine");
    let plain = run_json(&dir, &["run", HEALTHCARE, "-n", "12", "--seed", "1"], 0);
    let refined = run_json(&dir, &["run", HEALTHCARE, "-n", "12", "--seed", "1", "--refine", "2"], 0);
    let steps: Vec<&str> = agents(&refined).iter().map(|a| a["step"].as_str().unwrap()).collect();
    let refine_steps: Vec<&str> = steps.iter().copied().filter(|s| s.starts_with("refine/")).collect();
    assert!(!refine_steps.is_empty() && refine_steps[0] == "refine/01/judge", "{steps:?}");
    // Judge, revise, judge, revise at most; the last revision is not judged.
    assert!(refine_steps.len() <= 4 && !refine_steps.contains(&"refine/03/judge"), "{refine_steps:?}");
    assert_eq!(calls(&refined), calls(&plain) + refine_steps.len() as u64);
    if refine_steps.contains(&"refine/02/draft") {
        assert_ne!(refined["final_output"], plain["final_output"]);
    } else {
        assert_eq!(refined["final_output"], plain["final_output"]);
    }
    check_accounting(&refined);
}

#[test]
fn review_plan_with_approve_all_records_the_decision() {
    let dir = TestDir::new("review");
    let out = dir.join("out");
    let events_path = dir.join("events.jsonl");
    let o = belt(
        &dir,
        &[
            "run",
            HEALTHCARE,
            "-n",
            "3",
            "--review-plan",
            "--approve-all",
            "--sim-latency-ms",
            "0",
            "--json",
            "--out",
            out.to_str().unwrap(),
            "--events",
            events_path.to_str().unwrap(),
        ],
    );
    o.assert_code(0);
    assert!(o.stderr.contains("hitl/plan answered by --approve-all: yes"), "{}", o.stderr);
    let r = o.json();
    let review = agent(&r, "hitl/plan");
    assert_eq!(review["status"], "completed");
    assert_eq!(status_counts(&r, "worker").get("completed"), Some(&3));
    // The question opened and closed in the JSONL log, before any worker started.
    let events = read_events(&events_path);
    check_event_log(&events, r["run_id"].as_str().unwrap());
    let asked = events.iter().find(|e| ty(e) == "human_requested").expect("human_requested");
    assert_eq!((step(asked), &asked["question"]["kind"]), (Some("hitl/plan"), &json!("approval")));
    let answered = events.iter().find(|e| ty(e) == "human_answered").expect("human_answered");
    assert_eq!((&answered["answer"], &answered["id"]), (&json!({"approve": true}), &asked["id"]));
    assert!(seq_of(&events, "human_answered", "hitl/plan") < seq_of(&events, "step_started", "worker/001"));
}

/// An orchestrator's own events (`iterative`'s judge verdicts) are in the JSONL log as
/// `custom` events, and the progress shows them.
#[test]
fn a_patterns_own_events_are_in_the_jsonl_log_and_the_progress() {
    let dir = TestDir::new("custom-events");
    let events_path = dir.join("events.jsonl");
    let o = belt(
        &dir,
        &[
            "run",
            "A haiku about rivers",
            "--pattern",
            "iterative",
            "--sim-latency-ms",
            "0",
            "--json",
            "--events",
            events_path.to_str().unwrap(),
        ],
    );
    o.assert_code(0);
    let events = read_events(&events_path);
    check_event_log(&events, o.json()["run_id"].as_str().unwrap());
    let verdicts: Vec<&Value> = events.iter().filter(|e| ty(e) == "custom").collect();
    assert!(!verdicts.is_empty(), "no custom event in {events:?}");
    assert_eq!(verdicts[0]["name"], "judge_verdict");
    assert_eq!(verdicts[0]["data"]["judge"], "refine/01/judge");
    // Said after the judge's step completed.
    assert!(verdicts[0]["seq"].as_u64().unwrap() > seq_of(&events, "step_completed", "refine/01/judge"));
    assert!(o.stderr.contains("judge_verdict: {"), "{}", o.stderr);
}

/// A terminal for the child: `script` (util-linux) runs it on a pseudo-terminal and copies
/// what we write to it as typed input.
fn belt_on_a_terminal(dir: &TestDir, args: &[&str], typed: &str) -> Output {
    let belt = env!("CARGO_BIN_EXE_belt");
    let quoted: Vec<String> = std::iter::once(belt)
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-qefc", &quoted.join(" "), "/dev/null"])
        .current_dir(&dir.path)
        .env_remove("BELT_MODEL")
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env("BELT_HOME", dir.path.join("belt-home"))
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn script (util-linux)");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let typed = typed.to_string();
    // Typed once the question is on screen would be more faithful; a terminal buffers what
    // is typed early, which is what a fast typist does too.
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(typed.as_bytes());
        let _ = stdin.flush();
        // Keep the terminal open until the run ends.
        std::thread::sleep(PROCESS_DEADLINE);
    });
    let cmdline = format!("script: belt {}", args.join(" "));
    Running { child, stdout, stderr, cmdline }.finish()
}

#[test]
fn review_plan_asks_on_the_terminal() {
    let dir = TestDir::new("review-tty");
    let args =
        ["run", HEALTHCARE, "-n", "3", "--review-plan", "--sim-latency-ms", "0", "--out", "out", "--json"];
    let o = belt_on_a_terminal(&dir, &args, "maybe\ny\n");
    o.assert_code(0);
    // On a terminal, stderr and stdout are the same stream.
    let screen = o.stdout.replace('\r', "");
    assert!(screen.contains("belt asks (hitl/plan)"), "{screen}");
    assert!(screen.contains("Run this plan of 3 subtasks"), "{screen}");
    assert!(screen.contains("Approve? [y/N]"), "{screen}");
    assert!(screen.contains("`maybe`: answer y or n"), "{screen}");
    assert!(screen.contains("belt: answered: yes"), "{screen}");

    let o = belt_on_a_terminal(&dir, &args, "n\n");
    o.assert_code(1);
    let screen = o.stdout.replace('\r', "");
    assert!(screen.contains("the plan was rejected; nothing was run"), "{screen}");
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let dir = TestDir::new("pipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_belt"))
        .arg("patterns")
        .current_dir(&dir.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn belt");
    // Close the pipe before belt writes: its first print meets a reader that is gone.
    drop(child.stdout.take());
    let stderr = drain(child.stderr.take().unwrap());
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    const SIGPIPE: i32 = 13;
    assert_eq!(status.signal(), Some(SIGPIPE), "{status:?}");
}

/// Library crates log through `tracing`; the binary shows their warnings on stderr as
/// `belt: warning: …` (`BELT_LOG=off` and `--quiet`, errors only, silence them), while the
/// run goes on.
#[test]
fn library_warnings_reach_stderr_through_the_binary() {
    let dir = TestDir::new("diagnostics");
    let unwritable = dir.join("no-such-dir/calls.log");
    let run = |log: Option<&str>| {
        let mut cmd = common::belt_command(
            &dir.path,
            &dir.join("home"),
            &["run", "Plan a park", "--agents", "2", "--sim-latency-ms", "0", "--out", "out"],
        );
        cmd.env("BELT_SIM_CALL_LOG", &unwritable);
        if let Some(level) = log {
            cmd.env("BELT_LOG", level);
        }
        cmd.output().unwrap()
    };
    let o = run(None);
    assert_eq!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("belt: warning: cannot append to the simulated call log"), "{stderr}");
    let o = run(Some("off"));
    assert_eq!(o.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    let mut quiet =
        common::belt_command(&dir.path, &dir.join("home"), &["run", "Plan a park", "-n", "2", "--quiet"]);
    let o = quiet.env("BELT_SIM_CALL_LOG", &unwritable).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every file belt is given is read through one bounded reader: a device, a FIFO with no
/// writer or a directory is refused at once (no memory without end, no hang), naming it.
#[test]
fn devices_and_pipes_are_refused_as_plan_workflow_and_config() {
    let dir = TestDir::new("bounded");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap().to_string();
    for path in ["/dev/zero", fifo.as_str(), "/tmp"] {
        for args in [
            vec!["run", "Task", "--plan", path],
            vec!["run", "-f", path],
            vec!["validate", path],
            vec!["--config", path, "run", "Task"],
        ] {
            let o = belt(&dir, &args);
            o.assert_code(2);
            assert!(
                o.stderr.contains("is not a regular file") && o.stderr.contains(path),
                "{args:?}: {}",
                o.stderr
            );
        }
    }
}

/// An events file that cannot be written is an error (exit 1) that says where the events
/// are, not a warning after which belt exits 0.
#[test]
fn a_lost_events_file_is_an_error() {
    let dir = TestDir::new("events-full");
    let o = belt(
        &dir,
        &[
            "run",
            "Task",
            "--agents",
            "2",
            "--sim-latency-ms",
            "0",
            "--quiet",
            "--out",
            "out",
            "--events",
            "/dev/full",
        ],
    );
    o.assert_code(1);
    assert!(
        o.stderr.contains("writing the events file failed") && o.stderr.contains("belt runs events"),
        "{}",
        o.stderr
    );
}

/// Run ids can be shortened to a unique prefix, as git takes commits; an ambiguous one
/// lists the runs it could be.
#[test]
fn run_ids_may_be_abbreviated_to_a_unique_prefix() {
    let dir = TestDir::new("prefix");
    let a = run_json(&dir, &["run", "First task", "--agents", "2"], 0);
    let b = run_json(&dir, &["run", "Second task", "--agents", "2"], 0);
    let (a, b) = (a["run_id"].as_str().unwrap().to_string(), b["run_id"].as_str().unwrap().to_string());
    // The shortest prefix of `a` that `b` does not share.
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let short = &a[..(common + 1).max(4)];
    let o = belt(&dir, &["runs", "show", short, "--json"]);
    o.assert_code(0);
    assert_eq!(o.json()["run_id"], a.as_str());
    let o = belt(&dir, &["runs", "export", short]);
    o.assert_code(0);
    if common >= 4 {
        let o = belt(&dir, &["runs", "show", &a[..common]]);
        o.assert_code(2);
        assert!(o.stderr.contains("is the start of 2 run ids") && o.stderr.contains(&a), "{}", o.stderr);
    }
}

/// `belt run --help` shows no empty default for the task it requires, and `belt models`
/// has the date its prices were taken that its note speaks of.
#[test]
fn help_and_models_say_what_is_true() {
    let dir = TestDir::new("help");
    let o = belt(&dir, &["run", "--help"]);
    o.assert_code(0);
    assert!(!o.stdout.contains("[default: \"\"]"), "{}", o.stdout);
    let o = belt(&dir, &["models"]);
    o.assert_code(0);
    assert!(
        o.stdout.contains("prices as of") && o.stdout.contains("as of the dates in the table"),
        "{}",
        o.stdout
    );
}

/// On a terminal, planning shows a spinner whose clock runs while the decomposer works
/// (it stood at `0.0s` until the plan came), then the tokens, cost and clock of the run.
/// The terminal is a pseudo-terminal from util-linux's `script`.
#[test]
fn planning_on_a_terminal_shows_a_running_clock() {
    let dir = common::Dir::new("tty");
    let belt = env!("CARGO_BIN_EXE_belt");
    let line = format!("{belt} run 'Plan a park' --agents 2 --sim-latency-ms 1200 --out out");
    let home = dir.join("home");
    let mut cmd = common::program_command(Path::new("script"), &dir.0, &home, &["-qfec", &line, "/dev/null"]);
    cmd.env("TERM", "xterm");
    let o = common::wait(cmd.spawn().expect("util-linux `script`"), Duration::from_secs(60));
    let screen = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(common::code(&o), 0, "{screen}");
    // Each redraw of the header starts after a carriage return.
    let clocks: BTreeSet<String> = screen
        .split(['\r', '\n'])
        .filter(|l| l.contains("planning: "))
        .filter_map(|l| l.split(" · ").nth(1))
        .map(|c| c.trim().trim_end_matches(|ch: char| !ch.is_ascii_digit()).to_string())
        .collect();
    let seconds: Vec<f64> = clocks.iter().filter_map(|c| c.parse().ok()).collect();
    assert!(seconds.len() >= 3, "the clock did not run while planning: {clocks:?}\n{screen}");
    assert!(seconds.iter().any(|&s| s >= 0.8), "planning took 1.2 s: {seconds:?}");
    assert!(screen.contains(" tokens · $"), "the run's header after the plan: {screen}");
}

/// A run answered from the response cache says how many of its steps came from it (and that
/// they cost nothing); the first run, which filled the cache, says nothing of the kind.
#[test]
fn a_run_served_from_the_cache_says_how_many_steps_came_from_it() {
    let dir = common::Dir::new("cache-summary");
    let log = dir.join("calls.log");
    let args =
        ["run", "Name three rivers", "--agents", "3", "--sim-latency-ms", "0", "--cache", "3600", "--json"];
    let first = common::belt(&dir, &args, Some(&log));
    assert_eq!(common::code(&first), 0, "{}", common::stderr(&first));
    assert!(!common::stderr(&first).contains("from the response cache"), "{}", common::stderr(&first));
    let called = common::calls_so_far(&log);
    let again = common::belt(&dir, &args, Some(&log));
    let said = common::stderr(&again);
    assert_eq!(common::code(&again), 0, "{said}");
    assert_eq!(common::calls_so_far(&log), called, "every step came from the cache");
    let steps = common::json(&again)["agents"].as_array().unwrap().len();
    assert!(steps >= 4, "the decomposition and three workers at least: {steps}");
    let line = format!("cache:   {steps} steps answered from the response cache, at no cost");
    assert!(said.contains(&line), "{said}");
}

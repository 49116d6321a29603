//! End-to-end tests of durable runs: SIGKILL at random moments, `belt resume`, history and
//! the dead-letter queue, driving the real binary against a SQLite store in a temp dir.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("belt-durability-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn command(dir: &Dir, args: &[&str], call_log: Option<&Path>) -> Command {
    let mut cmd = common::belt_command(&dir.0, &dir.join("home"), args);
    if let Some(log) = call_log {
        cmd.env("BELT_SIM_CALL_LOG", log);
    }
    cmd
}

/// Run to the end (at most 60 s).
fn belt(dir: &Dir, args: &[&str], call_log: Option<&Path>) -> Output {
    let child = command(dir, args, call_log).spawn().expect("spawn belt");
    wait(child, Duration::from_secs(60))
}

fn wait(mut child: Child, limit: Duration) -> Output {
    // Read both pipes while waiting: a large --json would otherwise fill the pipe and block.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("belt did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {}\nstderr: {}", String::from_utf8_lossy(&o.stdout), stderr(o))
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Provider calls per StepId, from a simulated call log.
fn calls(log: &Path) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let step = line.split_whitespace().next().unwrap_or_default().to_string();
        *m.entry(step).or_default() += 1;
    }
    m
}

fn only_run_id(dir: &Dir) -> String {
    let o = belt(dir, &["runs", "list", "--json"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let runs = json(&o);
    let runs = runs.as_array().expect("an array of runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0]["run_id"].as_str().unwrap().to_string()
}

const TASK: &str = "Assess the resilience of coastal cities to sea-level rise";
const RUN: [&str; 12] = [
    "--agents",
    "200",
    "--concurrency",
    "8",
    "--sim-latency-ms",
    "30",
    "--seed",
    "7",
    "--quiet",
    "--json",
    "--out",
    "out",
];

#[test]
fn a_killed_run_resumes_without_paying_twice_and_ends_as_an_uninterrupted_one() {
    // The reference: the same run, never interrupted.
    let reference = Dir::new("reference");
    let mut args = vec!["run", TASK];
    args.extend(RUN);
    let full = belt(&reference, &args, None);
    assert_eq!(code(&full), 0, "{}", stderr(&full));
    let full = json(&full);
    assert_eq!(full["status"], "completed");

    // Kill moments spread over the run (~1 s): while decomposing, among the workers,
    // during synthesis.
    let mut interrupted = 0;
    for (trial, kill_after_ms) in [60u64, 250, 480, 700, 900].into_iter().enumerate() {
        let dir = Dir::new(&format!("crash-{trial}"));
        let before = dir.join("calls-before.log");
        let after = dir.join("calls-after.log");
        let child = command(&dir, &args, Some(&before)).spawn().expect("spawn belt run");
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        let mut child = child;
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        child.wait().expect("reap");

        let listed = json(&belt(&dir, &["runs", "list", "--json"], None));
        if listed.as_array().is_some_and(|runs| runs.is_empty()) {
            // Killed before the run was recorded: nothing was called, nothing to resume.
            assert!(calls(&before).is_empty(), "trial {trial}: calls without a recorded run");
            continue;
        }
        let run_id = only_run_id(&dir);
        // What the dead process completed, as recorded in the store.
        let shown = belt(&dir, &["runs", "show", &run_id, "--json"], None);
        let shown = json(&shown);
        let recorded: BTreeSet<String> = match shown["steps"].as_array() {
            Some(steps) => steps.iter().map(|s| s["step"].as_str().unwrap().to_string()).collect(),
            // It finished before the kill: every step is in the result.
            None => shown["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["step"].as_str().unwrap().into())
                .collect(),
        };
        let list = json(&belt(&dir, &["runs", "list", "--json"], None));
        let status = list[0]["status"].as_str().unwrap().to_string();
        assert!(["interrupted", "completed"].contains(&status.as_str()), "trial {trial}: {status}");

        let resumed = belt(&dir, &["resume", &run_id, "--quiet", "--json"], Some(&after));
        if status == "completed" {
            assert_eq!(code(&resumed), 0);
            assert!(stderr(&resumed).contains("nothing to resume"), "{}", stderr(&resumed));
            continue;
        }
        assert_eq!(code(&resumed), 0, "trial {trial}: {}", stderr(&resumed));
        interrupted += 1;
        let resumed = json(&resumed);
        assert_eq!(resumed["status"], "completed", "trial {trial}");
        assert_eq!(resumed["run_id"].as_str().unwrap(), run_id);

        // No completed step was called again.
        let again = calls(&after);
        for step in &recorded {
            assert!(
                !again.contains_key(step),
                "trial {trial}: {step} was completed before the kill and called again"
            );
        }
        // Every call made before the kill was either recorded or in flight when it died.
        let first = calls(&before);
        assert!(recorded.iter().all(|s| first.contains_key(s)), "trial {trial}: a recorded step has no call");
        // The end is the same as without the crash, and each completed call counts once.
        assert_eq!(resumed["final_output"], full["final_output"], "trial {trial}");
        assert_eq!(resumed["usage"], full["usage"], "trial {trial}");
        let cost = |v: &Value| v["cost_usd"].as_f64().unwrap();
        assert!((cost(&resumed) - cost(&full)).abs() < 1e-9, "trial {trial}");
        assert!(recorded.len() + again.len() >= 200, "trial {trial}");
    }
    assert!(interrupted >= 3, "only {interrupted} of 5 trials caught the run before it finished");
}

#[test]
fn resume_refuses_unknown_runs_and_does_nothing_for_finished_ones() {
    let dir = Dir::new("finished");
    let o = belt(&dir, &["resume", "no-such-run"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no run `no-such-run`"), "{}", stderr(&o));

    let o = belt(
        &dir,
        &["run", "Plan a park", "--agents", "3", "--sim-latency-ms", "0", "--quiet", "--out", "o"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let id = only_run_id(&dir);
    let log = dir.join("calls.log");
    let o = belt(&dir, &["resume", &id], Some(&log));
    assert_eq!(code(&o), 0);
    assert!(stderr(&o).contains("already finished (completed"), "{}", stderr(&o));
    assert!(calls(&log).is_empty(), "a finished run makes no call when resumed");
}

#[test]
fn only_one_process_drives_a_run() {
    let dir = Dir::new("concurrent");
    let mut args = vec!["run", TASK];
    args.extend(["--agents", "30", "--concurrency", "2", "--sim-latency-ms", "100", "--quiet", "--out", "o"]);
    let mut first = command(&dir, &args, None).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    first.kill().unwrap();
    first.wait().unwrap();
    let id = only_run_id(&dir);
    // One resume drives the run...
    let driver = command(&dir, &["resume", &id, "--quiet"], None).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...and a second one, while it is alive, is refused.
    let second = belt(&dir, &["resume", &id, "--quiet"], None);
    assert_eq!(code(&second), 2, "{}", stderr(&second));
    assert!(stderr(&second).contains("being driven by another process"), "{}", stderr(&second));
    let listed = json(&belt(&dir, &["runs", "list", "--json"], None));
    assert_eq!(listed[0]["status"], "running");
    let done = wait(driver, Duration::from_secs(60));
    assert_eq!(code(&done), 0, "{}", stderr(&done));
    let listed = json(&belt(&dir, &["runs", "list", "--json"], None));
    assert_eq!(listed[0]["status"], "completed");
}

#[test]
fn history_commands_show_export_follow_and_remove_runs() {
    let dir = Dir::new("history");
    let o = belt(
        &dir,
        &["run", "Plan a park", "--agents", "12", "--sim-latency-ms", "0", "--quiet", "--json", "--out", "o"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let result = json(&o);
    let id = result["run_id"].as_str().unwrap().to_string();

    let listed = json(&belt(&dir, &["runs", "list", "--json"], None));
    assert_eq!(listed[0]["run_id"], id.as_str());
    assert_eq!(listed[0]["status"], "completed");
    assert_eq!(listed[0]["steps"], 16);
    let text = belt(&dir, &["runs", "list"], None);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&id));

    let shown = belt(&dir, &["runs", "show", &id], None);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    for needle in ["worker/012", "synth/1/002", "executive", "decomposer", "total"] {
        assert!(shown.contains(needle), "runs show lacks {needle}:\n{shown}");
    }
    assert_eq!(json(&belt(&dir, &["runs", "show", &id, "--json"], None)), result);
    assert_eq!(json(&belt(&dir, &["runs", "export", &id], None)), result);

    let events = belt(&dir, &["runs", "events", &id, "--follow"], None);
    assert_eq!(code(&events), 0);
    let events: Vec<Value> =
        String::from_utf8_lossy(&events.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.first().unwrap()["type"], "run_started");
    assert_eq!(events.last().unwrap()["type"], "run_finished");
    assert!(events.windows(2).all(|w| w[1]["seq"].as_u64() == Some(w[0]["seq"].as_u64().unwrap() + 1)));

    let o = belt(&dir, &["runs", "rm", &id], None);
    assert_eq!(code(&o), 0);
    assert_eq!(json(&belt(&dir, &["runs", "list", "--json"], None)), serde_json::json!([]));
    let o = belt(&dir, &["runs", "rm", &id], None);
    assert_eq!(code(&o), 2);
    let o = belt(&dir, &["runs", "export", "nope"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no run `nope`"));
}

#[test]
fn failed_steps_go_to_the_dead_letter_queue_and_can_be_retried() {
    let dir = Dir::new("dlq");
    let o = belt(
        &dir,
        &["run", "Plan a park", "--agents", "8", "--sim-fail-rate", "0.5", "--retries", "0", "--seed", "3"]
            .into_iter()
            .chain(["--sim-latency-ms", "0", "--min-success", "0", "--quiet", "--json", "--out", "o"])
            .collect::<Vec<_>>(),
        None,
    );
    let result = json(&o);
    let failed: BTreeSet<String> = result["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "failed")
        .map(|a| a["step"].as_str().unwrap().to_string())
        .collect();
    assert!(!failed.is_empty(), "seed 3 makes some steps fail");
    let letters = json(&belt(&dir, &["dlq", "list", "--json"], None));
    let letters = letters.as_array().unwrap();
    let lettered: BTreeSet<String> =
        letters.iter().map(|l| l["step"].as_str().unwrap().to_string()).collect();
    assert_eq!(lettered, failed, "every step that failed for good is a dead letter");
    assert!(letters.iter().all(|l| l["attempts"] == 1 && l["request"]["messages"].is_array()));

    // Retry each: a success removes its letter, a failure keeps it.
    let mut removed = 0;
    for l in letters {
        let id = l["id"].to_string();
        let o = belt(&dir, &["dlq", "retry", &id, "--json"], None);
        let r = json(&o);
        match code(&o) {
            0 => {
                removed += 1;
                assert_eq!(r["pattern"], "dlq-retry");
                assert!(r["final_output"].as_str().unwrap().starts_with("*Simulated"));
            }
            1 | 3 => assert_ne!(r["status"], "completed"),
            other => panic!("unexpected exit {other}: {}", stderr(&o)),
        }
    }
    assert!(removed > 0, "with retries, some dead letters succeed");
    let left = json(&belt(&dir, &["dlq", "list", "--json"], None));
    assert_eq!(left.as_array().unwrap().len(), letters.len() - removed);
    let o = belt(&dir, &["dlq", "retry", "999"], None);
    assert_eq!(code(&o), 2);
}

#[test]
fn the_store_can_be_chosen_and_bad_stores_are_bad_input() {
    let dir = Dir::new("stores");
    let db = dir.join("elsewhere/runs.db");
    let spec = format!("sqlite://{}", db.display());
    let o = belt(
        &dir,
        &["--store", &spec, "run", "Plan", "--agents", "2", "--sim-latency-ms", "0", "--quiet", "--out", "o"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(db.exists());
    let o = belt(&dir, &["--store", "memory", "runs", "list", "--json"], None);
    assert_eq!(json(&o), serde_json::json!([]));
    let o = belt(&dir, &["--store", "postgres://x", "runs", "list"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("sqlite://PATH"), "{}", stderr(&o));
    std::fs::write(dir.join("junk.db"), vec![7u8; 4096]).unwrap();
    let junk = format!("sqlite://{}", dir.join("junk.db").display());
    let o = belt(
        &dir,
        &["--store", &junk, "run", "Plan", "--agents", "2", "--sim-latency-ms", "0", "--out", "o"],
        None,
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("not a belt database"), "{}", stderr(&o));
}

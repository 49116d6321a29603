//! The run's time and limits end to end, through the real binary on the simulated provider:
//! `--deadline`, per-tier timeouts and `timed_out` steps, `--budget-warn-at`,
//! `--synthesize no-executive`, and the same options over HTTP.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Dir, belt, code, json, stderr};
use serde_json::Value;

fn agent<'a>(r: &'a Value, step: &str) -> &'a Value {
    r["agents"].as_array().unwrap().iter().find(|a| a["step"] == step).unwrap_or_else(|| panic!("no {step}"))
}

fn statuses(r: &Value, tier: &str) -> Vec<String> {
    r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["tier"] == tier)
        .map(|a| a["status"].as_str().unwrap().to_string())
        .collect()
}

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn at_the_deadline_the_run_ends_partial_with_the_workers_outputs_and_the_reason() {
    let dir = Dir::new("deadline");
    // Every call takes 1 s: the plan at 1 s, the 5 workers (independent: the research
    // strategy's subtasks have no dependencies) at 2 s, the synthesizer would answer at
    // 3 s; the deadline cuts it off at 2.8 s.
    let out = belt(
        &dir,
        &[
            "run",
            "Plan a park",
            "-n",
            "5",
            "--strategy",
            "research",
            "--sim-latency-ms",
            "1000",
            "--deadline",
            "2.8s",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&out), 3, "partial exits 3: {}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["status"], "partial");
    let reason = r["stop_reason"].as_str().unwrap();
    assert!(reason.contains("deadline of 2.8 s"), "{reason}");
    assert_eq!(statuses(&r, "worker"), vec!["completed"; 5]);
    let synth = agent(&r, "synth/1/001");
    assert_eq!(synth["status"], "timed_out");
    assert!(synth["error"].as_str().unwrap().contains("deadline"), "{synth}");
    let text = r["final_output"].as_str().unwrap();
    assert!(text.contains("## 5."), "the workers' outputs combined: {text}");
    // The summary says it too.
    let summary = stderr(&out);
    assert!(summary.contains("status:  partial (the run's deadline of 2.8 s was reached"), "{summary}");
    // The report names the reason.
    let md = std::fs::read_to_string(r["documents"][0]["path"].as_str().unwrap()).unwrap();
    assert!(md.contains("deadline of 2.8 s"), "{md}");
}

#[test]
fn a_tier_whose_attempts_time_out_has_timed_out_steps_and_the_others_are_untouched() {
    let dir = Dir::new("tier-timeout");
    let started = Instant::now();
    let out = belt(
        &dir,
        &[
            "run",
            "Plan a park",
            "-n",
            "3",
            // Independent workers, so each one's own timeout is what ends it.
            "--strategy",
            "research",
            "--sim-latency-ms",
            "400",
            "--worker-timeout",
            "100ms",
            "--retries",
            "0",
            "--json",
        ],
        None,
    );
    // Every worker timed out: below min_success, the run fails (exit 1).
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(statuses(&r, "worker"), vec!["timed_out"; 3]);
    // The decomposer (400 ms, under its default 180 s) completed.
    assert_eq!(agent(&r, "decompose")["status"], "completed");
    assert!(started.elapsed() < Duration::from_secs(30));
    let table = stderr(&out);
    // The summary's worker row: 3 steps, 0 done, 3 failed.
    let row = table.lines().find(|l| l.starts_with("│ worker")).expect("a worker row");
    let cells: Vec<&str> = row.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[1..4], ["3", "0", "3"], "timed out counts as failed: {table}");

    // Out of range, refused before any call, with the flag's name.
    let out = belt(&dir, &["run", "x", "--executive-timeout", "2d"], None);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
    let out = belt(&dir, &["run", "x", "--synthesizer-timeout", "0"], None);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("policies.*.timeout"), "{}", stderr(&out));
}

#[test]
fn the_budget_warning_fires_at_the_configured_share() {
    let dir = Dir::new("warn-at");
    let warnings = |args: &[&str]| {
        let log = dir.join(&format!("events-{}.jsonl", args.len()));
        let log_arg = log.display().to_string();
        let mut all = vec!["run", "Plan a park", "-n", "5", "--sim-latency-ms", "0", "--budget-calls", "10"];
        all.extend(args);
        all.extend(["--events", log_arg.as_str(), "--quiet"]);
        let out = belt(&dir, &all, None);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        events(&log).into_iter().filter(|e| e["type"] == "budget_warning").collect::<Vec<_>>()
    };
    // 7 calls of 10: under the default 80%, no warning.
    assert!(warnings(&[]).is_empty());
    let w = warnings(&["--budget-warn-at", "50%"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (w[0]["limit"].as_str(), w[0]["used"].as_f64(), w[0]["max"].as_f64()),
        (Some("calls"), Some(5.0), Some(10.0))
    );

    let out = belt(&dir, &["run", "x", "--budget-calls", "3", "--budget-warn-at", "1.5"], None);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("budget_warn_at (--budget-warn-at)"), "{}", stderr(&out));
}

#[test]
fn no_executive_keeps_the_syntheses_without_an_executive() {
    let dir = Dir::new("no-executive");
    let out = belt(
        &dir,
        &[
            "run",
            "Plan a park",
            "-n",
            "12",
            "--synthesize",
            "no-executive",
            "--sim-latency-ms",
            "0",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["shape"], serde_json::json!([12, 2]));
    assert_eq!(statuses(&r, "synthesizer"), vec!["completed"; 2]);
    assert!(statuses(&r, "executive").is_empty());
    let text = r["final_output"].as_str().unwrap();
    for step in ["synth/1/001", "synth/1/002"] {
        let synthesis = agent(&r, step)["output"].as_str().unwrap();
        assert!(text.contains(synthesis.trim()), "{step}'s output is in the final text");
    }
}

#[test]
fn the_options_reach_runs_over_http() {
    let mut s = common::serve::start("limits", &["--addr", "127.0.0.1:0"], Some("limits-token"));
    s.wait_listening();
    let token = Some("limits-token");
    let body = r#"{"task": "Plan a park", "agents": 12, "synthesize": "no-executive", "deadline": 600,
                   "budget_calls": 40, "budget_warn_at": 0.25, "policies": {"worker": {"timeout": 30}},
                   "sim_latency_ms": 0}"#;
    let (status, answer) = common::serve::http(&s.base, "POST", "/v1/runs", token, Some(body)).unwrap();
    assert_eq!(status, 202, "{answer}");
    let id = serde_json::from_str::<Value>(&answer).unwrap()["run_id"].as_str().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(60);
    let result = loop {
        let (_, view) = common::serve::http(&s.base, "GET", &format!("/v1/runs/{id}"), token, None).unwrap();
        let view: Value = serde_json::from_str(&view).unwrap();
        if !view["result"].is_null() {
            break view["result"].clone();
        }
        assert!(Instant::now() < until, "the run did not finish: {view}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["shape"], serde_json::json!([12, 2]));
    let (_, events) =
        common::serve::http(&s.base, "GET", &format!("/v1/runs/{id}/events"), token, None).unwrap();
    assert!(events.contains("budget_warning"), "15 calls of 40 pass 25%: {events}");

    // A deadline out of range is the same mistake as on the command line.
    let (status, answer) =
        common::serve::http(&s.base, "POST", "/v1/runs", token, Some(r#"{"task": "x", "deadline": -1}"#))
            .unwrap();
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("deadline (--deadline)"), "{answer}");
}

#[test]
fn a_degrading_run_falls_full_simplified_single_agent_with_events_and_report_lines() {
    let dir = Dir::new("degrade");
    let log = dir.join("events.jsonl");
    let log_arg = log.display().to_string();
    // Every worker times out (300 ms calls, 100 ms allowed): the full cascade falls to the
    // simplified one, whose executive has no input, and then to a single agent. (The workers
    // have a model of their own: the 5 timeouts open its breaker, not the executive's.)
    let base = [
        "run",
        "Plan a park",
        "-n",
        "5",
        "--worker-model",
        "simulated/w",
        "--sim-latency-ms",
        "300",
        "--worker-timeout",
        "100ms",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--retries",
        "0",
        "--degrade",
        "--min-success",
        "0",
        "--json",
        "--events",
        log_arg.as_str(),
    ]);
    let out = belt(&dir, &args, None);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["status"], "partial");
    let falls: Vec<(String, String)> = events(&log)
        .iter()
        .filter(|e| e["type"] == "degraded")
        .map(|e| (e["from"].as_str().unwrap().to_string(), e["to"].as_str().unwrap().to_string()))
        .collect();
    let chain =
        vec![("full".to_string(), "simplified".to_string()), ("simplified".into(), "single-agent".into())];
    assert_eq!(falls, chain);
    assert_eq!(r["degradations"].as_array().unwrap().len(), 2);
    assert_eq!(r["degradations"][0]["kind"], "orchestration");
    assert!(r["degradations"][0]["reason"].as_str().unwrap().contains("5 of 5 workers failed"), "{r}");
    assert_eq!(agent(&r, "degraded/single-agent")["status"], "completed");
    assert!(
        r["stop_reason"].as_str().unwrap().contains("degraded: full → simplified"),
        "{}",
        r["stop_reason"]
    );
    let md = std::fs::read_to_string(r["documents"][0]["path"].as_str().unwrap()).unwrap();
    let lines: Vec<&str> = md.lines().filter(|l| l.contains("Degraded")).collect();
    assert_eq!(lines.len(), 2, "one report line per fall: {lines:?}");
    assert!(
        lines[0].contains("full → simplified") && lines[1].contains("simplified → single-agent"),
        "{lines:?}"
    );
    assert!(stderr(&out).contains("degraded: full → simplified"), "the progress says so: {}", stderr(&out));

    // Below min_success, the run falls straight to a single agent instead of failing.
    let mut args = base.to_vec();
    args.extend(["--retries", "0", "--degrade", "--json", "--quiet"]);
    let out = belt(&dir, &args, None);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["degradations"][0]["from"], "full");
    assert_eq!(r["degradations"][0]["to"], "single-agent");
    // Without --degrade the same run fails.
    let mut args = base.to_vec();
    args.extend(["--retries", "0", "--json", "--quiet"]);
    assert_eq!(code(&belt(&dir, &args, None)), 1);

    // Only the cascade degrades.
    let out = belt(&dir, &["run", "x", "--pattern", "swarm", "--degrade"], None);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("`swarm` pattern has none"), "{}", stderr(&out));
}

#[test]
fn workers_switch_to_the_fast_model_when_calls_are_slow() {
    let dir = Dir::new("fast-model");
    let out = belt(
        &dir,
        &[
            "run",
            "Plan a park",
            "-n",
            "6",
            "--concurrency",
            "1",
            "--sim-latency-ms",
            "150",
            "--fast-model",
            "simulated/fast",
            "--slow-call",
            "50ms",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    let d = &r["degradations"][0];
    assert_eq!((d["kind"].as_str(), d["tier"].as_str()), (Some("model"), Some("worker")));
    assert_eq!((d["from"].as_str(), d["to"].as_str()), (Some("simulated/default"), Some("simulated/fast")));
    assert!(d["reason"].as_str().unwrap().contains("3 calls slower than 50 ms"), "{d}");
    assert_eq!(agent(&r, "worker/001")["model"], "simulated/default");
    assert_eq!(agent(&r, "worker/006")["model"], "simulated/fast");
    let md = std::fs::read_to_string(r["documents"][0]["path"].as_str().unwrap()).unwrap();
    assert!(md.contains("worker model simulated/default → simulated/fast"), "{md}");

    let out = belt(&dir, &["run", "x", "--fast-model", "nope/x"], None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

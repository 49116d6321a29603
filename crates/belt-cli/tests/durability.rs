//! End-to-end tests of durable runs: `belt resume`, one driver per run, history and the
//! dead-letter queue, driving the real binary against a SQLite store in a temp dir. (SIGKILL
//! at many moments, of `belt run` and of `belt serve`, is `crash_matrix.rs`.)
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use common::{Dir, belt, calls, code, command, json, only_run_id, stderr, wait};

const TASK: &str = "Assess the resilience of coastal cities to sea-level rise";

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
        // A simulated timeout ends its step `timed_out`: failed for good too.
        .filter(|a| a["status"] == "failed" || a["status"] == "timed_out")
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
                // A worker's retry writes Markdown; the decomposer's, its JSON plan.
                let out = r["final_output"].as_str().unwrap();
                let plan = l["step"] == "decompose"
                    && serde_json::from_str::<serde_json::Value>(out).is_ok_and(|v| v["subtasks"].is_array());
                assert!(out.starts_with("*Simulated") || plan, "{out}");
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
    let o = belt(&dir, &["--store", "mysql://x", "runs", "list"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("sqlite://PATH") && stderr(&o).contains("postgres://"), "{}", stderr(&o));
    // A PostgreSQL server that is not there: refused with where and what to check.
    let o = belt(&dir, &["--store", "postgres://belt@127.0.0.1:9/belt", "runs", "list"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("cannot connect to PostgreSQL at 127.0.0.1:9"), "{}", stderr(&o));
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

/// Ctrl-C while workers are in flight: they are cancelled, not failed — in the progress
/// lines and in the summary table — and the summary ends with the command that resumes the
/// run, which then finishes it.
#[test]
fn ctrl_c_shows_steps_in_flight_as_cancelled_and_how_to_resume() {
    let dir = Dir::new("ctrl-c");
    let events = dir.join("events.jsonl");
    let events_arg = events.display().to_string();
    let args = ["run", TASK, "--agents", "4", "--sim-latency-ms", "2000", "--events", &events_arg];
    let child = command(&dir, &args, None).spawn().unwrap();
    // Wait until every worker is in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let started =
            text.lines().filter(|l| l.contains("\"step_started\"") && l.contains("worker/")).count();
        if started == 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the workers never started: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = wait(child, Duration::from_secs(60));
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o));
    assert_eq!(code(&o), 130, "{err}\n{out}");
    assert!(err.contains("4 steps in flight cancelled"), "{err}");
    assert!(!err.contains("failed"), "a cancelled step is not a failure: {err}");
    let header = out.lines().find(|l| l.contains("tier")).expect("the summary table");
    let columns: Vec<&str> = header.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect();
    let worker = out.lines().find(|l| l.contains(" worker ")).expect("the workers' row");
    let cells: Vec<&str> = worker.split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect();
    let cell = |name: &str| cells[columns.iter().position(|c| *c == name).unwrap()];
    assert_eq!((cell("steps"), cell("failed"), cell("cancelled")), ("4", "0", "4"), "{out}");
    let id = only_run_id(&dir);
    assert!(out.trim_end().ends_with(&format!("resume:  belt resume {id}")), "{out}");

    // The command it printed finishes the run.
    let o = belt(&dir, &["resume", &id, "--quiet"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

//! End-to-end tests of the cascade's decomposition through the `belt` binary on the
//! simulated provider: `--strategy`, `--min-agents/--max-agents`, dependencies between
//! subtasks, and the repair of bad plans (the simulated `plan-*` model names write them).
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{Dir, belt, code, json, stderr};
use serde_json::Value;

/// `belt run TASK ARGS --json` with events to `DIR/events.jsonl`: the RunResult and the
/// events.
fn run(dir: &Dir, task: &str, args: &[&str]) -> (Value, Vec<Value>) {
    let events = dir.join("events.jsonl");
    let mut all = vec!["run", task, "--sim-latency-ms", "0", "--quiet", "--json", "--out", "out"];
    all.extend(["--events", events.to_str().unwrap()]);
    all.extend(args);
    let o = belt(dir, &all, None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = std::fs::read_to_string(&events).unwrap();
    let events = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (json(&o), events)
}

fn of_type<'e>(events: &'e [Value], name: &str) -> Vec<&'e Value> {
    events.iter().filter(|e| e["type"] == name).collect()
}

#[test]
fn a_software_plan_in_a_range_has_its_aspects_and_dependencies_and_dependents_wait() {
    let dir = Dir::new("decomp-software");
    let (r, events) =
        run(&dir, "Build a todo app", &["--strategy", "software", "--min-agents", "3", "--max-agents", "6"]);
    assert_eq!(r["status"], "completed", "{r}");
    let plan = r["plan"].as_array().unwrap();
    assert!((3..=6).contains(&plan.len()), "{plan:?}");
    assert!(plan[0]["description"].as_str().unwrap().starts_with("Requirements"), "{plan:?}");
    assert_eq!(plan[1]["dependencies"], serde_json::json!(["1"]), "{plan:?}");
    assert_eq!(plan[2]["dependencies"], serde_json::json!(["2"]), "{plan:?}");
    let chosen = of_type(&events, "strategy_chosen");
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0]["strategy"], "software");
    assert_eq!(chosen[0]["auto"], false);
    assert!(of_type(&events, "plan_fallback").is_empty() && of_type(&events, "plan_repaired").is_empty());
    // A dependent worker starts only once its prerequisite completed, and has it as input.
    let seq_of = |kind: &str, step: &str| {
        events.iter().find(|e| e["type"] == kind && e["step"] == step).map(|e| e["seq"].as_u64().unwrap())
    };
    assert!(seq_of("step_completed", "worker/002").unwrap() < seq_of("step_started", "worker/003").unwrap());
    let agents = r["agents"].as_array().unwrap();
    let w3 = agents.iter().find(|a| a["step"] == "worker/003").unwrap();
    assert_eq!(w3["inputs"], serde_json::json!(["worker/002"]), "{w3}");
}

#[test]
fn auto_lets_the_decomposer_choose_the_strategy_from_the_task() {
    let dir = Dir::new("decomp-auto");
    let (r, events) = run(&dir, "Plan the launch of a bakery", &["--agents", "4"]);
    assert_eq!(r["plan"].as_array().unwrap().len(), 4);
    let chosen = of_type(&events, "strategy_chosen");
    assert_eq!(chosen[0]["strategy"], "planning", "{chosen:?}");
    assert_eq!(chosen[0]["auto"], true);
}

#[test]
fn bad_plans_are_repaired_or_asked_again_never_a_failed_run() {
    let dir = Dir::new("decomp-faults");
    // A cycle: broken, the run completes.
    let (r, events) = run(&dir, "Build a todo app", &["--agents", "4", "--model", "simulated/plan-cycle"]);
    assert_eq!(r["status"], "completed", "{r}");
    let repaired = of_type(&events, "plan_repaired");
    assert_eq!(repaired.len(), 1, "{events:?}");
    assert_eq!(repaired[0]["removed"], serde_json::json!([["1", "4"]]));

    // Duplicates the first time only: asked again once, the second plan used.
    let model = "simulated/plan-duplicates-once";
    let (r, events) = run(&dir, "Build a todo app", &["--agents", "4", "--model", model]);
    let rejected = of_type(&events, "plan_rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["attempt"], 1);
    assert!(rejected[0]["reason"].as_str().unwrap().contains("subtask 2 repeats subtask 1"));
    assert!(of_type(&events, "plan_fallback").is_empty());
    assert_eq!(r["plan"].as_array().unwrap().len(), 4);
    assert!(r["agents"].as_array().unwrap().iter().any(|a| a["step"] == "decompose/retry"));

    // An empty subtask every time: rejected twice, the template fills in.
    let (r, events) = run(&dir, "Build a todo app", &["--agents", "4", "--model", "simulated/plan-empty"]);
    assert_eq!(of_type(&events, "plan_rejected").len(), 2);
    let fallback = of_type(&events, "plan_fallback");
    assert_eq!(fallback.len(), 1);
    assert_eq!(fallback[0]["templated"], 1);
    let plan = r["plan"].as_array().unwrap();
    assert_eq!(plan.len(), 4);
    assert!(plan.iter().all(|s| !s["description"].as_str().unwrap().trim().is_empty()));
}

#[test]
fn a_range_and_an_exact_number_are_refused_together_and_a_range_must_be_ordered() {
    let dir = Dir::new("decomp-refused");
    let o = belt(&dir, &["run", "x", "--agents", "4", "--min-agents", "3"], None);
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(e.contains("--min-agents") && e.contains("--agents"), "{e}");
    let o = belt(&dir, &["run", "x", "--min-agents", "5", "--max-agents", "3"], None);
    assert_ne!(code(&o), 0);
    let e = stderr(&o);
    assert!(e.contains("min_agents (--min-agents) is 5 but max_agents (--max-agents) is 3"), "{e}");
    let o = belt(&dir, &["run", "x", "--strategy", "code"], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("`code` is not a strategy"), "{}", stderr(&o));
}

//! `--context` and plan files from the command line: text keeps meaning background text,
//! JSON (inline or in a file) is structured context a workflow's templates, routes and
//! conditions read; plan files keep `agent_type` and `context`, read `null` as left out and
//! name an unknown key.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{Dir, belt, code, json, stderr};
use serde_json::{Value, json};

const ROUTED: &str = "\
name: ctx
description: 'Answer {{ context.customer.name }}'
context: {customer: {name: Ada, tier: basic}}
pattern: conditional
steps:
  - id: tier
    prompt: '{{ context.customer.tier }}'
    route: {gold: vip, default: standard}
  - {id: vip, prompt: 'vip for {{ context.customer.name }}'}
  - {id: standard, prompt: 'standard for {{ context.customer.name }}'}
  - {id: audit, prompt: audited, when: context.audit}
";

/// A template step's output (its record holds it as JSON text).
fn output(r: &Value, step: &str) -> Option<String> {
    let text = r["agents"].as_array().unwrap().iter().find(|a| a["step"] == step)?["output"].as_str()?;
    serde_json::from_str(text).ok()
}

#[test]
fn a_json_context_inline_or_in_a_file_drives_a_workflow() {
    let dir = Dir::new("context-workflow");
    std::fs::write(dir.join("flow.yaml"), ROUTED).unwrap();
    let flow = dir.join("flow.yaml");
    let flow = flow.to_str().unwrap();

    // The file's own context.
    let o = belt(&dir, &["run", "-f", flow, "--json", "--quiet"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["task"], "Answer Ada");
    assert_eq!(output(&r, "steps/standard").as_deref(), Some("standard for Ada"));
    assert_eq!(output(&r, "steps/audit"), None);

    // Inline JSON goes over it key by key.
    let inline = r#"{"customer": {"name": "Bo", "tier": "gold"}, "audit": true}"#;
    let o = belt(&dir, &["run", "-f", flow, "--context", inline, "--json", "--quiet"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(output(&r, "steps/vip").as_deref(), Some("vip for Bo"));
    assert_eq!(output(&r, "steps/standard"), None);
    assert_eq!(output(&r, "steps/audit").as_deref(), Some("audited"));

    // A file holding JSON is the same.
    std::fs::write(dir.join("ctx.json"), r#"{"customer": {"name": "Cy", "tier": "gold"}}"#).unwrap();
    let ctx = dir.join("ctx.json");
    let o = belt(&dir, &["run", "-f", flow, "--context", ctx.to_str().unwrap(), "--json", "--quiet"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(output(&r, "steps/vip").as_deref(), Some("vip for Cy"));
}

#[test]
fn text_context_still_works_and_json_that_is_not_json_is_refused() {
    let dir = Dir::new("context-text");
    let o = belt(
        &dir,
        &[
            "run",
            "Plan a park",
            "-n",
            "2",
            "--context",
            "Budget is tight.",
            "--sim-latency-ms",
            "0",
            "--json",
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["status"], "completed");

    let o = belt(&dir, &["run", "Plan a park", "--context", "{\"budget\": 2000000,}"], None);
    assert_eq!(code(&o), 2);
    let err = stderr(&o);
    assert!(err.contains("--context starts like JSON but is not JSON"), "{err}");
}

#[test]
fn a_plan_file_keeps_agent_type_and_context_and_names_an_unknown_key() {
    let dir = Dir::new("context-plan");
    let plan = json!([
        {"id": "a", "description": "Collect the data", "agent_type": "researcher",
         "context": {"region": "EU"}, "specialization": null, "priority": null, "dependencies": null},
        {"id": null, "description": "Write it up", "depends_on": ["a"], "agent_type": null, "context": null}
    ]);
    std::fs::write(dir.join("plan.json"), plan.to_string()).unwrap();
    let path = dir.join("plan.json");
    let o = belt(
        &dir,
        &["run", "Plan a park", "--plan", path.to_str().unwrap(), "--sim-latency-ms", "0", "--json"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json(&o);
    assert_eq!(r["plan"][0]["agent_type"], "researcher");
    assert_eq!(r["plan"][0]["context"], json!({"region": "EU"}));
    assert_eq!(r["plan"][0]["specialization"], "general");
    assert_eq!(r["plan"][1]["id"], "2", "a null id is numbered by its position");
    assert_eq!(r["plan"][1]["dependencies"], json!(["a"]));

    std::fs::write(dir.join("bad.json"), r#"[{"description": "a", "agent_kind": "x"}]"#).unwrap();
    let bad = dir.join("bad.json");
    let o = belt(&dir, &["run", "Plan a park", "--plan", bad.to_str().unwrap()], None);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown field `agent_kind`"), "{}", stderr(&o));
}

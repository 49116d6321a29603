//! Run definitions recorded before the application layer existed: the CLI recorded its own
//! arguments, `{"args": {…}, "plan": […], "workflow": {origin, format, text, inputs}}`.
//! [`upgrade`] turns one into a [`crate::RunSpec`]'s JSON, so runs interrupted before an
//! upgrade resume after it.

use serde_json::{Map, Value};

/// Fields of the old arguments that are the same fact under the same name in a RunSpec.
const SAME: &[&str] = &[
    "agents",
    "refine",
    "model",
    "worker_model",
    "synthesizer_model",
    "executive_model",
    "concurrency",
    "sequential",
    "timeout",
    "retries",
    "group_size",
    "synthesize",
    "min_success",
    "budget_usd",
    "budget_tokens",
    "budget_calls",
    "review_plan",
    "approve_all",
    "hitl_timeout",
    "cache",
    "seed",
    "sim_latency_ms",
    "sim_fail_rate",
    "out",
];

/// The RunSpec JSON of an old definition. Fields that were about one invocation (`json`,
/// `quiet`, `events`, the plan's and the workflow's paths) are dropped: the plan and the
/// workflow's text were recorded beside the arguments.
pub(crate) fn upgrade(old: Value) -> Value {
    let mut spec = Map::new();
    let args = old.get("args").and_then(Value::as_object).cloned().unwrap_or_default();
    let workflow = old.get("workflow").and_then(Value::as_object);
    for (key, value) in &args {
        if value.is_null() {
            continue;
        }
        if SAME.contains(&key.as_str()) {
            spec.insert(key.clone(), value.clone());
        } else if key == "format" {
            spec.insert("formats".into(), value.clone());
        } else if matches!(key.as_str(), "task" | "pattern") && workflow.is_none() {
            // A workflow run's task and pattern come from its file.
            spec.insert(key.clone(), value.clone());
        }
    }
    if let Some(plan) = old.get("plan").filter(|p| !p.is_null()) {
        spec.insert("plan".into(), plan.clone());
    }
    if let Some(w) = workflow {
        let mut copy = |from: &str, to: &str| {
            if let Some(v) = w.get(from).filter(|v| !v.is_null()) {
                spec.insert(to.into(), v.clone());
            }
        };
        copy("text", "workflow");
        copy("origin", "workflow_file");
        copy("format", "workflow_format");
        copy("inputs", "inputs");
    }
    Value::Object(spec)
}

#[cfg(test)]
mod tests {
    use crate::RunSpec;

    #[test]
    fn a_definition_recorded_by_the_old_cli_is_read() {
        let old = r#"{"args":{"task":"Plan a park","agents":12,"pattern":"cascade","refine":0,
            "model":"simulated/default","worker_model":null,"synthesizer_model":null,
            "executive_model":null,"concurrency":16,"sequential":false,"timeout":null,"retries":2,
            "group_size":5,"synthesize":"auto","min_success":0.5,"budget_usd":0.5,
            "budget_tokens":null,"budget_calls":null,"plan":"plan.json","out":"belt-out",
            "format":"md,html","events":null,"json":false,"quiet":true,"review_plan":false,
            "approve_all":false,"hitl_timeout":null,"cache":null,"seed":7,"sim_latency_ms":0,
            "sim_fail_rate":0.0},
            "plan":[{"id":"a","description":"A"}]}"#;
        let spec = RunSpec::from_definition(old).unwrap();
        assert_eq!(spec.task, "Plan a park");
        assert_eq!(spec.agents, Some(12));
        assert_eq!(spec.budget_usd, Some(0.5));
        assert_eq!(spec.formats.as_deref(), Some("md,html"));
        assert_eq!(spec.seed, Some(7));
        assert_eq!(spec.plan.as_ref().map(Vec::len), Some(1));
        assert_eq!(spec.out.as_deref(), Some(std::path::Path::new("belt-out")));
    }

    #[test]
    fn an_old_workflow_definition_keeps_its_text_and_inputs() {
        let old = r#"{"args":{"task":"from the file","pattern":"cascade","agents":5,"seed":0},
            "workflow":{"origin":"w.yaml","format":"yaml","text":"name: x","inputs":{"k":"v"}}}"#;
        let spec = RunSpec::from_definition(old).unwrap();
        assert_eq!(spec.task, "");
        assert_eq!(spec.pattern, None);
        assert_eq!(spec.workflow.as_deref(), Some("name: x"));
        assert_eq!(spec.workflow_file.as_deref(), Some("w.yaml"));
        assert_eq!(spec.workflow_format, Some(belt_workflow::Format::Yaml));
        assert_eq!(spec.inputs["k"], "v");
    }
}

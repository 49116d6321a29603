//! A run's context and plans over HTTP: `context` in the body (text or JSON) reaches the
//! run and a workflow's templates; plans keep `agent_type` and `context` per subtask, read
//! `null` as left out, and an unknown key is a 422 that names it.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::{Value, json};

const ROUTED: &str = "\
name: ctx
context: {customer: {tier: basic}}
pattern: conditional
steps:
  - id: tier
    prompt: '{{ context.customer.tier }}'
    route: {gold: vip, default: standard}
  - {id: vip, prompt: 'vip for {{ context.customer.name }}'}
  - {id: standard, prompt: standard}
";

fn step<'a>(view: &'a Value, id: &str) -> Option<&'a Value> {
    view["result"]["agents"].as_array().unwrap().iter().find(|a| a["step"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_context_in_the_body_drives_a_workflow_and_plans_keep_theirs() {
    let server = TestServer::start(config(), 0).await;
    let c = client();
    let body = json!({"workflow": ROUTED, "context": {"customer": {"tier": "gold", "name": "Ada"}}});
    let r = authed(c.post(server.url("/v1/runs"))).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    let view = wait_result(&server, &id).await;
    assert_eq!(view["status"], "completed", "{view}");
    // A template step's record holds its output as JSON text.
    assert_eq!(step(&view, "steps/vip").unwrap()["output"], "\"vip for Ada\"");
    assert!(step(&view, "steps/standard").is_none(), "the file's own tier was overridden");

    let plan = json!([
        {"id": "a", "description": "Collect", "agent_type": "researcher", "context": {"region": "EU"},
         "specialization": null, "priority": null, "dependencies": null},
        {"id": "b", "description": "Write", "depends_on": ["a"], "context": null}
    ]);
    let body = json!({"task": "Plan a park", "context": "Budget is tight.", "plan": plan});
    let r = authed(c.post(server.url("/v1/runs"))).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["run_id"].as_str().unwrap().to_string();
    let view = wait_result(&server, &id).await;
    assert_eq!(view["status"], "completed", "{view}");
    let kept = &view["result"]["plan"];
    assert_eq!(kept[0]["agent_type"], "researcher");
    assert_eq!(kept[0]["context"], json!({"region": "EU"}));
    assert_eq!(kept[0]["specialization"], "general");
    assert!(kept[1].get("context").is_none() && kept[1].get("agent_type").is_none(), "{kept}");

    let bad = json!({"task": "t", "plan": [{"description": "a", "agent_typ": "x"}]});
    let r = authed(c.post(server.url("/v1/runs"))).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let message = r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("unknown field `agent_typ`"), "{message}");

    // The body's schema says `context` takes any JSON.
    let doc: Value = authed(c.get(server.url("/openapi.json"))).send().await.unwrap().json().await.unwrap();
    let text = doc.to_string();
    assert!(text.contains("structured context"), "the schema documents `context`");
}

//! Tests of the whole crate: the examples (schema, validation, runs on the simulated
//! provider), a file with five mistakes, and the semantics of steps at run time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use belt_core::{AgentStatus, RunOptions, RunResult, RunStatus, run};
use belt_llm::SimConfig;

use crate::{Format, ValidationContext, Workflow, check, schema, templates};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows")
}

fn examples() -> Vec<(String, Format, String)> {
    let mut out: Vec<(String, Format, String)> = std::fs::read_dir(examples_dir())
        .expect("examples/workflows exists")
        .map(|e| e.expect("a directory entry").path())
        .filter_map(|p| {
            let format = Format::from_path(&p)?;
            let text = std::fs::read_to_string(&p).expect("readable example");
            Some((p.file_name()?.to_string_lossy().into_owned(), format, text))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn as_json(text: &str, format: Format) -> serde_json::Value {
    match format {
        Format::Yaml => serde_saphyr::from_str(text).expect("YAML"),
        Format::Toml => toml::from_str(text).expect("TOML"),
    }
}

fn yaml(text: &str) -> crate::Diagnostics {
    check(text, Format::Yaml, "flow.yaml", &ValidationContext::default())
}

async fn run_text(text: &str, format: Format, inputs: &[(&str, &str)]) -> RunResult {
    run_with_context(text, format, inputs, None).await
}

async fn run_with_context(
    text: &str,
    format: Format,
    inputs: &[(&str, &str)],
    context: Option<serde_json::Value>,
) -> RunResult {
    let workflow = Workflow::parse(text, format, "test").expect("parses");
    let inputs: BTreeMap<String, String> =
        inputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let bound = workflow.bind(inputs).expect("binds").with_context(context);
    let mut options =
        RunOptions::default().with_providers(belt_llm::providers(SimConfig::default().latency_ms(0)));
    bound.settings().apply(&mut options);
    let task = bound.task().expect("task renders");
    run(bound.orchestrator(), task, options).await.expect("starts").result().await
}

fn status_of<'r>(result: &'r RunResult, step: &str) -> Option<&'r AgentStatus> {
    result.agents.iter().find(|a| a.step.as_str() == step).map(|a| &a.status)
}

#[test]
fn the_four_templates_are_the_example_files() {
    let names: Vec<&str> = templates().iter().map(|t| t.name).collect();
    assert_eq!(names, ["research", "pipeline", "review-dag", "support-router"]);
    for t in templates() {
        let on_disk = std::fs::read_to_string(examples_dir().join(t.file_name)).unwrap();
        assert_eq!(t.text, on_disk, "{} is the example file", t.name);
        assert!(t.text.starts_with('#'), "{} opens with comments", t.name);
    }
}

#[test]
fn every_example_is_valid_and_validates_against_the_json_schema() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    let examples = examples();
    assert!(examples.len() >= 7, "the four templates and more: {}", examples.len());
    for (name, format, text) in &examples {
        let diagnostics = check(text, *format, name, &ValidationContext::default());
        assert!(diagnostics.is_empty(), "{name}:\n{diagnostics}");
        let value = as_json(text, *format);
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{name} against the schema: {errors:?}");
    }
    // The schema is strict: an unknown key fails it too.
    let mut bad = as_json(&examples[0].2, examples[0].1);
    bad["agentz"] = serde_json::json!([]);
    assert!(!validator.is_valid(&bad));
}

#[tokio::test]
async fn every_example_runs_as_is_on_the_simulated_provider() {
    for (name, format, text) in examples() {
        let result = run_text(&text, format, &[]).await;
        assert_eq!(result.status, RunStatus::Completed, "{name}: {}", result.stop_reason);
        assert!(result.simulated, "{name} is labelled as simulated");
        let out = result.final_output.as_deref().unwrap_or("");
        assert!(!out.trim().is_empty(), "{name} has a final output");
    }
}

#[test]
fn five_mistakes_are_all_reported_with_line_and_column() {
    let text = "\
name: five
inputs:
  topic: {default: rust}
agents:
  - id: writer
    rol: a writer
    model: simulatd/default
pattern: dag
steps:
  - id: draft
    agent: writr
    prompt: Write about {{ inputs.topik }}.
  - id: review
    agent: writer
    needs: [polish]
    prompt: Review {{ steps.draft.output }}
  - id: polish
    agent: writer
    needs: [review]
    prompt: Polish.
";
    let cx = ValidationContext {
        providers: Some(vec!["openai".into(), "anthropic".into(), "simulated".into()]),
        ..ValidationContext::default()
    };
    let d = check(text, Format::Yaml, "five.yaml", &cx);
    let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "five.yaml:6:5: agents[0].rol: unknown key `rol` (did you mean `role`?)",
            "five.yaml:7:12: agents[0].model: unknown provider `simulatd` in `simulatd/default` (did you mean `simulated`?)",
            "five.yaml:11:12: steps[0].agent: unknown agent `writr` (did you mean `writer`?)",
            "five.yaml:12:13: steps[0].prompt: the template uses `inputs.topik`, which is not a declared input (did you mean `topic`?)",
            "five.yaml:15:13: steps[1].needs[0]: dependency cycle: review -> polish -> review (a step cannot wait, directly or not, for itself; remove one of these needs)",
        ],
        "{d}"
    );
}

#[test]
fn the_same_mistakes_in_toml_have_toml_locations() {
    let text = "\
name = \"t\"
pattern = \"sequential\"

[[agents]]
id = \"writer\"
temprature = 0.2

[[steps]]
id = \"a\"
agent = \"writer\"
prompt = \"{{ steps.b.output }}\"

[[steps]]
id = \"b\"
agent = \"editor\"
prompt = \"x\"
";
    let d = check(text, Format::Toml, "t.toml", &ValidationContext::default());
    let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "t.toml:6:1: agents[0].temprature: unknown key `temprature` (did you mean `temperature`?)",
            "t.toml:11:10: steps[0].prompt: step `a` reads `steps.b.output`, but `b` comes later and is not in its `needs` (add `needs: [b]`, or move the step after `b`)",
            "t.toml:15:9: steps[1].agent: unknown agent `editor` (agents: `writer`)",
        ],
        "{d}"
    );
}

#[test]
fn providers_models_and_inputs_are_checked_against_the_context() {
    let text = "\
name: x
inputs:
  topic: {description: the subject}
  n: {type: integer, default: 3}
agents:
  - {id: a, model: opnai/gpt-4.1-mini}
  - {id: b, model: [simulated/default, simulated/defualt]}
  - {id: c, model: gpt-4}
pattern: sequential
steps:
  - {id: s, agent: a, prompt: '{{ inputs.topic }}'}
";
    let cx = ValidationContext {
        providers: Some(vec!["openai".into(), "simulated".into()]),
        models: BTreeMap::from([("simulated".into(), vec!["simulated/default".into()])]),
        inputs: Some(BTreeMap::from([("n".into(), "three".into()), ("topc".into(), "x".into())])),
        tools: None,
        servers: Vec::new(),
    };
    let d = check(text, Format::Yaml, "x.yaml", &cx);
    let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "x.yaml:2:1: inputs: input `topc` was given but the file does not declare it (did you mean `topic`?)",
            "x.yaml:3:3: inputs.topic: the required input `topic` (the subject) is missing (pass --input topic=…)",
            "x.yaml:4:3: inputs.n: input `n`: `three` is not an integer",
            "x.yaml:6:20: agents[0].model: unknown provider `opnai` in `opnai/gpt-4.1-mini` (did you mean `openai`?)",
            "x.yaml:7:40: agents[1].model[1]: unknown model `simulated/defualt` (did you mean `simulated/default`?)",
            "x.yaml:8:20: agents[2].model: `gpt-4` is not a model name (models are named provider/model, e.g. openai/gpt-4.1-mini or simulated/default)",
        ],
        "{d}"
    );
    // bind() reports the missing input with its place too.
    let w = Workflow::parse(text, Format::Yaml, "x.yaml").unwrap();
    let err = w.bind(BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("x.yaml:3:3: inputs.topic: the required input `topic`"), "{err}");
}

#[test]
fn patterns_and_sections_must_match() {
    let d = yaml("name: x\npattern: cascade\nsteps:\n  - {id: a, prompt: hi}\n");
    let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "flow.yaml:2:10: pattern: pattern `cascade` needs a `cascade` section (cascade: {task: \"…\", agents: 12})",
            "flow.yaml:3:1: steps: pattern `cascade` has no steps (its settings go in the `cascade` section)",
        ]
    );
    let d = yaml("name: x\npattern: dga\n");
    assert_eq!(d.to_string(), "flow.yaml:2:10: pattern: unknown value `dga` (did you mean `dag`?)");
    let d = yaml("name: x\npattern: router\nsteps:\n  - {id: a, prompt: hi}\n");
    assert!(d.to_string().contains("has no step with `route` or `when`"), "{d}");
}

#[test]
fn templates_see_only_what_exists() {
    let d = yaml(
        "name: x\npattern: dag\nagents: [{id: w}]\nsteps:\n  - id: a\n    agent: w\n    prompt: '{{ topic }} {{ steps.a.output }} {{ steps.zz.output }} {{ steps.b.result }}'\n  - {id: b, agent: w, prompt: '{% for x in %}'}\n    \n",
    );
    let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "flow.yaml:7:13: steps[0].prompt: `steps.b.result` does not exist (a step has one value: `steps.b.output`)",
            "flow.yaml:7:13: steps[0].prompt: step `a` reads `steps.b.output`, but `b` comes later and is not in its `needs` (add `needs: [b]`, or move the step after `b`)",
            "flow.yaml:7:13: steps[0].prompt: step `a` reads its own output (in a loop's `until`, the draft is `output`)",
            "flow.yaml:7:13: steps[0].prompt: the template uses `steps.zz`, but there is no step `zz` (steps: `a`, `b`)",
            "flow.yaml:7:13: steps[0].prompt: unknown variable `topic` (templates see `inputs.*`, `context.*` and `steps.<id>.output`)",
            "flow.yaml:8:31: steps[1].prompt: invalid template: unexpected end of block",
        ],
        "{d}"
    );
}

#[test]
fn hostile_files_are_clear_errors() {
    let mut bomb = String::from(
        "name: x\npattern: dag\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        bomb.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    let d = yaml(&bomb);
    assert_eq!(d.len(), 1, "{d}");
    assert!(d.to_string().contains("alias"), "{d}");

    let deep = format!("name: x\npattern: dag\nsteps: {}{}\n", "[".repeat(200), "]".repeat(200));
    let d = yaml(&deep);
    assert_eq!(d.len(), 1, "{d}");
    assert!(d.to_string().starts_with("flow.yaml:3:"), "{d}");

    let huge = format!("name: x\npattern: dag\ndescription: '{}'\n", "a".repeat(crate::MAX_FILE_BYTES));
    let d = yaml(&huge);
    assert!(d.to_string().starts_with("flow.yaml:1:1: the file is"), "{d}");

    let many = format!("name: x\npattern: dag\nsteps:\n{}", "  - {id: a, prompt: x}\n".repeat(1001));
    let d = yaml(&many);
    assert!(d.to_string().contains("at most 1000 are allowed"), "{d}");
}

#[tokio::test]
async fn a_router_runs_the_chosen_route_only() {
    let text = "\
name: desk
inputs:
  kind: {default: outage}
pattern: router
agents: [{id: w, model: simulated/default}]
steps:
  - id: classify
    prompt: '{{ inputs.kind }}'
    route: {billing: pay, outage: ops, default: desk}
  - {id: pay, agent: w, prompt: pay}
  - {id: ops, agent: w, prompt: ops}
  - {id: desk, agent: w, prompt: desk}
  - {id: urgent, agent: w, prompt: urgent, when: inputs.kind == 'billing'}
";
    let r = run_text(text, Format::Yaml, &[]).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(status_of(&r, "steps/classify"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&r, "steps/ops"), Some(&AgentStatus::Completed));
    for not_run in ["steps/pay", "steps/desk", "steps/urgent"] {
        assert_eq!(status_of(&r, not_run), None, "{not_run} was not run");
    }
    assert_eq!(r.usage.calls, 1, "only the chosen route called a model");

    let r = run_text(text, Format::Yaml, &[("kind", "something else")]).await;
    assert_eq!(status_of(&r, "steps/desk"), Some(&AgentStatus::Completed), "the default route");
    let r = run_text(text, Format::Yaml, &[("kind", "billing")]).await;
    assert_eq!(status_of(&r, "steps/pay"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&r, "steps/urgent"), Some(&AgentStatus::Completed), "`when` held");
    assert_eq!(r.usage.calls, 2);
}

#[tokio::test]
async fn steps_read_earlier_outputs_and_the_final_output_is_the_last() {
    let text = "\
name: chain
pattern: sequential
steps:
  - {id: a, prompt: 'one'}
  - {id: b, prompt: '{{ steps.a.output }} two'}
  - {id: c, prompt: '{{ steps.b.output }} three'}
";
    let r = run_text(text, Format::Yaml, &[]).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(r.final_output.as_deref(), Some("one two three"));
    assert_eq!(r.usage.calls, 0, "template steps call no model");
    let b = r.agents.iter().find(|a| a.step.as_str() == "steps/b").unwrap();
    assert_eq!(b.inputs.iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["steps/a"]);
}

#[tokio::test]
async fn a_failed_step_skips_its_dependents_and_the_run_is_partial() {
    let text = "\
name: d
pattern: dag
agents:
  - {id: w, model: simulated/default}
  - {id: j, model: simulated/default, output_schema: {type: object}}
steps:
  - {id: a, agent: w, prompt: 'write'}
  - {id: b, agent: w, prompt: 'x {{ steps.a.output }}'}
  - {id: c, agent: w, needs: [b], prompt: 'y'}
  - {id: other, agent: j, prompt: 'not json please'}
";
    let r = run_text(text, Format::Yaml, &[]).await;
    // The simulated provider answers JSON requests with a JSON array: `other` passes.
    assert_eq!(status_of(&r, "steps/other"), Some(&AgentStatus::Completed), "{}", r.stop_reason);
    assert_eq!(r.status, RunStatus::Completed);

    // A route with no match and no default fails its step; its dependents are skipped.
    let text = "\
name: d
pattern: dag
steps:
  - {id: a, prompt: 'zzz', route: {x: b}}
  - {id: b, prompt: 'b'}
  - {id: c, prompt: 'c', needs: [a]}
  - {id: d, prompt: 'd'}
";
    let r = run_text(text, Format::Yaml, &[]).await;
    assert_eq!(r.status, RunStatus::Partial, "{}", r.stop_reason);
    assert_eq!(status_of(&r, "steps/a"), Some(&AgentStatus::Completed), "its output exists");
    assert_eq!(status_of(&r, "steps/a/route"), Some(&AgentStatus::Failed), "its routing failed");
    assert_eq!(status_of(&r, "steps/c"), Some(&AgentStatus::Skipped));
    assert_eq!(status_of(&r, "steps/d"), Some(&AgentStatus::Completed));
    assert_eq!(r.final_output.as_deref(), Some("d"));
}

#[tokio::test]
async fn a_loop_refines_until_its_condition_holds_or_its_cap() {
    let text = "\
name: l
pattern: iterative
agents: [{id: w, model: simulated/default}]
steps:
  - id: essay
    agent: w
    prompt: Write.
    loop: {until: 'output | length > 10', max: 3}
";
    let r = run_text(text, Format::Yaml, &[]).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(status_of(&r, "steps/essay/01/draft"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&r, "steps/essay/02/draft"), None, "the first draft was enough");

    let never = text.replace("output | length > 10", "output | length > 100000");
    let r = run_text(&never, Format::Yaml, &[]).await;
    assert_eq!(status_of(&r, "steps/essay/03/draft"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&r, "steps/essay/04/draft"), Some(&AgentStatus::Skipped), "the cap is on record");
    assert_eq!(r.status, RunStatus::Partial);
}

#[tokio::test]
async fn the_context_drives_routes_conditions_and_loops() {
    // The file's context is the default; a run's context goes over it key by key.
    let text = "\
name: ctx
description: 'Support for {{ context.customer.name }}'
context: {customer: {name: Ada, tier: basic}, min_len: 100000}
pattern: conditional
agents: [{id: w, model: simulated/default}]
steps:
  - id: tier
    prompt: '{{ context.customer.tier }}'
    route: {gold: vip, default: standard}
  - {id: vip, agent: w, prompt: 'VIP answer for {{ context.customer.name }}'}
  - {id: standard, prompt: 'standard for {{ context.customer.name }}'}
  - {id: audit, prompt: 'audited', when: context.audit}
  - id: essay
    agent: w
    prompt: Write.
    loop: {until: 'output | length > context.min_len', max: 2}
";
    let d = yaml(text);
    assert!(d.is_empty(), "{d}");
    let r = run_with_context(text, Format::Yaml, &[], None).await;
    assert_eq!(r.task, "Support for Ada");
    assert_eq!(status_of(&r, "steps/standard"), Some(&AgentStatus::Completed), "{}", r.stop_reason);
    assert_eq!(status_of(&r, "steps/vip"), None);
    assert_eq!(status_of(&r, "steps/audit"), None, "`when: context.audit` is false without it");
    assert_eq!(status_of(&r, "steps/essay/02/draft"), Some(&AgentStatus::Completed), "never long enough");

    let run = serde_json::json!({"customer": {"name": "Bo", "tier": "gold"}, "audit": true, "min_len": 1});
    let r = run_with_context(text, Format::Yaml, &[], Some(run)).await;
    assert_eq!(r.task, "Support for Bo");
    assert_eq!(status_of(&r, "steps/vip"), Some(&AgentStatus::Completed), "{}", r.stop_reason);
    assert_eq!(status_of(&r, "steps/standard"), None);
    assert_eq!(status_of(&r, "steps/audit"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&r, "steps/essay/01/draft"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&r, "steps/essay/02/draft"), None, "the run's min_len ends the loop at once");

    // An unknown root is still an error, and its hint names `context.*`.
    let d = yaml("name: x\npattern: sequential\nsteps:\n  - {id: a, prompt: '{{ contxt.a }}'}\n");
    assert!(
        d.to_string().contains("unknown variable `contxt`") && d.to_string().contains("context.*"),
        "{d}"
    );
}

#[tokio::test]
async fn on_error_skips_recovers_with_a_template_or_aborts() {
    let text = "\
name: e
pattern: dag
defaults: {retries: 0}
agents: [{id: w, model: simulated/default}]
steps:
  - {id: a, agent: w, prompt: one, on_error: '(no answer: {{ error.kind }} for {{ context.who }})'}
  - {id: b, agent: w, prompt: two, on_error: skip}
  - {id: c, prompt: '{{ steps.a.output }}|{{ steps.b.output }}|'}
  - {id: d, agent: w, prompt: three}
  - {id: e, prompt: 'after {{ steps.d.output }}'}
";
    assert!(yaml(text).is_empty(), "{}", yaml(text));
    let workflow = Workflow::parse(text, Format::Yaml, "test").expect("parses");
    let bound =
        workflow.bind(BTreeMap::new()).expect("binds").with_context(Some(serde_json::json!({"who": "Ada"})));
    let failing =
        SimConfig::default().latency_ms(0).fail_rate(1.0).failure_kinds([belt_llm::FailureKind::Server]);
    let mut options = RunOptions::default().with_providers(belt_llm::providers(failing));
    bound.settings().apply(&mut options);
    let r = run(bound.orchestrator(), bound.task().unwrap(), options).await.expect("starts").result().await;
    let c = r.agents.iter().find(|a| a.step.as_str() == "steps/c").expect("c ran");
    // A template step's record holds its output as JSON text.
    assert_eq!(c.output.as_deref(), Some("\"(no answer: server_error for Ada)||\""), "{}", r.stop_reason);
    assert_eq!(status_of(&r, "steps/e"), Some(&AgentStatus::Skipped), "d aborted: its dependent is skipped");
    assert_eq!(status_of(&r, "steps/a"), Some(&AgentStatus::Failed), "the failed call stays on record");
    assert_eq!(r.status, RunStatus::Partial);

    // `error.*` is for on_error only; an on_error template without an agent is a mistake.
    let d = yaml("name: x\npattern: dag\nsteps:\n  - {id: a, prompt: '{{ error.kind }}', on_error: 'x'}\n");
    let d = d.to_string();
    assert!(d.contains("unknown variable `error`") && d.contains("only a step with an agent"), "{d}");
}

#[test]
fn settings_come_from_the_file() {
    let text = "\
name: s
pattern: dag
defaults: {concurrency: 3, timeout: 20, retries: 5, model: simulated/x}
budget: {usd: 0.25, calls: 9}
providers: {simulated: {rpm: 60}}
outputs: {formats: [md, pdf], dir: reports}
agents: [{id: w}]
steps: [{id: a, agent: w, prompt: hi}]
";
    let bound = Workflow::parse(text, Format::Yaml, "s").unwrap().bind(BTreeMap::new()).unwrap();
    let s = bound.settings();
    assert_eq!(s.concurrency, Some(3));
    assert_eq!(s.budget.max_cost_usd, Some(0.25));
    assert_eq!(s.budget.max_calls, Some(9));
    assert_eq!(s.providers["simulated"].rpm, Some(60));
    assert_eq!(s.out_dir.as_deref(), Some("reports"));
    let mut options = RunOptions::default();
    s.apply(&mut options);
    assert_eq!(options.concurrency, 3);
    assert_eq!(options.policies.default.retries, 5);
    assert_eq!(options.policies.default.timeout, std::time::Duration::from_secs(20));
    assert_eq!(bound.models(), ["simulated/x"]);
    assert_eq!(bound.with_default_model("openai/gpt-4.1").models(), ["simulated/x"], "the file's model wins");
}

#[test]
fn unknown_filters_and_tests_are_validation_errors_even_in_branches_not_taken() {
    let text = "\
name: t
inputs: {topic: {default: x}}
agents: [{id: w}]
pattern: dag
steps:
  - id: a
    agent: w
    prompt: \"{% if false %}{{ inputs.topic | frobnicate }}{% endif %}{{ inputs.topic | upper }} {{ 'a | nofilter' }}\"
  - id: b
    agent: w
    when: \"inputs.topic is odd_thing\"
    prompt: \"{{ inputs.topic | default('y') | trim }} {% if inputs.topic is not defined %}no{% endif %}\"
";
    let d = yaml(text).to_string();
    assert!(d.contains("steps[0].prompt: unknown filter `frobnicate`"), "{d}");
    assert!(d.contains("steps[1].when: unknown test `odd_thing`"), "{d}");
    assert!(!d.contains("`nofilter`") && !d.contains("`upper`") && !d.contains("`defined`"), "{d}");
    assert_eq!(d.lines().count(), 2, "{d}");
}

#[tokio::test]
async fn a_template_that_fails_at_run_time_says_which_step_line_and_why() {
    let text = "\
name: t
agents: [{id: w}]
pattern: sequential
steps:
  - id: s1
    agent: w
    prompt: |
      Line one
      {{ 'x' * 1000000000 }}
";
    assert!(yaml(text).is_empty(), "valid: the failure is a matter of values, seen at run time");
    let r = run_text(text, Format::Yaml, &[]).await;
    let failed = r.agents.iter().find(|a| a.step.as_str() == "steps/s1").expect("the step is on the record");
    assert_eq!(failed.status, AgentStatus::Failed);
    let error = failed.error.as_deref().unwrap();
    assert!(
        error.contains("steps[0].prompt") && error.contains("too large") && error.contains("line 2"),
        "{error}"
    );
}

#[test]
fn a_timeout_out_of_range_is_a_validation_error_not_a_panic() {
    for timeout in ["1e20", "0", "-3", "86401"] {
        let text = format!(
            "name: t\npattern: dag\ndefaults: {{timeout: {timeout}}}\nagents: [{{id: w}}]\nsteps: [{{id: a, agent: w, prompt: hi}}]\n"
        );
        let d = yaml(&text).to_string();
        assert!(
            d.contains("flow.yaml:3:") && d.contains("defaults.timeout") && d.contains("at most 86400"),
            "{timeout}: {d}"
        );
    }
}

#[tokio::test]
async fn the_readme_example_is_valid_and_runs() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let section = &readme[readme.find("## Workflow files").expect("the README has the section")..];
    let start = section.find("```yaml\n").expect("a YAML example") + "```yaml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let d = check(text, Format::Yaml, "README.md", &ValidationContext::default());
    assert!(d.is_empty(), "{d}");
    let r = run_text(text, Format::Yaml, &[("question", "I was charged twice")]).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
}

#[tokio::test]
async fn an_agent_with_tools_runs_the_engine_tool_loop_and_unknown_tools_are_named() {
    let text = "\
name: sums
agents:
  - {id: clerk, role: a careful clerk, tools: [calculator, clock]}
pattern: sequential
steps:
  - {id: total, agent: clerk, prompt: What is 1200 * 0.15 + 40?}
";
    let result = run_text(text, Format::Yaml, &[]).await;
    assert_eq!(result.status, RunStatus::Completed, "{}", result.stop_reason);
    // The simulated model calls the first tool once, then answers with what it got.
    assert_eq!(status_of(&result, "steps/total/round/01"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&result, "steps/total/round/01/tool/1"), Some(&AgentStatus::Completed));
    assert_eq!(status_of(&result, "steps/total/round/02"), Some(&AgentStatus::Completed));

    let typo = text.replace("[calculator, clock]", "[calcualtor]");
    let lines: Vec<String> = yaml(&typo).iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        ["flow.yaml:3:48: agents[0].tools[0]: unknown tool `calcualtor` (did you mean `calculator`?)"]
    );
}

#[test]
fn agents_may_name_the_files_mcp_servers_and_their_tools_and_a_wrong_server_has_its_line() {
    let text = "\
name: files
mcp_servers:
  fs: {command: npx, args: [-y, server-filesystem, /tmp]}
agents:
  - {id: a, tools: [fs, fs.read_file, calculator]}
  - {id: b, tools: [fz.read_file]}
pattern: sequential
steps:
  - {id: s, agent: a, prompt: hi}
";
    let lines: Vec<String> = yaml(text).iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("flow.yaml:6:21: agents[1].tools[0]: unknown tool `fz.read_file`"),
        "{lines:?}"
    );
    assert!(lines[0].contains("fs"), "the servers are among the names offered: {lines:?}");
    let bad = text.replace("command: npx", "comand: npx");
    let lines: Vec<String> = yaml(&bad).iter().map(ToString::to_string).collect();
    assert!(lines.iter().any(|l| l.starts_with("flow.yaml:3:")), "{lines:?}");
}

/// The shipped template `name`, bound with its default inputs.
fn bound_template(name: &str) -> crate::Bound {
    let t = crate::template(name).expect("a shipped template");
    Workflow::parse(t.text, Format::Yaml, t.file_name).unwrap().bind(BTreeMap::new()).unwrap()
}

#[test]
fn a_callers_models_take_the_place_of_the_files_defaults_level_by_level() {
    use crate::ModelChoice;
    // Every shipped template names only a default that `model` replaces: nothing simulated stays.
    for t in templates() {
        let choice = ModelChoice { model: Some("openai/x".into()), ..ModelChoice::default() };
        let bound = bound_template(t.name).with_models(&choice).unwrap();
        assert_eq!(bound.models(), ["openai/x"], "{}", t.name);
        assert!(bound.own_models().is_empty(), "{}: {:?}", t.name, bound.own_models());
    }
    // A cascade's tiers, a fallback chain among them.
    let choice = ModelChoice {
        model: Some("openai/base".into()),
        executive: Some("anthropic/big, openai/base".into()),
        ..ModelChoice::default()
    };
    let research = bound_template("research").with_models(&choice).unwrap();
    assert_eq!(research.models(), ["anthropic/big,openai/base", "openai/base"]);
    assert_eq!(
        research.own_models(),
        [("the executive tier".to_string(), "anthropic/big,openai/base".to_string())]
    );
    // Tier models on steps: refused, saying what applies.
    let choice = ModelChoice { synthesizer: Some("openai/x".into()), ..ModelChoice::default() };
    let e = bound_template("pipeline").with_models(&choice).unwrap_err();
    assert!(
        e.contains("synthesizer_model (--synthesizer-model) chooses") && e.contains("`sequential`"),
        "{e}"
    );
    // An agent's own model stays, and is said.
    let text = crate::template("pipeline")
        .unwrap()
        .text
        .replace("    role: a copy editor\n", "    role: a copy editor\n    model: anthropic/own\n");
    let bound = Workflow::parse(&text, Format::Yaml, "p").unwrap().bind(BTreeMap::new()).unwrap();
    let bound =
        bound.with_models(&ModelChoice { model: Some("openai/x".into()), ..ModelChoice::default() }).unwrap();
    assert_eq!(bound.models(), ["anthropic/own", "openai/x"]);
    assert_eq!(bound.own_models(), [("agent `editor`".to_string(), "anthropic/own".to_string())]);
}

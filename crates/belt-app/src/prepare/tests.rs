use std::sync::Arc;
use std::time::Duration;

use belt_core::{RunStatus, Tier};

use super::*;

fn app() -> App {
    App::new(Config::default()).with_env(Arc::new(|_| None))
}

fn spec(json: &str) -> RunSpec {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn mistake(json: &str) -> String {
    match app().prepare(&spec(json)) {
        Ok(_) => panic!("{json} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_field_mistake_names_the_field_and_its_flag() {
    let cases = [
        (r#"{"task": " "}"#, vec!["task is empty"]),
        (r#"{"task": "x", "agents": 0}"#, vec!["'0'", "agents (--agents)", "from 1 to 100000"]),
        (r#"{"task": "x", "agents": 100001}"#, vec!["'100001'", "--agents"]),
        (r#"{"task": "x", "concurrency": 0}"#, vec!["concurrency (--concurrency)"]),
        (r#"{"task": "x", "group_size": 1}"#, vec!["group_size (--group-size)"]),
        (r#"{"task": "x", "refine": 21}"#, vec!["refine (--refine)", "21"]),
        (r#"{"task": "x", "retries": 101}"#, vec!["retries (--retries)"]),
        (r#"{"task": "x", "timeout": 0}"#, vec!["timeout (--timeout)", "positive"]),
        (r#"{"task": "x", "timeout": 1e20}"#, vec!["timeout (--timeout)", "at most 86400"]),
        (r#"{"task": "x", "min_success": 2}"#, vec!["min_success (--min-success)", "between 0 and 1"]),
        (r#"{"task": "x", "budget_usd": -1}"#, vec!["budget_usd (--budget-usd)", "positive", "'-1'"]),
        (r#"{"task": "x", "budget_tokens": 0}"#, vec!["budget_tokens (--budget-tokens)"]),
        (r#"{"task": "x", "budget_calls": 0}"#, vec!["budget_calls (--budget-calls)"]),
        (r#"{"task": "x", "hitl_timeout": 0}"#, vec!["hitl_timeout (--hitl-timeout)"]),
        (r#"{"task": "x", "sim_fail_rate": 1.5}"#, vec!["sim_fail_rate (--sim-fail-rate)"]),
        (r#"{"task": "x", "formats": "md,rtf"}"#, vec!["formats (--format)", "rtf"]),
        (r#"{"task": "x", "pattern": "pyramid"}"#, vec!["unknown pattern `pyramid`", "cascade, swarm"]),
        (r#"{"task": "x", "pattern": "saga"}"#, vec!["`saga` needs more than a task", "workflow file"]),
        (r#"{"task": "x", "model": "nope/x"}"#, vec!["unknown provider `nope`"]),
        (
            r#"{"task": "x", "model": "openai/gpt-4o-mini"}"#,
            vec!["`openai/gpt-4o-mini` needs OPENAI_API_KEY, which is not set"],
        ),
        (
            r#"{"task": "x", "executive_model": "simulated/a,anthropic/claude"}"#,
            vec!["needs ANTHROPIC_API_KEY"],
        ),
        (r#"{"task": "x", "worker_model": "noslash"}"#, vec!["noslash", "provider/model"]),
        (r#"{"task": "x", "plan": []}"#, vec!["plan is empty"]),
        (
            r#"{"task": "x", "plan": [{"id": "a", "description": "A", "dependencies": ["a"]}]}"#,
            vec!["dependency cycle"],
        ),
        (r#"{"task": "x", "inputs": {"k": "v"}}"#, vec!["use it with -f FILE"]),
        (r#"{"task": "x", "workflow": "name: w\npattern: cascade\n"}"#, vec!["leave `task` out"]),
        (r#"{"task": "x", "policies": {"worker": {"timeout": -3}}}"#, vec!["policies.*.timeout"]),
    ];
    for (json, needles) in cases {
        let e = mistake(json);
        for needle in needles {
            assert!(e.contains(needle), "{json}: `{needle}` not in: {e}");
        }
    }
}

#[test]
fn defaults_fill_what_the_spec_leaves_out() {
    let p = app().prepare(&spec(r#"{"task": "Plan a park"}"#)).unwrap();
    assert_eq!(p.orchestrator.name(), "cascade");
    assert_eq!(p.options.concurrency, 16);
    assert_eq!(p.options.min_success, 0.5);
    assert!(p.options.budget.is_unlimited());
    assert_eq!(p.options.policies.for_tier(&Tier::Worker).retries, 2);
    assert_eq!(p.options.policies.for_tier(&Tier::Executive).timeout, Duration::from_secs(300));
    assert_eq!(p.formats, vec![belt_report::Format::Markdown]);
    assert!(p.simulated);
    // The record says what was asked, and the formats resolved.
    assert_eq!(RunSpec::from_definition(p.options.definition.as_deref().unwrap()).unwrap(), p.spec);
    assert_eq!(p.spec.formats.as_deref(), Some("md"));
}

#[test]
fn explicit_settings_and_tier_policies_reach_the_options() {
    let p = app()
        .prepare(&spec(
            r#"{"task": "t", "concurrency": 3, "retries": 5, "timeout": 7.5, "budget_usd": 0.25,
                "policies": {"executive": {"retries": 0}}, "sequential": true, "cache": 60,
                "context": "Budget is tight."}"#,
        ))
        .unwrap();
    assert_eq!(p.options.concurrency, 3);
    assert!(!p.options.parallel);
    assert_eq!(p.options.budget.max_cost_usd, Some(0.25));
    assert_eq!(p.options.policies.for_tier(&Tier::Worker).retries, 5);
    assert_eq!(p.options.policies.for_tier(&Tier::Worker).timeout, Duration::from_secs_f64(7.5));
    assert_eq!(p.options.policies.for_tier(&Tier::Executive).retries, 0);
    assert_eq!(p.options.policies.for_tier(&Tier::Executive).timeout, Duration::from_secs_f64(7.5));
    assert_eq!(p.options.cache_ttl, Some(Duration::from_secs(60)));
    // A text context reads as it always did: under the task, in every agent's brief.
    assert_eq!(p.task.description, "t");
    assert_eq!(p.task.brief(), "t\n\nContext:\nBudget is tight.");
}

#[test]
fn a_structured_context_reaches_the_task_and_reads_back_from_the_record() {
    let p = app()
        .prepare(&spec(r#"{"task": "t", "context": {"customer": {"tier": "gold"}, "limits": [1, 2]}}"#))
        .unwrap();
    let context = p.task.context.as_ref().unwrap();
    assert_eq!(belt_core::plan::context_at(context, "customer.tier"), Some(&serde_json::json!("gold")));
    assert!(p.task.brief().contains("\"tier\": \"gold\""), "{}", p.task.brief());
    assert_eq!(RunSpec::from_definition(p.options.definition.as_deref().unwrap()).unwrap(), p.spec);
    // A spec recorded by an older binary (context as text) still reads, with its meaning.
    let old = RunSpec::from_definition(r#"{"task":"t","context":"Budget is tight."}"#).unwrap();
    assert_eq!(old.context, Some(serde_json::json!("Budget is tight.")));
    // Blank text and null are no context.
    for blank in [r#""  ""#, "null"] {
        let p = app().prepare(&spec(&format!(r#"{{"task": "t", "context": {blank}}}"#))).unwrap();
        assert_eq!(p.task.context, None, "{blank}");
    }
}

const WORKFLOW: &str = "name: brief\ninputs:\n  topic: {description: the subject}\nbudget: {usd: 2.0}\ndefaults: {concurrency: 4}\nagents:\n  - {id: writer, role: a writer}\npattern: sequential\nsteps:\n  - id: draft\n    agent: writer\n    prompt: \"Write on {{ inputs.topic }}\"\noutputs: {formats: [md, html], dir: reports}\n";

#[test]
fn a_workflow_spec_takes_the_file_settings_under_the_explicit_ones() {
    let mut s = RunSpec { workflow: Some(WORKFLOW.into()), ..RunSpec::default() };
    s.inputs.insert("topic".into(), "tides".into());
    let p = app().prepare(&s).unwrap();
    assert_eq!(p.task.description, "brief");
    assert_eq!(p.options.concurrency, 4);
    assert_eq!(p.options.budget.max_cost_usd, Some(2.0));
    assert_eq!(p.spec.formats.as_deref(), Some("md,html"));
    assert_eq!(p.spec.out.as_deref(), Some(std::path::Path::new("reports")));
    s.concurrency = Some(9);
    s.budget_usd = Some(0.5);
    let p = app().prepare(&s).unwrap();
    assert_eq!(p.options.concurrency, 9, "the spec's explicit value wins over the file's");
    assert_eq!(p.options.budget.max_cost_usd, Some(0.5));
    // Every mistake of the file, with its place.
    s.inputs.clear();
    s.workflow_file = Some("brief.yaml".into());
    let e = app().prepare(&s).err().unwrap().to_string();
    assert!(e.contains("brief.yaml:3:3: inputs.topic"), "{e}");
}

#[tokio::test]
async fn a_prepared_spec_runs_and_a_recorded_one_runs_the_same() {
    let s = spec(r#"{"task": "Plan a city park", "agents": 6, "sim_latency_ms": 0, "seed": 3}"#);
    let first = app().prepare(&s).unwrap().start().await.unwrap().result().await;
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(first.shape, vec![6, 1]);
    let again = RunSpec::from_definition(&app().prepare(&s).unwrap().spec.to_definition()).unwrap();
    let second = app().prepare(&again).unwrap().start().await.unwrap().result().await;
    assert_eq!(first.final_output, second.final_output, "same seed, same spec: the same texts");
}

#[test]
fn every_run_of_an_app_shares_one_limiter_per_provider() {
    let app = app();
    let a = app.providers(&spec(r#"{"task": "a"}"#)).unwrap();
    let b = app.providers(&spec(r#"{"task": "b", "seed": 3}"#)).unwrap();
    let (la, lb) = (a.limiter("simulated").unwrap(), b.limiter("simulated").unwrap());
    assert!(Arc::ptr_eq(la, lb), "two runs of one process must queue behind one limit");
}

#[test]
fn a_budget_pool_must_be_defined_and_kept_in_a_shared_store() {
    let e = mistake(r#"{"task": "x", "budget_pool": "team"}"#);
    assert!(e.contains("no pool `team` in belt.toml (it defines none)"), "{e}");
    let config: Config =
        toml::from_str("[budget_pools.team]\nusd_per_day = 5.0\ncalls_per_month = 100").unwrap();
    let app = App::new(config).with_env(Arc::new(|_| None));
    let e = app.prepare(&spec(r#"{"task": "x", "budget_pool": "team"}"#)).err().unwrap().to_string();
    assert!(e.contains("a store every process shares; use --store postgres://"), "{e}");
    app.share(None, Some(Arc::new(belt_core::shared::MemoryShared::new())));
    let prepared = app.prepare(&spec(r#"{"task": "x", "budget_pool": "team"}"#)).unwrap();
    let pool = prepared.options.budget_pool.expect("the run draws from the pool");
    assert_eq!(pool.caps.per_day.max_cost_usd, Some(5.0));
    assert_eq!(pool.caps.per_month.max_calls, Some(100));
}

/// An application where OpenAI's key is set, so its models resolve (priced or not).
fn app_with_openai(config: &str) -> App {
    let config: Config = toml::from_str(config).unwrap();
    App::new(config).with_env(Arc::new(|v| (v == "OPENAI_API_KEY").then(|| "k".to_string())))
}

#[test]
fn a_usd_cap_refuses_every_unpriced_link_of_every_model_before_the_run() {
    let app = app_with_openai("");
    // The fallback of the workers' chain and the executive's model have no price.
    let s = spec(
        r#"{"task": "t", "budget_usd": 0.5, "worker_model": "openai/gpt-4.1-mini,openai/my-local",
            "executive_model": "openai/other-local"}"#,
    );
    let e = app.prepare(&s).err().expect("refused").to_string();
    for want in [
        "the USD budget (budget_usd, --budget-usd: $0.5) cannot be kept",
        "`openai/my-local`, `openai/other-local` have no known price",
        "[prices.\"openai/my-local\"]\ninput = 0.0\noutput = 0.0",
        "[prices.\"openai/other-local\"]",
    ] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
    assert!(!e.contains("gpt-4.1-mini"), "a priced model is not named: {e}");
    // Without a USD cap the same run prepares (its cost is then shown as unknown).
    let mut uncapped = s.clone();
    uncapped.budget_usd = None;
    uncapped.budget_tokens = Some(10_000);
    assert!(app.prepare(&uncapped).is_ok());
    // Priced in belt.toml: accepted.
    let priced = app_with_openai(
        "[prices.\"openai/my-local\"]\ninput = 0.0\noutput = 0.0\n[prices.\"openai/other-local\"]\ninput = 1.0\noutput = 2.0\n",
    );
    assert!(priced.prepare(&s).is_ok(), "{:?}", priced.prepare(&s).err());
}

#[test]
fn a_workflow_files_usd_budget_counts_as_a_cap_and_the_spec_model_replaces_its_default() {
    let app = app_with_openai("");
    let on = |workflow: String| RunSpec {
        workflow: Some(workflow),
        inputs: [("topic".to_string(), "rivers".to_string())].into(),
        ..RunSpec::default()
    };
    let own = WORKFLOW
        .replace("{id: writer, role: a writer}", "{id: writer, role: a writer, model: openai/my-local}");
    let e = app.prepare(&on(own)).err().expect("refused").to_string();
    assert!(e.contains("the USD budget (`budget.usd` of workflow: $2)"), "{e}");
    assert!(e.contains("`openai/my-local` has no known price"), "{e}");

    // The spec's model takes the place of `defaults.model`, not of an agent's own.
    let mut s = on(WORKFLOW.into());
    s.model = Some("openai/my-local".into());
    assert!(app.prepare(&s).err().expect("refused").to_string().contains("`openai/my-local`"));
    s.model = Some("openai/gpt-4.1-mini".into());
    assert!(app.prepare(&s).is_ok());
    assert!(app.models_the_file_keeps(&s).is_empty());
    // Tier models do not apply to a sequential workflow.
    s.worker_model = Some("openai/gpt-4.1-mini".into());
    let e = app.prepare(&s).err().expect("refused").to_string();
    assert!(e.contains("worker_model (--worker-model) chooses the models of a cascade's tiers"), "{e}");
}

#[test]
fn tool_names_are_checked_when_a_run_is_prepared_and_nothing_is_started() {
    let cases = [
        (
            r#"{"task": "x", "tools": ["calculater"]}"#,
            vec!["tools (--tools)", "did you mean `calculator`", "no MCP server is declared"],
        ),
        (
            r#"{"task": "x", "executive_tools": ["srv.x"]}"#,
            vec!["executive_tools (--executive-tools)", "unknown tool `srv.x`"],
        ),
        (r#"{"task": "x", "tools": ["web"]}"#, vec!["needs a search backend", "BELT_SEARXNG_URL"]),
    ];
    for (json, words) in &cases {
        let m = mistake(json);
        for w in words {
            assert!(m.contains(w), "{json}: {m}");
        }
    }
    // A spec naming a server and one of its tools prepares (the server starts with the run).
    let p = app()
        .prepare(&spec(
            r#"{"task": "x", "mcp": {"srv": {"command": "/no/such/program"}}, "tools": ["srv", "srv.any", "calculator,clock"], "synthesizer_tools": ["fetch_url"]}"#,
        ))
        .expect("names that exist prepare");
    let (_, plan) = p.tools.as_ref().expect("a tool plan");
    assert_eq!(plan.servers().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["srv"]);
    assert!(p.options.tools.is_empty(), "nothing is started before the run starts");
}

#[tokio::test]
async fn the_tools_start_with_the_run_and_a_server_that_cannot_start_stops_it_before_any_call() {
    let mut p = app()
        .prepare(&spec(r#"{"task": "x", "tools": ["calculator"], "synthesizer_tools": ["clock"]}"#))
        .unwrap();
    p.start_tools().await.unwrap();
    assert_eq!(p.options.tools.for_tier(&Tier::Worker).map(|t| t.specs().len()), Some(1));
    assert_eq!(p.options.tools.for_tier(&Tier::Agent).map(|t| t.specs().len()), Some(1));
    assert_eq!(
        p.options.tools.for_tier(&Tier::Synthesizer).map(|t| t.specs()[0].name.clone()),
        Some("clock".into())
    );
    assert!(p.options.tools.for_tier(&Tier::Executive).is_none());

    let mut p = app()
        .prepare(&spec(r#"{"task": "x", "mcp": {"srv": {"command": "/no/such/program"}}, "tools": ["srv"]}"#))
        .unwrap();
    let e = p.start().await.err().expect("the run does not start").to_string();
    assert!(e.contains("the run's tools could not be set up") && e.contains("/no/such/program"), "{e}");

    // The search backend comes from the application's environment.
    let env: Env = Arc::new(|v| (v == "BELT_SEARXNG_URL").then(|| "http://127.0.0.1:9".to_string()));
    let with_search = App::new(Config::default()).with_env(env);
    assert!(with_search.prepare(&spec(r#"{"task": "x", "tools": ["web"]}"#)).is_ok());

    // The tool policy from the spec (`--tool-timeout`).
    let p = app().prepare(&spec(r#"{"task": "x", "policies": {"tool": {"timeout": 5}}}"#)).unwrap();
    assert_eq!(p.options.policies.for_tools().timeout, Duration::from_secs(5));
}

//! Property tests of what reaches belt-app from outside the process: request bodies
//! (`RunSpec` from any JSON, as `POST /v1/runs` and MCP send it), `belt.toml`, and files
//! read under a size limit. Whatever the input: no panic, no hang; a refusal says why; what
//! is accepted is recorded as a definition that reads back as the same spec (so `belt
//! resume` rebuilds the very run that was started).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use belt_core::{Subtask, SynthesizeMode};
use belt_llm::SimConfig;
use belt_testkit::proptest::prelude::*;
use belt_testkit::{check, mutate};
use serde_json::{Value, json};

use crate::{App, Config, MAX_AGENTS, RunSpec, TierPolicy};

fn app() -> App {
    App::new(Config::default()).with_env(Arc::new(|_| None))
}

const WORKFLOW: &str = include_str!("../../../examples/workflows/review-dag.yaml");
const WORKFLOW_TOML: &str = include_str!("../../../examples/workflows/release-notes.toml");

/// The spec's fields, and near misses.
const FIELDS: &[&str] = &[
    "task",
    "context",
    "pattern",
    "agents",
    "plan",
    "refine",
    "model",
    "worker_model",
    "synthesizer_model",
    "executive_model",
    "concurrency",
    "sequential",
    "timeout",
    "retries",
    "policies",
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
    "workflow",
    "workflow_format",
    "workflow_file",
    "inputs",
    "formats",
    "out",
    "seed",
    "sim_latency_ms",
    "sim_fail_rate",
    "agent",
    "Task",
    "",
];

fn some<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 2 => s.prop_map(Some)].boxed()
}

fn model() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "simulated/default",
            "simulated/a,simulated/b",
            "simulated/",
            "openai/gpt-4o-mini",
            "nope/x",
            "noslash",
            "",
            " , ",
            "simulated/x,,",
        ][..],
    )
    .prop_map(String::from)
}

/// Finite seconds, fractions and amounts, in and out of every range (JSON has no NaN).
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        -2.0f64..2.0,
        0.0f64..100_000.0,
        prop::num::f64::NORMAL,
        prop::sample::select(
            &[0.0, -0.0, 1.0, 86_400.0, 86_400.000_001, 1e-300, f64::MAX, f64::MIN_POSITIVE][..]
        ),
    ]
}

fn subtask() -> impl Strategy<Value = Subtask> {
    (
        prop_oneof![3 => "[a-c]", 1 => Just(String::new())],
        prop_oneof![3 => "[a-z]{1,6}", 1 => Just(" ".to_string())],
        -3i32..3,
        prop::collection::vec("[a-c]", 0..2),
    )
        .prop_map(|(id, d, p, deps)| {
            let mut s = Subtask::new(id, d).priority(p);
            s.dependencies = deps;
            s
        })
}

/// Specs of any kind: valid ones (whose recording is checked) and wild ones (whose
/// refusals are).
fn spec() -> impl Strategy<Value = RunSpec> {
    prop_oneof![valid_spec(), wild_spec()]
}

/// A plan that normalizes: subtasks numbered by position (no ids, as in a plan file that
/// leaves them out), each depending on some of those before it.
fn valid_plan() -> impl Strategy<Value = Vec<Subtask>> {
    prop::collection::vec(("[a-z]{1,6}", -3i32..3, any::<u8>()), 1..6).prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (d, p, mask))| {
                let mut s = Subtask::new("", d).priority(p);
                s.dependencies =
                    (0..i).filter(|j| mask & (1 << (j % 8)) != 0).map(|j| (j + 1).to_string()).collect();
                s
            })
            .collect()
    })
}

/// A run's context: text (as older specs hold it), or structured JSON.
fn context() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<String>().prop_map(Value::String),
        1 => ("[a-z]{1,6}", any::<i64>(), any::<String>())
            .prop_map(|(k, n, t)| json!({k: n, "notes": [t, true], "nested": {"x": null}})),
        1 => prop::collection::vec(any::<i32>(), 0..4).prop_map(|v| json!(v)),
    ]
}

/// Specs that `App::prepare` accepts: every field in its range, simulated models.
fn valid_spec() -> impl Strategy<Value = RunSpec> {
    let model = || {
        some(
            prop::sample::select(&["simulated/default", "simulated/a,simulated/b"][..])
                .prop_map(String::from),
        )
    };
    let seconds = || some(0.001f64..86_400.0);
    (
        ("[A-Za-z][A-Za-z ]{0,23}", some(context()), some(Just("cascade".to_string()))),
        (some(1u32..200), some(valid_plan()), some(0u32..=20), model(), model(), model(), model()),
        (some(1u32..=100_000), any::<bool>(), seconds(), some(0u32..=100)),
        prop::collection::btree_map(
            prop::sample::select(&["worker", "synthesizer", "executive", "decomposer", "custom"][..])
                .prop_map(String::from),
            (seconds(), some(0u32..=100)).prop_map(|(timeout, retries)| TierPolicy { timeout, retries }),
            0..3,
        ),
        (
            some(2u32..=1000),
            some(prop::sample::select(
                &[
                    SynthesizeMode::Auto,
                    SynthesizeMode::Always,
                    SynthesizeMode::Never,
                    SynthesizeMode::NoExecutive,
                ][..],
            )),
            some(0.0f64..=1.0),
        ),
        (some(0.000_001f64..1e6), some(1u64..u64::MAX), some(1u64..u64::MAX), any::<bool>(), any::<bool>()),
        (some(1u64..=604_800), some(1u64..=315_360_000)),
        (
            some(prop::sample::select(&["md", "md,html", "html", "docx"][..]).prop_map(String::from)),
            some("[a-z/]{1,8}".prop_map(std::path::PathBuf::from)),
            some(any::<u64>()),
            some(0u64..=3_600_000),
            some(0.0f64..=1.0),
        ),
    )
        .prop_map(
            |(
                (task, context, pattern),
                (agents, plan, refine, model, worker_model, synthesizer_model, executive_model),
                (concurrency, sequential, timeout, retries),
                policies,
                (group_size, synthesize, min_success),
                (budget_usd, budget_tokens, budget_calls, review_plan, approve_all),
                (hitl_timeout, cache),
                (formats, out, seed, sim_latency_ms, sim_fail_rate),
            )| RunSpec {
                task,
                context,
                pattern,
                args: None,
                agents,
                plan,
                refine,
                model,
                worker_model,
                synthesizer_model,
                executive_model,
                concurrency,
                sequential,
                timeout,
                retries,
                policies,
                group_size,
                synthesize,
                min_success,
                budget_usd,
                budget_tokens,
                budget_calls,
                budget_pool: None,
                deadline: None,
                budget_warn_at: None,
                degrade: false,
                degrade_at: None,
                fast_model: None,
                slow_call: None,
                review_plan,
                approve_all,
                hitl_timeout,
                cache,
                formats,
                out,
                seed,
                sim_latency_ms,
                sim_fail_rate,
                ..RunSpec::default()
            },
        )
}

/// Specs as a Rust caller or a deserialized body can hold them, mostly wrong somewhere.
fn wild_spec() -> impl Strategy<Value = RunSpec> {
    let what = (
        prop_oneof![3 => "[A-Za-z ]{0,24}", 1 => any::<String>()],
        some(context()),
        some(
            prop::sample::select(&["cascade", "swarm", "sequential", "dag", "nope", ""][..])
                .prop_map(String::from),
        ),
        some(prop_oneof![0u32..300, Just(MAX_AGENTS), Just(MAX_AGENTS + 1), any::<u32>()]),
        some(prop::collection::vec(subtask(), 0..5)),
        some(0u32..25),
        some(0u32..8),
    );
    let models = (some(model()), some(model()), some(model()), some(model()));
    let policy = (
        some(prop_oneof![1u32..64, any::<u32>()]),
        any::<bool>(),
        some(number()),
        some(0u32..120),
        prop::collection::btree_map(
            prop::sample::select(&["worker", "synthesizer", "executive", "decomposer", "custom", ""][..])
                .prop_map(String::from),
            (some(number()), some(0u32..120)).prop_map(|(timeout, retries)| TierPolicy { timeout, retries }),
            0..3,
        ),
        some(prop_oneof![0u32..8, Just(1000), Just(1001)]),
        some(prop::sample::select(
            &[
                SynthesizeMode::Auto,
                SynthesizeMode::Always,
                SynthesizeMode::Never,
                SynthesizeMode::NoExecutive,
            ][..],
        )),
        some(number()),
    );
    let limits = (
        some(number()),
        some(prop_oneof![0u64..3, any::<u64>()]),
        some(prop_oneof![0u64..3, any::<u64>()]),
        any::<bool>(),
        any::<bool>(),
        some(prop_oneof![0u64..3, any::<u64>()]),
        some(prop_oneof![0u64..3, any::<u64>()]),
    );
    let workflow = (
        some(prop_oneof![Just(WORKFLOW.to_string()), Just(WORKFLOW_TOML.to_string()), "[a-z: \n]{0,20}"]),
        some(prop::sample::select(&[belt_workflow::Format::Yaml, belt_workflow::Format::Toml][..])),
        some(prop::sample::select(&["flow.yaml", "flow.toml", "flow", ""][..]).prop_map(String::from)),
        prop::collection::btree_map(
            prop::sample::select(&["topic", "diff", "x", "version"][..]).prop_map(String::from),
            "[a-z0-9]{0,4}",
            0..2,
        ),
    );
    let rest = (
        some(
            prop::sample::select(&["md", "md,html", "all", "docx", "pdf", "xls", "", ",,"][..])
                .prop_map(String::from),
        ),
        some("[a-z/]{0,8}".prop_map(std::path::PathBuf::from)),
        some(any::<u64>()),
        some(prop_oneof![0u64..5, any::<u64>()]),
        some(number()),
    );
    // Tool names: built-in, unknown, misspelt, a server's tool of no server; never started
    // (preparing starts nothing).
    let tool = || {
        prop::collection::vec(
            prop::sample::select(
                &["calculator", "clock", "fetch_url", "run_code", "nope", "srv.x", "calc,clock", ""][..],
            )
            .prop_map(String::from),
            0..3,
        )
    };
    let tools = (tool(), tool(), tool());
    (what, models, policy, limits, workflow, (rest, tools)).prop_map(
        |(
            (task, context, pattern, agents, plan, refine, continue_truncated),
            (model, worker_model, synthesizer_model, executive_model),
            (concurrency, sequential, timeout, retries, policies, group_size, synthesize, min_success),
            (budget_usd, budget_tokens, budget_calls, review_plan, approve_all, hitl_timeout, cache),
            (workflow, workflow_format, workflow_file, inputs),
            (
                (formats, out, seed, sim_latency_ms, sim_fail_rate),
                (tools, synthesizer_tools, executive_tools),
            ),
        )| RunSpec {
            task,
            context,
            pattern,
            args: None,
            agents,
            min_agents: None,
            max_agents: None,
            strategy: None,
            plan,
            refine,
            continue_truncated,
            tools,
            synthesizer_tools,
            executive_tools,
            mcp: Default::default(),
            model,
            worker_model,
            synthesizer_model,
            executive_model,
            concurrency,
            sequential,
            timeout,
            retries,
            policies,
            group_size,
            synthesize,
            min_success,
            budget_usd,
            budget_tokens,
            budget_calls,
            budget_pool: None,
            deadline: None,
            budget_warn_at: None,
            degrade: false,
            degrade_at: None,
            fast_model: None,
            slow_call: None,
            review_plan,
            approve_all,
            hitl_timeout,
            cache,
            traceparent: None,
            workflow,
            workflow_format,
            workflow_file,
            inputs,
            formats,
            out,
            seed,
            sim_latency_ms,
            sim_fail_rate,
        },
    )
}

/// Prepare `spec`: a refusal says why; an accepted spec is recorded as a definition that
/// reads back as the spec it recorded. `true` when it was accepted.
fn prepare_holds(spec: &RunSpec) -> Result<bool, TestCaseError> {
    match app().prepare(spec) {
        Ok(prepared) => {
            let definition = prepared.options.definition.clone().unwrap_or_default();
            let back = RunSpec::from_definition(&definition);
            prop_assert!(
                back.is_ok(),
                "the recorded definition does not read back: {:?}\n{}",
                back,
                definition
            );
            prop_assert_eq!(back.ok(), Some(prepared.spec.clone()));
            // And it prepares again (what `belt resume` does) to the same definition.
            let again = app().prepare(&prepared.spec);
            prop_assert!(again.is_ok(), "the recorded spec is refused on resume: {:?}", again.err());
            prop_assert_eq!(again.ok().and_then(|p| p.options.definition), Some(definition));
            Ok(true)
        }
        Err(e) => {
            prop_assert!(!e.to_string().trim().is_empty());
            Ok(false)
        }
    }
}

/// A counter the property's thread adds to and the test reads after it.
fn counter() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let c = Arc::new(AtomicUsize::new(0));
    (c.clone(), c)
}

#[test]
fn any_spec_round_trips_through_json_and_its_definition() {
    check("RunSpec round trip", 256, spec, |spec| {
        let text = serde_json::to_string(&spec).unwrap();
        let back: RunSpec =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(&back, &spec);
        prop_assert_eq!(RunSpec::from_definition(&spec.to_definition()).ok(), Some(spec.clone()));
        Ok(())
    });
}

#[test]
fn any_spec_is_prepared_or_refused_with_a_reason() {
    let (accepted, seen) = counter();
    // 128 cases: each prepares twice, and preparing builds the providers' HTTP clients.
    check("App::prepare over specs", 128, spec, move |spec| {
        if prepare_holds(&spec)? {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    // Else the round trip of accepted specs was never checked.
    assert!(seen.load(Ordering::Relaxed) > 0, "no generated spec was accepted");
}

/// JSON values of any shape, with the spec's keys more often than not.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(&[0i64, 1, -1, 2, 5, 100_000, 100_001, 604_800][..]).prop_map(Value::from),
        number().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(&["simulated/default", "cascade", "md", "never", "yaml", "worker", "a"][..])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![prop::sample::select(FIELDS).prop_map(String::from), "[a-z_]{1,8}"],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(FIELDS).prop_map(String::from), json_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

#[test]
fn any_json_body_becomes_a_spec_or_a_reason() {
    check("RunSpec from any JSON", 256, body, |value| {
        match serde_json::from_value::<RunSpec>(value) {
            Ok(spec) => {
                prepare_holds(&spec)?;
            }
            Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
        }
        Ok(())
    });
}

#[test]
fn mutated_json_bodies_become_a_spec_or_a_reason() {
    let bodies: Vec<String> = [
        json!({"task": "Plan a city park", "agents": 12, "sim_latency_ms": 5, "seed": 7}),
        json!({"task": "Survey", "plan": [{"id": "a", "description": "x"}, {"description": "y", "dependencies": ["a"]}],
               "policies": {"worker": {"timeout": 5.5, "retries": 1}}, "budget_usd": 0.5, "formats": "md,html"}),
        json!({"workflow": WORKFLOW, "inputs": {"diff": "a change"}, "workflow_file": "review.yaml"}),
        json!({"workflow": WORKFLOW_TOML, "inputs": {"version": "1.2"}, "workflow_format": "toml"}),
    ]
    .iter()
    .map(|v| serde_json::to_string_pretty(v).unwrap())
    .collect();
    let (accepted, seen) = counter();
    check(
        "RunSpec from mutated JSON",
        256,
        move || mutate::text(bodies, FIELDS),
        move |text| {
            match serde_json::from_str::<RunSpec>(&text) {
                Ok(spec) => {
                    if prepare_holds(&spec)? {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
            }
            Ok(())
        },
    );
    assert!(seen.load(Ordering::Relaxed) > 0, "no mutated body was accepted: the round trip went unchecked");
}

#[test]
fn agents_are_refused_past_the_limit_with_the_limit_named() {
    check(
        "agents limit",
        64,
        || prop_oneof![0..=MAX_AGENTS + 2, any::<u32>()],
        |agents| {
            let mut spec = RunSpec::new("Plan a park");
            spec.agents = Some(agents);
            match app().prepare(&spec) {
                Ok(p) => prop_assert!(
                    (1..=MAX_AGENTS).contains(&agents),
                    "{} accepted: {:?}",
                    agents,
                    p.spec.agents
                ),
                Err(e) => {
                    prop_assert!(!(1..=MAX_AGENTS).contains(&agents), "{}: {}", agents, e);
                    prop_assert!(
                        e.to_string().contains("agents") && e.to_string().contains("100000"),
                        "{}",
                        e
                    );
                }
            }
            Ok(())
        },
    );
}

const CONFIGS: &[&str] = &[
    r#"default_model = "openai/gpt-4.1-mini"

[providers.openai]
max_concurrency = 8
rpm = 500
tpm = 200000

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "LOCAL_KEY"
headers = { "X-Team" = "research" }

[prices."local/my-model"]
input = 0.10
output = 0.20
"#,
    r#"[providers.claude]
kind = "anthropic"
base_url = "https://example.invalid/v1"
stream = false

[providers.anthropic]
rpm = 60

[prices."claude/x"]
input = 1.0
output = 2.0
cache_read = 0.1
"#,
];

#[test]
fn mutated_configurations_load_or_are_refused_with_a_reason() {
    let corpus: Vec<String> = CONFIGS.iter().map(|s| s.to_string()).collect();
    // 128 cases: each builds the configured providers' HTTP clients.
    check(
        "belt.toml",
        128,
        move || mutate::text(corpus, &["kind", "base_url", "rpm", "tpm", "input", "[providers.x]"]),
        |text| {
            match toml::from_str::<Config>(&text) {
                Ok(config) => {
                    let env = |v: &str| (v == "OPENAI_API_KEY" || v == "LOCAL_KEY").then(|| "k".to_string());
                    match crate::config::providers(&config, SimConfig::default(), &env) {
                        Ok(p) => prop_assert!(p.names().contains(&"simulated")),
                        Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
                    }
                    // A model of it is chosen or refused, never a panic.
                    let app = App::new(config).with_env(Arc::new(|_| None));
                    let _ = app.known_providers();
                    if let Err(e) = app.prepare(&RunSpec::new("x")) {
                        prop_assert!(!e.to_string().trim().is_empty());
                    }
                }
                Err(e) => prop_assert!(!e.to_string().trim().is_empty()),
            }
            Ok(())
        },
    );
}

#[test]
fn files_over_their_limit_are_refused_with_the_limit_named() {
    let dir = std::env::temp_dir().join(format!("belt-app-props-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f");
    check(
        "file size limit",
        64,
        || (0usize..4096, 0u64..4096),
        move |(len, limit)| {
            std::fs::write(&file, vec![b'a'; len]).unwrap();
            match crate::files::read_text(&file, limit) {
                Ok(text) => prop_assert!(text.len() as u64 <= limit && text.len() == len),
                Err(e) => {
                    prop_assert!(len as u64 > limit, "{} bytes under a limit of {}: {}", len, limit, e);
                    prop_assert!(e.to_string().contains(&format!("larger than {limit} bytes")), "{}", e);
                }
            }
            Ok(())
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

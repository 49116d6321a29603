//! Tests of the engine's guarantees through whole runs on the scripted provider.

use std::collections::HashMap;

use std::sync::Arc;
use std::time::Duration;

use crate::testing::ScriptedProvider;
use crate::*;

fn quick_policies() -> Policies {
    let mut p = Policies::default();
    p.update_all(|s| {
        s.backoff_base = Duration::from_millis(1);
        s.backoff_max = Duration::from_millis(5);
    });
    p
}

fn options(provider: &Arc<ScriptedProvider>) -> RunOptions {
    let mut o = RunOptions::default().with_provider(provider.clone());
    o.policies = quick_policies();
    o
}

async fn run_all(orch: impl Orchestrator, task: &str, options: RunOptions) -> (RunResult, Vec<Arc<Event>>) {
    let mut handle = run(orch, Task::new(task), options).await.expect("run starts");
    let mut events = handle.events().expect("events");
    let result = handle.result().await;
    let mut all = Vec::new();
    while let Some(e) = events.recv().await {
        all.push(e);
    }
    (result, all)
}

fn types(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.type_name()).collect()
}

fn agent<'a>(r: &'a RunResult, step: &str) -> &'a AgentRecord {
    r.agents.iter().find(|a| a.step.as_str() == step).unwrap_or_else(|| panic!("no step {step}"))
}

#[tokio::test]
async fn cascade_of_twelve_has_two_synthesizers_and_an_executive() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let (r, events) = run_all(Cascade::new(12, "t/m"), "AI in healthcare", options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(r.plan.len(), 12);
    assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 12);
    assert_eq!(r.count(&Tier::Synthesizer, AgentStatus::Completed), 2);
    assert_eq!(r.count(&Tier::Executive, AgentStatus::Completed), 1);
    assert_eq!(agent(&r, "synth/1/001").inputs.len(), 6);
    assert_eq!(agent(&r, "synth/1/001").inputs[0].as_str(), "worker/001");
    assert_eq!(agent(&r, "executive").inputs.len(), 2);
    assert_eq!(r.final_output.as_deref(), Some("Output of executive. "));
    // 1 decompose + 12 workers + 2 synthesizers + 1 executive.
    assert_eq!(r.usage.calls, 16);
    assert_eq!(p.total_calls(), 16);
    let sum: f64 = r.agents.iter().map(|a| a.outcome.cost_usd).sum();
    assert!((sum - r.cost_usd).abs() < 1e-12);
    // Events: strictly increasing seq, framed by run_started and run_finished.
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let t = types(&events);
    assert_eq!(t.first(), Some(&"run_started"));
    assert_eq!(t.last(), Some(&"run_finished"));
    for needed in ["plan_ready", "tier_started", "step_started", "step_completed", "tier_completed"] {
        assert!(t.contains(&needed), "missing {needed}");
    }
    assert_eq!(t.iter().filter(|&&x| x == "step_completed").count(), 16);
}

#[tokio::test]
async fn tier_shapes_hold_end_to_end() {
    for (n, synths, exec) in [
        (1, 0, 0),
        (4, 0, 0),
        (5, 1, 0),
        (9, 1, 0),
        (10, 2, 1),
        (12, 2, 1),
        (50, 10, 1),
        (55, 13, 1),
        (1000, 248, 1),
    ] {
        let p = Arc::new(ScriptedProvider::new("t"));
        let mut o = options(&p);
        o.concurrency = 64;
        let (r, _) = run_all(Cascade::new(n, "t/m"), "task", o).await;
        assert_eq!(r.status, RunStatus::Completed, "n={n}: {}", r.stop_reason);
        assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), n, "n={n}");
        assert_eq!(r.tier(&Tier::Synthesizer).count(), synths, "n={n}");
        assert_eq!(r.tier(&Tier::Executive).count(), exec, "n={n}");
        assert!(r.final_output.is_some());
    }
}

#[tokio::test]
async fn few_workers_combine_without_synthesis_unless_always() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let (r, _) = run_all(Cascade::new(4, "t/m"), "task", options(&p)).await;
    let text = r.final_output.unwrap();
    assert!(text.contains("## 1. Part 1") && text.contains("Output of worker/004"), "{text}");
    assert_eq!(r.usage.calls, 5);

    let always = Cascade { synthesize: SynthesizeMode::Always, ..Cascade::new(4, "t/m") };
    let (r, _) = run_all(always, "task", options(&p)).await;
    assert_eq!(agent(&r, "executive").inputs.len(), 4);
    assert_eq!(r.final_output.as_deref(), Some("Output of executive. "));

    let never = Cascade { synthesize: SynthesizeMode::Never, ..Cascade::new(12, "t/m") };
    let (r, _) = run_all(never, "task", options(&p)).await;
    assert_eq!(r.tier(&Tier::Synthesizer).count(), 0);
    assert!(r.final_output.unwrap().contains("## 12. Part 12"));
}

#[tokio::test]
async fn retryable_errors_are_retried_and_fatal_ones_are_not() {
    let server = LlmError::Server { status: 500, message: "boom".into() };
    let p = Arc::new(
        ScriptedProvider::new("t")
            .fail_first("worker/002", 2, server)
            .always_fail("worker/003", LlmError::Auth("bad key".into())),
    );
    let (r, events) = run_all(Cascade::new(5, "t/m"), "task", options(&p)).await;
    assert_eq!(p.calls("worker/002"), 3);
    assert_eq!(agent(&r, "worker/002").status, AgentStatus::Completed);
    assert_eq!(agent(&r, "worker/002").outcome.attempts, 3);
    assert_eq!(p.calls("worker/003"), 1, "auth errors are fatal");
    let w3 = agent(&r, "worker/003");
    assert_eq!(w3.status, AgentStatus::Failed);
    assert!(w3.error.as_deref().unwrap().contains("authentication failed"));
    let retrying: Vec<_> = events.iter().filter(|e| e.kind.type_name() == "step_retrying").collect();
    assert_eq!(retrying.len(), 2);
    assert!(retrying.iter().all(|e| e.step.as_ref().unwrap().as_str() == "worker/002"));
    assert_eq!(r.status, RunStatus::Partial);
    // Retries count as calls: 1 + 5 workers + 2 retries + 1 synthesizer.
    assert_eq!(r.usage.calls, 9);
    // The synthesizer was told what is missing.
    assert_eq!(agent(&r, "synth/1/001").inputs.len(), 5);
}

#[tokio::test]
async fn retries_stop_at_the_limit() {
    let p = Arc::new(
        ScriptedProvider::new("t").always_fail("worker/001", LlmError::Timeout(Duration::from_secs(1))),
    );
    let mut o = options(&p);
    o.policies.update_all(|s| s.retries = 4);
    let (r, _) = run_all(Cascade::new(2, "t/m"), "task", o).await;
    assert_eq!(p.calls("worker/001"), 5);
    assert_eq!(agent(&r, "worker/001").outcome.attempts, 5);
    assert_eq!(r.status, RunStatus::Partial);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let limited =
        LlmError::RateLimited { retry_after: Some(Duration::from_secs(7)), message: "slow down".into() };
    let p = Arc::new(ScriptedProvider::new("t").fail_first("worker/001", 1, limited));
    let mut o = options(&p);
    o.policies.update_all(|s| s.backoff_max = Duration::from_secs(60));
    let start = tokio::time::Instant::now();
    let (r, events) = run_all(Cascade::new(1, "t/m"), "task", o).await;
    assert!(start.elapsed() >= Duration::from_secs(7), "waited only {:?}", start.elapsed());
    assert_eq!(r.status, RunStatus::Completed);
    let retry = events.iter().find(|e| e.kind.type_name() == "step_retrying").unwrap();
    assert!(matches!(retry.kind, EventKind::StepRetrying { delay_ms: 7000, .. }));
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_times_out() {
    let p = Arc::new(ScriptedProvider::new("t").delay_for("worker/002", Duration::from_secs(3600)));
    let mut o = options(&p);
    o.policies.update_all(|s| {
        s.timeout = Duration::from_secs(2);
        s.retries = 1;
    });
    let (r, _) = run_all(Cascade::new(3, "t/m"), "task", o).await;
    let w = agent(&r, "worker/002");
    assert_eq!(w.status, AgentStatus::TimedOut);
    assert_eq!(w.outcome.attempts, 2);
    assert!(w.error.as_deref().unwrap().contains("timed out"), "{:?}", w.error);
    assert_eq!(r.status, RunStatus::Partial);
    assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 2);
}

#[tokio::test]
async fn a_call_budget_stops_new_calls_and_keeps_what_exists() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&p);
    o.budget.max_calls = Some(6);
    o.concurrency = 1;
    let (r, events) = run_all(Cascade::new(12, "t/m"), "task", o).await;
    assert_eq!(r.status, RunStatus::BudgetExhausted);
    assert!(r.stop_reason.contains("max_calls"), "{}", r.stop_reason);
    assert_eq!(r.usage.calls, 6);
    assert_eq!(p.total_calls(), 6);
    assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 5);
    assert_eq!(r.tier(&Tier::Synthesizer).count(), 0, "no synthesis is paid for");
    let out = r.final_output.clone().expect("the completed workers' outputs are kept");
    assert!(out.contains("Output of worker/005"));
    let t = types(&events);
    assert_eq!(t.iter().filter(|&&x| x == "budget_exhausted").count(), 1);
    assert_eq!(t.iter().filter(|&&x| x == "budget_warning").count(), 1);
    // The refused step fails with `budget_exhausted`; the ones after it never try.
    let refused = agent(&r, "worker/006");
    assert_eq!(refused.status, AgentStatus::Failed);
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::StepFailed { error_kind, .. } if error_kind == "budget_exhausted")));
    assert_eq!(r.count(&Tier::Worker, AgentStatus::Skipped), 6);
}

#[tokio::test]
async fn a_usd_budget_is_never_exceeded_under_parallel_load() {
    for cap in [0.001, 0.0021, 0.005, 0.02] {
        let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(1)));
        let mut o = options(&p);
        o.concurrency = 32;
        o.budget.max_cost_usd = Some(cap);
        let (r, _) = run_all(Cascade::new(60, "t/m"), "a task about budgets", o).await;
        assert!(r.cost_usd <= cap, "cost {} over cap {cap}", r.cost_usd);
        assert_eq!(r.status, RunStatus::BudgetExhausted, "cap {cap}");
        assert!(r.agents.iter().any(|a| a.error.as_deref().is_some_and(|e| e.contains("max_cost"))));
    }
}

#[tokio::test]
async fn too_few_successes_fail_the_run_without_synthesis() {
    let p = Arc::new(
        ScriptedProvider::new("t").always_fail("worker/00", LlmError::InvalidRequest("nope".into())),
    );
    // Workers 001..009 fail, 010..012 succeed: 3 of 12 < 50%.
    let (r, _) = run_all(Cascade::new(12, "t/m"), "task", options(&p)).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.stop_reason.contains("only 3 of 12"), "{}", r.stop_reason);
    assert_eq!(r.tier(&Tier::Synthesizer).count(), 0);
    assert_eq!(p.calls("synth/1/001"), 0);
    assert!(r.final_output.is_none());
}

#[tokio::test]
async fn a_synthesizer_whose_inputs_all_failed_is_skipped() {
    let p = Arc::new(
        ScriptedProvider::new("t").always_fail("worker/00", LlmError::InvalidRequest("nope".into())),
    );
    // 10 workers, 001..009 fail except we lower min_success; group 1 (001-005) all failed.
    let mut o = options(&p);
    o.min_success = 0.1;
    let (r, events) = run_all(Cascade::new(10, "t/m"), "task", o).await;
    assert_eq!(agent(&r, "synth/1/001").status, AgentStatus::Skipped);
    assert_eq!(agent(&r, "synth/1/002").status, AgentStatus::Completed);
    assert_eq!(p.calls("synth/1/001"), 0);
    assert!(types(&events).contains(&"step_skipped"));
    // The executive still runs over the one synthesis that exists.
    assert_eq!(agent(&r, "executive").status, AgentStatus::Completed);
    assert_eq!(r.status, RunStatus::Partial);
}

#[tokio::test]
async fn dependencies_run_in_order_and_receive_outputs() {
    let plan = vec![
        Subtask::new("a", "gather data"),
        Subtask::new("b", "analyse").depends_on(&["a"]),
        Subtask::new("c", "independent").priority(9),
        Subtask::new("d", "report").depends_on(&["b", "c"]),
    ];
    let p = Arc::new(ScriptedProvider::new("t"));
    let (r, events) = run_all(Cascade::new(4, "t/m"), "task", options(&p).with_plan(plan)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(p.calls("decompose"), 0, "a given plan skips decomposition");
    let pos = |step: &str, ty: &str| {
        events
            .iter()
            .position(|e| e.kind.type_name() == ty && e.step.as_ref().is_some_and(|s| s.as_str() == step))
            .unwrap()
    };
    assert!(pos("worker/001", "step_completed") < pos("worker/002", "step_started"));
    assert!(pos("worker/002", "step_completed") < pos("worker/004", "step_started"));
    assert!(pos("worker/003", "step_completed") < pos("worker/004", "step_started"));
    let inputs: Vec<&str> = agent(&r, "worker/004").inputs.iter().map(StepId::as_str).collect();
    assert_eq!(inputs, vec!["worker/002", "worker/003"]);
}

#[tokio::test]
async fn sequential_execution_follows_priority() {
    let plan = vec![
        Subtask::new("1", "low").priority(1),
        Subtask::new("2", "high").priority(10),
        Subtask::new("3", "mid").priority(5),
        Subtask::new("4", "mid too").priority(5),
    ];
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(2)));
    let mut o = options(&p).with_plan(plan);
    o.parallel = false;
    let (_, events) = run_all(Cascade::new(4, "t/m"), "task", o).await;
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e.kind.type_name() == "step_started")
        .filter_map(|e| e.step.as_ref().map(StepId::as_str))
        .collect();
    assert_eq!(started, vec!["worker/002", "worker/003", "worker/004", "worker/001"]);
    assert_eq!(p.max_in_flight(), 1);
}

#[tokio::test]
async fn a_failed_dependency_skips_its_dependents() {
    let plan = vec![
        Subtask::new("a", "x"),
        Subtask::new("b", "y").depends_on(&["a"]),
        Subtask::new("c", "z").depends_on(&["b"]),
        Subtask::new("d", "w"),
    ];
    let p = Arc::new(ScriptedProvider::new("t").always_fail("worker/001", LlmError::Auth("no".into())));
    let mut o = options(&p).with_plan(plan);
    o.min_success = 0.0;
    let (r, _) = run_all(Cascade::new(4, "t/m"), "task", o).await;
    assert_eq!(agent(&r, "worker/002").status, AgentStatus::Skipped);
    assert_eq!(agent(&r, "worker/003").status, AgentStatus::Skipped);
    assert!(agent(&r, "worker/002").error.as_deref().unwrap().contains("dependencies failed: a"));
    assert_eq!(agent(&r, "worker/004").status, AgentStatus::Completed);
    assert_eq!(p.calls("worker/002") + p.calls("worker/003"), 0);
}

#[tokio::test]
async fn bad_plans_and_options_are_rejected_before_any_call() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let cycle = vec![Subtask::new("a", "x").depends_on(&["b"]), Subtask::new("b", "y").depends_on(&["a"])];
    let err = run(Cascade::new(2, "t/m"), Task::new("t"), options(&p).with_plan(cycle)).await.err().unwrap();
    assert_eq!(err.to_string(), "invalid plan: the plan has a dependency cycle: a -> b -> a");
    let unknown = vec![Subtask::new("a", "x").depends_on(&["ghost"])];
    let err =
        run(Cascade::new(1, "t/m"), Task::new("t"), options(&p).with_plan(unknown)).await.err().unwrap();
    assert!(err.to_string().contains("`ghost`"));
    let err = run(Cascade::new(1, "t/m"), Task::new("  "), options(&p)).await.err().unwrap();
    assert!(matches!(err, RunError::EmptyTask));
    let err = run(Cascade::new(1, "t/m"), Task::new("t"), options(&p).concurrency(0)).await.err().unwrap();
    assert!(matches!(err, RunError::ZeroConcurrency));
    let neg = Budget { max_cost_usd: Some(-1.0), ..Budget::default() };
    let err = run(Cascade::new(1, "t/m"), Task::new("t"), options(&p).budget(neg)).await.err().unwrap();
    assert!(err.to_string().contains("max_cost_usd"));
    let err = run(Cascade::new(1, "nope/m"), Task::new("t"), options(&p)).await.err().unwrap();
    assert!(err.to_string().contains("unknown provider `nope`"), "{err}");
    assert_eq!(p.total_calls(), 0);
}

#[tokio::test]
async fn concurrency_limit_holds() {
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(5)));
    let mut o = options(&p);
    o.concurrency = 3;
    let (r, _) = run_all(Cascade::new(20, "t/m"), "task", o).await;
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(p.max_in_flight(), 3);
}

#[tokio::test]
async fn cancel_stops_scheduling_and_keeps_finished_work() {
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(20)));
    let mut o = options(&p);
    o.concurrency = 2;
    let mut handle = run(Cascade::new(20, "t/m"), Task::new("task"), o).await.unwrap();
    let mut events = handle.events().unwrap();
    let mut completed = 0;
    while let Some(e) = events.recv().await {
        if e.kind.type_name() == "step_completed" {
            completed += 1;
            if completed == 4 {
                handle.cancel();
                break;
            }
        }
    }
    let r = handle.result().await;
    assert_eq!(r.status, RunStatus::Cancelled);
    let done = r.count(&Tier::Worker, AgentStatus::Completed);
    assert!((3..=5).contains(&done), "{done}");
    assert!(p.total_calls() < 10, "scheduling stopped: {} calls", p.total_calls());
    assert!(r.final_output.is_some_and(|t| t.contains("Output of worker/001")));
}

#[tokio::test]
async fn resume_replays_recorded_steps_without_calling_again() {
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let first = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&first).with_store(store.clone());
    o.run_id = Some("run-1".into());
    let (r1, e1) = run_all(Cascade::new(12, "t/m"), "task", o).await;
    assert_eq!(r1.status, RunStatus::Completed);

    let second = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&second).with_store(store.clone());
    o.run_id = Some("run-1".into());
    let (r2, e2) = run_all(Cascade::new(12, "t/m"), "task", o).await;
    assert_eq!(second.total_calls(), 0, "nothing is paid for twice");
    assert_eq!(r2.final_output, r1.final_output);
    assert!(r2.agents.iter().all(|a| a.outcome.replayed));
    // The totals are the whole run's, each recorded step counted once.
    assert_eq!(r2.usage, r1.usage);
    assert!((r2.cost_usd - r1.cost_usd).abs() < 1e-12);
    // Replayed steps do not look like spending: the costs of the run's events, over both
    // segments, add up to the run's cost, and each replay keeps what its step cost then.
    let spent = |events: &[Arc<Event>]| -> f64 {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StepCompleted { outcome, .. } => Some(outcome.cost_usd),
                _ => None,
            })
            .sum()
    };
    assert!(r1.cost_usd > 0.0);
    assert!((spent(&e1) + spent(&e2) - r2.cost_usd).abs() < 1e-12, "{} + {}", spent(&e1), spent(&e2));
    let recorded: f64 = e2
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepCompleted { outcome, recorded_cost_usd, .. } => {
                assert!(outcome.replayed && outcome.usage.total() == 0);
                *recorded_cost_usd
            }
            _ => None,
        })
        .sum();
    assert!((recorded - r1.cost_usd).abs() < 1e-12);
    // Events continue the sequence.
    assert_eq!(e2.first().unwrap().seq, e1.last().unwrap().seq + 1);

    // A changed request for a recorded step is a non-determinism error naming the step.
    let third = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&third).with_store(store);
    o.run_id = Some("run-1".into());
    let (r3, _) = run_all(Cascade::new(12, "t/m"), "a different task", o).await;
    assert_eq!(r3.status, RunStatus::Failed);
    assert!(r3.stop_reason.contains("decompose: non-determinism"), "{}", r3.stop_reason);
    assert_eq!(third.total_calls(), 0);
}

#[tokio::test]
async fn unusable_decomposition_falls_back_to_templates() {
    let p = Arc::new(ScriptedProvider::new("t").reply_for("decompose", "Sorry, I can't do JSON today."));
    let (r, events) = run_all(Cascade::new(7, "t/m"), "AI in healthcare", options(&p)).await;
    assert_eq!(r.plan.len(), 7);
    assert!(r.plan[0].description.contains("AI in healthcare"));
    let fb = events.iter().find(|e| e.kind.type_name() == "plan_fallback").unwrap();
    assert!(matches!(fb.kind, EventKind::PlanFallback { templated: 7, .. }));

    let p = Arc::new(ScriptedProvider::new("t").reply_for("decompose", "```json\n[\"only\", \"two\"]\n```"));
    let (r, events) = run_all(Cascade::new(5, "t/m"), "task", options(&p)).await;
    assert_eq!(r.plan.len(), 5);
    assert_eq!(r.plan[1].description, "two");
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::PlanFallback { templated: 3, .. })));

    // Too many items are trimmed, without a fallback.
    let many = serde_json::to_string(&(1..=9).map(|i| format!("item {i}")).collect::<Vec<_>>()).unwrap();
    let p = Arc::new(ScriptedProvider::new("t").reply_for("decompose", &many));
    let (r, events) = run_all(Cascade::new(5, "t/m"), "task", options(&p)).await;
    assert_eq!(r.plan.len(), 5);
    assert!(!types(&events).contains(&"plan_fallback"));

    // A failed decomposition call also falls back.
    let p = Arc::new(ScriptedProvider::new("t").always_fail("decompose", LlmError::Auth("x".into())));
    let (r, _) = run_all(Cascade::new(3, "t/m"), "task", options(&p)).await;
    assert_eq!(r.plan.len(), 3);
}

/// A replayed step tells the pattern how its call ended (`finish_reason`), and the resumed
/// run's totals count its prompt-cache tokens and unpriced calls once, as the first run did.
#[tokio::test]
async fn a_resumed_run_replays_how_each_call_ended_and_what_it_cost() {
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let flow = || {
        Flow::new("ends", |ctx: Ctx, _task: Task| async move {
            let reply = ctx.llm(StepSpec::new("a", Tier::Agent), LlmRequest::new("u/m", "Say it")).await?;
            Ok(format!("{} | {}", reply.text, reply.outcome.finish_reason.unwrap_or_default()))
        })
    };
    let provider = || Arc::new(ScriptedProvider::new("u").price(None).cached_tokens(6, 2));
    let first = provider();
    let mut o = options(&first).with_store(store.clone());
    o.run_id = Some("run-ends".into());
    let (r1, _) = run_all(flow(), "ends", o).await;
    assert!(r1.final_output.as_deref().is_some_and(|t| t.ends_with(" | stop")), "{:?}", r1.final_output);
    assert_eq!(r1.usage.unpriced_calls, 1);
    assert_eq!(
        (agent(&r1, "a").outcome.usage.cache_read_tokens, agent(&r1, "a").outcome.usage.cache_write_tokens),
        (6, 2)
    );

    let second = provider();
    let mut o = options(&second).with_store(store.clone());
    o.run_id = Some("run-ends".into());
    let (r2, _) = run_all(flow(), "ends", o).await;
    assert_eq!(second.total_calls(), 0);
    assert_eq!(r2.final_output, r1.final_output, "the replayed reply says how the call ended");
    assert_eq!(r2.usage, r1.usage, "cache tokens and unpriced calls counted once");
    let a = agent(&r2, "a");
    assert!(a.outcome.replayed);
    assert_eq!((a.outcome.usage.cache_read_tokens, a.outcome.usage.cache_write_tokens), (6, 2));
    // Issue 18, defect 13: the resumed run's start and duration are the whole run's, with
    // each segment said (the first as its events tell it).
    assert_eq!(r1.segments.len(), 1);
    assert_eq!(r2.segments.len(), 2, "{:?}", r2.segments);
    let first = r2.segments[0];
    assert!((first.started_at - r1.started_at.unwrap()).num_milliseconds().abs() < 1000, "{first:?}");
    assert!(first.duration_ms <= r1.duration_ms + 1000);
    assert_eq!(r2.started_at, Some(first.started_at));
    assert!(r2.segments[1].started_at >= first.started_at);
    assert_eq!(r2.duration_ms, first.duration_ms + r2.segments[1].duration_ms);
}

#[tokio::test]
async fn custom_steps_are_recorded_and_replayed() {
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let counter = Arc::new(std::sync::atomic::AtomicU32::new(0));
    struct Counting(Arc<std::sync::atomic::AtomicU32>);
    #[async_trait::async_trait]
    impl Orchestrator for Counting {
        async fn decompose(&self, ctx: &Ctx, _task: &Task) -> Result<Plan, StepError> {
            let c = self.0.clone();
            let n: usize = ctx
                .step(StepSpec::new("count", Tier::Agent), &"input", async move {
                    Ok(c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as usize + 2)
                })
                .await?;
            Ok((1..=n).map(|i| Subtask::new(i.to_string(), format!("part {i}"))).collect::<Vec<_>>().into())
        }
        async fn execute(
            &self,
            _ctx: &Ctx,
            step: &StepSpec,
            _task: &Task,
            s: &Subtask,
            _deps: &[AgentOutput],
        ) -> Result<AgentOutput, StepError> {
            Ok(AgentOutput {
                subtask_id: s.id.clone(),
                step: step.id.clone(),
                text: Arc::from("x"),
                model: Arc::from(""),
            })
        }
        async fn synthesize(
            &self,
            _ctx: &Ctx,
            _task: &Task,
            plan: &[Subtask],
            _results: &[Outcome],
        ) -> Result<Synthesis, StepError> {
            Ok(Synthesis { text: format!("{} parts", plan.len()) })
        }
    }
    let p = Arc::new(ScriptedProvider::new("t"));
    for _ in 0..2 {
        let mut o = options(&p).with_store(store.clone());
        o.run_id = Some("r".into());
        let (r, _) = run_all(Counting(counter.clone()), "task", o).await;
        assert_eq!(r.final_output.as_deref(), Some("2 parts"));
    }
    assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 1, "the effect ran once");
}

/// A store whose `n`th step write fails when `fails(n)` (a full disk, a dropped connection).
struct FailingStore {
    inner: MemoryStore,
    writes: std::sync::atomic::AtomicUsize,
    fails: fn(usize) -> bool,
}

impl FailingStore {
    fn new(fails: fn(usize) -> bool) -> Self {
        FailingStore { inner: MemoryStore::new(), writes: 0.into(), fails }
    }
}

#[async_trait::async_trait]
impl RunStore for FailingStore {
    async fn put_run(&self, run: &crate::store::RunRecord) -> Result<(), crate::store::StoreError> {
        self.inner.put_run(run).await
    }
    async fn get_run(&self, id: &str) -> Result<Option<crate::store::RunRecord>, crate::store::StoreError> {
        self.inner.get_run(id).await
    }
    async fn load_steps(&self, id: &str) -> Result<Vec<crate::store::StepRecord>, crate::store::StoreError> {
        self.inner.load_steps(id).await
    }
    async fn put_step(&self, id: &str, r: &crate::store::StepRecord) -> Result<(), crate::store::StoreError> {
        if (self.fails)(self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
            return Err(crate::store::StoreError::Backend("disk full (test)".into()));
        }
        self.inner.put_step(id, r).await
    }
    async fn append_events(&self, id: &str, e: &[Arc<Event>]) -> Result<(), crate::store::StoreError> {
        self.inner.append_events(id, e).await
    }
    async fn events(&self, id: &str, after: u64) -> Result<Vec<Arc<Event>>, crate::store::StoreError> {
        self.inner.events(id, after).await
    }
    async fn last_seq(&self, id: &str) -> Result<u64, crate::store::StoreError> {
        self.inner.last_seq(id).await
    }
    async fn finish_run(&self, r: &RunResult) -> Result<(), crate::store::StoreError> {
        self.inner.finish_run(r).await
    }
    async fn get_result(&self, id: &str) -> Result<Option<RunResult>, crate::store::StoreError> {
        self.inner.get_result(id).await
    }
    async fn claim(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        replace: Option<&str>,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.claim(id, owner, ttl, replace).await
    }
    async fn queued_runs(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::store::RunRecord>, crate::store::StoreError> {
        self.inner.queued_runs(limit).await
    }
    async fn take_queued(&self, id: &str, owner: &str) -> Result<bool, crate::store::StoreError> {
        self.inner.take_queued(id, owner).await
    }
    async fn heartbeat(
        &self,
        id: &str,
        owner: &str,
    ) -> Result<crate::store::Lease, crate::store::StoreError> {
        self.inner.heartbeat(id, owner).await
    }
    async fn take_runs(
        &self,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<crate::store::RunRecord>, crate::store::StoreError> {
        self.inner.take_runs(owner, limit).await
    }
    async fn release(&self, id: &str, owner: &str) -> Result<bool, crate::store::StoreError> {
        self.inner.release(id, owner).await
    }
    async fn request_cancel(
        &self,
        id: &str,
    ) -> Result<crate::store::CancelRequest, crate::store::StoreError> {
        self.inner.request_cancel(id).await
    }
    async fn list_runs(&self, n: usize) -> Result<Vec<crate::store::RunSummary>, crate::store::StoreError> {
        self.inner.list_runs(n).await
    }
    async fn delete_run(&self, id: &str) -> Result<bool, crate::store::StoreError> {
        self.inner.delete_run(id).await
    }
    async fn put_dead_letter(&self, l: &crate::store::DeadLetter) -> Result<u64, crate::store::StoreError> {
        self.inner.put_dead_letter(l).await
    }
    async fn dead_letters(&self) -> Result<Vec<crate::store::DeadLetter>, crate::store::StoreError> {
        self.inner.dead_letters().await
    }
    async fn resolve_dead_letter(&self, id: u64) -> Result<(), crate::store::StoreError> {
        self.inner.resolve_dead_letter(id).await
    }
    async fn cache_get(
        &self,
        k: crate::store::InputHash,
    ) -> Result<Option<crate::reply::StepReply>, crate::store::StoreError> {
        self.inner.cache_get(k).await
    }
    async fn cache_put(
        &self,
        k: crate::store::InputHash,
        r: &crate::reply::StepReply,
        ttl: Duration,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.cache_put(k, r, ttl).await
    }
}

// Paused time: the engine retries the refused record for a few seconds first.
#[tokio::test(start_paused = true)]
async fn a_failing_store_stops_the_run_with_a_clear_error_and_keeps_what_was_recorded() {
    let store = Arc::new(FailingStore::new(|n| n >= 4));
    let p = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&p).with_store(store.clone());
    o.concurrency = 1;
    o.run_id = Some("r".into());
    let (r, _) = run_all(Cascade::new(12, "t/m"), "task", o).await;
    // Unfinished, not failed: nothing about the run went wrong but its record.
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(
        r.stop_reason.contains("the run store failed") && r.stop_reason.contains("disk full"),
        "{}",
        r.stop_reason
    );
    // Scheduling stopped: one call whose record failed, none after it.
    assert_eq!(p.total_calls(), 5);
    assert_eq!(store.inner.load_steps("r").await.unwrap().len(), 4, "the recorded steps are intact");
    assert_eq!(store.inner.get_result("r").await.unwrap(), None, "no result is recorded over the failure");
}

/// A store that refuses a write now and then (a connection dropped) loses nothing: the
/// engine writes the record again, and the run completes with every step recorded once.
#[tokio::test(start_paused = true)]
async fn a_record_the_store_refuses_once_is_written_again() {
    // Every third write fails; the write after it succeeds.
    let store = Arc::new(FailingStore::new(|n| n % 3 == 1));
    let p = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&p).with_store(store.clone());
    o.run_id = Some("r".into());
    let (r, _) = run_all(Cascade::new(6, "t/m"), "task", o).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(p.total_calls(), 8, "each step called once");
    assert_eq!(store.inner.load_steps("r").await.unwrap().len(), 8);
}

#[tokio::test]
async fn the_response_cache_serves_identical_requests_for_free() {
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let p = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&p).with_store(store.clone());
    o.cache_ttl = Some(Duration::from_secs(60));
    let (first, _) = run_all(Cascade::new(5, "t/m"), "same task", o.clone()).await;
    assert_eq!(p.total_calls(), 7);
    let (second, events) = run_all(Cascade::new(5, "t/m"), "same task", o).await;
    assert_eq!(p.total_calls(), 7, "every request was served from the cache");
    assert_eq!(second.final_output, first.final_output);
    assert_eq!(second.cost_usd, 0.0);
    assert!(second.agents.iter().all(|a| a.outcome.cached));
    assert!(events.iter().any(|e| matches!(
        e.kind,
        EventKind::StepCompleted { outcome: StepOutcome { cached: true, .. }, .. }
    )));
}

#[tokio::test]
async fn a_second_driver_is_refused_while_the_first_holds_the_lease() {
    let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(50)));
    let mut o = options(&p).with_store(store.clone());
    o.run_id = Some("shared".into());
    let first = run(Cascade::new(3, "t/m"), Task::new("t"), o.clone()).await.unwrap();
    let err = run(Cascade::new(3, "t/m"), Task::new("t"), o).await.err().expect("refused");
    assert!(err.to_string().contains("being driven by another process"), "{err}");
    assert_eq!(first.result().await.status, RunStatus::Completed);
}

#[tokio::test]
async fn provider_limits_are_shared_by_every_run() {
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(5)));
    let mut providers = Providers::new();
    providers.insert_with_limits(
        p.clone(),
        crate::limits::Limits { max_concurrency: Some(2), ..crate::limits::Limits::default() },
    );
    let mut o = options(&p).with_providers(providers);
    o.concurrency = 16;
    // Two runs at once, each allowed 16 calls: together they never pass the provider's 2.
    let a = run(Cascade::new(10, "t/m"), Task::new("a"), o.clone()).await.unwrap();
    let b = run(Cascade::new(10, "t/m"), Task::new("b"), o).await.unwrap();
    let (ra, rb) = tokio::join!(a.result(), b.result());
    assert_eq!((ra.status, rb.status), (RunStatus::Completed, RunStatus::Completed));
    assert_eq!(p.max_in_flight(), 2);
}

#[tokio::test]
async fn a_failing_model_falls_back_to_the_next_in_its_chain() {
    let first = Arc::new(
        ScriptedProvider::new("a")
            .always_fail("worker/", LlmError::Server { status: 503, message: "down".into() }),
    );
    let second = Arc::new(ScriptedProvider::new("b"));
    let mut o = options(&first).with_provider(second.clone());
    o.policies.update_all(|p| p.retries = 1);
    let mut cascade = Cascade::new(2, "a/m");
    cascade.worker.model = Arc::from("a/m, b/n");
    let (r, events) = run_all(cascade, "task", o).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let w = agent(&r, "worker/001");
    assert_eq!(w.outcome.model.as_ref(), "b/n", "the fallback answered");
    assert_eq!(w.outcome.attempts, 3, "two tries of a/m, then b/n");
    assert_eq!(second.calls("worker/001"), 1);
    let fallback = events.iter().find(|e| e.kind.type_name() == "step_fallback").expect("a fallback event");
    assert!(
        matches!(&fallback.kind, EventKind::StepFallback { from, to, .. } if &**from == "a/m" && &**to == "b/n")
    );
}

#[tokio::test]
async fn an_open_breaker_sends_calls_to_the_fallback_at_once() {
    let flaky =
        Arc::new(ScriptedProvider::new("a").always_fail("", LlmError::Timeout(Duration::from_millis(1))));
    let backup = Arc::new(ScriptedProvider::new("b"));
    let mut providers = Providers::new();
    providers.insert_with_limits(
        flaky.clone(),
        crate::limits::Limits { breaker_failures: 2, ..crate::limits::Limits::default() },
    );
    providers.insert(backup.clone());
    let mut o = options(&flaky).with_providers(providers);
    o.concurrency = 1;
    o.policies.update_all(|p| p.retries = 0);
    let (r, events) = run_all(Cascade::new(4, "a/m,b/n"), "task", o).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    // a/m failed twice, its breaker opened, and later steps went straight to b/n.
    assert_eq!(flaky.total_calls(), 2);
    assert_eq!(backup.total_calls(), 5);
    assert!(types(&events).contains(&"breaker_opened"));
}

#[tokio::test]
async fn a_chain_with_an_unknown_model_is_rejected_before_any_call() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let mut cascade = Cascade::new(2, "t/m");
    cascade.worker.model = Arc::from("t/m,nope/x");
    let err = run(cascade, Task::new("task"), options(&p)).await.err().expect("rejected");
    assert!(err.to_string().contains("unknown provider `nope`"), "{err}");
    assert_eq!(p.total_calls(), 0);
}

/// Streams its reply in 30 pieces, 20 ms apart.
struct Streaming;

#[async_trait::async_trait]
impl LlmProvider for Streaming {
    fn name(&self) -> &str {
        "s"
    }
    fn price(&self, _model: &str) -> Option<Price> {
        None
    }
    async fn complete(
        &self,
        model: &str,
        _request: &LlmRequest,
        _call: &crate::llm::CallInfo,
    ) -> Result<LlmReply, LlmError> {
        let mut text = String::new();
        for i in 0..30 {
            let piece = format!("w{i} ");
            crate::llm::stream_delta(&piece);
            text.push_str(&piece);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(LlmReply {
            text,
            usage: Usage::default(),
            model: format!("s/{model}"),
            finish_reason: None,
            simulated: false,
            tool_calls: Vec::new(),
        })
    }
}

#[tokio::test]
async fn streamed_text_arrives_as_coalesced_step_delta_events() {
    let mut o = RunOptions::default().with_provider(Arc::new(Streaming));
    o.stream_deltas = true;
    o.plan = Some(vec![Subtask::new("1", "only")]);
    let (r, events) = run_all(Cascade::new(1, "s/m"), "task", o).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    // 600 ms of text in at most ~10 events a second, not 30.
    assert!((3..=9).contains(&deltas.len()), "{} delta events", deltas.len());
    assert_eq!(deltas.concat(), agent(&r, "worker/001").output.as_deref().unwrap());

    let (_, events) = run_all(
        Cascade::new(1, "s/m"),
        "task",
        RunOptions::default().with_provider(Arc::new(Streaming)).with_plan(vec![Subtask::new("1", "only")]),
    )
    .await;
    assert!(!types(&events).contains(&"step_delta"), "only runs that ask for them");
}

#[tokio::test]
async fn cascade_refine_critiques_and_revises_the_final_text_n_times() {
    // The judge never accepts: two revisions, and the last one is not judged.
    let p = Arc::new(ScriptedProvider::new("t").reply_for("refine/", "REVISE\nadd numbers"));
    let mut c = Cascade::new(12, "t/m");
    c.refine = 2;
    let (r, _) = run_all(c, "AI in healthcare", options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(p.calls("refine/01/judge"), 1);
    assert_eq!(p.calls("refine/02/draft"), 1);
    assert_eq!(p.calls("refine/02/judge"), 1);
    assert_eq!(p.calls("refine/03/draft"), 1);
    assert_eq!(p.calls("refine/03/judge"), 0, "the last draft is not judged");
    assert_eq!(p.calls("refine/01/draft"), 0, "the first draft is the synthesis itself");
    // 16 cascade calls + 2 critiques + 2 revisions.
    assert_eq!(r.usage.calls, 20);
    // The revise brief carried the executive's text and the critique.
    assert_eq!(r.final_output.as_deref(), Some("REVISE\nadd numbers"));
    assert!(agent(&r, "refine/02/draft").inputs.iter().any(|s| s.as_str() == "refine/01/judge"));
}

#[tokio::test]
async fn cascade_refine_stops_when_the_judge_accepts() {
    let p = Arc::new(ScriptedProvider::new("t").reply_for("refine/01/judge", "DONE"));
    let mut c = Cascade::new(12, "t/m");
    c.refine = 3;
    let (r, _) = run_all(c, "AI in healthcare", options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(p.calls("refine/01/judge"), 1);
    assert_eq!(p.calls("refine/02/draft"), 0);
    assert_eq!(r.final_output.as_deref(), Some("Output of executive. "));
}

mod plan_review {
    use super::*;
    use crate::patterns::hitl::{self, Answer, Question};

    #[tokio::test]
    async fn an_approved_plan_runs() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (human, mut requests) = hitl::channel();
        let mut o = options(&p).with_human(human);
        o.review_plan = true;
        let answerer = tokio::spawn(async move {
            let r = requests.recv().await.expect("the plan is asked about");
            assert_eq!(r.question, Question::Approval);
            assert!(r.prompt.contains("plan of 3 subtasks"), "{}", r.prompt);
            assert!(r.id.ends_with(":hitl/plan"), "{}", r.id);
            requests.answer(&r.id, Answer::Approve(true)).unwrap();
        });
        let (r, _) = run_all(Cascade::new(3, "t/m"), "task", o).await;
        answerer.await.unwrap();
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 3);
    }

    #[tokio::test]
    async fn a_rejected_plan_runs_no_subtask() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (human, mut requests) = hitl::channel();
        let mut o = options(&p).with_human(human);
        o.review_plan = true;
        tokio::spawn(async move {
            let r = requests.recv().await.unwrap();
            requests.answer(&r.id, Answer::Approve(false)).unwrap();
            // Keep the desk open until the run is over.
            requests.recv().await
        });
        let (r, _) = run_all(Cascade::new(3, "t/m"), "task", o).await;
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.stop_reason.contains("rejected"), "{}", r.stop_reason);
        assert_eq!(p.total_calls(), 1, "only the decomposition was paid for");
    }

    #[tokio::test]
    async fn an_unanswered_plan_is_rejected_after_max_wait_and_unattended_at_once() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let (human, _requests) = hitl::channel();
        let mut o = options(&p).with_human(human.max_wait(Duration::from_millis(20)));
        o.review_plan = true;
        let (r, _) = run_all(Cascade::new(3, "t/m"), "task", o).await;
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.stop_reason.contains("not approved in time"), "{}", r.stop_reason);

        let mut o = options(&p);
        o.review_plan = true;
        let (r, _) = run_all(Cascade::new(3, "t/m"), "task", o).await;
        assert_eq!(r.status, RunStatus::Failed);
        assert!(r.stop_reason.contains("nobody was there to answer"), "{}", r.stop_reason);
        assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 0);
    }
}

#[tokio::test]
async fn a_boxed_orchestrator_runs_like_the_concrete_one() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let boxed: Box<dyn Orchestrator> = Box::new(Cascade::new(5, "t/m"));
    let (r, _) = run_all(boxed, "task", options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(r.pattern, "cascade");
    assert_eq!(r.count(&Tier::Synthesizer, AgentStatus::Completed), 1);
}

#[tokio::test]
async fn a_cap_that_stops_a_pattern_is_named_in_the_run_result() {
    use crate::patterns::Refine;
    let p = Arc::new(ScriptedProvider::new("t"));
    let flow = Flow::new("iterative", |ctx, task| async move {
        let refine = Refine::llm("t/m").until(|_| false).max_iterations(2);
        let done = refine.run(&ctx, task.description).await.map_err(|e| e.error)?;
        Ok(done.output.to_string())
    });
    let (r, _) = run_all(flow, "task", options(&p)).await;
    assert_eq!(r.caps.len(), 1, "{:?}", r.caps);
    assert_eq!(r.caps[0].cap, "max_iterations");
    assert_eq!(r.caps[0].limit, 2);
    assert_eq!(r.caps[0].at.as_str(), "refine/03/draft");
    assert!(
        r.stop_reason.contains("cap max_iterations = 2 reached; refine/03/draft not run"),
        "{}",
        r.stop_reason
    );
    assert_eq!(agent(&r, "refine/03/draft").status, AgentStatus::Skipped);
    // It survives the trip through JSON (the store, the HTTP API).
    let back: RunResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back.caps, r.caps);
}

#[tokio::test]
async fn prompt_cache_tokens_are_priced_at_their_rates_and_totalled() {
    let price = Price::new(1.0, 2.0).with_cache(Some(0.1), Some(1.25));
    let p = Arc::new(ScriptedProvider::new("t").price(Some(price)).cached_tokens(100, 20));
    let (r, events) = run_all(Cascade::new(5, "t/m"), "cached prompts", options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let calls = r.usage.calls;
    assert_eq!(calls, 7);
    assert_eq!((r.usage.cache_read_tokens, r.usage.cache_write_tokens), (100 * calls, 20 * calls));
    let mut total = 0.0;
    for e in &events {
        if let EventKind::StepCompleted { outcome: StepOutcome { usage, cost_usd, .. }, .. } = &e.kind {
            assert_eq!((usage.cache_read_tokens, usage.cache_write_tokens), (100, 20));
            let usage = *usage;
            // Uncached input at $1, cache reads at $0.10, writes at $1.25, output at $2.
            let expected = ((usage.input_tokens - 120) as f64 * 1.0
                + 100.0 * 0.1
                + 20.0 * 1.25
                + usage.output_tokens as f64 * 2.0)
                / 1e6;
            assert!((cost_usd - expected).abs() < 1e-12 && (price.cost(usage) - expected).abs() < 1e-12);
            total += cost_usd;
        }
    }
    assert!((total - r.cost_usd).abs() < 1e-12);
    let event = events.iter().find(|e| matches!(e.kind, EventKind::StepCompleted { .. })).unwrap();
    let json = serde_json::to_value(&**event).unwrap();
    assert_eq!(
        (json["cache_read_tokens"].as_u64(), json["cache_write_tokens"].as_u64()),
        (Some(100), Some(20))
    );
}

#[tokio::test]
async fn structured_replies_are_parsed_into_their_type_and_the_schema_is_part_of_the_hash() {
    #[derive(schemars::JsonSchema, serde::Deserialize, Debug, PartialEq)]
    struct Verdict {
        holds: bool,
        reason: Option<String>,
    }
    let p = Arc::new(
        ScriptedProvider::new("t")
            .reply_for("judge", r#"{"holds": true, "reason": "checked"}"#)
            .reply_for("broken", "not json"),
    );
    let flow = Flow::new("typed", |ctx: Ctx, _task: Task| async move {
        let request = LlmRequest::new("t/m", "Does it hold?");
        let (verdict, reply) =
            ctx.llm_typed::<Verdict>(StepSpec::new("judge", Tier::Agent), request.clone()).await?;
        assert_eq!(verdict, Verdict { holds: true, reason: Some("checked".into()) });
        assert!(!reply.outcome.replayed);
        let err = ctx.llm_typed::<Verdict>(StepSpec::new("broken", Tier::Agent), request).await.unwrap_err();
        assert!(
            matches!(&err, StepError::Failed { message, .. } if message.contains("not a valid Verdict")),
            "{err}"
        );
        Ok("done".to_string())
    });
    let (r, _) = run_all(flow, "typed", options(&p)).await;
    assert_eq!(r.final_output.as_deref(), Some("done"), "{}", r.stop_reason);

    let plain = LlmRequest::new("t/m", "Does it hold?");
    let typed = plain.clone().json_schema_for::<Verdict>();
    let other = plain.clone().json_schema("Verdict", serde_json::json!({"type": "object"}));
    let hashes = [
        crate::ctx::request_hash(&plain),
        crate::ctx::request_hash(&typed),
        crate::ctx::request_hash(&other),
    ];
    assert!(hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2]);
    assert!(typed.input_token_bound() > plain.input_token_bound() + 50, "the schema is billed as input");
}

// --- tool loop ---

mod tool_loop {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::llm::ToolCall;
    use crate::tools::{TOOL_ROUND_CAP, Tool, Tools};

    #[derive(schemars::JsonSchema, serde::Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }

    fn call(id: &str, name: &str, arguments: serde_json::Value) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments }
    }

    fn add_tool(counter: Arc<AtomicU32>) -> Tool {
        Tool::new("add", "Add two integers.", move |x: Add| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(x.a + x.b)
            }
        })
    }

    /// A run whose one flow step is a tool loop named `agent`; the flow's output is the
    /// reply's text, finish reason and tool calls left.
    fn flow(tools: Tools) -> impl Orchestrator {
        Flow::new("tools", move |ctx: Ctx, task: Task| {
            let tools = tools.clone();
            async move {
                let request = LlmRequest::new("t/m", task.description);
                let reply = ctx.llm_with_tools(StepSpec::new("agent", Tier::Agent), request, &tools).await?;
                Ok(format!(
                    "{} | {} | {} | {}",
                    reply.text,
                    reply.outcome.finish_reason.unwrap_or_default(),
                    reply.tool_calls.len(),
                    reply.outcome.usage.input_tokens
                ))
            }
        })
    }

    #[tokio::test]
    async fn rounds_run_tools_and_hand_their_results_back_until_the_model_answers() {
        let counter = Arc::new(AtomicU32::new(0));
        let p = Arc::new(ScriptedProvider::new("t").tool_calls_for(
            "agent",
            2,
            vec![call("c", "add", serde_json::json!({"a": 2, "b": 3}))],
        ));
        let tools = Tools::new().with(add_tool(counter.clone()));
        let (r, events) = run_all(flow(tools), "add things", options(&p)).await;
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        let out = r.final_output.clone().unwrap();
        assert!(out.starts_with("Output of agent/round/03. Tool results: 5; 5 | stop | 0 | "), "{out}");
        assert_eq!(counter.load(Ordering::SeqCst), 2, "one call per round");
        for step in ["agent/round/01", "agent/round/02", "agent/round/03"] {
            assert_eq!(p.calls(step), 1, "{step}");
            assert_eq!(agent(&r, step).status, AgentStatus::Completed);
        }
        let tool = agent(&r, "agent/round/01/tool/1");
        assert_eq!(tool.output.as_deref(), Some(r#"{"content":"5","is_error":false}"#));
        assert_eq!(tool.inputs[0].as_str(), "agent/round/01");
        assert_eq!(agent(&r, "agent/round/02").inputs[0].as_str(), "agent/round/01/tool/1");
        // The reply's usage is the sum of the rounds'.
        let rounds_input: u64 = ["agent/round/01", "agent/round/02", "agent/round/03"]
            .iter()
            .map(|step| agent(&r, step).outcome.usage.input_tokens)
            .sum();
        assert!(out.ends_with(&format!(" | {rounds_input}")), "{out} vs {rounds_input}");
        // The model saw the tools and, from round 2, the calls and their results.
        let started = events.iter().filter(|e| matches!(e.kind, EventKind::StepStarted { .. })).count();
        assert_eq!(started, 3 + 2, "three rounds, two tool calls");
    }

    #[tokio::test]
    async fn the_round_cap_stops_the_loop_with_an_explicit_reason() {
        let counter = Arc::new(AtomicU32::new(0));
        let p = Arc::new(ScriptedProvider::new("t").tool_calls_for(
            "agent",
            u32::MAX,
            vec![call("c", "add", serde_json::json!({"a": 1, "b": 1}))],
        ));
        let tools = Tools::new().with(add_tool(counter.clone())).max_rounds(3);
        let (r, _) = run_all(flow(tools), "loop forever", options(&p)).await;
        let out = r.final_output.clone().unwrap();
        assert!(out.starts_with(&format!(" | {TOOL_ROUND_CAP} | 1 | ")), "{out}");
        assert_eq!(counter.load(Ordering::SeqCst), 2, "the last round's calls are not run");
        assert_eq!(p.calls("agent/round/03"), 1);
        assert_eq!(p.calls("agent/round/04"), 0);
        let skipped = agent(&r, "agent/round/04");
        assert_eq!(skipped.status, AgentStatus::Skipped);
        assert!(skipped.error.as_deref().unwrap().contains("max_tool_rounds = 3"), "{:?}", skipped.error);
        assert_eq!(r.caps.len(), 1);
        assert!(r.stop_reason.contains("max_tool_rounds"), "{}", r.stop_reason);
    }

    #[tokio::test]
    async fn unknown_tools_bad_arguments_errors_and_panics_go_back_to_the_model() {
        let failing = Tool::new("fail", "Always fails.", |_: Add| async { Err::<String, _>("disk full") });
        let panicking =
            Tool::from_json("panic", "Panics.", serde_json::json!({"type": "object"}), |_| async {
                panic!("handler bug")
            });
        let counter = Arc::new(AtomicU32::new(0));
        let tools = Tools::new().with(add_tool(counter.clone())).with(failing).with(panicking);
        let calls = vec![
            call("1", "fail", serde_json::json!({"a": 1, "b": 2})),
            call("2", "nope", serde_json::json!({})),
            call("3", "add", serde_json::json!({"a": "two", "b": 2})),
            call("4", "add", serde_json::Value::String("{\"a\": 1,".into())),
            call("5", "panic", serde_json::json!({})),
        ];
        let p = Arc::new(ScriptedProvider::new("t").tool_calls_for("agent", 1, calls));
        let (r, _) = run_all(flow(tools), "try everything", options(&p)).await;
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        let out = r.final_output.clone().unwrap();
        assert!(out.contains("error: disk full"), "{out}");
        assert!(
            out.contains("error: there is no tool named `nope`; the tools are: add, fail, panic"),
            "{out}"
        );
        assert!(
            out.contains("error: the arguments do not match the tool's parameters: invalid type"),
            "{out}"
        );
        assert!(out.contains("error: the arguments are not valid JSON: {\"a\": 1,"), "{out}");
        assert!(out.contains("error: the tool `panic` failed (its handler panicked)"), "{out}");
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        assert!(agent(&r, "agent/round/01/tool/2").output.as_deref().unwrap().contains("\"is_error\":true"));
    }

    #[tokio::test]
    async fn the_calls_of_a_round_run_concurrently() {
        // Each handler waits until both have started: run one after the other, they would
        // never finish (the timeout turns that into a failure instead of a hang).
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let meet = Tool::from_json(
            "meet",
            "Wait for the other.",
            serde_json::json!({"type": "object"}),
            move |_| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Ok("met".to_string())
                }
            },
        );
        let calls = vec![call("a", "meet", serde_json::json!({})), call("b", "meet", serde_json::json!({}))];
        let p = Arc::new(ScriptedProvider::new("t").tool_calls_for("agent", 1, calls));
        let run = run_all(flow(Tools::new().with(meet)), "meet", options(&p));
        let (r, _) =
            tokio::time::timeout(Duration::from_secs(20), run).await.expect("both calls ran at once");
        assert!(r.final_output.unwrap().contains("Tool results: met; met"));
    }

    #[tokio::test]
    async fn a_resumed_loop_replays_rounds_and_tool_results_without_running_them_again() {
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let counter = Arc::new(AtomicU32::new(0));
        let tools = Tools::new().with(add_tool(counter.clone()));
        let calls = vec![call("c", "add", serde_json::json!({"a": 20, "b": 22}))];
        // First attempt: round 2 fails for good after round 1 and its tool call completed.
        let failing = Arc::new(
            ScriptedProvider::new("t")
                .tool_calls_for("agent", 1, calls.clone())
                .always_fail("agent/round/02", LlmError::InvalidRequest("bad".into())),
        );
        let mut o = options(&failing).with_store(store.clone());
        o.run_id = Some("tools-resume".into());
        let (first, _) = run_all(flow(tools.clone()), "resume me", o).await;
        assert_ne!(first.status, RunStatus::Completed);
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        // Resume with a healthy provider.
        let healthy = Arc::new(ScriptedProvider::new("t").tool_calls_for("agent", 1, calls));
        let mut o = options(&healthy).with_store(store);
        o.run_id = Some("tools-resume".into());
        let (second, _) = run_all(flow(tools), "resume me", o).await;
        assert_eq!(second.status, RunStatus::Completed, "{}", second.stop_reason);
        assert!(
            second
                .final_output
                .clone()
                .unwrap()
                .starts_with("Output of agent/round/02. Tool results: 42 | stop")
        );
        assert_eq!(counter.load(Ordering::SeqCst), 1, "the tool did not run again");
        assert_eq!(healthy.calls("agent/round/01"), 0, "round 1 was replayed");
        assert_eq!(healthy.calls("agent/round/02"), 1);
        assert!(
            agent(&second, "agent/round/01").outcome.replayed
                && agent(&second, "agent/round/01/tool/1").outcome.replayed
        );
    }
}

/// The engine's policies for effects: tool calls and `Ctx::step` work get timeouts,
/// retries where repeating is safe, events, the journal and dead letters.
mod effect_policies {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::llm::ToolCall;
    use crate::policy::{Effect, EffectError};
    use crate::store::LetterWork;
    use crate::tools::{Source, Tool, ToolOutput, Toolbox, Tools};

    fn call(name: &str) -> ToolCall {
        ToolCall { id: "c".into(), name: name.into(), arguments: serde_json::json!({}) }
    }

    /// A tool that counts its calls and answers with `answer(call number)`.
    fn counted(
        name: &str,
        counter: &Arc<AtomicU32>,
        answer: impl Fn(u32) -> Result<ToolOutput, EffectError> + Send + Sync + Clone + 'static,
        delay: Duration,
    ) -> Tool {
        let counter = counter.clone();
        let schema = serde_json::json!({"type": "object", "properties": {}});
        Tool::dynamic(name, "A test tool.", schema, move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let answer = answer.clone();
            async move {
                tokio::time::sleep(delay).await;
                answer(n)
            }
        })
    }

    /// A flow whose one step is an agent of tier Agent: with a toolbox, its plain
    /// `ctx.llm` runs the tool loop.
    fn agent_flow() -> impl Orchestrator {
        Flow::new("agent", |ctx: Ctx, task: Task| async move {
            let reply = ctx
                .llm(StepSpec::new("agent", Tier::Agent), LlmRequest::new("t/m", task.description))
                .await?;
            Ok(reply.text.to_string())
        })
    }

    fn tooled(p: &Arc<ScriptedProvider>, tools: Tools, store: &Arc<dyn RunStore>) -> RunOptions {
        let mut o = options(p).with_tools(Toolbox::new().with_workers(tools)).with_store(store.clone());
        o.policies.set_tools(StepPolicy {
            timeout: Duration::from_millis(100),
            retries: 2,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(5),
        });
        o
    }

    async fn one_call(tool: Tool, store: &Arc<dyn RunStore>) -> (RunResult, Vec<Arc<Event>>) {
        let name = tool.name().to_string();
        let p = Arc::new(ScriptedProvider::new("t").tool_calls_for("agent", 1, vec![call(&name)]));
        run_all(agent_flow(), "use the tool", tooled(&p, Tools::new().with(tool), store)).await
    }

    fn retries(events: &[Arc<Event>]) -> usize {
        types(events).iter().filter(|t| **t == "step_retrying").count()
    }

    #[tokio::test]
    async fn a_toolbox_gives_a_tiers_plain_llm_calls_the_tool_loop() {
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let n = Arc::new(AtomicU32::new(0));
        let tool = counted("look", &n, |_| Ok(ToolOutput::new("found it")), Duration::ZERO);
        let (r, _) = one_call(tool, &store).await;
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(r.final_output.clone().unwrap().contains("Tool results: found it"));
        assert_eq!(agent(&r, "agent/round/01/tool/1").status, AgentStatus::Completed);
    }

    #[tokio::test]
    async fn an_idempotent_tool_that_hangs_is_retried_then_the_model_reads_the_timeout_and_a_letter_is_kept()
    {
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let n = Arc::new(AtomicU32::new(0));
        let slow = counted("slow", &n, |_| Ok(ToolOutput::new("late")), Duration::from_secs(30)).idempotent();
        let (r, events) = one_call(slow, &store).await;
        assert_eq!(r.status, RunStatus::Completed, "a hung tool does not hang the run: {}", r.stop_reason);
        assert_eq!(n.load(Ordering::SeqCst), 3, "the first call and two retries");
        assert_eq!(retries(&events), 2);
        let out = r.final_output.clone().unwrap();
        assert!(out.contains("timed out after 100.0ms (after 3 attempts)"), "{out}");
        let step = agent(&r, "agent/round/01/tool/1");
        assert_eq!(step.outcome.finish_reason.as_deref(), Some("timeout"));
        let letters = store.dead_letters().await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].error_kind, "timeout");
        assert!(matches!(&letters[0].work, LetterWork::Tool { tool_call } if tool_call.name == "slow"));
    }

    #[tokio::test]
    async fn a_tool_that_may_have_acted_is_not_repeated_after_a_timeout() {
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let n = Arc::new(AtomicU32::new(0));
        let slow = counted("pay", &n, |_| Ok(ToolOutput::new("paid")), Duration::from_secs(30));
        let (r, events) = one_call(slow, &store).await;
        assert_eq!(n.load(Ordering::SeqCst), 1, "not idempotent: one call");
        assert_eq!(retries(&events), 0);
        assert!(r.final_output.unwrap().contains("timed out after 100.0ms"));
        assert_eq!(store.dead_letters().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_a_tools_own_refusal_is_an_answer() {
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let n = Arc::new(AtomicU32::new(0));
        let flaky = counted(
            "flaky",
            &n,
            |k| {
                if k < 3 {
                    Err(EffectError::transient("connection refused"))
                } else {
                    Ok(ToolOutput::new("ok"))
                }
            },
            Duration::ZERO,
        );
        let (r, events) = one_call(flaky, &store).await;
        assert_eq!(n.load(Ordering::SeqCst), 3);
        assert_eq!(retries(&events), 2);
        assert!(r.final_output.unwrap().contains("Tool results: ok"));
        assert!(store.dead_letters().await.unwrap().is_empty());

        let m = Arc::new(AtomicU32::new(0));
        let refusing =
            counted("refuse", &m, |_| Err(EffectError::new("no such file")), Duration::ZERO).idempotent();
        let (r, _) = one_call(refusing.retries(0), &store).await;
        assert_eq!(m.load(Ordering::SeqCst), 1);
        assert!(r.final_output.unwrap().contains("no such file"));
        assert!(store.dead_letters().await.unwrap().is_empty(), "an answer is not an outage");

        let k = Arc::new(AtomicU32::new(0));
        let down = counted("down", &k, |_| Err(EffectError::transient("server exited")), Duration::ZERO);
        let (r, _) = one_call(down, &store).await;
        assert_eq!(k.load(Ordering::SeqCst), 3);
        assert!(r.final_output.unwrap().contains("server exited (after 3 attempts)"));
        let letters = store.dead_letters().await.unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].error_kind, "failed");
    }

    #[tokio::test]
    async fn results_are_capped_with_a_note_and_sources_reach_the_result_even_when_replayed() {
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let n = Arc::new(AtomicU32::new(0));
        let big = counted(
            "read",
            &n,
            |_| {
                let source = Source { url: "https://example.org/a".into(), title: "A".into() };
                Ok(ToolOutput::new("é".repeat(1000)).with_sources(vec![source]))
            },
            Duration::ZERO,
        )
        .idempotent();
        let p = Arc::new(ScriptedProvider::new("t").tool_calls_for("agent", 1, vec![call("read")]));
        let mut o = tooled(&p, Tools::new().with(big.clone()).result_cap(301), &store);
        o.run_id = Some("capped".into());
        let (r, _) = run_all(agent_flow(), "read", o).await;
        let out = r.final_output.clone().unwrap();
        assert!(out.contains("[cut: the tool returned 2000 bytes; the first 300 are shown]"), "{out}");
        assert_eq!(r.sources.len(), 1);
        // A resumed run replays the call, and its sources are listed again.
        let steps = store.load_steps("capped").await.unwrap();
        assert!(steps.iter().any(|s| s.step.as_str() == "agent/round/01/tool/1"));
        let mut o = tooled(&p, Tools::new().with(big).result_cap(301), &store);
        o.run_id = Some("capped".into());
        let (again, _) = run_all(agent_flow(), "read", o).await;
        assert_eq!(n.load(Ordering::SeqCst), 1, "replayed, not called");
        assert_eq!(again.sources, r.sources);
    }

    /// A step's record is keyed by its input as serialized, field order kept: the hash of
    /// runs recorded before effects had policies, so they still replay.
    #[tokio::test]
    async fn a_steps_input_hash_is_that_of_its_json_in_field_order() {
        #[derive(serde::Serialize)]
        struct Input {
            b: u32,
            a: u32,
        }
        let p = Arc::new(ScriptedProvider::new("t"));
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let flow = Flow::new("keyed", |ctx: Ctx, _task: Task| async move {
            let input = Input { b: 1, a: 2 };
            ctx.step::<String, _>(StepSpec::new("keyed", Tier::Agent), &input, async { Ok("done".into()) })
                .await
        });
        let mut o = options(&p).with_store(store.clone());
        o.run_id = Some("keyed".into());
        let (r, _) = run_all(flow, "k", o).await;
        assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
        let steps = store.load_steps("keyed").await.unwrap();
        let expected = crate::store::InputHash::new(xxhash_rust::xxh3::xxh3_128(br#"{"b":1,"a":2}"#));
        assert_eq!(steps[0].input_hash, expected);
    }

    #[tokio::test]
    async fn a_step_that_hangs_times_out_by_its_tier_and_step_with_retries_what_is_safe() {
        let p = Arc::new(ScriptedProvider::new("t"));
        let store: Arc<dyn RunStore> = Arc::new(MemoryStore::new());
        let n = Arc::new(AtomicU32::new(0));
        let counter = n.clone();
        let flow = Flow::new("steps", move |ctx: Ctx, _task: Task| {
            let counter = counter.clone();
            async move {
                let hung = ctx
                    .step::<String, _>(StepSpec::new("hang", Tier::Agent), &"x", async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok("never".to_string())
                    })
                    .await;
                let policy = StepPolicy { timeout: Duration::from_secs(5), ..Policies::TOOL_DEFAULT };
                let fetched = ctx
                    .step_with(StepSpec::new("fetch", Tier::Agent), &"y", Effect::new(policy), || {
                        let k = counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if k == 0 {
                                Err(EffectError::transient("refused"))
                            } else {
                                Ok(format!("try {}", k + 1))
                            }
                        }
                    })
                    .await?;
                Ok(format!("{} / {fetched}", hung.unwrap_err().kind()))
            }
        });
        let mut o = options(&p).with_store(store.clone());
        let agent_policy =
            StepPolicy { timeout: Duration::from_millis(50), ..*o.policies.for_tier(&Tier::Agent) };
        o.policies.set(&Tier::Agent, agent_policy);
        let (r, _) = run_all(flow, "steps", o).await;
        assert_eq!(r.final_output.as_deref(), Some("timeout / try 2"), "{}", r.stop_reason);
        assert_eq!(agent(&r, "hang").status, AgentStatus::TimedOut);
        let letters = store.dead_letters().await.unwrap();
        assert_eq!(letters.len(), 1);
        assert!(matches!(&letters[0].work, LetterWork::Step { input } if input == "x"));
    }
}

#[tokio::test]
async fn a_model_without_a_price_is_refused_under_a_usd_budget_and_flagged_without_one() {
    let unpriced = Arc::new(ScriptedProvider::new("u").price(None));
    let priced = Arc::new(ScriptedProvider::new("t"));
    let with = |budget: Option<f64>| {
        let mut o = RunOptions::default().with_provider(unpriced.clone()).with_provider(priced.clone());
        o.policies = quick_policies();
        o.budget = Budget { max_cost_usd: budget, ..Budget::default() };
        o
    };
    // A USD budget: refused before any call, with what to do.
    let (r, _) = run_all(Cascade::new(2, "u/m"), "unpriced", with(Some(1.0))).await;
    assert_eq!(unpriced.total_calls(), 0, "no call was made");
    assert_ne!(r.status, RunStatus::Completed);
    let error = agent(&r, "decompose").error.clone().unwrap_or_default();
    assert!(error.contains("u/m has no known price") && error.contains("belt.toml"), "{error}");
    // …unless the chain has a priced model, which serves.
    let (r, _) = run_all(Cascade::new(2, "u/m,t/m"), "unpriced", with(Some(1.0))).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(unpriced.total_calls(), 0);
    assert_eq!(r.usage.unpriced_calls, 0);
    // No USD budget: the calls are made, and counted as unpriced rather than as free.
    let (r, _) = run_all(Cascade::new(2, "u/m"), "unpriced", with(None)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(r.usage.unpriced_calls, r.usage.calls);
    assert!(r.usage.calls > 0);
}

/// Issue 18, defect 6: a server that reported 5M input and 5M output tokens for each call
/// made a run with a $0.50 budget end at $15.
#[tokio::test]
async fn a_provider_reporting_more_than_the_request_allows_cannot_break_the_budget() {
    let lying = Usage { reasoning_tokens: 4_000_000, ..Usage::new(5_000_000, 5_000_000) };
    let p = Arc::new(ScriptedProvider::new("t").reports_usage(lying));
    let mut o = options(&p);
    o.budget.max_cost_usd = Some(0.5);
    let (r, events) = run_all(Cascade::new(5, "t/m"), "a task", o).await;
    assert!(r.cost_usd <= 0.5, "cost {} over the $0.50 cap", r.cost_usd);
    assert_eq!(r.status, RunStatus::BudgetExhausted, "{}", r.stop_reason);
    assert!(r.stop_reason.contains("cannot keep the budget"), "{}", r.stop_reason);
    // The first call is the only one: booked at its request's limits, its report kept.
    assert_eq!(p.total_calls(), 1);
    let decompose = agent(&r, "decompose");
    assert_eq!(decompose.outcome.reported_usage.as_deref(), Some(&lying));
    let booked = decompose.outcome.usage;
    assert!(booked.input_tokens < 10_000 && booked.output_tokens <= 4096, "{booked:?}");
    assert_eq!(booked.reasoning_tokens, booked.output_tokens);
    assert_eq!(r.usage.input_tokens, booked.input_tokens);
    let said = events.iter().find_map(|e| match &e.kind {
        EventKind::UsageOverreported { reported, booked: b, stops_run, .. } => {
            Some((**reported, **b, *stops_run))
        }
        _ => None,
    });
    assert_eq!(said, Some((lying, booked, true)));
    // The workers never started.
    assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 0);
}

#[tokio::test]
async fn without_a_budget_an_overreport_is_booked_at_the_limits_and_the_run_goes_on() {
    let lying = Usage::new(5_000_000, 5_000_000);
    let p = Arc::new(ScriptedProvider::new("t").reports_usage(lying));
    let (r, events) = run_all(Cascade::new(5, "t/m"), "a task", options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let said: Vec<bool> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::UsageOverreported { stops_run, .. } => Some(*stops_run),
            _ => None,
        })
        .collect();
    assert_eq!(said, vec![false; 7], "one event per call, none stopping the run");
    // What the run counts is what it booked, step by step.
    let input: u64 = r.agents.iter().map(|a| a.outcome.usage.input_tokens).sum();
    assert_eq!(r.usage.input_tokens, input);
    assert!(r.usage.output_tokens < 7 * 5_000_000);
    assert!(r.agents.iter().all(|a| a.outcome.reported_usage.as_deref() == Some(&lying)));
}

#[tokio::test]
async fn a_small_miscount_of_the_input_is_booked_at_the_bound_without_stopping_the_run() {
    // A hidden preamble (a tool-use system prompt) can put an honest input count a few
    // hundred tokens above the request's bound: booked at the bound, said, not a stop.
    let p = Arc::new(ScriptedProvider::new("t").reports_usage(Usage::new(600, 10)));
    let mut o = options(&p);
    o.budget.max_cost_usd = Some(1.0);
    let flow = Flow::new("short", |ctx: Ctx, _task: Task| async move {
        let reply = ctx.llm(StepSpec::new("a", Tier::Agent), LlmRequest::new("t/m", "Say it")).await?;
        Ok(reply.text.to_string())
    });
    let (r, events) = run_all(flow, "short", o).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let bound = LlmRequest::new("t/m", "Say it").input_token_bound();
    assert_eq!(agent(&r, "a").outcome.usage, Usage::new(bound, 10));
    assert!(events.iter().any(|e| matches!(e.kind, EventKind::UsageOverreported { stops_run: false, .. })));
}

/// Two processes' worth of limiters (two `Providers`, as two workers would build) over one
/// provider: each allows 3 calls at once, and sharing them holds the sum to 3, not 6.
#[tokio::test]
async fn shared_limits_hold_the_sum_over_every_limiter() {
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(20)));
    let gate = Arc::new(crate::shared::MemoryShared::new());
    let limits = crate::limits::Limits { max_concurrency: Some(3), ..Default::default() };
    let process = || {
        let mut providers = crate::llm::Providers::new();
        providers.insert_with_limits(p.clone(), limits);
        providers.limiter("t").unwrap().share("t", gate.clone());
        let mut o = RunOptions::default().with_providers(providers);
        o.policies = quick_policies();
        o
    };
    let (a, b) = tokio::join!(
        run_all(Cascade::new(12, "t/m"), "task a", process()),
        run_all(Cascade::new(12, "t/m"), "task b", process())
    );
    assert_eq!((a.0.status, b.0.status), (RunStatus::Completed, RunStatus::Completed));
    assert_eq!(p.max_in_flight(), 3, "the shared cap, reached and never passed");
}

/// Two runs drawing from one budget pool: together they never pass its cap, and the run
/// that meets it ends as out of budget, saying which pool.
#[tokio::test]
async fn a_budget_pool_caps_every_run_that_draws_from_it() {
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_millis(5)));
    let pools = Arc::new(crate::shared::MemoryShared::new());
    let caps = crate::shared::PoolCaps {
        per_day: Budget { max_calls: Some(15), ..Budget::default() },
        ..Default::default()
    };
    let drawing = || {
        let mut o = options(&p);
        o.budget_pool = Some(crate::shared::BudgetPool { name: "team".into(), caps, pools: pools.clone() });
        o
    };
    let (a, b) = tokio::join!(
        run_all(Cascade::new(10, "t/m"), "task a", drawing()),
        run_all(Cascade::new(10, "t/m"), "task b", drawing())
    );
    assert!(p.total_calls() <= 15, "{} calls under a pool cap of 15", p.total_calls());
    assert!(p.total_calls() >= 10, "the pool was drawn from up to its cap: {}", p.total_calls());
    let stopped: Vec<_> =
        [&a.0, &b.0].into_iter().filter(|r| r.status == RunStatus::BudgetExhausted).collect();
    assert!(!stopped.is_empty());
    assert!(
        stopped[0].stop_reason.contains("budget pool `team`, this day's cap"),
        "{}",
        stopped[0].stop_reason
    );
    // Everything reserved was settled: nothing stays reserved once the runs end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = crate::shared::BudgetPools::pools(&*pools).await.unwrap();
    assert_eq!(state[0].reserved, crate::budget::Amount::default());
    assert_eq!(state[0].spent.calls, u64::from(p.total_calls()));
}

/// A cancel asked for through the store (by another process) reaches the run at its next
/// heartbeat; a lease another driver takes over stops the run without recording its end.
#[tokio::test(start_paused = true)]
async fn the_store_carries_cancels_and_takeovers_to_the_driver() {
    let p = Arc::new(ScriptedProvider::new("t").delay(Duration::from_secs(30)));
    let store = Arc::new(MemoryStore::new());
    let mut o = options(&p).with_store(store.clone());
    o.run_id = Some("cancelled".into());
    let handle = run(Cascade::new(4, "t/m"), Task::new("task"), o).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.request_cancel("cancelled").await.unwrap(), crate::store::CancelRequest::WasRunning);
    let started = tokio::time::Instant::now();
    let r = handle.result().await;
    assert_eq!(r.status, RunStatus::Cancelled);
    assert!(started.elapsed() <= crate::store::LEASE_TTL / 5, "seen at the next heartbeat");
    assert!(store.get_result("cancelled").await.unwrap().is_some());

    let mut o = options(&p).with_store(store.clone());
    o.run_id = Some("taken".into());
    o.owner = Some("first".into());
    let handle = run(Cascade::new(4, "t/m"), Task::new("task"), o).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    store.claim("taken", "second", crate::store::LEASE_TTL, Some("first")).await.unwrap();
    let r = handle.result().await;
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(r.stop_reason.contains("another driver took the run over"), "{}", r.stop_reason);
    assert_eq!(store.get_result("taken").await.unwrap(), None, "the run is the second driver's to finish");
}

/// A server that is down between two moments of the run: calls then fail as a refused
/// connection does; otherwise it answers after a short delay. Counts answered calls per
/// step and refused ones in all.
struct Outage {
    start: tokio::time::Instant,
    down: std::ops::Range<Duration>,
    answered: std::sync::Mutex<HashMap<String, u32>>,
    refused: std::sync::atomic::AtomicU32,
}

impl Outage {
    fn new(down: std::ops::Range<Duration>) -> Outage {
        Outage {
            start: tokio::time::Instant::now(),
            down,
            answered: Default::default(),
            refused: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl LlmProvider for Outage {
    fn name(&self) -> &str {
        "o"
    }
    fn price(&self, _model: &str) -> Option<Price> {
        Some(Price::new(1.0, 1.0))
    }
    async fn complete(
        &self,
        model: &str,
        _r: &LlmRequest,
        call: &crate::llm::CallInfo,
    ) -> Result<LlmReply, LlmError> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if self.down.contains(&self.start.elapsed()) {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(LlmError::Connection("connection refused".into()));
        }
        *self.answered.lock().unwrap().entry(call.step.to_string()).or_default() += 1;
        Ok(LlmReply {
            text: format!("[{}]", call.step),
            usage: Usage::new(10, 10),
            model: format!("o/{model}"),
            finish_reason: Some("stop".into()),
            simulated: false,
            tool_calls: Vec::new(),
        })
    }
}

fn outage_options(p: &Arc<Outage>, max_wait: Duration) -> RunOptions {
    let mut providers = Providers::new();
    providers.insert_with_limits(
        p.clone(),
        crate::limits::Limits {
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
            breaker_max_wait: max_wait,
            ..crate::limits::Limits::default()
        },
    );
    let mut o = RunOptions::default().with_providers(providers);
    o.policies = quick_policies();
    o.policies.update_all(|p| p.retries = 2);
    o.concurrency = 4;
    o
}

/// A server down for 20 s in the middle of a 12-agent cascade: the breaker opens, every
/// step waits for its trial call to succeed instead of failing, and the run completes with
/// each step answered exactly once — only the attempts made while the server was down
/// were lost.
#[tokio::test(start_paused = true)]
async fn an_outage_is_waited_out_and_no_step_is_answered_twice() {
    let p = Arc::new(Outage::new(Duration::from_millis(250)..Duration::from_secs(20)));
    let (r, events) =
        run_all(Cascade::new(12, "o/m"), "task", outage_options(&p, Duration::from_secs(300))).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let answered = p.answered.lock().unwrap().clone();
    assert_eq!(answered.len(), 16, "decompose, 12 workers, 2 synthesizers, the executive");
    assert!(answered.values().all(|&n| n == 1), "{answered:?}");
    // The outage is paid once per trial, not once per step and retry: the four calls in
    // flight when it began, the failures up to the breaker, then one trial a second.
    let refused = p.refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!((4..=4 + 25).contains(&refused), "{refused} refused calls");
    let t = types(&events);
    assert!(t.contains(&"breaker_opened") && t.contains(&"breaker_closed"), "{t:?}");
    assert!(!t.contains(&"step_failed"));
}

/// A server that does not come back within `breaker_max_wait`: the steps waiting fail,
/// nothing new starts, and the run ends partial with a reason that says how to finish it.
#[tokio::test(start_paused = true)]
async fn an_outage_past_the_longest_wait_ends_the_run_partial() {
    let p = Arc::new(Outage::new(Duration::from_millis(250)..Duration::from_secs(3600)));
    let start = tokio::time::Instant::now();
    let (r, _) = run_all(Cascade::new(12, "o/m"), "task", outage_options(&p, Duration::from_secs(30))).await;
    assert_eq!(r.status, RunStatus::Partial, "{}", r.stop_reason);
    assert!(r.stop_reason.contains("o/m did not answer again"), "{}", r.stop_reason);
    assert!(r.stop_reason.contains("belt resume --retry-failed"), "{}", r.stop_reason);
    let failed = r.agents.iter().find(|a| a.status == AgentStatus::Failed).expect("a failed step");
    let error = failed.error.as_deref().unwrap_or_default();
    assert!(error.contains("circuit breaker of o/m") && error.contains("within 30s"), "{error}");
    // Each step's wait counts from its first failure in the outage: all give up together.
    assert!(start.elapsed() < Duration::from_secs(40), "gave up after {:?}", start.elapsed());
    assert!(r.agents.iter().any(|a| a.status == AgentStatus::Skipped), "nothing new started");
}

/// A model with a small context window: a prompt of more than `window` tokens (4 bytes
/// each) is refused as llama.cpp refuses it. Workers write long findings; merges answer
/// with the worker ids their prompt mentions, so the final text shows which workers'
/// work reached it.
struct SmallWindow {
    window: u64,
    /// Whether `capabilities` tells the window (else the model's error is the only news).
    tells: bool,
    refused: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl LlmProvider for SmallWindow {
    fn name(&self) -> &str {
        "w"
    }
    fn price(&self, _model: &str) -> Option<Price> {
        Some(Price::new(1.0, 1.0))
    }
    async fn capabilities(&self, _model: &str) -> Option<crate::llm::Capabilities> {
        self.tells
            .then(|| crate::llm::Capabilities { context_window: Some(self.window), ..Default::default() })
    }
    async fn complete(
        &self,
        model: &str,
        r: &LlmRequest,
        call: &crate::llm::CallInfo,
    ) -> Result<LlmReply, LlmError> {
        let bytes = r.system.as_deref().unwrap_or("").len()
            + r.messages.iter().map(|m| m.content.len()).sum::<usize>();
        let tokens = (bytes as u64).div_ceil(4);
        if tokens + u64::from(r.max_tokens).min(64) > self.window {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(LlmError::PromptTooLong {
                message: "exceeds the available context size".into(),
                prompt_tokens: Some(tokens),
                context_window: Some(self.window),
            });
        }
        let step = call.step.as_str();
        let text = if let Some(n) = step.strip_prefix("worker/") {
            format!("worker/{n} found: {}", "a long finding. ".repeat(200))
        } else if step == "decompose" {
            String::new()
        } else {
            let prompt = r.prompt();
            let mut seen: Vec<&str> = prompt
                .match_indices("worker/")
                .map(|(i, _)| &prompt[i..(i + 10).min(prompt.len())])
                .filter(|id| id[7..].chars().all(|c| c.is_ascii_digit()))
                .collect();
            seen.sort();
            seen.dedup();
            seen.join(" ")
        };
        Ok(LlmReply {
            text,
            usage: Usage::new(tokens, 10),
            model: format!("w/{model}"),
            finish_reason: Some("stop".into()),
            simulated: false,
            tool_calls: Vec::new(),
        })
    }
}

async fn small_window_run(tells: bool) -> (RunResult, Arc<SmallWindow>) {
    let p = Arc::new(SmallWindow { window: 2048, tells, refused: Default::default() });
    let mut o = RunOptions::default().with_provider(p.clone());
    o.policies = quick_policies();
    let (r, _) = run_all(Cascade::new(12, "w/m"), "task", o).await;
    (r, p)
}

fn assert_every_worker_reached_the_top(r: &RunResult) {
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert!(r.agents.iter().all(|a| a.status == AgentStatus::Completed), "no step failed");
    let top = r.final_output.as_deref().unwrap_or_default();
    for n in 1..=12 {
        assert!(top.contains(&format!("worker/{n:03}")), "worker {n} is missing from {top}");
    }
}

/// With the window known, every synthesizer's prompt is sized before the call: the model
/// never refuses one, and each worker's findings still reach the executive.
#[tokio::test]
async fn a_known_small_window_is_fitted_before_any_call() {
    let (r, p) = small_window_run(true).await;
    assert_every_worker_reached_the_top(&r);
    assert_eq!(p.refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Six findings of ~800 tokens each do not fit 2,048: the groups were split (`/a`, `/b`).
    assert!(r.agents.iter().any(|a| a.step.as_str().starts_with("synth/1/001/")), "an extra level");
}

/// With the window unknown, the model's `prompt_too_long` answer triggers the same split,
/// and no step is recorded as failed.
#[tokio::test]
async fn a_prompt_too_long_answer_splits_the_group_instead_of_failing() {
    let (r, p) = small_window_run(false).await;
    assert_every_worker_reached_the_top(&r);
    // Refused once per synthesizer running when it first answered so (two at once); the
    // window it reported sized every prompt after.
    let refused = p.refused.load(std::sync::atomic::Ordering::Relaxed);
    assert!((1..=2).contains(&refused), "{refused} refusals");
}

#[tokio::test]
async fn the_task_context_and_each_subtask_context_reach_the_agents_prompts() {
    let plan = vec![
        Subtask::new("a", "gather data")
            .agent_type("researcher")
            .with_context(serde_json::json!({"region": "EU", "sources": ["eurostat"]})),
        Subtask::new("b", "analyse"),
    ];
    let p = Arc::new(ScriptedProvider::new("t"));
    let task = Task::new("Plan a park").with_context(serde_json::json!({"budget_usd": 2000000}));
    let handle = run(Cascade::new(2, "t/m"), task, options(&p).with_plan(plan)).await.expect("starts");
    let r = handle.result().await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let first = p.prompt("worker/001").unwrap_or_default();
    assert!(first.contains("Plan a park\n\nContext:\n{\n  \"budget_usd\": 2000000\n}"), "{first}");
    assert!(first.contains("Agent type: researcher"), "{first}");
    assert!(first.contains("Subtask context:\n{\n  \"region\": \"EU\""), "{first}");
    let second = p.prompt("worker/002").unwrap_or_default();
    assert!(second.contains("budget_usd") && !second.contains("Subtask context"), "{second}");
    // The plan in the result keeps both.
    assert_eq!(r.plan[0].agent_type.as_deref(), Some("researcher"));
    assert_eq!(r.plan[0].context.as_ref().map(|c| c["region"].clone()), Some(serde_json::json!("EU")));
}

#[tokio::test]
async fn per_agent_totals_and_attached_metadata_are_in_the_result() {
    let p = Arc::new(
        ScriptedProvider::new("t").always_fail("worker/003", crate::llm::LlmError::Auth("no".into())),
    );
    let (r, _) = run_all(
        Cascade::new(3, "t/m"),
        "task",
        options(&p).with_plan(vec![
            Subtask::new("a", "one"),
            Subtask::new("b", "two"),
            Subtask::new("c", "three"),
        ]),
    )
    .await;
    let totals = &r.agent_totals;
    let names: Vec<&str> = totals.iter().map(|t| t.agent.as_str()).collect();
    assert_eq!(names, ["worker"], "{totals:?}");
    let w = &totals[0];
    assert_eq!((w.steps, w.completed, w.failed, w.skipped), (3, 2, 1, 0));
    assert!((w.success_rate - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(w.calls, 3, "one attempt each: an auth error is not retried");
    let workers: Vec<&AgentRecord> = r.agents.iter().filter(|a| a.tier == Tier::Worker).collect();
    assert_eq!(w.input_tokens, workers.iter().map(|a| a.outcome.usage.input_tokens).sum::<u64>());
    assert!((w.cost_usd - workers.iter().map(|a| a.outcome.cost_usd).sum::<f64>()).abs() < 1e-12);
    assert_eq!(w.duration_ms, workers.iter().map(|a| a.outcome.duration_ms).sum::<u64>());
    assert_eq!(crate::result::agent_totals(&r.agents), r.agent_totals, "one function computes them");

    // Metadata an orchestrator attaches, merged key by key; pattern steps group by scope.
    let flow = Flow::new("meta", |ctx, _task| async move {
        let step = StepId::new("pipeline/01-a");
        let out =
            patterns::Agent::llm("t/m", "r").run(&ctx, StepSpec::new(step.clone(), Tier::Agent), "x").await?;
        ctx.set_metadata(&step, serde_json::json!({"score": 0.9}));
        ctx.set_metadata(&step, serde_json::json!({"source": "unit"}));
        Ok(out.to_string())
    });
    let (r, _) = run_all(flow, "task", options(&p)).await;
    let a = agent(&r, "pipeline/01-a");
    assert_eq!(a.metadata.as_deref(), Some(&serde_json::json!({"score": 0.9, "source": "unit"})));
    assert_eq!(r.agent_totals[0].agent, "pipeline");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["agents"][0]["metadata"]["source"], "unit");
    assert_eq!(json["agent_totals"][0]["success_rate"], 1.0);
}

/// The in-memory store says what it keeps: a run's every step, event and its result, with
/// at least the bytes of the outputs it holds.
#[tokio::test]
async fn the_memory_store_says_how_much_it_keeps() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let store = Arc::new(MemoryStore::new());
    assert_eq!(store.held(), crate::store::MemoryHeld::default());
    let (r, events) =
        run_all(Cascade::new(12, "t/m"), "AI in healthcare", options(&p).with_store(store.clone())).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    let held = store.held();
    assert_eq!((held.runs, held.steps, held.events, held.results), (1, 16, events.len(), 1));
    let outputs: usize = r.agents.iter().filter_map(|a| a.output.as_ref()).map(|o| o.len()).sum();
    assert!(held.bytes as usize > 2 * outputs, "the journal's and the result's outputs: {held:?}");
    store.delete_run(&r.run_id).await.unwrap();
    assert_eq!(store.held().steps, 0);
}

//! Whole runs on the scripted provider for the run's time and limits: the deadline, timed-out
//! steps, the budget warning's threshold, the cascade without an executive.

use std::sync::Arc;
use std::time::Duration;

use crate::testing::ScriptedProvider;
use crate::*;

/// The scripted provider with a breaker that never opens: these tests fail steps on purpose,
/// and an open breaker would make the others wait it out.
fn options(provider: &Arc<ScriptedProvider>) -> RunOptions {
    let mut providers = crate::llm::Providers::default();
    providers.insert_with_limits(
        provider.clone(),
        crate::limits::Limits { breaker_failures: 1_000, ..crate::limits::Limits::default() },
    );
    let mut o = RunOptions::default().with_providers(providers);
    o.policies.update_all(|s| {
        s.backoff_base = Duration::from_millis(1);
        s.backoff_max = Duration::from_millis(5);
    });
    o
}

async fn run_all(orch: impl Orchestrator, options: RunOptions) -> (RunResult, Vec<Arc<Event>>) {
    let mut handle = run(orch, Task::new("task"), options).await.expect("run starts");
    let mut events = handle.events().expect("events");
    let result = handle.result().await;
    let mut all = Vec::new();
    while let Some(e) = events.recv().await {
        all.push(e);
    }
    (result, all)
}

fn agent<'a>(r: &'a RunResult, step: &str) -> &'a AgentRecord {
    r.agents.iter().find(|a| a.step.as_str() == step).unwrap_or_else(|| panic!("no step {step}"))
}

#[tokio::test(start_paused = true)]
async fn at_the_deadline_the_run_ends_partial_with_what_it_has() {
    // Of 4 at a time, workers 1-3 answer at once and worker 5 takes a freed slot; worker 4
    // hangs.
    let p = Arc::new(ScriptedProvider::new("t").delay_for("worker/004", Duration::from_secs(3600)));
    let mut o = options(&p);
    o.concurrency = 4;
    o.deadline = Some(Duration::from_secs(30));
    let (r, events) = run_all(Cascade::new(5, "t/m"), o).await;
    assert_eq!(r.status, RunStatus::Partial, "{}", r.stop_reason);
    assert!(r.stop_reason.contains("deadline of 30 s"), "{}", r.stop_reason);
    // The hung call was cancelled and is recorded as timed out, by the deadline.
    let hung = agent(&r, "worker/004");
    assert_eq!(hung.status, AgentStatus::TimedOut);
    assert!(hung.error.as_deref().unwrap_or_default().contains("deadline"), "{:?}", hung.error);
    // What finished is kept; no synthesis was paid for after the deadline.
    assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 4);
    assert_eq!(r.tier(&Tier::Synthesizer).count(), 0);
    let out = r.final_output.clone().expect("the finished workers' outputs");
    assert!(out.contains("Output of worker/001") && out.contains("Output of worker/005"), "{out}");
    assert_eq!(p.calls("worker/004"), 1);
    let finished = events.last().expect("events");
    assert!(
        matches!(&finished.kind, EventKind::RunFinished { status: RunStatus::Partial, stop_reason, .. }
            if stop_reason.contains("deadline")),
        "{finished:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_before_any_output_fails_the_run_and_skips_what_never_started() {
    let p = Arc::new(ScriptedProvider::new("t").delay_for("worker", Duration::from_secs(3600)));
    let mut o = options(&p);
    o.concurrency = 2;
    o.deadline = Some(Duration::from_secs(5));
    let (r, _) = run_all(Cascade::new(4, "t/m"), o).await;
    assert_eq!(r.status, RunStatus::Failed, "{}", r.stop_reason);
    assert!(r.stop_reason.contains("deadline of 5 s"), "{}", r.stop_reason);
    assert_eq!(r.count(&Tier::Worker, AgentStatus::TimedOut), 2, "the two in flight");
    let never = agent(&r, "worker/004");
    assert_eq!(never.status, AgentStatus::Skipped);
    assert!(never.error.as_deref().unwrap_or_default().contains("deadline"), "{:?}", never.error);
}

#[tokio::test]
async fn a_run_that_ends_before_its_deadline_is_untouched() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let mut o = options(&p);
    o.deadline = Some(Duration::from_secs(3600));
    let (r, _) = run_all(Cascade::new(3, "t/m"), o).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_attempts_time_out_is_timed_out_and_counts_as_failed() {
    let p = Arc::new(ScriptedProvider::new("t").delay_for("worker/002", Duration::from_secs(3600)));
    let mut o = options(&p);
    let mut worker = *o.policies.for_tier(&Tier::Worker);
    worker.timeout = Duration::from_secs(1);
    worker.retries = 0;
    o.policies.set(&Tier::Worker, worker);
    let (r, events) = run_all(Cascade::new(3, "t/m"), o).await;
    let w = agent(&r, "worker/002");
    assert_eq!(w.status, AgentStatus::TimedOut);
    assert!(w.status.is_failure());
    assert_eq!(serde_json::to_value(w.status).unwrap(), "timed_out");
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::StepFailed { error_kind, .. } if error_kind == "timeout"))
    );
    // Only the worker tier has the short timeout: the other steps completed.
    assert_eq!(r.count(&Tier::Worker, AgentStatus::Completed), 2);
    assert_eq!(r.status, RunStatus::Partial);
}

#[test]
fn stored_results_read_with_and_without_the_new_status() {
    for (text, status) in [("\"failed\"", AgentStatus::Failed), ("\"timed_out\"", AgentStatus::TimedOut)] {
        assert_eq!(serde_json::from_str::<AgentStatus>(text).unwrap(), status);
    }
}

#[tokio::test]
async fn the_budget_warning_fires_at_the_configured_fraction() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let warnings = |o: RunOptions| async move {
        let (_, events) = run_all(Cascade::new(9, "t/m"), o).await;
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::BudgetWarning { limit, used, max } => Some((limit.clone(), *used, *max)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut o = options(&p);
    o.concurrency = 1;
    o.budget.max_calls = Some(20);
    o.budget_warn_at = 0.25;
    // 12 calls of 20: the warning at the 5th (25%).
    assert_eq!(warnings(o.clone()).await, vec![("calls".to_string(), 5.0, 20.0)]);
    o.budget_warn_at = 0.8;
    assert!(warnings(o.clone()).await.is_empty(), "12 of 20 is below 80%");
    o.budget_warn_at = 0.0;
    assert!(matches!(run(Cascade::new(1, "t/m"), Task::new("t"), o).await, Err(RunError::BadWarnAt(_))));
}

#[tokio::test]
async fn no_executive_keeps_the_syntheses_and_skips_the_executive() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let c = Cascade { synthesize: SynthesizeMode::NoExecutive, ..Cascade::new(12, "t/m") };
    let (r, _) = run_all(c, options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(r.shape, vec![12, 2]);
    assert_eq!(r.tier(&Tier::Synthesizer).count(), 2);
    assert_eq!(r.tier(&Tier::Executive).count(), 0);
    let out = r.final_output.expect("the syntheses");
    assert!(out.contains("Output of synth/1/001") && out.contains("Output of synth/1/002"), "{out}");
    assert!(!out.contains("Output of worker/"), "the workers' outputs are in the syntheses: {out}");

    // With fewer workers than a group, there is nothing to synthesize: the workers' outputs.
    let c = Cascade { synthesize: SynthesizeMode::NoExecutive, ..Cascade::new(3, "t/m") };
    let (r, _) = run_all(c, options(&p)).await;
    assert_eq!(r.agents.len(), 4);
    assert!(r.final_output.expect("combined").contains("Output of worker/003"));
}

fn server_error() -> LlmError {
    LlmError::Server { status: 500, message: "down".into() }
}

fn degraded(events: &[Arc<Event>]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Degraded { degradation } => Some((degradation.from.clone(), degradation.to.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_degrading_cascade_falls_to_simplified_then_to_a_single_agent() {
    let p = Arc::new(
        ScriptedProvider::new("t")
            .always_fail("worker/001", server_error())
            .always_fail("worker/002", server_error())
            .always_fail("degraded/executive", server_error()),
    );
    let c = Cascade { degrade: Some(0.1), ..Cascade::new(10, "t/m") };
    let (r, events) = run_all(c, options(&p)).await;
    let falls =
        vec![("full".to_string(), "simplified".to_string()), ("simplified".into(), "single-agent".into())];
    assert_eq!(degraded(&events), falls);
    let listed: Vec<(String, String)> =
        r.degradations.iter().map(|d| (d.from.clone(), d.to.clone())).collect();
    assert_eq!(listed, falls);
    assert!(r.degradations[0].reason.contains("2 of 10 workers failed"), "{:?}", r.degradations[0]);
    assert!(r.degradations.iter().all(|d| d.kind == DegradeKind::Orchestration));
    // The synthesizer tier never ran; the single agent's answer is the output.
    assert_eq!(r.tier(&Tier::Synthesizer).count(), 0);
    assert_eq!(p.calls("synth"), 0);
    assert_eq!(r.final_output.as_deref(), Some("Output of degraded/single-agent. "));
    assert_eq!(agent(&r, "degraded/single-agent").inputs.len(), 8, "given the 8 workers' outputs");
    assert_eq!(r.status, RunStatus::Partial);
    assert!(r.stop_reason.contains("degraded: full → simplified"), "{}", r.stop_reason);
}

#[tokio::test]
async fn too_few_workers_for_a_synthesis_fall_to_a_single_agent_instead_of_failing() {
    let p = Arc::new(ScriptedProvider::new("t").always_fail("worker/00", server_error()));
    // Workers 1-9 fail, 10-12 succeed: below min_success 0.5.
    let plain = Cascade::new(12, "t/m");
    let (r, _) = run_all(plain.clone(), options(&p)).await;
    assert_eq!(r.status, RunStatus::Failed, "without degrade the run fails: {}", r.stop_reason);
    assert!(r.degradations.is_empty());

    let (r, events) = run_all(Cascade { degrade: Some(0.3), ..plain }, options(&p)).await;
    assert_eq!(degraded(&events), vec![("full".to_string(), "single-agent".to_string())]);
    assert!(r.degradations[0].reason.contains("below min_success"), "{:?}", r.degradations);
    assert_eq!(r.status, RunStatus::Partial, "{}", r.stop_reason);
    assert_eq!(r.final_output.as_deref(), Some("Output of degraded/single-agent. "));
}

#[tokio::test]
async fn a_healthy_degrading_cascade_runs_in_full() {
    let p = Arc::new(ScriptedProvider::new("t"));
    let (r, events) = run_all(Cascade { degrade: Some(0.3), ..Cascade::new(12, "t/m") }, options(&p)).await;
    assert_eq!(r.status, RunStatus::Completed);
    assert!(degraded(&events).is_empty() && r.degradations.is_empty());
    assert_eq!(r.tier(&Tier::Executive).count(), 1);
}

#[tokio::test]
async fn workers_switch_to_the_fast_model_after_three_rate_limits() {
    let limited =
        LlmError::RateLimited { retry_after: Some(Duration::from_millis(1)), message: "busy".into() };
    let p = Arc::new(ScriptedProvider::new("t").fail_first("worker", 1, limited));
    let mut o = options(&p);
    o.concurrency = 1;
    o.load_switch = Some(crate::load::LoadSwitch::new(Tier::Worker, "t/fast", None));
    let (r, events) = run_all(Cascade::new(6, "t/m"), o).await;
    assert_eq!(r.status, RunStatus::Completed, "{}", r.stop_reason);
    assert_eq!(degraded(&events), vec![("t/m".to_string(), "t/fast".to_string())]);
    let d = &r.degradations[0];
    assert_eq!((d.kind, d.tier.clone()), (DegradeKind::Model, Some(Tier::Worker)));
    assert!(d.reason.contains("3 calls rate limited (429)"), "{d:?}");
    assert_eq!(&*agent(&r, "worker/001").outcome.model, "t/m");
    assert_eq!(&*agent(&r, "worker/006").outcome.model, "t/fast");
    // Only the workers switch.
    assert_eq!(&*agent(&r, "synth/1/001").outcome.model, "t/m");
    assert!(r.stop_reason.contains("degraded: worker model t/m → t/fast"), "{}", r.stop_reason);
}

#[tokio::test]
async fn slow_calls_are_signs_of_load_too() {
    let p = Arc::new(ScriptedProvider::new("t").delay_for("worker", Duration::from_millis(40)));
    let mut o = options(&p);
    o.concurrency = 1;
    o.load_switch =
        Some(crate::load::LoadSwitch::new(Tier::Worker, "t/fast", Some(Duration::from_millis(10))));
    let (r, _) = run_all(Cascade::new(5, "t/m"), o).await;
    assert_eq!(r.degradations.len(), 1, "{:?}", r.degradations);
    assert!(r.degradations[0].reason.contains("3 calls slower than 10 ms"), "{:?}", r.degradations);
    assert_eq!(&*agent(&r, "worker/005").outcome.model, "t/fast");
}

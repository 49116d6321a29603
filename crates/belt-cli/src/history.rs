//! The stored runs: `belt resume`, `belt runs …` and `belt dlq …`.

use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use belt_app::{App, RunSpec};
use belt_core::store::{CancelRequest, DeadLetter, LetterWork, RunStore, RunSummary, StoreError};
use belt_core::tools::Tools;
use belt_core::{
    AgentOutput, Ctx, Orchestrator, Outcome, Plan, RunOptions, RunResult, RunStatus, StepError, StepSpec,
    Subtask, Synthesis, Task,
};
use belt_report::Cost;
use belt_store::StoreSpec;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::args::{DlqCommand, ResumeArgs, RunsCommand};
use crate::error::CliError;
use crate::progress::{human, shorten};
use crate::run_cmd::{self, Exec};

/// `belt resume RUN_ID`.
pub async fn resume(mut args: ResumeArgs, spec: &StoreSpec, app: &App) -> Result<i32, CliError> {
    let store = run_cmd::open_store(spec).await?;
    args.run_id = full_id(&*store, &args.run_id, spec).await?;
    let record =
        store.get_run(&args.run_id).await.map_err(usage)?.ok_or_else(|| unknown(&args.run_id, spec))?;
    if let Some(result) = store.get_result(&args.run_id).await.map_err(usage)?
        && result.status != RunStatus::Cancelled
    {
        let unfinished =
            matches!(result.status, RunStatus::Failed | RunStatus::Partial | RunStatus::BudgetExhausted);
        if !(args.retry_failed && unfinished) {
            // Resuming cannot change a finished run: every step it would ask for is recorded.
            let hint = if unfinished {
                format!(
                    "; `belt resume --retry-failed {}` runs its failed and skipped steps again",
                    args.run_id
                )
            } else {
                String::new()
            };
            eprintln!(
                "belt: run {} already finished ({}: {}); nothing to resume{hint}. `belt runs show {}` shows it.",
                args.run_id, result.status, result.stop_reason, args.run_id
            );
            return Ok(0);
        }
    } else if args.retry_failed {
        eprintln!(
            "belt: run {} has not finished; resuming it (--retry-failed is for finished runs)",
            args.run_id
        );
    }
    let run_spec = RunSpec::from_definition(&record.definition).map_err(|e| {
        CliError::Usage(format!(
            "run {} was not started from a run spec (belt run, belt serve, MCP), so it cannot be resumed \
             from the command line ({e})",
            args.run_id
        ))
    })?;
    app.share_through(&*store);
    let prepared = app.prepare(&run_spec)?;
    let exec = Exec {
        store,
        run_id: Some(args.run_id.clone()),
        out: args.out,
        events: args.events,
        json: args.json,
        quiet: args.quiet,
    };
    run_cmd::execute(prepared, exec).await
}

/// `belt runs …`.
pub async fn runs(command: RunsCommand, spec: &StoreSpec) -> Result<i32, CliError> {
    let store = run_cmd::open_store(spec).await?;
    let command = match command {
        RunsCommand::Show { run_id, json } => {
            RunsCommand::Show { run_id: full_id(&*store, &run_id, spec).await?, json }
        }
        RunsCommand::Events { run_id, follow } => {
            store.get_run(&run_id).await.map_err(usage)?.ok_or_else(|| unknown(&run_id, spec))?;
            let mut after = 0;
            let mut out = std::io::stdout().lock();
            let mut events = store.events(&run_id, after).await.map_err(usage)?;
            loop {
                let mut finished = false;
                for e in &events {
                    after = e.seq;
                    finished |= e.kind.type_name() == "run_finished";
                    let _ = writeln!(out, "{}", serde_json::to_string(&**e).expect("events serialize"));
                }
                let _ = out.flush();
                // A queued run is followed too: a worker will start it.
                if !follow || finished || !is_live_or_queued(&*store, &run_id).await? {
                    return Ok(0);
                }
                // Woken as soon as the driver records more (PostgreSQL: LISTEN/NOTIFY).
                events = store.wait_events(&run_id, after, FOLLOW_WAIT).await.map_err(usage)?;
            }
        }
        RunsCommand::Export { run_id } => {
            RunsCommand::Export { run_id: full_id(&*store, &run_id, spec).await? }
        }
        RunsCommand::Trace { run_id, json, width } => {
            RunsCommand::Trace { run_id: full_id(&*store, &run_id, spec).await?, json, width }
        }
        RunsCommand::Rm { run_id } => RunsCommand::Rm { run_id: full_id(&*store, &run_id, spec).await? },
        RunsCommand::Cancel { run_id } => {
            RunsCommand::Cancel { run_id: full_id(&*store, &run_id, spec).await? }
        }
        list => list,
    };
    match command {
        RunsCommand::List { json, limit } => {
            let runs = list(&*store, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs).expect("summaries serialize"));
                return Ok(0);
            }
            if runs.is_empty() {
                println!("no runs in {spec}");
                return Ok(0);
            }
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(vec![
                "run id", "status", "pattern", "task", "steps", "cost", "duration", "started",
            ]);
            for r in runs {
                let cost = listed_cost(&*store, &r).await?;
                table.add_row(vec![
                    r.run_id,
                    r.status.to_string(),
                    r.pattern,
                    shorten(&r.task, 40),
                    r.steps.to_string(),
                    cost.to_string(),
                    r.duration_ms.map_or("—".into(), |d| format!("{:.1}s", d as f64 / 1000.0)),
                    r.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]);
            }
            println!("{table}");
            Ok(0)
        }
        RunsCommand::Show { run_id, json } => {
            let record =
                store.get_run(&run_id).await.map_err(usage)?.ok_or_else(|| unknown(&run_id, spec))?;
            if let Some(result) = store.get_result(&run_id).await.map_err(usage)? {
                if json {
                    println!("{}", serde_json::to_string_pretty(&result).expect("RunResult serializes"));
                } else {
                    println!("{} · {} · {}", result.run_id, result.pattern, shorten(&result.task, 80));
                    println!("{}", agents_table(&result));
                    println!("{}", run_cmd::summary(&result));
                }
                return Ok(0);
            }
            // Not finished: show what is recorded.
            let mut steps = store.load_steps(&run_id).await.map_err(usage)?;
            steps.sort_by(|a, b| (a.tier.rank(), &a.step).cmp(&(b.tier.rank(), &b.step)));
            let status = list(&*store, usize::MAX)
                .await?
                .into_iter()
                .find(|r| r.run_id == run_id)
                .map_or(record.status, |r| r.status);
            if json {
                let view = serde_json::json!({
                    "run_id": run_id, "status": status, "pattern": record.pattern, "task": record.task,
                    "steps": steps,
                });
                println!("{}", serde_json::to_string_pretty(&view).expect("steps serialize"));
                return Ok(0);
            }
            println!("{run_id} · {} · {} · {status}", record.pattern, shorten(&record.task, 80));
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(vec![
                "step",
                "tier",
                "status",
                "model",
                "tokens in",
                "tokens out",
                "cost",
                "time",
            ]);
            for s in &steps {
                table.add_row(vec![
                    s.step.to_string(),
                    s.tier.to_string(),
                    if s.reply.outcome.truncated() { "completed, truncated" } else { "completed" }.into(),
                    s.reply.outcome.model.to_string(),
                    human(s.reply.outcome.usage.input_tokens),
                    human(s.reply.outcome.usage.output_tokens),
                    Cost::of_steps([&s.reply.outcome]).to_string(),
                    format!("{:.1}s", s.reply.outcome.duration_ms as f64 / 1000.0),
                ]);
            }
            println!("{table}");
            let recorded = belt_report::words::count(steps.len() as u64, "step");
            println!("{recorded} recorded; `belt resume {run_id}` continues the run.");
            Ok(0)
        }
        RunsCommand::Events { run_id, follow } => {
            store.get_run(&run_id).await.map_err(usage)?.ok_or_else(|| unknown(&run_id, spec))?;
            let mut after = 0;
            let mut out = std::io::stdout().lock();
            loop {
                let events = store.events(&run_id, after).await.map_err(usage)?;
                let mut finished = false;
                for e in &events {
                    after = e.seq;
                    finished |= e.kind.type_name() == "run_finished";
                    let _ = writeln!(out, "{}", serde_json::to_string(&**e).expect("events serialize"));
                }
                let _ = out.flush();
                if !follow || finished || !is_live(&*store, &run_id).await? {
                    return Ok(0);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        RunsCommand::Export { run_id } => match store.get_result(&run_id).await.map_err(usage)? {
            Some(result) => {
                println!("{}", serde_json::to_string_pretty(&result).expect("RunResult serializes"));
                Ok(0)
            }
            None => {
                store.get_run(&run_id).await.map_err(usage)?.ok_or_else(|| unknown(&run_id, spec))?;
                Err(CliError::Usage(format!(
                    "run {run_id} has no result yet (it has not finished); `belt resume {run_id}` finishes it"
                )))
            }
        },
        RunsCommand::Rm { run_id } => {
            // A damaged record cannot say whether its run is live; removing it is what its
            // error message suggests, so that goes ahead.
            let live = match is_live(&*store, &run_id).await {
                Err(CliError::Damaged(_)) => false,
                other => other?,
            };
            if live {
                return Err(CliError::Usage(format!(
                    "run {run_id} is running; cancel it before removing it"
                )));
            }
            if store.delete_run(&run_id).await.map_err(usage)? {
                println!("removed run {run_id}");
                Ok(0)
            } else {
                Err(unknown(&run_id, spec))
            }
        }
        RunsCommand::Cancel { run_id } => cancel(&*store, &run_id, spec).await,
        RunsCommand::Trace { run_id, json, width } => trace(&*store, &run_id, spec, json, width).await,
    }
}

/// `belt runs trace`: the run's waterfall from its recorded events.
async fn trace(
    store: &dyn RunStore,
    run_id: &str,
    spec: &StoreSpec,
    json: bool,
    width: Option<usize>,
) -> Result<i32, CliError> {
    store.get_run(run_id).await.map_err(usage)?.ok_or_else(|| unknown(run_id, spec))?;
    let events = store.events(run_id, 0).await.map_err(usage)?;
    let result = store.get_result(run_id).await.map_err(usage)?;
    let trace = crate::trace_cmd::Trace::build(run_id, &events, result.as_ref());
    if json {
        println!("{}", serde_json::to_string_pretty(&trace).expect("a trace serializes"));
    } else {
        print!("{}", crate::trace_cmd::render(&trace, width.unwrap_or_else(crate::trace_cmd::width)));
    }
    Ok(0)
}

/// How long one wait of `belt runs events --follow` lasts before it looks at the run again.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

/// `belt runs cancel`: through the store, so it reaches whichever process drives the run.
async fn cancel(store: &dyn RunStore, run_id: &str, spec: &StoreSpec) -> Result<i32, CliError> {
    let record = store.get_run(run_id).await.map_err(usage)?.ok_or_else(|| unknown(run_id, spec))?;
    match store.request_cancel(run_id).await.map_err(usage)? {
        CancelRequest::WasQueued => {
            // No driver will take it now: it ends here, having run nothing.
            let result = record.not_started(RunStatus::Cancelled, "cancelled while queued");
            store.finish_run(&result).await.map_err(usage)?;
            println!("cancelled run {run_id} (it was queued; nothing ran)");
        }
        CancelRequest::WasRunning => println!(
            "asked run {run_id}'s driver to cancel it; it stops within a few seconds, keeping what \
             finished (`belt runs events --follow {run_id}` shows it end)"
        ),
        _ => {
            let status = store.get_result(run_id).await.map_err(usage)?.map(|r| r.status.to_string());
            return Err(CliError::Usage(format!(
                "run {run_id} is not queued or running ({}); nothing to cancel",
                status.unwrap_or_else(|| record.status.to_string())
            )));
        }
    }
    Ok(0)
}

/// `belt dlq …`.
pub async fn dlq(command: DlqCommand, spec: &StoreSpec, app: &App) -> Result<i32, CliError> {
    let store = run_cmd::open_store(spec).await?;
    match command {
        DlqCommand::List { json } => {
            let letters = store.dead_letters().await.map_err(usage)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters).expect("letters serialize"));
                return Ok(0);
            }
            if letters.is_empty() {
                println!("no dead letters in {spec}");
                return Ok(0);
            }
            let mut table = Table::new();
            table.load_preset(UTF8_FULL_CONDENSED);
            table.set_header(vec!["id", "run", "step", "kind", "attempts", "error", "when"]);
            for l in letters {
                table.add_row(vec![
                    l.id.to_string(),
                    l.run_id,
                    l.step.to_string(),
                    l.error_kind,
                    l.attempts.to_string(),
                    shorten(&l.error, 60),
                    l.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]);
            }
            println!("{table}");
            Ok(0)
        }
        DlqCommand::Retry { id, json } => {
            let letter =
                store.dead_letters().await.map_err(usage)?.into_iter().find(|l| l.id == id).ok_or_else(
                    || CliError::Usage(format!("no dead letter {id}; `belt dlq list` shows them")),
                )?;
            // The providers `belt run` uses, as the step's run set them (its simulated seed, say).
            let run_spec = store
                .get_run(&letter.run_id)
                .await
                .map_err(usage)?
                .and_then(|r| RunSpec::from_definition(&r.definition).ok())
                .unwrap_or_default();
            let options =
                RunOptions::default().with_providers(app.providers(&run_spec)?).with_store(store.clone());
            let task = Task::new(format!("retry of {} from run {}", letter.step, letter.run_id));
            let tools = app.tools_for_retry(&run_spec).await.map_err(|e| CliError::Usage(e.to_string()))?;
            let handle = belt_core::run(Retry(letter.clone(), tools), task, options)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let result = handle.result().await;
            if result.status == RunStatus::Completed {
                store.resolve_dead_letter(id).await.map_err(usage)?;
                eprintln!(
                    "belt: dead letter {id} retried successfully as run {}; removed from the queue",
                    result.run_id
                );
            } else {
                // The letter stays; the retry's own failure is not a second letter.
                for l in store.dead_letters().await.map_err(usage)? {
                    if l.run_id == result.run_id {
                        store.resolve_dead_letter(l.id).await.map_err(usage)?;
                    }
                }
                eprintln!("belt: the retry of dead letter {id} failed again: {}", result.stop_reason);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&result).expect("RunResult serializes"));
            } else if let Some(text) = &result.final_output {
                println!("{text}");
            }
            Ok(run_cmd::exit_code(result.status))
        }
    }
}

/// A one-step run that makes a dead letter's call again, through the engine (so it gets
/// retries, limits, events and a record like any step): an LLM call, or a tool call with
/// the tools its run had.
struct Retry(DeadLetter, Tools);

#[async_trait]
impl Orchestrator for Retry {
    fn name(&self) -> &str {
        "dlq-retry"
    }

    fn shape(&self, n: usize) -> Vec<usize> {
        vec![n]
    }

    async fn decompose(&self, _ctx: &Ctx, _task: &Task) -> Result<Plan, StepError> {
        let description = format!("{} of run {}", self.0.step, self.0.run_id);
        Ok(vec![Subtask::new("1", description)].into())
    }

    async fn execute(
        &self,
        ctx: &Ctx,
        step: &StepSpec,
        _task: &Task,
        subtask: &Subtask,
        _deps: &[AgentOutput],
    ) -> Result<AgentOutput, StepError> {
        let spec = StepSpec::new(self.0.step.clone(), self.0.tier.clone()).inputs(step.inputs.clone());
        match &self.0.work {
            LetterWork::Llm(request) => {
                let reply = ctx.llm(spec.clone(), request.clone()).await?;
                Ok(AgentOutput::from_reply(subtask, &spec, reply))
            }
            LetterWork::Tool { tool_call } => {
                let outcome = ctx.tool(spec.clone(), tool_call, &self.1).await?;
                if outcome.is_error {
                    return Err(StepError::Failed { step: spec.id, message: outcome.content });
                }
                Ok(AgentOutput::from_reply(subtask, &spec, belt_core::StepReply::new(outcome.content)))
            }
            LetterWork::Step { .. } => Err(StepError::Failed {
                step: spec.id,
                message: format!(
                    "this step is the work of the program that ran run {}, which only it can do again: \
                     `belt resume --retry-failed {}` (or the program's own resume) runs it",
                    self.0.run_id, self.0.run_id
                ),
            }),
        }
    }

    async fn synthesize(
        &self,
        _ctx: &Ctx,
        _task: &Task,
        _plan: &[Subtask],
        results: &[Outcome],
    ) -> Result<Synthesis, StepError> {
        let text = results.iter().flatten().map(|o| o.text.to_string()).collect::<Vec<_>>().join("\n\n");
        Ok(Synthesis { text })
    }
}

/// The store's runs, with `running` ones whose driver has died on this host shown as
/// `interrupted` at once (the store alone only knows once their lease expires).
async fn list(store: &dyn RunStore, limit: usize) -> Result<Vec<RunSummary>, CliError> {
    let mut runs = store.list_runs(limit).await.map_err(usage)?;
    for r in &mut runs {
        if r.status == RunStatus::Running && r.owner.as_deref().is_some_and(crate::owner::is_dead) {
            r.status = RunStatus::Interrupted;
        }
    }
    Ok(runs)
}

/// What a listed run cost, unpriced calls told apart: the store's summary holds only the
/// sum of the priced ones, so the run's result (or, unfinished, its steps) says how many
/// calls it leaves out.
async fn listed_cost(store: &dyn RunStore, r: &RunSummary) -> Result<Cost, CliError> {
    if let Some(result) = store.get_result(&r.run_id).await.map_err(usage)? {
        return Ok(Cost::of_run(&result));
    }
    let steps = store.load_steps(&r.run_id).await.map_err(usage)?;
    Ok(Cost::of_steps(steps.iter().map(|s| &s.reply.outcome)))
}

/// True while a live process drives the run.
/// Running, or queued for a driver to start.
async fn is_live_or_queued(store: &dyn RunStore, run_id: &str) -> Result<bool, CliError> {
    let status = list(store, usize::MAX).await?.into_iter().find(|r| r.run_id == run_id).map(|r| r.status);
    Ok(matches!(status, Some(RunStatus::Running | RunStatus::Queued)))
}

async fn is_live(store: &dyn RunStore, run_id: &str) -> Result<bool, CliError> {
    Ok(list(store, usize::MAX)
        .await?
        .into_iter()
        .any(|r| r.run_id == run_id && r.status == RunStatus::Running))
}

/// Every agent of a finished run, by tier.
fn agents_table(r: &RunResult) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "step",
        "tier",
        "status",
        "model",
        "attempts",
        "tokens in",
        "tokens out",
        "cost",
        "time",
    ]);
    for a in &r.agents {
        table.add_row(vec![
            a.step.to_string(),
            a.tier.to_string(),
            format!("{:?}{}", a.status, if a.outcome.truncated() { ", truncated" } else { "" })
                .to_lowercase(),
            a.outcome.model.to_string(),
            a.outcome.attempts.to_string(),
            human(a.outcome.usage.input_tokens),
            human(a.outcome.usage.output_tokens),
            Cost::of_steps([&a.outcome]).to_string(),
            format!("{:.1}s", a.outcome.duration_ms as f64 / 1000.0),
        ]);
    }
    table
}

fn usage(e: belt_core::store::StoreError) -> CliError {
    CliError::from(e)
}

/// The id of the run `given` names: the id itself, or — as git takes commits — a unique
/// prefix of at least 4 characters.
pub async fn full_id(store: &dyn RunStore, given: &str, spec: &StoreSpec) -> Result<String, CliError> {
    // A damaged run is named in full by its error message: taken as it is, so that the
    // `belt runs rm` the message suggests reaches it.
    let exists = match store.get_run(given).await {
        Ok(found) => found.is_some(),
        Err(StoreError::Damaged { run_id: Some(id), .. }) if id == given => true,
        Err(e) => return Err(usage(e)),
    };
    if given.len() < 4 || exists {
        return Ok(given.to_string());
    }
    let mut matches: Vec<String> = store
        .list_runs(usize::MAX)
        .await
        .map_err(usage)?
        .into_iter()
        .map(|r| r.run_id)
        .filter(|id| id.starts_with(given))
        .collect();
    match matches.len() {
        0 => Err(unknown(given, spec)),
        1 => Ok(matches.remove(0)),
        n => {
            matches.truncate(5);
            Err(CliError::Usage(format!(
                "`{given}` is the start of {n} run ids ({}{}); give more of it",
                matches.join(", "),
                if n > 5 { ", …" } else { "" }
            )))
        }
    }
}

fn unknown(run_id: &str, spec: &StoreSpec) -> CliError {
    CliError::Usage(format!("no run `{run_id}` in the store {spec}; `belt runs list` shows the runs there"))
}

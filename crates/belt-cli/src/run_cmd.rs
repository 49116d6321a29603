//! `belt run`: translate arguments into a run of the core, show it, write its report.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use belt_core::plan::normalize_plan;
use belt_core::{
    AgentStatus, Budget, Cascade, Document, DocumentWriter, Orchestrator, RunOptions, RunResult, RunStatus,
    Subtask, Task, Tier,
};
use belt_llm::SimConfig;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::args::RunArgs;
use crate::error::CliError;
use crate::progress::{Mode, Progress, human};

/// The model used when none is given.
pub const SIMULATED_MODEL: &str = "simulated/default";

/// Run the task; returns the process exit code.
pub async fn run(args: RunArgs) -> Result<i32, CliError> {
    let task = args.task.trim();
    if task.is_empty() {
        return Err(CliError::Usage("the task is empty; say what the agents should do, e.g. belt run \"Analyze the impact of AI on healthcare\"".into()));
    }
    if args.pattern != "cascade" {
        return Err(CliError::Usage(format!(
            "unknown pattern `{}`; `belt run` supports: cascade",
            args.pattern
        )));
    }
    if !(0.0..=1.0).contains(&args.min_success) {
        return Err(CliError::Usage(format!(
            "--min-success must be between 0 and 1, got {}",
            args.min_success
        )));
    }
    if !(0.0..=1.0).contains(&args.sim_fail_rate) {
        return Err(CliError::Usage(format!(
            "--sim-fail-rate must be between 0 and 1, got {}",
            args.sim_fail_rate
        )));
    }
    if let Some(t) = args.timeout
        && !(t.is_finite() && t > 0.0)
    {
        return Err(CliError::Usage(format!("--timeout must be a positive number of seconds, got {t}")));
    }
    if let Some(b) = args.budget_usd
        && !(b.is_finite() && b > 0.0)
    {
        return Err(CliError::Usage(format!("--budget-usd must be a positive amount, got {b}")));
    }
    if args.budget_tokens == Some(0) || args.budget_calls == Some(0) {
        return Err(CliError::Usage("--budget-tokens and --budget-calls must be at least 1".into()));
    }
    let plan = args.plan.as_deref().map(read_plan).transpose()?;
    let agents = plan.as_ref().map_or(args.agents as usize, Vec::len);

    // Models: --model > $BELT_MODEL (clap reads it) > the simulated provider.
    let base_model = args.model.clone().unwrap_or_else(|| SIMULATED_MODEL.to_string());
    let mut cascade = Cascade::new(agents, &base_model);
    cascade.group_size = args.group_size as usize;
    cascade.synthesize = args.synthesize;
    if let Some(m) = &args.worker_model {
        cascade.worker.model = m.as_str().into();
    }
    if let Some(m) = &args.synthesizer_model {
        cascade.synthesizer.model = m.as_str().into();
    }
    if let Some(m) = &args.executive_model {
        cascade.executive.model = m.as_str().into();
    }
    let mut sim = SimConfig::default().seed(args.seed).fail_rate(args.sim_fail_rate);
    if let Some(ms) = args.sim_latency_ms {
        sim = sim.latency_ms(ms);
    }
    let providers = belt_llm::providers(sim);
    // Every check that needs no file comes before any file is touched.
    cascade.validate(&providers).map_err(CliError::Usage)?;
    prepare_out_dir(&args.out)?;
    let events_file = match &args.events {
        Some(path) => Some(BufWriter::new(File::create(path).map_err(|e| {
            CliError::Usage(format!("cannot write the events file {}: {e}", path.display()))
        })?)),
        None => None,
    };

    let uses_sim = [&cascade.decomposer, &cascade.worker, &cascade.synthesizer, &cascade.executive]
        .iter()
        .any(|t| t.model.starts_with("simulated/"));
    if uses_sim && !args.quiet {
        eprintln!(
            "belt: using the simulated provider ({SIMULATED_MODEL}): outputs are simulated, not written by a \
             language model. Pass --model provider/name for a real one."
        );
    }

    let mut options = RunOptions::default()
        .with_providers(providers)
        .with_documents(Arc::new(MarkdownReport { dir: args.out.clone() }))
        .concurrency(args.concurrency as usize)
        .budget(Budget {
            max_cost_usd: args.budget_usd,
            max_tokens: args.budget_tokens,
            max_calls: args.budget_calls,
        });
    options.parallel = !args.sequential;
    options.min_success = args.min_success;
    options.plan = plan;
    options.policies.update_all(|p| {
        p.retries = args.retries;
        if let Some(t) = args.timeout {
            p.timeout = Duration::from_secs_f64(t);
        }
    });

    let mut handle = belt_core::run(cascade, Task::new(task), options)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let mode = if args.quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Live
    } else {
        Mode::Lines
    };
    let mut events = handle.events().expect("a new handle has its event stream");
    let consumer = tokio::spawn(async move {
        let mut progress = Progress::new(mode);
        let mut file = events_file;
        let mut write_error = None;
        let mut batch = Vec::with_capacity(1024);
        while events.recv_batch(&mut batch, 4096).await > 0 {
            for e in batch.drain(..) {
                if let Some(f) = file.as_mut() {
                    let line = serde_json::to_string(&*e).expect("events serialize");
                    if let Err(err) = writeln!(f, "{line}") {
                        write_error = Some(err);
                        file = None;
                    }
                }
                progress.on_event(&e);
            }
            // A batch at a time, so `tail -f` on the events file follows the run.
            if let Some(f) = file.as_mut()
                && let Err(err) = f.flush()
            {
                write_error = Some(err);
                file = None;
            }
        }
        progress.finish();
        if let Some(mut f) = file
            && let Err(err) = f.flush()
        {
            write_error = Some(err);
        }
        write_error
    });

    // Ctrl-C: stop scheduling and cancel in-flight calls, then write what exists.
    // A second Ctrl-C exits at once.
    let cancel = handle.cancellation();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\nbelt: cancelling: no new calls start; writing what exists (Ctrl-C again to quit now)"
            );
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let result = handle.result().await;
    if let Ok(Some(err)) = consumer.await {
        eprintln!("belt: writing the events file failed: {err}");
    }
    if args.json {
        let json = serde_json::to_string_pretty(&result).expect("RunResult serializes");
        println!("{json}");
    }
    if !args.quiet {
        let summary = summary(&result);
        if args.json {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    }
    Ok(exit_code(result.status))
}

/// 0 completed, 3 partial or budget exhausted, 1 failed, 130 cancelled.
pub fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Completed => 0,
        RunStatus::Partial | RunStatus::BudgetExhausted => 3,
        RunStatus::Cancelled => 130,
        RunStatus::Failed | RunStatus::Running => 1,
    }
}

fn read_plan(path: &Path) -> Result<Vec<Subtask>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read the plan file {}: {e}", path.display())))?;
    let mut plan: Vec<Subtask> = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "the plan file {} is not a JSON array of subtasks ({e}); expected e.g. \
             [{{\"id\": \"1\", \"description\": \"…\", \"dependencies\": []}}]",
            path.display()
        ))
    })?;
    normalize_plan(&mut plan)
        .map_err(|e| CliError::Usage(format!("the plan file {}: {e}", path.display())))?;
    if plan.len() > 100_000 {
        return Err(CliError::Usage(format!(
            "the plan has {} subtasks; at most 100000 are supported",
            plan.len()
        )));
    }
    Ok(plan)
}

/// Create the output directory and prove it is writable before anything is paid for.
fn prepare_out_dir(dir: &Path) -> Result<(), CliError> {
    let unwritable = |e: std::io::Error| {
        CliError::Usage(format!(
            "cannot write reports to {}: {e}; choose another --out directory",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    let probe = dir.join(format!(".belt-write-test-{}", std::process::id()));
    File::create(&probe).map_err(unwritable)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Writes the Markdown report into a directory.
struct MarkdownReport {
    dir: PathBuf,
}

impl DocumentWriter for MarkdownReport {
    fn write(&self, result: &RunResult) -> Result<Vec<Document>, String> {
        let path = self.dir.join(belt_report::file_name(result, "md"));
        std::fs::write(&path, belt_report::markdown(result))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(vec![Document { format: "markdown".into(), path: path.display().to_string() }])
    }
}

/// The table printed at the end of a run.
pub fn summary(r: &RunResult) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "tier",
        "steps",
        "done",
        "failed",
        "skipped",
        "tokens in",
        "tokens out",
        "cost",
        "time",
    ]);
    let mut groups: Vec<(String, Vec<&belt_core::AgentRecord>)> = Vec::new();
    for a in &r.agents {
        let name = match (&a.tier, a.step.as_str().strip_prefix("synth/")) {
            (Tier::Synthesizer, Some(rest)) => {
                format!("synthesizer L{}", rest.split('/').next().unwrap_or("?"))
            }
            (tier, _) => tier.to_string(),
        };
        match groups.last_mut() {
            Some((n, v)) if *n == name => v.push(a),
            _ => groups.push((name, vec![a])),
        }
    }
    let row = |name: &str, v: &[&belt_core::AgentRecord]| {
        let count = |s: AgentStatus| v.iter().filter(|a| a.status == s).count().to_string();
        let first = v.iter().map(|a| a.started_ms).min().unwrap_or(0);
        let last = v.iter().map(|a| a.started_ms + a.duration_ms).max().unwrap_or(0);
        vec![
            name.to_string(),
            v.len().to_string(),
            count(AgentStatus::Completed),
            count(AgentStatus::Failed),
            count(AgentStatus::Skipped),
            human(v.iter().map(|a| a.input_tokens).sum()),
            human(v.iter().map(|a| a.output_tokens).sum()),
            format!("${:.4}", v.iter().map(|a| a.cost_usd).sum::<f64>()),
            format!("{:.1}s", last.saturating_sub(first) as f64 / 1000.0),
        ]
    };
    for (name, v) in &groups {
        table.add_row(row(name, v));
    }
    let all: Vec<&belt_core::AgentRecord> = r.agents.iter().collect();
    let mut total = row("total", &all);
    total[8] = format!("{:.1}s", r.duration_ms as f64 / 1000.0);
    table.add_row(total);
    let mut out = format!("{table}\n");
    out.push_str(&format!("status:  {} ({})\n", r.status, r.stop_reason));
    out.push_str(&format!(
        "usage:   {} calls, {} tokens in, {} tokens out, ${:.4}{}\n",
        r.usage.calls,
        r.usage.input_tokens,
        r.usage.output_tokens,
        r.cost_usd,
        if r.simulated { " (simulated provider, nominal price)" } else { "" }
    ));
    for d in &r.documents {
        out.push_str(&format!("report:  {}\n", d.path));
    }
    out.push_str(&format!("run id:  {}", r.run_id));
    out
}

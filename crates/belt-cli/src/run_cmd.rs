//! `belt run`: translate arguments into a run of the core, show it, write its report. Also
//! the part of `belt resume` that runs a recorded spec again.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use belt_core::patterns::Refine;
use belt_core::plan::normalize_plan;
use belt_core::store::{RunStore, StoreError};
use belt_core::{
    AgentStatus, Budget, Cascade, Document, DocumentWriter, Dynamic, Flow, Orchestrator, RunError,
    RunOptions, RunResult, RunStatus, Subtask, Swarm, Task, Tier,
};
use belt_llm::SimConfig;
use belt_store::StoreSpec;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};

use crate::args::RunArgs;
use crate::error::CliError;
use crate::progress::{Mode, Progress, human};

/// The model used when none is given.
pub const SIMULATED_MODEL: &str = "simulated/default";

/// What a run is, as recorded in the store: the arguments of `belt run` and the plan it
/// was given (the plan itself, not the file, which may change). `belt resume` rebuilds the
/// run from this.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub args: RunArgs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<Subtask>>,
    /// A workflow file's text and inputs (`belt run -f`), recorded so a resume runs the
    /// file as it was, whatever became of it since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<crate::workflow_cmd::WorkflowSpec>,
}

/// How this invocation runs and shows a run (what is not part of the run itself).
pub struct Exec {
    pub store: Arc<dyn RunStore>,
    /// Resume this run; a new run otherwise.
    pub run_id: Option<String>,
    pub out: PathBuf,
    pub events: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

/// `belt run`: check the arguments, then run the task; returns the process exit code.
pub async fn run(mut args: RunArgs, store: &StoreSpec) -> Result<i32, CliError> {
    let plan = args.plan.as_deref().map(read_plan).transpose()?;
    // The model is settled once and recorded, so that a resume uses the same one.
    let choice = crate::models::choose(args.model.as_deref(), &belt_llm::process_env).await;
    if !args.quiet {
        match &choice {
            crate::models::Choice::FromKey { model, variable } => {
                eprintln!("belt: using {model} ({variable} is set); --model or BELT_MODEL chooses another")
            }
            crate::models::Choice::Ollama(model) => {
                eprintln!("belt: using {model} (a local Ollama answered); --model chooses another")
            }
            _ => {}
        }
    }
    args.model = Some(choice.model());
    let spec = RunSpec { args, plan, workflow: None };
    let prepared = prepare(&spec)?;
    let store = open_store(store).await?;
    let exec = Exec {
        store,
        run_id: None,
        out: spec.args.out.clone(),
        events: spec.args.events.clone(),
        json: spec.args.json,
        quiet: spec.args.quiet,
    };
    execute(&spec, prepared, exec).await
}

/// Open the store, or say why not.
pub async fn open_store(spec: &StoreSpec) -> Result<Arc<dyn RunStore>, CliError> {
    belt_store::open(spec).await.map_err(|e| CliError::Usage(format!("cannot open the store {spec}: {e}")))
}

/// The orchestrator and options of a run, from its spec; every check that needs no file.
pub struct Prepared {
    pub orchestrator: Arc<dyn Orchestrator>,
    pub options: RunOptions,
    pub uses_sim: bool,
}

/// Check a spec and build what runs it. Nothing is written and nothing is called.
pub fn prepare(spec: &RunSpec) -> Result<Prepared, CliError> {
    if let Some(workflow) = &spec.workflow {
        return crate::workflow_cmd::prepare(spec, workflow);
    }
    let args = &spec.args;
    let task = args.task.trim();
    if task.is_empty() {
        return Err(CliError::Usage(
            "the task is empty; say what the agents should do, e.g. belt run \"Analyze the impact of AI on healthcare\""
                .into(),
        ));
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
    let agents = spec.plan.as_ref().map_or(args.agents as usize, Vec::len);

    // Models: --model > $BELT_MODEL (clap reads it) > the simulated provider.
    let base_model = args.model.clone().unwrap_or_else(|| SIMULATED_MODEL.to_string());
    let worker_model = args.worker_model.clone().unwrap_or_else(|| base_model.clone());
    let orchestrator: Arc<dyn Orchestrator> = match args.pattern.as_str() {
        "cascade" => {
            let mut cascade = Cascade::new(agents, &base_model);
            cascade.group_size = args.group_size as usize;
            cascade.synthesize = args.synthesize;
            cascade.refine = args.refine as usize;
            cascade.worker.model = worker_model.as_str().into();
            if let Some(m) = &args.synthesizer_model {
                cascade.synthesizer.model = m.as_str().into();
            }
            if let Some(m) = &args.executive_model {
                cascade.executive.model = m.as_str().into();
            }
            Arc::new(cascade)
        }
        "swarm" => Arc::new(Swarm::new(agents, &worker_model)),
        "dynamic" => Arc::new(Dynamic::new(agents, &worker_model)),
        "iterative" => Arc::new(iterative(&worker_model, args.refine)),
        other => {
            return Err(CliError::Usage(format!(
                "unknown pattern `{other}`; `belt run` supports: cascade, swarm, iterative, dynamic"
            )));
        }
    };
    let providers = crate::config::providers(crate::config::get(), sim_config(args), &belt_llm::process_env)?;
    orchestrator.validate(&providers).map_err(CliError::Usage)?;
    let uses_sim = [
        Some(&base_model),
        Some(&worker_model),
        args.synthesizer_model.as_ref(),
        args.executive_model.as_ref(),
    ]
    .into_iter()
    .flatten()
    .any(|m| m.starts_with("simulated/"));

    let mut options = RunOptions::default()
        .with_providers(providers)
        .concurrency(args.concurrency as usize)
        .budget(Budget {
            max_cost_usd: args.budget_usd,
            max_tokens: args.budget_tokens,
            max_calls: args.budget_calls,
        });
    options.parallel = !args.sequential;
    options.min_success = args.min_success;
    options.plan = spec.plan.clone();
    options.cache_ttl = args.cache.map(Duration::from_secs);
    options.review_plan = args.review_plan;
    options.definition = Some(serde_json::to_string(spec).expect("a run spec serializes"));
    options.policies.update_all(|p| {
        p.retries = args.retries;
        if let Some(t) = args.timeout {
            p.timeout = Duration::from_secs_f64(t);
        }
    });
    Ok(Prepared { orchestrator, options, uses_sim })
}

/// `--pattern iterative`: the task drafted, judged and revised until the judge accepts a
/// draft or `refine` drafts (default 3) were written.
fn iterative(model: &str, refine: u32) -> impl Orchestrator + use<> {
    let drafts =
        if refine == 0 { belt_core::patterns::iterative::DEFAULT_MAX_ITERATIONS } else { refine as usize };
    let refine = Refine::llm(model)
        .judge(
            model,
            "a complete, accurate and specific answer to the task, well structured, with no gaps or \
             unsupported claims",
        )
        .max_iterations(drafts);
    Flow::new("iterative", move |ctx, task| {
        let refine = refine.clone();
        async move {
            match refine.run(&ctx, task.description).await {
                Ok(done) => Ok(done.output.to_string()),
                // A stopping run keeps its best draft; any other failure fails the run.
                Err(e) if ctx.stopping().is_some() && e.last_draft.is_some() => {
                    Ok(e.last_draft.map(|d| d.to_string()).unwrap_or_default())
                }
                Err(e) => Err(e.error),
            }
        }
    })
}

/// The simulated provider as the arguments configure it.
pub fn sim_config(args: &RunArgs) -> SimConfig {
    let mut sim = SimConfig::default().seed(args.seed).fail_rate(args.sim_fail_rate);
    if let Some(ms) = args.sim_latency_ms {
        sim = sim.latency_ms(ms);
    }
    sim.call_log = std::env::var_os("BELT_SIM_CALL_LOG").filter(|p| !p.is_empty()).map(Into::into);
    sim
}

/// Run a prepared spec: files, progress, Ctrl-C, report, summary; returns the exit code.
pub async fn execute(spec: &RunSpec, prepared: Prepared, exec: Exec) -> Result<i32, CliError> {
    let Prepared { orchestrator, mut options, uses_sim } = prepared;
    prepare_out_dir(&exec.out)?;
    let events_file = match &exec.events {
        Some(path) => Some(BufWriter::new(File::create(path).map_err(|e| {
            CliError::Usage(format!("cannot write the events file {}: {e}", path.display()))
        })?)),
        None => None,
    };
    if uses_sim && !exec.quiet {
        eprintln!(
            "belt: using the simulated provider ({SIMULATED_MODEL}): outputs are simulated, not written by a \
             language model. Pass --model provider/name for a real one."
        );
    }
    options = options
        .with_documents(Arc::new(ReportWriter::new(exec.out.clone(), &spec.args.format)))
        .with_store(exec.store);
    options.run_id = exec.run_id;
    options.owner = Some(crate::owner::this_process());

    let questions = crate::hitl::Questions::new(&spec.args);
    if spec.args.review_plan && questions.unanswered() && options.run_id.is_none() {
        return Err(CliError::Usage(
            "--review-plan needs someone to approve the plan, and stdin is not a terminal; \
             run it on a terminal, or add --approve-all for an unattended run"
                .into(),
        ));
    }
    options.human = Some(questions.human());
    let task = Task::new(spec.args.task.trim());
    let mut handle = match belt_core::run(orchestrator.clone(), task.clone(), options.clone()).await {
        // The run's last driver died on this machine (a crash, a kill): take its lease over
        // at once instead of waiting for it to expire.
        Err(RunError::Store(StoreError::Busy { owner, .. })) if crate::owner::is_dead(&owner) => {
            options.replace_owner = Some(owner);
            belt_core::run(orchestrator, task, options).await
        }
        other => other,
    }
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let mode = if exec.quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Live
    } else {
        Mode::Lines
    };
    let mut events = handle.events().expect("a new handle has its event stream");
    let mut progress = Progress::new(mode);
    questions.spawn(progress.bars());
    let consumer = tokio::spawn(async move {
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
    print_result(&result, exec.json, exec.quiet);
    Ok(exit_code(result.status))
}

/// The RunResult as JSON on stdout (with `json`), and the summary table unless `quiet`.
pub fn print_result(result: &RunResult, json: bool, quiet: bool) {
    if json {
        let json = serde_json::to_string_pretty(result).expect("RunResult serializes");
        println!("{json}");
    }
    if !quiet {
        let summary = summary(result);
        if json {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    }
}

/// 0 completed, 3 partial or budget exhausted, 1 failed, 130 cancelled.
pub fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Completed => 0,
        RunStatus::Partial | RunStatus::BudgetExhausted => 3,
        RunStatus::Cancelled => 130,
        RunStatus::Failed | RunStatus::Running | RunStatus::Interrupted => 1,
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

/// Writes the run's report into a directory, once per chosen format. Each file is written
/// under a temporary name and renamed, so a reader never sees half a document; its name is
/// a slug of the task plus the run id ([`belt_report::file_name`]), never raw text, so it
/// stays inside the directory.
pub struct ReportWriter {
    pub dir: PathBuf,
    pub formats: Vec<belt_report::Format>,
}

impl ReportWriter {
    /// For a recorded `--format` list (checked when it was given; `md` if unreadable).
    pub fn new(dir: PathBuf, formats: &str) -> Self {
        let formats =
            belt_report::Format::parse_list(formats).unwrap_or_else(|_| vec![belt_report::Format::Markdown]);
        ReportWriter { dir, formats }
    }
}

impl DocumentWriter for ReportWriter {
    fn write(&self, result: &RunResult) -> Result<Vec<Document>, String> {
        let mut written = Vec::new();
        let mut failed = Vec::new();
        for &format in &self.formats {
            let path = self.dir.join(belt_report::file_name(result, format.extension()));
            let tmp = self.dir.join(format!(".{}.tmp-{}", format.extension(), std::process::id()));
            let outcome = File::create(&tmp).map_err(belt_report::ReportError::from).and_then(|file| {
                let mut out = BufWriter::new(file);
                belt_report::render(result, format, &mut out)?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Ok(std::fs::rename(&tmp, &path)?)
            });
            match outcome {
                Ok(()) => {
                    written.push(Document { format: format.name().into(), path: path.display().to_string() })
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    failed.push(format!("{}: {e}", path.display()));
                }
            }
        }
        if failed.is_empty() {
            Ok(written)
        } else {
            let done = written.iter().map(|d| d.path.as_str()).collect::<Vec<_>>().join(", ");
            Err(format!(
                "cannot write {}{}",
                failed.join("; "),
                if done.is_empty() { String::new() } else { format!(" (written: {done})") }
            ))
        }
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
    // Prompt-cache tokens are part of the input; said only when a provider reported some.
    let cache = match (r.usage.cache_read_tokens, r.usage.cache_write_tokens) {
        (0, 0) => String::new(),
        (read, 0) => format!(" ({read} from prompt cache)"),
        (read, write) => format!(" ({read} from prompt cache, {write} written to it)"),
    };
    out.push_str(&format!(
        "usage:   {} calls, {} tokens in{cache}, {} tokens out, ${:.4}{}\n",
        r.usage.calls,
        r.usage.input_tokens,
        r.usage.output_tokens,
        r.cost_usd,
        if r.simulated { " (simulated provider, nominal price)" } else { "" }
    ));
    if r.usage.unpriced_calls > 0 {
        out.push_str(&format!(
            "cost:    unknown for {} call(s) to models without a known price (not in the total); \
             set their prices in belt.toml [prices]\n",
            r.usage.unpriced_calls
        ));
    }
    for d in &r.documents {
        out.push_str(&format!("report:  {}\n", d.path));
    }
    out.push_str(&format!("run id:  {}", r.run_id));
    out
}

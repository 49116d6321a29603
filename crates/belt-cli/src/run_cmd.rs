//! `belt run`: translate arguments into a [`RunSpec`], have belt-app prepare it, show the
//! run, write its report. Also the part of `belt resume` that runs a recorded spec again.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use belt_app::{App, Choice, Prepared, RunSpec, TierPolicy};
use belt_core::store::{RunStore, StoreError};
use belt_core::{AgentStatus, Document, DocumentWriter, RunError, RunResult, RunStatus, Subtask, Tier};
use belt_report::{Cost, words};
use belt_store::StoreSpec;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::args::RunArgs;
use crate::error::CliError;
use crate::progress::{Mode, Progress, human};

/// Where reports go when neither `--out` nor the workflow file says.
pub const DEFAULT_OUT: &str = "belt-out";

/// How this invocation runs and shows a run (what is not part of the run itself).
pub struct Exec {
    pub store: Arc<dyn RunStore>,
    /// Resume this run; a new run otherwise.
    pub run_id: Option<String>,
    /// Overrides the spec's report directory (`belt resume --out`).
    pub out: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

/// The spec of `belt run`'s arguments: the plan and workflow files read, the inputs parsed.
/// Values are checked by [`App::prepare`], not here.
pub fn spec(args: &RunArgs) -> Result<RunSpec, CliError> {
    let (workflow, workflow_format, workflow_file) = match &args.file {
        Some(path) => {
            let (text, format) = crate::workflow_cmd::read(path)?;
            (Some(text), Some(format), Some(path.display().to_string()))
        }
        None => (None, None, None),
    };
    let inputs = crate::workflow_cmd::parse_inputs(&args.input)?;
    if workflow.is_none() && !inputs.is_empty() {
        return Err(CliError::Usage(
            "--input gives a value to a workflow file's input; use it with -f FILE".into(),
        ));
    }
    Ok(RunSpec {
        task: if workflow.is_some() { String::new() } else { args.task.clone() },
        context: args.context.as_deref().map(read_context).transpose()?,
        pattern: args.pattern.clone(),
        // Arguments of an orchestrator a program registered: the CLI runs belt's library only.
        args: None,
        agents: args.agents,
        min_agents: args.min_agents,
        max_agents: args.max_agents,
        strategy: args.strategy,
        plan: args.plan.as_deref().map(read_plan).transpose()?,
        refine: args.refine,
        continue_truncated: args.continue_truncated,
        tools: args.tools.clone(),
        synthesizer_tools: args.synthesizer_tools.clone(),
        executive_tools: args.executive_tools.clone(),
        mcp: mcp_servers(&args.mcp)?,
        model: args.model.clone(),
        worker_model: args.worker_model.clone(),
        synthesizer_model: args.synthesizer_model.clone(),
        executive_model: args.executive_model.clone(),
        concurrency: args.concurrency,
        sequential: args.sequential,
        timeout: args.timeout,
        retries: args.retries,
        policies: tier_policies(args),
        group_size: args.group_size,
        synthesize: args.synthesize,
        min_success: args.min_success,
        budget_usd: args.budget_usd,
        budget_tokens: args.budget_tokens,
        budget_calls: args.budget_calls,
        budget_pool: args.budget_pool.clone(),
        deadline: args.deadline,
        budget_warn_at: args.budget_warn_at,
        degrade: args.degrade,
        degrade_at: args.degrade_at,
        fast_model: args.fast_model.clone(),
        slow_call: args.slow_call,
        review_plan: args.review_plan,
        approve_all: args.approve_all,
        hitl_timeout: args.hitl_timeout,
        cache: args.cache,
        traceparent: args.traceparent.clone(),
        workflow,
        workflow_format,
        workflow_file,
        inputs,
        formats: args.format.clone(),
        out: args.out.clone(),
        seed: args.seed,
        sim_latency_ms: args.sim_latency_ms,
        sim_fail_rate: args.sim_fail_rate,
    })
}

/// `--mcp NAME=COMMAND…|NAME=URL` arguments as the spec's servers.
pub fn mcp_servers(args: &[String]) -> Result<BTreeMap<String, belt_tools::mcp::McpServerSpec>, CliError> {
    let mut servers = BTreeMap::new();
    for arg in args {
        let (name, spec) = belt_tools::mcp::McpServerSpec::parse_cli(arg)
            .map_err(|e| CliError::Usage(format!("--mcp {arg:?}: {e}")))?;
        if servers.insert(name.clone(), spec).is_some() {
            return Err(CliError::Usage(format!(
                "--mcp: the server `{name}` is given twice; give each a name of its own"
            )));
        }
    }
    Ok(servers)
}

/// `--tool-timeout` and the tiers' `--worker-timeout`, `--synthesizer-timeout`,
/// `--executive-timeout` as the spec's `policies` (keys `tool`, `worker`…).
fn tier_policies(args: &RunArgs) -> BTreeMap<String, TierPolicy> {
    let mut policies = BTreeMap::new();
    for (tier, timeout) in [
        ("tool", args.tool_timeout),
        ("worker", args.worker_timeout),
        ("synthesizer", args.synthesizer_timeout),
        ("executive", args.executive_timeout),
    ] {
        if let Some(timeout) = timeout {
            policies.insert(tier.to_string(), TierPolicy { timeout: Some(timeout), retries: None });
        }
    }
    policies
}

/// `belt run` (with or without `-f FILE`): check the arguments, then run; returns the
/// process exit code.
pub async fn run(args: RunArgs, store_spec: &StoreSpec, app: &App) -> Result<i32, CliError> {
    let mut spec = spec(&args)?;
    // BELT_MODEL is a default: the model of a task that names none, and of a workflow file's
    // agents only where the file names none (--model, in the spec, replaces the file's).
    let env_model = app.var("BELT_MODEL").filter(|m| !m.trim().is_empty());
    if spec.workflow.is_none() && spec.model.is_none() {
        spec.model = env_model.clone();
    }
    // The model is settled once and recorded, so that a resume uses the same one.
    if spec.model.is_some() || app.needs_default_model(&spec) {
        let choice = app.choose_model(spec.model.as_deref().or(env_model.as_deref())).await;
        if !args.quiet {
            say_choice(&choice);
        }
        spec.model = Some(choice.model());
    }
    if args.detach && *store_spec == StoreSpec::Memory {
        return Err(CliError::Usage(
            "--detach queues the run in the store for `belt worker`s, and a memory store ends with this \
             process; use --store postgres://… (or sqlite://PATH for workers on this host)"
                .into(),
        ));
    }
    let store = open_store(store_spec).await?;
    app.share_through(&*store);
    let prepared = app.prepare(&spec)?;
    if !args.quiet && args.model.is_some() {
        say_kept_models(app, &spec);
    }
    if args.detach {
        return detach(&prepared, &*store, store_spec, args.quiet).await;
    }
    let exec =
        Exec { store, run_id: None, out: None, events: args.events, json: args.json, quiet: args.quiet };
    execute(prepared, exec).await
}

/// `belt run --detach`: record the run as queued, for a worker to drive, and print its id.
async fn detach(
    prepared: &Prepared,
    store: &dyn RunStore,
    spec: &StoreSpec,
    quiet: bool,
) -> Result<i32, CliError> {
    let run_id = uuid::Uuid::now_v7().to_string();
    store.put_run(&prepared.queued_record(&run_id, chrono::Utc::now())).await?;
    println!("{run_id}");
    if !quiet {
        eprintln!(
            "belt: queued run {run_id} in {spec}; a `belt worker` on this store runs it. Follow it with \
             `belt runs events --follow {run_id}`; its report: `belt report {run_id} --format md,html`"
        );
    }
    Ok(0)
}

/// Say on stderr how the default model was found, when it was not named.
fn say_choice(choice: &Choice) {
    match choice {
        Choice::FromKey { model, variable } => {
            eprintln!("belt: using {model} ({variable} is set); --model or BELT_MODEL chooses another")
        }
        Choice::Ollama(model) => {
            eprintln!("belt: using {model} (a local Ollama answered); --model chooses another")
        }
        _ => {}
    }
}

/// With a workflow file, `--model` takes the place of the file's `defaults.model`; agents
/// and tiers that name their own model keep it: said, so that a run is not on a model the
/// user did not expect.
fn say_kept_models(app: &App, spec: &RunSpec) {
    let kept = app.models_the_file_keeps(spec);
    if kept.is_empty() {
        return;
    }
    let list: Vec<String> = kept.iter().map(|(who, model)| format!("{who} ({model})")).collect();
    eprintln!(
        "belt: --model replaces the file's defaults.model; these keep the model the file gives them: {} \
         (a cascade's tiers take --worker-model, --synthesizer-model, --executive-model; an agent's own \
         `model` is changed in the file)",
        list.join(", ")
    );
}

/// Open the store, or say why not.
pub async fn open_store(spec: &StoreSpec) -> Result<Arc<dyn RunStore>, CliError> {
    belt_store::open(spec).await.map_err(|e| CliError::Usage(format!("cannot open the store {spec}: {e}")))
}

/// Run a prepared spec: files, progress, Ctrl-C, report, summary; returns the exit code.
pub async fn execute(prepared: Prepared, exec: Exec) -> Result<i32, CliError> {
    let mut prepared = prepared;
    // MCP servers start now, before anything is paid for: one that cannot start ends here.
    prepared.start_tools().await.map_err(|e| CliError::Usage(e.to_string()))?;
    let Prepared { spec, task, orchestrator, mut options, formats, simulated, tools: _, rebuild: _ } =
        prepared;
    let out = exec.out.clone().or_else(|| spec.out.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_OUT));
    prepare_out_dir(&out)?;
    // Report paths are recorded absolute, so `belt runs show` from elsewhere finds them.
    let out = std::path::absolute(&out).unwrap_or(out);
    let events_file = match &exec.events {
        Some(path) => Some(BufWriter::new(File::create(path).map_err(|e| {
            CliError::Usage(format!("cannot write the events file {}: {e}", path.display()))
        })?)),
        None => None,
    };
    if simulated && !exec.quiet {
        eprintln!(
            "belt: using the simulated provider ({}): outputs are simulated, not written by a \
             language model. Pass --model provider/name for a real one.",
            belt_app::SIMULATED_MODEL
        );
    }
    options = options.with_documents(Arc::new(ReportWriter { dir: out, formats })).with_store(exec.store);
    let options_store = options.store.clone();
    let resuming = exec.run_id.is_some();
    options.run_id = exec.run_id;
    options.owner = Some(crate::owner::this_process());

    let questions = crate::hitl::Questions::new(spec.approve_all, spec.hitl_timeout);
    if spec.review_plan && questions.unanswered() && options.run_id.is_none() {
        return Err(CliError::Usage(
            "--review-plan needs someone to approve the plan, and stdin is not a terminal; \
             run it on a terminal, or add --approve-all for an unattended run"
                .into(),
        ));
    }
    options.human = Some(questions.human());
    let mut handle = match belt_core::run(orchestrator.clone(), task.clone(), options.clone()).await {
        // The run's last driver died on this machine (a crash, a kill): take its lease over
        // at once instead of waiting for it to expire.
        Err(RunError::Store(StoreError::Busy { owner, .. })) if crate::owner::is_dead(&owner) => {
            options.replace_owner = Some(owner);
            belt_core::run(orchestrator, task, options).await
        }
        other => other,
    }
    .map_err(|e| match e {
        RunError::Store(e @ StoreError::Damaged { .. }) => CliError::from(e),
        e => CliError::Usage(e.to_string()),
    })?;
    let mode = if exec.quiet {
        Mode::Quiet
    } else if std::io::stderr().is_terminal() {
        Mode::Live
    } else {
        Mode::Lines
    };
    let mut events = handle.events().expect("a new handle has its event stream");
    let traces = crate::otel::feed(options_store);
    let mut progress = Progress::new(mode, resuming);
    questions.spawn(progress.bars());
    let consumer = tokio::spawn(async move {
        let mut file = events_file;
        let mut write_error = None;
        let mut batch = Vec::with_capacity(1024);
        while events.recv_batch(&mut batch, 4096).await > 0 {
            if let Some(traces) = &traces {
                traces.on_events(&batch);
            }
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

    // Ctrl-C or SIGTERM: stop scheduling and cancel in-flight calls, then write what exists.
    // A second one exits at once.
    let cancel = handle.cancellation();
    let (stopped_by, mut heard) = tokio::sync::oneshot::channel();
    let mut signals = crate::signals::Signals::new();
    tokio::spawn(async move {
        let first = signals.next().await;
        let _ = stopped_by.send(first);
        eprintln!("\nbelt: cancelling: no new calls start; writing what exists (Ctrl-C again to quit now)");
        cancel.cancel();
        std::process::exit(signals.next().await.exit_code());
    });

    let result = handle.result().await;
    let events_lost = consumer.await.ok().flatten();
    print_result(&result, exec.json, exec.quiet);
    if let Some(err) = events_lost {
        // The run is recorded; the file the user asked for is not whole.
        return Err(CliError::Lost(format!(
            "writing the events file failed: {err}; the run's events are in the store (`belt runs events {}`)",
            result.run_id
        )));
    }
    Ok(match heard.try_recv() {
        Ok(signal) if result.status == RunStatus::Cancelled => signal.exit_code(),
        _ => exit_code(result.status),
    })
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
        // Failed, queued, running, interrupted, and any status added later.
        _ => 1,
    }
}

/// The subtasks of a plan file (checked, like every plan, by [`App::prepare`]).
fn read_plan(path: &Path) -> Result<Vec<Subtask>, CliError> {
    let text = belt_app::files::read_text(path, MAX_PLAN_BYTES)
        .map_err(|e| CliError::Usage(format!("cannot read the plan file: {e}")))?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "the plan file {} is not a JSON array of subtasks ({e}); expected e.g. \
             [{{\"id\": \"1\", \"description\": \"…\", \"dependencies\": []}}]",
            path.display()
        ))
    })
}

/// `--context`: JSON (an object or array, given inline or in a file), else text (inline
/// or the file's), which keeps meaning what `--context TEXT` always meant. Text that starts
/// like JSON must be JSON, so a typo in it is an error rather than text agents would read.
fn read_context(arg: &str) -> Result<serde_json::Value, CliError> {
    let path = Path::new(arg);
    let (text, origin) = if !arg.trim_start().starts_with(['{', '[']) && path.is_file() {
        let text = belt_app::files::read_text(path, MAX_CONTEXT_BYTES)
            .map_err(|e| CliError::Usage(format!("cannot read the --context file: {e}")))?;
        (text, format!("the --context file {}", path.display()))
    } else {
        (arg.to_string(), "--context".to_string())
    };
    if !text.trim_start().starts_with(['{', '[']) {
        return Ok(serde_json::Value::String(text));
    }
    serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "{origin} starts like JSON but is not JSON ({e}); give a JSON object such as {{\"customer\": {{\"tier\": \"gold\"}}}}, or plain text"
        ))
    })
}

/// The largest `--context` file read.
const MAX_CONTEXT_BYTES: u64 = 1 << 20;

/// The largest plan file read (100,000 subtasks of a few hundred bytes).
const MAX_PLAN_BYTES: u64 = 64 << 20;

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
    // Steps stopped by a cancellation get a column of their own, only when there are some.
    let cancelled = r.agents.iter().any(crate::progress::was_cancelled);
    let mut header = vec!["tier", "steps", "done", "failed", "cancelled", "skipped"];
    header.extend(["tokens in", "tokens out", "cost", "time"]);
    if !cancelled {
        header.remove(4);
    }
    table.set_header(header);
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
        // `failed` counts the timed-out steps too (each is named `timed_out` in the result).
        let count = |s: AgentStatus| {
            let is = |a: &AgentStatus| if s == AgentStatus::Failed { a.is_failure() } else { *a == s };
            v.iter().filter(|a| is(&a.status) && !crate::progress::was_cancelled(a)).count().to_string()
        };
        let first = v.iter().map(|a| a.started_ms).min().unwrap_or(0);
        let last = v.iter().map(|a| a.started_ms + a.outcome.duration_ms).max().unwrap_or(0);
        let stopped = v.iter().filter(|a| crate::progress::was_cancelled(a)).count().to_string();
        let mut row = vec![
            name.to_string(),
            v.len().to_string(),
            count(AgentStatus::Completed),
            count(AgentStatus::Failed),
            stopped,
            count(AgentStatus::Skipped),
            human(v.iter().map(|a| a.outcome.usage.input_tokens).sum()),
            human(v.iter().map(|a| a.outcome.usage.output_tokens).sum()),
            Cost::of_steps(v.iter().map(|a| &a.outcome)).to_string(),
            format!("{:.1}s", last.saturating_sub(first) as f64 / 1000.0),
        ];
        if !cancelled {
            row.remove(4);
        }
        row
    };
    for (name, v) in &groups {
        table.add_row(row(name, v));
    }
    let all: Vec<&belt_core::AgentRecord> = r.agents.iter().collect();
    let mut total = row("total", &all);
    if let Some(time) = total.last_mut() {
        *time = format!("{:.1}s", r.duration_ms as f64 / 1000.0);
    }
    // The run's own figures: they count unpriced calls of steps the table may not list.
    if let Some(cost) = total.iter_mut().rev().nth(1) {
        *cost = Cost::of_run(r).to_string();
    }
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
        "usage:   {} calls, {} tokens in{cache}, {} tokens out, {}{}\n",
        r.usage.calls,
        r.usage.input_tokens,
        r.usage.output_tokens,
        Cost::of_run(r),
        if r.simulated { " (simulated provider, nominal price)" } else { "" }
    ));
    // A resumed run: what came from the record and the cache, and what this segment paid.
    let replayed = r.agents.iter().filter(|a| a.outcome.replayed).count();
    let cached = r.agents.iter().filter(|a| a.outcome.cached).count();
    if replayed > 0 {
        let segment: Vec<_> = r.agents.iter().filter(|a| !a.outcome.replayed).collect();
        let paid = Cost::of_steps(segment.iter().map(|a| &a.outcome));
        let calls: u64 = segment.iter().map(|a| u64::from(a.outcome.attempts)).sum();
        out.push_str(&format!(
            "resumed: {} replayed from the record (not called again), {} run now; \
             this segment: {}, {paid} (the usage above is the whole run's)\n",
            words::count(replayed as u64, "step"),
            segment.len(),
            words::count(calls, "call"),
        ));
    }
    if cached > 0 {
        let steps = words::count(cached as u64, "step");
        out.push_str(&format!("cache:   {steps} answered from the response cache, at no cost\n"));
    }
    if r.usage.unpriced_calls > 0 {
        out.push_str(&unpriced_line(r));
    }
    if let Some(note) = belt_report::truncated_note(r) {
        out.push_str(&format!("warning: {note}\n"));
    }
    for d in &r.documents {
        out.push_str(&format!("report:  {}\n", d.path));
    }
    out.push_str(&format!("run id:  {}", r.run_id));
    // A stopped run keeps what it paid for: say how to go on.
    if matches!(r.status, RunStatus::Cancelled | RunStatus::Interrupted) {
        out.push_str(&format!("\nresume:  belt resume {}", r.run_id));
    }
    out
}

/// Which models left calls unpriced, and the `belt.toml` lines that price them.
fn unpriced_line(r: &RunResult) -> String {
    let mut models: Vec<&str> =
        r.agents.iter().filter(|a| a.outcome.unpriced).map(|a| &*a.outcome.model).collect();
    models.sort_unstable();
    models.dedup();
    let example = models.first().copied().unwrap_or("provider/model");
    format!(
        "cost:    unknown for {} to {} without a known price ({}), not in the total; price them in \
         belt.toml: [prices.\"{example}\"] input = 0.0, output = 0.0 (USD per million tokens)\n",
        words::count(r.usage.unpriced_calls, "call"),
        if models.len() == 1 { "a model" } else { "models" },
        if models.is_empty() { "not recorded".to_string() } else { models.join(", ") },
    )
}

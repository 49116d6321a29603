//! Workflow files on the command line: `belt run -f FILE`, `belt validate`, `belt schema`,
//! `belt init`. The file is parsed, checked and translated by belt-workflow; the run
//! itself is `belt run`'s (progress, events, report, store, resume).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use belt_core::limits::Limits;
use belt_core::{Budget, RunOptions};
use belt_llm::providers::BUILTIN_PROVIDERS;
use belt_store::StoreSpec;
use belt_workflow::{Format, ValidationContext, Workflow};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::args::RunArgs;
use crate::error::CliError;
use crate::run_cmd::{self, Exec, Prepared, RunSpec, SIMULATED_MODEL};

/// A workflow run's definition: the file's text as it was run, and the inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowSpec {
    /// The file's name, for diagnostics.
    pub origin: String,
    pub format: Format,
    pub text: String,
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The workflow file (YAML or TOML).
    pub file: PathBuf,
    /// Inputs to check too, as KEY=VALUE (repeatable): required ones missing, unknown ones.
    #[arg(long = "input", value_name = "KEY=VALUE")]
    pub input: Vec<String>,
    /// The diagnostics as a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The starter: research (a cascade), pipeline (sequential steps), review-dag (a DAG),
    /// support-router (a router).
    #[arg(long, short, default_value = "research", value_parser = parse_template)]
    pub template: String,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

fn parse_template(s: &str) -> Result<String, String> {
    match belt_workflow::template(s) {
        Some(t) => Ok(t.name.to_string()),
        None => {
            let names: Vec<&str> = belt_workflow::templates().iter().map(|t| t.name).collect();
            Err(format!("unknown template `{s}`; templates: {}", names.join(", ")))
        }
    }
}

/// Read a workflow file (at most [`belt_workflow::MAX_FILE_BYTES`]) and its format.
fn read(path: &Path) -> Result<(String, Format), CliError> {
    let cannot =
        |e: std::io::Error| CliError::Usage(format!("cannot read the workflow {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > belt_workflow::MAX_FILE_BYTES as u64 {
        return Err(CliError::Usage(format!(
            "{}: the file is {len} bytes; workflow files are limited to {} bytes (1 MiB)",
            path.display(),
            belt_workflow::MAX_FILE_BYTES
        )));
    }
    let text = std::fs::read_to_string(path).map_err(cannot)?;
    let format = Format::from_path(path).unwrap_or_else(|| Format::sniff(&text));
    Ok((text, format))
}

/// `KEY=VALUE` pairs.
fn parse_inputs(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CliError::Usage(format!(
                "--input `{pair}` is not KEY=VALUE, e.g. --input topic=\"solar power\""
            )));
        };
        if out.insert(k.trim().to_string(), v.to_string()).is_some() {
            return Err(CliError::Usage(format!("--input {} is given twice", k.trim())));
        }
    }
    Ok(out)
}

/// The providers a model may name: the built-in ones, those of belt.toml, the simulated one.
fn known_providers() -> Vec<String> {
    let mut names: Vec<String> = BUILTIN_PROVIDERS.iter().map(|p| p.name.to_string()).collect();
    names.extend(crate::config::get().providers.keys().cloned());
    names.push("simulated".into());
    names.sort();
    names.dedup();
    names
}

fn context(inputs: BTreeMap<String, String>) -> ValidationContext {
    ValidationContext {
        providers: Some(known_providers()),
        inputs: Some(inputs),
        ..ValidationContext::default()
    }
}

/// `belt validate FILE`: 0 when valid, 2 when not.
pub fn validate(args: ValidateArgs) -> Result<i32, CliError> {
    let (text, format) = read(&args.file)?;
    let inputs = parse_inputs(&args.input)?;
    let origin = args.file.display().to_string();
    // Without --input, missing required inputs are not a mistake of the file.
    let mut cx = context(inputs.clone());
    if args.input.is_empty() {
        cx.inputs = None;
    }
    let diagnostics = belt_workflow::check(&text, format, &origin, &cx);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diagnostics).expect("diagnostics serialize"));
    } else if diagnostics.is_empty() {
        let w = Workflow::parse(&text, format, &origin).map_err(|d| CliError::Usage(d.to_string()))?;
        let f = w.file();
        let what = if f.pattern.has_steps() {
            format!("{} steps, {} agents", f.steps.len(), f.agents.len())
        } else {
            format!("pattern {}", f.pattern.as_str())
        };
        println!("{origin}: valid ({}: {what})", f.name);
    } else {
        for d in diagnostics.iter() {
            println!("{d}");
        }
        let n = diagnostics.len();
        eprintln!("belt: {origin}: {n} error{}", if n == 1 { "" } else { "s" });
    }
    Ok(if diagnostics.is_empty() { 0 } else { 2 })
}

/// `belt schema`: the JSON Schema of workflow files on stdout.
pub fn schema() -> i32 {
    println!("{}", serde_json::to_string_pretty(&belt_workflow::schema()).expect("the schema serializes"));
    0
}

/// `belt init`: write a starter file into the current directory.
pub fn init(args: InitArgs) -> Result<i32, CliError> {
    let t = belt_workflow::template(&args.template)
        .ok_or_else(|| CliError::Usage(format!("unknown template `{}`", args.template)))?;
    let path = Path::new(t.file_name);
    if path.exists() && !args.force {
        return Err(CliError::Usage(format!(
            "{} already exists; pass --force to overwrite it, or run it: belt run -f {}",
            t.file_name, t.file_name
        )));
    }
    std::fs::write(path, t.text)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    println!("wrote {} ({}). Run it: belt run -f {}", t.file_name, t.description, t.file_name);
    Ok(0)
}

/// `belt run -f FILE`: read and check the file, then run it as `belt run` runs a task.
pub async fn run(mut args: RunArgs, store: &StoreSpec) -> Result<i32, CliError> {
    let path = args.file.clone().ok_or_else(|| CliError::Usage("--file is missing".into()))?;
    let (text, format) = read(&path)?;
    let inputs = parse_inputs(&args.input)?;
    let workflow = WorkflowSpec { origin: path.display().to_string(), format, text, inputs };
    check(&workflow)?;
    // The model of agents without one, settled once and recorded, as `belt run` does.
    if args.model.is_some() || needs_default_model(&bind(&workflow, &args)?) {
        let choice = crate::models::choose(args.model.as_deref(), &belt_llm::process_env).await;
        args.model = Some(choice.model());
    }
    let spec = spec(args, workflow)?;
    let prepared = run_cmd::prepare(&spec)?;
    let store = run_cmd::open_store(store).await?;
    let exec = Exec {
        store,
        run_id: None,
        out: spec.args.out.clone(),
        events: spec.args.events.clone(),
        json: spec.args.json,
        quiet: spec.args.quiet,
    };
    run_cmd::execute(&spec, prepared, exec).await
}

/// Every mistake of the file at once (with its inputs); nothing runs when there is one.
fn check(workflow: &WorkflowSpec) -> Result<(), CliError> {
    let cx = context(workflow.inputs.clone());
    let diagnostics = belt_workflow::check(&workflow.text, workflow.format, &workflow.origin, &cx);
    if diagnostics.is_empty() { Ok(()) } else { Err(invalid(&workflow.origin, &diagnostics)) }
}

/// The spec of a workflow run — `belt run -f`, or a server's request with a `workflow`
/// text: the file checked and bound to its inputs, the run's task from the file, and its
/// outputs unless `args` chose others. `args.model` serves agents that name no model.
pub fn spec(mut args: RunArgs, workflow: WorkflowSpec) -> Result<RunSpec, CliError> {
    check(&workflow)?;
    let bound = bind(&workflow, &args)?;
    args.task = bound.task().map_err(CliError::Usage)?.description;
    let settings = bound.settings();
    if args.out == Path::new("belt-out")
        && let Some(dir) = &settings.out_dir
    {
        args.out = PathBuf::from(dir);
    }
    if args.format == "md" && !settings.formats.is_empty() {
        let formats: Vec<&str> = settings.formats.iter().map(|f| f.as_str()).collect();
        args.format = crate::args::parse_formats(&formats.join(",")).map_err(CliError::Usage)?;
    }
    Ok(RunSpec { args, plan: None, workflow: Some(workflow) })
}

/// True when some agent or tier of the file names no model (so the caller's default is used).
fn needs_default_model(bound: &belt_workflow::Bound) -> bool {
    let f = bound.file();
    if f.defaults.model.is_some() {
        return false;
    }
    match f.pattern {
        belt_workflow::PatternKind::Cascade => {
            let t = &f.defaults.models;
            [&t.decomposer, &t.worker, &t.synthesizer, &t.executive].iter().any(|m| m.is_none())
        }
        belt_workflow::PatternKind::Swarm => f.swarm.as_ref().is_none_or(|s| s.model.is_none()),
        _ => f.agents.iter().any(|a| a.model.is_none()),
    }
}

fn invalid(origin: &str, diagnostics: &belt_workflow::Diagnostics) -> CliError {
    let n = diagnostics.len();
    CliError::Usage(format!(
        "{origin} has {n} error{}; nothing was run:\n{diagnostics}",
        if n == 1 { "" } else { "s" }
    ))
}

fn bind(workflow: &WorkflowSpec, args: &RunArgs) -> Result<belt_workflow::Bound, CliError> {
    let w = Workflow::parse(&workflow.text, workflow.format, &workflow.origin)
        .map_err(|d| invalid(&workflow.origin, &d))?;
    let bound = w.bind(workflow.inputs.clone()).map_err(|d| invalid(&workflow.origin, &d))?;
    Ok(bound.with_default_model(args.model.clone().unwrap_or_else(|| SIMULATED_MODEL.to_string())))
}

/// The orchestrator and options of a workflow run (also on resume, from the record).
///
/// The file's settings apply over `belt run`'s defaults; the options the command line
/// gives explicitly (`--budget-*`, `--timeout`) win over the file.
pub fn prepare(spec: &RunSpec, workflow: &WorkflowSpec) -> Result<Prepared, CliError> {
    let args = &spec.args;
    if !(0.0..=1.0).contains(&args.sim_fail_rate) {
        return Err(CliError::Usage(format!(
            "--sim-fail-rate must be between 0 and 1, got {}",
            args.sim_fail_rate
        )));
    }
    let bound = bind(workflow, args)?;
    let settings = bound.settings();
    let mut providers =
        crate::config::providers(crate::config::get(), run_cmd::sim_config(args), &belt_llm::process_env)?;
    for (name, limits) in &settings.providers {
        // Limits of a provider this machine has no key for are moot: a model of it would
        // fail the provider check below, and a file is shared between people with
        // different keys.
        let Ok((provider, _)) = providers.resolve(&format!("{name}/-")) else { continue };
        let provider = provider.clone();
        let current = providers.limiter(name).map(|l| *l.limits()).unwrap_or_default();
        let merged = Limits {
            max_concurrency: limits.max_concurrency.or(current.max_concurrency),
            rpm: limits.rpm.or(current.rpm),
            tpm: limits.tpm.or(current.tpm),
            ..current
        };
        providers.insert_with_limits(provider, merged);
    }
    let orchestrator = bound.orchestrator();
    belt_core::Orchestrator::validate(&orchestrator, &providers).map_err(CliError::Usage)?;
    let uses_sim = bound.models().iter().any(|m| m.split(',').any(|m| m.starts_with("simulated/")));

    let mut options = RunOptions::default().with_providers(providers).concurrency(args.concurrency as usize);
    options.policies.update_all(|p| p.retries = args.retries);
    settings.apply(&mut options);
    let explicit = Budget {
        max_cost_usd: args.budget_usd,
        max_tokens: args.budget_tokens,
        max_calls: args.budget_calls,
    };
    if let Some(v) = explicit.max_cost_usd {
        options.budget.max_cost_usd = Some(v);
    }
    if let Some(v) = explicit.max_tokens {
        options.budget.max_tokens = Some(v);
    }
    if let Some(v) = explicit.max_calls {
        options.budget.max_calls = Some(v);
    }
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t > 0.0) {
            return Err(CliError::Usage(format!("--timeout must be a positive number of seconds, got {t}")));
        }
        options.policies.update_all(|p| p.timeout = Duration::from_secs_f64(t));
    }
    options.cache_ttl = args.cache.map(Duration::from_secs);
    options.definition = Some(serde_json::to_string(spec).expect("a run spec serializes"));
    Ok(Prepared { orchestrator: Arc::new(orchestrator), options, uses_sim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_key_value_pairs() {
        let got = parse_inputs(&["a=1".into(), "b = x=y".into()]).unwrap();
        assert_eq!(got["a"], "1");
        assert_eq!(got["b"], " x=y");
        assert!(parse_inputs(&["novalue".into()]).is_err());
        assert!(parse_inputs(&["a=1".into(), "a=2".into()]).is_err());
    }
}

//! Workflow files on the command line: reading them for `belt run -f FILE`, and `belt
//! validate`, `belt schema`, `belt init`. The file is checked and run by belt-app (through
//! belt-workflow), as any spec; the run itself is `belt run`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use belt_app::App;
use belt_report::words::count;
use belt_workflow::{Format, Workflow};
use clap::Args;

use crate::error::CliError;

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
pub fn read(path: &Path) -> Result<(String, Format), CliError> {
    let text = belt_app::files::read_text(path, belt_workflow::MAX_FILE_BYTES as u64).map_err(|e| match e {
        belt_app::files::ReadError::TooLarge { path, limit } => CliError::Usage(format!(
            "{path}: the file is larger than {limit} bytes; workflow files are limited to {limit} bytes (1 MiB)"
        )),
        other => CliError::Usage(format!("the workflow: {other}")),
    })?;
    let format = Format::from_path(path).unwrap_or_else(|| Format::sniff(&text));
    Ok((text, format))
}

/// `KEY=VALUE` pairs.
pub fn parse_inputs(pairs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
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

/// `belt validate FILE`: 0 when valid, 2 when not.
pub fn validate(args: ValidateArgs, app: &App) -> Result<i32, CliError> {
    let (text, format) = read(&args.file)?;
    let inputs = parse_inputs(&args.input)?;
    let origin = args.file.display().to_string();
    // Without --input, missing required inputs are not a mistake of the file.
    let inputs = (!args.input.is_empty()).then_some(inputs);
    let diagnostics = app.check_workflow(&text, format, &origin, inputs.clone());
    if diagnostics.is_empty() {
        // What the file cannot show by itself: its USD budget with a model without a price.
        let spec = belt_app::RunSpec {
            workflow: Some(text.clone()),
            workflow_format: Some(format),
            workflow_file: Some(origin.clone()),
            inputs: inputs.unwrap_or_default(),
            ..belt_app::RunSpec::default()
        };
        if let Err(e) = app.check_workflow_prices(&spec) {
            eprintln!("belt: {origin}: {e}");
            return Ok(2);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diagnostics).expect("diagnostics serialize"));
    } else if diagnostics.is_empty() {
        let w = Workflow::parse(&text, format, &origin).map_err(|d| CliError::Usage(d.to_string()))?;
        let f = w.file();
        let what = if f.pattern.has_steps() {
            format!("{}, {}", count(f.steps.len() as u64, "step"), count(f.agents.len() as u64, "agent"))
        } else {
            format!("pattern {}", f.pattern.as_str())
        };
        println!("{origin}: valid ({}: {what})", f.name);
    } else {
        for d in diagnostics.iter() {
            println!("{d}");
        }
        let n = diagnostics.len();
        eprintln!("belt: {origin}: {}", count(n as u64, "error"));
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

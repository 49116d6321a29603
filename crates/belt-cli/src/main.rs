//! `belt`: the command-line interface of belt, a multi-agent LLM orchestration framework.
//!
//! ```text
//! belt run "Analyze the impact of AI on healthcare" --agents 12
//! ```
//!
//! The CLI only translates: arguments become a run of `belt-core`, events become progress
//! lines and a JSONL log, and the result becomes a report and an exit code
//! (0 completed, 3 partial or budget exhausted, 1 failed, 2 bad input, 130 cancelled).

mod args;
mod config;
mod error;
mod history;
mod hitl;
mod models;
mod owner;
mod progress;
mod report_cmd;
mod run_cmd;
mod serve_cmd;
mod workflow_cmd;

use clap::Parser;

use crate::args::{Cli, Command};

/// `belt patterns`: the catalog of belt-core, as a table or JSON.
fn patterns(json: bool) -> i32 {
    let catalog = belt_core::patterns::CATALOG;
    if json {
        println!("{}", serde_json::to_string_pretty(catalog).expect("the catalog serializes"));
        return 0;
    }
    let width = catalog.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in catalog {
        let how = match (p.from_task, p.workflow) {
            (true, _) => "belt run --pattern".to_string(),
            (false, Some(key)) => format!("workflow: {key}"),
            (false, None) => "from Rust".to_string(),
        };
        println!("{:width$}  {:<21}  {}", p.name, how, p.summary);
    }
    0
}

/// Output read through a pipe (`belt runs list | head`) ends quietly when the reader goes,
/// by SIGPIPE, as with other Unix tools, instead of a panic on a failed print. Sockets are not
/// affected: Rust writes to them with `MSG_NOSIGNAL`, so a peer that hangs up is an error
/// the HTTP client or server handles, never a signal.
fn restore_sigpipe() {
    // SAFETY: called once at start-up, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    restore_sigpipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("belt: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let store = cli.store.unwrap_or_else(belt_store::default_spec);
    match config::load(cli.config.as_deref()) {
        Ok((loaded, _)) => config::set(loaded),
        Err(e) => {
            eprintln!("belt: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) if args.file.is_none() && !args.input.is_empty() => {
                Err(error::CliError::Usage(
                    "--input gives a value to a workflow file's input; use it with -f FILE".into(),
                ))
            }
            Command::Run(args) if args.file.is_some() => workflow_cmd::run(*args, &store).await,
            Command::Run(args) => run_cmd::run(*args, &store).await,
            Command::Resume(args) => history::resume(args, &store).await,
            Command::Runs(command) => history::runs(command, &store).await,
            Command::Dlq(command) => history::dlq(command, &store).await,
            Command::Report(args) => report_cmd::report(args, &store).await,
            Command::Serve(args) => serve_cmd::serve(args, &store).await,
            Command::Mcp(args) => serve_cmd::mcp(args, &store).await,
            Command::Models { json } => Ok(models::list(json, &belt_llm::process_env)),
            Command::Patterns { json } => Ok(patterns(json)),
            Command::Validate(args) => workflow_cmd::validate(args),
            Command::Schema => Ok(workflow_cmd::schema()),
            Command::Init(args) => workflow_cmd::init(args),
        }
    });
    let code = match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("belt: error: {e}");
            e.exit_code()
        }
    };
    // Do not wait for blocking threads (a pending Ctrl-C listener) at shutdown.
    runtime.shutdown_background();
    std::process::exit(code);
}

//! `belt`: the command-line interface of belt, a multi-agent LLM orchestration framework.
//!
//! ```text
//! belt run "Analyze the impact of AI on healthcare" --agents 12
//! ```
//!
//! The CLI only translates: arguments become a [`belt_app::RunSpec`] that belt-app
//! prepares (as it does for the HTTP API and MCP), events become progress lines and a
//! JSONL log, and the result becomes a report and an exit code (0 completed, 3 partial or
//! budget exhausted, 1 failed, 2 bad input, 130 cancelled).

mod args;
mod budget_cmd;
mod diagnostics;
mod doctor_cmd;
mod error;
mod history;
mod hitl;
mod models;
mod otel;
mod owner;
mod progress;
mod report_cmd;
mod run_cmd;
mod serve_cmd;
mod signals;
mod tools_cmd;
mod trace_cmd;
mod worker_cmd;
mod workflow_cmd;

use clap::Parser;

use crate::args::{Cli, Command};

/// `belt patterns`: belt-app's registry, as a table or JSON.
fn patterns(json: bool) -> i32 {
    let registry = belt_app::patterns::REGISTRY;
    if json {
        println!("{}", serde_json::to_string_pretty(registry).expect("the registry serializes"));
        return 0;
    }
    let width = registry.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in registry {
        println!("{:width$}  {:<21}  {}", p.name, p.how(), p.summary);
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

/// The allocator: jemalloc rather than the C library's. A run allocates and frees many
/// small values from every worker thread; with glibc's malloc that was about a quarter of
/// the engine's CPU per call (BENCHMARKS.md, "The allocator"). A library user picks their
/// own allocator; this is the binary's choice.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    restore_sigpipe();
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Command::Run(args) => args.quiet,
        Command::Resume(args) => args.quiet,
        _ => false,
    };
    diagnostics::init(&cli.log, quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("belt: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let home = cli.home.clone().unwrap_or_else(belt_store::belt_home);
    let store = cli.store.unwrap_or_else(|| belt_store::StoreSpec::Sqlite(home.join("belt.db")));
    // Before the configuration is loaded: a broken belt.toml is one of the things it reports.
    if let Command::Doctor = cli.command {
        let code = runtime.block_on(doctor_cmd::doctor(cli.config.as_deref(), &home, &store));
        runtime.shutdown_background();
        std::process::exit(code);
    }
    let app = match belt_app::config::load(cli.config.as_deref(), &home) {
        Ok((config, _)) => std::sync::Arc::new(belt_app::App::new(config)),
        Err(e) => {
            eprintln!("belt: error: {e}");
            std::process::exit(error::CliError::from(e).exit_code());
        }
    };
    if let Err(e) = runtime.block_on(async { otel::start(&cli.otel) }) {
        eprintln!("belt: error: {e}");
        std::process::exit(e.exit_code());
    }
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_cmd::run(*args, &store, &app).await,
            Command::Resume(args) => history::resume(args, &store, &app).await,
            Command::Runs(command) => history::runs(command, &store).await,
            Command::Dlq(command) => history::dlq(command, &store, &app).await,
            Command::Report(args) => report_cmd::report(args, &store).await,
            Command::Serve(args) => serve_cmd::serve(args, &store, app.clone(), &home).await,
            Command::Mcp(args::McpArgs {
                command: Some(args::McpCommand::Tools { name, mcp, json }),
                ..
            }) => tools_cmd::list(&name, &mcp, json, &app).await,
            Command::Mcp(args) => serve_cmd::mcp(args, &store, app.clone()).await,
            Command::Worker(args) => worker_cmd::worker(args, &store, app.clone()).await,
            Command::Budget(args::BudgetCommand::Show { json }) => budget_cmd::show(json, &store, &app).await,
            Command::Models { json } => Ok(models::list(json, &belt_llm::process_env).await),
            Command::Patterns { json } => Ok(patterns(json)),
            Command::Validate(args) => workflow_cmd::validate(args, &app),
            Command::Schema => Ok(workflow_cmd::schema()),
            Command::Init(args) => workflow_cmd::init(args),
            // Answered above, before the configuration; here for completeness.
            Command::Doctor => Ok(doctor_cmd::doctor(cli.config.as_deref(), &home, &store).await),
        }
    });
    // The MCP servers this process started stop with it.
    runtime.block_on(app.tool_host().shutdown());
    runtime.block_on(otel::shutdown());
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

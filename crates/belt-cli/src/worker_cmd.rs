//! `belt worker`: drive the runs of a shared store (see [`belt_app::worker`]), one line on
//! stderr per thing that happens, until SIGTERM or Ctrl-C — then hand the runs back.

use std::sync::Arc;

use belt_app::App;
use belt_app::worker::{Worker, WorkerConfig, WorkerEvent};
use belt_store::StoreSpec;
use tokio_util::sync::CancellationToken;

use crate::args::WorkerArgs;
use crate::error::CliError;

/// `belt worker`: returns 0 after a stop on request, with every run handed back or ended.
pub async fn worker(args: WorkerArgs, spec: &StoreSpec, app: Arc<App>) -> Result<i32, CliError> {
    if args.max_runs == 0 {
        return Err(CliError::Usage("--max-runs must be at least 1".into()));
    }
    let store = crate::run_cmd::open_store(spec).await?;
    app.share_through(&*store);
    let name = args.name.unwrap_or_else(crate::owner::host);
    let config = WorkerConfig { name: name.clone(), max_runs: args.max_runs, ..WorkerConfig::default() };
    let sink = crate::otel::worker_sink(&store);
    let mut worker = Worker::new(app, store, config);
    if let Some(sink) = sink {
        worker = worker.with_events(sink);
    }
    eprintln!(
        "belt worker {name}: taking runs from {spec}, up to {} at once (lease {})",
        args.max_runs,
        worker.owner()
    );
    let stop = CancellationToken::new();
    let on_stop = stop.clone();
    let mut signals = crate::signals::Signals::new();
    tokio::spawn(async move {
        signals.next().await;
        eprintln!(
            "belt worker: stopping: no new runs; the calls in flight finish, then the runs go back \
             to the queue for another worker (again to quit now)"
        );
        on_stop.cancel();
        std::process::exit(signals.next().await.exit_code());
    });
    let quiet = args.quiet;
    let summary = worker.run(stop, move |event| say(&event, quiet)).await;
    eprintln!(
        "belt worker {name}: stopped; {} finished here, {} handed back, {} could not start",
        belt_report::words::count(summary.finished as u64, "run"),
        summary.handed_back,
        summary.not_started
    );
    Ok(0)
}

/// One line on stderr for what the worker did.
fn say(event: &WorkerEvent, quiet: bool) {
    let line = match event {
        WorkerEvent::Took { run_id, task, resumed } => {
            let what = if *resumed { "resuming" } else { "running" };
            format!("{what} {run_id}: {}", short(task))
        }
        WorkerEvent::Finished { run_id, status, reason, cost_usd } => {
            format!("{run_id} {status} (${cost_usd:.4}): {reason}")
        }
        WorkerEvent::HandedBack { run_id } => format!("{run_id} handed back to the queue"),
        WorkerEvent::NotStarted { run_id, reason } => format!("{run_id} cannot start: {reason}"),
        WorkerEvent::StoreUnavailable { error, retry_in } => {
            // Said even when quiet: nothing else shows the worker is stuck.
            eprintln!("belt worker: the store is unavailable ({error}); trying again in {retry_in:?}");
            return;
        }
        _ => return,
    };
    if !quiet {
        eprintln!("belt worker: {line}");
    }
}

/// A task shortened to one line of at most 80 characters.
fn short(task: &str) -> String {
    let line = task.lines().next().unwrap_or("");
    match line.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

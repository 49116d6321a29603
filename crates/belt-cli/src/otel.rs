//! OpenTelemetry export from the binary: `--otlp-endpoint URL` (or the standard
//! `OTEL_EXPORTER_OTLP_*` variables) sends every run of this process — `belt run`,
//! `belt resume`, `belt serve`, `belt worker` — as one trace to a collector; see belt-otel.
//! One exporter per process, started before the command and shut down after it, so the
//! last spans are sent before the process exits.

use std::sync::{Arc, OnceLock};

use belt_core::event::Event;
use belt_core::{EventStream, RunStore};
use belt_otel::{Exporter, Feed, OtelConfig};
use clap::Args;

use crate::error::CliError;

/// The flags, on every command.
#[derive(Debug, Clone, Args)]
pub struct OtelArgs {
    /// Send each run as an OpenTelemetry trace (GenAI spans) to this OTLP/HTTP collector,
    /// e.g. http://localhost:4318 [default: OTEL_EXPORTER_OTLP_ENDPOINT, if set]
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Put message contents on the spans: the task, models' outputs, tools' arguments and
    /// results (off by default: they may hold what must not leave this machine)
    #[arg(long, global = true, env = "BELT_OTEL_CONTENT")]
    pub otel_content: bool,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Start exporting when asked to (within the runtime). A bad variable is a usage error.
pub fn start(args: &OtelArgs) -> Result<(), CliError> {
    let config =
        OtelConfig::from_env(args.otlp_endpoint.as_deref()).map_err(|e| CliError::Usage(e.to_string()))?;
    let Some(config) = config else { return Ok(()) };
    match &config.metrics_endpoint {
        Some(metrics) => tracing::info!(
            "exporting runs as OpenTelemetry traces to {} and metrics to {metrics}",
            config.traces_endpoint
        ),
        None => tracing::info!("exporting runs as OpenTelemetry traces to {}", config.traces_endpoint),
    }
    let exporter = Exporter::start(config.with_content(args.otel_content))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let _ = EXPORTER.set(exporter);
    Ok(())
}

/// Send the last spans (bounded by the exporter's timeout).
pub async fn shutdown() {
    if let Some(exporter) = EXPORTER.get() {
        exporter.shutdown().await;
    }
}

/// Export `source`'s metrics (`belt serve`'s) instead of the counts of the runs traced.
pub fn metrics_from(source: belt_otel::MetricsSource) {
    if let Some(exporter) = EXPORTER.get() {
        exporter.metrics_from(source);
    }
}

/// Where `belt run` / `belt resume` hand each event as they read them, when exporting.
pub fn feed(store: Option<Arc<dyn RunStore>>) -> Option<Feed> {
    EXPORTER.get().map(|e| e.feed(store))
}

/// `belt serve`: an observer of the server's runs, when exporting.
pub fn observers(store: &Arc<dyn RunStore>) -> Vec<Arc<dyn belt_server::EventObserver>> {
    match feed(Some(store.clone())) {
        Some(feed) => vec![Arc::new(Observer(feed))],
        None => Vec::new(),
    }
}

/// `belt worker`: a reader of each run's events, when exporting.
pub fn worker_sink(store: &Arc<dyn RunStore>) -> Option<belt_app::worker::EventSink> {
    let exporter = EXPORTER.get()?.clone();
    let store = store.clone();
    Some(Arc::new(move |events: EventStream| {
        exporter.observe(events, Some(store.clone()));
    }))
}

struct Observer(Feed);

impl belt_server::EventObserver for Observer {
    fn on_event(&self, event: &Arc<Event>) {
        self.0.on_event(event);
    }

    /// The batch to the run's pump at once, as `belt run` hands it.
    fn on_events(&self, events: &[Arc<Event>]) {
        self.0.on_events(events);
    }
}

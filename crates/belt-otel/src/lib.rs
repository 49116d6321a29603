//! OpenTelemetry for belt: each run as one trace of GenAI spans, sent to any OTLP/HTTP
//! collector (Jaeger, Grafana Tempo, Langfuse, Arize Phoenix, Datadog, an OpenTelemetry
//! Collector).
//!
//! The spans are built from the run's events ([`RunTracer`]), not from inside the engine:
//! the engine's hot path stays as it is, and `belt run`, `belt serve`, workers and library
//! users share one implementation. Their names and attributes follow the OpenTelemetry
//! GenAI semantic conventions (`invoke_workflow` → `plan` / `invoke_agent` → `chat` /
//! `execute_tool`; `gen_ai.*` attributes) plus belt's own (`belt.run_id`, `belt.step`,
//! `belt.tier`, `belt.cost_usd`, `belt.attempt`, `belt.replayed`); see [`spans`].
//!
//! [`Exporter`] sends them batched from a bounded queue on a task of its own: a run never
//! waits for it, and a collector that is down is one warning in the logs.
//!
//! ```no_run
//! use belt_core::{Cascade, RunOptions, Task};
//! use belt_otel::{Exporter, OtelConfig};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // OTEL_EXPORTER_OTLP_ENDPOINT and friends, or OtelConfig::new("http://localhost:4318").
//! let config = OtelConfig::from_env(None)?.unwrap_or(OtelConfig::new("http://localhost:4318")?);
//! let exporter = Exporter::start(config)?;
//! let mut handle = belt_core::run(Cascade::new(12, "simulated/default"), Task::new("…"), RunOptions::default()).await?;
//! let events = handle.events().ok_or("no event stream")?;
//! let traced = exporter.observe(events, None);
//! let result = handle.result().await;
//! traced.await?;
//! exporter.shutdown().await; // sends what is queued
//! # let _ = result; Ok(()) }
//! ```

mod config;
mod export;
pub mod metrics;
pub mod proto;
pub mod spans;

pub use config::{DEFAULT_ENDPOINT, OtelConfig};
pub use export::{ExportStats, Exporter, Feed, MetricsSource};
pub use proto::request;
pub use spans::{RunTracer, trace_id};

/// What can go wrong setting export up (sending never fails a run: see [`Exporter`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    #[error(
        "OTLP protocol `{0}` is not supported: belt exports over http/protobuf only; set \
         OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (or unset it) and point the endpoint at the \
         collector's OTLP/HTTP port (4318)"
    )]
    Protocol(String),
    #[error(
        "`{0}` is not an OTLP/HTTP endpoint: give a URL such as http://localhost:4318 (belt adds \
         /v1/traces) or the full traces URL"
    )]
    Endpoint(String),
    #[error("OTEL_EXPORTER_OTLP_HEADERS is not `key=value,key2=value2`: {0}")]
    Headers(String),
    #[error("OTEL_METRIC_EXPORT_INTERVAL is `{0}`: give the interval in milliseconds, e.g. 60000")]
    Interval(String),
    #[error("cannot build the OTLP HTTP client: {0}")]
    Client(String),
}

//! Where the library crates' `tracing` events go: stderr, one line each — the binary
//! chooses, the libraries only log.
//!
//! The level of belt's own crates: `-q` (errors only), the default (warnings), `-v` (info),
//! `-vv` (debug), `-vvv` (trace); `BELT_LOG=LEVEL` sets the default. `RUST_LOG`, when set,
//! wins over all of them with the usual directives (`belt_core=debug,belt_llm=trace`, or a
//! bare level) and may name dependencies' targets too; otherwise dependencies' logs are not
//! shown. `--log-format json` writes one JSON object a line (`ts`, `level`, `target`,
//! `message` and the event's fields) for log collectors.
//!
//! Lines never tear the live progress bars: while bars are drawn, each line is written with
//! the bars cleared and redrawn under it (indicatif's `suspend`).

use std::fmt;
use std::io::Write;
use std::sync::Mutex;

use clap::{Args, ValueEnum};
use indicatif::MultiProgress;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The logging flags, on every command.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (RUST_LOG wins when set)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How log lines look: text (`belt: warning: …`) or json (one object a line)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `belt: LEVEL: message key=value…`.
struct Lines;

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, cx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write!(w, "belt: {}: ", level_name(event.metadata().level()))?;
        cx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// One JSON object a line.
struct Json;

struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields(serde_json::Map::new());
        fields.0.insert("ts".into(), chrono::Utc::now().to_rfc3339().into());
        fields.0.insert("level".into(), level_name(meta.level()).into());
        fields.0.insert("target".into(), meta.target().into());
        event.record(&mut fields);
        writeln!(w, "{}", serde_json::Value::Object(fields.0))
    }
}

/// The progress bars being drawn, if any: log lines are written under them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Say which bars are drawn now (`None` once they are cleared).
pub fn set_bars(bars: Option<MultiProgress>) {
    *BARS.lock().unwrap_or_else(|p| p.into_inner()) = bars;
}

/// A log line's bytes, written to stderr in one piece when the line is done.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        let bars = BARS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

/// The level `-q`/`-v`/`BELT_LOG` ask for.
fn level(quiet: bool, verbose: u8) -> LevelFilter {
    let default = match std::env::var("BELT_LOG").unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::WARN,
    };
    match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => default,
        (false, 1) => LevelFilter::INFO,
        (false, 2) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    }
}

/// Install the stderr subscriber (once, from `main`); `quiet` is the command's `-q`.
pub fn init(args: &LogArgs, quiet: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // RUST_LOG's directives when set and valid; else belt's own crates only (its
    // dependencies' logs are theirs to explain, and noise here).
    let rust_log =
        std::env::var("RUST_LOG").ok().and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok());
    let filter = rust_log.unwrap_or_else(|| {
        let level = level(quiet, args.verbose);
        [
            "belt",
            "belt_core",
            "belt_llm",
            "belt_store",
            "belt_report",
            "belt_workflow",
            "belt_app",
            "belt_server",
            "belt_tools",
            "belt_otel",
        ]
        .into_iter()
        .fold(tracing_subscriber::filter::Targets::new(), |t, target| t.with_target(target, level))
    });
    let writer = || Line(Vec::with_capacity(128));
    let layer = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(writer).event_format(Lines).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().with_writer(writer).event_format(Json).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer.with_filter(filter)).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_and_verbose_set_the_level() {
        assert_eq!(level(true, 2), LevelFilter::ERROR);
        assert_eq!(level(false, 1), LevelFilter::INFO);
        assert_eq!(level(false, 2), LevelFilter::DEBUG);
        assert_eq!(level(false, 5), LevelFilter::TRACE);
    }
}

//! Where the library crates' `tracing` events go: stderr, one line each, as
//! `belt: warning: …` — the binary chooses, the libraries only log. `BELT_LOG` sets the
//! level (`error`, `warn` (the default), `info`, `debug`, `trace`, `off`) of belt's own
//! crates; dependencies' logs are not shown.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `belt: LEVEL: message key=value…`.
struct Lines;

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, cx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        write!(w, "belt: {level}: ")?;
        cx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Install the stderr subscriber (once, from `main`).
pub fn init() {
    let level = match std::env::var("BELT_LOG").unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "off" => tracing::level_filters::LevelFilter::OFF,
        "error" => tracing::level_filters::LevelFilter::ERROR,
        "info" => tracing::level_filters::LevelFilter::INFO,
        "debug" => tracing::level_filters::LevelFilter::DEBUG,
        "trace" => tracing::level_filters::LevelFilter::TRACE,
        _ => tracing::level_filters::LevelFilter::WARN,
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // belt's own crates only: its dependencies' logs are theirs to explain (and noise here).
    let belt = tracing_subscriber::filter::Targets::new()
        .with_target("belt", level)
        .with_target("belt_core", level)
        .with_target("belt_llm", level)
        .with_target("belt_store", level)
        .with_target("belt_report", level)
        .with_target("belt_workflow", level)
        .with_target("belt_app", level)
        .with_target("belt_server", level);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).event_format(Lines);
    let _ =
        tracing_subscriber::registry().with(tracing_subscriber::Layer::with_filter(layer, belt)).try_init();
}

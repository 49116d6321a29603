//! Where spans go and what they may hold: [`OtelConfig`], built in code or read from the
//! standard `OTEL_EXPORTER_OTLP_*` variables ([`OtelConfig::from_env`]).

use std::time::Duration;

use crate::OtelError;

/// What an [`crate::Exporter`] sends, where, and within which bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    /// The full URL spans are POSTed to, e.g. `http://localhost:4318/v1/traces`.
    pub traces_endpoint: String,
    /// The full URL metrics are POSTed to (`…/v1/metrics`), or `None` when metrics are not
    /// exported (`OTEL_METRICS_EXPORTER=none`).
    pub metrics_endpoint: Option<String>,
    /// How often metrics are sent (`OTEL_METRIC_EXPORT_INTERVAL`, milliseconds; 60 s by
    /// default, as the specification says); once more when the exporter shuts down.
    pub metrics_every: Duration,
    /// Extra request headers (an API key for a hosted collector). Never logged.
    pub headers: Vec<(String, String)>,
    /// `service.name` of the resource: `belt` unless `OTEL_SERVICE_NAME` says otherwise.
    pub service_name: String,
    /// Put message contents (the task, model outputs, tool arguments and results) on the
    /// spans. Off by default: they may hold what a team must not ship to a collector.
    pub content: bool,
    /// Spans waiting to be sent at most; past it new spans are dropped (and counted), so a
    /// slow collector costs memory up to here and never the run's time.
    pub queue: usize,
    /// Spans per request at most.
    pub batch: usize,
    /// A partial batch is sent after this long.
    pub flush_every: Duration,
    /// One request's time limit (connect, send, answer).
    pub timeout: Duration,
}

/// The OTLP/HTTP port collectors listen on.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

impl OtelConfig {
    /// Spans to `endpoint`: a base URL (`http://host:4318`, to which `/v1/traces` is
    /// added, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read) or a URL already ending in
    /// `/v1/traces`.
    pub fn new(endpoint: &str) -> Result<OtelConfig, OtelError> {
        Ok(OtelConfig {
            traces_endpoint: traces_url(endpoint)?,
            metrics_endpoint: Some(signal_url(endpoint, "metrics")?),
            metrics_every: Duration::from_secs(60),
            headers: Vec::new(),
            service_name: "belt".to_string(),
            content: false,
            queue: 65_536,
            batch: 512,
            flush_every: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        })
    }

    /// With message contents on the spans (see [`OtelConfig::content`]).
    pub fn with_content(mut self, content: bool) -> Self {
        self.content = content;
        self
    }

    /// The configuration the standard variables describe, or `None` when neither
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
    /// `endpoint` (a `--otlp-endpoint` flag) wins over both.
    pub fn from_env(endpoint: Option<&str>) -> Result<Option<OtelConfig>, OtelError> {
        OtelConfig::from_lookup(endpoint, |name| std::env::var(name).ok())
    }

    /// [`OtelConfig::from_env`] over any source of variables (tests pass a map).
    pub fn from_lookup(
        endpoint: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtelConfig>, OtelError> {
        let var = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let protocol =
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let mut config =
            match (endpoint, var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                (Some(url), _, _) => OtelConfig::new(url)?,
                // The signal-specific variable is used as it is (the specification's rule).
                (None, Some(url), _) => {
                    OtelConfig { traces_endpoint: checked(&url)?, ..OtelConfig::new(&url)? }
                }
                (None, None, Some(url)) => OtelConfig::new(&url)?,
                (None, None, None) => return Ok(None),
            };
        match protocol.as_deref() {
            None | Some("http/protobuf") => {}
            Some(other) => return Err(OtelError::Protocol(other.to_string())),
        }
        if let Some(headers) =
            var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
        {
            config.headers = parse_headers(&headers)?;
        }
        if let Some(url) = var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            config.metrics_endpoint = Some(checked(&url)?);
        }
        if var("OTEL_METRICS_EXPORTER").is_some_and(|v| v == "none") {
            config.metrics_endpoint = None;
        }
        if let Some(ms) = var("OTEL_METRIC_EXPORT_INTERVAL") {
            let ms: u64 = ms.parse().map_err(|_| OtelError::Interval(ms.clone()))?;
            config.metrics_every = Duration::from_millis(ms.max(100));
        }
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            config.service_name = name;
        }
        Ok(Some(config))
    }
}

/// `base` with `/v1/traces` added unless it already ends so.
fn traces_url(base: &str) -> Result<String, OtelError> {
    let base = checked(base.trim())?;
    if base.trim_end_matches('/').ends_with("/v1/traces") {
        return Ok(base);
    }
    Ok(format!("{}/v1/traces", base.trim_end_matches('/')))
}

/// The URL of `signal` (`metrics`) beside `base`: `base/v1/metrics`, or, for a URL that
/// names another signal's path (`…/v1/traces`), that path's sibling.
fn signal_url(base: &str, signal: &str) -> Result<String, OtelError> {
    let base = checked(base.trim())?;
    let trimmed = base.trim_end_matches('/');
    let root = trimmed.strip_suffix("/v1/traces").unwrap_or(trimmed);
    Ok(format!("{root}/v1/{signal}"))
}

fn checked(url: &str) -> Result<String, OtelError> {
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
        return Err(OtelError::Endpoint(url.chars().take(200).collect()));
    }
    Ok(url.to_string())
}

/// `key=value,key2=value2`, values percent-decoded (the specification's format).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, OtelError> {
    let mut headers = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            // The pair is not shown: it may be a secret.
            return Err(OtelError::Headers(format!("a pair without `=` (pair {})", headers.len() + 1)));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
            return Err(OtelError::Headers(format!("`{key}` is not a header name")));
        }
        headers.push((key.to_string(), percent_decode(value.trim())));
    }
    Ok(headers)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn nothing_set_means_no_export() {
        assert_eq!(OtelConfig::from_lookup(None, env(&[])).unwrap(), None);
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_signal_one_is_kept() {
        let c = OtelConfig::from_lookup(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.traces_endpoint, "http://c:4318/v1/traces");
        assert_eq!(c.metrics_endpoint.as_deref(), Some("http://c:4318/v1/metrics"));
        assert_eq!(c.metrics_every, Duration::from_secs(60));
        assert_eq!(c.service_name, "belt");
        let c = OtelConfig::from_lookup(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom"),
                ("OTEL_SERVICE_NAME", "agents"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%3Db, x-team = red"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_endpoint, "http://t:9/custom");
        assert_eq!(c.service_name, "agents");
        assert_eq!(c.headers, vec![("api-key".into(), "a=b".into()), ("x-team".into(), "red".into())]);
        // The flag wins.
        let c =
            OtelConfig::from_lookup(Some("https://f"), env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")]))
                .unwrap()
                .unwrap();
        assert_eq!(c.traces_endpoint, "https://f/v1/traces");
        // Metrics: their own variable, beside a traces-only endpoint, or off.
        let c = OtelConfig::from_lookup(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/v1/traces"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "5000"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.metrics_endpoint.as_deref(), Some("http://t:9/v1/metrics"));
        assert_eq!(c.metrics_every, Duration::from_secs(5));
        let c = OtelConfig::from_lookup(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m/x"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.metrics_endpoint.as_deref(), Some("http://m/x"));
        let off = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_METRICS_EXPORTER", "none")]);
        assert_eq!(OtelConfig::from_lookup(None, off).unwrap().unwrap().metrics_endpoint, None);
        let bad =
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_METRIC_EXPORT_INTERVAL", "soon")]);
        assert!(OtelConfig::from_lookup(None, bad).unwrap_err().to_string().contains("soon"));
    }

    #[test]
    fn other_protocols_and_bad_values_are_refused_with_reasons() {
        let grpc =
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        let err = OtelConfig::from_lookup(None, grpc).unwrap_err().to_string();
        assert!(err.contains("grpc") && err.contains("http/protobuf"), "{err}");
        let err = OtelConfig::from_lookup(Some("localhost:4318"), env(&[])).unwrap_err().to_string();
        assert!(err.contains("http://"), "{err}");
        let bad =
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_HEADERS", "secret")]);
        let err = OtelConfig::from_lookup(None, bad).unwrap_err().to_string();
        assert!(!err.contains("secret"), "a header is never shown: {err}");
    }
}

//! The web for agents: `web_search` over a configured search backend (SearXNG, Brave Search
//! or Tavily) and `fetch_url`, which reads one page as text. Both are idempotent reads with
//! bounded responses and time, and both name what they read as [`Source`]s, which the run's
//! result and report list.
//!
//! `fetch_url` follows URLs a model chose, so it refuses what such a URL should never reach:
//! schemes other than http and https, and addresses that are not public ([`blocked_reason`]:
//! loopback, private networks, link-local and cloud metadata, CGNAT, multicast...). The check
//! is made on the addresses the client then connects to (its own DNS resolver filters them,
//! and the connected peer is checked again), at every redirect hop, so neither a redirect nor
//! a DNS answer that changes between check and use (rebinding) gets past it.
//!
//! ```no_run
//! use belt_tools::web::{FetchPolicy, Fetcher, WebSearchConfig, fetch_url_tool, web_search_tool};
//!
//! # fn example() -> Result<(), belt_tools::web::WebError> {
//! let mut tools = belt_core::Tools::new().with(fetch_url_tool(Fetcher::new(FetchPolicy::default())?));
//! if let Some(config) = WebSearchConfig::from_env() {
//!     tools = tools.with(web_search_tool(config)?);
//! }
//! # Ok(()) }
//! ```
//!
//! [`Source`]: belt_core::Source

mod addr;
mod fetch;
mod search;

use std::time::Duration;

pub use addr::blocked_reason;
pub use fetch::{FetchPolicy, FetchedPage, Fetcher, HostResolver, fetch_url_tool};
pub use search::{SearchBackend, SearchHit, WebSearch, WebSearchConfig, web_search_tool};

use belt_core::effect::EffectError;

/// Why a search or a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    #[error("`{url}` is not a URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("only http and https URLs are fetched, not `{scheme}:` ({url})")]
    Scheme { url: String, scheme: String },
    #[error(
        "{host} is at {ip}, a {kind} address; fetch_url only reads public addresses \
         (FetchPolicy::allow_private or allow_hosts let it read others)"
    )]
    Refused { host: String, ip: std::net::IpAddr, kind: &'static str },
    #[error("could not resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("more than {max} redirects, the last to {url}")]
    TooManyRedirects { max: usize, url: String },
    #[error("a redirect from {url} has no usable Location header")]
    BadRedirect { url: String },
    #[error("no answer from {url} within {secs:.1} s")]
    Timeout { url: String, secs: f64 },
    #[error("the request to {url} failed: {message}")]
    Request { url: String, message: String },
    #[error("{url} answered HTTP {status}{hint}")]
    Status { url: String, status: u16, hint: String },
    #[error("{url} is {content_type}, not text; fetch_url reads HTML, text and JSON")]
    NotText { url: String, content_type: String },
    #[error("the {backend} search answer could not be read: {message}")]
    Decode { backend: &'static str, message: String },
    #[error("web search is not configured: {0}")]
    Config(String),
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

impl WebError {
    /// Whether trying again later may help (a timeout, a refused connection, a 429 or a 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            WebError::Timeout { .. } | WebError::Request { .. } | WebError::Resolve { .. } => true,
            WebError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    fn into_effect(self) -> EffectError {
        let transient = self.is_transient();
        let mut e = EffectError::new(self.to_string());
        e.transient = transient;
        e
    }
}

/// rustls needs a process-wide crypto provider: ring, unless the application installed one
/// before (then that one is used). The same as belt-llm's.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

const USER_AGENT: &str = concat!("belt/", env!("CARGO_PKG_VERSION"), " (web tools)");

/// Read at most `cap` bytes of a response's body; the rest is not read. The flag says
/// whether the body was longer.
async fn read_body(mut response: reqwest::Response, cap: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A request error's causes, innermost last, without reqwest's line (it repeats the URL).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() { error.to_string() } else { parts.join(": ") }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

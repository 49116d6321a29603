//! Who may call the API: the bearer token (compared in constant time), where it comes
//! from, and the per-token request rate limit.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::{ApiError, ServerError};

/// Where the token came from, so the CLI can print a generated one once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given explicitly (`BELT_API_TOKEN`).
    Given,
    /// Read from the token file of an earlier start.
    File,
    /// Generated now and written to the token file.
    Generated,
}

/// The API token: `explicit` if given, else the content of `file`, else a new random token
/// written to `file` with mode 0600.
pub fn resolve_token(explicit: Option<&str>, file: &Path) -> Result<(String, TokenSource), ServerError> {
    if let Some(t) = explicit.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok((t.to_string(), TokenSource::Given));
    }
    let path = file.display().to_string();
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                return Err(ServerError::EmptyTokenFile { path });
            }
            return Ok((token.to_string(), TokenSource::File));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ServerError::TokenFile { path, source }),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::Random(e.to_string()))?;
    let token = format!("belt_{}", hex::encode(bytes));
    write_private(file, &token).map_err(|source| ServerError::TokenFile { path, source })?;
    Ok((token, TokenSource::Generated))
}

/// Create `file` readable by its owner only, with `text` in it.
fn write_private(file: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(file)?;
    writeln!(f, "{text}")?;
    f.sync_all()
}

/// True when `given` is the token; takes the same time wherever they differ.
pub fn token_matches(given: &str, token: &str) -> bool {
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

/// Requests per second allowed per token, with a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { per_second: 50.0, burst: 200 }
    }
}

/// A token bucket per key.
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        RateLimiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one request from `key`'s bucket, or say how long until one is available.
    pub(crate) fn take(&self, key: &str) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst.max(1));
        let rate = self.limit.per_second.max(f64::MIN_POSITIVE);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // A rate too small for a `Duration` waits the longest a client is told to.
            Err(Duration::try_from_secs_f64((1.0 - *tokens) / rate).unwrap_or(Duration::from_secs(3600)))
        }
    }
}

/// The bearer token of a request: the Authorization header, or for the event stream only
/// (which a browser's EventSource opens without headers) the `token` query parameter.
fn presented(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string());
    }
    let path = req.uri().path();
    if path.starts_with("/v1/runs/") && path.ends_with("/events") {
        return req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=").map(percent_decode)));
    }
    None
}

/// `%XX` escapes and `+` of a query value (tokens are hex, but browsers may escape).
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The bucket that requests with a missing or wrong token draw from, all together: guessing
/// tokens is as rate-limited as using one.
const UNAUTHORIZED: &str = "\0unauthorized";

/// Middleware: 401 without the right token, 429 over the rate limit (for requests without
/// the right token too, so tokens cannot be guessed at full speed).
pub(crate) async fn require_token(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let ok = presented(&req).is_some_and(|t| token_matches(&t, &app.config.token));
    let bucket = if ok { app.config.token.as_str() } else { UNAUTHORIZED };
    if let Err(wait) = app.limiter.take(bucket) {
        return ApiError::TooMany {
            message: if ok {
                format!("more than {} requests per second with this token; slow down", app.config.rate_limit.per_second)
            } else {
                "too many requests without a valid token; send `Authorization: Bearer <token>` (see `belt serve` output)"
                    .to_string()
            },
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        }
        .into_response();
    }
    if !ok {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_generated_once_with_mode_0600_and_reused() {
        let dir = std::env::temp_dir().join(format!("belt-token-{}", uuid::Uuid::now_v7()));
        let file = dir.join("api-token");
        let (token, source) = resolve_token(None, &file).unwrap();
        assert_eq!(source, TokenSource::Generated);
        assert!(token.starts_with("belt_") && token.len() == 5 + 64, "{token}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (again, source) = resolve_token(None, &file).unwrap();
        assert_eq!((again.as_str(), source), (token.as_str(), TokenSource::File));
        let (given, source) = resolve_token(Some("secret"), &file).unwrap();
        assert_eq!((given.as_str(), source), ("secret", TokenSource::Given));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
        assert!(!token_matches("", "abc"));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_says_how_long_to_wait() {
        let limiter = RateLimiter::new(RateLimit { per_second: 1.0, burst: 3 });
        for _ in 0..3 {
            assert!(limiter.take("t").is_ok());
        }
        let wait = limiter.take("t").unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1), "{wait:?}");
        // Another key has its own bucket.
        assert!(limiter.take("u").is_ok());
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c"), "a+b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%é%zz"), "%é%zz");
    }
}

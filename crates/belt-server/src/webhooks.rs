//! Webhooks: registered URLs receive the events of this server's runs as JSON POSTs, each
//! signed with `X-Belt-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's
//! secret>`, retried with exponential backoff, in order per webhook. Delivery counts and the
//! last attempt's outcome are visible at `GET /v1/webhooks`.
//!
//! Receivers verify a delivery by computing the HMAC of the raw body with their secret
//! and comparing it (in constant time) with the header; `X-Belt-Event` names the event
//! type and `X-Belt-Delivery` is unique per event and webhook (the same on every retry).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use belt_core::Event;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::AppState;
use crate::error::ApiError;
use crate::manager::EventObserver;

/// A webhook to register (config or `POST /v1/webhooks`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Where to POST events (http or https).
    pub url: String,
    /// Key of the HMAC-SHA256 signature; generated (and returned once) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Event types to send (e.g. `run_started`, `step_completed`, `run_finished`); every
    /// type but `step_delta` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per event, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub first_delay: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, first_delay: Duration::from_millis(500), timeout: Duration::from_secs(10) }
    }
}

/// The outcome of the last delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    pub event_type: String,
    pub run_id: String,
    pub seq: u64,
    pub attempt: u32,
    /// HTTP status, when the receiver answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// A registered webhook, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookInfo {
    pub id: String,
    pub url: String,
    pub events: Option<Vec<String>>,
    /// Only in the answer to the registration that generated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Events delivered (2xx).
    pub delivered: u64,
    /// Events given up on after every attempt failed.
    pub failed: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Events waiting to be sent.
    pub pending: u64,
    /// Events dropped because the queue was full (the receiver is down or too slow).
    pub dropped: u64,
    pub last: Option<Attempt>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookInfo>,
}

/// Events a webhook's queue holds before new ones are dropped.
const QUEUE: usize = 10_000;

struct Hook {
    id: String,
    url: String,
    secret: String,
    events: Option<Vec<String>>,
    tx: mpsc::Sender<Arc<Event>>,
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    pending: AtomicU64,
    dropped: AtomicU64,
    last: Mutex<Option<Attempt>>,
}

impl Hook {
    fn info(&self) -> WebhookInfo {
        WebhookInfo {
            id: self.id.clone(),
            url: self.url.clone(),
            events: self.events.clone(),
            secret: None,
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    fn wants(&self, event: &Event) -> bool {
        let t = event.kind.type_name();
        match &self.events {
            Some(list) => list.iter().any(|e| e == t),
            None => t != "step_delta",
        }
    }
}

/// `sha256=<hex>`: the signature of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Check a `X-Belt-Signature` header value against `body` (constant time).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    crate::auth::token_matches(header, &signature(secret, body))
}

/// The registered webhooks and their delivery workers.
pub struct Webhooks {
    hooks: Mutex<BTreeMap<String, Arc<Hook>>>,
    client: reqwest::Client,
    retry: RetryPolicy,
    /// Loopback, private and link-local targets allowed (see [`crate::egress`]).
    private_targets: bool,
}

impl Webhooks {
    pub fn new(retry: RetryPolicy, private_targets: bool) -> Arc<Self> {
        // reqwest is built without a default TLS crypto provider; use ring, as belt-llm does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().timeout(retry.timeout);
        if !private_targets {
            builder = builder.dns_resolver(std::sync::Arc::new(crate::egress::PublicResolver));
        }
        // No redirects: a redirect to a private address would bypass the checks above.
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Arc::new(Webhooks { hooks: Mutex::new(BTreeMap::new()), client, retry, private_targets })
    }

    /// Register a webhook and start its delivery worker (on the current runtime).
    pub fn add(self: &Arc<Self>, spec: WebhookSpec) -> Result<WebhookInfo, ApiError> {
        let url = reqwest::Url::parse(&spec.url)
            .map_err(|e| ApiError::Invalid(format!("webhook url `{}` is not a URL: {e}", spec.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ApiError::Invalid(format!("webhook url `{}` must be http or https", spec.url)));
        }
        if !self.private_targets {
            // IP literals never reach the resolver: checked here. So is `localhost`, which
            // some resolvers answer without asking DNS.
            let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            let literal = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") => {
                    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
                }
                Err(_) => None,
            };
            if literal.is_some_and(|ip| !crate::egress::is_public(ip)) {
                return Err(ApiError::Invalid(format!(
                    "webhook url `{}` targets a loopback, private or link-local address; refused unless the \
                     server allows it (belt serve --allow-private-webhooks)",
                    spec.url
                )));
            }
        }
        if let Some(events) = &spec.events
            && let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str()))
        {
            return Err(ApiError::Invalid(format!(
                "unknown event type `{bad}`; use any of {}",
                EVENT_TYPES.join(", ")
            )));
        }
        let generated = spec.secret.is_none();
        let secret = match spec.secret.filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => {
                let mut bytes = [0u8; 24];
                getrandom::fill(&mut bytes)
                    .map_err(|e| ApiError::Internal(format!("cannot generate a secret: {e}")))?;
                hex::encode(bytes)
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let hook = Arc::new(Hook {
            id: format!("wh_{}", uuid::Uuid::now_v7().simple()),
            url: url.to_string(),
            secret: secret.clone(),
            events: spec.events,
            tx,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last: Mutex::new(None),
        });
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).insert(hook.id.clone(), hook.clone());
        tokio::spawn(deliver(hook.clone(), rx, self.client.clone(), self.retry));
        let mut info = hook.info();
        if generated {
            info.secret = Some(secret);
        }
        Ok(info)
    }

    pub fn list(&self) -> Vec<WebhookInfo> {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).values().map(|h| h.info()).collect()
    }

    /// Unregister; its worker stops after the event in flight.
    pub fn remove(&self, id: &str) -> bool {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).remove(id).is_some()
    }

    /// (delivered, failed) over every webhook, for metrics.
    pub fn totals(&self) -> (u64, u64) {
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).values().fold((0, 0), |(d, f), h| {
            (d + h.delivered.load(Ordering::Relaxed), f + h.failed.load(Ordering::Relaxed))
        })
    }
}

impl EventObserver for Webhooks {
    fn on_event(&self, event: &Arc<Event>) {
        for hook in self.hooks.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if !hook.wants(event) {
                continue;
            }
            match hook.tx.try_send(event.clone()) {
                Ok(()) => {
                    hook.pending.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    hook.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// One webhook's worker: events in order, each retried until delivered or out of attempts.
async fn deliver(
    hook: Arc<Hook>,
    mut rx: mpsc::Receiver<Arc<Event>>,
    client: reqwest::Client,
    retry: RetryPolicy,
) {
    while let Some(event) = rx.recv().await {
        let body = serde_json::to_vec(&*event).unwrap_or_default();
        let sig = signature(&hook.secret, &body);
        let delivery = format!("{}:{}:{}", hook.id, event.run_id, event.seq);
        let mut delay = retry.first_delay;
        for attempt in 1..=retry.attempts.max(1) {
            let sent = client
                .post(&hook.url)
                .header("content-type", "application/json")
                .header("x-belt-signature", &sig)
                .header("x-belt-event", event.kind.type_name())
                .header("x-belt-delivery", &delivery)
                .body(body.clone())
                .send()
                .await;
            let (status, error) = match &sent {
                Ok(r) => (
                    Some(r.status().as_u16()),
                    (!r.status().is_success()).then(|| format!("HTTP {}", r.status())),
                ),
                Err(e) => (None, Some(e.to_string())),
            };
            let ok = error.is_none();
            *hook.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Attempt {
                event_type: event.kind.type_name().to_string(),
                run_id: event.run_id.to_string(),
                seq: event.seq,
                attempt,
                status,
                error,
                at: Utc::now(),
            });
            if ok {
                hook.delivered.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if attempt == retry.attempts.max(1) {
                hook.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            hook.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
        hook.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every event type, as webhooks may filter them (belt-core's list).
pub const EVENT_TYPES: &[&str] = belt_core::EventKind::TYPES;

pub(crate) async fn create(
    State(app): State<AppState>,
    body: Result<Json<WebhookSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<WebhookInfo>), ApiError> {
    let Json(spec) = body?;
    Ok((StatusCode::CREATED, Json(app.webhooks.add(spec)?)))
}

pub(crate) async fn list(State(app): State<AppState>) -> Json<WebhookList> {
    Json(WebhookList { webhooks: app.webhooks.list() })
}

pub(crate) async fn delete(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.webhooks.remove(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no webhook has the id `{id}`; GET /v1/webhooks lists them")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256_and_verify() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify("Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify("other", b"what do ya want for nothing?", &sig));
    }
}

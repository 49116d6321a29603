//! Per-provider limits shared by every run and branch in the process: concurrent calls,
//! requests per minute, tokens per minute, adaptive slow-down on 429, and a circuit
//! breaker per model.
//!
//! A [`Limiter`] belongs to a provider in [`crate::Providers`], which every run of the
//! process shares, so fifty parallel branches of three runs all queue behind one limit —
//! the 429 storms of frameworks that limit per branch do not happen.
//!
//! The engine takes a [`Slot`] before each call ([`Limiter::acquire`]), which waits for a
//! free concurrent slot and for the request and token budgets of the current minute,
//! reserving the call's estimated tokens; then [`Limiter::settle`] refunds what the call
//! did not use, and feeds the outcome to the adaptive limit and the breaker. The token
//! buckets are written here rather than taken from `governor` because a reservation must be
//! refunded when the call turns out smaller, which GCRA limiters cannot do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
// Tokio's clock: the same as the system's, and paused in tests.
use tokio::time::Instant;

use crate::llm::error::LlmError;

/// Limits of one provider. `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens (input + output) per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Consecutive failures of a model that open its breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker stays open before one trial call.
    #[serde(default = "default_breaker_cooldown", with = "crate::policy::duration_ms")]
    pub breaker_cooldown: Duration,
    /// The longest a provider's Retry-After is obeyed.
    #[serde(default = "default_max_pause", with = "crate::policy::duration_ms")]
    pub max_pause: Duration,
    /// The longest a step waits for an open breaker to close when no fallback model is
    /// left (a server restarting, a short outage): its calls pause until the half-open trial
    /// succeeds, instead of failing one after another. Past it the step fails and the run
    /// ends partial, to be finished by `belt resume --retry-failed` once the model is back.
    #[serde(default = "default_breaker_max_wait", with = "crate::policy::duration_ms")]
    pub breaker_max_wait: Duration,
}

fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_max_pause() -> Duration {
    Duration::from_secs(60)
}
fn default_breaker_max_wait() -> Duration {
    Duration::from_secs(300)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrency: None,
            rpm: None,
            tpm: None,
            breaker_failures: default_breaker_failures(),
            breaker_cooldown: default_breaker_cooldown(),
            max_pause: default_max_pause(),
            breaker_max_wait: default_breaker_max_wait(),
        }
    }
}

/// The limits shared through a store could not be taken or given back (the store is
/// unreachable); the message says why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the limits shared through the store are unavailable: {0}")]
pub struct Unavailable(pub String);

/// A call's place under the shared limits, to give back with [`SharedLimits::release`].
#[derive(Debug, Clone, PartialEq)]
pub struct SharedTicket {
    /// The backend's name for what was taken (a slot's row).
    pub id: i64,
    pub provider: Arc<str>,
    /// Tokens taken from the minute's bucket (refunded in part when the call used fewer).
    pub tokens: u64,
}

/// Limits summed over every process of a store; see the module docs.
#[async_trait]
pub trait SharedLimits: Send + Sync + 'static {
    /// Wait until a call to `provider` may start under `limits` summed over every process: a
    /// concurrency slot (with `max_concurrency`), one request and `tokens` tokens from the
    /// per-minute buckets (with `rpm`, `tpm`), and no pause in force.
    async fn acquire(
        &self,
        provider: &str,
        limits: &Limits,
        tokens: u64,
    ) -> Result<SharedTicket, Unavailable>;
    /// The call ended: free its slot, refund the tokens it did not use, and after a 429 pause
    /// every process's calls to the provider for `pause`.
    async fn release(
        &self,
        ticket: SharedTicket,
        limits: &Limits,
        used_tokens: u64,
        pause: Option<Duration>,
    ) -> Result<(), Unavailable>;
}

/// A ticket that gives itself back when dropped without [`HeldTicket::release`] (a call
/// cancelled in flight): its slot is freed, its tokens counted as used.
pub struct HeldTicket {
    gate: Arc<dyn SharedLimits>,
    limits: Limits,
    ticket: Option<SharedTicket>,
}

impl HeldTicket {
    pub fn new(gate: Arc<dyn SharedLimits>, limits: Limits, ticket: SharedTicket) -> HeldTicket {
        HeldTicket { gate, limits, ticket: Some(ticket) }
    }

    /// Give the ticket back in the background: the call's end must not wait on the database.
    pub fn release(mut self, used_tokens: u64, pause: Option<Duration>) {
        if let Some(ticket) = self.ticket.take() {
            spawn_release(self.gate.clone(), self.limits, ticket, used_tokens, pause);
        }
    }
}

impl Drop for HeldTicket {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let used = ticket.tokens;
            spawn_release(self.gate.clone(), self.limits, ticket, used, None);
        }
    }
}

fn spawn_release(
    gate: Arc<dyn SharedLimits>,
    limits: Limits,
    ticket: SharedTicket,
    used: u64,
    pause: Option<Duration>,
) {
    // Outside a runtime (a process shutting down) the holder's liveness frees it instead.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            if let Err(e) = gate.release(ticket, &limits, used, pause).await {
                tracing::warn!("could not give back a shared limit slot: {e}");
            }
        });
    }
}

/// How long a call waits for an open breaker to let it through ([`Limiter::acquire_until`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerWait {
    /// Not at all: fail with [`LlmError::CircuitOpen`] at once.
    FailFast,
    /// Until this moment.
    Until(Instant),
    /// This long from when the call finds the breaker open.
    For(Duration),
}

/// A change of a breaker's state, for the run that saw it to report.
#[derive(Debug, Clone, PartialEq)]
pub enum BreakerChange {
    Opened { model: String, failures: u32 },
    Closed { model: String },
}

/// The limits of one provider, with their state.
pub struct Limiter {
    limits: Limits,
    /// The same limits summed over every process of a shared store, with the provider's
    /// name there (see [`SharedLimits`]).
    shared: std::sync::OnceLock<(Arc<str>, Arc<dyn SharedLimits>)>,
    /// Slots for concurrent calls; fewer are handed out while the adaptive limit is cut.
    slots: Arc<Semaphore>,
    state: Mutex<State>,
    /// Wakes the calls waiting out an open breaker when it closes, opens again, or its
    /// trial ends without a verdict.
    breaker_changed: tokio::sync::Notify,
    /// How many calls the provider's server runs at once, as it said when first asked
    /// ([`Limiter::adopt_server_slots`]).
    server_slots: tokio::sync::OnceCell<Option<usize>>,
}

struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// No call starts before this (a provider's Retry-After).
    paused_until: Option<Instant>,
    /// Permits withheld from `slots` by the adaptive limit.
    withheld: usize,
    /// Permits still to withhold as they come back from calls in flight.
    debt: usize,
    /// Permits still to withdraw for good (a server's slot count adopted while calls were
    /// in flight): unlike `debt`, never recovered.
    cap_debt: usize,
    successes: u32,
    breakers: HashMap<String, Breaker>,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    trial_running: bool,
}

/// Capacity `per_minute`, refilled continuously. Its level may go below zero: a caller
/// that reserves more than is there waits until its share has been refilled, so callers
/// are served in the order they reserved.
struct Bucket {
    level: f64,
    per_minute: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_minute: f64) -> Self {
        Bucket { level: per_minute, per_minute, at: Instant::now() }
    }
    fn refill(&mut self, now: Instant) {
        let added = now.duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        self.level = (self.level + added).min(self.per_minute);
        self.at = now;
    }
    /// Take `n` (at most the capacity); how long until they exist.
    fn take(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.level -= n.min(self.per_minute);
        if self.level >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.level * 60.0 / self.per_minute)
        }
    }
    fn give_back(&mut self, n: f64) {
        self.level = (self.level + n).min(self.per_minute);
    }
}

/// A call's place under the limits; give it back with [`Limiter::settle`].
pub struct Slot<'m> {
    _permit: OwnedSemaphorePermit,
    model: &'m str,
    reserved_tokens: u64,
    trial: bool,
    /// The call's place under the shared limits. Boxed: most runs share nothing, and every
    /// waiting call holds a slot.
    shared: Option<Box<HeldTicket>>,
    /// Milliseconds this call waited for the limits (a concurrent slot, the minute's
    /// requests and tokens, a 429 pause, an open breaker): the time a trace shows as
    /// "waiting for limits" rather than "in the provider".
    pub waited_ms: u32,
}

/// What settling needs of a slot once its permit is back.
struct SlotInfo<'m> {
    model: &'m str,
    trial: bool,
}

/// Unlimited concurrency is this many slots.
const UNLIMITED: usize = Semaphore::MAX_PERMITS >> 4;

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        let slots = limits.max_concurrency.map_or(UNLIMITED, |n| n.max(1));
        Limiter {
            limits,
            shared: std::sync::OnceLock::new(),
            slots: Arc::new(Semaphore::new(slots)),
            state: Mutex::new(State {
                requests: limits.rpm.map(|r| Bucket::new(f64::from(r.max(1)))),
                tokens: limits.tpm.map(|t| Bucket::new(t.max(1) as f64)),
                paused_until: None,
                withheld: 0,
                debt: 0,
                cap_debt: 0,
                successes: 0,
                breakers: HashMap::new(),
            }),
            breaker_changed: tokio::sync::Notify::new(),
            server_slots: tokio::sync::OnceCell::new(),
        }
    }

    /// True until the server has been asked how many calls it runs at once.
    pub fn server_slots_unknown(&self) -> bool {
        !self.server_slots.initialized()
    }

    /// Ask the server, once for the limiter's life, how many calls it runs at once
    /// (`ask`: [`crate::llm::LlmProvider::server_slots`]). With no configured
    /// `max_concurrency`, that becomes the concurrency: calls past it would only queue
    /// inside the server, where their timeouts run (a local server with 4 slots and
    /// belt's 16 calls timed out 8 of 12 workers). A configured limit above it is kept,
    /// with a warning.
    pub async fn adopt_server_slots(
        &self,
        provider: &str,
        ask: impl std::future::Future<Output = Option<usize>>,
    ) {
        self.server_slots
            .get_or_init(|| async {
                let slots = ask.await?.max(1);
                match self.limits.max_concurrency {
                    None => {
                        tracing::info!("{provider} runs {slots} calls at once: belt sends no more than that");
                        self.cap_concurrency(slots);
                    }
                    Some(max) if max > slots => tracing::warn!(
                        "{provider} runs {slots} calls at once but max_concurrency is {max}: the calls past \
                         {slots} wait inside the server, where their timeouts run; set max_concurrency = \
                         {slots} in belt.toml"
                    ),
                    Some(_) => {}
                }
                Some(slots)
            })
            .await;
    }

    /// Hand out at most `n` slots from now on: the ones free now are withdrawn at once, the
    /// rest as calls in flight give them back.
    fn cap_concurrency(&self, n: usize) {
        let cut = UNLIMITED.saturating_sub(n);
        let now = self.slots.forget_permits(cut);
        self.lock().cap_debt += cut - now;
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Hold this provider's limits across every process of a shared store too, where the
    /// provider is named `provider`. Once; later calls change nothing. Limits with no
    /// concurrency, request or token cap have nothing to share.
    pub fn share(&self, provider: &str, gate: Arc<dyn SharedLimits>) {
        let l = &self.limits;
        if l.max_concurrency.is_some() || l.rpm.is_some() || l.tpm.is_some() {
            let _ = self.shared.set((Arc::from(provider), gate));
        }
    }

    /// True when calls also take a place under limits shared with other processes.
    pub fn is_shared(&self) -> bool {
        self.shared.get().is_some()
    }

    /// Take `slot`'s place under the shared limits, if this limiter has any: waits for a
    /// slot, the minute's request and tokens, and the end of a pause, summed over every
    /// process. Fails only when the store does.
    pub async fn acquire_shared(&self, slot: &mut Slot<'_>) -> Result<(), Unavailable> {
        let Some((provider, gate)) = self.shared.get() else { return Ok(()) };
        let from = Instant::now();
        let ticket = gate.acquire(provider, &self.limits, slot.reserved_tokens).await?;
        let waited = from.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        slot.waited_ms = slot.waited_ms.saturating_add(waited);
        slot.shared = Some(Box::new(HeldTicket::new(gate.clone(), self.limits, ticket)));
        Ok(())
    }

    /// Wait for a slot for a call to `model` that may use up to `tokens` tokens. Fails at
    /// once with [`LlmError::CircuitOpen`] while the model's breaker is open.
    pub async fn acquire<'m>(&self, model: &'m str, tokens: u64) -> Result<Slot<'m>, LlmError> {
        self.acquire_until(model, tokens, BreakerWait::FailFast).await
    }

    /// [`Limiter::acquire`], but while the model's breaker is open wait, as `wait` says,
    /// for it to let a call through: the half-open trial (which this call may be) or the
    /// close that follows a successful one. Fails with [`LlmError::CircuitOpen`] once the
    /// wait is over.
    pub async fn acquire_until<'m>(
        &self,
        model: &'m str,
        tokens: u64,
        wait: BreakerWait,
    ) -> Result<Slot<'m>, LlmError> {
        match self.acquire_now(model, tokens) {
            Some(slot) => Ok(slot),
            // Boxed: the waits' state (timers, the semaphore's queue entry) would otherwise
            // sit in every waiting call's future, though most calls wait for nothing here.
            None => Box::pin(self.acquire_waiting(model, tokens, wait)).await,
        }
    }

    /// A slot at once, when nothing has to be waited for: the model's breaker closed, no
    /// pause, a free concurrent slot, and the minute's requests and tokens there to take.
    /// `None` (and nothing taken) otherwise.
    fn acquire_now<'m>(&self, model: &'m str, tokens: u64) -> Option<Slot<'m>> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let mut s = self.lock();
        // (A lookup in an empty map still hashes the name: most models never failed.)
        if !s.breakers.is_empty() && s.breakers.get(model).is_some_and(|b| b.open_until.is_some()) {
            return None;
        }
        if s.paused_until.is_some() || s.requests.is_some() || s.tokens.is_some() {
            let now = Instant::now();
            if s.paused_until.is_some_and(|t| t > now) {
                return None;
            }
            let available = |b: &mut Option<Bucket>, n: f64| {
                b.as_mut().is_none_or(|b| {
                    b.refill(now);
                    b.level >= n.min(b.per_minute)
                })
            };
            if !(available(&mut s.requests, 1.0) && available(&mut s.tokens, tokens as f64)) {
                return None;
            }
            // Both are there (checked above): taking them costs no wait.
            if let Some(b) = s.requests.as_mut() {
                b.take(1.0, now);
            }
            if let Some(b) = s.tokens.as_mut() {
                b.take(tokens as f64, now);
            }
        }
        drop(s);
        Some(Slot {
            _permit: permit,
            model,
            reserved_tokens: tokens,
            trial: false,
            shared: None,
            waited_ms: 0,
        })
    }

    /// [`Limiter::acquire_until`] when something may have to be waited for.
    async fn acquire_waiting<'m>(
        &self,
        model: &'m str,
        tokens: u64,
        wait: BreakerWait,
    ) -> Result<Slot<'m>, LlmError> {
        // What was waited, summed without reading the clock where the wait's length is known
        // (a pause, a bucket's refill) or there was no wait (a free slot).
        let mut waited = Duration::ZERO;
        let trial = match self.check_breaker(model) {
            Ok(trial) => trial,
            Err(open) => {
                // The clock is read only here, on the rare path.
                let from = Instant::now();
                let until = match wait {
                    BreakerWait::FailFast => return Err(open),
                    BreakerWait::Until(until) => until,
                    BreakerWait::For(d) => from + d,
                };
                let trial = Box::pin(self.wait_out_breaker(model, open, until)).await?;
                waited += from.elapsed();
                trial
            }
        };
        loop {
            let pause = self.lock().paused_until.and_then(|t| t.checked_duration_since(Instant::now()));
            match pause {
                Some(p) if !p.is_zero() => {
                    tokio::time::sleep(p).await;
                    waited += p;
                }
                _ => break,
            }
        }
        // A free slot is taken without reading the clock; only a wait for one is timed.
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let from = Instant::now();
                let permit = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| LlmError::Connection("limiter closed".into()))?;
                waited += from.elapsed();
                permit
            }
        };
        let wait = {
            let mut s = self.lock();
            let now = Instant::now();
            let r = s.requests.as_mut().map_or(Duration::ZERO, |b| b.take(1.0, now));
            let t = s.tokens.as_mut().map_or(Duration::ZERO, |b| b.take(tokens as f64, now));
            r.max(t)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        let waited_ms = waited.as_millis().min(u128::from(u32::MAX)) as u32;
        Ok(Slot { _permit: permit, model, reserved_tokens: tokens, trial, shared: None, waited_ms })
    }

    /// Account for a finished call: refund unused tokens, adapt to 429s, move the breaker.
    pub fn settle(
        &self,
        slot: Slot<'_>,
        used_tokens: u64,
        outcome: Result<(), &LlmError>,
    ) -> Option<BreakerChange> {
        let trial = slot.trial;
        let change = self.settle_slot(slot, used_tokens, outcome);
        // A trial's end (whatever it was) and any change of state may let waiters through.
        if trial || change.is_some() {
            self.breaker_changed.notify_waiters();
        }
        change
    }

    fn settle_slot(
        &self,
        slot: Slot<'_>,
        used_tokens: u64,
        outcome: Result<(), &LlmError>,
    ) -> Option<BreakerChange> {
        let Slot { _permit: permit, model, reserved_tokens, trial, shared, .. } = slot;
        let slot = SlotInfo { model, trial };
        drop(permit);
        if let Some(ticket) = shared {
            // A 429 pauses every process, as it pauses every run of this one.
            let pause = match outcome {
                Err(LlmError::RateLimited { retry_after, .. }) => {
                    Some(retry_after.unwrap_or(Duration::from_secs(1)).min(self.limits.max_pause))
                }
                _ => None,
            };
            ticket.release(used_tokens, pause);
        }
        let mut s = self.lock();
        // A pending cut takes the permits that come back first.
        if s.cap_debt > 0 {
            let taken = self.slots.forget_permits(s.cap_debt);
            s.cap_debt -= taken;
        }
        if s.debt > 0 {
            let taken = self.slots.forget_permits(s.debt);
            s.debt -= taken;
            s.withheld += taken;
        }
        if let Some(b) = s.tokens.as_mut() {
            b.give_back(reserved_tokens.saturating_sub(used_tokens) as f64);
        }
        match outcome {
            Ok(()) => {
                // Recover one slot per ten successes (additive increase).
                s.successes += 1;
                if s.successes >= 10 && s.withheld + s.debt > 0 {
                    s.successes = 0;
                    if s.debt > 0 {
                        s.debt -= 1;
                    } else {
                        s.withheld -= 1;
                        self.slots.add_permits(1);
                    }
                }
                // Most calls succeed on a model whose breaker never tripped: no map work
                // (a lookup in an empty map would still hash the name).
                if s.breakers.is_empty() {
                    return None;
                }
                let b = s.breakers.get_mut(slot.model)?;
                let was_open = b.open_until.is_some();
                *b = Breaker::default();
                was_open.then(|| BreakerChange::Closed { model: slot.model.to_string() })
            }
            Err(LlmError::RateLimited { retry_after, .. }) => {
                // Everyone waits what the provider asked, and half the slots go (multiplicative
                // decrease), so the storm stops instead of every branch retrying into it.
                let pause = retry_after.unwrap_or(Duration::from_secs(1)).min(self.limits.max_pause);
                let until = Instant::now() + pause;
                s.paused_until = Some(s.paused_until.map_or(until, |t| t.max(until)));
                if let Some(max) = self.limits.max_concurrency {
                    let max = max.max(1);
                    let allowed = max - (s.withheld + s.debt).min(max - 1);
                    let cut = allowed / 2;
                    let now = self.slots.forget_permits(cut);
                    s.withheld += now;
                    s.debt += cut - now;
                }
                s.successes = 0;
                self.release_trial(&mut s, slot.model);
                None
            }
            Err(e) if counts_for_breaker(e) => {
                let threshold = self.limits.breaker_failures.max(1);
                let cooldown = self.limits.breaker_cooldown;
                let b = s.breakers.entry(slot.model.to_string()).or_default();
                b.failures += 1;
                b.trial_running = false;
                let opens = b.failures >= threshold || slot.trial;
                if opens {
                    let newly = b.open_until.is_none();
                    b.open_until = Some(Instant::now() + cooldown);
                    let failures = b.failures;
                    return newly.then(|| BreakerChange::Opened { model: slot.model.to_string(), failures });
                }
                None
            }
            Err(_) => {
                self.release_trial(&mut s, slot.model);
                None
            }
        }
    }

    /// Wait until `model`'s breaker lets a call through or `until` passes. Each round arms
    /// the notification before looking at the breaker, so a change between the look and the
    /// wait is not missed.
    async fn wait_out_breaker(
        &self,
        model: &str,
        mut open: LlmError,
        until: Instant,
    ) -> Result<bool, LlmError> {
        loop {
            if Instant::now() >= until {
                return Err(open);
            }
            // Wake at the end of the cooldown (to become the trial), at a change, or at `until`.
            let reopens = self.lock().breakers.get(model).and_then(|b| b.open_until);
            let wake = reopens.filter(|t| *t > Instant::now()).map_or(until, |t| t.min(until));
            let changed = self.breaker_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.check_breaker(model) {
                Ok(trial) => return Ok(trial),
                Err(still) => open = still,
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// True while `model`'s breaker is open or half-open: a failure now is part of an
    /// outage already known, not news about this call.
    pub fn breaker_open(&self, model: &str) -> bool {
        let s = self.lock();
        !s.breakers.is_empty() && s.breakers.get(model).is_some_and(|b| b.open_until.is_some())
    }

    /// `Ok(true)` for the one trial call of a half-open breaker.
    fn check_breaker(&self, model: &str) -> Result<bool, LlmError> {
        let mut s = self.lock();
        if s.breakers.is_empty() {
            return Ok(false);
        }
        let Some(b) = s.breakers.get_mut(model) else { return Ok(false) };
        match b.open_until {
            None => Ok(false),
            Some(until) if Instant::now() < until || b.trial_running => {
                Err(LlmError::CircuitOpen { model: model.to_string(), failures: b.failures, waited: None })
            }
            Some(_) => {
                b.trial_running = true;
                Ok(true)
            }
        }
    }

    fn release_trial(&self, s: &mut State, model: &str) {
        if let Some(b) = s.breakers.get_mut(model) {
            b.trial_running = false;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Failures that say the model or its server is unwell (not the request, not the budget).
fn counts_for_breaker(e: &LlmError) -> bool {
    matches!(
        e,
        LlmError::Server { .. }
            | LlmError::Overloaded { .. }
            | LlmError::Timeout(_)
            | LlmError::Connection(_)
            | LlmError::BadResponse(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> LlmError {
        LlmError::Server { status: 500, message: "boom".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_space_calls_out() {
        let l = Limiter::new(Limits { rpm: Some(60), ..Limits::default() });
        let start = tokio::time::Instant::now();
        for _ in 0..62 {
            let slot = l.acquire("m", 0).await.unwrap();
            l.settle(slot, 0, Ok(()));
        }
        // 60 fit in the first minute's bucket; the next two wait a second each.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(1990) && waited < Duration::from_secs(3), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_says_how_long_it_waited_for_the_limits() {
        let l =
            Arc::new(Limiter::new(Limits { max_concurrency: Some(1), rpm: Some(60), ..Limits::default() }));
        let first = l.acquire("m", 0).await.unwrap();
        assert_eq!(first.waited_ms, 0, "a free slot is not a wait");
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.acquire("m", 0).await.map(|s| s.waited_ms) }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        l.settle(first, 0, Ok(()));
        let waited = waiter.await.unwrap().unwrap();
        assert!((690..=760).contains(&waited), "the concurrent slot's wait: {waited} ms");
        // The minute's requests run out (60 at 1 a second, 0.7 s of which have refilled
        // 0.7 of one): the rest of the refill, 0.3 s, is the wait.
        for _ in 0..58 {
            let slot = l.acquire("m", 0).await.unwrap();
            l.settle(slot, 0, Ok(()));
        }
        let slot = l.acquire("m", 0).await.unwrap();
        assert!((290..=310).contains(&slot.waited_ms), "{}", slot.waited_ms);
    }

    #[tokio::test(start_paused = true)]
    async fn unused_tokens_are_refunded() {
        let l = Limiter::new(Limits { tpm: Some(1000), ..Limits::default() });
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            // Reserve 500, use 10: without refunds the third call would wait.
            let slot = l.acquire("m", 500).await.unwrap();
            l.settle(slot, 10, Ok(()));
        }
        assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
        let slot = l.acquire("m", 1000).await.unwrap();
        l.settle(slot, 1000, Ok(()));
        let slot = l.acquire("m", 500).await.unwrap(); // the bucket is empty: 30 s
        drop(slot);
        assert!(start.elapsed() >= Duration::from_secs(29), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn concurrency_is_capped_and_a_429_pauses_and_halves_it() {
        let l = Arc::new(Limiter::new(Limits { max_concurrency: Some(8), ..Limits::default() }));
        let held: Vec<Slot> = futures_collect(&l, 8).await;
        assert_eq!(l.slots.available_permits(), 0);
        let mut held = held.into_iter();
        let limited =
            LlmError::RateLimited { retry_after: Some(Duration::from_millis(50)), message: String::new() };
        l.settle(held.next().unwrap(), 0, Err(&limited));
        // The allowed concurrency halves (8 -> 4) as the slots in use come back.
        assert_eq!(l.slots.available_permits(), 0);
        for s in held {
            l.settle(s, 0, Ok(()));
        }
        assert_eq!(l.slots.available_permits(), 4);
        let start = Instant::now();
        let s = l.acquire("m", 0).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30), "the pause is obeyed");
        l.settle(s, 0, Ok(()));
        // It recovers one slot per ten successes.
        for _ in 0..40 {
            let s = l.acquire("m", 0).await.unwrap();
            l.settle(s, 0, Ok(()));
        }
        assert_eq!(l.slots.available_permits(), 8);
    }

    async fn futures_collect(l: &Arc<Limiter>, n: usize) -> Vec<Slot<'static>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(l.acquire("m", 0).await.unwrap());
        }
        v
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_half_opens_and_closes() {
        let l = Limiter::new(Limits {
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(10),
            ..Limits::default()
        });
        for i in 1..=3 {
            let s = l.acquire("m", 0).await.unwrap();
            let change = l.settle(s, 0, Err(&server()));
            assert_eq!(change.is_some(), i == 3, "opens on the third failure");
        }
        assert!(matches!(l.acquire("m", 0).await, Err(LlmError::CircuitOpen { failures: 3, .. })));
        assert!(l.acquire("other", 0).await.is_ok(), "breakers are per model");
        tokio::time::advance(Duration::from_secs(11)).await;
        // Half-open: one trial; a second caller still fails fast.
        let trial = l.acquire("m", 0).await.unwrap();
        assert!(l.acquire("m", 0).await.is_err());
        assert_eq!(l.settle(trial, 0, Ok(())), Some(BreakerChange::Closed { model: "m".into() }));
        assert!(l.acquire("m", 0).await.is_ok());
        // A failed trial opens it again at once.
        for _ in 0..3 {
            let s = l.acquire("m", 0).await.unwrap();
            l.settle(s, 0, Err(&server()));
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        let trial = l.acquire("m", 0).await.unwrap();
        l.settle(trial, 0, Err(&server()));
        assert!(l.acquire("m", 0).await.is_err());
    }

    /// Calls that wait out an open breaker go through one at a time as its trial, and all
    /// together once a trial succeeds; a wait that runs out fails as a fail-fast call does.
    #[tokio::test(start_paused = true)]
    async fn waiting_calls_pass_after_a_successful_trial() {
        let l = Arc::new(Limiter::new(Limits {
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(10),
            ..Limits::default()
        }));
        let s = l.acquire("m", 0).await.unwrap();
        l.settle(s, 0, Err(&server()));
        let start = Instant::now();
        // Three waiters: the first to wake after the cooldown is the trial, and fails.
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    let s = l.acquire_until("m", 0, BreakerWait::For(Duration::from_secs(60))).await.unwrap();
                    let trial = s.trial;
                    let error = server();
                    let fails = trial && start.elapsed() < Duration::from_secs(15);
                    let change = l.settle(s, 0, if fails { Err(&error) } else { Ok(()) });
                    (trial, Instant::now(), change)
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for w in waiters {
            outcomes.push(w.await.unwrap());
        }
        // The first trial (at 10 s) failed and reopened the breaker; the second (at 20 s)
        // closed it, and the third caller went through with it.
        assert_eq!(outcomes.iter().filter(|o| o.0).count(), 2, "two trials");
        let last = outcomes.iter().map(|o| o.1).max().unwrap();
        assert!(last.duration_since(start) >= Duration::from_secs(20), "{:?}", last.duration_since(start));
        assert!(outcomes.iter().any(|o| o.2 == Some(BreakerChange::Closed { model: "m".into() })));
        // Fail fast while open; a wait that runs out gets the same error.
        let s = l.acquire("m", 0).await.unwrap();
        l.settle(s, 0, Err(&server()));
        assert!(l.acquire("m", 0).await.is_err());
        let r = l.acquire_until("m", 0, BreakerWait::For(Duration::from_secs(5))).await;
        assert!(matches!(r, Err(LlmError::CircuitOpen { .. })));
    }

    /// A server's slot count becomes the concurrency of a provider that set none, and the
    /// cut is not recovered by successes as a 429's is.
    #[tokio::test]
    async fn a_servers_slot_count_caps_an_unlimited_provider() {
        let l = Arc::new(Limiter::new(Limits::default()));
        let held = futures_collect(&l, 6).await;
        l.adopt_server_slots("p", async { Some(4) }).await;
        assert!(!l.server_slots_unknown());
        for s in held {
            l.settle(s, 0, Ok(()));
        }
        for _ in 0..50 {
            let s = l.acquire("m", 0).await.unwrap();
            l.settle(s, 0, Ok(()));
        }
        assert_eq!(l.slots.available_permits(), 4);
        // Asked once: a second answer changes nothing.
        l.adopt_server_slots("p", async { Some(1) }).await;
        assert_eq!(l.slots.available_permits(), 4);
    }
}

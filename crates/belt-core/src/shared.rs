//! What the processes sharing a store share beyond runs: provider limits and budget pools.
//!
//! A provider's [`Limits`] bound the calls of one process through its [`crate::limits::Limiter`].
//! Four workers with that limiter each would together make four times the calls the
//! provider allows — the 429 storms of frameworks that limit per process. With a
//! [`SharedLimits`] (PostgreSQL's, in belt-store), every call also takes its place under the
//! limits summed over every process: a concurrency slot, a request and its tokens from the
//! per-minute buckets, and no pause in force (a 429's Retry-After, seen by one process, pauses
//! all). The local limiter still runs first, so a process never asks the database for more
//! than its own limits allow.
//!
//! A budget pool ([`BudgetPools`]) is a named budget that every run of every process draws
//! from, capped per day and per month (UTC). It keeps a run's budget rule: each call reserves
//! its worst case in the pool before it is made, and is refused if that does not fit; the
//! reservation is settled to what the call cost. So `spent + reserved <= cap` holds in the
//! pool at every instant, however many processes race.
//!
//! Both hold what they hand out in the store, in the name of the process ("holder") that took
//! it; a process that dies without giving back loses its holdings once its liveness lapses,
//! so a killed worker neither keeps a concurrency slot nor a reservation for ever.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::budget::{Amount, Budget, Refusal, check};
use crate::limits::{Limits, SharedLimits, SharedTicket, Unavailable};

/// The caps of a budget pool, per UTC day and per UTC month. A cap left out is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolCaps {
    #[serde(default)]
    pub per_day: Budget,
    #[serde(default)]
    pub per_month: Budget,
}

/// A pool's reservation refused: which pool, which period, which cap.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRefusal {
    pub pool: String,
    /// `day` or `month`.
    pub period: &'static str,
    pub refusal: Refusal,
}

impl std::fmt::Display for PoolRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "budget pool `{}`, this {}'s cap: {}", self.pool, self.period, self.refusal)
    }
}

/// A pool as `belt budget show` lists it: this period's spent and reserved amounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    pub pool: String,
    /// `day` or `month`.
    pub period: String,
    /// The period's first instant, e.g. `2026-12-02` or `2026-12`.
    pub starts: String,
    pub spent: Amount,
    /// Reserved by calls in flight, in every process.
    pub reserved: Amount,
}

/// Budget pools kept in a store; see the module docs.
#[async_trait]
pub trait BudgetPools: Send + Sync + 'static {
    /// Reserve `amount` in `pool` for this process, if it fits under `caps` in the current
    /// day and month on top of what is spent and reserved there; a reservation id to settle.
    async fn reserve(
        &self,
        pool: &str,
        caps: &PoolCaps,
        amount: Amount,
    ) -> Result<Result<i64, PoolRefusal>, Unavailable>;
    /// Replace reservation `id` by what the call cost (`spent`; zero when it was not made).
    async fn settle(&self, pool: &str, id: i64, spent: Amount) -> Result<(), Unavailable>;
    /// Every pool's current day and month.
    async fn pools(&self) -> Result<Vec<PoolState>, Unavailable>;
}

/// The pool a run draws from: its name, its caps (from belt.toml), where it is kept.
#[derive(Clone)]
pub struct BudgetPool {
    pub name: String,
    pub caps: PoolCaps,
    pub pools: Arc<dyn BudgetPools>,
}

impl std::fmt::Debug for BudgetPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetPool")
            .field("name", &self.name)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

/// Shared limits and budget pools in process memory: what several runs of one process (or
/// the tests) share when the store is not shared with other processes.
#[derive(Default)]
pub struct MemoryShared {
    state: Mutex<MemoryState>,
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct MemoryState {
    in_flight: std::collections::HashMap<Arc<str>, usize>,
    next: i64,
    pools: std::collections::HashMap<String, (Amount, Amount)>,
    reservations: std::collections::HashMap<i64, Amount>,
}

impl MemoryShared {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl SharedLimits for MemoryShared {
    /// Concurrency only: in one process, the local limiter's buckets already hold.
    async fn acquire(
        &self,
        provider: &str,
        limits: &Limits,
        tokens: u64,
    ) -> Result<SharedTicket, Unavailable> {
        let provider: Arc<str> = Arc::from(provider);
        loop {
            let freed = self.freed.notified();
            {
                let mut s = self.lock();
                s.next += 1;
                let id = s.next;
                let n = s.in_flight.entry(provider.clone()).or_default();
                if limits.max_concurrency.is_none_or(|max| *n < max.max(1)) {
                    *n += 1;
                    return Ok(SharedTicket { id, provider, tokens });
                }
            }
            freed.await;
        }
    }

    async fn release(
        &self,
        ticket: SharedTicket,
        _: &Limits,
        _: u64,
        _: Option<Duration>,
    ) -> Result<(), Unavailable> {
        if let Some(n) = self.lock().in_flight.get_mut(&ticket.provider) {
            *n = n.saturating_sub(1);
        }
        self.freed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl BudgetPools for MemoryShared {
    /// One period (the process's life) stands for both the day and the month.
    async fn reserve(
        &self,
        pool: &str,
        caps: &PoolCaps,
        amount: Amount,
    ) -> Result<Result<i64, PoolRefusal>, Unavailable> {
        let mut s = self.lock();
        let (spent, reserved) = s.pools.get(pool).copied().unwrap_or_default();
        for (period, cap) in [("day", &caps.per_day), ("month", &caps.per_month)] {
            if let Err(refusal) = check(cap, spent.plus(reserved), amount) {
                return Ok(Err(PoolRefusal { pool: pool.to_string(), period, refusal }));
            }
        }
        s.next += 1;
        let id = s.next;
        s.reservations.insert(id, amount);
        s.pools.insert(pool.to_string(), (spent, reserved.plus(amount)));
        Ok(Ok(id))
    }

    async fn settle(&self, pool: &str, id: i64, spent: Amount) -> Result<(), Unavailable> {
        let mut s = self.lock();
        let Some(reserved) = s.reservations.remove(&id) else { return Ok(()) };
        let (was_spent, was_reserved) = s.pools.get(pool).copied().unwrap_or_default();
        let left = Amount {
            cost_usd: (was_reserved.cost_usd - reserved.cost_usd).max(0.0),
            tokens: was_reserved.tokens.saturating_sub(reserved.tokens),
            calls: was_reserved.calls.saturating_sub(reserved.calls),
        };
        s.pools.insert(pool.to_string(), (was_spent.plus(spent), left));
        Ok(())
    }

    async fn pools(&self) -> Result<Vec<PoolState>, Unavailable> {
        let s = self.lock();
        let mut all: Vec<PoolState> = s
            .pools
            .iter()
            .map(|(pool, (spent, reserved))| PoolState {
                pool: pool.clone(),
                period: "process".into(),
                starts: String::new(),
                spent: *spent,
                reserved: *reserved,
            })
            .collect();
        all.sort_by(|a, b| a.pool.cmp(&b.pool));
        Ok(all)
    }
}

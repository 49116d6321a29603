//! Provider limits and budget pools shared by every process of a PostgreSQL store (see
//! `belt_core::shared` for what they promise).
//!
//! **Liveness.** Each process records itself in `belt_processes` and renews its row every
//! `LEASE_TTL / 5`. Concurrency slots and pool reservations are held in the name of a
//! process; those of a process silent for `LEASE_TTL` (killed, cut off) are reclaimed by the
//! next process that takes a slot or reserves in the pool. A dead process's reservations are
//! booked as spent at their worst case: its calls in flight may have been billed, and a pool
//! must err towards stopping early, never towards passing its cap.
//!
//! **Limits.** One transaction per call, serialized per provider by an advisory lock:
//! - a pause in force (a 429's Retry-After, written by any process) makes the caller wait;
//! - `max_concurrency`: the live rows of `limit_slots` are counted, and a row is added when
//!   there is room; released when the call ends;
//! - `rpm`, `tpm`: token buckets in `limit_buckets`, refilled continuously from the database's
//!   clock (`clock_timestamp()`, so hosts with skewed clocks agree), of capacity one minute's
//!   worth. A reservation may take the level below zero; the caller then waits until its
//!   share is refilled, so callers are served in the order they reserved — the local
//!   limiter's rule, summed over every process. Tokens not used are refunded.
//!
//! Worst-case error: the shared concurrency is never above the cap (a slot is a row written
//! under the lock before the call starts); the buckets are exact up to the rounding of
//! floating-point levels; a pause reaches the other processes one database round trip after
//! the 429 arrives (calls they start in that window are not paused); a killed process's slots
//! stay taken until its liveness lapses (`LEASE_TTL`), so the others run below the cap for
//! that long, never above it.
//!
//! Within a process, the callers waiting for one provider queue behind a local lock, so a
//! process polls the database for a slot with one connection, not one per waiting call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use belt_core::budget::{Amount, check};
use belt_core::limits::{Limits, SharedLimits, SharedTicket, Unavailable};
use belt_core::shared::{BudgetPools, PoolCaps, PoolRefusal, PoolState};
use belt_core::store::{LEASE_TTL, StoreError};
use sqlx::{PgPool, Postgres, Row, Transaction};

/// How often a caller that found no free slot looks again.
const SLOT_POLL: Duration = Duration::from_millis(50);

/// Limits and budget pools of a PostgreSQL store, for one process.
pub struct PgShared {
    pool: PgPool,
    /// This process, as `belt_processes` knows it.
    holder: String,
    /// Per provider: the callers of this process waiting for a slot take turns here.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!("PostgreSQL: {e}"))
}

fn unavailable(e: sqlx::Error) -> Unavailable {
    Unavailable(format!("PostgreSQL: {e}"))
}

/// The holder of the row aliased `r` is alive (`$2`: the liveness TTL in seconds).
macro_rules! alive {
    () => {
        "EXISTS (SELECT 1 FROM belt_processes p WHERE p.holder = r.holder \
         AND p.heartbeat > clock_timestamp() - make_interval(secs => $2))"
    };
}

impl PgShared {
    /// Record this process as alive and keep it so while the returned value lives.
    pub async fn start(pool: PgPool, holder: String) -> Result<Arc<PgShared>, StoreError> {
        let me = Arc::new(PgShared { pool, holder, turns: Mutex::new(HashMap::new()) });
        me.beat().await.map_err(backend)?;
        let weak: Weak<PgShared> = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_TTL / 5).await;
                let Some(me) = weak.upgrade() else { return };
                if let Err(e) = me.beat().await {
                    tracing::warn!("could not renew this process's liveness in the store: {e}");
                }
            }
        });
        Ok(me)
    }

    async fn beat(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO belt_processes (holder, heartbeat) VALUES ($1, clock_timestamp()) \
             ON CONFLICT (holder) DO UPDATE SET heartbeat = excluded.heartbeat",
        )
        .bind(&self.holder)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    fn turn(&self, provider: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry(provider.to_string()).or_default().clone()
    }

    /// A transaction holding the advisory lock named `key`.
    async fn locked(&self, key: &str) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(key).execute(&mut *tx).await?;
        Ok(tx)
    }
}

/// What one try at a provider's limits came to.
enum Try {
    /// The ticket's slot id (0 without a concurrency limit) and how long to wait before the
    /// call for the buckets to refill.
    Taken(i64, Duration),
    /// Wait this long, then try again (a pause in force, or no free slot).
    Wait(Duration),
}

impl PgShared {
    async fn try_take(&self, provider: &str, limits: &Limits, tokens: u64) -> Result<Try, sqlx::Error> {
        let mut tx = self.locked(&format!("belt-limits:{provider}")).await?;
        let paused: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (until - clock_timestamp()))::float8 FROM limit_pauses WHERE provider = $1",
        )
        .bind(provider)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(secs) = paused.filter(|s| *s > 0.0) {
            tx.rollback().await?;
            return Ok(Try::Wait(Duration::from_secs_f64(secs).min(limits.max_pause)));
        }
        let mut slot = 0;
        if let Some(max) = limits.max_concurrency {
            let reap = concat!("DELETE FROM limit_slots r WHERE provider = $1 AND NOT ", alive!());
            sqlx::query(reap).bind(provider).bind(LEASE_TTL.as_secs_f64()).execute(&mut *tx).await?;
            let held: i64 = sqlx::query_scalar("SELECT count(*) FROM limit_slots WHERE provider = $1")
                .bind(provider)
                .fetch_one(&mut *tx)
                .await?;
            if held >= max.max(1) as i64 {
                // Committed all the same: the dead processes' slots were freed.
                tx.commit().await?;
                return Ok(Try::Wait(SLOT_POLL));
            }
            slot = sqlx::query_scalar(
                "INSERT INTO limit_slots (provider, holder, taken_at) VALUES ($1, $2, clock_timestamp()) RETURNING id",
            )
            .bind(provider)
            .bind(&self.holder)
            .fetch_one(&mut *tx)
            .await?;
        }
        let mut wait = Duration::ZERO;
        if let Some(rpm) = limits.rpm {
            wait = wait.max(take(&mut tx, provider, "requests", f64::from(rpm.max(1)), 1.0).await?);
        }
        if let Some(tpm) = limits.tpm {
            let cap = tpm.max(1) as f64;
            wait = wait.max(take(&mut tx, provider, "tokens", cap, (tokens as f64).min(cap)).await?);
        }
        tx.commit().await?;
        Ok(Try::Taken(slot, wait))
    }
}

/// Take `n` from bucket `kind` of `provider` (capacity `cap` a minute, refilled
/// continuously); how long until they exist.
async fn take(
    tx: &mut Transaction<'static, Postgres>,
    provider: &str,
    kind: &str,
    cap: f64,
    n: f64,
) -> Result<Duration, sqlx::Error> {
    sqlx::query(
        "INSERT INTO limit_buckets (provider, kind, level, at) VALUES ($1, $2, $3, clock_timestamp()) \
         ON CONFLICT (provider, kind) DO NOTHING",
    )
    .bind(provider)
    .bind(kind)
    .bind(cap)
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(
        "SELECT level, EXTRACT(EPOCH FROM (clock_timestamp() - at))::float8 AS elapsed FROM limit_buckets \
         WHERE provider = $1 AND kind = $2 FOR UPDATE",
    )
    .bind(provider)
    .bind(kind)
    .fetch_one(&mut **tx)
    .await?;
    let (level, elapsed): (f64, f64) = (row.try_get("level")?, row.try_get("elapsed")?);
    let level = (level + elapsed.max(0.0) * cap / 60.0).min(cap) - n;
    sqlx::query(
        "UPDATE limit_buckets SET level = $3, at = clock_timestamp() WHERE provider = $1 AND kind = $2",
    )
    .bind(provider)
    .bind(kind)
    .bind(level)
    .execute(&mut **tx)
    .await?;
    Ok(if level >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-level * 60.0 / cap) })
}

#[async_trait]
impl SharedLimits for PgShared {
    async fn acquire(
        &self,
        provider: &str,
        limits: &Limits,
        tokens: u64,
    ) -> Result<SharedTicket, Unavailable> {
        let turn = self.turn(provider);
        let queue = turn.lock().await;
        loop {
            match self.try_take(provider, limits, tokens).await.map_err(unavailable)? {
                Try::Wait(d) => tokio::time::sleep(d).await,
                Try::Taken(id, wait) => {
                    // The next caller of this process may reserve while this one waits.
                    drop(queue);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    return Ok(SharedTicket { id, provider: Arc::from(provider), tokens });
                }
            }
        }
    }

    async fn release(
        &self,
        ticket: SharedTicket,
        limits: &Limits,
        used_tokens: u64,
        pause: Option<Duration>,
    ) -> Result<(), Unavailable> {
        let run = async {
            let mut tx = self.locked(&format!("belt-limits:{}", ticket.provider)).await?;
            if ticket.id > 0 {
                sqlx::query("DELETE FROM limit_slots WHERE id = $1")
                    .bind(ticket.id)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(tpm) = limits.tpm
                && used_tokens < ticket.tokens
            {
                sqlx::query(
                    "UPDATE limit_buckets SET level = LEAST($3, level + $4) WHERE provider = $1 AND kind = $2",
                )
                .bind(&*ticket.provider)
                .bind("tokens")
                .bind(tpm.max(1) as f64)
                .bind((ticket.tokens - used_tokens) as f64)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(pause) = pause {
                sqlx::query(
                    "INSERT INTO limit_pauses (provider, until) \
                     VALUES ($1, clock_timestamp() + make_interval(secs => $2)) \
                     ON CONFLICT (provider) DO UPDATE SET until = GREATEST(limit_pauses.until, excluded.until)",
                )
                .bind(&*ticket.provider)
                .bind(pause.as_secs_f64())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        };
        run.await.map_err(unavailable)
    }
}

/// The current UTC day and month by the database's clock: `2026-12-02`, `2026-12`.
async fn periods(tx: &mut Transaction<'static, Postgres>) -> Result<(String, String), sqlx::Error> {
    let row = sqlx::query(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, \
         to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM') AS month",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.try_get("day")?, row.try_get("month")?))
}

/// Add `a` to what `pool` spent in `period` `starts`.
async fn book(
    tx: &mut Transaction<'static, Postgres>,
    pool: &str,
    period: &str,
    starts: &str,
    a: Amount,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO pool_spent (pool, period, starts, cost_usd, tokens, calls) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (pool, period, starts) DO UPDATE SET cost_usd = pool_spent.cost_usd + excluded.cost_usd, \
         tokens = pool_spent.tokens + excluded.tokens, calls = pool_spent.calls + excluded.calls",
    )
    .bind(pool)
    .bind(period)
    .bind(starts)
    .bind(a.cost_usd)
    .bind(a.tokens as i64)
    .bind(a.calls as i64)
    .execute(&mut **tx)
    .await
    .map(drop)
}

/// An amount from a row's `cost_usd`, `tokens` and `calls` columns.
fn amount(row: &sqlx::postgres::PgRow) -> Result<Amount, sqlx::Error> {
    let count = |c: &str| row.try_get::<i64, _>(c).map(|v| u64::try_from(v).unwrap_or(0));
    Ok(Amount { cost_usd: row.try_get("cost_usd")?, tokens: count("tokens")?, calls: count("calls")? })
}

/// What `pool` spent in `period` (`day` or `month`) `starts`.
async fn spent_in(
    tx: &mut Transaction<'static, Postgres>,
    pool: &str,
    period: &str,
    starts: &str,
) -> Result<Amount, sqlx::Error> {
    let row = sqlx::query(
        "SELECT cost_usd, tokens, calls FROM pool_spent WHERE pool = $1 AND period = $2 AND starts = $3",
    )
    .bind(pool)
    .bind(period)
    .bind(starts)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.as_ref().map(amount).transpose()?.unwrap_or_default())
}

/// What calls in flight hold reserved in `pool` in `period` (`day` or `month`) `starts`.
async fn reserved_in(
    tx: &mut Transaction<'static, Postgres>,
    pool: &str,
    period: &str,
    starts: &str,
) -> Result<Amount, sqlx::Error> {
    macro_rules! sum_where {
        ($column:literal) => {
            concat!(
                "SELECT COALESCE(SUM(cost_usd), 0)::float8 AS cost_usd, COALESCE(SUM(tokens), 0)::bigint AS tokens, \
                 COALESCE(SUM(calls), 0)::bigint AS calls FROM pool_reservations WHERE pool = $1 AND ",
                $column,
                " = $2"
            )
        };
    }
    let sql = if period == "month" { sum_where!("month") } else { sum_where!("day") };
    let row = sqlx::query(sql).bind(pool).bind(starts).fetch_one(&mut **tx).await?;
    amount(&row)
}

impl PgShared {
    /// Book the reservations of dead processes in `pool` as spent at their worst case.
    async fn reap_pool(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        pool: &str,
    ) -> Result<(), sqlx::Error> {
        let reap = concat!(
            "DELETE FROM pool_reservations r WHERE pool = $1 AND NOT ",
            alive!(),
            " RETURNING day, month, cost_usd, tokens, calls"
        );
        let dead = sqlx::query(reap).bind(pool).bind(LEASE_TTL.as_secs_f64()).fetch_all(&mut **tx).await?;
        for r in &dead {
            let (day, month): (String, String) = (r.try_get("day")?, r.try_get("month")?);
            let a = amount(r)?;
            book(tx, pool, "day", &day, a).await?;
            book(tx, pool, "month", &month, a).await?;
        }
        Ok(())
    }

    async fn try_reserve(
        &self,
        pool: &str,
        caps: &PoolCaps,
        a: Amount,
    ) -> Result<Result<i64, PoolRefusal>, sqlx::Error> {
        let mut tx = self.locked(&format!("belt-pool:{pool}")).await?;
        self.reap_pool(&mut tx, pool).await?;
        let (day, month) = periods(&mut tx).await?;
        for (period, starts, cap) in [("day", &day, &caps.per_day), ("month", &month, &caps.per_month)] {
            if cap.is_unlimited() {
                continue;
            }
            let used = spent_in(&mut tx, pool, period, starts)
                .await?
                .plus(reserved_in(&mut tx, pool, period, starts).await?);
            if let Err(refusal) = check(cap, used, a) {
                // Committed all the same: the dead processes' reservations were booked.
                tx.commit().await?;
                return Ok(Err(PoolRefusal { pool: pool.to_string(), period, refusal }));
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO pool_reservations (pool, holder, day, month, cost_usd, tokens, calls) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(pool)
        .bind(&self.holder)
        .bind(&day)
        .bind(&month)
        .bind(a.cost_usd)
        .bind(a.tokens as i64)
        .bind(a.calls as i64)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(id))
    }

    async fn try_settle(&self, pool: &str, id: i64, spent: Amount) -> Result<(), sqlx::Error> {
        let mut tx = self.locked(&format!("belt-pool:{pool}")).await?;
        let row = sqlx::query("DELETE FROM pool_reservations WHERE id = $1 RETURNING day, month")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        // Gone: reaped as a dead process's, and booked at its worst case then.
        if let Some(r) = row {
            let (day, month): (String, String) = (r.try_get("day")?, r.try_get("month")?);
            book(&mut tx, pool, "day", &day, spent).await?;
            book(&mut tx, pool, "month", &month, spent).await?;
        }
        tx.commit().await
    }
}

#[async_trait]
impl BudgetPools for PgShared {
    async fn reserve(
        &self,
        pool: &str,
        caps: &PoolCaps,
        amount: Amount,
    ) -> Result<Result<i64, PoolRefusal>, Unavailable> {
        self.try_reserve(pool, caps, amount).await.map_err(unavailable)
    }

    async fn settle(&self, pool: &str, id: i64, spent: Amount) -> Result<(), Unavailable> {
        self.try_settle(pool, id, spent).await.map_err(unavailable)
    }

    async fn pools(&self) -> Result<Vec<PoolState>, Unavailable> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let (day, month) = periods(&mut tx).await?;
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT pool FROM (SELECT pool FROM pool_spent WHERE (period = 'day' AND starts = $1) \
                 OR (period = 'month' AND starts = $2) UNION SELECT pool FROM pool_reservations) AS p ORDER BY pool",
            )
            .bind(&day)
            .bind(&month)
            .fetch_all(&mut *tx)
            .await?;
            let mut states = Vec::new();
            for pool in names {
                for (period, starts) in [("day", &day), ("month", &month)] {
                    let spent = spent_in(&mut tx, &pool, period, starts).await?;
                    let reserved = reserved_in(&mut tx, &pool, period, starts).await?;
                    states.push(PoolState {
                        pool: pool.clone(),
                        period: period.into(),
                        starts: starts.clone(),
                        spent,
                        reserved,
                    });
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(states)
        };
        run.await.map_err(unavailable)
    }
}

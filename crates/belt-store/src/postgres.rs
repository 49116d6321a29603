//! The PostgreSQL run store: one database shared by every process and machine that drives,
//! serves or follows runs.
//!
//! It keeps the same records as the SQLite store ([`crate::SqliteStore`]), with the same
//! semantics (one conformance suite runs against both and the in-memory store), in tables
//! of its own schema (`migrations-postgres/`). A URL's `options` choose the schema, e.g.
//! `postgres://belt@db/belt?options=-csearch_path%3Dteam_a`.
//!
//! Design notes:
//!
//! - **The database's clock.** Lease times (`heartbeat_at`) and cache expiries are written
//!   and compared with `now()` on the server, never the host's clock, so workers on hosts
//!   whose clocks disagree still agree on whose lease expired. A lease expires
//!   [`LEASE_TTL`] after its last heartbeat.
//! - **Taking runs: `FOR UPDATE SKIP LOCKED`.** [`RunStore::take_runs`] selects the oldest
//!   free runs (queued, or running under an expired lease; never one whose cancellation was
//!   asked for) with `FOR UPDATE SKIP LOCKED` and marks them running under the caller's lease
//!   in the same statement. A run another taker has locked is skipped rather than waited
//!   for, and one it took meanwhile fails the re-check PostgreSQL makes on the locked row, so
//!   no run is handed out twice and takers never queue behind one another.
//!   [`RunStore::claim`], [`RunStore::take_queued`], [`RunStore::release`] and
//!   [`RunStore::request_cancel`] are each one conditional statement, atomic under
//!   PostgreSQL's row locks: a cancel asked for while a run is queued is seen by every later
//!   take.
//! - **Following runs: `LISTEN/NOTIFY`.** [`RunStore::append_events`] inserts a batch and
//!   calls `pg_notify('belt_events', run_id)` in the same statement, so the notification goes
//!   out when the batch is committed and visible. One listener connection per store (started
//!   by the first [`RunStore::wait_events`]) fans notifications out to the waiters of each
//!   run. A waiter registers before it reads, so a batch committed after its read always
//!   wakes it. Notifications sent while the listener was not listening are lost: after every
//!   (re)connection it wakes every waiter to read again, while it is down waiters poll every
//!   [`EVENT_POLL`], and each waiter reads again at least every [`FOLLOW_RECHECK`] in any
//!   case (a connection that died silently is noticed by nobody). No waiter ever waits past
//!   its timeout.
//! - **Durability.** [`RunStore::put_step`] is one autocommitted `INSERT`: it returns once
//!   PostgreSQL committed it, durable under the server's `synchronous_commit` (on by
//!   default: flushed to the WAL, and to a synchronous standby if one is configured). The
//!   server's own group commit batches concurrent steps; there is no client-side batching.
//!   Recording a step again replaces the earlier record, as in SQLite.
//! - **Bounded waits.** Connecting gives up after [`CONNECT_TIMEOUT`], waiting for a pooled
//!   connection after [`ACQUIRE_TIMEOUT`], and a statement after [`STATEMENT_TIMEOUT`]
//!   (on the server, and on the client for a server that stopped answering). A lost
//!   connection is a [`StoreError::Backend`] that says so; the pool reconnects for the next
//!   operation.
//! - **What reads back wrong is damage.** Every column is decoded through `col`, so a value
//!   that does not decode is [`StoreError::Damaged`], as in SQLite, never a panic.
//!
//! Not yet: TLS (sqlx is built without a TLS backend, so `sslmode=require` fails to
//! connect); the server must be reached over a private network or a tunnel.
//!
//! Types: counts are `BIGINT`, costs `DOUBLE PRECISION`, flags `BOOLEAN`, times
//! `TIMESTAMPTZ` (microseconds: a run's start time reads back truncated to the microsecond),
//! a finished run's result LZ4-compressed `BYTEA` as in SQLite, a step's output `BYTEA`
//! (UTF-8; a `TEXT` column refuses the NUL character a model may write).

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use belt_core::StepReply;
use belt_core::event::Event;
use belt_core::result::{RunResult, RunStatus};
use belt_core::step::{StepId, Tier};
use belt_core::store::LetterWork;
use belt_core::store::{
    CancelRequest, DeadLetter, EVENT_POLL, InputHash, LEASE_TTL, Lease, RunRecord, RunStore, RunSummary,
    StepRecord, StoreError,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::event_row;
use crate::rows::{col, count, opt_count, outcome, status, within};
use crate::shared::PgShared;
use crate::sqlite::unpack;

/// How long opening the store waits for the server to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation waits for a connection from the pool (or a new one).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one statement may run (`statement_timeout` on the server).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a follower reads a run's events again even when no notification came.
pub const FOLLOW_RECHECK: Duration = Duration::from_secs(5);
/// Connections per store: steps of one run are written side by side, each on one.
const MAX_CONNECTIONS: u32 = 16;
/// The channel [`RunStore::append_events`] notifies, with the run id as payload.
const CHANNEL: &str = "belt_events";
/// The longest payload sent; a longer run id is sent as an empty payload, which wakes
/// every follower (PostgreSQL refuses payloads of 8000 bytes and more).
const MAX_PAYLOAD: usize = 7000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// A run store in a PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
    at: Arc<Place>,
    options: PgConnectOptions,
    /// This process's share of the limits and budget pools (see [`crate::shared`]).
    shared: Arc<PgShared>,
    followers: Arc<Followers>,
    /// The listener task, started by the first follower; aborted with the store.
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

/// Where the store is, for messages: never with the password.
#[derive(Debug)]
struct Place {
    /// The URL with its password replaced by `***`.
    url: String,
    /// `host:port`, or the socket directory.
    server: String,
    user: String,
    database: String,
}

impl Place {
    fn of(url: String, options: &PgConnectOptions) -> Self {
        let server = match options.get_socket() {
            Some(dir) => dir.display().to_string(),
            None => format!("{}:{}", options.get_host(), options.get_port()),
        };
        let user = options.get_username().to_string();
        let database = options.get_database().unwrap_or(&user).to_string();
        Place { url, server, user, database }
    }

    /// A failure to connect, said for what it is.
    fn connect_error(&self, e: &sqlx::Error) -> StoreError {
        let server = &self.server;
        let check = "check --store / BELT_STORE";
        let text = match e {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
                "cannot connect to PostgreSQL at {server}: connection refused; is the server running? {check}"
            ),
            sqlx::Error::Io(io) if io.to_string().contains("lookup address") => {
                format!(
                    "cannot connect to PostgreSQL at {server}: the host name does not resolve ({io}); {check}"
                )
            }
            sqlx::Error::Io(io) => {
                format!("cannot connect to PostgreSQL at {server}: {io}; is the server running? {check}")
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("28P01") => {
                    format!("PostgreSQL at {server} refused the password of user `{}`; {check}", self.user)
                }
                Some("28000") => format!(
                    "PostgreSQL at {server} does not let user `{}` in ({}); {check}",
                    self.user,
                    db.message()
                ),
                Some("3D000") => format!(
                    "PostgreSQL at {server} has no database `{}`; create it (createdb {}) or {check}",
                    self.database, self.database
                ),
                _ => format!("cannot connect to PostgreSQL at {server}: {}; {check}", db.message()),
            },
            other => format!("cannot connect to PostgreSQL at {server}: {other}; {check}"),
        };
        StoreError::Backend(text)
    }

    /// An operation failed: what failed, where, and what to do.
    fn error(&self, e: sqlx::Error) -> StoreError {
        let server = &self.server;
        let text = match &e {
            sqlx::Error::Io(io) => {
                format!("lost the connection to PostgreSQL at {server} ({io}); is the server running?")
            }
            sqlx::Error::PoolTimedOut => format!(
                "no connection to PostgreSQL at {server} within {} s (the server does not answer, or \
                 every connection is busy); is the server running?",
                ACQUIRE_TIMEOUT.as_secs()
            ),
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => format!(
                "a statement on PostgreSQL at {server} ran longer than {} s and was cancelled; is the \
                 database overloaded or locked?",
                STATEMENT_TIMEOUT.as_secs()
            ),
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P")) => format!(
                "PostgreSQL at {server} shut the connection ({}); is the server restarting?",
                db.message()
            ),
            sqlx::Error::Database(db) => {
                format!("PostgreSQL at {} failed: {}", self.url, db.message())
            }
            other => format!("the run store at {} failed: {other}", self.url),
        };
        StoreError::Backend(text)
    }

    fn damaged(&self, run_id: Option<&str>, detail: String) -> StoreError {
        StoreError::Damaged { run_id: run_id.map(str::to_string), store: self.url.clone(), detail }
    }
}

impl PgStore {
    /// Open the store in the database `url` names (`postgres://USER:PASSWORD@HOST:PORT/DB`),
    /// bringing its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let shown = crate::redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Backend(format!(
                "`{shown}` is not a PostgreSQL URL ({e}); use postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ))
        })?;
        Self::open_with(options, shown).await
    }

    /// [`PgStore::open`] with options already parsed; `shown` names the store in messages.
    pub async fn open_with(options: PgConnectOptions, shown: String) -> Result<Self, StoreError> {
        let at = Arc::new(Place::of(shown, &options));
        let mut options =
            options.options([("statement_timeout", format!("{}s", STATEMENT_TIMEOUT.as_secs()))]);
        // Named in pg_stat_activity, unless the URL names it.
        if options.get_application_name().is_none() {
            options = options.application_name("belt");
        }
        // One connection first, directly: the pool would retry a refused connection until
        // its timeout and then say only that it timed out.
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| {
                StoreError::Backend(format!(
                    "cannot connect to PostgreSQL at {}: no answer within {} s; is the server running? \
                     check --store / BELT_STORE",
                    at.server,
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| at.connect_error(&e))?;
        let newer = schema_version(&mut conn).await.map_err(|e| at.error(e));
        let _ = conn.close().await;
        refuse_newer(&at.url, newer?)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        bounded(&at, MIGRATOR.run(&pool)).await?.map_err(|e| migrate_error(&at, e))?;
        // Provider limits and budget pools held for all processes sharing the database.
        let shared = bounded(&at, PgShared::start(pool.clone(), holder())).await??;
        Ok(PgStore { pool, at, options, shared, followers: Arc::default(), listener: Mutex::new(None) })
    }

    /// Where the store is, without the password.
    pub fn url(&self) -> &str {
        &self.at.url
    }

    /// The store's connections, for what else the processes sharing it keep in the same
    /// database (provider limits, budget pools: `migrations-postgres/` holds their tables).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Run one operation against the database, bounded in time.
    async fn run<T>(&self, op: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, StoreError> {
        bounded(&self.at, op).await?.map_err(|e| self.at.error(e))
    }

    fn damaged_run<'a>(&'a self, run_id: &'a str) -> impl Fn(String) -> StoreError + 'a {
        move |detail| self.at.damaged(Some(run_id), detail)
    }

    /// Record a placeholder for a run written to before it was recorded (as a lease does).
    async fn placeholder(&self, run_id: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO runs (run_id, started_at) VALUES ($1, now()) ON CONFLICT (run_id) DO NOTHING";
        self.run(sqlx::query(sql).bind(run_id).execute(&self.pool)).await?;
        Ok(())
    }

    /// A run's record from a row with its columns; `what` names the row in errors.
    fn run_record(&self, r: &PgRow, what: &str) -> Result<RunRecord, StoreError> {
        let run_id: String = col(r, "run_id").map_err(|d| self.at.damaged(None, within(d, what)))?;
        let read = || -> Result<RunRecord, String> {
            Ok(RunRecord {
                run_id: run_id.clone(),
                pattern: col(r, "pattern")?,
                task: col(r, "task")?,
                status: status(r)?,
                started_at: col(r, "started_at")?,
                definition: Arc::from(col::<String, _>(r, "definition")?),
            })
        };
        read().map_err(self.damaged_run(&run_id))
    }

    /// Start the listener task unless it runs.
    fn listen(&self) {
        let mut task = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_none_or(|t| t.is_finished()) {
            let (options, followers) = (self.options.clone(), self.followers.clone());
            *task = Some(tokio::spawn(listen(options, followers)));
        }
    }
}

/// This process, as the holder of limit slots and pool reservations: `host:pid:nonce`.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    format!("{host}:{}:{nonce}", std::process::id())
}

/// `op`, or an error once [`STATEMENT_TIMEOUT`] (and a little) passed without an answer.
async fn bounded<T>(at: &Place, op: impl Future<Output = T>) -> Result<T, StoreError> {
    let limit = ACQUIRE_TIMEOUT + STATEMENT_TIMEOUT + Duration::from_secs(5);
    tokio::time::timeout(limit, op).await.map_err(|_| {
        StoreError::Backend(format!(
            "PostgreSQL at {} did not answer within {} s; is the server or the network down?",
            at.server,
            limit.as_secs()
        ))
    })
}

/// The highest migration recorded in the database (0 for a new one).
async fn schema_version(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations").fetch_one(&mut *conn).await
}

/// The newest schema version this belt knows.
fn known_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuse a database a newer belt wrote: this one would misread what it added.
fn refuse_newer(url: &str, version: i64) -> Result<(), StoreError> {
    let known = known_version();
    if version > known {
        return Err(StoreError::Backend(crate::newer_schema(url, version, known)));
    }
    Ok(())
}

fn migrate_error(at: &Place, e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    match e {
        // Applied by another process meanwhile, by a newer belt.
        MigrateError::VersionMissing(v) => {
            StoreError::Backend(crate::newer_schema(&at.url, v, known_version()))
        }
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => at.error(e),
        other => StoreError::Backend(format!(
            "cannot bring the schema of the store at {} up to date: {other}",
            at.url
        )),
    }
}

/// A duration in milliseconds for SQL (`$n * interval '1 millisecond'`), at most a century:
/// a longer one would overflow PostgreSQL's interval.
fn millis(d: Duration) -> i64 {
    const CENTURY_MS: u128 = 100 * 366 * 24 * 3600 * 1000;
    d.as_millis().min(CENTURY_MS) as i64
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

/// One step's record from its row.
fn step_record(r: &PgRow) -> Result<StepRecord, String> {
    let step: String = col(r, "step")?;
    let of = |detail: String| within(detail, &format!("step {step}"));
    let hash: String = col(r, "input_hash").map_err(of)?;
    let input_hash = serde_json::from_value::<InputHash>(serde_json::Value::String(hash))
        .map_err(|e| of(format!("column `input_hash`: {e}")))?;
    let output = String::from_utf8(col::<Vec<u8>, _>(r, "output").map_err(of)?)
        .map_err(|e| of(format!("column `output`: {e}")))?;
    let json = |name: &str| col::<Option<String>, _>(r, name).map_err(of);
    let reply = StepReply {
        text: Arc::from(output),
        outcome: outcome(r).map_err(of)?,
        simulated: col(r, "simulated").map_err(of)?,
        tool_calls: match json("tool_calls")? {
            Some(j) => serde_json::from_str(&j).map_err(|e| of(format!("column `tool_calls`: {e}")))?,
            None => Vec::new(),
        },
    };
    Ok(StepRecord {
        step: StepId::new(step.as_str()),
        tier: Tier::parse(&col::<String, _>(r, "tier").map_err(of)?),
        input_hash,
        reply,
    })
}

const INSERT_STEP: &str = "INSERT INTO steps (run_key, step, tier, input_hash, model, input_tokens, \
     output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, attempts, duration_ms, \
     simulated, unpriced, finish_reason, tool_calls, reported_usage, output) \
     SELECT run_key, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19 \
     FROM runs WHERE run_id = $1 \
     ON CONFLICT (run_key, step) DO UPDATE SET tier = excluded.tier, input_hash = excluded.input_hash, \
     model = excluded.model, input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, \
     cache_read_tokens = excluded.cache_read_tokens, cache_write_tokens = excluded.cache_write_tokens, \
     reasoning_tokens = excluded.reasoning_tokens, cost_usd = excluded.cost_usd, attempts = excluded.attempts, \
     duration_ms = excluded.duration_ms, simulated = excluded.simulated, unpriced = excluded.unpriced, \
     finish_reason = excluded.finish_reason, tool_calls = excluded.tool_calls, \
     reported_usage = excluded.reported_usage, output = excluded.output";

const STEP_COLUMNS: &str = "step, tier, input_hash, output, model, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, attempts, duration_ms, simulated, \
     unpriced, finish_reason, tool_calls, reported_usage";

/// Insert a batch of events and notify the run's followers, in one statement (so one
/// commit): `known` is false when the run has no row yet.
const INSERT_EVENTS: &str = "WITH ins AS (INSERT INTO events (run_key, first_seq, last_seq, lines) \
     SELECT run_key, $2, $3, $4 FROM runs WHERE run_id = $1 ON CONFLICT DO NOTHING RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = $1) AS known, \
     (SELECT count(*) FROM (SELECT pg_notify($5, $6)) n) AS notified, (SELECT count(*) FROM ins) AS inserted";

#[async_trait]
impl RunStore for PgStore {
    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let sql = "INSERT INTO runs (run_id, pattern, task, status, started_at, definition) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id) DO UPDATE SET pattern = excluded.pattern, \
                   task = excluded.task, status = excluded.status, definition = excluded.definition";
        let q = sqlx::query(sql)
            .bind(&run.run_id)
            .bind(&run.pattern)
            .bind(&run.task)
            .bind(run.status.as_str())
            .bind(run.started_at)
            .bind(&*run.definition);
        self.run(q.execute(&self.pool)).await?;
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let sql = "SELECT run_id, pattern, task, status, started_at, definition FROM runs WHERE run_id = $1";
        let row = self.run(sqlx::query(sql).bind(run_id).fetch_optional(&self.pool)).await?;
        let Some(r) = row else { return Ok(None) };
        // A placeholder (a lease or a step taken before the run was recorded) is no run.
        match col::<String, _>(&r, "pattern") {
            Ok(p) if p.is_empty() => Ok(None),
            _ => self.run_record(&r, "a run").map(Some),
        }
    }

    async fn load_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let sql = format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE run_key = (SELECT run_key FROM runs WHERE run_id = $1) \
             ORDER BY step"
        );
        let rows = self.run(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(run_id).fetch_all(&self.pool)).await?;
        rows.iter().map(|r| step_record(r).map_err(self.damaged_run(run_id))).collect()
    }

    async fn put_step(&self, run_id: &str, record: &StepRecord) -> Result<(), StoreError> {
        let reply = &record.reply;
        let tool_calls = match reply.tool_calls.is_empty() {
            true => None,
            false => Some(to_json(&reply.tool_calls)?),
        };
        let reported = reply.outcome.reported_usage.as_ref().map(to_json).transpose()?;
        let usage = &reply.outcome.usage;
        // Twice at most: the second time after recording a placeholder for an unknown run.
        for _ in 0..2 {
            let q = sqlx::query(INSERT_STEP)
                .bind(run_id)
                .bind(record.step.as_str())
                .bind(record.tier.as_str())
                .bind(record.input_hash.to_string())
                .bind(&*reply.outcome.model)
                .bind(usage.input_tokens as i64)
                .bind(usage.output_tokens as i64)
                .bind(usage.cache_read_tokens as i64)
                .bind(usage.cache_write_tokens as i64)
                .bind(usage.reasoning_tokens as i64)
                .bind(reply.outcome.cost_usd)
                .bind(i64::from(reply.outcome.attempts))
                .bind(reply.outcome.duration_ms as i64)
                .bind(reply.simulated)
                .bind(reply.outcome.unpriced)
                .bind(reply.outcome.finish_reason.as_deref())
                .bind(tool_calls.as_deref())
                .bind(reported.as_deref())
                .bind(reply.text.as_bytes());
            if self.run(q.execute(&self.pool)).await?.rows_affected() == 1 {
                return Ok(());
            }
            self.placeholder(run_id).await?;
        }
        Err(StoreError::Backend(format!(
            "the step {} of run {run_id} could not be recorded in {}: the run's row vanished twice \
             (removed while it ran?)",
            record.step, self.at.url
        )))
    }

    async fn append_events(&self, run_id: &str, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let mut lines = Vec::with_capacity(256 * events.len());
        event_row::encode(events, &mut lines).map_err(|e| StoreError::Backend(e.to_string()))?;
        let lines = String::from_utf8(lines).map_err(|e| StoreError::Backend(e.to_string()))?;
        let payload = if run_id.len() <= MAX_PAYLOAD { run_id } else { "" };
        for _ in 0..2 {
            let q = sqlx::query(INSERT_EVENTS)
                .bind(run_id)
                .bind(first.seq as i64)
                .bind(last.seq as i64)
                .bind(&lines)
                .bind(CHANNEL)
                .bind(payload);
            let row = self.run(q.fetch_one(&self.pool)).await?;
            if col::<bool, _>(&row, "known").unwrap_or(true) {
                return Ok(());
            }
            self.placeholder(run_id).await?;
        }
        Err(StoreError::Backend(format!(
            "events of run {run_id} could not be recorded in {}: the run's row vanished twice",
            self.at.url
        )))
    }

    async fn events(&self, run_id: &str, after: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        // From the batch that holds event `after + 1` on (see `event_row`).
        let sql = "WITH r AS (SELECT run_key FROM runs WHERE run_id = $1) \
             SELECT lines FROM events WHERE run_key = (SELECT run_key FROM r) AND first_seq >= COALESCE( \
             (SELECT MAX(first_seq) FROM events WHERE run_key = (SELECT run_key FROM r) AND first_seq <= $2 + 1), 0) \
             ORDER BY first_seq";
        let after_i = i64::try_from(after).unwrap_or(i64::MAX - 1);
        let rows = self.run(sqlx::query(sql).bind(run_id).bind(after_i).fetch_all(&self.pool)).await?;
        let run: Arc<str> = Arc::from(run_id);
        let (mut after, mut events) = (after, Vec::new());
        for r in rows {
            let lines: String =
                col(&r, "lines").map_err(|d| self.at.damaged(Some(run_id), within(d, "events")))?;
            event_row::decode(&run, &lines, &mut after, &mut events)
                .map_err(|e| self.at.damaged(Some(run_id), format!("an event does not decode: {e}")))?;
        }
        Ok(events)
    }

    async fn last_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        let sql = "SELECT COALESCE(MAX(last_seq), 0)::BIGINT AS seq FROM events \
                   WHERE run_key = (SELECT run_key FROM runs WHERE run_id = $1)";
        let row = self.run(sqlx::query(sql).bind(run_id).fetch_one(&self.pool)).await?;
        count(&row, "seq").map_err(|d| self.at.damaged(Some(run_id), within(d, "events")))
    }

    async fn finish_run(&self, result: &RunResult) -> Result<(), StoreError> {
        // Compressed as in SQLite: a result holds every agent's record and output.
        let packed = crate::packed::pack_result(result).map_err(StoreError::Backend)?;
        let sql = "UPDATE runs SET status = $1, result_lz4 = $2, cost_usd = $3, duration_ms = $4, \
                   finished_at = now(), owner = NULL, heartbeat_at = NULL, cancel_requested = FALSE WHERE run_id = $5";
        let q = sqlx::query(sql)
            .bind(result.status.as_str())
            .bind(packed)
            .bind(result.cost_usd)
            .bind(result.duration_ms as i64)
            .bind(&result.run_id);
        self.run(q.execute(&self.pool)).await?;
        Ok(())
    }

    async fn get_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError> {
        let sql = "SELECT result_lz4 FROM runs WHERE run_id = $1";
        let row = self.run(sqlx::query(sql).bind(run_id).fetch_optional(&self.pool)).await?;
        let Some(row) = row else { return Ok(None) };
        let read = || -> Result<Option<RunResult>, String> {
            let Some(packed) = col::<Option<Vec<u8>>, _>(&row, "result_lz4")? else { return Ok(None) };
            let json = unpack(&packed).map_err(|e| format!("column `result_lz4`: {e}"))?;
            serde_json::from_slice(&json)
                .map(Some)
                .map_err(|e| format!("column `result_lz4`: the result does not decode ({e})"))
        };
        read().map_err(self.damaged_run(run_id))
    }

    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        ttl: Duration,
        replace: Option<&str>,
    ) -> Result<(), StoreError> {
        // One statement, so two processes cannot both take the lease: the second waits for
        // the first's row lock and then sees its lease.
        let sql = "INSERT INTO runs (run_id, started_at, owner, heartbeat_at) VALUES ($1, now(), $2, now()) \
             ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, heartbeat_at = excluded.heartbeat_at \
             WHERE runs.owner IS NULL OR runs.heartbeat_at IS NULL \
             OR runs.heartbeat_at <= now() - $3 * interval '1 millisecond' \
             OR runs.owner = excluded.owner OR runs.owner = $4";
        let q = sqlx::query(sql).bind(run_id).bind(owner).bind(millis(ttl)).bind(replace.unwrap_or(""));
        if self.run(q.execute(&self.pool)).await?.rows_affected() == 1 {
            return Ok(());
        }
        let sql = "SELECT owner, (EXTRACT(EPOCH FROM now() - heartbeat_at) * 1000)::BIGINT AS age_ms \
                   FROM runs WHERE run_id = $1";
        let row = self.run(sqlx::query(sql).bind(run_id).fetch_one(&self.pool)).await?;
        let damaged = self.damaged_run(run_id);
        Err(StoreError::Busy {
            run_id: run_id.to_string(),
            owner: col::<Option<String>, _>(&row, "owner").map_err(&damaged)?.unwrap_or_default(),
            age_ms: col::<Option<i64>, _>(&row, "age_ms").map_err(&damaged)?.map_or(0, |a| a.max(0) as u64),
        })
    }

    async fn heartbeat(&self, run_id: &str, owner: &str) -> Result<Lease, StoreError> {
        let sql = "UPDATE runs SET heartbeat_at = now() WHERE run_id = $1 AND owner = $2 RETURNING cancel_requested";
        let row = self.run(sqlx::query(sql).bind(run_id).bind(owner).fetch_optional(&self.pool)).await?;
        Ok(match row {
            Some(r) => Lease {
                held: true,
                cancel_requested: col::<bool, _>(&r, "cancel_requested").map_err(self.damaged_run(run_id))?,
            },
            None => Lease { held: false, cancel_requested: false },
        })
    }

    async fn take_runs(&self, owner: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        // See the module's notes: SKIP LOCKED passes over what another taker is taking, and
        // PostgreSQL re-checks each locked row's conditions, so a run taken meanwhile is left.
        let sql = "WITH free AS (SELECT run_key FROM runs WHERE status IN ('queued', 'running') \
               AND pattern <> '' AND NOT cancel_requested \
               AND (owner IS NULL OR heartbeat_at IS NULL OR heartbeat_at <= now() - $3 * interval '1 millisecond') \
               ORDER BY run_key LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE runs SET status = 'running', owner = $1, heartbeat_at = now() FROM free \
             WHERE runs.run_key = free.run_key \
             RETURNING runs.run_key, run_id, pattern, task, status, started_at, definition";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let q = sqlx::query(sql).bind(owner).bind(limit).bind(millis(LEASE_TTL));
        let rows = self.run(q.fetch_all(&self.pool)).await?;
        let mut taken = rows
            .iter()
            .map(|r| Ok((col::<i64, _>(r, "run_key").unwrap_or(0), self.run_record(r, "a run taken")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // RETURNING keeps no order.
        taken.sort_by_key(|(key, _)| *key);
        Ok(taken.into_iter().map(|(_, r)| r).collect())
    }

    async fn release(&self, run_id: &str, owner: &str) -> Result<bool, StoreError> {
        // A run whose cancel was asked for while it was handed back ends cancelled: no
        // driver would take it from the queue.
        let sql = "UPDATE runs SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, \
                   owner = NULL, heartbeat_at = NULL WHERE run_id = $1 AND owner = $2 AND status = 'running'";
        let done = self.run(sqlx::query(sql).bind(run_id).bind(owner).execute(&self.pool)).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn request_cancel(&self, run_id: &str) -> Result<CancelRequest, StoreError> {
        let sql = "UPDATE runs SET cancel_requested = TRUE WHERE run_id = $1 AND status IN ('queued', 'running') \
                   RETURNING status";
        let row = self.run(sqlx::query(sql).bind(run_id).fetch_optional(&self.pool)).await?;
        Ok(match row.map(|r| status(&r)).transpose().map_err(self.damaged_run(run_id))? {
            Some(RunStatus::Queued) => CancelRequest::WasQueued,
            Some(_) => CancelRequest::WasRunning,
            None => CancelRequest::NotLive,
        })
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let sql = "SELECT run_key, run_id, pattern, task, status, started_at, owner, duration_ms, \
             (heartbeat_at IS NULL OR heartbeat_at < now() - $2 * interval '1 millisecond') AS stale, \
             COALESCE(cost_usd, (SELECT SUM(cost_usd) FROM steps s WHERE s.run_key = runs.run_key), 0.0) AS cost, \
             (SELECT COUNT(*) FROM steps s WHERE s.run_key = runs.run_key) AS steps \
             FROM runs WHERE pattern <> '' ORDER BY started_at DESC, run_key DESC LIMIT $1";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows =
            self.run(sqlx::query(sql).bind(limit).bind(millis(LEASE_TTL)).fetch_all(&self.pool)).await?;
        rows.iter().map(|r| self.summary(r)).collect()
    }

    async fn queued_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        // `run_key` grows with every run recorded: the order they were accepted in.
        let sql = "SELECT run_id, pattern, task, status, started_at, definition FROM runs \
                   WHERE status = 'queued' AND pattern <> '' ORDER BY run_key LIMIT $1";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.run(sqlx::query(sql).bind(limit).fetch_all(&self.pool)).await?;
        rows.iter().map(|r| self.run_record(r, "a queued run")).collect()
    }

    async fn take_queued(&self, run_id: &str, owner: &str) -> Result<bool, StoreError> {
        // One statement: a concurrent taker waits for this one's row lock and then finds the
        // run no longer queued. Not while another holds a live lease (`belt resume` claims a
        // queued run before it records it as running).
        let sql = "UPDATE runs SET status = 'running', owner = $1, heartbeat_at = now() \
             WHERE run_id = $2 AND status = 'queued' AND NOT cancel_requested \
             AND (owner IS NULL OR heartbeat_at IS NULL OR heartbeat_at <= now() - $3 * interval '1 millisecond' \
             OR owner = $1)";
        let q = sqlx::query(sql).bind(owner).bind(run_id).bind(millis(LEASE_TTL));
        Ok(self.run(q.execute(&self.pool)).await?.rows_affected() == 1)
    }

    async fn delete_run(&self, run_id: &str) -> Result<bool, StoreError> {
        self.run(async {
            let mut tx = self.pool.begin().await?;
            for sql in [
                "DELETE FROM steps WHERE run_key = (SELECT run_key FROM runs WHERE run_id = $1)",
                "DELETE FROM events WHERE run_key = (SELECT run_key FROM runs WHERE run_id = $1)",
                "DELETE FROM dead_letters WHERE run_id = $1",
            ] {
                sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
            }
            let gone =
                sqlx::query("DELETE FROM runs WHERE run_id = $1").bind(run_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(gone.rows_affected() > 0)
        })
        .await
    }

    async fn put_dead_letter(&self, letter: &DeadLetter) -> Result<u64, StoreError> {
        let sql = "INSERT INTO dead_letters (run_id, step, tier, error, error_kind, attempts, request, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
        let q = sqlx::query_scalar::<_, i64>(sql)
            .bind(&letter.run_id)
            .bind(letter.step.as_str())
            .bind(letter.tier.as_str())
            .bind(&letter.error)
            .bind(&letter.error_kind)
            .bind(i64::from(letter.attempts))
            .bind(to_json(&letter.work)?)
            .bind(letter.created_at);
        let id = self.run(q.fetch_one(&self.pool)).await?;
        Ok(id.max(0) as u64)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = "SELECT id, run_id, step, tier, error, error_kind, attempts, request, created_at \
                   FROM dead_letters ORDER BY id";
        let rows = self.run(sqlx::query(sql).fetch_all(&self.pool)).await?;
        rows.iter().map(|r| self.dead_letter(r)).collect()
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        let id = i64::try_from(id).unwrap_or(-1);
        self.run(sqlx::query("DELETE FROM dead_letters WHERE id = $1").bind(id).execute(&self.pool)).await?;
        Ok(())
    }

    async fn cache_get(&self, key: InputHash) -> Result<Option<StepReply>, StoreError> {
        let sql = "SELECT reply FROM cache WHERE key = $1 AND expires_at > now()";
        let row = self.run(sqlx::query(sql).bind(key.to_string()).fetch_optional(&self.pool)).await?;
        // An entry that does not read back is a miss (see the SQLite store).
        Ok(row.and_then(|r| col::<String, _>(&r, "reply").ok()).and_then(|j| serde_json::from_str(&j).ok()))
    }

    async fn cache_put(&self, key: InputHash, reply: &StepReply, ttl: Duration) -> Result<(), StoreError> {
        let sql = "INSERT INTO cache (key, reply, expires_at) VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
                   ON CONFLICT (key) DO UPDATE SET reply = excluded.reply, expires_at = excluded.expires_at";
        let q = sqlx::query(sql).bind(key.to_string()).bind(to_json(reply)?).bind(millis(ttl));
        self.run(q.execute(&self.pool)).await?;
        Ok(())
    }

    fn shared_limits(&self) -> Option<Arc<dyn belt_core::limits::SharedLimits>> {
        Some(self.shared.clone())
    }

    fn budget_pools(&self) -> Option<Arc<dyn belt_core::shared::BudgetPools>> {
        Some(self.shared.clone())
    }

    async fn wait_events(
        &self,
        run_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let deadline = Instant::now() + wait;
        self.listen();
        let following = self.followers.follow(run_id);
        loop {
            // Registered before reading: a batch committed after the read wakes it.
            let notified = following.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let listening = self.followers.listening.load(Ordering::SeqCst);
            let events = self.events(run_id, after).await?;
            let now = Instant::now();
            if !events.is_empty() || now >= deadline {
                return Ok(events);
            }
            let slice = if listening { FOLLOW_RECHECK } else { EVENT_POLL };
            let _ = tokio::time::timeout(slice.min(deadline - now), notified).await;
        }
    }
}

impl PgStore {
    /// A row of `list_runs`.
    fn summary(&self, r: &PgRow) -> Result<RunSummary, StoreError> {
        let run_id: String = col(r, "run_id").map_err(|d| {
            let key = col::<i64, _>(r, "run_key").map_or_else(|_| "?".to_string(), |k| k.to_string());
            self.at.damaged(None, within(d, &format!("the run with key {key}")))
        })?;
        let read = || -> Result<RunSummary, String> {
            let status = match status(r)? {
                RunStatus::Running if col::<bool, _>(r, "stale")? => RunStatus::Interrupted,
                s => s,
            };
            Ok(RunSummary {
                run_id: run_id.clone(),
                pattern: col(r, "pattern")?,
                task: col(r, "task")?,
                status,
                started_at: col(r, "started_at")?,
                steps: count(r, "steps")?,
                cost_usd: col(r, "cost")?,
                duration_ms: opt_count(r, "duration_ms")?,
                owner: col(r, "owner")?,
            })
        };
        read().map_err(self.damaged_run(&run_id))
    }

    /// A row of `dead_letters`.
    fn dead_letter(&self, r: &PgRow) -> Result<DeadLetter, StoreError> {
        let id = count(r, "id").map_err(|d| self.at.damaged(None, within(d, "a dead letter")))?;
        let run_id: String =
            col(r, "run_id").map_err(|d| self.at.damaged(None, within(d, &format!("dead letter {id}"))))?;
        let read = || -> Result<DeadLetter, String> {
            let request: String = col(r, "request")?;
            let work: LetterWork = serde_json::from_str(&request)
                .map_err(|e| format!("column `request`: the dead letter's work does not decode ({e})"))?;
            Ok(DeadLetter {
                id,
                run_id: run_id.clone(),
                step: StepId::new(col::<String, _>(r, "step")?),
                tier: Tier::parse(&col::<String, _>(r, "tier")?),
                error: col(r, "error")?,
                error_kind: col(r, "error_kind")?,
                attempts: u32::try_from(count(r, "attempts")?)
                    .map_err(|_| "column `attempts`: too large".to_string())?,
                work,
                created_at: col::<DateTime<Utc>, _>(r, "created_at")?,
            })
        };
        read().map_err(|d| self.at.damaged(Some(&run_id), within(d, &format!("dead letter {id}"))))
    }
}

/// The runs being followed ([`RunStore::wait_events`]) and how to wake their waiters.
#[derive(Default)]
struct Followers {
    /// Per run followed: what its waiters wait on, and how many there are.
    runs: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
    /// Whether the listener is listening now; while it is not, waiters poll.
    listening: AtomicBool,
}

/// One waiter's registration; ends when dropped.
struct Following {
    followers: Arc<Followers>,
    run_id: String,
    notify: Arc<Notify>,
}

impl Followers {
    fn follow(self: &Arc<Self>, run_id: &str) -> Following {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = runs.entry(run_id.to_string()).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Following { followers: self.clone(), run_id: run_id.to_string(), notify: entry.0.clone() }
    }

    fn wake(&self, run_id: &str) {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((notify, _)) = runs.get(run_id) {
            notify.notify_waiters();
        }
    }

    /// Every waiter reads again: notifications may have been missed.
    fn wake_all(&self) {
        let runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        for (notify, _) in runs.values() {
            notify.notify_waiters();
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut runs = self.followers.runs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = runs.get_mut(&self.run_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                runs.remove(&self.run_id);
            }
        }
    }
}

/// Marks the listener as not listening when its task ends (also when aborted).
struct NotListening(Arc<Followers>);

impl Drop for NotListening {
    fn drop(&mut self) {
        self.0.listening.store(false, Ordering::SeqCst);
        self.0.wake_all();
    }
}

/// The listener task: LISTEN on a connection of its own and wake the waiters of each run
/// notified; reconnect, with a pause, when the connection fails.
async fn listen(options: PgConnectOptions, followers: Arc<Followers>) {
    let _guard = NotListening(followers.clone());
    // A pool of one connection: PgListener reconnects through it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    let mut pause = Duration::from_millis(100);
    loop {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await
            && listener.listen(CHANNEL).await.is_ok()
        {
            pause = Duration::from_millis(100);
            followers.listening.store(true, Ordering::SeqCst);
            // What was appended before LISTEN took effect was not notified.
            followers.wake_all();
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) if n.payload().is_empty() => followers.wake_all(),
                    Ok(Some(n)) => followers.wake(n.payload()),
                    // The connection was lost and is listening again: what was sent meanwhile
                    // was lost.
                    Ok(None) => followers.wake_all(),
                    Err(_) => break,
                }
            }
        }
        followers.listening.store(false, Ordering::SeqCst);
        followers.wake_all();
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;

//! The SQLite run store.
//!
//! Durability: the database runs in WAL mode with `synchronous = NORMAL`. A committed
//! transaction is in the WAL file before `commit` returns, so it survives the death of the
//! process (a crash, SIGKILL, an out-of-memory kill); a power loss or a crash of the
//! operating system can lose the last transactions (those not yet checkpointed, which is
//! when the WAL is synced), which would then be re-run on resume and paid for again. `FULL`
//! would close that gap at the cost of an fsync per commit. How the writer saves system
//! calls (read marks held in this process, run keys kept between its transactions; see
//! [`crate::writer`]) changes nothing of this: what is in the files when a commit returns is
//! the same, and other processes read and write the database as before.
//!
//! Group commit: step records and events go through the writer (see [`crate::writer`]),
//! which commits a step's record on the step's own thread, together with every record
//! that arrived meanwhile (up to [`MAX_BATCH`] in one transaction), and events on a thread of
//! its own. Each [`RunStore::put_step`] returns only after the transaction that holds its
//! record committed, so a step's output is never used downstream before its record is
//! durable; a crash loses at most the calls in flight. The batching only amortizes a commit
//! over the steps that finished at the same time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use belt_core::StepReply;
use belt_core::event::Event;
use belt_core::result::{RunResult, RunStatus};
use belt_core::step::{StepId, Tier};
use belt_core::store::LetterWork;
use belt_core::store::{
    CancelRequest, DeadLetter, InputHash, LEASE_TTL, Lease, RunRecord, RunStore, RunSummary, StepRecord,
    StoreError,
};
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::event_row;
use crate::rows::{col, count, opt_count, outcome, status, within};
use crate::writer::Writer;

pub use crate::writer::MAX_BATCH;

/// A run store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    pub(crate) pool: SqlitePool,
    writer: Writer,
}

/// The `definition` column of a run's record, from `run_definitions` (migration 0008);
/// `null` for a run recorded without one (a placeholder a lease or a step created).
macro_rules! definition {
    () => {
        "COALESCE((SELECT definition FROM run_definitions d WHERE d.run_key = runs.run_key), 'null') AS definition"
    };
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl SqliteStore {
    /// Open (creating if needed) the store at `path`, and bring its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Duration::from_secs(10)).await
    }

    /// [`SqliteStore::open`], waiting at most `busy_timeout` for a lock held by another
    /// process before a write fails.
    pub async fn open_with(path: impl AsRef<Path>, busy_timeout: Duration) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!(
                    "cannot create the directory of the store {}: {e}",
                    path.display()
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(busy_timeout);
        let err = |e: sqlx::Error| backend(&path, e);
        let opening = lock_for_opening(&path, busy_timeout).await?;
        let pool =
            SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await.map_err(err)?;
        refuse_newer(&pool, &path).await?;
        refuse_garbled_schema(&pool, &path).await?;
        MIGRATOR.run(&pool).await.map_err(|e| backend(&path, sqlx::Error::Migrate(Box::new(e))))?;
        // The writer has a connection of its own, so reads never wait behind a batch.
        let writer = Writer::start(&path, busy_timeout)?;
        drop(opening);
        Ok(SqliteStore { path, pool, writer })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| backend(&self.path, e)
    }

    /// A record of run `run_id` (or of no run that could be named) does not read back.
    fn damaged(&self, run_id: Option<&str>, detail: String) -> StoreError {
        StoreError::Damaged {
            run_id: run_id.map(str::to_string),
            store: self.path.display().to_string(),
            detail,
        }
    }

    /// [`SqliteStore::damaged`] for a record of run `run_id`.
    fn damaged_run<'a>(&'a self, run_id: &'a str) -> impl Fn(String) -> StoreError + 'a {
        move |detail| self.damaged(Some(run_id), detail)
    }

    /// A run's record from a row with its columns; `what` names the row in errors.
    fn run_record(&self, r: &SqliteRow, what: &str) -> Result<RunRecord, StoreError> {
        let run_id: String = col(r, "run_id").map_err(|d| self.damaged(None, within(d, what)))?;
        let read = || -> Result<RunRecord, String> {
            Ok(RunRecord {
                run_id: run_id.clone(),
                pattern: col(r, "pattern")?,
                task: col(r, "task")?,
                status: status(r)?,
                started_at: time(r, "started_at")?,
                definition: Arc::from(col::<String, _>(r, "definition")?),
            })
        };
        read().map_err(self.damaged_run(&run_id))
    }

    /// One step's record from its row.
    fn step_record(r: &SqliteRow) -> Result<StepRecord, String> {
        let step: String = col(r, "step")?;
        let of = |detail: String| within(detail, &format!("step {step}"));
        let hash: String = col(r, "input_hash").map_err(of)?;
        let input_hash = serde_json::from_value::<InputHash>(serde_json::Value::String(hash))
            .map_err(|e| of(format!("column `input_hash`: {e}")))?;
        let reply = StepReply {
            text: Arc::from(col::<String, _>(r, "output").map_err(of)?),
            outcome: outcome(r).map_err(of)?,
            simulated: col(r, "simulated").map_err(of)?,
            tool_calls: match col::<Option<String>, _>(r, "tool_calls").map_err(of)? {
                Some(json) => {
                    serde_json::from_str(&json).map_err(|e| of(format!("column `tool_calls`: {e}")))?
                }
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
}

/// Refuse a file a newer belt wrote (a migration this one does not know): this one would
/// misread what it added, and sqlx would only say that a migration "is missing".
async fn refuse_newer(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let err = |e: sqlx::Error| backend(path, e);
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await
    .map_err(err)?;
    if !exists {
        return Ok(());
    }
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .map_err(err)?;
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    if version > known {
        return Err(StoreError::Backend(crate::newer_schema(&path.display().to_string(), version, known)));
    }
    Ok(())
}

/// The tables' definitions as SQLite keeps them (`sqlite_master.sql`) must be UTF-8 text.
/// A stray write into that text (a disk fault, another program) gives a column a declared
/// type that is not, and sqlx panics on its worker thread when a statement reads such a
/// column (`sqlite3_column_decltype() returned non-UTF-8 string`). Checked once at open,
/// reading the text as bytes (an expression's column has no declared type), so the damage
/// is an error that says what to do instead.
async fn refuse_garbled_schema(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT CAST(name AS BLOB), CAST(sql AS BLOB) FROM sqlite_master")
            .fetch_all(pool)
            .await
            .map_err(|e| backend(path, e))?;
    for (name, sql) in rows {
        if std::str::from_utf8(&name).is_err() || sql.is_some_and(|s| std::str::from_utf8(&s).is_err()) {
            return Err(StoreError::Damaged {
                run_id: None,
                store: path.display().to_string(),
                detail: format!(
                    "the schema of table `{}` is not text: the file was overwritten there",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
    }
    Ok(())
}

/// An error message that says what failed, where, and what to do.
fn backend(path: &Path, e: sqlx::Error) -> StoreError {
    backend_text(path, &e.to_string())
}

/// [`backend`] for an error already turned into text.
pub(crate) fn backend_text(path: &Path, text: &str) -> StoreError {
    let lower = text.to_lowercase();
    let hint =
        if lower.contains("readonly") || lower.contains("read-only") || lower.contains("permission denied") {
            "the file or its directory is read-only; make it writable or choose another --store"
        } else if lower.contains("full") {
            "the disk is full; free space or choose another --store"
        } else if lower.contains("locked") || lower.contains("busy") {
            "another process holds the database locked; try again, or choose another --store"
        } else if lower.contains("not a database") || lower.contains("malformed") || lower.contains("corrupt")
        {
            "the file is not a belt database or is damaged; move it away or choose another --store"
        } else if lower.contains("unable to open") {
            "the file cannot be opened; check the path and its permissions"
        } else {
            "check the store file"
        };
    StoreError::Backend(format!("{} ({}): {hint}", text, path.display()))
}

/// Hold the database file's exclusive `flock` while the store opens: setting up its
/// connections (WAL mode), bringing the schema up to date, starting the writer. Opening is
/// not atomic across processes: two opening a new file at once (`belt run` and a `belt runs
/// list` polling it) both applied migration 3, the second failing on a duplicate column, and
/// under load one saw "database is locked" at once, without waiting. SQLite's own locks are
/// `fcntl` locks, which a `flock` does not touch on Linux. Waits at most `timeout`, like any
/// other lock of the store. Creates the file if it does not exist (SQLite takes an empty
/// file for a new database).
async fn lock_for_opening(path: &Path, timeout: Duration) -> Result<std::fs::File, StoreError> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path);
    let file =
        file.map_err(|e| StoreError::Backend(format!("cannot open the store {}: {e}", path.display())))?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "the store {} is being opened by another process and stayed locked for {timeout:?} ({e}); \
                     try again",
                    path.display()
                )));
            }
        }
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Column `name` of a row, an RFC 3339 time as belt writes it.
fn time(r: &SqliteRow, name: &str) -> Result<DateTime<Utc>, String> {
    let s: String = col(r, name)?;
    DateTime::parse_from_rfc3339(&s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("column `{name}`: `{s}` is not a time ({e})"))
}

pub(crate) use crate::packed::unpack;

#[async_trait]
impl RunStore for SqliteStore {
    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        sqlx::query(
            "INSERT INTO runs (run_id, pattern, task, status, started_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (run_id) DO UPDATE SET pattern = excluded.pattern, task = excluded.task, \
             status = excluded.status",
        )
        .bind(&run.run_id)
        .bind(&run.pattern)
        .bind(&run.task)
        .bind(run.status.as_str())
        .bind(run.started_at.to_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        // In a table of its own, so the heartbeat's update of `runs` never rewrites it
        // (migration 0008).
        sqlx::query(
            "INSERT INTO run_definitions (run_key, definition) SELECT run_key, ?1 FROM runs WHERE run_id = ?2 \
             ON CONFLICT (run_key) DO UPDATE SET definition = excluded.definition",
        )
        // Borrowed, not copied: a given plan of 1,000,000 subtasks makes a 100 MB definition.
        .bind(&*run.definition)
        .bind(&run.run_id)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT run_id, pattern, task, status, started_at, ",
            definition!(),
            " FROM runs WHERE run_id = ?"
        ))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        let Some(r) = row else { return Ok(None) };
        let read = || -> Result<Option<RunRecord>, String> {
            let pattern: String = col(&r, "pattern")?;
            // A placeholder (a lease or a step taken before the run was recorded) is no run.
            if pattern.is_empty() {
                return Ok(None);
            }
            Ok(Some(RunRecord {
                run_id: run_id.to_string(),
                pattern,
                task: col(&r, "task")?,
                status: status(&r)?,
                started_at: time(&r, "started_at")?,
                definition: Arc::from(col::<String, _>(&r, "definition")?),
            }))
        };
        read().map_err(self.damaged_run(run_id))
    }

    async fn load_steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT step, tier, input_hash, output, model, input_tokens, output_tokens, cache_read_tokens, \
             cache_write_tokens, cost_usd, attempts, duration_ms, simulated, tool_calls, finish_reason, unpriced, \
             reasoning_tokens, reported_usage \
             FROM steps \
             WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter().map(|r| Self::step_record(r).map_err(self.damaged_run(run_id))).collect()
    }

    async fn put_step(&self, run_id: &str, record: &StepRecord) -> Result<(), StoreError> {
        self.writer.put_step(run_id, record).await
    }

    async fn append_events(&self, run_id: &str, events: &[Arc<Event>]) -> Result<(), StoreError> {
        self.writer.append_events(run_id, events).await
    }

    async fn events(&self, run_id: &str, after: u64) -> Result<Vec<Arc<Event>>, StoreError> {
        // From the batch that holds event `after + 1` on (see `event_row`).
        let rows = sqlx::query(
            "WITH r AS (SELECT run_key FROM runs WHERE run_id = ?1) \
             SELECT lines FROM events WHERE run_key = (SELECT run_key FROM r) AND first_seq >= COALESCE( \
             (SELECT MAX(first_seq) FROM events WHERE run_key = (SELECT run_key FROM r) AND first_seq <= ?2 + 1), 0) \
             ORDER BY first_seq",
        )
        .bind(run_id)
        .bind(after as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        let run: Arc<str> = Arc::from(run_id);
        let (mut after, mut events) = (after, Vec::new());
        for r in rows {
            let lines: String =
                col(&r, "lines").map_err(|d| self.damaged(Some(run_id), within(d, "events")))?;
            event_row::decode(&run, &lines, &mut after, &mut events)
                .map_err(|e| self.damaged(Some(run_id), format!("an event does not decode: {e}")))?;
        }
        Ok(events)
    }

    async fn last_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(last_seq), 0) AS seq FROM events \
             WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await
        .map_err(self.err())?;
        count(&row, "seq").map_err(|d| self.damaged(Some(run_id), within(d, "events")))
    }

    async fn finish_run(&self, result: &RunResult) -> Result<(), StoreError> {
        // Compressed: a result holds every agent's record and output (4 MB of JSON for
        // 10,000 agents, about a tenth of that in LZ4), and writing it was a sixth of what
        // the SQLite store cost such a run. LZ4 compresses that in a few milliseconds, chunk
        // by chunk as it is serialized, so the whole JSON is never held (see `packed`).
        let packed = crate::packed::pack_result(result).map_err(StoreError::Backend)?;
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        sqlx::query(
            "UPDATE runs SET status = ?, cost_usd = ?, duration_ms = ?, finished_at = ?, owner = NULL, \
             heartbeat_ms = NULL, cancel_requested = 0 WHERE run_id = ?",
        )
        .bind(result.status.as_str())
        .bind(result.cost_usd)
        .bind(result.duration_ms as i64)
        .bind(Utc::now().to_rfc3339())
        .bind(&result.run_id)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        // Beside the definition, not with it: writing the result rewrites only its own row.
        sqlx::query(
            "INSERT INTO run_results (run_key, result, result_lz4) SELECT run_key, NULL, ?1 FROM runs \
             WHERE run_id = ?2 ON CONFLICT (run_key) DO UPDATE SET result = NULL, result_lz4 = excluded.result_lz4",
        )
        .bind(packed)
        .bind(&result.run_id)
        .execute(&mut *tx)
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
    }

    async fn get_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError> {
        let row = sqlx::query(
            "SELECT result, result_lz4 FROM run_results WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
        )
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        let Some(row) = row else { return Ok(None) };
        let read = || -> Result<Option<RunResult>, String> {
            if let Some(packed) = col::<Option<Vec<u8>>, _>(&row, "result_lz4")? {
                let json = unpack(&packed).map_err(|e| format!("column `result_lz4`: {e}"))?;
                return serde_json::from_slice(&json)
                    .map(Some)
                    .map_err(|e| format!("column `result_lz4`: the result does not decode ({e})"));
            }
            // A run finished before schema version 4 keeps its result as JSON text.
            match col::<Option<String>, _>(&row, "result")? {
                Some(json) => serde_json::from_str(&json)
                    .map(Some)
                    .map_err(|e| format!("column `result`: the result does not decode ({e})")),
                None => Ok(None),
            }
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
        let now = now_ms();
        // One statement, so two processes cannot both take the lease.
        let claimed = sqlx::query(
            "INSERT INTO runs (run_id, started_at, owner, heartbeat_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, heartbeat_ms = excluded.heartbeat_ms \
             WHERE runs.owner IS NULL OR runs.heartbeat_ms IS NULL OR runs.heartbeat_ms <= ? \
             OR runs.owner = excluded.owner OR runs.owner = ?",
        )
        .bind(run_id)
        .bind(Utc::now().to_rfc3339())
        .bind(owner)
        .bind(now)
        .bind(now - ttl.as_millis() as i64)
        .bind(replace.unwrap_or(""))
        .execute(&self.pool)
        .await
        .map_err(self.err())?
        .rows_affected();
        if claimed == 1 {
            return Ok(());
        }
        let row = sqlx::query("SELECT owner, heartbeat_ms FROM runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())?;
        let damaged = self.damaged_run(run_id);
        let owner = col::<Option<String>, _>(&row, "owner").map_err(&damaged)?.unwrap_or_default();
        let heartbeat = col::<Option<i64>, _>(&row, "heartbeat_ms").map_err(&damaged)?.unwrap_or(now);
        Err(StoreError::Busy {
            run_id: run_id.to_string(),
            owner,
            age_ms: u64::try_from(now.saturating_sub(heartbeat)).unwrap_or(0),
        })
    }

    async fn heartbeat(&self, run_id: &str, owner: &str) -> Result<Lease, StoreError> {
        let row = sqlx::query(
            "UPDATE runs SET heartbeat_ms = ?1 WHERE run_id = ?2 AND owner = ?3 RETURNING cancel_requested",
        )
        .bind(now_ms())
        .bind(run_id)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(match row {
            Some(r) => Lease {
                held: true,
                cancel_requested: col::<bool, _>(&r, "cancel_requested").map_err(self.damaged_run(run_id))?,
            },
            None => Lease { held: false, cancel_requested: false },
        })
    }

    async fn take_runs(&self, owner: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        // One statement: SQLite runs it under the database's write lock, so two processes
        // never take the same run.
        let now = now_ms();
        let rows = sqlx::query(concat!(
            "UPDATE runs SET status = 'running', owner = ?1, heartbeat_ms = ?2 WHERE run_key IN ( \
               SELECT run_key FROM runs WHERE status IN ('queued', 'running') AND pattern != '' \
               AND cancel_requested = 0 AND (owner IS NULL OR heartbeat_ms IS NULL OR heartbeat_ms <= ?3) \
               ORDER BY run_key LIMIT ?4) \
             RETURNING run_key, run_id, pattern, task, status, started_at, ",
            definition!()
        ))
        .bind(owner)
        .bind(now)
        .bind(now - LEASE_TTL.as_millis() as i64)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        let mut taken = rows
            .iter()
            .map(|r| Ok((count(r, "run_key").unwrap_or(0), self.run_record(r, "a run taken")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        taken.sort_by_key(|(key, _)| *key);
        Ok(taken.into_iter().map(|(_, r)| r).collect())
    }

    async fn release(&self, run_id: &str, owner: &str) -> Result<bool, StoreError> {
        // A run whose cancel was asked for while it was handed back ends cancelled: no
        // driver would take it from the queue.
        let released = sqlx::query(
            "UPDATE runs SET status = CASE WHEN cancel_requested = 0 THEN 'queued' ELSE 'cancelled' END, \
             owner = NULL, heartbeat_ms = NULL WHERE run_id = ? AND owner = ? AND status = 'running'",
        )
        .bind(run_id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(self.err())?
        .rows_affected();
        Ok(released == 1)
    }

    async fn request_cancel(&self, run_id: &str) -> Result<CancelRequest, StoreError> {
        let row = sqlx::query(
            "UPDATE runs SET cancel_requested = 1 WHERE run_id = ? AND status IN ('queued', 'running') \
             RETURNING status",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(match row.map(|r| status(&r)).transpose().map_err(self.damaged_run(run_id))? {
            Some(RunStatus::Queued) => CancelRequest::WasQueued,
            Some(_) => CancelRequest::WasRunning,
            None => CancelRequest::NotLive,
        })
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_key, run_id, pattern, task, status, started_at, owner, heartbeat_ms, duration_ms, \
             COALESCE(cost_usd, (SELECT SUM(cost_usd) FROM steps s WHERE s.run_key = runs.run_key), 0.0) AS cost, \
             (SELECT COUNT(*) FROM steps s WHERE s.run_key = runs.run_key) AS steps \
             FROM runs WHERE pattern != '' ORDER BY started_at DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        let stale = now_ms() - LEASE_TTL.as_millis() as i64;
        rows.iter()
            .map(|r| {
                let run_id: String = col(r, "run_id").map_err(|d| {
                    let key = col::<i64, _>(r, "run_key").map_or_else(|_| "?".to_string(), |k| k.to_string());
                    self.damaged(None, within(d, &format!("the run with key {key}")))
                })?;
                let read = || -> Result<RunSummary, String> {
                    let status = match status(r)? {
                        RunStatus::Running
                            if col::<Option<i64>, _>(r, "heartbeat_ms")?.is_none_or(|h| h < stale) =>
                        {
                            RunStatus::Interrupted
                        }
                        s => s,
                    };
                    Ok(RunSummary {
                        run_id: run_id.clone(),
                        pattern: col(r, "pattern")?,
                        task: col(r, "task")?,
                        status,
                        started_at: time(r, "started_at")?,
                        steps: count(r, "steps")?,
                        cost_usd: col(r, "cost")?,
                        duration_ms: opt_count(r, "duration_ms")?,
                        owner: col(r, "owner")?,
                    })
                };
                read().map_err(self.damaged_run(&run_id))
            })
            .collect()
    }

    async fn queued_runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        // `run_key` grows with every run recorded: the order they were accepted in.
        let rows = sqlx::query(concat!(
            "SELECT run_id, pattern, task, status, started_at, ",
            definition!(),
            " FROM runs WHERE status = 'queued' AND pattern != '' ORDER BY run_key LIMIT ?"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter().map(|r| self.run_record(r, "a queued run")).collect()
    }

    async fn take_queued(&self, run_id: &str, owner: &str) -> Result<bool, StoreError> {
        // One statement, so two processes cannot both take it (PostgreSQL will do the same
        // with `FOR UPDATE SKIP LOCKED`). Not while another process holds a live lease on
        // it: `belt resume` of a queued run claims it before it records it as running.
        let taken = sqlx::query(
            "UPDATE runs SET status = 'running', owner = ?1, heartbeat_ms = ?2 \
             WHERE run_id = ?3 AND status = 'queued' AND cancel_requested = 0 \
             AND (owner IS NULL OR heartbeat_ms IS NULL OR heartbeat_ms <= ?4 OR owner = ?1)",
        )
        .bind(owner)
        .bind(now_ms())
        .bind(run_id)
        .bind(now_ms() - LEASE_TTL.as_millis() as i64)
        .execute(&self.pool)
        .await
        .map_err(self.err())?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn delete_run(&self, run_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        for sql in [
            "DELETE FROM steps WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
            "DELETE FROM events WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
            "DELETE FROM run_definitions WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
            "DELETE FROM run_results WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
            "DELETE FROM dead_letters WHERE run_id = ?",
        ] {
            sqlx::query(sql).bind(run_id).execute(&mut *tx).await.map_err(self.err())?;
        }
        let gone = sqlx::query("DELETE FROM runs WHERE run_id = ?")
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?
            .rows_affected();
        tx.commit().await.map_err(self.err())?;
        Ok(gone > 0)
    }

    async fn put_dead_letter(&self, letter: &DeadLetter) -> Result<u64, StoreError> {
        let request = serde_json::to_string(&letter.work).map_err(|e| StoreError::Backend(e.to_string()))?;
        let id = sqlx::query(
            "INSERT INTO dead_letters (run_id, step, tier, error, error_kind, attempts, request, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&letter.run_id)
        .bind(letter.step.as_str())
        .bind(letter.tier.as_str())
        .bind(&letter.error)
        .bind(&letter.error_kind)
        .bind(i64::from(letter.attempts))
        .bind(request)
        .bind(letter.created_at.to_rfc3339())
        .execute(&self.pool)
        .await
        .map_err(self.err())?
        .last_insert_rowid();
        Ok(id as u64)
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, run_id, step, tier, error, error_kind, attempts, request, created_at FROM dead_letters ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                let id = count(r, "id").map_err(|d| self.damaged(None, within(d, "a dead letter")))?;
                let run_id: String = col(r, "run_id")
                    .map_err(|d| self.damaged(None, within(d, &format!("dead letter {id}"))))?;
                let read = || -> Result<DeadLetter, String> {
                    let request: String = col(r, "request")?;
                    let work: LetterWork = serde_json::from_str(&request).map_err(|e| {
                        format!("column `request`: the dead letter's work does not decode ({e})")
                    })?;
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
                        created_at: time(r, "created_at")?,
                    })
                };
                read().map_err(|d| self.damaged(Some(&run_id), within(d, &format!("dead letter {id}"))))
            })
            .collect()
    }

    async fn resolve_dead_letter(&self, id: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM dead_letters WHERE id = ?")
            .bind(id as i64)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(())
    }

    async fn cache_get(&self, key: InputHash) -> Result<Option<StepReply>, StoreError> {
        let row = sqlx::query("SELECT reply FROM cache WHERE key = ? AND expires_ms > ?")
            .bind(key.to_string())
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        let Some(r) = row else { return Ok(None) };
        // The cache only saves calls: an entry that does not read back is a miss (the call
        // is made, and its reply replaces the entry), not a reason to stop the run.
        Ok(col::<String, _>(&r, "reply").ok().and_then(|json| serde_json::from_str::<StepReply>(&json).ok()))
    }

    async fn cache_put(&self, key: InputHash, reply: &StepReply, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(reply).map_err(|e| StoreError::Backend(e.to_string()))?;
        sqlx::query("INSERT OR REPLACE INTO cache (key, reply, expires_ms) VALUES (?, ?, ?)")
            .bind(key.to_string())
            .bind(json)
            // Saturating: a TTL longer than the clock can count means "never expires".
            .bind(now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(())
    }
}

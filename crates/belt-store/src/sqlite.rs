//! The SQLite run store.
//!
//! Durability: the database runs in WAL mode with `synchronous = NORMAL`. A committed
//! transaction is in the WAL file before `commit` returns, so it survives the death of the
//! process (a crash, SIGKILL, an out-of-memory kill); a power loss can lose the last
//! transactions, which would then be re-run on resume and paid for again. `FULL` would
//! close that gap at the cost of an fsync per commit.
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
use belt_core::event::Event;
use belt_core::result::{RunResult, RunStatus};
use belt_core::step::{StepId, Tier};
use belt_core::store::{
    DeadLetter, InputHash, LEASE_TTL, RunRecord, RunStore, RunSummary, StepRecord, StoreError,
};
use belt_core::{LlmRequest, StepOutcome, StepReply, Usage};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::event_row;
use crate::writer::Writer;

pub use crate::writer::MAX_BATCH;

/// A run store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    pub(crate) pool: SqlitePool,
    writer: Writer,
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
        let pool =
            SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await.map_err(err)?;
        MIGRATOR.run(&pool).await.map_err(|e| backend(&path, sqlx::Error::Migrate(Box::new(e))))?;
        // The writer has a connection of its own, so reads never wait behind a batch.
        let writer = Writer::start(&path, busy_timeout)?;
        Ok(SqliteStore { path, pool, writer })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| backend(&self.path, e)
    }
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

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn parse_time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

fn parse_status(s: &str) -> RunStatus {
    serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or(RunStatus::Failed)
}

/// The bytes of an LZ4 block written by `lz4_flex::compress_prepend_size`.
fn unpack(packed: &[u8]) -> Result<Vec<u8>, String> {
    // The length prefix comes from the file: check it against the most LZ4 can expand
    // (255 to 1) before it sizes an allocation.
    let size = packed.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match size {
        Some(size) if size <= packed.len().saturating_mul(255) => {
            lz4_flex::decompress_size_prepended(packed).map_err(|e| e.to_string())
        }
        _ => Err("the compressed result has a wrong length".to_string()),
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("a stored {what} does not decode ({e}); the store may be damaged"))
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (run_id, pattern, task, status, started_at, definition) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id) DO UPDATE SET pattern = excluded.pattern, task = excluded.task, \
             status = excluded.status, definition = excluded.definition",
        )
        .bind(&run.run_id)
        .bind(&run.pattern)
        .bind(&run.task)
        .bind(run.status.as_str())
        .bind(run.started_at.to_rfc3339())
        .bind(run.definition.to_string())
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT run_id, pattern, task, status, started_at, definition FROM runs WHERE run_id = ?",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(row.filter(|r| !r.get::<String, _>("pattern").is_empty()).map(|r| RunRecord {
            run_id: r.get("run_id"),
            pattern: r.get("pattern"),
            task: r.get("task"),
            status: parse_status(r.get("status")),
            started_at: parse_time(r.get("started_at")),
            definition: Arc::from(r.get::<String, _>("definition")),
        }))
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
        rows.into_iter()
            .map(|r| {
                let hash: String = r.get("input_hash");
                let input_hash = serde_json::from_value::<InputHash>(serde_json::Value::String(hash))
                    .map_err(|e| corrupt("input hash", e))?;
                let reply = StepReply {
                    text: Arc::from(r.get::<String, _>("output")),
                    outcome: StepOutcome {
                        model: Arc::from(r.get::<String, _>("model")),
                        usage: Usage {
                            input_tokens: r.get::<i64, _>("input_tokens") as u64,
                            output_tokens: r.get::<i64, _>("output_tokens") as u64,
                            cache_read_tokens: r.get::<i64, _>("cache_read_tokens") as u64,
                            cache_write_tokens: r.get::<i64, _>("cache_write_tokens") as u64,
                            reasoning_tokens: r.get::<i64, _>("reasoning_tokens") as u64,
                        },
                        cost_usd: r.get("cost_usd"),
                        attempts: r.get::<i64, _>("attempts") as u32,
                        duration_ms: r.get::<i64, _>("duration_ms") as u64,
                        replayed: false,
                        cached: false,
                        reported_usage: match r.get::<Option<String>, _>("reported_usage") {
                            Some(json) => {
                                Some(serde_json::from_str(&json).map_err(|e| corrupt("reported usage", e))?)
                            }
                            None => None,
                        },
                    },
                    simulated: r.get("simulated"),
                    tool_calls: match r.get::<Option<String>, _>("tool_calls") {
                        Some(json) => serde_json::from_str(&json).map_err(|e| corrupt("tool calls", e))?,
                        None => Vec::new(),
                    },
                    finish_reason: r.get::<Option<String>, _>("finish_reason").map(Arc::from),
                    unpriced: r.get("unpriced"),
                };
                Ok(StepRecord {
                    step: StepId::new(r.get::<String, _>("step")),
                    tier: Tier::parse(r.get("tier")),
                    input_hash,
                    reply,
                })
            })
            .collect()
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
            event_row::decode(&run, r.get("lines"), &mut after, &mut events)
                .map_err(|e| corrupt("event", e))?;
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
        Ok(row.get::<i64, _>("seq") as u64)
    }

    async fn finish_run(&self, result: &RunResult) -> Result<(), StoreError> {
        let json = serde_json::to_vec(result).map_err(|e| StoreError::Backend(e.to_string()))?;
        // Compressed: a result holds every agent's record and output (4 MB of JSON for
        // 10,000 agents, about a tenth of that in LZ4), and writing it was a sixth of what
        // the SQLite store cost such a run. LZ4 compresses that in a few milliseconds.
        let packed = lz4_flex::compress_prepend_size(&json);
        drop(json);
        sqlx::query(
            "UPDATE runs SET status = ?, result = NULL, result_lz4 = ?, cost_usd = ?, duration_ms = ?, \
             finished_at = ?, owner = NULL, heartbeat_ms = NULL WHERE run_id = ?",
        )
        .bind(result.status.as_str())
        .bind(packed)
        .bind(result.cost_usd)
        .bind(result.duration_ms as i64)
        .bind(Utc::now().to_rfc3339())
        .bind(&result.run_id)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    async fn get_result(&self, run_id: &str) -> Result<Option<RunResult>, StoreError> {
        let row = sqlx::query("SELECT result, result_lz4 FROM runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        let Some(row) = row else { return Ok(None) };
        if let Some(packed) = row.get::<Option<Vec<u8>>, _>("result_lz4") {
            let json = unpack(&packed).map_err(|e| corrupt("result", e))?;
            return serde_json::from_slice(&json).map(Some).map_err(|e| corrupt("result", e));
        }
        // A run finished before schema version 4 keeps its result as JSON text.
        match row.get::<Option<String>, _>("result") {
            Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| corrupt("result", e)),
            None => Ok(None),
        }
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
        Err(StoreError::Busy {
            run_id: run_id.to_string(),
            owner: row.get::<Option<String>, _>("owner").unwrap_or_default(),
            age_ms: (now - row.get::<Option<i64>, _>("heartbeat_ms").unwrap_or(now)).max(0) as u64,
        })
    }

    async fn heartbeat(&self, run_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE runs SET heartbeat_ms = ? WHERE run_id = ? AND owner = ?")
            .bind(now_ms())
            .bind(run_id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(())
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, pattern, task, status, started_at, owner, heartbeat_ms, duration_ms, \
             COALESCE(cost_usd, (SELECT SUM(cost_usd) FROM steps s WHERE s.run_key = runs.run_key), 0.0) AS cost, \
             (SELECT COUNT(*) FROM steps s WHERE s.run_key = runs.run_key) AS steps \
             FROM runs WHERE pattern != '' ORDER BY started_at DESC LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        let stale = now_ms() - LEASE_TTL.as_millis() as i64;
        Ok(rows
            .into_iter()
            .map(|r| {
                let status = match parse_status(r.get("status")) {
                    RunStatus::Running
                        if r.get::<Option<i64>, _>("heartbeat_ms").is_none_or(|h| h < stale) =>
                    {
                        RunStatus::Interrupted
                    }
                    s => s,
                };
                RunSummary {
                    run_id: r.get("run_id"),
                    pattern: r.get("pattern"),
                    task: r.get("task"),
                    status,
                    started_at: parse_time(r.get("started_at")),
                    steps: r.get::<i64, _>("steps") as u64,
                    cost_usd: r.get("cost"),
                    duration_ms: r.get::<Option<i64>, _>("duration_ms").map(|d| d as u64),
                    owner: r.get("owner"),
                }
            })
            .collect())
    }

    async fn delete_run(&self, run_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        for sql in [
            "DELETE FROM steps WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
            "DELETE FROM events WHERE run_key = (SELECT run_key FROM runs WHERE run_id = ?)",
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
        let request =
            serde_json::to_string(&letter.request).map_err(|e| StoreError::Backend(e.to_string()))?;
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
        rows.into_iter()
            .map(|r| {
                let request: LlmRequest =
                    serde_json::from_str(r.get("request")).map_err(|e| corrupt("dead letter", e))?;
                Ok(DeadLetter {
                    id: r.get::<i64, _>("id") as u64,
                    run_id: r.get("run_id"),
                    step: StepId::new(r.get::<String, _>("step")),
                    tier: Tier::parse(r.get("tier")),
                    error: r.get("error"),
                    error_kind: r.get("error_kind"),
                    attempts: r.get::<i64, _>("attempts") as u32,
                    request,
                    created_at: parse_time(r.get("created_at")),
                })
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
        match row {
            Some(r) => serde_json::from_str(r.get("reply")).map(Some).map_err(|e| corrupt("cached reply", e)),
            None => Ok(None),
        }
    }

    async fn cache_put(&self, key: InputHash, reply: &StepReply, ttl: Duration) -> Result<(), StoreError> {
        let json = serde_json::to_string(reply).map_err(|e| StoreError::Backend(e.to_string()))?;
        sqlx::query("INSERT OR REPLACE INTO cache (key, reply, expires_ms) VALUES (?, ?, ?)")
            .bind(key.to_string())
            .bind(json)
            .bind(now_ms() + ttl.as_millis() as i64)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(())
    }
}

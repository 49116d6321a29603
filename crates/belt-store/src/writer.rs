//! The group-commit writer: one thread with its own SQLite connection that commits step
//! records and events.
//!
//! Every step of a run writes its record (and two events) before its output may be used,
//! so this is the store's hot path. It runs on a dedicated thread, not through sqlx:
//! sqlx sends each statement to its connection's worker thread and back, and builds a
//! statement whose text (and so its prepared form) differs with every batch size. Here the
//! thread owns the connection, keeps one prepared single-row INSERT per table, and steps
//! it once per item inside one transaction per batch.
//!
//! Batching: the thread takes everything queued when it starts a transaction (up to
//! [`MAX_BATCH`] items) and commits it at once; each caller is told only after the
//! transaction that holds its item committed. A step's record is therefore durable before
//! [`RunStore::put_step`](belt_core::store::RunStore::put_step) returns, and a crash loses
//! at most the calls in flight. The batching only amortizes a commit over the steps that
//! finished while the previous one was being written.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use belt_core::event::Event;
use belt_core::store::{StepRecord, StoreError};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::event_row;
use crate::sqlite::backend_text;

/// The most step records and event batches the writer commits in one transaction.
pub const MAX_BATCH: usize = 512;

type Done = oneshot::Sender<Result<(), StoreError>>;

/// One item for the writer.
enum Write {
    Step(Arc<str>, StepRecord, Done),
    Events(Arc<str>, Vec<Arc<Event>>, Done),
}

/// The handle of the writer thread; the thread ends when the handle is dropped, after
/// committing what was queued.
pub(crate) struct Writer {
    queue: mpsc::Sender<Write>,
    path: PathBuf,
}

// Column order as in the table (see migrations/0004_compact_rows.sql).
const INSERT_STEP: &str = "INSERT OR REPLACE INTO steps (run_key, step, tier, input_hash, model, \
     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, attempts, duration_ms, \
     simulated, tool_calls, output) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";
const INSERT_EVENTS: &str =
    "INSERT OR IGNORE INTO events (run_key, first_seq, last_seq, lines) VALUES (?1, ?2, ?3, ?4)";
const RUN_KEY: &str = "SELECT run_key FROM runs WHERE run_id = ?1";
/// A run written to before it was recorded gets a placeholder row, as a lease creates.
const NEW_RUN: &str = "INSERT INTO runs (run_id, started_at) VALUES (?1, ?2)";
const STATEMENTS: [&str; 6] = [INSERT_STEP, INSERT_EVENTS, RUN_KEY, NEW_RUN, "BEGIN IMMEDIATE", "COMMIT"];

impl Writer {
    /// Open the writer's connection to the (already migrated) database at `path` and start
    /// its thread.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let err = |e: rusqlite::Error| backend_text(path, &e.to_string());
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(err)?;
        conn.busy_timeout(busy_timeout).map_err(err)?;
        // The journal mode (WAL) is a property of the file; `synchronous` is per connection.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        // Prepare now, so a schema problem shows when the store opens, not at the first step.
        conn.set_prepared_statement_cache_capacity(STATEMENTS.len());
        for sql in STATEMENTS {
            conn.prepare_cached(sql).map_err(err)?;
        }
        let (queue, rx) = mpsc::channel();
        let thread_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("belt-store-writer".into())
            .spawn(move || write_loop(conn, rx, thread_path))
            .map_err(|e| backend_text(path, &format!("cannot start the store's writer thread: {e}")))?;
        Ok(Writer { queue, path: path.to_path_buf() })
    }

    /// Record a step; returns once its record is committed.
    pub(crate) async fn put_step(&self, run_id: &str, record: &StepRecord) -> Result<(), StoreError> {
        self.send(|done| Write::Step(Arc::from(run_id), record.clone(), done)).await
    }

    /// Append events; returns once they are committed.
    pub(crate) async fn append_events(&self, run_id: &str, events: &[Arc<Event>]) -> Result<(), StoreError> {
        self.send(|done| Write::Events(Arc::from(run_id), events.to_vec(), done)).await
    }

    async fn send(&self, make: impl FnOnce(Done) -> Write) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StoreError::Backend(format!("the writer of the store {} stopped", self.path.display()));
        self.queue.send(make(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Commit queued writes in batches until every handle is dropped.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Write>, path: PathBuf) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut json = Vec::with_capacity(1024);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let result = commit(&mut conn, &batch, &mut json).map_err(|e| backend_text(&path, &e.to_string()));
        for w in batch.drain(..) {
            let (Write::Step(_, _, done) | Write::Events(_, _, done)) = w;
            let _ = done.send(result.clone());
        }
    }
}

/// Write one batch in one transaction; on error nothing of it is kept.
fn commit(conn: &mut Connection, batch: &[Write], json: &mut Vec<u8>) -> rusqlite::Result<()> {
    // IMMEDIATE: take the write lock up front, so waiting for another process's lock goes
    // through the busy timeout instead of failing halfway. BEGIN and COMMIT are prepared
    // once like the INSERTs (rusqlite's `Transaction` parses them on every call).
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let written = write_rows(conn, batch, json).and_then(|()| conn.prepare_cached("COMMIT")?.execute([]));
    match written {
        Ok(_) => Ok(()),
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

fn write_rows(conn: &Connection, batch: &[Write], json: &mut Vec<u8>) -> rusqlite::Result<()> {
    let mut step = conn.prepare_cached(INSERT_STEP)?;
    let mut insert_events = conn.prepare_cached(INSERT_EVENTS)?;
    // The runs of this batch (nearly always one). Looked up in every transaction, so a run
    // deleted and recorded again meanwhile gets its new key.
    let mut keys: Vec<(&str, i64)> = Vec::with_capacity(1);
    let mut hash = String::with_capacity(32);
    for w in batch {
        match w {
            Write::Step(run, r, _) => {
                let key = run_key(conn, &mut keys, run)?;
                // The calls a tool round's model made, so a resumed loop replays them.
                let tool_calls = if r.tool_calls.is_empty() {
                    None
                } else {
                    Some(serde_json::to_string(&r.tool_calls).map_err(|e| to_sql_error(Box::new(e)))?)
                };
                hash.clear();
                use std::fmt::Write as _;
                let _ = write!(hash, "{}", r.input_hash);
                step.execute(params![
                    key,
                    r.step.as_str(),
                    r.tier.as_str(),
                    hash.as_str(),
                    &*r.model,
                    r.usage.input_tokens as i64,
                    r.usage.output_tokens as i64,
                    r.usage.cache_read_tokens as i64,
                    r.usage.cache_write_tokens as i64,
                    r.cost_usd,
                    i64::from(r.attempts),
                    r.duration_ms as i64,
                    r.simulated,
                    tool_calls,
                    &*r.output,
                ])?;
            }
            Write::Events(run, events, _) => {
                let (Some(first), Some(last)) = (events.first(), events.last()) else { continue };
                let key = run_key(conn, &mut keys, run)?;
                json.clear();
                event_row::encode(events, json).map_err(|e| to_sql_error(Box::new(e)))?;
                let lines = std::str::from_utf8(json).map_err(|e| to_sql_error(Box::new(e)))?;
                insert_events.execute(params![key, first.seq as i64, last.seq as i64, lines])?;
            }
        }
    }
    Ok(())
}

/// The key of run `run`, recording a placeholder run if it has none yet.
fn run_key<'a>(conn: &Connection, keys: &mut Vec<(&'a str, i64)>, run: &'a str) -> rusqlite::Result<i64> {
    if let Some(&(_, key)) = keys.iter().find(|(r, _)| *r == run) {
        return Ok(key);
    }
    let found = conn.prepare_cached(RUN_KEY)?.query_row([run], |row| row.get(0)).optional()?;
    let key = match found {
        Some(key) => key,
        None => {
            conn.prepare_cached(NEW_RUN)?.execute(params![run, chrono::Utc::now().to_rfc3339()])?;
            conn.last_insert_rowid()
        }
    };
    keys.push((run, key));
    Ok(key)
}

fn to_sql_error(e: Box<dyn std::error::Error + Send + Sync>) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e)
}

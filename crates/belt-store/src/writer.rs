//! The step writer: commits step records and events, on the caller's thread when it can.
//!
//! Every step of a run writes its record before its output may be used, so this is the
//! store's hot path, and on a chain of steps (each waiting for the previous one's commit)
//! its latency is the step's. Three choices make it cheap:
//!
//! - **Its own connection** (rusqlite, the same libsqlite3-sys as sqlx) with one prepared
//!   single-row INSERT per table and prepared `BEGIN IMMEDIATE`/`COMMIT`. Through sqlx every
//!   statement would cross to its connection's worker thread and back, and a multi-row
//!   INSERT would be a new SQL text for every batch size.
//! - **Leader-based group commit, on the step's own thread.** A step queues its record and,
//!   unless another step is already leading, becomes the *leader*: it takes the connection
//!   and commits everything queued (its own record included) right there, then looks again
//!   for records queued meanwhile. A step that finds a leader just waits to be told. A
//!   chain of steps thus commits with no hand-off at all: a dedicated writer thread for every
//!   commit cost a chain about 100 µs of scheduler work per step on this project's 2-core
//!   VM (two wake-ups, two context switches), three times SQLite's own commit. When recent
//!   commits held several records (steps run side by side), the leader first yields once to
//!   the scheduler, so the steps that are ready run up to their own commit and join its
//!   batch: a fan-out of 10,000 steps at concurrency 64 commits in about 430 to 850
//!   transactions (counted on this project's 2-core VM).
//! - **Nothing slow on a runtime thread.** The leader runs inside a tokio task, so it only
//!   commits what is quick: more than [`INLINE_STEPS`] records, or a database locked by
//!   another connection (the inline attempt never waits: busy timeout 0), go to the writer
//!   thread, which waits with the store's busy timeout. Events go there too: no step waits
//!   for them (a task of their own records them, in batches). So do checkpoints (copying
//!   the WAL back into the database, with two fsyncs): SQLite's automatic checkpoint would
//!   run inside a step's commit, so a WAL hook replaces it on this connection, and every
//!   [`CHECKPOINT_PAGES`] WAL pages the writer thread checkpoints instead, holding the
//!   connection meanwhile. Holding it matters: the WAL starts over from its beginning only
//!   when a checkpoint copied all of it, which a checkpoint from another connection never
//!   does while commits go on (tried: the WAL grew without end).
//! - **Read marks held in this process** (see [`crate::read_marks`]): while steps commit
//!   one after the other, connections of the store hold SQLite's WAL read marks, so a
//!   commit's read side takes and releases no `fcntl` lock (four of the six per commit);
//!   they are let go before each checkpoint and when commits stop for [`IDLE`].
//!
//! A caller is told only after the transaction that holds its item committed, so a step's
//! record is durable before [`RunStore::put_step`](belt_core::store::RunStore::put_step)
//! returns and a crash loses at most the calls in flight; the batching only amortizes one
//! commit over the items that arrived while the previous one was written.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use belt_core::event::Event;
use belt_core::store::{StepRecord, StoreError};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::event_row;
use crate::read_marks::{IDLE, ReadMarks};
use crate::sqlite::backend_text;

/// The most step records and event batches committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// The most step records a leader commits on its own (runtime) thread, about 100 µs of
/// work, the most a task should hold a runtime thread; more go to the writer thread. Steps
/// of a run with concurrency up to this many are committed inline.
pub const INLINE_STEPS: usize = 64;

/// How many leaders in a row wait for company after a commit that held several step
/// records, however few they find (see `put_step`).
const COMPANY_COMMITS: u8 = 8;

/// WAL pages after which the writer thread copies the WAL into the database (SQLite's own
/// default for its automatic checkpoint).
pub const CHECKPOINT_PAGES: i32 = 1000;

type Done = oneshot::Sender<Result<(), StoreError>>;

/// One item to commit, and whom to tell.
struct Item {
    write: Write,
    done: Done,
}

enum Write {
    Step(Arc<str>, StepRecord),
    Events(Arc<str>, Vec<Arc<Event>>),
}

/// The handle of the writer; its thread ends when it is dropped, after committing what was
/// queued.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// Wakes the writer thread to lead: events to write, or steps the inline leader left
    /// (too many, the database busy, a checkpoint due).
    wake_writer: mpsc::Sender<()>,
}

/// What the callers, the writer thread and the leaders share.
struct Shared {
    /// Held by whoever commits.
    conn: Mutex<Conn>,
    /// Step records waiting for a leader, in arrival order.
    steps: Mutex<Vec<Item>>,
    /// Event batches waiting for the writer thread. No step waits for them (events are
    /// recorded by a task of their own), so they never take a step's thread.
    events: Mutex<Vec<Item>>,
    /// Whether a caller leads (commits steps on its own thread) now.
    leading: AtomicBool,
    /// Whether read marks are held, so the writer thread must wake to let them go once
    /// commits stop.
    marks_held: AtomicBool,
    /// How many of the next leaders wait for company (see `put_step`): set when a commit
    /// held more than one step record, counted down by each one that held a single record.
    company: AtomicU8,
    path: PathBuf,
    busy_timeout: Duration,
}

/// The connection and what its leaders keep between commits.
struct Conn {
    conn: Connection,
    /// The busy timeout the connection has now: zero for an inline leader, the store's for
    /// the writer thread.
    waits: bool,
    json: Vec<u8>,
    /// WAL pages after the last commit, and the count at which to checkpoint.
    wal_pages: i32,
    next_checkpoint: i32,
    checkpoint_due: bool,
    /// Read marks held while commits come often (see [`crate::read_marks`]).
    marks: ReadMarks,
    /// When the last commit ended.
    last_commit: Instant,
    /// The keys of the runs recent commits wrote to, valid while the database's data
    /// version is `version` (see `RunKeys`).
    keys: RunKeys,
}

/// Run keys known from earlier transactions of this connection. A run deleted and recorded
/// again gets a new key, so a key is only reused while no other connection changed the
/// database since this one's last commit: SQLite's data version of the file (which every
/// commit, of any connection or process, changes) is then what this connection left.
#[derive(Default)]
struct RunKeys {
    keys: Vec<(Arc<str>, i64)>,
    /// The data version after this connection's last commit, if it could be read.
    version: Option<u32>,
}

/// The most run keys kept between transactions (a linear search; a process drives few runs
/// at once).
const KEPT_KEYS: usize = 16;

/// SQLite's data version of the main database: it changes with every commit to the file,
/// this connection's and any other's (`SQLITE_FCNTL_DATA_VERSION`). `None` if it cannot be
/// read.
fn data_version(conn: &Connection) -> Option<u32> {
    let mut version: std::ffi::c_uint = 0;
    // SAFETY: the handle is valid while `conn` lives and is used by this thread alone (the
    // caller holds the connection's mutex); this file control writes one unsigned int
    // through the pointer, which points at `version`.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_DATA_VERSION,
            (&raw mut version).cast(),
        )
    };
    (rc == rusqlite::ffi::SQLITE_OK).then_some(version)
}

/// Who commits, and so how long they may wait.
#[derive(Clone, Copy, PartialEq)]
enum Lead {
    /// A step's task on a runtime thread: a few step records, never waits for a lock.
    Inline,
    /// The writer thread: anything, waits up to the busy timeout, checkpoints.
    Blocking,
}

/// How an inline lead ended.
#[derive(PartialEq)]
enum Led {
    /// Every queued step record was committed.
    Done,
    /// The writer thread holds the connection, and commits what is queued before it lets go.
    Held,
    /// Step records or a checkpoint are left for the writer thread.
    HandOff,
}

// Columns as in migrations/0004_compact_rows.sql, 0005_step_finish.sql and 0006_step_usage.sql.
const INSERT_STEP: &str = "INSERT OR REPLACE INTO steps (run_key, step, tier, input_hash, model, \
     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, attempts, duration_ms, \
     simulated, tool_calls, output, finish_reason, unpriced, reasoning_tokens, reported_usage) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";
const INSERT_EVENTS: &str =
    "INSERT OR IGNORE INTO events (run_key, first_seq, last_seq, lines) VALUES (?1, ?2, ?3, ?4)";
const RUN_KEY: &str = "SELECT run_key FROM runs WHERE run_id = ?1";
/// A run written to before it was recorded gets a placeholder row, as a lease creates.
const NEW_RUN: &str = "INSERT INTO runs (run_id, started_at) VALUES (?1, ?2)";
const STATEMENTS: [&str; 6] = [INSERT_STEP, INSERT_EVENTS, RUN_KEY, NEW_RUN, "BEGIN IMMEDIATE", "COMMIT"];

thread_local! {
    /// The WAL's size in pages after the last commit on this thread, set by [`wal_pages`].
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// SQLite's WAL hook: called on the committing thread after each commit with the WAL's
/// size. Installing it replaces SQLite's automatic checkpoint on this connection.
fn wal_pages(_: &rusqlite::hooks::Wal, pages: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

fn open(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let err = |e: rusqlite::Error| backend_text(path, &e.to_string());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(err)?;
    conn.busy_timeout(busy_timeout).map_err(err)?;
    // The journal mode (WAL) is a property of the file; `synchronous` is per connection.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
    Ok(conn)
}

impl Writer {
    /// Open the writer's connections to the (already migrated) database at `path` and start
    /// its threads.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let err = |e: rusqlite::Error| backend_text(path, &e.to_string());
        let conn = open(path, busy_timeout)?;
        conn.wal_hook(Some(wal_pages));
        // Prepare now, so a schema problem shows when the store opens, not at the first step.
        conn.set_prepared_statement_cache_capacity(STATEMENTS.len());
        for sql in STATEMENTS {
            conn.prepare_cached(sql).map_err(err)?;
        }
        let marks = ReadMarks::open(path).map_err(err)?;
        let shared = Arc::new(Shared {
            conn: Mutex::new(Conn {
                conn,
                waits: true,
                json: Vec::with_capacity(1024),
                wal_pages: 0,
                next_checkpoint: CHECKPOINT_PAGES,
                checkpoint_due: false,
                marks,
                last_commit: Instant::now(),
                keys: RunKeys::default(),
            }),
            steps: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            leading: AtomicBool::new(false),
            marks_held: AtomicBool::new(false),
            company: AtomicU8::new(0),
            path: path.to_path_buf(),
            busy_timeout,
        });
        let spawn_err =
            |e: std::io::Error| backend_text(path, &format!("cannot start the store's writer thread: {e}"));
        let (wake_writer, wakes) = mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("belt-store-writer".into())
            .spawn(move || {
                // Led until the handle is dropped, and once more for what was queued then.
                // While read marks are held, it also wakes after `IDLE` without a wake-up
                // to let them go if commits stopped.
                loop {
                    let woke = if thread_shared.marks_held.load(Ordering::SeqCst) {
                        wakes.recv_timeout(IDLE)
                    } else {
                        wakes.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                    };
                    match woke {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => thread_shared.lead_blocking(),
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                thread_shared.lead_blocking();
            })
            .map_err(spawn_err)?;
        Ok(Writer { shared, wake_writer })
    }

    /// Record a step; returns once its record is committed.
    pub(crate) async fn put_step(&self, run_id: &str, record: &StepRecord) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        let write = Write::Step(Arc::from(run_id), record.clone());
        lock(&self.shared.steps).push(Item { write, done });
        // Lead unless another caller does (it looks at the queue again once it stops).
        while !self.shared.leading.swap(true, Ordering::SeqCst) {
            let mut leading = Leading { writer: self, led: false };
            if self.shared.company.load(Ordering::Relaxed) > 0 {
                // A recent commit held several records: steps run side by side. Let those
                // ready now run up to their own commit first, so they join this one (one
                // commit for all that finished together, none waiting for a thread). A
                // chain does not wait: a pass through the scheduler costs more than its
                // commit when nothing else is ready. (Deciding by the last commit alone
                // fell into runs of lone commits in a fan-out: one lone commit made the
                // next leader not wait, so its commit was lone too.)
                tokio::task::yield_now().await;
            }
            let led = self.shared.lead_inline();
            leading.led = true;
            drop(leading);
            match led {
                Led::HandOff => {
                    // Were the writer thread gone, `committed` says the store stopped.
                    let _ = self.wake_writer.send(());
                    break;
                }
                Led::Held => break,
                Led::Done if lock(&self.shared.steps).is_empty() => break,
                Led::Done => {}
            }
        }
        self.wait(committed).await
    }

    /// Append events; returns once they are committed.
    pub(crate) async fn append_events(&self, run_id: &str, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        let write = Write::Events(Arc::from(run_id), events.to_vec());
        lock(&self.shared.events).push(Item { write, done });
        let _ = self.wake_writer.send(());
        self.wait(committed).await
    }

    async fn wait(&self, committed: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
        committed.await.map_err(|_| {
            StoreError::Backend(format!("the writer of the store {} stopped", self.shared.path.display()))
        })?
    }
}

/// The inline leader's turn; ends it when dropped, also when its caller's future is dropped
/// while it yields (a cancelled run): then the records it would have committed go to the
/// writer thread, as their callers may still wait.
struct Leading<'a> {
    writer: &'a Writer,
    led: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let shared = &self.writer.shared;
        shared.leading.store(false, Ordering::SeqCst);
        if !self.led && !lock(&shared.steps).is_empty() {
            let _ = self.writer.wake_writer.send(());
        }
    }
}

/// Lock a queue. A panic while holding one leaves it consistent (pushes and drains only).
fn lock(queue: &Mutex<Vec<Item>>) -> MutexGuard<'_, Vec<Item>> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Commit queued step records on this (runtime) thread while there are any and they
    /// are few, if the connection is free.
    fn lead_inline(&self) -> Led {
        loop {
            let mut conn = match self.conn.try_lock() {
                Ok(c) => c,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Led::Held,
            };
            loop {
                let batch = {
                    let mut steps = lock(&self.steps);
                    if steps.is_empty() {
                        break;
                    }
                    if steps.len() > INLINE_STEPS {
                        return Led::HandOff;
                    }
                    std::mem::take(&mut *steps)
                };
                match conn.commit(Lead::Inline, self.busy_timeout, &batch) {
                    Err(e) if is_busy(&e) => {
                        // Back to the front of the queue, in order, for the writer thread.
                        let mut steps = lock(&self.steps);
                        let later = std::mem::replace(&mut *steps, batch);
                        steps.extend(later);
                        return Led::HandOff;
                    }
                    result => self.committed(batch, result),
                }
            }
            if conn.checkpoint_due {
                return Led::HandOff;
            }
            if conn.marks.held() > 0 && !self.marks_held.swap(true, Ordering::SeqCst) {
                // The writer thread waits without a timeout while no mark is held: wake it,
                // so that it lets the marks go once commits stop.
                return Led::HandOff;
            }
            drop(conn);
            // A record queued after the last look, while this leader still held the
            // connection, was left to it by its caller: look once more now that it is free.
            if lock(&self.steps).is_empty() {
                return Led::Done;
            }
        }
    }

    /// Commit everything queued, events and step records, on the writer thread; then
    /// checkpoint if due.
    fn lead_blocking(&self) {
        loop {
            let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                let mut batch = std::mem::take(&mut *lock(&self.events));
                let mut steps = lock(&self.steps);
                let n = steps.len().min(MAX_BATCH.saturating_sub(batch.len()).max(1));
                batch.extend(steps.drain(..n));
                drop(steps);
                if batch.is_empty() {
                    break;
                }
                let result = conn.commit(Lead::Blocking, self.busy_timeout, &batch);
                self.committed(batch, result);
            }
            if conn.checkpoint_due {
                conn.checkpoint();
            }
            if conn.marks.held() > 0 && conn.last_commit.elapsed() >= IDLE {
                conn.marks.release();
            }
            self.marks_held.store(conn.marks.held() > 0, Ordering::SeqCst);
            drop(conn);
            // As in `lead_inline`: what came while the connection was held.
            if lock(&self.steps).is_empty() && lock(&self.events).is_empty() {
                return;
            }
        }
    }

    /// Tell the callers of a batch how its commit went.
    fn committed(&self, batch: Vec<Item>, result: rusqlite::Result<()>) {
        let steps = batch.iter().filter(|i| matches!(i.write, Write::Step(..))).count();
        match steps {
            0 => {}
            1 => {
                let _ = self.company.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            _ => self.company.store(COMPANY_COMMITS, Ordering::Relaxed),
        }
        let result = result.map_err(|e| backend_text(&self.path, &e.to_string()));
        for item in batch {
            let _ = item.done.send(result.clone());
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

impl Conn {
    /// Write one batch in one transaction; on error nothing of it is kept.
    fn commit(&mut self, mode: Lead, busy_timeout: Duration, batch: &[Item]) -> rusqlite::Result<()> {
        let waits = mode == Lead::Blocking;
        if self.waits != waits {
            self.conn.busy_timeout(if waits { busy_timeout } else { Duration::ZERO })?;
            self.waits = waits;
        }
        let conn = &self.conn;
        // IMMEDIATE: take the write lock up front, so waiting for another process's lock goes
        // through the busy timeout instead of failing halfway. BEGIN and COMMIT are prepared
        // once like the INSERTs (rusqlite's `Transaction` parses them on every call).
        WAL_PAGES.set(-1);
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        // Another connection committed since this one did: a run may have been deleted and
        // recorded again under a new key.
        if self.keys.version.is_none() || data_version(conn) != self.keys.version {
            self.keys.keys.clear();
        }
        let written = write_rows(conn, batch, &mut self.json, &mut self.keys.keys)
            .and_then(|()| conn.prepare_cached("COMMIT")?.execute([]));
        match written {
            Ok(_) => {
                if self.keys.keys.len() > KEPT_KEYS {
                    self.keys.keys.clear();
                }
                self.keys.version = data_version(conn);
                let pages = WAL_PAGES.get();
                if pages >= 0 {
                    if pages < self.wal_pages {
                        // The WAL restarted from its beginning after a checkpoint.
                        self.next_checkpoint = CHECKPOINT_PAGES;
                    }
                    self.wal_pages = pages;
                    if pages >= self.next_checkpoint {
                        // Moved on, so a WAL that a reader keeps from being copied is tried
                        // again only after as many pages more.
                        self.checkpoint_due = true;
                        self.next_checkpoint = pages + CHECKPOINT_PAGES;
                    }
                }
                let now = Instant::now();
                if !self.checkpoint_due && now.duration_since(self.last_commit) < IDLE {
                    // Commits come often: one more read mark held, taken after this commit
                    // so that it is a mark of its own (see `read_marks`).
                    self.marks.hold_one();
                }
                self.last_commit = now;
                Ok(())
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                // A placeholder run recorded in the rolled-back transaction is gone.
                self.keys = RunKeys::default();
                Err(e)
            }
        }
    }

    /// Copy the WAL into the database. PASSIVE: what a reader in another process still
    /// needs stays, and nothing waits for a lock; with this connection held no commit of
    /// this process comes in between, so the WAL is usually copied whole and the next
    /// commit starts it over. A failure only leaves the WAL longer until the next one.
    fn checkpoint(&mut self) {
        self.checkpoint_due = false;
        // A held read mark would keep the frames after it from being copied, and the WAL
        // from starting over; the next commits take the marks again.
        self.marks.release();
        let _ = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

fn write_rows(
    conn: &Connection,
    batch: &[Item],
    json: &mut Vec<u8>,
    keys: &mut Vec<(Arc<str>, i64)>,
) -> rusqlite::Result<()> {
    // Taken from the statement cache when first needed (a lookup hashes the SQL text).
    let (mut step, mut insert_events) = (None, None);
    // The runs' keys (nearly always one run): kept from earlier transactions only while
    // no other connection changed the database (see `RunKeys`), so a run deleted and
    // recorded again meanwhile gets its new key.
    let mut hash = String::with_capacity(32);
    for item in batch {
        match &item.write {
            Write::Step(run, r) => {
                let key = run_key(conn, keys, run)?;
                // The calls a tool round's model made, so a resumed loop replays them.
                let tool_calls = if r.reply.tool_calls.is_empty() {
                    None
                } else {
                    Some(serde_json::to_string(&r.reply.tool_calls).map_err(|e| to_sql_error(Box::new(e)))?)
                };
                let reported_usage = match &r.reply.outcome.reported_usage {
                    Some(u) => Some(serde_json::to_string(u).map_err(|e| to_sql_error(Box::new(e)))?),
                    None => None,
                };
                hash.clear();
                use std::fmt::Write as _;
                let _ = write!(hash, "{}", r.input_hash);
                let step = match &mut step {
                    Some(s) => s,
                    None => step.insert(conn.prepare_cached(INSERT_STEP)?),
                };
                step.execute(params![
                    key,
                    r.step.as_str(),
                    r.tier.as_str(),
                    hash.as_str(),
                    &*r.reply.outcome.model,
                    r.reply.outcome.usage.input_tokens as i64,
                    r.reply.outcome.usage.output_tokens as i64,
                    r.reply.outcome.usage.cache_read_tokens as i64,
                    r.reply.outcome.usage.cache_write_tokens as i64,
                    r.reply.outcome.cost_usd,
                    i64::from(r.reply.outcome.attempts),
                    r.reply.outcome.duration_ms as i64,
                    r.reply.simulated,
                    tool_calls,
                    &*r.reply.text,
                    r.reply.outcome.finish_reason.as_deref(),
                    r.reply.outcome.unpriced,
                    r.reply.outcome.usage.reasoning_tokens as i64,
                    reported_usage,
                ])?;
            }
            Write::Events(run, events) => {
                let (Some(first), Some(last)) = (events.first(), events.last()) else { continue };
                let key = run_key(conn, keys, run)?;
                json.clear();
                event_row::encode(events, json).map_err(|e| to_sql_error(Box::new(e)))?;
                let lines = std::str::from_utf8(json).map_err(|e| to_sql_error(Box::new(e)))?;
                let insert_events = match &mut insert_events {
                    Some(s) => s,
                    None => insert_events.insert(conn.prepare_cached(INSERT_EVENTS)?),
                };
                insert_events.execute(params![key, first.seq as i64, last.seq as i64, lines])?;
            }
        }
    }
    Ok(())
}

/// The key of run `run`, recording a placeholder run if it has none yet.
fn run_key(conn: &Connection, keys: &mut Vec<(Arc<str>, i64)>, run: &Arc<str>) -> rusqlite::Result<i64> {
    if let Some(&(_, key)) = keys.iter().find(|(r, _)| **r == **run) {
        return Ok(key);
    }
    let found = conn.prepare_cached(RUN_KEY)?.query_row([&**run], |row| row.get(0)).optional()?;
    let key = match found {
        Some(key) => key,
        None => {
            conn.prepare_cached(NEW_RUN)?.execute(params![&**run, chrono::Utc::now().to_rfc3339()])?;
            conn.last_insert_rowid()
        }
    };
    keys.push((run.clone(), key));
    Ok(key)
}

fn to_sql_error(e: Box<dyn std::error::Error + Send + Sync>) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(e)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Waker};

    use super::*;
    use crate::SqliteStore;
    use belt_core::RunStore;

    fn record(step: &str) -> StepRecord {
        StepRecord {
            step: belt_core::StepId::new(step),
            tier: belt_core::Tier::Worker,
            input_hash: belt_core::store::InputHash::new(7),
            reply: belt_core::StepReply {
                text: Arc::from("out"),
                outcome: belt_core::StepOutcome {
                    model: Arc::from("t/m"),
                    usage: belt_core::Usage::default(),
                    cost_usd: 0.0,
                    attempts: 1,
                    duration_ms: 0,
                    finish_reason: None,
                    unpriced: false,
                    ..Default::default()
                },
                simulated: true,
                tool_calls: Vec::new(),
            },
        }
    }

    /// A store (for its migrations and reads) and a second writer on the same file.
    async fn open(name: &str) -> (SqliteStore, Writer, PathBuf) {
        let dir = std::env::temp_dir().join(format!("belt-writer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SqliteStore::open(dir.join("belt.db")).await.unwrap();
        let writer = Writer::start(&dir.join("belt.db"), Duration::from_secs(10)).unwrap();
        (store, writer, dir)
    }

    fn marks_held(writer: &Writer) -> usize {
        writer.shared.conn.lock().unwrap().marks.held()
    }

    /// Steps committing one after the other hold every read mark; once they stop, the writer
    /// thread lets the marks go (so that other processes' checkpoints are not held back).
    #[tokio::test]
    async fn read_marks_are_held_while_steps_commit_and_let_go_when_they_stop() {
        let (store, writer, dir) = open("marks").await;
        for i in 0..10 {
            writer.put_step("r", &record(&format!("chain/{i}"))).await.unwrap();
        }
        assert_eq!(marks_held(&writer), crate::read_marks::MARKS, "a chain holds every read mark");
        tokio::time::sleep(IDLE * 4).await;
        assert_eq!(marks_held(&writer), 0, "the marks were not let go when commits stopped");
        assert!(!writer.shared.marks_held.load(Ordering::SeqCst));
        // And the next commits take them again.
        for i in 10..20 {
            writer.put_step("r", &record(&format!("chain/{i}"))).await.unwrap();
        }
        assert_eq!(marks_held(&writer), crate::read_marks::MARKS);
        assert_eq!(store.load_steps("r").await.unwrap().len(), 20);
        drop((writer, store));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// What keeping run keys between transactions rests on: the data version this
    /// connection reads after its commit is the one its next transaction finds, unless
    /// another connection committed in between.
    #[tokio::test]
    async fn the_data_version_changes_only_with_another_connections_commit() {
        let (store, writer, dir) = open("data-version").await;
        writer.put_step("r", &record("chain/1")).await.unwrap();
        writer.put_step("r", &record("chain/2")).await.unwrap();
        let begin = |conn: &Connection| {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            let version = data_version(conn);
            conn.execute_batch("ROLLBACK").unwrap();
            version
        };
        {
            let conn = writer.shared.conn.lock().unwrap();
            assert_eq!(conn.keys.keys.len(), 1, "the run's key is kept");
            assert!(conn.keys.version.is_some());
            assert_eq!(begin(&conn.conn), conn.keys.version, "nobody else committed");
        }
        store
            .put_run(&belt_core::store::RunRecord {
                run_id: "other".into(),
                pattern: "p".into(),
                task: "t".into(),
                status: belt_core::RunStatus::Running,
                started_at: chrono::Utc::now(),
                definition: Arc::from("null"),
            })
            .await
            .unwrap();
        {
            let conn = writer.shared.conn.lock().unwrap();
            assert_ne!(begin(&conn.conn), conn.keys.version, "another connection committed");
        }
        drop((writer, store));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The database another process opens, for [`in_another_process`].
    const OTHER_PROCESS_DB: &str = "BELT_STORE_TEST_OTHER_PROCESS_DB";

    /// While this process holds every read mark and commits steps, another process reads the
    /// newest steps and writes (as `belt runs list`, `runs events --follow` and a second
    /// `belt resume` taking the lease do): the marks are shared, not exclusive.
    #[tokio::test]
    async fn another_process_reads_and_writes_while_read_marks_are_held() {
        let (store, writer, dir) = open("other-process").await;
        for i in 0..10 {
            writer.put_step("r", &record(&format!("chain/{i:03}"))).await.unwrap();
        }
        assert_eq!(marks_held(&writer), crate::read_marks::MARKS);
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "writer::tests::in_another_process", "--nocapture", "--test-threads=1"])
            .env(OTHER_PROCESS_DB, dir.join("belt.db"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Keep committing (and so holding the marks) while the other process works.
        let mut held = true;
        for i in 10..10_000 {
            writer.put_step("r", &record(&format!("chain/{i:03}"))).await.unwrap();
            held &= marks_held(&writer) == crate::read_marks::MARKS;
            tokio::time::sleep(Duration::from_millis(2)).await;
            if std::fs::exists(dir.join("done")).unwrap() {
                break;
            }
        }
        let output = child.wait_with_output().unwrap();
        assert!(held, "the marks were let go while steps committed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        // The other process leaves how many steps it read in its `done` file.
        let seen: usize = std::fs::read_to_string(dir.join("done"))
            .expect("the other process did not finish")
            .trim()
            .parse()
            .unwrap();
        assert!(seen >= 10, "the other process saw {seen} steps, not the newest");
        let written: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE run_id = 'other'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(written, 1, "the other process's write is not in the database");
        drop((writer, store));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The other process of [`another_process_reads_and_writes_while_read_marks_are_held`];
    /// does nothing when run as a test of its own.
    #[test]
    fn in_another_process() {
        let Some(db) = std::env::var_os(OTHER_PROCESS_DB) else { return };
        let db = PathBuf::from(db);
        let conn = Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        let seen: i64 = conn.query_row("SELECT count(*) FROM steps", [], |r| r.get(0)).unwrap();
        conn.execute_batch(
            "BEGIN IMMEDIATE; INSERT INTO runs (run_id, started_at) VALUES ('other', 'now'); COMMIT;",
        )
        .unwrap();
        std::fs::write(db.with_file_name("done"), seen.to_string()).unwrap();
    }

    /// A leader whose step is dropped while it yields (its run cancelled) leaves the records
    /// queued behind it to the writer thread: the other step's caller still hears back.
    #[tokio::test]
    async fn a_leader_dropped_while_it_yields_leaves_the_queue_to_the_thread() {
        let (store, writer, dir) = open("dropped-leader").await;
        writer.shared.company.store(COMPANY_COMMITS, Ordering::Relaxed);
        let mut cx = Context::from_waker(Waker::noop());
        let (first, second) = (record("worker/1"), record("worker/2"));
        let mut leader = Box::pin(writer.put_step("r", &first));
        assert!(leader.as_mut().poll(&mut cx).is_pending(), "the leader yields first");
        assert!(writer.shared.leading.load(Ordering::SeqCst));
        let mut follower = Box::pin(writer.put_step("r", &second));
        assert!(follower.as_mut().poll(&mut cx).is_pending(), "the follower waits for the leader");
        drop(leader);
        assert!(!writer.shared.leading.load(Ordering::SeqCst));
        tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("the follower's record was never committed")
            .unwrap();
        let steps = store.load_steps("r").await.unwrap();
        assert_eq!(steps.len(), 2, "both records were committed by the writer thread");
        drop((writer, store));
        let _ = std::fs::remove_dir_all(dir);
    }
}

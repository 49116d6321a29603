use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use belt_core::llm::ToolCall;
use belt_core::store::{DeadLetter, InputHash, RunRecord, RunStore, StepRecord};
use belt_core::testing::ScriptedProvider;
use belt_core::{Cascade, LlmError, LlmRequest, RunOptions, RunStatus, StepId, Task, Tier, Usage};
use chrono::Utc;

use crate::{SqliteStore, StoreSpec};

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("belt-store-{name}-{}", nonce_text()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub(crate) fn db(&self) -> PathBuf {
        self.0.join("belt.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nonce() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Different in every call, also across processes and threads: for names of temporary
/// files and schemas.
pub(crate) fn nonce_text() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}_{}_{n}", std::process::id(), nonce())
}

fn record(run_id: &str) -> RunRecord {
    RunRecord {
        run_id: run_id.into(),
        pattern: "cascade".into(),
        task: "a task".into(),
        status: RunStatus::Running,
        started_at: Utc::now(),
        definition: Arc::from("{\"x\":1}"),
    }
}

fn step(name: &str, cost: f64) -> StepRecord {
    StepRecord {
        step: StepId::new(name),
        tier: Tier::Worker,
        input_hash: InputHash::new(0xdead_beef_u128 << 64 | 7),
        reply: belt_core::StepReply {
            text: Arc::from(format!("output of {name}")),
            outcome: belt_core::StepOutcome {
                model: Arc::from("t/m"),
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 20,
                    cache_read_tokens: 6,
                    cache_write_tokens: 2,
                    reasoning_tokens: 4,
                },
                cost_usd: cost,
                attempts: 2,
                duration_ms: 5,
                reported_usage: Some(Box::new(Usage::new(1_000_000, 20))),
                finish_reason: Some(Arc::from("length")),
                unpriced: true,
                ..Default::default()
            },
            simulated: true,
            tool_calls: Vec::new(),
        },
    }
}

#[tokio::test]
async fn steps_events_and_results_round_trip() {
    let dir = TempDir::new("roundtrip");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store.claim("r1", "me", Duration::from_secs(10), None).await.unwrap();
    store.put_run(&record("r1")).await.unwrap();
    let steps: Vec<StepRecord> = (1..=700).map(|i| step(&format!("worker/{i:03}"), 0.001)).collect();
    // Concurrent puts exercise the group commit.
    futures_join(steps.iter().map(|s| store.put_step("r1", s))).await;
    let mut loaded = store.load_steps("r1").await.unwrap();
    loaded.sort_by(|a, b| a.step.cmp(&b.step));
    assert_eq!(loaded.len(), 700);
    assert_eq!(loaded[0], steps[0]);
    // A tool round's calls come back, so a resumed tool loop replays them.
    let mut round = step("agent/round/01", 0.0);
    round.reply.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "add".into(),
        arguments: serde_json::json!({"a": 2, "b": 3}),
    }];
    store.put_step("r1", &round).await.unwrap();
    let loaded = store.load_steps("r1").await.unwrap();
    assert_eq!(loaded.iter().find(|s| s.step.as_str() == "agent/round/01"), Some(&round));

    let bus = belt_core::event::EventBus::new("r1", 0);
    let mut rx = bus.subscribe();
    for _ in 0..3 {
        bus.emit(None, belt_core::EventKind::PlanFallback { reason: "x".into(), templated: 1 });
    }
    let events: Vec<_> = (0..3).map(|_| rx.try_recv().unwrap()).collect();
    store.append_events("r1", &events).await.unwrap();
    assert_eq!(store.last_seq("r1").await.unwrap(), 3);
    let after1 = store.events("r1", 1).await.unwrap();
    assert_eq!(after1.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(*after1[0], *events[1]);

    assert_eq!(store.get_run("r1").await.unwrap().unwrap().definition.as_ref(), "{\"x\":1}");
    let list = store.list_runs(10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].steps, 701);
    assert_eq!(list[0].status, RunStatus::Running);
    assert!(store.delete_run("r1").await.unwrap());
    assert!(store.list_runs(10).await.unwrap().is_empty());
    assert!(store.load_steps("r1").await.unwrap().is_empty());
    assert!(!store.delete_run("r1").await.unwrap());
}

async fn futures_join<F: std::future::Future<Output = Result<(), belt_core::store::StoreError>>>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<F> = futs.collect();
    for r in futures_util_join_all(handles).await {
        r.unwrap();
    }
}

async fn futures_util_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

/// A damaged compressed result is an error that says so, not a crash or a huge allocation.
/// (What leases do is in the conformance suite.)
#[tokio::test]
async fn a_damaged_result_is_reported() {
    let dir = TempDir::new("lease");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store.put_run(&record("r")).await.unwrap();
    let mut result = sample_result("r");
    result.status = RunStatus::Completed;
    store.finish_run(&result).await.unwrap();
    assert_eq!(store.get_result("r").await.unwrap().unwrap(), result, "the whole result reads back");

    // A damaged compressed result is an error that says so, not a crash or a huge allocation.
    let mut bad = u32::MAX.to_le_bytes().to_vec();
    bad.extend_from_slice(b"not lz4");
    sqlx::query("UPDATE run_results SET result_lz4 = ?").bind(bad).execute(&store.pool).await.unwrap();
    let err = store.get_result("r").await.unwrap_err();
    assert!(err.to_string().contains("run r's record") && err.to_string().contains("is damaged"), "{err}");
}

#[tokio::test]
async fn a_running_run_without_heartbeat_is_interrupted() {
    let dir = TempDir::new("interrupted");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store.claim("r", "gone", Duration::from_secs(10), None).await.unwrap();
    store.put_run(&record("r")).await.unwrap();
    assert_eq!(store.list_runs(5).await.unwrap()[0].status, RunStatus::Running);
    sqlx::query("UPDATE runs SET heartbeat_ms = 0").execute(&store.pool).await.unwrap();
    assert_eq!(store.list_runs(5).await.unwrap()[0].status, RunStatus::Interrupted);
}

pub(crate) fn sample_result(run_id: &str) -> belt_core::RunResult {
    belt_core::RunResult {
        run_id: run_id.into(),
        status: RunStatus::Running,
        stop_reason: String::new(),
        pattern: "cascade".into(),
        task: "t".into(),
        plan: vec![],
        agents: vec![],
        final_output: Some("done".into()),
        usage: Default::default(),
        cost_usd: 0.5,
        duration_ms: 10,
        documents: vec![],
        simulated: true,
        shape: vec![],
        started_at: None,
        segments: Vec::new(),
        caps: Vec::new(),
        sources: Vec::new(),
        degradations: Vec::new(),
        agent_totals: Vec::new(),
    }
}

#[tokio::test]
async fn bad_files_give_errors_that_say_what_to_do() {
    let dir = TempDir::new("bad");
    std::fs::write(dir.db(), b"this is not a database, just some bytes that are long enough to matter")
        .unwrap();
    let err = SqliteStore::open(dir.db()).await.err().expect("a damaged file is refused");
    assert!(err.to_string().contains("not a belt database"), "{err}");
    // Nothing else was written into the damaged file.
    assert!(std::fs::read(dir.db()).unwrap().starts_with(b"this is not a database"));

    let err = SqliteStore::open("/proc/belt-cannot-be-here/belt.db").await.err().expect("unwritable");
    assert!(err.to_string().contains("belt-cannot-be-here"), "{err}");

    assert!("sqlite://".parse::<StoreSpec>().unwrap_err().contains("sqlite://PATH"));
    assert_eq!("memory".parse::<StoreSpec>().unwrap(), StoreSpec::Memory);
}

#[tokio::test]
async fn a_locked_database_is_reported() {
    let dir = TempDir::new("locked");
    let store = SqliteStore::open_with(dir.db(), Duration::from_millis(200)).await.unwrap();
    // Another connection holds the write lock.
    let other = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(dir.db()))
        .await
        .unwrap();
    let mut conn = other.acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut *conn).await.unwrap();
    let err = store.put_step("r", &step("worker/001", 0.0)).await.unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    // Once the lock is gone, writing works again and nothing was half-written.
    store.put_step("r", &step("worker/001", 0.0)).await.unwrap();
    assert_eq!(store.load_steps("r").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_step_that_fails_for_good_becomes_a_dead_letter() {
    let dir = TempDir::new("dead");
    let store: Arc<dyn RunStore> = Arc::new(SqliteStore::open(dir.db()).await.unwrap());
    let p = Arc::new(ScriptedProvider::new("t").always_fail("worker/002", LlmError::Auth("bad key".into())));
    let o = RunOptions::default().with_provider(p).with_store(store.clone());
    let r = belt_core::run(Cascade::new(3, "t/m"), Task::new("task"), o).await.unwrap().result().await;
    assert_eq!(r.status, RunStatus::Partial);
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].step.as_str(), "worker/002");
    assert_eq!(dead[0].error_kind, "auth");
    assert!(dead[0].work.request().unwrap().prompt().contains("Subtask 2"));
}

/// A database written by schema version 3 (run ids in every row, events as whole JSON)
/// opens, and its runs, steps and events read back as they were; new writes go on.
#[tokio::test]
async fn a_version_3_database_is_migrated_with_its_runs_intact() {
    let dir = TempDir::new("v1");
    let migrations = dir.0.join("migrations-v1");
    std::fs::create_dir_all(&migrations).unwrap();
    for file in ["0001_init.sql", "0002_step_cache_tokens.sql", "0003_step_tool_calls.sql"] {
        std::fs::copy(format!("{}/migrations/{file}", env!("CARGO_MANIFEST_DIR")), migrations.join(file))
            .unwrap();
    }
    {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.db())
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal),
            )
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(migrations.as_path()).await.unwrap().run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO runs (run_id, pattern, task, status, started_at, definition, cost_usd, result) \
             VALUES ('old-run', 'cascade', 'an old task', 'completed', '2026-01-02T03:04:05+00:00', '{\"x\":1}', 0.5, ?)",
        )
        .bind(serde_json::to_string(&sample_result("old-run")).unwrap())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO steps (run_id, step, tier, input_hash, output, model, input_tokens, output_tokens, \
             cost_usd, attempts, duration_ms, simulated, cache_read_tokens, cache_write_tokens, tool_calls) VALUES \
             ('old-run', 'worker/001', 'worker', '00000000deadbeef0000000000000007', 'old output', 't/m', \
              10, 20, 0.25, 2, 5, 1, 6, 2, '[{\"id\":\"c1\",\"name\":\"add\",\"arguments\":{\"a\":2}}]'), \
             ('orphan', 'worker/001', 'worker', '00000000deadbeef0000000000000007', 'x', 't/m', 1, 1, 0.0, 1, 1, 0, \
              0, 0, NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            r#"INSERT INTO events (run_id, seq, json) VALUES ('old-run', 1, '{"seq":1,"ts":"2026-01-02T03:04:05.123456789Z","run_id":"old-run","step":"worker/001","type":"step_started","tier":"worker","model":"t/m"}')"#,
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    let store = SqliteStore::open(dir.db()).await.unwrap();
    let run = store.get_run("old-run").await.unwrap().expect("the old run is kept");
    assert_eq!((run.pattern.as_str(), run.definition.as_ref()), ("cascade", "{\"x\":1}"));
    assert_eq!(store.get_result("old-run").await.unwrap(), Some(sample_result("old-run")));
    let steps = store.load_steps("old-run").await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].reply.text.as_ref(), "old output");
    assert_eq!(steps[0].input_hash, InputHash::new(0xdead_beef_u128 << 64 | 7));
    assert_eq!(
        (
            steps[0].reply.outcome.usage.input_tokens,
            steps[0].reply.outcome.attempts,
            steps[0].reply.simulated
        ),
        (10, 2, true)
    );
    assert_eq!(
        (steps[0].reply.outcome.usage.cache_read_tokens, steps[0].reply.outcome.usage.cache_write_tokens),
        (6, 2)
    );
    assert_eq!(steps[0].reply.tool_calls.len(), 1);
    assert_eq!(steps[0].reply.tool_calls[0].name, "add");
    assert_eq!(store.load_steps("orphan").await.unwrap().len(), 1, "a step without a run row is kept");
    let events = store.events("old-run", 0).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].step.as_ref().map(StepId::as_str), Some("worker/001"));
    assert_eq!(events[0].ts.timestamp_subsec_nanos(), 123_456_789);
    let list = store.list_runs(10).await.unwrap();
    assert_eq!(list.len(), 1, "placeholder runs are not listed");
    assert_eq!((list[0].steps, list[0].cost_usd), (1, 0.5));

    // New events continue the old sequence, in the compact form, and read back in order.
    let bus = belt_core::event::EventBus::new("old-run", 1);
    let mut rx = bus.subscribe();
    bus.emit(
        Some(&StepId::new("worker/002")),
        belt_core::EventKind::PlanFallback { reason: "x".into(), templated: 1 },
    );
    let new = rx.try_recv().unwrap();
    store.append_events("old-run", std::slice::from_ref(&new)).await.unwrap();
    store.put_step("old-run", &step("worker/002", 0.1)).await.unwrap();
    let events = store.events("old-run", 0).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(*events[1], *new);
    assert_eq!(store.last_seq("old-run").await.unwrap(), 2);
    assert_eq!(store.load_steps("old-run").await.unwrap().len(), 2);
    assert!(store.delete_run("old-run").await.unwrap());
    assert!(store.events("old-run", 0).await.unwrap().is_empty());
    assert!(store.load_steps("old-run").await.unwrap().is_empty());
}

/// Steps from many tasks on several runtime threads, with event batches big enough to go to
/// the writer thread among them: every record and event committed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_steps_and_events_all_commit() {
    let dir = TempDir::new("concurrent");
    let store = Arc::new(SqliteStore::open(dir.db()).await.unwrap());
    store.put_run(&record("r")).await.unwrap();
    let bus = belt_core::event::EventBus::new("r", 0);
    let mut rx = bus.subscribe();
    for _ in 0..2000 {
        bus.emit(None, belt_core::EventKind::PlanFallback { reason: "x".into(), templated: 1 });
    }
    let events: Vec<_> = (0..2000).map(|_| rx.try_recv().unwrap()).collect();
    let appender = {
        let store = store.clone();
        // Batches of 1, 5 and 400 events: some small enough to commit inline, some not.
        tokio::spawn(async move {
            let mut at = 0;
            for size in [1, 5, 400].into_iter().cycle() {
                let end = (at + size).min(events.len());
                store.append_events("r", &events[at..end]).await.unwrap();
                at = end;
                if at == events.len() {
                    break;
                }
            }
        })
    };
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put_step("r", &step(&format!("worker/{i:03}"), 0.001)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    appender.await.unwrap();
    assert_eq!(store.load_steps("r").await.unwrap().len(), 400);
    let stored = store.events("r", 0).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=2000).collect::<Vec<_>>());
}

/// A lock held by another connection for a moment is waited for (on the writer thread, not
/// the caller's), not reported.
#[tokio::test]
async fn a_lock_held_for_a_moment_is_waited_for() {
    let dir = TempDir::new("briefly-locked");
    let store = SqliteStore::open_with(dir.db(), Duration::from_secs(10)).await.unwrap();
    let other = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(dir.db()))
        .await
        .unwrap();
    let mut conn = other.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    });
    let started = std::time::Instant::now();
    store.put_step("r", &step("worker/001", 0.0)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "the step did not wait for the lock");
    release.await.unwrap();
    // And the next step, with the lock free, commits as usual.
    store.put_step("r", &step("worker/002", 0.0)).await.unwrap();
    assert_eq!(store.load_steps("r").await.unwrap().len(), 2);
}

/// Steps committed one by one (a chain) do not grow the WAL without end: the checkpointer
/// copies it into the database and it starts over.
#[tokio::test]
async fn the_wal_is_checkpointed_while_steps_commit() {
    let dir = TempDir::new("checkpoint");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store.put_run(&record("r")).await.unwrap();
    let wal = dir.0.join("belt.db-wal");
    let mut largest = 0;
    // Each commit writes at least one 4 KiB page: 6,000 of them would be 24 MB of WAL.
    for i in 0..6000 {
        store.put_step("r", &step(&format!("chain/{i:05}"), 0.0)).await.unwrap();
        if i % 500 == 0 {
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
    }
    largest = largest.max(std::fs::metadata(&wal).unwrap().len());
    assert_eq!(store.load_steps("r").await.unwrap().len(), 6000);
    assert!(largest < 12 << 20, "the WAL grew to {largest} bytes: it is not checkpointed");
}

/// Steps that arrive while another connection holds the database: the first one's commit
/// finds it busy and goes to the writer thread, the rest queue behind it, and all of them
/// are committed (in batches) once the lock is released.
#[tokio::test]
async fn steps_queued_behind_a_busy_database_all_commit_when_it_frees() {
    let dir = TempDir::new("queued-busy");
    let store = Arc::new(SqliteStore::open_with(dir.db(), Duration::from_secs(10)).await.unwrap());
    let other = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(dir.db()))
        .await
        .unwrap();
    let mut conn = other.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await.unwrap();
    // More than a leader commits on a runtime thread (`INLINE_STEPS`).
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put_step("r", &step(&format!("worker/{i:03}"), 0.0)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tasks.iter().all(|t| !t.is_finished()), "a step returned before its record could commit");
    sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.load_steps("r").await.unwrap().len(), 300);
}

/// Text that is not UTF-8, as a stray write into the file leaves it.
const NOT_UTF8: &str = "CAST(x'ff' AS TEXT)";

/// A finished run `r1` with a step, events and a dead letter, every column written.
async fn finished_run(dir: &TempDir) -> SqliteStore {
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store.claim("r1", "me", Duration::from_secs(10), None).await.unwrap();
    store.put_run(&record("r1")).await.unwrap();
    let mut s = step("worker/03", 0.25);
    s.reply.tool_calls =
        vec![ToolCall { id: "c1".into(), name: "add".into(), arguments: serde_json::json!({"a": 1}) }];
    store.put_step("r1", &s).await.unwrap();
    let bus = belt_core::event::EventBus::new("r1", 0);
    let mut rx = bus.subscribe();
    bus.emit(None, belt_core::EventKind::PlanFallback { reason: "x".into(), templated: 1 });
    store.append_events("r1", &[rx.try_recv().unwrap()]).await.unwrap();
    let mut result = sample_result("r1");
    result.status = RunStatus::Completed;
    store.finish_run(&result).await.unwrap();
    let letter = DeadLetter {
        id: 0,
        run_id: "r1".into(),
        step: StepId::new("worker/04"),
        tier: Tier::Worker,
        error: "boom".into(),
        error_kind: "server_error".into(),
        attempts: 3,
        work: belt_core::store::LetterWork::Llm(LlmRequest::new("t/m", "hello")),
        created_at: Utc::now(),
    };
    store.put_dead_letter(&letter).await.unwrap();
    store
}

/// Every read of the store, each one's error if it failed.
async fn read_everything(store: &SqliteStore) -> Vec<belt_core::store::StoreError> {
    let mut errors = Vec::new();
    macro_rules! read {
        ($e:expr) => {
            if let Err(e) = $e.await {
                errors.push(e);
            }
        };
    }
    read!(store.get_run("r1"));
    read!(store.load_steps("r1"));
    read!(store.events("r1", 0));
    read!(store.last_seq("r1"));
    read!(store.get_result("r1"));
    read!(store.list_runs(10));
    read!(store.dead_letters());
    read!(store.claim("r1", "someone-else", Duration::from_secs(3600), None));
    errors
}

/// A stray write into the file (a disk fault, another program) leaves values sqlx cannot
/// decode, whose `Row::get` panicked (`belt runs events` exited 101). Each column a read
/// decodes, damaged in each way that can make it unreadable — text that is not UTF-8, a
/// value of another type, a negative or too-large number, text that does not parse — gives
/// `StoreError::Damaged` naming the run and the column, and the run can still be removed.
#[tokio::test]
async fn a_damaged_column_is_an_error_naming_the_run_and_the_column_not_a_panic() {
    // (table, SET clause, what the message names, whether the run can be named)
    let cases: &[(&str, String, &str, bool)] = &[
        ("runs", format!("pattern = {NOT_UTF8}"), "`pattern`", true),
        ("runs", format!("task = {NOT_UTF8}"), "`task`", true),
        ("runs", format!("status = {NOT_UTF8}"), "`status`", true),
        ("runs", "status = 'exploded'".into(), "`exploded` is not a run status", true),
        ("runs", format!("started_at = {NOT_UTF8}"), "`started_at`", true),
        ("runs", "started_at = 'yesterday'".into(), "`started_at`", true),
        ("run_definitions", format!("definition = {NOT_UTF8}"), "`definition`", true),
        // (A number written into a text column is kept as text: a blob is what does not read.)
        ("run_definitions", "definition = x'7b7d'".into(), "`definition`", true),
        ("runs", format!("owner = {NOT_UTF8}, status = 'running'"), "`owner`", true),
        ("runs", "heartbeat_ms = 'soon', status = 'running'".into(), "`heartbeat_ms`", true),
        ("runs", "duration_ms = -1".into(), "`duration_ms`: -1 is negative", true),
        ("runs", "duration_ms = 'ten'".into(), "`duration_ms`", true),
        ("runs", "cost_usd = 'a lot'".into(), "`cost`", true),
        ("run_results", "result_lz4 = x'ffffffff00'".into(), "`result_lz4`", true),
        ("run_results", "result_lz4 = x'0500000000'".into(), "`result_lz4`", true),
        ("run_results", "result_lz4 = 'text'".into(), "`result_lz4`", true),
        ("run_results", format!("result_lz4 = NULL, result = {NOT_UTF8}"), "`result`", true),
        ("run_results", "result_lz4 = NULL, result = '{'".into(), "`result`", true),
        (
            "runs",
            format!("run_id = {NOT_UTF8}"),
            "column `run_id` of the run with key 1: invalid utf-8",
            false,
        ),
        ("steps", format!("step = {NOT_UTF8}"), "`step`", true),
        ("steps", format!("tier = {NOT_UTF8}"), "`tier` of step worker/03", true),
        ("steps", format!("input_hash = {NOT_UTF8}"), "`input_hash` of step worker/03", true),
        ("steps", "input_hash = 'zz'".into(), "`input_hash` of step worker/03", true),
        ("steps", format!("output = {NOT_UTF8}"), "`output` of step worker/03", true),
        ("steps", "output = x'00'".into(), "`output` of step worker/03", true),
        ("steps", format!("model = {NOT_UTF8}"), "`model` of step worker/03", true),
        ("steps", "input_tokens = -1".into(), "`input_tokens` of step worker/03: -1 is negative", true),
        ("steps", "output_tokens = 'many'".into(), "`output_tokens` of step worker/03", true),
        ("steps", "cache_read_tokens = -7".into(), "`cache_read_tokens`", true),
        ("steps", "cache_write_tokens = 1.5".into(), "`cache_write_tokens`", true),
        ("steps", "cost_usd = 'free'".into(), "`cost_usd` of step worker/03", true),
        ("steps", "attempts = 1099511627776".into(), "`attempts` of step worker/03: too large", true),
        ("steps", "attempts = -2".into(), "`attempts`", true),
        ("steps", "duration_ms = -1".into(), "`duration_ms`", true),
        ("steps", "simulated = 'yes'".into(), "`simulated`", true),
        ("steps", format!("tool_calls = {NOT_UTF8}"), "`tool_calls`", true),
        ("steps", "tool_calls = '[{'".into(), "`tool_calls`", true),
        ("steps", format!("finish_reason = {NOT_UTF8}"), "`finish_reason`", true),
        ("steps", "unpriced = 'no'".into(), "`unpriced`", true),
        ("steps", "reasoning_tokens = -3".into(), "`reasoning_tokens` of step worker/03", true),
        ("steps", "reported_usage = '{\"input_tokens\":'".into(), "`reported_usage` of step worker/03", true),
        ("events", format!("lines = {NOT_UTF8}"), "`lines` of events", true),
        ("events", "lines = '[1,2'".into(), "an event does not decode", true),
        ("events", "last_seq = -5".into(), "`seq`", true),
        ("dead_letters", format!("run_id = {NOT_UTF8}"), "`run_id` of dead letter 1", false),
        ("dead_letters", format!("request = {NOT_UTF8}"), "`request` of dead letter 1", true),
        ("dead_letters", "request = '{}'".into(), "`request` of dead letter 1", true),
        ("dead_letters", format!("error = {NOT_UTF8}"), "`error` of dead letter 1", true),
        ("dead_letters", "attempts = -1".into(), "`attempts`", true),
        ("dead_letters", "created_at = 'then'".into(), "`created_at`", true),
    ];
    for (table, set, names, names_run) in cases {
        let dir = TempDir::new("damaged");
        let store = finished_run(&dir).await;
        assert!(read_everything(&store).await.is_empty(), "the undamaged run reads back");
        sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE {table} SET {set}")))
            .execute(&store.pool)
            .await
            .unwrap();
        let errors = read_everything(&store).await;
        assert!(!errors.is_empty(), "{table} {set}: no read noticed the damage");
        for e in &errors {
            let text = e.to_string();
            let belt_core::store::StoreError::Damaged { run_id, .. } = e else {
                panic!("{table} {set}: not reported as damage: {text}")
            };
            assert!(text.contains(names), "{table} {set}: the message does not name {names}: {text}");
            assert!(text.contains(&dir.db().display().to_string()), "{text}");
            if *names_run {
                assert_eq!(run_id.as_deref(), Some("r1"), "{table} {set}: {text}");
                assert!(text.contains("belt runs rm r1"), "{text}");
            } else {
                assert!(text.contains("restore the file from a backup"), "{text}");
            }
        }
        // What the message suggests works: the damaged run can be removed.
        if *names_run && *table != "dead_letters" {
            assert!(store.delete_run("r1").await.unwrap(), "{table} {set}");
            assert!(read_everything(&store).await.is_empty(), "{table} {set}: the store reads again");
        }
    }
}

/// A damaged cache entry only costs the call it would have saved.
#[tokio::test]
async fn a_damaged_cache_entry_is_a_miss() {
    let dir = TempDir::new("damaged-cache");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    let key = InputHash::new(7);
    store.cache_put(key, &belt_core::StepReply::new("hi"), Duration::from_secs(60)).await.unwrap();
    for bad in [NOT_UTF8, "'{'", "3"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE cache SET reply = {bad}")))
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(store.cache_get(key).await.unwrap(), None, "{bad}");
    }
}

fn queued(run_id: &str) -> RunRecord {
    RunRecord {
        status: RunStatus::Queued,
        definition: Arc::from(format!("{{\"task\":\"{run_id}\"}}")),
        ..record(run_id)
    }
}

/// The store is the queue: queued runs come back oldest first with their definitions, one
/// taker gets each, and the engine then runs it under the taker's lease as any run.
#[tokio::test]
async fn queued_runs_are_taken_once_oldest_first_and_then_run() {
    let dir = TempDir::new("queue");
    let store: Arc<SqliteStore> = Arc::new(SqliteStore::open(dir.db()).await.unwrap());
    // Accepted in this order; the ids do not sort that way.
    for id in ["q-c", "q-a", "q-b"] {
        store.put_run(&queued(id)).await.unwrap();
    }
    let order: Vec<String> = store.queued_runs(10).await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(order, ["q-c", "q-a", "q-b"]);
    assert_eq!(store.queued_runs(1).await.unwrap()[0].definition.as_ref(), r#"{"task":"q-c"}"#);
    let listed = store.list_runs(10).await.unwrap();
    assert!(listed.iter().all(|r| r.status == RunStatus::Queued && r.owner.is_none()), "{listed:?}");

    // One taker gets it; it is running under that taker's lease, and nobody else's.
    assert!(store.take_queued("q-c", "server-1").await.unwrap());
    assert!(!store.take_queued("q-c", "server-2").await.unwrap(), "taken once");
    assert!(!store.take_queued("nope", "server-2").await.unwrap());
    let c = store.list_runs(10).await.unwrap().into_iter().find(|r| r.run_id == "q-c").unwrap();
    assert_eq!((c.status, c.owner.as_deref()), (RunStatus::Running, Some("server-1")));
    assert!(store.claim("q-c", "server-2", Duration::from_secs(10), None).await.is_err());
    // A process that claims a queued run first (`belt resume`) keeps it from the others.
    store.claim("q-a", "resume", Duration::from_secs(10), None).await.unwrap();
    assert!(!store.take_queued("q-a", "server-1").await.unwrap(), "not under another's live lease");
    assert_eq!(store.queued_runs(10).await.unwrap().len(), 2, "q-a and q-b are still queued");

    // The taker runs it: the engine finds the record, keeps its definition and start time.
    let before = store.get_run("q-c").await.unwrap().unwrap();
    let mut options = RunOptions::default()
        .with_provider(Arc::new(ScriptedProvider::new("t")))
        .with_store(store.clone() as Arc<dyn RunStore>);
    options.run_id = Some("q-c".into());
    options.owner = Some("server-1".into());
    let result =
        belt_core::run(Cascade::new(2, "t/m"), Task::new("task"), options).await.unwrap().result().await;
    assert_eq!(result.status, RunStatus::Completed, "{}", result.stop_reason);
    let after = store.get_run("q-c").await.unwrap().unwrap();
    assert_eq!((after.status, after.started_at), (RunStatus::Completed, before.started_at));
    assert_eq!(after.definition, before.definition);
}

/// A file a newer belt migrated is refused with a message that says so (sqlx alone said a
/// migration "is missing"), and nothing is written to it.
/// A column whose declared type was overwritten with bytes that are not UTF-8 made sqlx panic
/// on its worker thread at the first statement that read it (found by the CLI's random
/// damage test). The store refuses such a file at open, naming the table.
#[tokio::test]
async fn a_schema_that_is_not_text_is_refused_at_open() {
    let dir = TempDir::new("garbled");
    let store = SqliteStore::open(dir.db()).await.unwrap();
    store.put_run(&record("r1")).await.unwrap();
    drop(store);
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "PRAGMA writable_schema = ON; \
             UPDATE sqlite_master SET sql = replace(sql, 'output        TEXT', 'output        ' || CAST(x'54ff5854' AS TEXT)) \
             WHERE name = 'steps'; PRAGMA writable_schema = OFF;",
        )
        .unwrap();
        let changed: bool = conn
            .query_row(
                "SELECT instr(CAST(sql AS BLOB), x'ff') > 0 FROM sqlite_master WHERE name = 'steps'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(changed, "the damage was written");
    }
    let err = SqliteStore::open(dir.db()).await.err().expect("a garbled schema is refused");
    let text = err.to_string();
    assert!(matches!(err, belt_core::store::StoreError::Damaged { .. }), "{text}");
    assert!(text.contains("the schema of table `steps` is not text"), "{text}");
    assert!(text.contains("restore the file from a backup"), "{text}");
}

#[tokio::test]
async fn a_file_from_a_newer_belt_is_refused() {
    let dir = TempDir::new("newer");
    drop(SqliteStore::open(dir.db()).await.unwrap());
    {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(dir.db()))
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', 1, x'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let err = SqliteStore::open(dir.db()).await.err().expect("a newer file is refused");
    let text = err.to_string();
    assert!(
        text.contains("was written by a newer belt (schema version 999, this belt knows 8); upgrade belt"),
        "{text}"
    );
    assert!(text.contains(&dir.db().display().to_string()), "{text}");
}

#[test]
fn postgres_urls_are_stores_shown_without_their_password() {
    for url in
        ["postgres://belt:s3cret@db.example:5433/belt", "postgresql://belt:s3cret@db/belt?sslmode=require"]
    {
        let spec: StoreSpec = url.parse().unwrap();
        assert_eq!(spec, StoreSpec::Postgres(url.into()));
        let shown = spec.to_string();
        assert!(!shown.contains("s3cret") && shown.contains("belt:***@"), "{shown}");
        assert!(!format!("{spec:?}").contains("s3cret"), "{spec:?}");
    }
    let spec: StoreSpec = "postgres://belt:s3cret@db.example:5433/belt".parse().unwrap();
    assert_eq!(spec.to_string(), "postgres://belt:***@db.example:5433/belt");
    assert_eq!(
        crate::redact_url("postgres://db/belt?user=u&password=pw&x=1"),
        "postgres://db/belt?user=u&password=***&x=1"
    );
    assert_eq!(
        crate::redact_url("postgresql://u@db/belt"),
        "postgresql://u@db/belt",
        "no password, nothing hidden"
    );
    assert_eq!(
        crate::redact_url("postgres://u:p@ss:w@rd@db/b"),
        "postgres://u:***@db/b",
        "the last @ ends the user part"
    );
    assert!("postgres://".parse::<StoreSpec>().unwrap_err().contains("postgres://USER:PASSWORD@HOST"));
    assert!("mysql://x".parse::<StoreSpec>().unwrap_err().contains("postgres://"));
}

/// `open` opens what `--store postgres://…` names.
#[tokio::test]
async fn a_postgres_spec_opens_a_postgres_store() {
    let schema = crate::conformance::PgSchema::new().await;
    let store = crate::open(&schema.url().parse().unwrap()).await.unwrap();
    store.put_run(&record("r")).await.unwrap();
    let again = crate::PgStore::open(&schema.url()).await.unwrap();
    assert_eq!(again.get_run("r").await.unwrap().map(|r| r.task), Some("a task".to_string()));
}

/// Processes that open a new store file at once (`belt run` and a `belt runs list` polling
/// it) each bring its schema up to date; they take turns, and none fails on a migration
/// another already applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_opened_at_once_on_a_new_file_all_open() {
    for round in 0..5 {
        let dir = TempDir::new(&format!("open-at-once-{round}"));
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let path = dir.db();
                tokio::spawn(async move { SqliteStore::open(&path).await.map(drop) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().unwrap();
        }
    }
}
